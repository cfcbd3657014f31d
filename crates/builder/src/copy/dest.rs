//! Where a copy lands: the destination rules, and the in-root directory handling they need.
//!
//! The rules (BuildKit's `dispatchCopy` and fsutil's `Copy`): a relative destination is
//! taken from the working directory; `.`, an empty destination and a trailing `/` mark a
//! directory; a directory source is merged into the destination directory (created when
//! missing); a single non-directory goes to the destination as a file name unless the
//! destination is marked as a directory or already is one (then it keeps its own name).
//!
//! Every destination path is resolved inside the destination root (`openat2` with
//! `RESOLVE_IN_ROOT` through [`strata_overlay::in_root::Root`]): a symlink in the
//! destination that points at `/` or climbs with `..` is interpreted as if the root were
//! `/`, so nothing can be written outside it. Below the directory a copy targets, entries
//! are reached one component at a time with `O_NOFOLLOW`: a symlink where the source has a
//! directory is an error (as in BuildKit), never followed.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use strata_overlay::in_root::{Follow, Root};

use crate::context::gopath::clean;
use crate::user::Owner;
use crate::Error;

/// Symlinks followed while creating one destination path (the kernel's limit).
const MAX_HOPS: usize = 40;

/// The destination of a copy after the working directory is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dest {
    /// Absolute and clean (`..` cannot climb above `/`).
    pub path: String,
    /// Marked as a directory (`.`, empty, or a trailing `/`).
    pub dir: bool,
}

/// Applies the working directory to `dest` (both as written, already expanded).
pub(crate) fn dest_path(dest: &str, workdir: &str) -> Dest {
    let dir = dest.is_empty() || dest == "." || dest.ends_with('/');
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("/{workdir}/{dest}")
    };
    Dest {
        path: clean(&joined),
        dir,
    }
}

/// Splits an absolute clean path into its parent and last name (`None` for `/`).
pub(crate) fn split_last(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

/// The errno behind an in-root resolution error, when there is one.
fn errno_of(e: &strata_overlay::Error) -> Option<i32> {
    match e {
        strata_overlay::Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// The destination root, opened once.
pub(crate) struct DestRoot {
    root: Root,
}

/// A directory made or found by [`DestRoot::ensure_dir`].
pub(crate) struct DirHandle {
    /// An `O_PATH` descriptor of the directory.
    pub fd: OwnedFd,
    /// Whether this call created the last component.
    pub created: bool,
}

impl DestRoot {
    pub fn open(path: &Path) -> Result<DestRoot, Error> {
        let root = Root::open(path).map_err(|source| Error::DestPath {
            path: "/".into(),
            source,
        })?;
        Ok(DestRoot { root })
    }

    /// The directory at `path` if it exists (symlinks followed inside the root).
    pub fn existing_dir(&self, path: &str) -> Result<Option<OwnedFd>, Error> {
        match self.root.open_dir(Path::new(path), Follow::InRoot) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if matches!(errno_of(&e), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(source) => Err(Error::DestPath {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// Opens the directory `path`, creating what is missing with mode 0755 and `owner`
    /// (fsutil's `MkdirAll` with a chowner). Symlinks on the way are followed inside the
    /// root, dangling ones too (their target is created, as `MkdirAll` on BuildKit's
    /// in-root path does); a non-directory on the way is [`Error::DestNotDir`].
    pub fn ensure_dir(&self, path: &str, owner: Owner) -> Result<DirHandle, Error> {
        let mut path = clean(&format!("/{path}"));
        let mut hops = 0;
        'restart: loop {
            let comps: Vec<String> = path
                .split('/')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            let mut cur = self.open_existing("/")?;
            let mut prefix = String::new();
            let mut created = false;
            for (i, comp) in comps.iter().enumerate() {
                let parent = prefix.clone();
                prefix.push('/');
                prefix.push_str(comp);
                created = false;
                match self.root.open_dir(Path::new(&prefix), Follow::InRoot) {
                    Ok(fd) => {
                        cur = fd;
                        continue;
                    }
                    Err(e) if errno_of(&e) == Some(libc::ENOTDIR) => {
                        return Err(Error::DestNotDir { path: prefix })
                    }
                    Err(e) if errno_of(&e) == Some(libc::ENOENT) => {}
                    Err(source) => {
                        return Err(Error::DestPath {
                            path: prefix,
                            source,
                        })
                    }
                }
                match rustix::fs::mkdirat(&cur, comp.as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) => created = true,
                    Err(Errno::EXIST) => {
                        // A dangling symlink: continue from its target, inside the root.
                        if lstat_type(&cur, OsStr::new(comp)).ok().flatten()
                            == Some(FileType::Symlink)
                        {
                            hops += 1;
                            if hops > MAX_HOPS {
                                return Err(Error::SymlinkLoop { path: path.clone() });
                            }
                            let target = rustix::fs::readlinkat(&cur, comp.as_str(), Vec::new())
                                .map_err(|e| Error::io("read link", &prefix, e.into()))?;
                            let target = target.to_string_lossy().into_owned();
                            let rest = comps[i + 1..].join("/");
                            let base = if target.starts_with('/') {
                                target
                            } else {
                                // Relative to where the link really is (earlier components
                                // may themselves have been links).
                                let real = self
                                    .root
                                    .resolved(Path::new(if parent.is_empty() {
                                        "/"
                                    } else {
                                        &parent
                                    }))
                                    .map_err(|source| Error::DestPath {
                                        path: parent.clone(),
                                        source,
                                    })?;
                                format!("{}/{target}", real.display())
                            };
                            path = clean(&format!("/{base}/{rest}"));
                            continue 'restart;
                        }
                    }
                    Err(e) => return Err(Error::io("create directory", prefix, e.into())),
                }
                let fd = match rustix::fs::openat(
                    &cur,
                    comp.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(Errno::NOTDIR | Errno::LOOP) => {
                        return Err(Error::DestNotDir { path: prefix })
                    }
                    Err(e) => return Err(Error::io("open", prefix, e.into())),
                };
                if created {
                    set_owner_mode(&fd, owner, 0o755)
                        .map_err(|e| Error::io("chown", &prefix, e))?;
                }
                cur = rustix::fs::openat(
                    &fd,
                    ".",
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::io("open", &prefix, e.into()))?;
            }
            return Ok(DirHandle { fd: cur, created });
        }
    }

    fn open_existing(&self, path: &str) -> Result<OwnedFd, Error> {
        self.root
            .open_dir(Path::new(path), Follow::InRoot)
            .map_err(|source| Error::DestPath {
                path: path.to_string(),
                source,
            })
    }
}

/// `fchown` then `fchmod` (in that order, so setuid and setgid bits survive the chown).
pub(crate) fn set_owner_mode(fd: &OwnedFd, owner: Owner, mode: u32) -> std::io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
    )?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Opens `rel` (a clean relative path; `""` is `dir` itself) below `dir` one component at
/// a time, never following a symlink; `flags` apply to the last component.
pub(crate) fn open_beneath(dir: &OwnedFd, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    let mut parts = rel.split('/').filter(|p| !p.is_empty()).peekable();
    if parts.peek().is_none() {
        return rustix::fs::openat(dir, ".", flags | OFlags::CLOEXEC, Mode::empty());
    }
    while let Some(part) = parts.next() {
        let base = cur.as_ref().map_or(dir.as_fd(), |fd| fd.as_fd());
        let last = parts.peek().is_none();
        let f = if last {
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC
        } else {
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
        };
        let next = rustix::fs::openat(base, part, f, Mode::empty())?;
        if last {
            return Ok(next);
        }
        cur = Some(next);
    }
    Err(Errno::NOENT)
}

/// The type of `name` in `dir` without following it, `None` when absent.
pub(crate) fn lstat_type(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(dest: &str, workdir: &str) -> (String, bool) {
        let d = dest_path(dest, workdir);
        (d.path, d.dir)
    }

    #[test]
    fn relative_destinations_start_at_the_working_directory() {
        assert_eq!(d("/abs/file", "/work"), ("/abs/file".into(), false));
        assert_eq!(d("rel", "/work"), ("/work/rel".into(), false));
        assert_eq!(d("rel/", "/work"), ("/work/rel".into(), true));
        assert_eq!(d(".", "/work"), ("/work".into(), true));
        assert_eq!(d("./", ""), ("/".into(), true));
        assert_eq!(d("", "/w"), ("/w".into(), true));
        assert_eq!(d("x", ""), ("/x".into(), false));
        assert_eq!(d("x", "relative/wd"), ("/relative/wd/x".into(), false));
        // `..` never climbs above the root.
        assert_eq!(d("../../../etc/", "/work"), ("/etc".into(), true));
        assert_eq!(d("/a//b/./c", "/"), ("/a/b/c".into(), false));
    }

    #[test]
    fn split_last_of_absolute_paths() {
        assert_eq!(split_last("/a/b"), Some(("/a", "b")));
        assert_eq!(split_last("/a"), Some(("/", "a")));
        assert_eq!(split_last("/"), None);
    }
}
