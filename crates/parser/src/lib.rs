//! Dockerfile parser for strata.
//!
//! This crate will own the Dockerfile syntax: BuildKit-compatible lexing (directives, escapes,
//! continuations, heredocs, JSON forms), a typed AST in which every node keeps its source span,
//! variable expansion as a pure function of an environment, and lints as data. It performs no
//! I/O: it takes `&str` and returns values plus diagnostics.
