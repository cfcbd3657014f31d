//! Standard output for commands: printing that returns its error instead of panicking, and
//! recognising a reader that went away.
//!
//! `println!` panics when standard output is a pipe whose reader has closed it
//! (`strata images | head -1`), and a `?` on a failed write used to end in
//! `Error: Broken pipe (os error 32)`. Commands print with [`outln!`] and [`out!`] (or write to
//! `std::io::stdout()` with `?`), and `main` asks [`is_closed_stdout`] before reporting a
//! failure: when the reader has gone, the command ends quietly with exit 141 (as if killed by
//! SIGPIPE, so a cut-short `save | ...` still fails under pipefail): `head` wanted
//! no more. `clippy::print_stdout` is denied in this crate so `println!` does not come back.

use std::io::ErrorKind;
use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// `writeln!` to standard output; evaluates to `std::io::Result<()>`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `write!` to standard output; evaluates to `std::io::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub(crate) use {out, outln};

/// Whether `e` is a write to standard output that failed because nobody reads it any more: a
/// broken pipe somewhere in its causes, and standard output's reader really gone (so a broken
/// pipe to a registry or a child process is still reported).
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    is_broken_pipe(e) && stdout_reader_gone()
}

/// Whether a broken pipe is among the causes of `e` (serde_json keeps its I/O error inside).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(ErrorKind::BrokenPipe)
    })
}

/// Whether standard output is a pipe (or socket) with no reader left: poll reports an error
/// condition for it.
fn stdout_reader_gone() -> bool {
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipes_are_found_through_context_and_json() {
        let io = std::io::Error::from(ErrorKind::BrokenPipe);
        let e = anyhow::Error::new(io).context("writing the table");
        assert!(is_broken_pipe(&e));
        let json = serde_json::to_writer(BrokenWriter, &serde_json::json!({"a": 1})).unwrap_err();
        assert!(is_broken_pipe(&anyhow::Error::new(json)));
        let other = anyhow::Error::new(std::io::Error::from(ErrorKind::PermissionDenied));
        assert!(!is_broken_pipe(&other));
        assert!(!is_closed_stdout(&other));
    }

    struct BrokenWriter;

    impl std::io::Write for BrokenWriter {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
