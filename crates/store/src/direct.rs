//! Streaming writes of large files that bypass the page cache where they can.
//!
//! Data is gathered into 4 KiB-aligned 1 MiB chunks; once a file passes 4 MiB a background
//! thread takes the writes (so the caller's hashing and the disk I/O overlap), and whole
//! aligned chunks go through a second descriptor opened with `O_DIRECT`. Measured on this kind
//! of machine (a VM whose host reclaims idle guest memory): filling the page cache with a
//! fresh gigabyte and fsyncing it costs about 3 s, writing it directly 0.8 s. Tails and
//! filesystems that refuse `O_DIRECT` use the ordinary descriptor; `finish` fsyncs both.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes gathered per write.
const CHUNK: usize = 1 << 20;
/// Alignment `O_DIRECT` asks of buffers, offsets and lengths.
const ALIGN: usize = 4096;
/// Chunks queued for the writer thread (bounds memory: about `QUEUE + 2` MiB per writer).
const QUEUE: usize = 4;
/// A file that grows past this gets a writer thread.
const THREAD_THRESHOLD: u64 = 4 << 20;

/// A 1 MiB buffer whose data starts on a 4 KiB boundary, as `O_DIRECT` needs.
struct Chunk {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        let raw = vec![0u8; CHUNK + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Chunk { raw, start, len: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn is_full(&self) -> bool {
        self.len == CHUNK
    }

    /// Copy as much of `bytes` as fits; returns how much.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = (CHUNK - self.len).min(bytes.len());
        let at = self.start + self.len;
        self.raw[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }
}

/// The background writer thread of one file.
struct Worker {
    to_disk: Option<SyncSender<Chunk>>,
    /// Buffers come back here once written: a fixed pool, so memory stays bounded and large
    /// blobs do not churn the allocator.
    recycled: Receiver<Chunk>,
    handle: Option<JoinHandle<io::Result<()>>>,
}

fn open_direct(path: &Path) -> Option<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
        .ok()
}

impl Worker {
    fn start(file: File, direct: Option<File>, offset: u64) -> Worker {
        let (to_disk, from_writer) = mpsc::sync_channel::<Chunk>(QUEUE);
        let (give_back, recycled) = mpsc::channel::<Chunk>();
        for _ in 0..QUEUE + 1 {
            let _ = give_back.send(Chunk::new());
        }
        let handle = std::thread::Builder::new()
            .name("strata-blob-writer".into())
            .spawn(move || -> io::Result<()> {
                let mut direct = direct;
                let mut offset = offset;
                for mut chunk in from_writer {
                    let data = chunk.data();
                    let aligned = data.len() % ALIGN == 0 && offset % ALIGN as u64 == 0;
                    let mut done = false;
                    if let (true, Some(d)) = (aligned, &direct) {
                        match d.write_all_at(data, offset) {
                            Ok(()) => done = true,
                            // The filesystem refuses direct I/O after all: stop trying.
                            Err(e) if e.kind() == io::ErrorKind::InvalidInput => direct = None,
                            Err(e) => return Err(e),
                        }
                    }
                    if !done {
                        file.write_all_at(data, offset)?;
                    }
                    offset += data.len() as u64;
                    chunk.len = 0;
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

/// A durable streaming writer for one file (see the module docs). Call
/// [`DirectWriter::finish`]; dropping it without finishing leaves the file incomplete.
pub(crate) struct DirectWriter {
    file: File,
    path: PathBuf,
    chunk: Chunk,
    offset: u64,
    worker: Option<Worker>,
}

impl DirectWriter {
    /// Write into `file`, which is open for writing at `path`, from offset 0.
    pub(crate) fn new(file: File, path: &Path) -> DirectWriter {
        DirectWriter {
            file,
            path: path.to_path_buf(),
            chunk: Chunk::new(),
            offset: 0,
            worker: None,
        }
    }

    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.chunk.len == 0 {
            return Ok(());
        }
        let offset = self.offset;
        self.offset += self.chunk.len as u64;
        if self.worker.is_none() && self.offset > THREAD_THRESHOLD {
            let file = self.file.try_clone()?;
            self.worker = Some(Worker::start(file, open_direct(&self.path), offset));
        }
        match &mut self.worker {
            Some(Worker {
                to_disk: Some(tx),
                recycled,
                ..
            }) => {
                // Waits for the writer when it is behind: memory stays bounded.
                let next = recycled.recv().unwrap_or_else(|_| Chunk::new());
                let full = std::mem::replace(&mut self.chunk, next);
                if tx.send(full).is_err() {
                    // The writer thread stopped: its error comes out of `finish`.
                    let mut worker = self.worker.take().expect("worker present");
                    worker.finish()?;
                    return Err(io::Error::other("file writer thread stopped"));
                }
            }
            _ => {
                self.file.write_all_at(self.chunk.data(), offset)?;
                self.chunk.len = 0;
            }
        }
        Ok(())
    }

    /// Write what is left and fsync.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.flush_chunk()?;
        match self.worker.take() {
            Some(mut w) if w.handle.is_some() => w.finish(),
            _ => self.file.sync_all(),
        }
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.chunk.fill(data);
        if self.chunk.is_full() {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_size_exactly() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 4095, 4096, CHUNK + 17, 9 * CHUNK + 4096 * 3 + 5] {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut w = DirectWriter::new(File::create(&path).unwrap(), &path);
            for piece in data.chunks(70_001) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "{len}");
        }
    }
}
