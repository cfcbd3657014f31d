//! Copying layer trees for the vfs driver: by hard link for immutable layers (unpacking onto a
//! parent never writes into an existing inode: entries are unlinked and recreated), by data for
//! writable copies (a RUN step may write into any file).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::meta::get_xattr;
use crate::tree::read_dir_sorted;

/// How files are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyMode {
    /// Hard link every non-directory (falls back to a data copy at the link limit).
    Link,
    /// Copy data; hard links inside the tree stay hard links.
    Data,
}

struct Copier {
    mode: CopyMode,
    seen: HashMap<(u64, u64), std::path::PathBuf>,
}

/// Copy the contents of `src` into the existing empty folder `dst`.
pub(crate) fn copy_tree(src: &Path, dst: &Path, mode: CopyMode) -> Result<()> {
    let mut c = Copier {
        mode,
        seen: HashMap::new(),
    };
    c.dir(src, dst)?;
    let st =
        rustix::fs::statat(rustix::fs::CWD, src, AtFlags::SYMLINK_NOFOLLOW).ctx("lstat", src)?;
    set_times(dst, &st)
}

fn set_times(path: &Path, st: &rustix::fs::Stat) -> Result<()> {
    let t = Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &t, AtFlags::SYMLINK_NOFOLLOW)
        .ctx("set times", path)
}

fn copy_xattrs(src: &Path, dst: &Path) -> Result<()> {
    let n = match rustix::fs::llistxattr_query(src) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(Error::io("listxattr", src, e)),
    };
    let mut names = vec![0u8; n];
    let n = rustix::fs::llistxattr(src, &mut names[..]).ctx("listxattr", src)?;
    for raw in names[..n].split(|b| *b == 0) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if name.is_empty()
            || name.starts_with("trusted.overlay.")
            || name.starts_with("user.overlay.")
        {
            continue;
        }
        if let Some(v) = get_xattr(src, name)? {
            match rustix::fs::lsetxattr(dst, name, &v, XattrFlags::empty()) {
                Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
                Err(e) => return Err(Error::io("setxattr", dst, e)),
            }
        }
    }
    Ok(())
}

fn meta_copy(src: &Path, dst: &Path, st: &rustix::fs::Stat, ft: FileType) -> Result<()> {
    let u = rustix::fs::Uid::from_raw(st.st_uid);
    let g = rustix::fs::Gid::from_raw(st.st_gid);
    match rustix::fs::chownat(
        rustix::fs::CWD,
        dst,
        Some(u),
        Some(g),
        AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(()) | Err(Errno::PERM) => {}
        Err(e) => return Err(Error::io("chown", dst, e)),
    }
    if ft != FileType::Symlink {
        rustix::fs::chmodat(
            rustix::fs::CWD,
            dst,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )
        .ctx("chmod", dst)?;
    }
    copy_xattrs(src, dst)?;
    if ft != FileType::Directory {
        set_times(dst, st)?;
    }
    Ok(())
}

fn copy_data(src: &Path, dst: &Path) -> Result<()> {
    let from = rustix::fs::open(
        src,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open", src)?;
    let to: OwnedFd = rustix::fs::open(
        dst,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .ctx("create", dst)?;
    loop {
        match rustix::fs::copy_file_range(&from, None, &to, None, 1 << 30) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(Errno::XDEV) | Err(Errno::NOSYS) | Err(Errno::INVAL) => {
                let mut a = std::fs::File::from(from);
                let mut b = std::fs::File::from(to);
                std::io::copy(&mut a, &mut b).ctx("copy", dst)?;
                return Ok(());
            }
            Err(e) => return Err(Error::io("copy", dst, e)),
        }
    }
}

impl Copier {
    fn dir(&mut self, src: &Path, dst: &Path) -> Result<()> {
        for name in read_dir_sorted(src)? {
            self.entry(&src.join(&name), &dst.join(&name), &name)?;
        }
        Ok(())
    }

    fn entry(&mut self, src: &Path, dst: &Path, _name: &OsStr) -> Result<()> {
        let st = rustix::fs::statat(rustix::fs::CWD, src, AtFlags::SYMLINK_NOFOLLOW)
            .ctx("lstat", src)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        match ft {
            FileType::Directory => {
                rustix::fs::mkdir(dst, Mode::from_raw_mode(0o700)).ctx("mkdir", dst)?;
                self.dir(src, dst)?;
                meta_copy(src, dst, &st, ft)?;
                set_times(dst, &st)?;
                return Ok(());
            }
            FileType::Socket => return Ok(()),
            _ => {}
        }
        if self.mode == CopyMode::Link {
            match rustix::fs::linkat(rustix::fs::CWD, src, rustix::fs::CWD, dst, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(Errno::MLINK) => {}
                Err(e) => return Err(Error::io("link", dst, e)),
            }
        } else if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.seen.get(&key) {
                rustix::fs::linkat(
                    rustix::fs::CWD,
                    first,
                    rustix::fs::CWD,
                    dst,
                    AtFlags::empty(),
                )
                .ctx("link", dst)?;
                return Ok(());
            }
            self.seen.insert(key, dst.to_path_buf());
        }
        match ft {
            FileType::RegularFile => copy_data(src, dst)?,
            FileType::Symlink => {
                let target = std::fs::read_link(src).ctx("readlink", src)?;
                rustix::fs::symlink(&target, dst).ctx("symlink", dst)?;
            }
            _ => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    dst,
                    ft,
                    Mode::from_raw_mode(0o600),
                    st.st_rdev,
                )
                .ctx("mknod", dst)?;
            }
        }
        meta_copy(src, dst, &st, ft)
    }
}
