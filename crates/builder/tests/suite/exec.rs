//! Privileged tests of the step executor: a busybox root filesystem in a temp dir, real
//! namespaces and mounts. Run by `cargo xtask test` (as root, in a private mount namespace).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_builder::exec::{
    self, CancelToken, ExitStatus, Mount, MountKind, NetworkMode, OutputSink, ProcessSpec, Stream,
};
use strata_builder::Error;

/// A root filesystem with only `/bin/busybox` and its applet links (like `FROM scratch` +
/// busybox: no /proc, /dev, /sys or /etc).
fn busybox_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[derive(Default, Clone)]
struct Recorder {
    lines: Arc<Mutex<Vec<(Stream, String, Instant)>>>,
}

impl OutputSink for Recorder {
    fn line(&mut self, stream: Stream, line: &[u8]) {
        self.lines.lock().unwrap().push((
            stream,
            String::from_utf8_lossy(line).into_owned(),
            Instant::now(),
        ));
    }
}

impl Recorder {
    fn stdout(&self) -> Vec<String> {
        self.of(Stream::Stdout)
    }
    fn stderr(&self) -> Vec<String> {
        self.of(Stream::Stderr)
    }
    fn of(&self, stream: Stream) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| *s == stream)
            .map(|(_, l, _)| l.clone())
            .collect()
    }
}

fn sh(root: &Path, script: &str) -> ProcessSpec {
    let mut spec = ProcessSpec::new(root, &["/bin/sh", "-c", script]);
    spec.env = vec![("PATH".into(), "/bin".into())];
    spec
}

fn run(spec: &ProcessSpec) -> (Result<exec::ExecOutcome, Error>, Recorder) {
    let mut rec = Recorder::default();
    let cancel = CancelToken::new().unwrap();
    let result = exec::run(spec, &mut rec, &cancel);
    (result, rec)
}

fn run_ok(spec: &ProcessSpec) -> Recorder {
    let (result, rec) = run(spec);
    let outcome = result.unwrap_or_else(|e| panic!("run failed: {e} ({e:?})"));
    assert_eq!(
        outcome.status,
        ExitStatus::Exited(0),
        "stdout {:?} stderr {:?}",
        rec.stdout(),
        rec.stderr()
    );
    rec
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn echo_runs_and_leaves_no_stubs() {
    let root = busybox_root();
    let rec = run_ok(&ProcessSpec::new(
        root.path(),
        &["/bin/echo", "hello", "world"],
    ));
    assert_eq!(rec.stdout(), ["hello world"]);
    assert!(rec.stderr().is_empty());
    // /proc, /dev, /sys, /etc (for resolv.conf and hosts) were all created and removed.
    assert_eq!(entries(root.path()), ["bin"]);
    // Nothing was mounted in the caller's mount namespace.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_path = root.path().to_string_lossy().into_owned();
    assert!(!mountinfo.contains(&root_path), "{mountinfo}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn exit_codes_and_signals_are_reported() {
    let root = busybox_root();
    let (r, _) = run(&sh(root.path(), "exit 3"));
    assert_eq!(r.unwrap().status, ExitStatus::Exited(3));
    let (r, _) = run(&sh(root.path(), "kill -9 $$"));
    let status = r.unwrap().status;
    assert_eq!(status, ExitStatus::Signaled(9));
    assert_eq!(status.code(), 137);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn program_is_found_on_the_environments_path() {
    let root = busybox_root();
    let mut spec = ProcessSpec::new(root.path(), &["echo", "via PATH"]);
    spec.env = vec![("PATH".into(), "/nowhere:/bin".into())];
    assert_eq!(run_ok(&spec).stdout(), ["via PATH"]);
    // Without PATH in the env, the default one is searched.
    spec.env.clear();
    assert_eq!(run_ok(&spec).stdout(), ["via PATH"]);
    let (r, _) = run(&ProcessSpec::new(root.path(), &["no-such-program"]));
    let err = r.unwrap_err();
    assert!(matches!(err, Error::CommandNotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "exec: \"no-such-program\": executable file not found in $PATH"
    );
    assert_eq!(
        entries(root.path()),
        ["bin"],
        "stubs removed after a failure too"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn environment_is_exactly_the_specs() {
    let root = busybox_root();
    let mut spec = ProcessSpec::new(root.path(), &["/bin/env"]);
    spec.env = vec![
        ("PATH".into(), "/bin".into()),
        ("FOO".into(), "bar baz".into()),
        ("EMPTY".into(), String::new()),
    ];
    assert_eq!(
        run_ok(&spec).stdout(),
        ["PATH=/bin", "FOO=bar baz", "EMPTY="]
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn working_directory_is_created_inside_the_root() {
    let root = busybox_root();
    // /work is a symlink to an absolute path: it must resolve inside the root.
    std::os::unix::fs::symlink("/srv", root.path().join("work")).unwrap();
    std::fs::create_dir(root.path().join("srv")).unwrap();
    let mut spec = sh(root.path(), "pwd; touch here");
    spec.cwd = "/work/deep/dir".into();
    let rec = run_ok(&spec);
    assert_eq!(rec.stdout(), ["/srv/deep/dir"]);
    assert!(root.path().join("srv/deep/dir/here").is_file());
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn user_group_and_supplementary_groups_switch() {
    let root = busybox_root();
    let mut spec = sh(
        root.path(),
        "id -u; id -g; id -G; touch /f 2>&1 || echo denied",
    );
    spec.uid = 1000;
    spec.gid = 1001;
    spec.groups = vec![10, 20];
    let rec = run_ok(&spec);
    assert_eq!(rec.stdout()[..3], ["1000", "1001", "1001 10 20"]);
    assert_eq!(rec.stdout().last().unwrap(), "denied");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn network_none_has_only_loopback_and_it_is_up() {
    let root = busybox_root();
    let mut spec = sh(
        root.path(),
        "ls /sys/class/net; cat /sys/class/net/lo/flags",
    );
    spec.network = NetworkMode::None;
    let out = run_ok(&spec).stdout();
    assert_eq!(out[0], "lo");
    let flags = u32::from_str_radix(out[1].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP");
    // Host networking sees more than lo (the machine has at least one real interface).
    let host = run_ok(&sh(root.path(), "ls /sys/class/net")).stdout();
    assert!(host.len() > 1, "{host:?}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn proc_shows_the_namespace_and_pid_1_is_the_init() {
    let root = busybox_root();
    let rec = run_ok(&sh(
        root.path(),
        "echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '",
    ));
    let out = rec.stdout();
    assert_eq!(out[0], "2", "the command is the init's first child");
    let pids: Vec<u32> = out[1]
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids[0], 1);
    assert!(
        pids.iter().all(|p| *p < 10),
        "only the namespace's processes: {pids:?}"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn hostname_is_set_in_its_own_uts_namespace() {
    let root = busybox_root();
    let mut spec = sh(root.path(), "hostname");
    spec.hostname = "buildbox".into();
    assert_eq!(run_ok(&spec).stdout(), ["buildbox"]);
    assert_ne!(nix::unistd::gethostname().unwrap(), "buildbox");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn dev_sys_and_kernel_filesystems_look_like_dockers() {
    let root = busybox_root();
    let script = "ls /dev | tr '\\n' ' '; echo; \
        echo x > /dev/null && echo null-ok; \
        head -c 4 /dev/zero | wc -c; \
        grep -E ' /(sys|proc/sys|dev/pts|dev/shm) ' /proc/mounts | cut -d' ' -f2,3,4 | cut -d, -f1; \
        touch /sys/x 2>/dev/null || echo sys-ro; \
        mknod /b b 8 0 2>/dev/null || echo no-mknod; \
        grep CapBnd /proc/self/status";
    let out = run_ok(&sh(root.path(), script)).stdout();
    let dev: Vec<&str> = out[0].split_whitespace().collect();
    for want in [
        "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
        "urandom", "zero", "fd",
    ] {
        assert!(dev.contains(&want), "/dev lacks {want}: {dev:?}");
    }
    assert_eq!(dev.len(), 13, "nothing else in /dev: {dev:?}");
    assert_eq!(out[1], "null-ok");
    assert_eq!(out[2], "4");
    assert!(out.contains(&"/sys sysfs ro".to_string()), "{out:?}");
    assert!(out.contains(&"/proc/sys proc ro".to_string()), "{out:?}");
    assert!(out.contains(&"/dev/pts devpts rw".to_string()), "{out:?}");
    assert!(out.contains(&"/dev/shm tmpfs rw".to_string()), "{out:?}");
    assert!(out.contains(&"sys-ro".to_string()));
    assert!(out.contains(&"no-mknod".to_string()));
    // Docker's default set without CAP_MKNOD (27).
    assert_eq!(out.last().unwrap(), "CapBnd:\t00000000a00425fb");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn host_network_files_are_bound_and_stubs_removed() {
    let root = busybox_root();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
    std::fs::write(host.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
    // The image has /etc and its own hosts file, but no resolv.conf.
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/hosts"), "image hosts\n").unwrap();
    let mut spec = sh(
        root.path(),
        "cat /etc/resolv.conf /etc/hosts; echo x >> /etc/resolv.conf 2>/dev/null || echo ro",
    );
    spec.resolv_conf = Some(host.path().join("resolv.conf"));
    spec.hosts = Some(host.path().join("hosts"));
    let out = run_ok(&spec).stdout();
    assert_eq!(out, ["nameserver 192.0.2.53", "127.0.0.1 localhost", "ro"]);
    assert_eq!(
        entries(&root.path().join("etc")),
        ["hosts"],
        "resolv.conf stub removed"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/hosts")).unwrap(),
        "image hosts\n",
        "an existing file is mounted over, never changed"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn secrets_are_readable_during_the_run_and_gone_after() {
    let root = busybox_root();
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("token");
    std::fs::write(&secret, "s3cret-value").unwrap();
    let mut spec = sh(
        root.path(),
        "cat /run/secrets/token; echo; stat -c '%a %u %g' /run/secrets/token; \
         ls -a /dev | grep -c strata-secret; \
         echo x > /run/secrets/token 2>/dev/null || echo ro",
    );
    spec.uid = 1000;
    spec.gid = 1000;
    spec.mounts.push(Mount {
        target: "/run/secrets/token".into(),
        kind: MountKind::Secret {
            source: secret.clone(),
            uid: 1000,
            gid: 1000,
            mode: exec::DEFAULT_SECRET_MODE,
        },
    });
    let out = run_ok(&spec).stdout();
    assert_eq!(out, ["s3cret-value", "400 1000 1000", "0", "ro"]);
    assert_eq!(
        entries(root.path()),
        ["bin"],
        "no /run/secrets left in the root"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret-value");
    let meta = std::fs::metadata(&secret).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "the host file is untouched"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn bind_cache_and_tmpfs_mounts() {
    let root = busybox_root();
    let host = tempfile::tempdir().unwrap();
    let ro = host.path().join("ro");
    let cache = host.path().join("cache");
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&cache).unwrap();
    std::fs::write(ro.join("input"), "data\n").unwrap();
    let mut spec = sh(
        root.path(),
        "cat /in/input; touch /in/x 2>/dev/null || echo in-ro; \
         echo hit > /cache/entry; echo t > /scratch/t && cat /scratch/t",
    );
    spec.mounts = vec![
        Mount {
            target: "/in".into(),
            kind: MountKind::Bind {
                source: ro.clone(),
                readonly: true,
            },
        },
        Mount {
            target: "/cache".into(),
            kind: MountKind::Cache {
                source: cache.clone(),
                readonly: false,
            },
        },
        Mount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs {
                size: Some(1 << 20),
            },
        },
    ];
    assert_eq!(run_ok(&spec).stdout(), ["data", "in-ro", "t"]);
    assert_eq!(
        std::fs::read_to_string(cache.join("entry")).unwrap(),
        "hit\n"
    );
    assert_eq!(entries(&ro), ["input"]);
    assert_eq!(entries(root.path()), ["bin"], "mountpoints removed");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn existing_mountpoints_stay_and_written_stub_dirs_are_kept() {
    let root = busybox_root();
    for d in ["proc", "dev", "sys"] {
        std::fs::create_dir(root.path().join(d)).unwrap();
    }
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("s"), "x").unwrap();
    // The step writes next to its secret: /run/secrets is then the step's content.
    let mut spec = sh(root.path(), "echo mine > /run/secrets/note");
    spec.mounts.push(Mount {
        target: "/run/secrets/s".into(),
        kind: MountKind::Secret {
            source: host.path().join("s"),
            uid: 0,
            gid: 0,
            mode: 0o400,
        },
    });
    let (r, _) = run(&spec);
    let outcome = r.unwrap();
    assert_eq!(outcome.status, ExitStatus::Exited(0));
    assert_eq!(outcome.kept_stubs, ["/run", "/run/secrets"]);
    assert_eq!(entries(root.path()), ["bin", "dev", "proc", "run", "sys"]);
    assert_eq!(entries(&root.path().join("run/secrets")), ["note"]);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn output_streams_while_the_process_runs_in_order() {
    let root = busybox_root();
    let rec = run_ok(&sh(
        root.path(),
        "for i in 1 2 3 4; do echo out$i; echo err$i >&2; sleep 0.1; done; printf tail",
    ));
    assert_eq!(rec.stdout(), ["out1", "out2", "out3", "out4", "tail"]);
    assert_eq!(rec.stderr(), ["err1", "err2", "err3", "err4"]);
    let lines = rec.lines.lock().unwrap().clone();
    // Lines arrive as they are printed, not all at the end.
    let first = lines.first().unwrap().2;
    let fourth_out = lines.iter().find(|(_, l, _)| l == "out4").unwrap().2;
    assert!(
        fourth_out.duration_since(first) >= Duration::from_millis(250),
        "output was buffered until the end"
    );
    // Across both streams, round i's lines come before round i+1's.
    let rounds: Vec<u32> = lines
        .iter()
        .filter_map(|(_, l, _)| l.get(3..).and_then(|n| n.parse().ok()))
        .collect();
    assert!(rounds.windows(2).all(|w| w[0] <= w[1]), "{rounds:?}");
}

fn sleepers(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(marker))
        .count()
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn cancellation_kills_the_whole_namespace() {
    let root = busybox_root();
    let cancel = CancelToken::new().unwrap();
    let trigger = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        trigger.cancel();
    });
    let mut rec = Recorder::default();
    let started = Instant::now();
    let spec = sh(
        root.path(),
        "sleep 987651 & sleep 987652 & echo started; sleep 987653",
    );
    let result = exec::run(&spec, &mut rec, &cancel);
    canceller.join().unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(rec.stdout(), ["started"]);
    assert_eq!(sleepers("98765"), 0, "every process of the step is gone");
    assert_eq!(entries(root.path()), ["bin"]);
    // A cancelled token refuses to start anything.
    assert!(matches!(
        exec::run(&spec, &mut rec, &cancel),
        Err(Error::Cancelled)
    ));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn background_processes_die_with_the_command() {
    let root = busybox_root();
    let started = Instant::now();
    let rec = run_ok(&sh(root.path(), "sleep 987661 & echo done"));
    assert_eq!(rec.stdout(), ["done"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sleepers("987661"), 0);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn no_descriptor_leaks_into_the_command() {
    let root = busybox_root();
    // A descriptor the builder forgot to mark close-on-exec must not reach the step.
    let leaked = nix::fcntl::open(
        "/etc/hostname",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    // `exec` so the listing process is the one that got the descriptors; it sees one more,
    // its own handle on the directory it lists.
    let out = run_ok(&sh(root.path(), "exec ls -l /proc/self/fd")).stdout();
    let fds: Vec<(String, String)> = out
        .iter()
        .filter_map(|l| l.split_once(" -> "))
        .map(|(left, target)| {
            let fd = left.rsplit(' ').next().unwrap_or_default().to_string();
            (fd, target.to_string())
        })
        .filter(|(_, target)| !(target.starts_with("/proc/") && target.ends_with("/fd")))
        .collect();
    let numbers: Vec<&str> = fds.iter().map(|(fd, _)| fd.as_str()).collect();
    assert_eq!(numbers, ["0", "1", "2"], "{out:?}");
    assert!(fds[0].1.ends_with("null"), "stdin is /dev/null: {fds:?}");
    assert!(
        fds[1].1.starts_with("pipe:") && fds[2].1.starts_with("pipe:"),
        "{fds:?}"
    );
    drop(leaked);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn setup_failures_name_the_stage() {
    let root = busybox_root();
    let mut spec = sh(root.path(), "true");
    spec.mounts.push(Mount {
        target: "/x".into(),
        kind: MountKind::Bind {
            source: PathBuf::from("/nonexistent/source"),
            readonly: true,
        },
    });
    let (r, _) = run(&spec);
    let err = r.unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not resolve mount source /nonexistent/source"
    );
    // The working directory cannot be created on top of a file.
    std::fs::write(root.path().join("file"), "").unwrap();
    let mut spec = sh(root.path(), "true");
    spec.cwd = "/file/sub".into();
    let err = run(&spec).0.unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not set up the step's container: create the working directory /file/sub"
    );
    assert_eq!(entries(root.path()), ["bin", "file"]);
}

struct PanickingSink;

impl OutputSink for PanickingSink {
    fn line(&mut self, _: Stream, _: &[u8]) {
        panic!("sink failure");
    }
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_panicking_sink_leaves_no_process_behind() {
    let root = busybox_root();
    let spec = sh(root.path(), "echo first; sleep 987671");
    let cancel = CancelToken::new().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exec::run(&spec, &mut PanickingSink, &cancel)
    }));
    assert!(result.is_err());
    assert_eq!(sleepers("987671"), 0);
    assert_eq!(entries(root.path()), ["bin"]);
}

/// A sink that takes the output as bytes and remembers the init's pid.
#[derive(Default)]
struct RawSink {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    lines: usize,
    pid: Option<u32>,
    alive_at_start: bool,
}

impl OutputSink for RawSink {
    fn line(&mut self, _: Stream, _: &[u8]) {
        self.lines += 1;
    }
    fn raw(&self) -> bool {
        true
    }
    fn bytes(&mut self, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(data),
            Stream::Stderr => self.stderr.extend_from_slice(data),
        }
    }
    fn started(&mut self, init_pid: u32) {
        self.pid = Some(init_pid);
        self.alive_at_start = Path::new(&format!("/proc/{init_pid}")).exists();
    }
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn raw_sinks_get_the_bytes_exactly_and_the_init_pid() {
    let root = busybox_root();
    let mut sink = RawSink::default();
    let cancel = CancelToken::new().unwrap();
    let spec = sh(
        root.path(),
        "printf 'a\\r\\nb\\0c'; printf 'no newline' >&2",
    );
    let outcome = exec::run(&spec, &mut sink, &cancel).unwrap();
    assert_eq!(outcome.status, ExitStatus::Exited(0));
    assert_eq!(sink.stdout, b"a\r\nb\0c");
    assert_eq!(sink.stderr, b"no newline");
    assert_eq!(sink.lines, 0, "a raw sink gets no lines");
    let pid = sink.pid.expect("the init's pid is reported");
    assert!(pid > 1 && sink.alive_at_start);
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "reaped");
}
