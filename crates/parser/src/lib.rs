//! Dockerfile parser for strata.
//!
//! Parsing happens at two levels, as in BuildKit's frontend:
//!
//! 1. [`ast::parse`] reads lines, parser directives, continuations, comments and heredocs
//!    and splits each logical line into a raw [`ast::Node`] (keyword, flags, arguments).
//!    [`ast::Ast::dump`] prints that tree in BuildKit's test format.
//! 2. [`parse`] does that and then turns every node into a typed [`Instruction`] with its
//!    flags validated, groups them into [`Stage`]s, and checks stage names.
//!
//! Variable expansion ([`shell`]) is a pure function of the text, the escape character
//! and an environment; [`scope`] knows which variables an instruction may see, and
//! [`Instruction::expand`] knows which fields of an instruction expand. Lints
//! are data ([`lint`]). The crate performs no I/O and never panics on any input.

mod convert;
mod directives;
mod duration;
mod error;
mod expand;
mod heredoc;
mod instructions;
mod json;
mod mount;
mod quote;
mod span;
mod stages;
mod suggest;
mod words;

pub mod ast;
pub mod lint;
pub mod scope;
pub mod shell;

pub use crate::directives::{CheckDirective, Directive, Directives};
pub use crate::error::ParseError;
pub use crate::expand::Expanded;
pub use crate::heredoc::Heredoc;
pub use crate::instructions::*;
pub use crate::mount::{CacheSharing, Mount, MountType};
pub use crate::span::Span;
pub use crate::stages::{Dockerfile, Stage};

/// Parse a Dockerfile: both the raw level and the typed level, grouped into stages.
///
/// ```
/// let df = strata_parser::parse("FROM alpine AS base\nRUN echo hi\n").unwrap();
/// assert_eq!(df.stages[0].name.as_deref(), Some("base"));
/// assert_eq!(df.stages[0].instructions.len(), 1);
/// ```
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let ast = ast::parse(src)?;
    stages::build(src, ast)
}

/// The raw parse of `src` in BuildKit's dump format (what `strata parse --dump` prints):
/// [`ast::parse`] followed by [`ast::Ast::dump`]. Only the first level runs, as in
/// BuildKit's own dumper, so files that are syntactically fine but not buildable (no
/// FROM, unknown instructions) still dump.
pub fn dump(src: &str) -> Result<String, ParseError> {
    Ok(ast::parse(src)?.dump())
}
