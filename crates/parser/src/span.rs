//! Source positions.

use std::fmt;

/// Where a node sits in the source: 1-based lines and 1-based character columns.
///
/// `start_col` is the column of the first character of the node (the instruction keyword
/// for an instruction); `end_col` is the column just past the last character of
/// `end_line`, so an instruction on one line of 10 characters starting at column 1 has
/// `end_col == 11`. Columns count Unicode scalar values, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    /// First line (1-based).
    pub start_line: usize,
    /// First column on `start_line` (1-based).
    pub start_col: usize,
    /// Last line (1-based, inclusive).
    pub end_line: usize,
    /// Column just past the last character on `end_line` (1-based, exclusive).
    pub end_col: usize,
}

impl Span {
    /// A span covering a single position.
    pub fn point(line: usize, col: usize) -> Span {
        Span {
            start_line: line,
            start_col: col,
            end_line: line,
            end_col: col,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start_line == self.end_line {
            write!(f, "{}:{}-{}", self.start_line, self.start_col, self.end_col)
        } else {
            write!(
                f,
                "{}:{}-{}:{}",
                self.start_line, self.start_col, self.end_line, self.end_col
            )
        }
    }
}
