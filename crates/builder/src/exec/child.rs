//! The code that runs inside the step's new namespaces, and the plan it follows.
//!
//! The builder is multi-threaded; after `clone` only the calling thread exists in the child,
//! and another thread may have held the allocator's lock at that instant. So the child must
//! not allocate, lock or unwind: everything it needs (C strings, pointer arrays, the mount
//! list, the capability list) is prepared by the parent in a [`ChildPlan`], and the child
//! only issues system calls on that data and ends in `_exit`. System calls go through
//! `rustix` (raw, no libc state) or `libc::syscall`; never through glibc wrappers that keep
//! per-process state (`setuid` and friends broadcast to all threads glibc believes exist,
//! which after a raw clone are threads of the parent).
//!
//! Two processes run here:
//! - the **init** (PID 1 of the new PID namespace, the direct clone child): it arranges the
//!   file descriptors, builds the mounts, pivots into the root, creates the working
//!   directory, forks the command, reaps every process that gets re-parented to it, and
//!   exits with the command's status, which makes the kernel kill whatever is left in the
//!   namespace;
//! - the **command**: drops capabilities, switches groups and user, changes into the working
//!   directory, checks it is inside the root, and execs.
//!
//! Failures are reported to the parent as fixed-size records on a close-on-exec pipe
//! ([`Report`]), so the parent can tell "could not mount /proc" (a setup error) from "the
//! command exited 1".

use std::ffi::{c_char, CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

/// How a mount target is made.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new procfs, with Docker's read-only and masked paths.
    Proc,
    /// A new read-only sysfs.
    Sys,
    /// A tmpfs with device nodes bound from the host, `shm`, `pts` and the usual links.
    Dev,
    /// A host path (recursively), optionally read-only.
    Bind {
        /// The host path.
        source: CString,
        /// Read-only.
        readonly: bool,
    },
    /// A fresh tmpfs (mode 1777).
    Tmpfs {
        /// `size=` option value, if limited.
        size: Option<CString>,
    },
    /// A copy of a host file in the private `/dev` tmpfs, bound read-only and then unlinked
    /// from `/dev`, so the mount is the only way to reach it.
    Secret {
        /// The host file.
        source: CString,
        /// Name of the staging file in `/dev` while it is being set up.
        staging: CString,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Permission bits.
        mode: u32,
    },
}

/// One mount of the plan.
#[derive(Debug)]
pub(crate) struct ChildMount {
    /// Target relative to the root (`etc/resolv.conf`), resolved in-root by the child.
    pub(crate) target: CString,
    /// What goes there.
    pub(crate) op: Op,
}

/// The descriptors the child keeps, by their numbers in the parent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildFds {
    pub(crate) stdin: RawFd,
    pub(crate) stdout: RawFd,
    pub(crate) stderr: RawFd,
    pub(crate) report: RawFd,
}

/// Everything the child needs, computed by the parent before `clone`.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    pub(crate) rootfs: CString,
    pub(crate) hostname: CString,
    pub(crate) network_none: bool,
    pub(crate) mounts: Vec<ChildMount>,
    /// `/a`, `/a/b`, ... for creating the working directory.
    pub(crate) cwd_prefixes: Vec<CString>,
    pub(crate) cwd: CString,
    /// Paths to try with `execve`, in `PATH` order.
    pub(crate) candidates: Vec<CString>,
    pub(crate) argv: Vec<CString>,
    pub(crate) env: Vec<CString>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<libc::gid_t>,
    /// Capabilities to remove from the bounding set.
    pub(crate) drop_caps: Vec<u32>,
    /// Capabilities the command may keep (inheritable mask), as two 32-bit words.
    pub(crate) keep_caps: [u32; 2],
}

/// Null-terminated pointer arrays for `execve`, built by the parent (they point into the
/// plan's strings, which live as long as the plan).
pub(crate) struct ExecArrays {
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl ExecArrays {
    pub(crate) fn new(plan: &ChildPlan) -> Self {
        let ptrs = |v: &[CString]| -> Vec<*const c_char> {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        ExecArrays {
            argv: ptrs(&plan.argv),
            envp: ptrs(&plan.env),
        }
    }
}

/// Where the child was when it failed (the parent turns it into words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Fds = 1,
    Session,
    MakePrivate,
    BindRoot,
    OpenRoot,
    Target,
    Mount,
    ProcMask,
    DevNode,
    DevDir,
    SecretCopy,
    Hostname,
    Loopback,
    Pivot,
    UmountOld,
    Mkdir,
    Fork,
    Caps,
    Groups,
    SetGid,
    SetUid,
    Chdir,
    CwdOutside,
    Exec,
    ExecNotFound,
}

impl Stage {
    pub(crate) fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        const ALL: [Stage; 25] = [
            Fds,
            Session,
            MakePrivate,
            BindRoot,
            OpenRoot,
            Target,
            Mount,
            ProcMask,
            DevNode,
            DevDir,
            SecretCopy,
            Hostname,
            Loopback,
            Pivot,
            UmountOld,
            Mkdir,
            Fork,
            Caps,
            Groups,
            SetGid,
            SetUid,
            Chdir,
            CwdOutside,
            Exec,
            ExecNotFound,
        ];
        ALL.into_iter().find(|s| *s as u32 == v)
    }
}

/// A record on the report pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// Setup failed at `stage` (with an index into the mounts, nodes or prefixes) with `errno`.
    Failed {
        stage: Stage,
        index: u32,
        errno: i32,
    },
    /// The command ended with this raw wait status.
    Exited { wait_status: i32 },
}

pub(crate) const REPORT_SIZE: usize = 16;
const KIND_FAILED: u32 = 1;
const KIND_EXITED: u32 = 2;

impl Report {
    fn encode(self) -> [u8; REPORT_SIZE] {
        let (kind, a, b, c) = match self {
            Report::Failed {
                stage,
                index,
                errno,
            } => (KIND_FAILED, stage as u32, index, errno),
            Report::Exited { wait_status } => (KIND_EXITED, 0, 0, wait_status),
        };
        let mut out = [0u8; REPORT_SIZE];
        out[0..4].copy_from_slice(&kind.to_ne_bytes());
        out[4..8].copy_from_slice(&a.to_ne_bytes());
        out[8..12].copy_from_slice(&b.to_ne_bytes());
        out[12..16].copy_from_slice(&c.to_ne_bytes());
        out
    }

    /// Decodes one record; `None` for garbage.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Report> {
        let word = |i: usize| -> Option<[u8; 4]> { bytes.get(i..i + 4)?.try_into().ok() };
        let kind = u32::from_ne_bytes(word(0)?);
        let a = u32::from_ne_bytes(word(4)?);
        let b = u32::from_ne_bytes(word(8)?);
        let c = i32::from_ne_bytes(word(12)?);
        match kind {
            KIND_FAILED => Some(Report::Failed {
                stage: Stage::from_u32(a)?,
                index: b,
                errno: c,
            }),
            KIND_EXITED => Some(Report::Exited { wait_status: c }),
            _ => None,
        }
    }
}

/// Device nodes bound from the host into the container's `/dev`.
pub(crate) const DEV_NODES: [(&CStr, &CStr); 6] = [
    (c"null", c"/dev/null"),
    (c"zero", c"/dev/zero"),
    (c"full", c"/dev/full"),
    (c"random", c"/dev/random"),
    (c"urandom", c"/dev/urandom"),
    (c"tty", c"/dev/tty"),
];

/// Symbolic links in the container's `/dev`.
const DEV_LINKS: [(&CStr, &CStr); 5] = [
    (c"ptmx", c"pts/ptmx"),
    (c"fd", c"/proc/self/fd"),
    (c"stdin", c"/proc/self/fd/0"),
    (c"stdout", c"/proc/self/fd/1"),
    (c"stderr", c"/proc/self/fd/2"),
];

/// `/proc` entries made read-only (Docker's defaults).
const PROC_READONLY: [&CStr; 5] = [c"bus", c"fs", c"irq", c"sys", c"sysrq-trigger"];
/// `/proc` files hidden behind `/dev/null` (Docker's defaults).
const PROC_MASKED_FILES: [&CStr; 5] = [
    c"kcore",
    c"keys",
    c"latency_stats",
    c"timer_list",
    c"sched_debug",
];
/// `/proc` directories hidden behind an empty read-only tmpfs.
const PROC_MASKED_DIRS: [&CStr; 2] = [c"acpi", c"scsi"];

/// Result of one step of the child, with where it failed.
type Step<T> = Result<T, (Stage, u32, Errno)>;

fn at(stage: Stage, index: u32) -> impl Fn(Errno) -> (Stage, u32, Errno) {
    move |e| (stage, index, e)
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn report(fd: RawFd, r: Report) {
    let bytes = r.encode();
    // SAFETY: writing a stack buffer to a descriptor we own; a short or failed write only
    // loses the report, which the parent treats as an unexplained death.
    unsafe {
        libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running any user-space cleanup.
    unsafe { libc::_exit(code) }
}

/// Entry point of the init process (the clone child). Never returns.
pub(crate) fn init(plan: &ChildPlan, arrays: &ExecArrays, fds: ChildFds) -> ! {
    let mut report_fd = fds.report;
    if let Err((stage, index, errno)) = init_setup(plan, fds, &mut report_fd) {
        report(
            report_fd,
            Report::Failed {
                stage,
                index,
                errno: errno.raw_os_error(),
            },
        );
        exit(125);
    }
    // Fork the command: a raw clone, since glibc's fork would run atfork handlers that may
    // take locks held by threads that do not exist here.
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack); the child continues below with
    // its own copy of this memory and only makes system calls before execve/_exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        report(
            report_fd,
            Report::Failed {
                stage: Stage::Fork,
                index: 0,
                errno: last_errno().raw_os_error(),
            },
        );
        exit(125);
    }
    if pid == 0 {
        command(plan, arrays, report_fd);
    }
    // The init keeps no copy of the output pipes, so they reach EOF as soon as the
    // command's processes are done with them.
    // SAFETY: closing descriptors this process owns.
    unsafe {
        libc::close(0);
        libc::close(1);
        libc::close(2);
    }
    let command_pid = pid as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: plain wait for any child; `status` is a valid out-pointer.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == command_pid {
            report(
                report_fd,
                Report::Exited {
                    wait_status: status,
                },
            );
            // Leaving as PID 1 makes the kernel kill everything left in the namespace.
            exit(0);
        }
        if reaped < 0 && last_errno() != Errno::INTR {
            exit(125);
        }
    }
}

/// Everything the init does before forking the command.
fn init_setup(plan: &ChildPlan, fds: ChildFds, report_fd: &mut RawFd) -> Step<()> {
    // SAFETY: resetting dispositions and the death signal of this single-threaded process;
    // handlers inherited from the builder must never run here.
    unsafe {
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    arrange_fds(fds).map_err(at(Stage::Fds, 0))?;
    *report_fd = 3;
    // No controlling terminal: /dev/tty must not reach the user's terminal.
    // SAFETY: plain system call.
    if unsafe { libc::setsid() } < 0 {
        return Err((Stage::Session, 0, last_errno()));
    }
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(at(Stage::MakePrivate, 0))?;
    rustix::mount::mount_bind_recursive(plan.rootfs.as_c_str(), plan.rootfs.as_c_str())
        .map_err(at(Stage::BindRoot, 0))?;
    let root = rustix::fs::open(
        plan.rootfs.as_c_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at(Stage::OpenRoot, 0))?;
    for (i, m) in plan.mounts.iter().enumerate() {
        make_mount(&root, m, i as u32)?;
    }
    if !plan.hostname.is_empty() {
        // SAFETY: a plain system call with a valid buffer.
        let r =
            unsafe { libc::sethostname(plan.hostname.as_ptr(), plan.hostname.as_bytes().len()) };
        if r < 0 {
            return Err((Stage::Hostname, 0, last_errno()));
        }
    }
    if plan.network_none {
        loopback_up().map_err(at(Stage::Loopback, 0))?;
    }
    rustix::process::fchdir(&root).map_err(at(Stage::Pivot, 0))?;
    rustix::process::pivot_root(c".", c".").map_err(at(Stage::Pivot, 0))?;
    rustix::mount::unmount(c".", UnmountFlags::DETACH).map_err(at(Stage::UmountOld, 0))?;
    rustix::process::chdir(c"/").map_err(at(Stage::UmountOld, 0))?;
    drop(root);
    for (i, prefix) in plan.cwd_prefixes.iter().enumerate() {
        match rustix::fs::mkdir(prefix.as_c_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err((Stage::Mkdir, i as u32, e)),
        }
    }
    Ok(())
}

/// Puts stdin/stdout/stderr on 0-2 and the report pipe on 3 (close-on-exec), and closes
/// every other descriptor inherited from the builder.
fn arrange_fds(fds: ChildFds) -> Result<(), Errno> {
    // First move everything above the range we are about to fill, so no source is
    // overwritten before it is copied.
    let mut high = [0 as RawFd; 4];
    for (slot, fd) in high
        .iter_mut()
        .zip([fds.stdin, fds.stdout, fds.stderr, fds.report])
    {
        // SAFETY: duplicating a descriptor we own.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
        if new < 0 {
            return Err(last_errno());
        }
        *slot = new;
    }
    for (target, flags) in [(0, 0), (1, 0), (2, 0), (3, libc::O_CLOEXEC)] {
        // SAFETY: dup3 onto a small descriptor number; replaces whatever was there.
        if unsafe { libc::dup3(high[target as usize], target, flags) } < 0 {
            return Err(last_errno());
        }
    }
    // SAFETY: closes descriptors 4 and up, all of them inherited copies.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Resolves a target inside the root (symlinks interpreted as if the root were `/`).
fn resolve(root: &OwnedFd, target: &CStr, index: u32) -> Step<OwnedFd> {
    rustix::fs::openat2(
        root,
        target,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(at(Stage::Target, index))
}

/// A detached mount of a new filesystem.
fn new_fs(
    fstype: &CStr,
    options: &[(&CStr, &CStr)],
    size: Option<&CStr>,
    attrs: MountAttrFlags,
) -> Result<OwnedFd, Errno> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (k, v) in options {
        rustix::mount::fsconfig_set_string(&fs, *k, *v)?;
    }
    if let Some(size) = size {
        rustix::mount::fsconfig_set_string(&fs, c"size", size)?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
}

/// A detached copy of an existing mount tree at `path` (relative to `dir`).
fn clone_tree(dir: BorrowedFd<'_>, path: &CStr, recursive: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(dir, path, flags)
}

/// `mount_setattr(2)` on a detached or attached mount (not wrapped by rustix).
fn set_mount_attrs(mount: &OwnedFd, set: MountAttrFlags, recursive: bool) -> Result<(), Errno> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: u64::from(set.bits()),
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= 0x8000; // AT_RECURSIVE
    }
    // SAFETY: the attr struct is valid for the size passed; the path is an empty C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(mount),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Attaches a detached mount onto `name` relative to `dir` (or onto `dir` itself when
/// `name` is empty).
fn attach(mount: &OwnedFd, dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    let mut flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
    if name.is_empty() {
        flags |= MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    }
    rustix::mount::move_mount(mount, c"", dir, name, flags)
}

fn make_mount(root: &OwnedFd, m: &ChildMount, index: u32) -> Step<()> {
    let target = resolve(root, &m.target, index)?;
    let mount_err = at(Stage::Mount, index);
    let hardened = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    match &m.op {
        Op::Proc => {
            let fs = new_fs(c"proc", &[], None, hardened).map_err(&mount_err)?;
            attach(&fs, target.as_fd(), c"").map_err(&mount_err)?;
            let proc = resolve(root, &m.target, index)?;
            mask_proc(&proc)?;
        }
        Op::Sys => {
            let fs = new_fs(
                c"sysfs",
                &[],
                None,
                hardened | MountAttrFlags::MOUNT_ATTR_RDONLY,
            )
            .map_err(&mount_err)?;
            attach(&fs, target.as_fd(), c"").map_err(&mount_err)?;
        }
        Op::Dev => {
            let fs = new_fs(
                c"tmpfs",
                &[(c"mode", c"755")],
                Some(c"65536k"),
                MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
            )
            .map_err(&mount_err)?;
            attach(&fs, target.as_fd(), c"").map_err(&mount_err)?;
            let dev = resolve(root, &m.target, index)?;
            populate_dev(&dev)?;
        }
        Op::Bind { source, readonly } => {
            let tree = clone_tree(rustix::fs::CWD, source, true).map_err(&mount_err)?;
            if *readonly {
                set_mount_attrs(&tree, MountAttrFlags::MOUNT_ATTR_RDONLY, true)
                    .map_err(&mount_err)?;
            }
            attach(&tree, target.as_fd(), c"").map_err(&mount_err)?;
        }
        Op::Tmpfs { size } => {
            let fs = new_fs(
                c"tmpfs",
                &[(c"mode", c"1777")],
                size.as_deref(),
                MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
            )
            .map_err(&mount_err)?;
            attach(&fs, target.as_fd(), c"").map_err(&mount_err)?;
        }
        Op::Secret {
            source,
            staging,
            uid,
            gid,
            mode,
        } => {
            let dev = resolve(root, c"dev", index)?;
            stage_secret(&dev, source, staging, *uid, *gid, *mode)
                .map_err(at(Stage::SecretCopy, index))?;
            let bound = clone_tree(dev.as_fd(), staging, false).and_then(|tree| {
                set_mount_attrs(&tree, hardened | MountAttrFlags::MOUNT_ATTR_RDONLY, false)?;
                attach(&tree, target.as_fd(), c"")
            });
            // The staging name goes whatever happened: once attached, the mount keeps the
            // file alive and is the only way to reach it (a detached tree whose file is
            // already unlinked cannot be attached, hence this order).
            let _ = rustix::fs::unlinkat(&dev, staging.as_c_str(), rustix::fs::AtFlags::empty());
            bound.map_err(&mount_err)?;
        }
    }
    Ok(())
}

/// Copies the secret into a new file in the private `/dev` tmpfs with its owner and mode.
fn stage_secret(
    dev: &OwnedFd,
    source: &CStr,
    staging: &CStr,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(), Errno> {
    let src = rustix::fs::open(source, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let dst = rustix::fs::openat(
        dev,
        staging,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut buf = [0u8; 4096];
    loop {
        let n = match rustix::io::read(&src, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        };
        let mut written = 0;
        while written < n {
            match rustix::io::write(&dst, &buf[written..n]) {
                Ok(w) => written += w,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
    }
    rustix::fs::fchown(
        &dst,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    rustix::fs::fchmod(&dst, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Docker's `/proc` hardening: some entries read-only, some hidden. Entries this kernel
/// does not have are skipped.
fn mask_proc(proc: &OwnedFd) -> Step<()> {
    let skip = |e: Errno| e == Errno::NOENT;
    for (i, name) in PROC_READONLY.iter().enumerate() {
        let err = at(Stage::ProcMask, i as u32);
        let tree = match clone_tree(proc.as_fd(), name, true) {
            Ok(t) => t,
            Err(e) if skip(e) => continue,
            Err(e) => return Err(err(e)),
        };
        set_mount_attrs(&tree, MountAttrFlags::MOUNT_ATTR_RDONLY, true).map_err(&err)?;
        attach(&tree, proc.as_fd(), name).map_err(&err)?;
    }
    for (i, name) in PROC_MASKED_FILES.iter().enumerate() {
        let err = at(Stage::ProcMask, (PROC_READONLY.len() + i) as u32);
        if rustix::fs::statat(proc, *name, rustix::fs::AtFlags::empty()).is_err() {
            continue;
        }
        let null = clone_tree(rustix::fs::CWD, c"/dev/null", false).map_err(&err)?;
        attach(&null, proc.as_fd(), name).map_err(&err)?;
    }
    for (i, name) in PROC_MASKED_DIRS.iter().enumerate() {
        let err = at(
            Stage::ProcMask,
            (PROC_READONLY.len() + PROC_MASKED_FILES.len() + i) as u32,
        );
        if rustix::fs::statat(proc, *name, rustix::fs::AtFlags::empty()).is_err() {
            continue;
        }
        let empty = new_fs(c"tmpfs", &[], None, MountAttrFlags::MOUNT_ATTR_RDONLY).map_err(&err)?;
        attach(&empty, proc.as_fd(), name).map_err(&err)?;
    }
    Ok(())
}

/// Fills the fresh `/dev` tmpfs: device nodes bound from the host (we never create device
/// nodes ourselves), `shm`, a private `pts` instance and the usual links.
fn populate_dev(dev: &OwnedFd) -> Step<()> {
    for (i, (name, host)) in DEV_NODES.iter().enumerate() {
        let err = at(Stage::DevNode, i as u32);
        rustix::fs::openat(
            dev,
            *name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(&err)?;
        let tree = clone_tree(rustix::fs::CWD, host, false).map_err(&err)?;
        attach(&tree, dev.as_fd(), name).map_err(&err)?;
    }
    let err = at(Stage::DevDir, 0);
    rustix::fs::mkdirat(dev, c"shm", Mode::from_raw_mode(0o1777)).map_err(&err)?;
    let shm = new_fs(
        c"tmpfs",
        &[(c"mode", c"1777")],
        Some(c"65536k"),
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(&err)?;
    attach(&shm, dev.as_fd(), c"shm").map_err(&err)?;
    let err = at(Stage::DevDir, 1);
    rustix::fs::mkdirat(dev, c"pts", Mode::from_raw_mode(0o755)).map_err(&err)?;
    let pts = new_fs(
        c"devpts",
        &[(c"ptmxmode", c"0666"), (c"mode", c"0620"), (c"gid", c"5")],
        None,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(&err)?;
    attach(&pts, dev.as_fd(), c"pts").map_err(&err)?;
    for (i, (name, link)) in DEV_LINKS.iter().enumerate() {
        rustix::fs::symlinkat(*link, dev, *name).map_err(at(Stage::DevDir, 2 + i as u32))?;
    }
    Ok(())
}

/// Brings `lo` up in a new network namespace (`ip link set lo up`).
fn loopback_up() -> Result<(), Errno> {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    // SAFETY: socket + two ioctls on a stack ifreq of the kernel's layout and size.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(last_errno());
        }
        let mut req = IfReq {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..2].copy_from_slice(b"lo");
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req as *mut IfReq);
        if r == 0 {
            req.flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req as *mut IfReq);
        }
        let err = last_errno();
        libc::close(sock);
        if r < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// The command process: credentials, working directory, exec. Never returns.
fn command(plan: &ChildPlan, arrays: &ExecArrays, report_fd: RawFd) -> ! {
    let fail = |stage: Stage, errno: Errno| -> ! {
        report(
            report_fd,
            Report::Failed {
                stage,
                index: 0,
                errno: errno.raw_os_error(),
            },
        );
        exit(127)
    };
    // SAFETY: an empty signal mask for the command, as any freshly started process has.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    if let Err(e) = drop_capabilities(plan) {
        fail(Stage::Caps, e);
    }
    // Raw system calls: these act on this thread only, which is all there is.
    // SAFETY: plain system calls with valid pointers.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) < 0 {
            fail(Stage::Groups, last_errno());
        }
        if libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) < 0 {
            fail(Stage::SetGid, last_errno());
        }
        if libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) < 0 {
            fail(Stage::SetUid, last_errno());
        }
    }
    if let Err(e) = rustix::process::chdir(plan.cwd.as_c_str()) {
        fail(Stage::Chdir, e);
    }
    // A working directory reached through a leaked descriptor would print as
    // "(unreachable)/..." (CVE-2024-21626): refuse anything but a path under our root.
    let mut buf = [0u8; 4096];
    // SAFETY: the kernel writes at most buf.len() bytes.
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if n <= 0 || buf[0] != b'/' {
        fail(Stage::CwdOutside, Errno::NOENT);
    }
    let mut denied = false;
    for candidate in &plan.candidates {
        // SAFETY: null-terminated arrays of pointers into strings the plan owns.
        unsafe {
            libc::execve(
                candidate.as_ptr(),
                arrays.argv.as_ptr(),
                arrays.envp.as_ptr(),
            );
        }
        match last_errno() {
            Errno::NOENT | Errno::NOTDIR => {}
            Errno::ACCESS => denied = true,
            e => fail(Stage::Exec, e),
        }
    }
    if denied {
        fail(Stage::Exec, Errno::ACCESS);
    }
    fail(Stage::ExecNotFound, Errno::NOENT)
}

/// Limits the command to Docker's default capabilities (without `CAP_MKNOD`: there is no
/// device cgroup here to stop a created block device from reaching host disks).
fn drop_capabilities(plan: &ChildPlan) -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // SAFETY: prctl/capget/capset with valid structures of the v3 layout.
    unsafe {
        for cap in &plan.drop_caps {
            if libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0) < 0
                && last_errno() != Errno::INVAL
            {
                return Err(last_errno());
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        let mut header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) < 0 {
            return Err(last_errno());
        }
        for (d, keep) in data.iter_mut().zip(plan.keep_caps) {
            d.inheritable &= keep;
        }
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) < 0 {
            return Err(last_errno());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Failed {
                stage: Stage::Mount,
                index: 7,
                errno: libc::EPERM,
            },
            Report::Failed {
                stage: Stage::ExecNotFound,
                index: 0,
                errno: libc::ENOENT,
            },
            Report::Exited {
                wait_status: 0x0100,
            },
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(&[0; REPORT_SIZE]), None);
        assert_eq!(Report::decode(&[1, 0, 0]), None);
    }

    #[test]
    fn every_stage_decodes() {
        for v in 1..=25 {
            assert_eq!(Stage::from_u32(v).map(|s| s as u32), Some(v));
        }
        assert_eq!(Stage::from_u32(26), None);
    }
}
