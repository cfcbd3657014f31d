//! Whether to colour, and the few styles the CLI uses.
//!
//! Colour is used only when the stream is a terminal and `NO_COLOR` is unset or empty
//! (<https://no-color.org>); piped output and captured test output never carry escapes.

use std::io::IsTerminal;

use anstyle::{AnsiColor, Style};

/// Styles for one output stream: plain when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    enabled: bool,
}

/// Whether to colour a stream, given `NO_COLOR`'s value and whether it is a terminal.
pub fn decide(no_color: Option<&std::ffi::OsStr>, is_terminal: bool) -> bool {
    let disabled = no_color.is_some_and(|v| !v.is_empty());
    !disabled && is_terminal
}

impl Palette {
    /// For standard output.
    pub fn stdout() -> Palette {
        Palette {
            enabled: decide(
                std::env::var_os("NO_COLOR").as_deref(),
                std::io::stdout().is_terminal(),
            ),
        }
    }

    /// For standard error.
    pub fn stderr() -> Palette {
        Palette {
            enabled: decide(
                std::env::var_os("NO_COLOR").as_deref(),
                std::io::stderr().is_terminal(),
            ),
        }
    }

    /// A palette that never colours.
    #[cfg(test)]
    pub fn plain() -> Palette {
        Palette { enabled: false }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.enabled {
            format!("{style}{text}{style:#}")
        } else {
            text.to_string()
        }
    }

    /// `Error:` and other failures.
    pub fn error(&self, text: &str) -> String {
        self.paint(
            Style::new().bold().fg_color(Some(AnsiColor::Red.into())),
            text,
        )
    }

    /// Warnings.
    pub fn warn(&self, text: &str) -> String {
        self.paint(
            Style::new().bold().fg_color(Some(AnsiColor::Yellow.into())),
            text,
        )
    }

    /// Hints and other advice.
    pub fn hint(&self, text: &str) -> String {
        self.paint(
            Style::new().bold().fg_color(Some(AnsiColor::Cyan.into())),
            text,
        )
    }

    /// Names the eye should find (image names in `images --tree`).
    pub fn name(&self, text: &str) -> String {
        self.paint(
            Style::new().bold().fg_color(Some(AnsiColor::Green.into())),
            text,
        )
    }

    /// Secondary detail (IDs, tree lines).
    pub fn dim(&self, text: &str) -> String {
        self.paint(Style::new().dimmed(), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn no_color_and_terminals() {
        assert!(decide(None, true));
        assert!(!decide(None, false));
        assert!(!decide(Some(OsStr::new("1")), true));
        // An empty NO_COLOR does not disable colour (no-color.org).
        assert!(decide(Some(OsStr::new("")), true));
        let on = Palette { enabled: true };
        assert_eq!(on.error("x"), "\u{1b}[1m\u{1b}[31mx\u{1b}[0m");
        assert_eq!(Palette::plain().error("x"), "x");
    }
}
