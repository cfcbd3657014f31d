//! Mountpoints the executor had to create in the root filesystem, and their safe removal.
//!
//! Binding `/etc/resolv.conf` into an image that has no such file needs an empty file to
//! mount on (and maybe `/etc` itself); `FROM scratch` has no `/proc`, `/dev` or `/sys`; a
//! secret's target usually does not exist. These stubs are created before the step runs and
//! must be gone afterwards, or they would be committed into the step's layer.
//!
//! Creation walks the target path inside the root (`openat2` with `RESOLVE_IN_ROOT`, so image
//! symlinks cannot lead outside) and creates only the missing components, keeping for each
//! one a descriptor of the directory it was created in, its name and its device/inode.
//! Removal goes through that descriptor and name only (no path is resolved again) and only
//! after checking that the entry is still the one we made: a step that moved directories
//! around or put files into a stub directory cannot make us delete anything else (the
//! lesson of CVE-2024-23652). Pre-existing entries are never touched.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Whether a mount needs a directory or a file to mount on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// A directory (filesystems, directory binds).
    Dir,
    /// A regular file (file binds, secrets).
    File,
}

/// What [`Stubs::ensure`] found or made at a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The target exists (or was created) with the right type.
    Ready,
    /// The path ends in a symlink that points nowhere inside the root.
    DanglingSymlink,
}

/// One entry we created.
#[derive(Debug)]
struct Stub {
    /// The directory it was created in.
    parent: OwnedFd,
    /// Its name in that directory.
    name: CString,
    /// Its path inside the root, for reporting.
    path: String,
    kind: TargetKind,
    dev: u64,
    ino: u64,
    /// Change time, which a recycled inode number does not share (files only: a stub
    /// directory's times change as we create entries in it).
    ctime: (i64, i64),
}

/// The stubs created for one step, removed again by [`Stubs::remove_all`] (or on drop).
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    created: Vec<Stub>,
}

fn in_root(root: BorrowedFd<'_>, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    Ok(rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

impl Stubs {
    /// An empty record.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Makes sure `path` (absolute, inside the root) exists as `kind`, creating missing
    /// directories on the way and the final entry, and recording every creation.
    pub(crate) fn ensure(
        &mut self,
        root: BorrowedFd<'_>,
        path: &str,
        kind: TargetKind,
    ) -> io::Result<Target> {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut parent = in_root(root, "", OFlags::DIRECTORY)?;
        for (i, name) in components.iter().enumerate() {
            let last = i + 1 == components.len();
            let want_dir = !last || kind == TargetKind::Dir;
            let prefix = components[..=i].join("/");
            let dir_flag = if want_dir {
                OFlags::DIRECTORY
            } else {
                OFlags::empty()
            };
            match in_root(root, &prefix, dir_flag) {
                Ok(fd) => {
                    if last && kind == TargetKind::File {
                        let st = rustix::fs::fstat(&fd)?;
                        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                            return Err(io::Error::from_raw_os_error(libc::EISDIR));
                        }
                    }
                    parent = fd;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // Missing in-root. If the name itself exists it is a link to nowhere:
                    // creating anything would mean following it.
                    if rustix::fs::statat(&parent, *name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                        return Ok(Target::DanglingSymlink);
                    }
                    let made = if want_dir {
                        TargetKind::Dir
                    } else {
                        TargetKind::File
                    };
                    self.create(&parent, name, &prefix, made)?;
                    parent = in_root(root, &prefix, dir_flag)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Target::Ready)
    }

    fn create(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        path: &str,
        kind: TargetKind,
    ) -> io::Result<()> {
        match kind {
            TargetKind::Dir => rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755))?,
            TargetKind::File => {
                rustix::fs::openat(
                    parent,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )?;
            }
        }
        let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let parent = rustix::io::fcntl_dupfd_cloexec(parent, 0)?;
        self.created.push(Stub {
            parent,
            name: CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            path: format!("/{path}"),
            kind,
            dev: st.st_dev,
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        });
        Ok(())
    }

    /// Paths of the stubs created so far.
    #[cfg(test)]
    pub(crate) fn paths(&self) -> Vec<String> {
        self.created.iter().map(|s| s.path.clone()).collect()
    }

    /// Removes every stub, newest first. Returns the paths of stubs that were kept because
    /// they are no longer what we created (replaced, or a directory the step wrote into).
    pub(crate) fn remove_all(&mut self) -> Vec<String> {
        let mut kept = Vec::new();
        while let Some(stub) = self.created.pop() {
            if !remove_stub(&stub) {
                kept.push(stub.path);
            }
        }
        kept.reverse();
        kept
    }
}

impl Drop for Stubs {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Removes one stub if it is still ours; `true` when it is gone.
fn remove_stub(stub: &Stub) -> bool {
    let name = OsStr::from_bytes(stub.name.as_bytes());
    let st = match rustix::fs::statat(&stub.parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return true,
        Err(_) => return false,
    };
    let file_type = FileType::from_raw_mode(st.st_mode);
    let same = st.st_dev == stub.dev && st.st_ino == stub.ino;
    let same_ctime = (st.st_ctime, st.st_ctime_nsec as i64) == stub.ctime;
    match (stub.kind, file_type) {
        (TargetKind::File, FileType::RegularFile) if same && same_ctime && st.st_size == 0 => {
            rustix::fs::unlinkat(&stub.parent, name, AtFlags::empty()).is_ok()
        }
        // Fails with ENOTEMPTY when the step wrote into it: then it is the step's content.
        (TargetKind::Dir, FileType::Directory) if same => {
            rustix::fs::unlinkat(&stub.parent, name, AtFlags::REMOVEDIR).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use strata_overlay::in_root::Root;

    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn creates_only_missing_components_and_removes_exactly_those() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::fs::write(dir.path().join("run/keep"), "x").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut stubs = Stubs::new();
        let t = stubs
            .ensure(root.fd(), "/run/secrets/token", TargetKind::File)
            .unwrap();
        assert_eq!(t, Target::Ready);
        stubs.ensure(root.fd(), "/proc", TargetKind::Dir).unwrap();
        stubs.ensure(root.fd(), "/run", TargetKind::Dir).unwrap();
        assert_eq!(
            stubs.paths(),
            ["/run/secrets", "/run/secrets/token", "/proc"]
        );
        assert!(dir.path().join("run/secrets/token").is_file());
        assert!(stubs.remove_all().is_empty());
        assert_eq!(tree(dir.path()), ["run", "run/keep"]);
    }

    #[test]
    fn symlinks_in_the_image_are_followed_inside_the_root_only() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real-etc")).unwrap();
        // /etc -> absolute path on the host: in the root it means /<that path>.
        symlink(outside.path(), dir.path().join("etc")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut stubs = Stubs::new();
        let t = stubs
            .ensure(root.fd(), "/etc/resolv.conf", TargetKind::File)
            .unwrap();
        assert_eq!(t, Target::DanglingSymlink);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        std::fs::remove_file(dir.path().join("etc")).unwrap();
        symlink("/real-etc", dir.path().join("etc")).unwrap();
        let t = stubs
            .ensure(root.fd(), "/etc/resolv.conf", TargetKind::File)
            .unwrap();
        assert_eq!(t, Target::Ready);
        assert!(dir.path().join("real-etc/resolv.conf").is_file());
        stubs.remove_all();
        assert!(!dir.path().join("real-etc/resolv.conf").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_replaced_or_filled_stub_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut stubs = Stubs::new();
        stubs.ensure(root.fd(), "/a/f", TargetKind::File).unwrap();
        stubs.ensure(root.fd(), "/b", TargetKind::Dir).unwrap();
        // The "step" replaces the file stub by another empty file (a new inode, since it
        // exists before the rename) and writes into the dir stub.
        std::fs::write(dir.path().join("a/theirs"), "").unwrap();
        std::fs::rename(dir.path().join("a/theirs"), dir.path().join("a/f")).unwrap();
        std::fs::write(dir.path().join("b/data"), "mine").unwrap();
        assert_eq!(stubs.remove_all(), ["/a", "/a/f", "/b"]);
        assert!(dir.path().join("a/f").exists() && dir.path().join("b/data").exists());
    }

    #[test]
    fn removal_follows_a_moved_directory_instead_of_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut stubs = Stubs::new();
        stubs
            .ensure(root.fd(), "/etc/hosts", TargetKind::File)
            .unwrap();
        // The step moves /etc away and puts a symlink to somewhere else in its place.
        std::fs::rename(dir.path().join("etc"), dir.path().join("etc2")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("hosts"), "").unwrap();
        symlink(elsewhere.path(), dir.path().join("etc")).unwrap();
        assert!(stubs.remove_all().is_empty());
        assert!(!dir.path().join("etc2/hosts").exists(), "our stub went");
        assert!(elsewhere.path().join("hosts").exists(), "theirs stayed");
    }

    #[test]
    fn wrong_types_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("proc"), "").unwrap();
        std::fs::create_dir(dir.path().join("secret")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut stubs = Stubs::new();
        let e = stubs
            .ensure(root.fd(), "/proc", TargetKind::Dir)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        let e = stubs
            .ensure(root.fd(), "/secret", TargetKind::File)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
        assert!(stubs.paths().is_empty());
    }
}
