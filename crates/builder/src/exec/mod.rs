//! Running a step's process in its own namespaces: the one module that forks, unshares,
//! mounts, pivots and execs.
//!
//! [`run`] takes a [`ProcessSpec`] (a root filesystem that the caller has already mounted,
//! argv, env, cwd, credentials, network mode, host name, extra mounts) and runs it the way
//! BuildKit runs a `RUN` step:
//!
//! - new mount, PID, UTS and IPC namespaces, plus a network namespace with only `lo` for
//!   [`NetworkMode::None`];
//! - inside: mounts made private, the root bound onto itself, a new `/proc` (Docker's
//!   read-only and masked paths), a minimal `/dev` (tmpfs with `null`, `zero`, `full`,
//!   `random`, `urandom`, `tty` bound from the host, `shm`, a private `pts` and the `ptmx`,
//!   `fd`, `stdin`/`stdout`/`stderr` links), a read-only `/sys`, the host's
//!   `/etc/resolv.conf` and `/etc/hosts` read-only, then the extra mounts; `pivot_root`, the
//!   old root detached; the working directory created if missing;
//! - the command runs with Docker's default capabilities (minus `CAP_MKNOD`), its
//!   supplementary groups, gid and uid, stdin from `/dev/null`, stdout and stderr streamed
//!   line by line to an [`OutputSink`] while it runs; its exit status is returned.
//!
//! **Mountpoint stubs.** Targets missing in the image (`/etc/resolv.conf`, `/proc` in
//! `scratch`, a secret's file) are created before the run and removed afterwards, exactly
//! those and only if still ours (see `stubs`), so they never reach a layer.
//!
//! **Process structure.** The builder `clone`s one child directly into all the new
//! namespaces; it is PID 1 there (the "init"). It sets everything up, forks the command,
//! reaps whatever gets re-parented to it and exits with the command's status; the kernel
//! then kills anything left in the namespace. Cancelling kills the init with `SIGKILL`,
//! which takes the whole namespace with it. We run an in-process function in the clone
//! child rather than re-executing our own binary (as runc does): it saves an `execve` and
//! the re-initialisation of the Rust runtime per step, needs no hidden subcommand in the
//! CLI, and cannot be tricked into executing a replaced `/proc/self/exe`
//! (CVE-2019-5736). The price is that the child may not allocate; see `child`.
//!
//! **Descriptors.** Every descriptor the builder creates is close-on-exec; the init closes
//! everything it inherited except the four it needs (stdin, stdout, stderr, the report
//! pipe), and the command gets only 0, 1 and 2.
//!
//! Cost (see the crate's README and `examples/exec_overhead.rs`): about 2.0 ms per `true` in
//! an image-shaped root on the reference machine, 0.72x `unshare -mpiuf --mount-proc chroot`
//! in the same run; a new network namespace adds about 0.6 ms.

mod cancel;
mod child;
mod output;
mod spec;
mod stubs;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

pub use cancel::CancelToken;
pub use output::{OutputSink, Stream, MAX_LINE};
pub use spec::{Mount, MountKind, NetworkMode, ProcessSpec, DEFAULT_PATH, DEFAULT_SECRET_MODE};

use crate::Error;
use child::{ChildFds, ChildMount, ChildPlan, ExecArrays, Op, Report, Stage, REPORT_SIZE};
use output::LineSplitter;
use stubs::{Stubs, Target, TargetKind};

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's view: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
        }
    }

    /// Whether the command exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

/// The result of a run that got as far as running the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// How the command ended.
    pub status: ExitStatus,
    /// Mountpoint stubs that could not be removed because the step changed them (it wrote
    /// into a created directory, or replaced a created file); they are the step's content
    /// now. Paths inside the root.
    pub kept_stubs: Vec<String>,
}

/// Stack for the clone child. It only runs the init's setup code, which keeps small
/// buffers; the pages are touched lazily.
const CHILD_STACK: usize = 512 * 1024;

/// Docker's default capability set, minus `CAP_MKNOD` (see `child::drop_capabilities`).
const KEPT_CAPABILITIES: [u32; 13] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Runs `spec` to completion, streaming its output to `sink`.
///
/// Returns the command's exit status (a non-zero exit is not an error here: the caller
/// words it, e.g. `RUN ... returned exit code 1`). Errors: an invalid spec, a setup failure
/// inside the container ([`Error::Setup`]), a program that does not exist
/// ([`Error::CommandNotFound`]), or [`Error::Cancelled`] when `cancel` fired (the whole
/// namespace has been killed by then). Needs root.
pub fn run(
    spec: &ProcessSpec,
    sink: &mut dyn OutputSink,
    cancel: &CancelToken,
) -> Result<ExecOutcome, Error> {
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    spec.validate()?;
    let rootfs =
        std::fs::canonicalize(&spec.rootfs).map_err(|e| Error::io("resolve", &spec.rootfs, e))?;
    let root = strata_overlay::in_root::Root::open(&rootfs)?;
    let mut stubs = Stubs::new();
    let mounts = prepare_mounts(spec, root.fd(), &mut stubs)?;
    let plan = build_plan(spec, &rootfs, mounts)?;
    let status = supervise(&plan, sink, cancel);
    let kept_stubs = stubs.remove_all();
    Ok(ExecOutcome {
        status: status?,
        kept_stubs,
    })
}

fn cstring(text: &[u8], what: &str) -> Result<CString, Error> {
    CString::new(text).map_err(|_| Error::InvalidSpec {
        reason: format!("{what} contains a NUL byte"),
    })
}

fn path_cstring(path: &Path) -> Result<CString, Error> {
    cstring(path.as_os_str().as_bytes(), &path.display().to_string())
}

fn canonical_source(path: &Path) -> Result<PathBuf, Error> {
    std::fs::canonicalize(path).map_err(|e| Error::io("resolve mount source", path, e))
}

/// Creates the targets in the root (recording stubs) and lists the mounts for the child.
fn prepare_mounts(
    spec: &ProcessSpec,
    root: BorrowedFd<'_>,
    stubs: &mut Stubs,
) -> Result<Vec<ChildMount>, Error> {
    let mut ensure = |target: &str, kind: TargetKind| -> Result<Target, Error> {
        stubs
            .ensure(root, target, kind)
            .map_err(|source| Error::Setup {
                stage: format!("create the mountpoint {target}"),
                source,
            })
    };
    let rel = |target: &str| cstring(target.trim_start_matches('/').as_bytes(), target);
    let mut mounts = Vec::new();
    for (target, op) in [("/proc", Op::Proc), ("/dev", Op::Dev), ("/sys", Op::Sys)] {
        if ensure(target, TargetKind::Dir)? == Target::DanglingSymlink {
            return Err(dangling(target));
        }
        mounts.push(ChildMount {
            target: rel(target)?,
            op,
        });
    }
    for (target, host) in [
        ("/etc/resolv.conf", &spec.resolv_conf),
        ("/etc/hosts", &spec.hosts),
    ] {
        let Some(host) = host else { continue };
        let Ok(source) = std::fs::canonicalize(host) else {
            continue;
        };
        // An image whose resolv.conf points nowhere keeps it that way, as Docker does.
        if ensure(target, TargetKind::File)? == Target::DanglingSymlink {
            continue;
        }
        mounts.push(ChildMount {
            target: rel(target)?,
            op: Op::Bind {
                source: path_cstring(&source)?,
                readonly: true,
            },
        });
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        let (kind, op) = match &m.kind {
            MountKind::Bind { source, readonly } | MountKind::Cache { source, readonly } => {
                let source = canonical_source(source)?;
                let kind = if source.is_dir() {
                    TargetKind::Dir
                } else {
                    TargetKind::File
                };
                let op = Op::Bind {
                    source: path_cstring(&source)?,
                    readonly: *readonly,
                };
                (kind, op)
            }
            MountKind::Tmpfs { size } => (
                TargetKind::Dir,
                Op::Tmpfs {
                    size: size
                        .map(|s| cstring(s.to_string().as_bytes(), "size"))
                        .transpose()?,
                },
            ),
            MountKind::Secret {
                source,
                uid,
                gid,
                mode,
            } => {
                let source = canonical_source(source)?;
                if !source.is_file() {
                    return Err(Error::NotRegularFile { path: source });
                }
                let op = Op::Secret {
                    source: path_cstring(&source)?,
                    staging: cstring(format!(".strata-secret-{i}").as_bytes(), "staging")?,
                    uid: *uid,
                    gid: *gid,
                    mode: *mode & 0o7777,
                };
                (TargetKind::File, op)
            }
        };
        if ensure(&m.target, kind)? == Target::DanglingSymlink {
            return Err(dangling(&m.target));
        }
        mounts.push(ChildMount {
            target: rel(&m.target)?,
            op,
        });
    }
    Ok(mounts)
}

fn dangling(target: &str) -> Error {
    Error::Setup {
        stage: format!("create the mountpoint {target}"),
        source: io::Error::other("it is a symbolic link that points nowhere inside the root"),
    }
}

/// Everything the child reads, as C data.
fn build_plan(
    spec: &ProcessSpec,
    rootfs: &Path,
    mounts: Vec<ChildMount>,
) -> Result<ChildPlan, Error> {
    let argv0 = &spec.argv[0];
    let candidates = if argv0.contains('/') {
        vec![cstring(argv0.as_bytes(), "argv[0]")?]
    } else {
        spec.search_path()
            .split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                cstring(format!("{dir}/{argv0}").as_bytes(), "PATH")
            })
            .collect::<Result<_, _>>()?
    };
    let mut cwd_prefixes = Vec::new();
    let mut prefix = String::new();
    for component in spec.cwd.split('/').filter(|c| !c.is_empty() && *c != ".") {
        prefix.push('/');
        prefix.push_str(component);
        cwd_prefixes.push(cstring(prefix.as_bytes(), "working directory")?);
    }
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let drop_caps = (0..=last_cap)
        .filter(|c| !KEPT_CAPABILITIES.contains(c))
        .collect();
    let mut keep_caps = [0u32; 2];
    for cap in KEPT_CAPABILITIES {
        keep_caps[(cap / 32) as usize] |= 1 << (cap % 32);
    }
    Ok(ChildPlan {
        rootfs: path_cstring(rootfs)?,
        hostname: cstring(spec.hostname.as_bytes(), "hostname")?,
        network_none: spec.network == NetworkMode::None,
        mounts,
        cwd_prefixes,
        cwd: cstring(spec.cwd.as_bytes(), "working directory")?,
        candidates,
        argv: spec
            .argv
            .iter()
            .map(|a| cstring(a.as_bytes(), "argv"))
            .collect::<Result<_, _>>()?,
        env: spec
            .env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "env"))
            .collect::<Result<_, _>>()?,
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
        drop_caps,
        keep_caps,
    })
}

fn spawn_err(what: &'static str) -> impl Fn(nix::Error) -> Error {
    move |e| Error::Spawn {
        what,
        source: e.into(),
    }
}

/// Starts the init, pumps its output until every writer is gone, and reaps it.
fn supervise(
    plan: &ChildPlan,
    sink: &mut dyn OutputSink,
    cancel: &CancelToken,
) -> Result<ExitStatus, Error> {
    let (out_r, out_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(spawn_err("create a pipe"))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(spawn_err("create a pipe"))?;
    let (rep_r, rep_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(spawn_err("create a pipe"))?;
    let devnull = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(spawn_err("open /dev/null"))?;
    let fds = ChildFds {
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        report: rep_w.as_raw_fd(),
    };
    let arrays = ExecArrays::new(plan);
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if plan.network_none {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: without CLONE_VM the child runs the callback in its own copy of this address
    // space, on its copy of `stack`. The callback only reads the prepared plan, makes
    // system calls and always ends in `_exit` (see `child`), so the state of other threads'
    // locks in the copy never matters.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| child::init(plan, &arrays, fds)),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
    .map_err(spawn_err("clone into new namespaces"))?;
    drop((out_w, err_w, rep_w, devnull, stack));
    let mut init = Init { pid, reaped: false };
    sink.started(pid.as_raw().unsigned_abs());

    let pumped = pump(pid, [&out_r, &err_r, &rep_r], sink, cancel);
    let reaped = init.reap();
    let (reports, cancelled) = pumped?;
    if cancelled {
        return Err(Error::Cancelled);
    }
    for record in reports.chunks_exact(REPORT_SIZE) {
        match Report::decode(record) {
            Some(Report::Failed {
                stage,
                index,
                errno,
            }) => return Err(setup_error(plan, stage, index, errno)),
            Some(Report::Exited { wait_status }) => {
                return Ok(if libc::WIFSIGNALED(wait_status) {
                    ExitStatus::Signaled(libc::WTERMSIG(wait_status))
                } else {
                    ExitStatus::Exited(libc::WEXITSTATUS(wait_status))
                })
            }
            None => {}
        }
    }
    // Killed from outside without a word (`strata rm -f` kills the init, so does the OOM
    // killer; a setup failure always reports): the command ended with that signal, as a
    // shell would report it.
    if let Ok(WaitStatus::Signaled(_, sig, _)) = reaped {
        return Ok(ExitStatus::Signaled(sig as i32));
    }
    let how = match reaped {
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
        Ok(WaitStatus::Exited(_, code)) => format!("exited with {code}"),
        Ok(other) => format!("{other:?}"),
        Err(e) => e.to_string(),
    };
    Err(Error::Spawn {
        what: "the step's init process died without a report",
        source: io::Error::other(how),
    })
}

/// The init process until it is reaped. If the supervisor unwinds early (a panicking
/// sink), dropping this kills the init, and with it the namespace, so no step outlives us.
struct Init {
    pid: Pid,
    reaped: bool,
}

impl Init {
    fn reap(&mut self) -> nix::Result<WaitStatus> {
        let status = loop {
            match waitpid(self.pid, None) {
                Err(nix::Error::EINTR) => continue,
                other => break other,
            }
        };
        self.reaped = true;
        status
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.reap();
        }
    }
}

/// Reads stdout, stderr and the report pipe until all three reach end-of-file, killing the
/// init if `cancel` fires. Returns the report bytes and whether it was cancelled.
fn pump(
    pid: Pid,
    fds: [&OwnedFd; 3],
    sink: &mut dyn OutputSink,
    cancel: &CancelToken,
) -> Result<(Vec<u8>, bool), Error> {
    let mut splitters = [
        LineSplitter::new(Stream::Stdout),
        LineSplitter::new(Stream::Stderr),
    ];
    let mut open = [true; 3];
    let mut reports = Vec::new();
    let mut killed = false;
    let mut buf = vec![0u8; 64 * 1024];
    while open.iter().any(|o| *o) {
        let mut pollfds: Vec<PollFd<'_>> = Vec::with_capacity(4);
        let mut which = Vec::with_capacity(4);
        for (i, fd) in fds.iter().enumerate() {
            if open[i] {
                pollfds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                which.push(Some(i));
            }
        }
        if !killed {
            pollfds.push(PollFd::new(cancel.wakeup_fd(), PollFlags::POLLIN));
            which.push(None);
        }
        match poll(&mut pollfds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(spawn_err("poll the step's output")(e)),
            Ok(_) => {}
        }
        let ready: Vec<Option<usize>> = pollfds
            .iter()
            .zip(&which)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, w)| *w)
            .collect();
        drop(pollfds);
        for w in ready {
            let Some(i) = w else {
                // Killing PID 1 of the namespace kills every process in it; their pipes then
                // reach end-of-file and the loop ends.
                let _ = kill(pid, Signal::SIGKILL);
                killed = true;
                continue;
            };
            let n = match nix::unistd::read(fds[i], &mut buf) {
                Ok(n) => n,
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => continue,
                Err(e) => return Err(spawn_err("read the step's output")(e)),
            };
            let data = &buf[..n];
            match (i, n) {
                (2, 0) => open[2] = false,
                (2, _) => reports.extend_from_slice(data),
                (_, 0) => {
                    open[i] = false;
                    splitters[i].finish(sink);
                }
                (_, _) if sink.raw() => sink.bytes(splitters[i].stream(), data),
                (_, _) => splitters[i].feed(data, sink),
            }
        }
    }
    Ok((reports, killed))
}

/// Words a failure reported by the child.
fn setup_error(plan: &ChildPlan, stage: Stage, index: u32, errno: i32) -> Error {
    let source = io::Error::from_raw_os_error(errno);
    let target = |i: u32| -> String {
        plan.mounts
            .get(i as usize)
            .map(|m| format!("/{}", m.target.to_string_lossy()))
            .unwrap_or_default()
    };
    let cwd = plan.cwd.to_string_lossy();
    let stage = match stage {
        Stage::ExecNotFound => {
            return Error::CommandNotFound {
                program: plan
                    .argv
                    .first()
                    .map(|a| a.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            }
        }
        Stage::Fds => "arrange file descriptors".to_string(),
        Stage::Session => "start a new session".to_string(),
        Stage::MakePrivate => "make mounts private".to_string(),
        Stage::BindRoot => format!("bind the root {}", plan.rootfs.to_string_lossy()),
        Stage::OpenRoot => format!("open the root {}", plan.rootfs.to_string_lossy()),
        Stage::Target => format!("resolve the mount target {}", target(index)),
        Stage::Mount => format!("mount {}", target(index)),
        Stage::ProcMask => "restrict /proc".to_string(),
        Stage::DevNode => format!(
            "bind device {}",
            child::DEV_NODES
                .get(index as usize)
                .map(|(_, host)| host.to_string_lossy())
                .unwrap_or_default()
        ),
        Stage::DevDir => "populate /dev".to_string(),
        Stage::SecretCopy => format!("copy the secret for {}", target(index)),
        Stage::Hostname => "set the host name".to_string(),
        Stage::Loopback => "bring up the loopback interface".to_string(),
        Stage::Pivot => "pivot_root into the root".to_string(),
        Stage::UmountOld => "detach the old root".to_string(),
        Stage::Mkdir => format!("create the working directory {cwd}"),
        Stage::Fork => "fork the command".to_string(),
        Stage::Caps => "drop capabilities".to_string(),
        Stage::Groups => "set supplementary groups".to_string(),
        Stage::SetGid => format!("switch to group {}", plan.gid),
        Stage::SetUid => format!("switch to user {}", plan.uid),
        Stage::Chdir => format!("change to the working directory {cwd}"),
        Stage::CwdOutside => format!("the working directory {cwd} is outside the root"),
        Stage::Exec => format!(
            "exec {}",
            plan.argv
                .first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default()
        ),
    };
    Error::Setup { stage, source }
}
