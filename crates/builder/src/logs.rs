//! Every step's full output on disk, and the sink that feeds it and the reporter.
//!
//! A build gets a folder `<root>/builder/logs/<time>-<id>/`; each step that prints writes
//! `<N>.log` there (`N` is the step's `#N`), every line as the process printed it, never cut,
//! stderr and stdout interleaved in arrival order with stderr lines marked `[stderr] `.
//! Progress renderers may shorten what they show; the file keeps everything. The folders of
//! the [`KEEP_BUILDS`] most recent builds are kept. A build's folder is made when its first
//! step prints, so a build whose steps are all cached (or silent) leaves none and does not
//! push older logs out.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::exec::{OutputSink, Stream};
use crate::progress::{Event, Reporter, StepId};
use crate::Error;

/// How many builds' log folders are kept.
pub const KEEP_BUILDS: usize = 50;

/// The log folder of one build.
#[derive(Debug)]
pub struct BuildLogs {
    dir: PathBuf,
    /// Whether the folder was made (and the oldest removed); tried once.
    made: OnceLock<bool>,
}

impl BuildLogs {
    /// The log folder `<builder dir>/logs/<build_id>`, made (removing the oldest beyond
    /// [`KEEP_BUILDS`]) when a step first writes to it.
    pub fn new(builder_dir: &Path, build_id: &str) -> Self {
        BuildLogs {
            dir: builder_dir.join("logs").join(build_id),
            made: OnceLock::new(),
        }
    }

    /// Creates a new log folder under `<builder dir>/logs` now, removing the oldest beyond
    /// [`KEEP_BUILDS`].
    pub fn create(builder_dir: &Path, build_id: &str) -> Result<Self, Error> {
        let logs = BuildLogs::new(builder_dir, build_id);
        Self::make(&logs.dir)?;
        let _ = logs.made.set(true);
        Ok(logs)
    }

    /// Makes the folder (tried once), removing the oldest beyond [`KEEP_BUILDS`]; whether it
    /// is there. A log is a convenience: failing to make it does not fail the build.
    fn ensure(&self) -> bool {
        *self.made.get_or_init(|| Self::make(&self.dir).is_ok())
    }

    fn make(dir: &Path) -> Result<(), Error> {
        let root = dir.parent().unwrap_or(dir);
        std::fs::create_dir_all(root).map_err(|e| Error::io("create", root, e))?;
        let mut old: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| Error::io("list", root, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        old.sort();
        if old.len() >= KEEP_BUILDS {
            for dir in &old[..=old.len() - KEEP_BUILDS] {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        Ok(())
    }

    /// The folder (made when the first step prints: it may not exist).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log file of step `id`.
    pub fn step_path(&self, id: StepId) -> PathBuf {
        self.dir.join(format!("{}.log", id.0))
    }
}

/// Sends a running step's lines to the reporter and appends them to the step's log file.
pub struct StepSink<'a> {
    reporter: &'a dyn Reporter,
    step: StepId,
    logs: &'a BuildLogs,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    failed: bool,
    /// The last write was a piece of a longer line.
    continued: bool,
}

impl<'a> StepSink<'a> {
    /// Output of `step` goes to `reporter` and to its file in `logs` (created on the first
    /// line).
    pub fn new(reporter: &'a dyn Reporter, step: StepId, logs: &'a BuildLogs) -> Self {
        StepSink {
            reporter,
            step,
            logs,
            path: logs.step_path(step),
            file: None,
            failed: false,
            continued: false,
        }
    }

    fn write(&mut self, stream: Stream, line: &[u8], end: bool) {
        if self.failed {
            return;
        }
        if self.file.is_none() {
            if !self.logs.ensure() {
                self.failed = true;
                return;
            }
            match File::create(&self.path) {
                Ok(f) => self.file = Some(BufWriter::new(f)),
                Err(_) => {
                    // The log is a convenience; the build goes on without it.
                    self.failed = true;
                    return;
                }
            }
        }
        let continued = std::mem::replace(&mut self.continued, !end);
        if let Some(f) = &mut self.file {
            let prefix: &[u8] = match stream {
                Stream::Stderr if !continued => b"[stderr] ",
                _ => b"",
            };
            let newline: &[u8] = if end { b"\n" } else { b"" };
            if f.write_all(prefix)
                .and_then(|_| f.write_all(line))
                .and_then(|_| f.write_all(newline))
                .is_err()
            {
                self.failed = true;
            }
        }
    }

    /// Flushes the log file.
    pub fn finish(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }
}

impl OutputSink for StepSink<'_> {
    fn line(&mut self, stream: Stream, line: &[u8]) {
        self.write(stream, line, true);
        self.reporter.report(&Event::Output {
            step: self.step,
            stream,
            line: line.to_vec(),
        });
    }

    fn piece(&mut self, stream: Stream, piece: &[u8]) {
        self.write(stream, piece, false);
        self.reporter.report(&Event::Output {
            step: self.step,
            stream,
            line: piece.to_vec(),
        });
    }
}

impl Drop for StepSink<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::CollectingReporter;

    #[test]
    fn lines_go_to_the_reporter_and_whole_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let logs = BuildLogs::create(dir.path(), "b1").unwrap();
        let reporter = CollectingReporter::new();
        let long = vec![b'x'; 200_000];
        {
            let mut sink = StepSink::new(&reporter, StepId(4), &logs);
            sink.line(Stream::Stdout, b"hello");
            sink.line(Stream::Stderr, b"oops");
            sink.piece(Stream::Stdout, &long[..100_000]);
            sink.line(Stream::Stdout, &long[100_000..]);
        }
        assert_eq!(reporter.events().len(), 4);
        let text = std::fs::read(logs.step_path(StepId(4))).unwrap();
        let mut want = b"hello\n[stderr] oops\n".to_vec();
        want.extend_from_slice(&long);
        want.push(b'\n');
        assert_eq!(text, want);
    }

    #[test]
    fn the_folder_is_made_when_a_step_first_prints() {
        let dir = tempfile::tempdir().unwrap();
        let logs = BuildLogs::new(dir.path(), "b1");
        let reporter = CollectingReporter::new();
        {
            let mut sink = StepSink::new(&reporter, StepId(2), &logs);
            sink.finish();
        }
        assert!(!logs.dir().exists(), "a silent step makes no folder");
        {
            let mut sink = StepSink::new(&reporter, StepId(3), &logs);
            sink.line(Stream::Stdout, b"hi");
        }
        assert_eq!(std::fs::read(logs.step_path(StepId(3))).unwrap(), b"hi\n");
    }

    #[test]
    fn old_build_folders_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..KEEP_BUILDS + 3 {
            BuildLogs::create(dir.path(), &format!("{i:04}")).unwrap();
        }
        let n = std::fs::read_dir(dir.path().join("logs")).unwrap().count();
        assert_eq!(n, KEEP_BUILDS);
        assert!(!dir.path().join("logs/0000").exists());
        assert!(dir
            .path()
            .join(format!("logs/{:04}", KEEP_BUILDS + 2))
            .exists());
    }
}
