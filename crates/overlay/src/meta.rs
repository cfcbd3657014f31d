//! File metadata as layers carry it, read without following symlinks, and the "same entry"
//! rule shared by every differ.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Stat};

use crate::error::{IoContext, Result};

/// xattr that marks an overlay whiteout or opaque dir as root (`trusted.`) or in a user
/// namespace (`user.`).
pub(crate) const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
/// The capability xattr, the one system xattr layers carry.
pub(crate) const CAPABILITY: &str = "security.capability";

/// The kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A Unix socket (never carried in layers).
    Socket,
}

/// The metadata of one entry, as far as layers care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Entry kind.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (regular files; symlinks: target length).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Device number for devices.
    pub rdev: u64,
    /// Device of the filesystem holding the entry (for hardlink detection).
    pub dev: u64,
    /// Inode number (for hardlink detection).
    pub ino: u64,
    /// Link count.
    pub nlink: u64,
}

impl Meta {
    /// Build from a raw `stat`.
    pub fn from_stat(st: &Stat) -> Meta {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::CharacterDevice => Kind::Char,
            FileType::BlockDevice => Kind::Block,
            FileType::Socket => Kind::Socket,
            _ => Kind::File,
        };
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            rdev: st.st_rdev,
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
        }
    }

    /// `lstat` a host path.
    pub fn lstat(path: &Path) -> Result<Meta> {
        let st = rustix::fs::statat(rustix::fs::CWD, path, AtFlags::SYMLINK_NOFOLLOW)
            .ctx("lstat", path)?;
        Ok(Meta::from_stat(&st))
    }

    /// True for overlay's whiteout: a character device numbered 0/0.
    pub fn is_whiteout(&self) -> bool {
        self.kind == Kind::Char && self.rdev == 0
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// Major device number.
    pub fn major(&self) -> u32 {
        rustix::fs::major(self.rdev)
    }

    /// Minor device number.
    pub fn minor(&self) -> u32 {
        rustix::fs::minor(self.rdev)
    }
}

/// Is this xattr one a layer carries? `security.capability` and `user.*` except overlay's own.
pub fn carried_xattr(name: &str) -> bool {
    name == CAPABILITY || (name.starts_with("user.") && !name.starts_with("user.overlay."))
}

/// Read one xattr of a host path without following a final symlink (`None` when absent).
pub(crate) fn get_xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(rustix::io::Errno::RANGE) => {
                let n = rustix::fs::lgetxattr_query(path, name).ctx("getxattr", path)?;
                buf.resize(n.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(crate::Error::io("getxattr", path, e)),
        }
    }
}

/// The carried xattrs of a host path, sorted by name.
pub fn carried_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(rustix::io::Errno::RANGE) => {
                let n = rustix::fs::llistxattr_query(path).ctx("listxattr", path)?;
                names.resize(n.max(names.len() * 2), 0);
            }
            Err(e) => return Err(crate::Error::io("listxattr", path, e)),
        }
    };
    let mut out = Vec::new();
    for raw in names[..n].split(|b| *b == 0) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if !name.is_empty() && carried_xattr(name) {
            if let Some(v) = get_xattr(path, name)? {
                out.push((name.to_string(), v));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Is the directory at `path` marked opaque by overlayfs (either namespace)?
pub(crate) fn is_opaque(path: &Path) -> Result<bool> {
    for name in OPAQUE_XATTRS {
        if get_xattr(path, name)?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Does an upper-dir entry carry overlay state that makes it unsafe to read the upper dir as a
/// plain diff (a redirected directory, or a metadata-only copy-up)?
pub(crate) fn has_redirect_or_metacopy(path: &Path) -> Result<bool> {
    for name in [
        "trusted.overlay.redirect",
        "user.overlay.redirect",
        "trusted.overlay.metacopy",
        "user.overlay.metacopy",
    ] {
        if get_xattr(path, name)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// BuildKit's "same directory entry" rule, used by every differ so that drivers agree.
///
/// Two entries are the same when kind, mode, owner, device number and carried xattrs match
/// and, for non-directories, the size and the mtime seconds match; when both mtimes have zero
/// nanoseconds (a tar round trip truncates them) the contents (or symlink targets) decide.
/// Directory mtimes are ignored: creating a child bumps them, and the parents of every change
/// are written into the layer anyway.
pub fn same_entry(a: &Path, am: &Meta, b: &Path, bm: &Meta) -> Result<bool> {
    if am.dev == bm.dev && am.ino == bm.ino {
        return Ok(true);
    }
    if am.kind != bm.kind
        || am.mode != bm.mode
        || am.uid != bm.uid
        || am.gid != bm.gid
        || am.rdev != bm.rdev
    {
        return Ok(false);
    }
    if carried_xattrs(a)? != carried_xattrs(b)? {
        return Ok(false);
    }
    if am.is_dir() {
        return Ok(true);
    }
    if am.size != bm.size || am.mtime != bm.mtime {
        return Ok(false);
    }
    if am.mtime_nsec != bm.mtime_nsec {
        return Ok(false);
    }
    if am.mtime_nsec != 0 {
        return Ok(true);
    }
    match am.kind {
        Kind::Symlink => {
            let ta = std::fs::read_link(a).ctx("readlink", a)?;
            let tb = std::fs::read_link(b).ctx("readlink", b)?;
            Ok(ta == tb)
        }
        Kind::File if am.size > 0 => same_content(a, b),
        _ => Ok(true),
    }
}

fn open_nofollow(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .ctx("open", path)
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = open_nofollow(a)?;
    let mut fb = open_nofollow(b)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).ctx("read", a)?;
        let nb = read_full(&mut fb, &mut bb).ctx("read", b)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_xattrs_are_capability_and_user() {
        assert!(carried_xattr("security.capability"));
        assert!(carried_xattr("user.mime"));
        assert!(!carried_xattr("user.overlay.opaque"));
        assert!(!carried_xattr("trusted.overlay.opaque"));
        assert!(!carried_xattr("security.selinux"));
    }

    #[test]
    fn same_entry_compares_content_when_times_are_truncated() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1000,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1000,
                tv_nsec: 0,
            },
        };
        for p in [&a, &b] {
            rustix::fs::utimensat(rustix::fs::CWD, p, &ts, AtFlags::empty()).unwrap();
        }
        let (ma, mb) = (Meta::lstat(&a).unwrap(), Meta::lstat(&b).unwrap());
        assert!(!same_entry(&a, &ma, &b, &mb).unwrap());
        std::fs::write(&b, "one").unwrap();
        rustix::fs::utimensat(rustix::fs::CWD, &b, &ts, AtFlags::empty()).unwrap();
        let mb = Meta::lstat(&b).unwrap();
        assert!(same_entry(&a, &ma, &b, &mb).unwrap());
        rustix::fs::chmodat(
            rustix::fs::CWD,
            &b,
            rustix::fs::Mode::from_raw_mode(0o600),
            AtFlags::empty(),
        )
        .unwrap();
        let mb = Meta::lstat(&b).unwrap();
        assert!(!same_entry(&a, &ma, &b, &mb).unwrap());
    }
}
