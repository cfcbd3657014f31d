//! Containers end to end: `run` (exit codes, env, workdir, user, network, `--rm`), `ps`,
//! `rm`, `diff` (Docker's exact lines), `commit` and a build FROM the committed image,
//! `export` against the mounted rootfs and against `umoci unpack`, `import` of a tarball,
//! a folder and standard input, `rmi` refused while a container uses the image, and
//! `prune` keeping what containers use. Containers need root and overlayfs: every test is
//! privileged.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{have, strata};

const PRIVILEGED: &str = "privileged: needs root and overlayfs (run by cargo xtask test)";

/// A temp dir with a store holding `busybox:latest` (Debian's busybox-static, with
/// `/etc/passwd` and `/etc/group`), imported with `strata import` from a folder.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        let etc = rootfs.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(etc.join("group"), "root:x:0:\napp:x:1000:\n").unwrap();
        std::fs::create_dir_all(rootfs.join("opt/old")).unwrap();
        std::fs::write(rootfs.join("opt/env"), "A=1\n").unwrap();
        std::fs::write(rootfs.join("opt/old/keep"), "keep\n").unwrap();
        let f = Fixture { dir };
        f.ok(&[
            "import",
            "-c",
            "CMD [\"sh\"]",
            "-c",
            "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            rootfs.to_str().unwrap(),
            "busybox:latest",
        ]);
        f
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = strata();
        c.arg("--root")
            .arg(self.root())
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("STRATA_LOG_LEVEL")
            .env_remove("STRATA_STORAGE_DRIVER");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("strata runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// stdout, stderr and exit code.
    fn outcome(&self, args: &[&str]) -> (String, String, i32) {
        let out = self.run(args);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }

    fn lines(&self, args: &[&str]) -> Vec<String> {
        self.ok(args).lines().map(str::to_string).collect()
    }
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn run_passes_output_and_exit_codes_through_with_the_images_config() {
    let f = Fixture::new();
    // Only the command's output on stdout, byte for byte (no newline added).
    let (out, err, code) = f.outcome(&["run", "--rm", "busybox", "printf", "a\\r\\nb"]);
    assert_eq!((out.as_str(), err.as_str(), code), ("a\r\nb", "", 0));
    assert_eq!(
        f.outcome(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])
            .2,
        3
    );
    let (out, err, code) = f.outcome(&["run", "--rm", "busybox", "nothere"]);
    assert_eq!((out.as_str(), code), ("", 127));
    assert!(
        err.starts_with("Error: exec: \"nothere\": executable file not found in $PATH (container "),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    assert_eq!(
        f.outcome(&["run", "--rm", "busybox", "/etc/passwd"]).2,
        126,
        "not executable"
    );
    let (_, err, code) = f.outcome(&["run", "--rm", "nosuchimage"]);
    assert_eq!(code, 125);
    assert!(
        err.starts_with("Error: no such image: nosuchimage (image nosuchimage)"),
        "{err}"
    );
    assert!(err.contains("hint: `strata images`"), "{err}");
    // The image's CMD by default; stderr stays stderr.
    let (out, err, _) = f.outcome(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    // Env, workdir, user and host name.
    std::env::set_var("STRATA_TEST_FROM_HOST", "host-value");
    let out = f.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hi there",
        "-e",
        "STRATA_TEST_FROM_HOST",
        "-w",
        "/work/dir",
        "-u",
        "app",
        "busybox",
        "sh",
        "-c",
        "echo \"$GREETING|$STRATA_TEST_FROM_HOST|$HOME|$PATH\"; pwd; id -u; id -g; test ${#HOSTNAME} -eq 12 && echo host-ok",
    ]);
    assert_eq!(
        out,
        "hi there|host-value|/home/app|/usr/sbin:/usr/bin:/sbin:/bin\n/work/dir\n1000\n1000\nhost-ok\n"
    );
    assert_eq!(
        f.ok(&["run", "--rm", "-u", "12:34", "busybox", "id"]),
        "uid=12 gid=34\n"
    );
    // --entrypoint replaces the image's and drops its CMD.
    assert_eq!(
        f.ok(&["run", "--rm", "--entrypoint", "echo", "busybox", "x", "-n"]),
        "x -n\n"
    );
    // --network none: only the loopback interface.
    assert_eq!(
        f.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "busybox",
            "ls",
            "/sys/class/net"
        ]),
        "lo\n"
    );
    let (_, err, code) = f.outcome(&["run", "--rm", "-w", "rel", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("must be an absolute path"), "{err}");
    // Every --rm run above left nothing behind.
    assert_eq!(f.ok(&["ps", "-aq"]), "");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn kept_containers_are_listed_and_removed() {
    let f = Fixture::new();
    assert_eq!(
        f.outcome(&["run", "--name", "web", "busybox", "sh", "-c", "exit 4"])
            .2,
        4
    );
    f.ok(&[
        "run",
        "--name",
        "second",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/zeros",
        "bs=1024",
        "count=300",
    ]);
    // Its writable layer is what `system df -v` counts for it.
    let df: serde_json::Value =
        serde_json::from_str(&f.ok(&["system", "df", "-v", "--format", "json"])).unwrap();
    let sizes: Vec<u64> = df["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 2, "{df}");
    assert!(sizes.iter().any(|s| *s >= 300 * 1024), "{sizes:?}");
    // Not running: `ps` alone shows only the header.
    assert_eq!(f.lines(&["ps"]).len(), 1);
    let table = f.lines(&["ps", "-a"]);
    assert_eq!(table.len(), 3, "{table:?}");
    assert!(
        table[0].starts_with("CONTAINER ID   IMAGE     COMMAND"),
        "{table:?}"
    );
    // Newest first.
    assert!(
        table[1].ends_with("second") && table[1].contains("Exited (0)"),
        "{table:?}"
    );
    assert!(
        table[2].ends_with("web") && table[2].contains("Exited (4)"),
        "{table:?}"
    );
    assert!(table[2].contains("\"sh -c exit 4\""), "{table:?}");
    let json: Vec<serde_json::Value> = f
        .lines(&["ps", "-a", "--format", "json"])
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json[1]["Names"], "web");
    assert_eq!(json[1]["State"], "exited");
    assert_eq!(json[1]["Image"], "busybox");
    let ids = f.lines(&["ps", "-aq"]);
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|i| i.len() == 12));
    // Names are unique; a name, an ID prefix and a full ID all work.
    let (_, err, code) = f.outcome(&["run", "--name", "web", "busybox", "true"]);
    assert_eq!(code, 125);
    assert!(
        err.contains("the container name \"web\" is already in use"),
        "{err}"
    );
    assert_eq!(
        f.ok(&["rm", "web", &ids[0][..6]]),
        format!("web\n{}\n", &ids[0][..6])
    );
    assert_eq!(f.ok(&["ps", "-aq"]), "");
    let (_, err, code) = f.outcome(&["rm", "web"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error: no such container: web (container web)"),
        "{err}"
    );
    assert!(err.contains("hint: `strata ps -a`"), "{err}");
    // Their writable layers are gone.
    let snapshots = strata_overlay::Snapshotter::open(&f.root(), None)
        .unwrap()
        .walk()
        .unwrap();
    let active: Vec<_> = snapshots
        .iter()
        .filter(|i| i.kind == strata_overlay::Kind::Active)
        .map(|i| i.key.clone())
        .collect();
    assert!(active.is_empty(), "writable layers left: {active:?}");
}

impl Fixture {
    /// `system df -v`'s count of bytes in blobs nothing references.
    fn unreferenced(&self) -> u64 {
        let df: serde_json::Value =
            serde_json::from_str(&self.ok(&["system", "df", "-v", "--format", "json"])).unwrap();
        df["UnreferencedSize"].as_u64().expect("UnreferencedSize")
    }

    /// `fsck`'s first line: `checked N blobs (SIZE)`.
    fn fsck_clean(&self) -> String {
        let out = self.ok(&["fsck"]);
        assert!(out.ends_with("store is consistent\n"), "{out}");
        out.lines().next().unwrap().to_string()
    }
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn container_state_leaves_no_blobs_behind() {
    let f = Fixture::new();
    let before = f.fsck_clean();
    assert_eq!(f.unreferenced(), 0);
    // A --rm run records created, running and exited, then goes: the store is as it was.
    assert_eq!(f.outcome(&["run", "--rm", "busybox", "true"]).2, 0);
    assert_eq!(f.unreferenced(), 0);
    assert_eq!(f.fsck_clean(), before);
    // A kept container's state is its record file beside the store, replaced in place.
    assert_eq!(
        f.outcome(&["run", "--name", "kept", "busybox", "sh", "-c", "exit 3"])
            .2,
        3
    );
    assert_eq!(f.unreferenced(), 0);
    assert_eq!(f.fsck_clean(), before);
    let id = f.ok(&["ps", "-aq", "--no-trunc"]).trim().to_string();
    let record = f
        .root()
        .join("builder/containers")
        .join(format!("{id}.json"));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(
        (
            &saved["name"],
            &saved["state"]["status"],
            &saved["state"]["exit_code"]
        ),
        (&"kept".into(), &"exited".into(), &3.into()),
        "{saved}"
    );
    assert_eq!(f.ok(&["rm", "kept"]), "kept\n");
    assert!(!record.exists(), "the record file goes with the container");
    assert_eq!(f.unreferenced(), 0);
    assert_eq!(f.fsck_clean(), before);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn rm_f_kills_a_running_container() {
    let f = Fixture::new();
    let mut child = f
        .command(&["run", "--name", "sleeper", "busybox", "sleep", "600"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ps = f.ok(&["ps"]);
        if ps.contains("sleeper") {
            assert!(ps.contains("Up "), "{ps}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never running");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // `system df` counts it as active, and its writable layer.
    let df: Vec<serde_json::Value> = f
        .lines(&["system", "df", "--format", "json"])
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = df.iter().find(|r| r["Type"] == "Containers").unwrap();
    assert_eq!(
        (&row["TotalCount"], &row["Active"]),
        (&"1".into(), &"1".into()),
        "{row}"
    );
    let (_, err, code) = f.outcome(&["rm", "sleeper"]);
    assert_eq!(code, 1);
    assert!(err.contains("it is running"), "{err}");
    assert!(err.contains("strata rm -f"), "{err}");
    assert_eq!(f.ok(&["rm", "-f", "sleeper"]), "sleeper\n");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
    assert_eq!(f.ok(&["ps", "-aq"]), "");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn ctrl_c_kills_the_command_and_records_the_exit() {
    let f = Fixture::new();
    let child = f
        .command(&["run", "--name", "interrupted", "busybox", "sleep", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f.ok(&["ps"]).contains("interrupted") {
        assert!(std::time::Instant::now() < deadline, "never running");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let ps = f.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn diff_prints_dockers_lines_from_the_upper_dir() {
    let f = Fixture::new();
    f.ok(&[
        "run",
        "--name",
        "ctr",
        "busybox",
        "sh",
        "-c",
        "mkdir /opt/new && echo x > /opt/new/f && rm /opt/env && echo more >> /etc/passwd && rm -r /opt/old && mkdir /tmp",
    ]);
    assert_eq!(
        f.lines(&["diff", "ctr"]),
        [
            "C /etc",
            "C /etc/passwd",
            "C /opt",
            "D /opt/env",
            "A /opt/new",
            "A /opt/new/f",
            "D /opt/old",
            "A /tmp",
        ]
    );
    // A folder deleted and made again (opaque in the upper dir) reads as deleted, with what
    // is in it now added, as Docker's overlay2 driver reports it.
    f.ok(&["commit", "ctr", "with-new:1"]);
    f.ok(&[
        "run",
        "--name",
        "again",
        "with-new:1",
        "sh",
        "-c",
        "rm -r /opt/new && mkdir /opt/new && echo y > /opt/new/g",
    ]);
    assert_eq!(
        f.lines(&["diff", "again"]),
        ["C /opt", "D /opt/new", "A /opt/new/g"]
    );
    // A container that changed nothing prints nothing.
    f.ok(&["run", "--name", "quiet", "busybox", "true"]);
    assert_eq!(f.ok(&["diff", "quiet"]), "");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn commit_makes_an_image_that_builds_and_runs() {
    let f = Fixture::new();
    f.ok(&[
        "run",
        "--name",
        "ctr",
        "-e",
        "MODE=dev",
        "busybox",
        "sh",
        "-c",
        "echo committed > /opt/f && rm /opt/env",
    ]);
    let id = f.ok(&[
        "commit",
        "-m",
        "my change",
        "-c",
        "CMD [\"cat\", \"/opt/f\"]",
        "ctr",
        "mine:1",
    ]);
    assert!(id.starts_with("sha256:") && id.len() == 72, "{id}");
    let history = f.lines(&["history", "--no-trunc", "--format", "json", "mine:1"]);
    let top: serde_json::Value = serde_json::from_str(&history[0]).unwrap();
    assert_eq!(
        top["CreatedBy"],
        "sh -c echo committed > /opt/f && rm /opt/env"
    );
    assert_eq!(top["Comment"], "my change");
    assert_eq!(history.len(), 2, "{history:?}");
    // The change became the CMD; the container's env went into the image.
    assert_eq!(f.ok(&["run", "--rm", "mine:1"]), "committed\n");
    assert_eq!(
        f.ok(&["run", "--rm", "mine:1", "sh", "-c", "echo $MODE; ls /opt"]),
        "dev\nf\nold\n"
    );
    // A build FROM the committed image sees its files and its deletion.
    let ctx = f.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM mine:1\nRUN cat /opt/f > /opt/g && test ! -e /opt/env\nCMD [\"cat\", \"/opt/g\"]\n",
    )
    .unwrap();
    f.ok(&["build", "-q", "-t", "built:1", ctx.to_str().unwrap()]);
    assert_eq!(f.ok(&["run", "--rm", "built:1"]), "committed\n");
    // Committing an unchanged container adds no layer, only a history entry.
    f.ok(&["run", "--name", "same", "busybox", "true"]);
    f.ok(&["commit", "same", "same:1"]);
    let inspect: serde_json::Value = serde_json::from_str(&f.ok(&["inspect", "same:1"])).unwrap();
    let busybox: serde_json::Value = serde_json::from_str(&f.ok(&["inspect", "busybox"])).unwrap();
    assert_eq!(
        inspect[0]["RootFS"]["Layers"],
        busybox[0]["RootFS"]["Layers"]
    );
}

/// Every entry under `root`: type, mode, owner, and content or link target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                "dir".to_string()
            } else {
                let data = std::fs::read(&p).unwrap();
                format!("file {} {:x}", data.len(), crc(&data))
            };
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.permissions().mode() & 0o7777
            };
            out.insert(rel, format!("{what} {mode:o} {}:{}", m.uid(), m.gid()));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A cheap content fingerprint (FNV-1a).
fn crc(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn untar(tar: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn export_is_the_merged_rootfs_and_umoci_agrees() {
    let f = Fixture::new();
    f.ok(&[
        "run",
        "--name",
        "ctr",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /srv/a && echo data > /srv/a/f && chmod 640 /srv/a/f && chown 5:6 /srv/a/f && ln -s a/f /srv/l && rm /opt/env",
    ]);
    let exported = f.path("c.tar");
    f.ok(&["export", "ctr", "-o", exported.to_str().unwrap()]);
    let unpacked = f.path("exported");
    untar(&exported, &unpacked);
    let merged = PathBuf::from(f.ok(&["mount", "ctr"]).trim_end());
    let mounted = tree(&merged);
    f.ok(&["umount", "ctr"]);
    let from_export = tree(&unpacked);
    assert_eq!(from_export, mounted);
    assert_eq!(
        from_export["srv/a/f"],
        format!("file 5 {:x} 640 5:6", crc(b"data\n"))
    );
    assert!(!from_export.contains_key("opt/env"));
    // Standard output gets the same archive.
    let out = f.run(&["export", "ctr"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&exported).unwrap());

    // The committed image saved as OCI and unpacked by umoci has the same files.
    if !have("umoci") {
        panic!("umoci is not installed (cargo xtask test installs it)");
    }
    f.ok(&["commit", "ctr", "exported:1"]);
    let archive = f.path("oci.tar");
    f.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "exported:1",
    ]);
    let layout = f.path("layout");
    untar(&archive, &layout);
    let bundle = f.path("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:docker.io/library/exported:1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_umoci = tree(&bundle.join("rootfs"));
    // umoci makes the rootfs folder itself; the image has no entry for it.
    by_umoci.retain(|k, _| !k.is_empty());
    assert_eq!(by_umoci, from_export);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn import_takes_a_tarball_a_folder_or_standard_input_with_changes() {
    let f = Fixture::new();
    let rootfs = f.path("rootfs");
    // A gzipped tarball of the folder, made by tar(1).
    let tarball = f.path("rootfs.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let id = f.ok(&[
        "import",
        "--change",
        "ENV GREETING=hello",
        "-c",
        "CMD [\"sh\", \"-c\", \"echo $GREETING\"]",
        "-c",
        "WORKDIR /opt",
        tarball.to_str().unwrap(),
        "from-tar:1",
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(f.ok(&["run", "--rm", "from-tar:1"]), "hello\n");
    assert_eq!(f.ok(&["run", "--rm", "from-tar:1", "pwd"]), "/opt\n");
    let history = f.lines(&["history", "--format", "json", "from-tar:1"]);
    assert_eq!(history.len(), 1, "{history:?}");
    let h: serde_json::Value = serde_json::from_str(&history[0]).unwrap();
    assert_eq!(h["Comment"], format!("Imported from {}", tarball.display()));

    // Standard input, untagged: listed with `images -a`... and usable by ID.
    let mut child = f
        .command(&["import", "-", "from-stdin:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(&tarball).unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let mut id2 = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut id2)
        .unwrap();
    assert!(child.wait().unwrap().success());
    // Same tar, same layer; no changes, so another config.
    let a: serde_json::Value = serde_json::from_str(&f.ok(&["inspect", "from-tar:1"])).unwrap();
    let b: serde_json::Value = serde_json::from_str(&f.ok(&["inspect", "from-stdin:1"])).unwrap();
    assert_eq!(a[0]["RootFS"], b[0]["RootFS"]);
    assert_eq!(
        f.ok(&["run", "--rm", "from-stdin:1", "cat", "/opt/old/keep"]),
        "keep\n"
    );

    // The folder import (the fixture's busybox) has the same files as the tarball's.
    f.ok(&["run", "--name", "ca", "busybox", "true"]);
    f.ok(&["run", "--name", "cb", "from-tar:1", "true"]);
    let (ea, eb) = (f.path("a.tar"), f.path("b.tar"));
    f.ok(&["export", "ca", "-o", ea.to_str().unwrap()]);
    f.ok(&["export", "cb", "-o", eb.to_str().unwrap()]);
    let (ua, ub) = (f.path("ua"), f.path("ub"));
    untar(&ea, &ua);
    untar(&eb, &ub);
    assert_eq!(tree(&ua), tree(&ub));

    // Not a tar: refused, nothing added.
    let junk = f.path("junk.txt");
    std::fs::write(&junk, "not a tar at all").unwrap();
    let before = f.ok(&["images", "-aq"]);
    let (_, err, code) = f.outcome(&["import", junk.to_str().unwrap(), "junk:1"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("Error: {} is not a tar archive: ", junk.display())),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    assert_eq!(f.ok(&["images", "-aq"]), before);
    let (_, err, code) = f.outcome(&["import", "-c", "FROM x", junk.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid change \"FROM x\""), "{err}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn images_used_by_containers_are_kept() {
    let f = Fixture::new();
    f.ok(&[
        "run",
        "--name",
        "user",
        "busybox",
        "sh",
        "-c",
        "echo mine > /mine",
    ]);
    let short = f.ok(&["ps", "-aq"]).trim().to_string();
    let (_, err, code) = f.outcome(&["rmi", "busybox"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("container {short} is using its referenced image")),
        "{err}"
    );
    assert!(f.ok(&["images", "-q"]).lines().count() == 1);
    // Forced: the tag goes, the container keeps what it needs through a prune.
    f.ok(&["rmi", "-f", "busybox"]);
    f.ok(&["prune"]);
    let merged = PathBuf::from(f.ok(&["mount", "user"]).trim_end());
    assert_eq!(
        std::fs::read_to_string(merged.join("mine")).unwrap(),
        "mine\n"
    );
    assert!(merged.join("bin/busybox").is_file());
    f.ok(&["umount", "user"]);
    f.ok(&["commit", "user", "again:1"]);
    assert_eq!(f.ok(&["run", "--rm", "again:1", "cat", "/mine"]), "mine\n");
    // Once the containers are gone, prune frees the layers the removed image had.
    f.ok(&["rm", "user"]);
    f.ok(&["rmi", "again:1"]);
    let out = f.ok(&["prune"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(f.ok(&["images", "-aq"]), "");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn mount_of_an_image_is_read_only_and_kept_until_umount() {
    let f = Fixture::new();
    let path = PathBuf::from(f.ok(&["mount", "busybox"]).trim_end());
    assert!(path.join("bin/busybox").is_file());
    assert!(
        std::fs::write(path.join("x"), "no").is_err(),
        "an image's view is read-only"
    );
    // Mounting again gives the same path.
    assert_eq!(PathBuf::from(f.ok(&["mount", "busybox"]).trim_end()), path);
    f.ok(&["umount", "busybox"]);
    assert!(!path.join("bin/busybox").exists());
    let (_, err, code) = f.outcome(&["umount", "busybox"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not mounted"), "{err}");
    // An image removed while mounted is unmounted by its ID.
    let id = f.ok(&["images", "-q", "busybox"]).trim().to_string();
    let path = PathBuf::from(f.ok(&["mount", "busybox"]).trim_end());
    f.ok(&["rmi", "busybox"]);
    assert!(path.join("bin/busybox").is_file());
    assert_eq!(f.ok(&["umount", &id]), format!("{id}\n"));
    assert!(!path.join("bin/busybox").exists());
    let (_, err, code) = f.outcome(&["mount", "nothing"]);
    assert_eq!(code, 1);
    assert!(err.contains("no container or image by that name"), "{err}");
    let _ = PRIVILEGED;
}
