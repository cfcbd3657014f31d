//! `strata lint`: report lint findings as `file:line:col: severity[rule]: message`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use strata_parser::lint::{lint_source, Severity};

use super::read_input;
use crate::ui::out::outln;

/// Output formats of `strata lint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per finding plus its fix.
    Text,
    /// A JSON array of findings.
    Json,
}

/// Options of `strata lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// The Dockerfile (`-` reads standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Lint the file; exit 1 when any finding is an error.
pub fn run(args: &LintArgs) -> anyhow::Result<ExitCode> {
    let (name, text) = read_input(&args.file)?;
    let lints = lint_source(&text).with_context(|| format!("parsing {name}"))?;
    match args.format {
        Format::Text => {
            for l in &lints {
                outln!(
                    "{name}:{}:{}: {}[{}]: {}",
                    l.span.start_line,
                    l.span.start_col,
                    l.severity,
                    l.rule,
                    l.message
                )?;
                outln!("  fix: {}", l.fix)?;
            }
        }
        Format::Json => {
            let items: Vec<serde_json::Value> = lints
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "file": name,
                        "rule": l.rule,
                        "severity": l.severity.to_string(),
                        "line": l.span.start_line,
                        "column": l.span.start_col,
                        "end_line": l.span.end_line,
                        "end_column": l.span.end_col,
                        "message": l.message,
                        "fix": l.fix,
                    })
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&items)?)?;
        }
    }
    let errors = lints
        .iter()
        .filter(|l| l.severity == Severity::Error)
        .count();
    let warnings = lints.len() - errors;
    if args.format == Format::Text {
        eprintln!("{name}: {errors} error(s), {warnings} warning(s)");
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
