//! Store-wide file locks.
//!
//! Two lock files, both taken with `flock` through `fs4`:
//! - `locks/gc.lock`: shared by everything that reads or writes content (a [`Lease`]), exclusive
//!   for garbage collection and `fsck --repair`. A writer holds its lease from the first byte of
//!   a blob until the blob is referenced, so GC never deletes content that is about to be
//!   tagged.
//! - `locks/refs.lock`: exclusive while refs and `index.json` change, shared while they are read.
//!
//! Two locks rather than one because `flock` cannot upgrade atomically: a `load` holds its
//! shared lease for the whole run and only briefly takes the refs lock to tag at the end.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Which lock file.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LockKind {
    Gc,
    Refs,
}

impl LockKind {
    fn file_name(self) -> &'static str {
        match self {
            LockKind::Gc => "gc.lock",
            LockKind::Refs => "refs.lock",
        }
    }
}

/// A held lock; released when dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: File,
}

pub(crate) fn lock(locks_dir: &Path, kind: LockKind, exclusive: bool) -> Result<LockGuard> {
    let path: PathBuf = locks_dir.join(kind.file_name());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    let locked = if exclusive {
        fs4::FileExt::lock(&file)
    } else {
        fs4::FileExt::lock_shared(&file)
    };
    locked.map_err(|e| Error::io("lock", &path, e))?;
    Ok(LockGuard { _file: file })
}

/// A shared hold on the store's content: while any lease is alive, garbage collection waits,
/// so blobs written under it stay even before a ref points at them.
///
/// Take one for the whole of a multi-step write (a build, a load) and drop it after the final
/// refs are written. Do not call [`crate::Store::gc`] from a thread that holds a lease: it
/// would wait for itself.
#[derive(Debug)]
pub struct Lease {
    _guard: LockGuard,
}

impl Lease {
    pub(crate) fn new(guard: LockGuard) -> Lease {
        Lease { _guard: guard }
    }
}
