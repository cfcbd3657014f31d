//! The one streaming ingest path every blob takes into the store.
//!
//! Bytes go to a temp file under `ingest/`, hashed on the way; a background thread takes the
//! writes once a blob is large so hashing and disk I/O overlap. `commit` checks size and
//! digest, fsyncs, renames into `blobs/sha256/<hex>` without replacing an existing blob, and
//! fsyncs the folder. Until then nothing is visible; a failed or dropped writer leaves nothing.

use std::io::{self, Write};
use std::sync::Arc;

use tempfile::NamedTempFile;

use crate::digest::{Digest, Hasher};
use crate::direct::DirectWriter;
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use crate::lock::Lease;
use crate::store::Paths;

/// The outcome of a committed blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// True when the store already had it (this copy was dropped, not written again).
    pub existed: bool,
}

/// A blob being written. Implements [`Write`]; call [`BlobWriter::commit`] to make it visible.
pub struct BlobWriter {
    paths: Arc<Paths>,
    tmp: NamedTempFile,
    out: Option<DirectWriter>,
    hasher: Hasher,
    size: u64,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    what: String,
    _lease: Lease,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("tmp", &self.tmp.path())
            .field("size", &self.size)
            .field("expected", &self.expected)
            .finish()
    }
}

impl BlobWriter {
    pub(crate) fn new(
        paths: Arc<Paths>,
        lease: Lease,
        expected: Option<Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&paths.ingest)
            .map_err(|e| Error::io("create temp file in", &paths.ingest, e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| Error::io("open", tmp.path(), e))?;
        let out = DirectWriter::new(file, tmp.path());
        let what = match expected {
            Some(d) => format!("blob {d}"),
            None => "new blob".to_string(),
        };
        Ok(BlobWriter {
            paths,
            tmp,
            out: Some(out),
            hasher: Hasher::new(),
            size: 0,
            expected,
            expected_size,
            what,
            _lease: lease,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.size
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// Use `what` in error messages about this blob (an archive member name, say).
    pub fn describe(&mut self, what: impl Into<String>) {
        self.what = what.into();
    }

    /// Finish the blob: verify, fsync, and make it visible under its digest.
    pub fn commit(mut self) -> Result<BlobInfo> {
        let what = self.what.clone();
        if let Some(out) = self.out.take() {
            out.finish()
                .map_err(|e| Error::io("write", self.tmp.path(), e))?;
        }
        let digest = std::mem::take(&mut self.hasher).finish();
        if let Some(expected) = self.expected_size {
            if expected != self.size {
                return Err(Error::SizeMismatch {
                    what,
                    expected,
                    actual: self.size,
                });
            }
        }
        if let Some(expected) = self.expected {
            if expected != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected,
                    actual: digest,
                });
            }
        }
        let dest = self.paths.blob(&digest);
        if dest.exists() {
            return Ok(BlobInfo {
                digest,
                size: self.size,
                existed: true,
            });
        }
        let size = self.size;
        match self.tmp.persist_noclobber(&dest) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                // Another writer committed the same content first: same bytes, nothing to do.
                return Ok(BlobInfo {
                    digest,
                    size,
                    existed: true,
                });
            }
            Err(e) => return Err(Error::io("rename into", &dest, e.error)),
        }
        sync_dir(&self.paths.blobs)?;
        Ok(BlobInfo {
            digest,
            size,
            existed: false,
        })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.expected_size {
            if self.size + data.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is larger than its declared {limit} bytes", self.what),
                ));
            }
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = out.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
