//! Finding, in the layer folders of a committed snapshot, the host file that a path of its
//! merged tree is.
//!
//! A copy out of a committed snapshot can hard-link a file from the layer folder that holds
//! it instead of copying its bytes (committed folders are never changed in place: they are
//! only overlay lowers, which overlay copies up before any change). To know which folder
//! holds a path, the folders are walked with overlayfs's rules, top first: a whiteout hides
//! the layers below, an opaque directory hides lower directories of the same name, a
//! non-directory ends the search, directories merge.
//!
//! Every step is an `openat`/`fstatat` of ONE name relative to an open directory, never
//! following a symlink, and names that are empty, `.`, `..` or hold a `/` are refused: a
//! lookup never leaves the layer folders, whatever the paths or the folders hold. A
//! symlinked directory on the way is "not found" (the caller then copies as it did).

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::meta::OPAQUE_XATTRS;

/// The layer folders of a snapshot, open, top first.
#[derive(Debug)]
pub struct Layers {
    dirs: Vec<OwnedFd>,
    paths: Vec<PathBuf>,
}

/// One directory of the merged tree: the folders (layer index, open directory, host path
/// for messages) whose entries make it up, top first.
#[derive(Debug)]
pub struct MergedDir {
    parts: Vec<(usize, OwnedFd, PathBuf)>,
}

/// A non-directory of the merged tree in the layer folder that holds it.
#[derive(Debug)]
pub struct LayerFile<'a> {
    /// The index of its layer (0 is the top).
    pub layer: usize,
    /// The open directory of its layer folder that holds it.
    pub dir: &'a OwnedFd,
    /// Its name in that directory.
    pub name: &'a OsStr,
    /// Its `lstat`.
    pub stat: rustix::fs::Stat,
}

/// Whether `name` is one plain name (not empty, `.`, `..`, and without `/`).
fn plain_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

fn open_dir_nofollow(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether the open directory `fd` is marked opaque.
fn fd_is_opaque(fd: &OwnedFd) -> rustix::io::Result<bool> {
    let mut buf = [0u8; 4];
    for name in OPAQUE_XATTRS {
        match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
            Ok(n) => {
                if buf.get(..n) == Some(&b"y"[..]) {
                    return Ok(true);
                }
            }
            Err(Errno::NODATA | Errno::NOTSUP | Errno::RANGE) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn is_whiteout(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn lstat_at(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Layers {
    /// Opens the layer folders `dirs`, top first (as [`crate::Snapshotter::layer_dirs`]
    /// gives them).
    pub fn open(dirs: &[PathBuf]) -> Result<Layers> {
        let mut open = Vec::with_capacity(dirs.len());
        for d in dirs {
            let fd = rustix::fs::open(
                d,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx("open", d)?;
            open.push(fd);
        }
        Ok(Layers {
            dirs: open,
            paths: dirs.to_vec(),
        })
    }

    /// How many layer folders there are.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The merged directory at the relative path `rel` (`""` is the root); `None` when the
    /// merged tree has no directory there, or reaching it would need a symlink, `.`, `..`
    /// or an absolute path.
    pub fn dir(&self, rel: &Path) -> Result<Option<MergedDir>> {
        let mut parts = Vec::with_capacity(self.dirs.len());
        for (i, fd) in self.dirs.iter().enumerate() {
            let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).ctx("dup", &self.paths[i])?;
            parts.push((i, dup, self.paths[i].clone()));
        }
        let mut current = MergedDir { parts };
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return Ok(None);
            };
            if !plain_name(name) {
                return Ok(None);
            }
            match current.child_dir(name)? {
                Some(d) => current = d,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }
}

impl MergedDir {
    /// The merged directory `name` below this one, by overlay's rules.
    fn child_dir(&self, name: &OsStr) -> Result<Option<MergedDir>> {
        let mut parts = Vec::new();
        for (i, fd, host) in &self.parts {
            let shown = || host.join(name);
            let Some(st) = lstat_at(fd, name).ctx("lstat", shown())? else {
                continue;
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                // A whiteout or a non-directory hides what is below; as the topmost
                // entry it makes the path no directory.
                break;
            }
            let dir = match open_dir_nofollow(fd, name) {
                Ok(d) => d,
                // Replaced under us or not a directory after all: not something to link from.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
                Err(e) => return Err(Error::io("open", shown(), e)),
            };
            let opaque = fd_is_opaque(&dir).ctx("getxattr", shown())?;
            parts.push((*i, dir, shown()));
            if opaque {
                break;
            }
        }
        Ok((!parts.is_empty()).then_some(MergedDir { parts }))
    }

    /// The entry `name` of this merged directory in the topmost layer folder that has it,
    /// when it is not a directory (a directory merges several folders); `None` when the
    /// merged directory has no such entry, it is a directory, or `name` is not one plain
    /// name.
    pub fn entry<'a>(&'a self, name: &'a OsStr) -> Result<Option<LayerFile<'a>>> {
        if !plain_name(name) {
            return Ok(None);
        }
        for (i, fd, host) in &self.parts {
            let shown = || host.join(name);
            let Some(st) = lstat_at(fd, name).ctx("lstat", shown())? else {
                continue;
            };
            if is_whiteout(&st) || FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                return Ok(None);
            }
            return Ok(Some(LayerFile {
                layer: *i,
                dir: fd,
                name,
                stat: st,
            }));
        }
        Ok(None)
    }
}

impl LayerFile<'_> {
    /// Whether the file carries any extended attribute at all (then a copy, which carries
    /// only some, would differ from a link).
    pub fn has_xattrs(&self) -> Result<bool> {
        let path = format!("/proc/self/fd/{}/", self.dir.as_fd().as_raw_fd());
        let mut full = path.into_bytes();
        full.extend_from_slice(self.name.as_bytes());
        let full = PathBuf::from(std::ffi::OsString::from_vec(full));
        let mut buf = [0u8; 256];
        match rustix::fs::llistxattr(&full, &mut buf[..]) {
            Ok(n) => Ok(n > 0),
            Err(Errno::RANGE) => Ok(true),
            Err(Errno::NOTSUP) => Ok(false),
            Err(e) => Err(Error::io("listxattr", full, e)),
        }
    }

    /// Makes `name` in the open directory `dir` a new hard link to this file (never
    /// following a symlink).
    pub fn link_into(&self, dir: impl AsFd, name: &OsStr) -> rustix::io::Result<()> {
        rustix::fs::linkat(self.dir, self.name, dir, name, AtFlags::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkdirs(root: &Path, rels: &[&str]) {
        for r in rels {
            std::fs::create_dir_all(root.join(r)).unwrap();
        }
    }

    fn whiteout(path: &Path) -> bool {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            0,
        )
        .is_ok()
    }

    #[test]
    fn the_topmost_layer_holding_a_file_is_found() {
        let t = tempfile::tempdir().unwrap();
        let (top, low) = (t.path().join("top"), t.path().join("low"));
        mkdirs(&top, &["a"]);
        mkdirs(&low, &["a/b"]);
        std::fs::write(top.join("a/f"), "top").unwrap();
        std::fs::write(low.join("a/f"), "low").unwrap();
        std::fs::write(low.join("a/b/g"), "low").unwrap();
        let layers = Layers::open(&[top.clone(), low.clone()]).unwrap();
        assert_eq!(layers.len(), 2);
        let a = layers.dir(Path::new("a")).unwrap().unwrap();
        let f = a.entry(OsStr::new("f")).unwrap().unwrap();
        assert_eq!(f.layer, 0);
        assert_eq!(f.stat.st_size, 3);
        let b = layers.dir(Path::new("a/b")).unwrap().unwrap();
        assert_eq!(b.entry(OsStr::new("g")).unwrap().unwrap().layer, 1);
        assert!(a.entry(OsStr::new("missing")).unwrap().is_none());
        assert!(a.entry(OsStr::new("b")).unwrap().is_none(), "a directory");
        assert!(layers.dir(Path::new("a/f")).unwrap().is_none());
        assert!(layers.dir(Path::new("nope")).unwrap().is_none());
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let t = tempfile::tempdir().unwrap();
        let (top, low) = (t.path().join("top"), t.path().join("low"));
        mkdirs(&top, &["d", "o"]);
        mkdirs(&low, &["d", "o", "gone"]);
        std::fs::write(low.join("d/f"), "low").unwrap();
        std::fs::write(low.join("o/f"), "low").unwrap();
        std::fs::write(low.join("gone/f"), "low").unwrap();
        if !whiteout(&top.join("d/f")) || !whiteout(&top.join("gone")) {
            // Making a whiteout needs CAP_MKNOD; the rules are still checked by opaque.
            eprintln!("skipping whiteouts: mknod refused");
        } else {
            let layers = Layers::open(&[top.clone(), low.clone()]).unwrap();
            let d = layers.dir(Path::new("d")).unwrap().unwrap();
            assert!(d.entry(OsStr::new("f")).unwrap().is_none());
            assert!(layers.dir(Path::new("gone")).unwrap().is_none());
        }
        let opaque_set = rustix::fs::setxattr(
            top.join("o").as_path(),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let layers = Layers::open(&[top.clone(), low.clone()]).unwrap();
        let o = layers.dir(Path::new("o")).unwrap().unwrap();
        assert_eq!(o.entry(OsStr::new("f")).unwrap().is_none(), opaque_set);
    }

    #[test]
    fn symlinks_and_dot_dot_never_lead_out() {
        let t = tempfile::tempdir().unwrap();
        let (top, outside) = (t.path().join("top"), t.path().join("outside"));
        mkdirs(&top, &["a"]);
        mkdirs(&outside, &["x"]);
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::write(outside.join("x/secret"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, top.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), top.join("a/file-link")).unwrap();
        let layers = Layers::open(std::slice::from_ref(&top)).unwrap();
        assert!(layers.dir(Path::new("link")).unwrap().is_none());
        assert!(layers.dir(Path::new("link/x")).unwrap().is_none());
        assert!(layers.dir(Path::new("a/../../outside")).unwrap().is_none());
        assert!(layers.dir(Path::new("/abs")).unwrap().is_none());
        let a = layers.dir(Path::new("a")).unwrap().unwrap();
        assert!(a.entry(OsStr::new("..")).unwrap().is_none());
        assert!(a
            .entry(OsStr::new("../../outside/secret"))
            .unwrap()
            .is_none());
        // A symlink is found as itself (the caller only links regular files).
        let l = a.entry(OsStr::new("file-link")).unwrap().unwrap();
        assert_eq!(FileType::from_raw_mode(l.stat.st_mode), FileType::Symlink);
    }

    #[test]
    fn xattrs_of_a_layer_file_are_seen() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("plain"), "p").unwrap();
        std::fs::write(t.path().join("tagged"), "t").unwrap();
        let tagged = rustix::fs::setxattr(
            t.path().join("tagged").as_path(),
            "user.k",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let layers = Layers::open(&[t.path().to_path_buf()]).unwrap();
        let root = layers.dir(Path::new("")).unwrap().unwrap();
        let plain = root.entry(OsStr::new("plain")).unwrap().unwrap();
        assert!(!plain.has_xattrs().unwrap());
        let f = root.entry(OsStr::new("tagged")).unwrap().unwrap();
        assert_eq!(f.has_xattrs().unwrap(), tagged);
    }
}
