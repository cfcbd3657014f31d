//! Opening paths inside an untrusted root filesystem without ever leaving it.
//!
//! Image content is untrusted: `/etc` may be a symlink to `/`, `/etc/passwd` a link to
//! `../../../host/file`. Every lookup here goes through `openat2` with `RESOLVE_IN_ROOT`, so
//! absolute and `..` symlinks are interpreted as if the root were `/` (chroot semantics, like
//! securejoin), and with `RESOLVE_NO_MAGICLINKS`, so `/proc/self/fd/N` tricks cannot jump out
//! (reference notes §8.2, CVE-2018-15664, CVE-2024-21626). We never build a host path string
//! from image content and use it later.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Opens `root` itself as an `O_PATH` directory handle to resolve paths against.
pub(crate) fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(fd)
}

/// Opens `path` (absolute or relative, interpreted inside the root) with `flags`.
/// `O_CLOEXEC` is always added.
pub(crate) fn open_in_root(root: &OwnedFd, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let fd = rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_and_dotdot_links_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/secret"), "image").unwrap();
        // An absolute link and a link climbing out both land inside the root.
        symlink("/etc/secret", root.path().join("abs")).unwrap();
        let climb = format!("../../../../..{}/secret", outside.path().display());
        symlink(&climb, root.path().join("climb")).unwrap();

        let rootfd = open_root(root.path()).unwrap();
        let read = |p: &str| -> io::Result<String> {
            let fd = open_in_root(&rootfd, p, OFlags::RDONLY)?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text)?;
            Ok(text)
        };
        assert_eq!(read("/abs").unwrap(), "image");
        assert_eq!(read("/../../etc/secret").unwrap(), "image");
        // The climbing link resolves to <root>/<outside path>/secret, which does not exist.
        assert_eq!(read("/climb").unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
