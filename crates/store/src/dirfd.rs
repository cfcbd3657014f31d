//! Store folders opened once, so that the files a cached build reads by the hundred (refs,
//! small blobs) are reached relative to their folder: the kernel then resolves one name
//! instead of every component of the store's root path on each open.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};

/// A folder of the store, opened (`O_PATH`) when first used. When it cannot be opened
/// (not made yet, or gone), files in it are reached by their full path, as before.
#[derive(Debug)]
pub(crate) struct DirHandle {
    path: PathBuf,
    fd: OnceLock<OwnedFd>,
}

impl DirHandle {
    /// The folder at `path`, not opened yet.
    pub fn new(path: PathBuf) -> DirHandle {
        DirHandle {
            path,
            fd: OnceLock::new(),
        }
    }

    /// The open folder; a failure to open is not kept, so a folder made later is used.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        if let Some(fd) = self.fd.get() {
            return Some(fd.as_fd());
        }
        let opened = rustix::fs::open(
            &self.path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        Some(self.fd.get_or_init(|| opened).as_fd())
    }

    fn full(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the file `name` (one path component) in the folder for reading.
    pub fn open(&self, name: &str) -> io::Result<File> {
        debug_assert!(!name.contains('/'), "{name} is not one component");
        match self.fd() {
            Some(dir) => {
                rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                    .map(File::from)
                    .map_err(io::Error::from)
            }
            None => File::open(self.full(name)),
        }
    }

    /// Whether `name` in the folder is a regular file (following a symbolic link, as
    /// [`Path::is_file`]).
    pub fn is_file(&self, name: &str) -> bool {
        match self.fd() {
            Some(dir) => rustix::fs::statx(dir, name, AtFlags::empty(), StatxFlags::TYPE)
                .is_ok_and(|st| {
                    FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::RegularFile
                }),
            None => Path::is_file(&self.full(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_relative_to_the_folder_and_falls_back_to_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("later");
        let handle = DirHandle::new(sub.clone());
        // Not there yet: nothing is found, and the failure is not kept.
        assert!(!handle.is_file("a"));
        assert_eq!(
            handle.open("a").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a"), b"hello").unwrap();
        std::fs::create_dir(sub.join("d")).unwrap();
        assert!(handle.is_file("a"));
        assert!(!handle.is_file("d"));
        assert!(!handle.is_file("missing"));
        assert_eq!(
            std::io::read_to_string(handle.open("a").unwrap()).unwrap(),
            "hello"
        );
        assert_eq!(
            handle.open("missing").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // A symbolic link is followed, as by `Path::is_file`.
        std::os::unix::fs::symlink("a", sub.join("l")).unwrap();
        assert!(handle.is_file("l"));
    }
}
