//! The one streaming ingest path every blob takes into the store.
//!
//! Bytes go to a temp file under `ingest/`, hashed on the way; a background thread takes the
//! writes once a blob is large so hashing and disk I/O overlap. `commit` checks size and
//! digest, fsyncs, renames into `blobs/sha256/<hex>` without replacing an existing blob, and
//! fsyncs the folder. Until then nothing is visible; a failed or dropped writer leaves nothing.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use tempfile::NamedTempFile;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use crate::lock::Lease;
use crate::store::Paths;

/// Bytes hashed and written at a time.
const CHUNK: usize = 1 << 20;
/// Chunks queued for the writer thread (bounds memory: about `QUEUE + 2` MiB per writer).
const QUEUE: usize = 4;
/// A blob that grows past this gets a writer thread.
const THREAD_THRESHOLD: u64 = 4 << 20;
/// The writer thread starts writeback every this many bytes so the final fsync is short.
const SYNC_EVERY: u64 = 128 << 20;

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

struct Worker {
    to_disk: Option<SyncSender<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<io::Result<()>>>,
}

impl Worker {
    fn start(file: File) -> Worker {
        let (to_disk, from_writer) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let (give_back, recycled) = mpsc::channel::<Vec<u8>>();
        let handle = std::thread::Builder::new()
            .name("strata-blob-writer".into())
            .spawn(move || -> io::Result<()> {
                let mut file = file;
                let mut since_sync = 0u64;
                for chunk in from_writer {
                    file.write_all(&chunk)?;
                    since_sync += chunk.len() as u64;
                    if since_sync >= SYNC_EVERY {
                        file.sync_data()?;
                        since_sync = 0;
                    }
                    let _ = give_back.send(chunk);
                }
                file.sync_all()
            });
        match handle {
            Ok(h) => Worker {
                to_disk: Some(to_disk),
                recycled,
                handle: Some(h),
            },
            // No thread to be had: the caller falls back to writing inline.
            Err(_) => Worker {
                to_disk: None,
                recycled,
                handle: None,
            },
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.to_disk = None;
        match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("blob writer thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// A blob being written. Implements [`Write`]; call [`BlobWriter::commit`] to make it visible.
pub struct BlobWriter {
    paths: Arc<Paths>,
    tmp: NamedTempFile,
    buf: Vec<u8>,
    hasher: Hasher,
    size: u64,
    worker: Option<Worker>,
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
        let what = match expected {
            Some(d) => format!("blob {d}"),
            None => "new blob".to_string(),
        };
        Ok(BlobWriter {
            paths,
            tmp,
            buf: Vec::with_capacity(CHUNK),
            hasher: Hasher::new(),
            size: 0,
            worker: None,
            expected,
            expected_size,
            what,
            _lease: lease,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.size + self.buf.len() as u64
    }

    /// Use `what` in error messages about this blob (an archive member name, say).
    pub fn describe(&mut self, what: impl Into<String>) {
        self.what = what.into();
    }

    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hasher.update(&self.buf);
        self.size += self.buf.len() as u64;
        if self.worker.is_none() && self.size > THREAD_THRESHOLD {
            let file = self.tmp.as_file().try_clone()?;
            self.worker = Some(Worker::start(file));
        }
        match &mut self.worker {
            Some(Worker {
                to_disk: Some(tx),
                recycled,
                ..
            }) => {
                let next = recycled
                    .try_recv()
                    .map(|mut b| {
                        b.clear();
                        b
                    })
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                let full = std::mem::replace(&mut self.buf, next);
                if tx.send(full).is_err() {
                    // The writer thread stopped: its error comes out of `finish`.
                    let mut worker = self.worker.take().expect("worker present");
                    worker.finish()?;
                    return Err(io::Error::other("blob writer thread stopped"));
                }
            }
            _ => {
                self.tmp.as_file_mut().write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Finish the blob: verify, fsync, and make it visible under its digest.
    pub fn commit(mut self) -> Result<BlobInfo> {
        let what = self.what.clone();
        self.flush_chunk()
            .map_err(|e| Error::stream(format!("write {what}"), e))?;
        match self.worker.take() {
            Some(mut w) if w.handle.is_some() => w.finish(),
            _ => self.tmp.as_file().sync_all(),
        }
        .map_err(|e| Error::io("write", self.tmp.path(), e))?;
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
            if self.written() + data.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is larger than its declared {limit} bytes", self.what),
                ));
            }
        }
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
