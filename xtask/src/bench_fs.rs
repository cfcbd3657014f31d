//! A fresh ext4 file system (with a journal) for the peers benchmark, in a loop-mounted
//! image file beside the work folder.
//!
//! Why: this VM's root file system is ext4 without a journal, and ext4 without a journal
//! checks every inode freed in the last 1 to 6 minutes one by one before it hands out an
//! inode (`recently_deleted` in fs/ext4/ialloc.c). Every builder here frees inodes as it
//! goes (mount stubs of RUN steps, temporary containers), so file creation got slower run
//! after run for every tool: strata's 3-stage stages alone took 0.6 s in the first run and
//! 3.5 s in the next ones, BuildKit's cold 100-RUN build 10, 17 and then 23 s. A journaled
//! file system of its own makes runs comparable with one another, and removing it at the
//! end frees nothing inode by inode on the root file system.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::bench_peers::quiet;

/// A mounted scratch file system; unmounted, detached and deleted on drop.
pub(crate) struct ScratchFs {
    image: PathBuf,
    mountpoint: PathBuf,
    device: String,
}

impl ScratchFs {
    /// Makes an ext4 file system of `size_bytes` (a sparse image file at `image`) and mounts
    /// it at `mountpoint` through a loop device with direct I/O, so that its writes reach the
    /// disk as the tools' own would rather than through a second page cache.
    pub(crate) fn create(image: &Path, mountpoint: &Path, size_bytes: u64) -> anyhow::Result<Self> {
        let file =
            fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
        file.set_len(size_bytes)?;
        drop(file);
        // Inode tables and journal written now, not by ext4's lazy-init thread during the
        // measurements.
        quiet(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
                .arg(image),
        )?;
        let device = quiet(
            Command::new("losetup")
                .args(["--find", "--show", "--direct-io=on"])
                .arg(image),
        )?
        .trim()
        .to_string();
        let scratch = ScratchFs {
            image: image.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            device,
        };
        fs::create_dir_all(mountpoint)?;
        quiet(Command::new("mount").arg(&scratch.device).arg(mountpoint))?;
        Ok(scratch)
    }

    /// A one-line description for the report's conditions.
    pub(crate) fn describe(&self) -> String {
        let size = fs::metadata(&self.image).map(|m| m.len()).unwrap_or(0);
        format!(
            "a fresh ext4 file system with a journal ({} GiB image, loop device with direct I/O)",
            size >> 30
        )
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        let _ = fs::remove_file(&self.image);
        let _ = fs::remove_dir(&self.mountpoint);
    }
}

/// Bytes available on the file system holding `dir` (`df`).
pub(crate) fn available_bytes(dir: &Path) -> anyhow::Result<u64> {
    let out = quiet(Command::new("df").args(["--output=avail", "-B1"]).arg(dir))?;
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("df printed no free space for {}: {out}", dir.display()))
}
