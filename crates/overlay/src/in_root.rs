//! Resolve paths inside a root folder without ever leaving it.
//!
//! Everything that touches a tree we do not trust (a layer being unpacked, an upper dir a RUN
//! step wrote, a rootfs a COPY writes into) goes through a [`Root`]: the root is opened once and
//! every later lookup is relative to that file descriptor. On Linux >= 5.6 the kernel does the
//! resolution (`openat2` with `RESOLVE_IN_ROOT` or `RESOLVE_NO_SYMLINKS`); where `openat2` is
//! missing or filtered, a careful component-by-component walk with `O_NOFOLLOW` emulates it,
//! interpreting symlinks as if the root were `/` (with a 40-hop limit). No host path string is
//! ever built and used later (the CVE-2018-15664 lesson).
//!
//! The builder reuses this module for COPY destinations and `/etc/passwd` lookups.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// Longest path we accept (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Longest single name we accept (Linux `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Symlinks followed in one resolution before giving up (the kernel's own limit).
const MAX_HOPS: usize = 40;

/// How symlinks met while resolving a path are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Follow symlinks as if the root were `/`: absolute targets and `..` stay inside.
    InRoot,
    /// Any symlink on the way is an error; a symlink as the last component is returned as
    /// itself when opening with `O_PATH` (and is an error otherwise).
    Never,
}

/// Normalise a path lexically into a relative path inside a root.
///
/// Leading `/` and `.` components are dropped and `..` is resolved against the components
/// before it (Go's `path.Clean`). The empty path stands for the root itself. Errors when the
/// path climbs above the root, contains a NUL byte, or a component or the whole is too long.
pub fn normalize(path: &Path) -> Result<PathBuf> {
    let bad = |reason: &str| Error::Path {
        path: path.to_string_lossy().into_owned(),
        reason: reason.to_string(),
    };
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    if bytes.len() > MAX_PATH {
        return Err(bad("is longer than 4096 bytes"));
    }
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(bad("leaves the root through `..`"));
                }
            }
            Component::Normal(n) => {
                if n.len() > MAX_NAME {
                    return Err(bad("has a component longer than 255 bytes"));
                }
                parts.push(n);
            }
        }
    }
    Ok(parts.iter().collect())
}

/// Split a normalised path into its parent and last name (`None` for the root).
pub fn split_parent(path: &Path) -> Option<(&Path, &OsStr)> {
    let name = path.file_name()?;
    Some((path.parent().unwrap_or(Path::new("")), name))
}

/// Which resolver this process uses: 0 unknown, 1 openat2, 2 emulated.
static RESOLVER: AtomicU8 = AtomicU8::new(0);

fn kernel_resolves() -> bool {
    match RESOLVER.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // ENOSYS: old kernel; EPERM: filtered by seccomp (old container runtimes).
            let works = rustix::fs::openat2(
                rustix::fs::CWD,
                "/",
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::empty(),
            )
            .is_ok();
            RESOLVER.store(if works { 1 } else { 2 }, Ordering::Relaxed);
            works
        }
    }
}

/// An open root folder; every lookup through it stays inside.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    emulate: bool,
}

impl Root {
    /// Open `path` as a root. The path itself is trusted (it is ours); what is below is not.
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open root", path, e))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
            emulate: !kernel_resolves(),
        })
    }

    /// Like [`Root::open`] but always using the userspace walk (for tests and for sandboxes
    /// that filter `openat2`).
    pub fn open_emulated(path: &Path) -> Result<Root> {
        let mut root = Root::open(path)?;
        root.emulate = true;
        Ok(root)
    }

    /// The host path of the root (for messages; never used to reach entries).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root's file descriptor (an `O_PATH` directory descriptor).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn err(&self, path: &Path, e: Errno) -> Error {
        let shown = path.to_string_lossy().into_owned();
        match e {
            Errno::XDEV => Error::Path {
                path: shown,
                reason: format!("resolves outside the root {}", self.path.display()),
            },
            Errno::LOOP => Error::Path {
                path: shown,
                reason: "goes through a symlink where none is allowed (or too many)".into(),
            },
            other => Error::io("resolve", self.path.join(path), other),
        }
    }

    /// Open `path` (relative to the root, normalised first) with `flags`, resolving symlinks
    /// per `follow`. `O_CLOEXEC` is always added.
    pub fn open_at(
        &self,
        path: &Path,
        flags: OFlags,
        mode: Mode,
        follow: Follow,
    ) -> Result<OwnedFd> {
        let rel = normalize(path)?;
        self.open_rel(&rel, flags, mode, follow)
            .map_err(|e| self.err(&rel, e))
    }

    /// Open a directory for use as a `*at` base (`O_PATH`).
    pub fn open_dir(&self, path: &Path, follow: Follow) -> Result<OwnedFd> {
        self.open_at(
            path,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
            follow,
        )
    }

    /// Read a whole regular file of at most `cap` bytes (e.g. `/etc/passwd`), following
    /// symlinks inside the root.
    pub fn read_file(&self, path: &Path, cap: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let fd = self.open_at(path, OFlags::RDONLY, Mode::empty(), Follow::InRoot)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", self.path.join(path), e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::Path {
                path: path.to_string_lossy().into_owned(),
                reason: "is not a regular file".into(),
            });
        }
        if st.st_size as u64 > cap {
            return Err(Error::Path {
                path: path.to_string_lossy().into_owned(),
                reason: format!("is larger than {cap} bytes"),
            });
        }
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .take(cap)
            .read_to_end(&mut out)
            .map_err(|e| Error::io("read", self.path.join(path), e))?;
        Ok(out)
    }

    /// Create `path` and its missing parents as directories with `mode`, inside the root,
    /// and return the last one opened as an `O_PATH` descriptor.
    pub fn create_dir_all(&self, path: &Path, mode: u32, follow: Follow) -> Result<OwnedFd> {
        let rel = normalize(path)?;
        let mut cur = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| Error::io("dup", &self.path, e))?;
        let mut prefix = PathBuf::new();
        for comp in rel.iter() {
            prefix.push(comp);
            match self.open_rel(
                &prefix,
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
                follow,
            ) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(Error::io("mkdir", self.path.join(&prefix), e)),
                    }
                    cur = rustix::fs::openat(
                        &cur,
                        comp,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.err(&prefix, e))?;
                }
                Err(e) => return Err(self.err(&prefix, e)),
            }
        }
        Ok(cur)
    }

    /// The path, inside the root, that `path` resolves to (symlinks followed in root).
    /// For display and for recording where a COPY went; never reopen the result from outside.
    pub fn resolved(&self, path: &Path) -> Result<PathBuf> {
        let fd = self.open_at(path, OFlags::PATH, Mode::empty(), Follow::InRoot)?;
        let full = rustix::fs::readlinkat(
            rustix::fs::CWD,
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)),
            Vec::new(),
        )
        .map_err(|e| Error::io("readlink", self.path.join(path), e))?;
        let full = PathBuf::from(OsStr::from_bytes(full.as_bytes()));
        let root = rustix::fs::readlinkat(
            rustix::fs::CWD,
            format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&self.fd)
            ),
            Vec::new(),
        )
        .map_err(|e| Error::io("readlink", &self.path, e))?;
        let root = PathBuf::from(OsStr::from_bytes(root.as_bytes()));
        match full.strip_prefix(&root) {
            Ok(rel) => Ok(Path::new("/").join(rel)),
            Err(_) => Err(Error::Path {
                path: path.to_string_lossy().into_owned(),
                reason: "resolved outside the root".into(),
            }),
        }
    }

    fn open_rel(
        &self,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
        follow: Follow,
    ) -> rustix::io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC;
        let target = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        if !self.emulate {
            let resolve = match follow {
                Follow::InRoot => ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                Follow::Never => ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            };
            let flags = match follow {
                Follow::Never => flags | OFlags::NOFOLLOW,
                Follow::InRoot => flags,
            };
            loop {
                match rustix::fs::openat2(&self.fd, target, flags, mode, resolve) {
                    Err(Errno::AGAIN) => continue, // a concurrent rename; the kernel asks to retry
                    other => return other,
                }
            }
        }
        self.walk(rel, flags, mode, follow)
    }

    /// The userspace walk: one component at a time, never following a link in the kernel.
    fn walk(
        &self,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
        follow: Follow,
    ) -> rustix::io::Result<OwnedFd> {
        let dirflags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Stack of directories from the root down, for `..`.
        let mut stack: Vec<OwnedFd> = vec![rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?];
        let mut todo: Vec<OsString> = rel.iter().rev().map(OsStr::to_os_string).collect();
        let mut hops = 0;
        while let Some(comp) = todo.pop() {
            let last = todo.is_empty();
            if comp == "." || comp.is_empty() {
                if last {
                    let top = stack.last().ok_or(Errno::NOENT)?;
                    return rustix::fs::openat(top, ".", flags & !OFlags::NOFOLLOW, mode);
                }
                continue;
            }
            if comp == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                if last {
                    let top = stack.last().ok_or(Errno::NOENT)?;
                    return rustix::fs::openat(top, ".", flags & !OFlags::NOFOLLOW, mode);
                }
                continue;
            }
            let top = stack.last().ok_or(Errno::NOENT)?;
            let st = match rustix::fs::statat(top, comp.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::NOENT) if last && flags.contains(OFlags::CREATE) => None,
                Err(e) => return Err(e),
            };
            let is_link = st
                .map(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink)
                .unwrap_or(false);
            if is_link && !(last && flags.contains(OFlags::NOFOLLOW)) {
                if follow == Follow::Never {
                    return Err(Errno::LOOP);
                }
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(top, comp.as_os_str(), Vec::new())?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for c in target.iter().rev() {
                    if c != "/" {
                        todo.push(c.to_os_string());
                    }
                }
                if todo.is_empty() {
                    let top = stack.last().ok_or(Errno::NOENT)?;
                    return rustix::fs::openat(top, ".", flags & !OFlags::NOFOLLOW, mode);
                }
                continue;
            }
            if last {
                return rustix::fs::openat(top, comp.as_os_str(), flags | OFlags::NOFOLLOW, mode);
            }
            let next = rustix::fs::openat(top, comp.as_os_str(), dirflags, Mode::empty())?;
            stack.push(next);
        }
        let top = stack.last().ok_or(Errno::NOENT)?;
        rustix::fs::openat(top, ".", flags & !OFlags::NOFOLLOW, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> std::result::Result<String, String> {
        normalize(Path::new(p))
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn normalize_cleans_lexically() {
        assert_eq!(n("a/b/c").unwrap(), "a/b/c");
        assert_eq!(n("/a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(n("./a").unwrap(), "a");
        assert_eq!(n("a/../b").unwrap(), "b");
        assert_eq!(n("/").unwrap(), "");
        assert_eq!(n(".").unwrap(), "");
        assert_eq!(n("a/..").unwrap(), "");
    }

    #[test]
    fn normalize_refuses_escapes_and_junk() {
        assert!(n("..").unwrap_err().contains("leaves the root"));
        assert!(n("a/../../x").unwrap_err().contains("leaves the root"));
        assert!(n("/../etc").unwrap_err().contains("leaves the root"));
        let long = "x".repeat(256);
        assert!(n(&long).unwrap_err().contains("255"));
        let nul = OsStr::from_bytes(b"a\0b");
        assert!(normalize(Path::new(nul)).is_err());
        let huge = "a/".repeat(2100);
        assert!(n(&huge).unwrap_err().contains("4096"));
    }

    #[test]
    fn split_parent_of_root_is_none() {
        assert!(split_parent(Path::new("")).is_none());
        let (p, name) = split_parent(Path::new("a/b")).unwrap();
        assert_eq!(p, Path::new("a"));
        assert_eq!(name, "b");
        let (p, name) = split_parent(Path::new("a")).unwrap();
        assert_eq!(p, Path::new(""));
        assert_eq!(name, "a");
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("root/etc")).unwrap();
        std::fs::write(r.join("root/etc/passwd"), "inside\n").unwrap();
        std::fs::create_dir_all(r.join("outside")).unwrap();
        std::fs::write(r.join("outside/passwd"), "outside\n").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("root/abs")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("root/etc/up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("root/loop")).unwrap();
        t
    }

    fn check_resolution(emulated: bool) {
        let t = tree();
        let root = if emulated {
            Root::open_emulated(&t.path().join("root")).unwrap()
        } else {
            Root::open(&t.path().join("root")).unwrap()
        };
        let read = |p: &str| {
            root.read_file(Path::new(p), 1024)
                .map(|b| String::from_utf8(b).unwrap())
        };
        // Absolute symlinks resolve against the root, not the host.
        assert_eq!(read("abs/passwd").unwrap(), "inside\n");
        // `..` through a symlink is clamped at the root.
        assert_eq!(read("etc/up/etc/passwd").unwrap(), "inside\n");
        assert!(read("loop").is_err());
        // Never-follow refuses any symlink on the way.
        let e = root
            .open_at(
                Path::new("abs/passwd"),
                OFlags::RDONLY,
                Mode::empty(),
                Follow::Never,
            )
            .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // ... but hands out the final symlink itself with O_PATH.
        let fd = root
            .open_at(
                Path::new("abs"),
                OFlags::PATH | OFlags::NOFOLLOW,
                Mode::empty(),
                Follow::Never,
            )
            .unwrap();
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Symlink);
        // Parents are created inside the root, following the symlink in root.
        root.create_dir_all(Path::new("abs/new/dir"), 0o755, Follow::InRoot)
            .unwrap();
        assert!(t.path().join("root/etc/new/dir").is_dir());
        assert!(!Path::new("/etc/new").exists());
        assert_eq!(
            root.resolved(Path::new("abs/new")).unwrap(),
            Path::new("/etc/new")
        );
        assert_eq!(root.resolved(Path::new("etc/up")).unwrap(), Path::new("/"));
    }

    #[test]
    fn openat2_resolution_stays_inside() {
        check_resolution(false);
    }

    #[test]
    fn emulated_resolution_stays_inside() {
        check_resolution(true);
    }
}
