//! The stderr logger behind `--log-level` and `-v`: `level: message` lines, coloured on a
//! terminal. Libraries never log; this is for the CLI's own diagnostics (which store, which
//! driver, how long a command took).

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

use super::color::Palette;

struct StderrLogger {
    palette: Palette,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let label = match record.level() {
            Level::Error => self.palette.error("error:"),
            Level::Warn => self.palette.warn("warning:"),
            Level::Info => self.palette.hint("info:"),
            Level::Debug => self.palette.dim("debug:"),
            Level::Trace => self.palette.dim("trace:"),
        };
        let _ = writeln!(std::io::stderr().lock(), "{label} {}", record.args());
    }

    fn flush(&self) {}
}

/// The level: `--log-level` when given, else `warn`, raised one step by each `-v` past the
/// first (the first `-v` asks commands for more detail in their own output).
pub fn level(explicit: Option<LevelFilter>, verbose: u8) -> LevelFilter {
    if let Some(l) = explicit {
        return l;
    }
    match verbose {
        0 | 1 => LevelFilter::Warn,
        2 => LevelFilter::Info,
        3 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Install the logger (once, at start-up).
pub fn init(level: LevelFilter) {
    let logger = Box::new(StderrLogger {
        palette: Palette::stderr(),
    });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level(None, 0), LevelFilter::Warn);
        assert_eq!(level(None, 1), LevelFilter::Warn);
        assert_eq!(level(None, 2), LevelFilter::Info);
        assert_eq!(level(None, 9), LevelFilter::Trace);
        assert_eq!(level(Some(LevelFilter::Error), 3), LevelFilter::Error);
    }
}
