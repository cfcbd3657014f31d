//! Rendering build progress: the builder reports [`Event`]s, these turn them into text.
//!
//! - [`plain::Plain`]: BuildKit's `--progress=plain` (`#N [stage k/n] INSTRUCTION`, every
//!   output line prefixed with `#N` and the seconds since the step started, `#N CACHED`,
//!   `#N DONE 0.3s`), plus the reason of every cache miss;
//! - [`json::Json`]: one event per line, as the builder serialises them;
//! - [`tty::Tty`]: BuildKit's live view, redrawn in place (what `auto` picks on a terminal);
//! - [`Quiet`]: nothing while building (`-q` prints only the image ID at the end).
//!
//! Every renderer writes to standard error (standard output carries only the image ID of
//! `-q`). `auto` shows the live view when standard error is a terminal (and `TERM` is not
//! `dumb`), plain text otherwise; `tty` asked for where there is no terminal falls back to
//! plain with a one-line note.

pub mod json;
pub mod plain;
pub mod tty;

use std::io::Write;
use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use strata_builder::progress::{Event, Reporter};

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// The live view on a terminal, plain text otherwise.
    Auto,
    /// BuildKit's plain text: every line labelled with its step.
    Plain,
    /// A live view of running steps, redrawn in place (needs a terminal).
    Tty,
    /// Nothing but errors; the image ID on standard output at the end.
    Quiet,
    /// One JSON event per line.
    Json,
}

/// A shared output stream for renderers (standard error, or a buffer in tests).
pub type Out = Arc<Mutex<Box<dyn Write + Send>>>;

/// Standard error as an [`Out`].
pub fn stderr() -> Out {
    Arc::new(Mutex::new(Box::new(std::io::stderr())))
}

/// Writes one chunk of text to `out`, ignoring a closed stream (progress is best effort).
pub fn emit(out: &Out, text: &str) {
    let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
    let _ = w.write_all(text.as_bytes());
    let _ = w.flush();
}

/// A renderer that shows nothing while building.
#[derive(Debug, Default)]
pub struct Quiet;

impl Reporter for Quiet {
    fn report(&self, _event: &Event) {}
}

/// The reporter for a `--progress` mode, writing to `out`; also says which mode was used.
/// `terminal`: whether `out` is a terminal the live view can be drawn on.
pub fn reporter(mode: Progress, out: Out, terminal: bool) -> (Box<dyn Reporter>, Progress) {
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    match mode {
        Progress::Quiet => (Box::new(Quiet), Progress::Quiet),
        Progress::Json => (Box::new(json::Json::new(out)), Progress::Json),
        Progress::Plain => (Box::new(plain::Plain::new(out)), Progress::Plain),
        Progress::Auto | Progress::Tty if terminal && !dumb => {
            let color = crate::ui::color::decide(std::env::var_os("NO_COLOR").as_deref(), true);
            let view = tty::Tty::new(out, Box::new(tty::stderr_size), color);
            (Box::new(view), Progress::Tty)
        }
        Progress::Auto => (Box::new(plain::Plain::new(out)), Progress::Plain),
        Progress::Tty => {
            let why = if terminal {
                "TERM is dumb"
            } else {
                "standard error is not a terminal"
            };
            emit(
                &out,
                &format!("note: no live tty view ({why}); showing plain progress\n"),
            );
            (Box::new(plain::Plain::new(out)), Progress::Plain)
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An [`Out`] writing into a shared buffer, and a way to read it back.
    pub fn buffer() -> (Out, Arc<Mutex<Vec<u8>>>) {
        #[derive(Clone)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let data = Arc::new(Mutex::new(Vec::new()));
        let out: Out = Arc::new(Mutex::new(Box::new(Shared(data.clone()))));
        (out, data)
    }

    pub fn text(data: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8_lossy(&data.lock().unwrap()).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn tty_without_a_terminal_falls_back_to_plain_with_a_note() {
        let (out, data) = buffer();
        let (_, mode) = reporter(Progress::Tty, out, false);
        assert_eq!(mode, Progress::Plain);
        assert_eq!(
            text(&data),
            "note: no live tty view (standard error is not a terminal); showing plain progress\n"
        );
        let (out, data) = buffer();
        let (_, mode) = reporter(Progress::Auto, out, false);
        assert_eq!(mode, Progress::Plain);
        assert_eq!(text(&data), "", "no note when not on a terminal");
    }
}
