//! The crate's one error type.

/// Everything that can go wrong while parsing, validating or expanding a Dockerfile.
///
/// Every variant that comes from a position in the file carries the line and column
/// (1-based) so callers can point at it; the message names the offending text and what
/// was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A physical line does not fit BuildKit's line buffer.
    #[error(
        "line {line}: dockerfile line greater than max allowed size of 65535 bytes \
         (this one has {len} bytes)"
    )]
    LineTooLong {
        /// The line (1-based).
        line: usize,
        /// Its length in bytes, line ending excluded.
        len: usize,
    },

    /// The file holds no instruction at all (empty, or only comments and blank lines).
    #[error("file with no instructions: expected at least a FROM instruction")]
    NoInstructions,

    /// A parser directive (`# escape=`, `# syntax=`, `# check=`) is invalid.
    #[error("line {line}, column {column}: invalid parser directive `{text}`: {message}")]
    Directive {
        /// The line (1-based).
        line: usize,
        /// The column of the directive (1-based).
        column: usize,
        /// The directive line as written.
        text: String,
        /// What is wrong and what was expected.
        message: String,
    },

    /// An instruction keyword that is not part of the Dockerfile language.
    #[error(
        "line {line}, column {column}: unknown instruction `{instruction}`{}",
        did_you_mean(.suggestion)
    )]
    UnknownInstruction {
        /// The line (1-based).
        line: usize,
        /// The column (1-based).
        column: usize,
        /// The keyword as written.
        instruction: String,
        /// The closest known instruction, when one is close enough.
        suggestion: Option<String>,
    },

    /// A heredoc whose terminator line never came.
    #[error(
        "line {line}, column {column}: unterminated heredoc `{name}`: the file ended before \
         a line reading `{name}`"
    )]
    UnterminatedHeredoc {
        /// The line of the instruction that opened the heredoc.
        line: usize,
        /// The column of that instruction.
        column: usize,
        /// The heredoc's terminator word.
        name: String,
    },

    /// An instruction that parses but is not valid (bad flag, wrong arity, bad value).
    #[error(
        "line {line}, column {column}: {instruction}: {problem}: found `{found}`, expected {expected}"
    )]
    Invalid {
        /// The line of the offending text (1-based).
        line: usize,
        /// The column of the offending text (1-based).
        column: usize,
        /// The instruction keyword, upper-cased.
        instruction: String,
        /// What is wrong.
        problem: String,
        /// The offending text.
        found: String,
        /// What would have been accepted.
        expected: String,
    },

    /// Only global `ARG`s and no `FROM`.
    #[error("no build stage: expected a FROM instruction after the global ARGs")]
    NoStages,

    /// Variable expansion failed (bad substitution, `${VAR:?message}`, unterminated quote).
    #[error("{}failed to expand `{text}`: {message}", position(*.line, *.column))]
    Expansion {
        /// The line of the instruction being expanded, when known.
        line: Option<usize>,
        /// Its column, when known.
        column: Option<usize>,
        /// The text that was being expanded.
        text: String,
        /// What went wrong.
        message: String,
    },

    /// `--target` names no stage.
    #[error("target stage `{target}` could not be found{}", did_you_mean(.suggestion))]
    UnknownTarget {
        /// The requested target.
        target: String,
        /// The closest stage name, when one is close enough.
        suggestion: Option<String>,
    },
}

impl ParseError {
    /// The 1-based line the error points at, when it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::LineTooLong { line, .. }
            | ParseError::Directive { line, .. }
            | ParseError::UnknownInstruction { line, .. }
            | ParseError::UnterminatedHeredoc { line, .. }
            | ParseError::Invalid { line, .. } => Some(*line),
            ParseError::Expansion { line, .. } => *line,
            _ => None,
        }
    }

    /// The 1-based column the error points at, when it points at one.
    pub fn column(&self) -> Option<usize> {
        match self {
            ParseError::Directive { column, .. }
            | ParseError::UnknownInstruction { column, .. }
            | ParseError::UnterminatedHeredoc { column, .. }
            | ParseError::Invalid { column, .. } => Some(*column),
            ParseError::LineTooLong { .. } => Some(1),
            ParseError::Expansion { column, .. } => *column,
            _ => None,
        }
    }
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}
