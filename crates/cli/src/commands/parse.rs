//! `strata parse`: parse a Dockerfile, print a summary or BuildKit's dump format.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::read_input;
use crate::ui::out::outln;

/// Options of `strata parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Print the raw parse tree in BuildKit's test-result format (syntax level only, as
    /// BuildKit's own dumper does) instead of the stage summary.
    #[arg(long)]
    pub dump: bool,

    /// The Dockerfile (`-` reads standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Parse the file; on success print the dump or a summary of its stages.
pub fn run(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let (name, text) = read_input(&args.file)?;
    if args.dump {
        let dump = strata_parser::dump(&text).with_context(|| format!("parsing {name}"))?;
        outln!("{dump}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let df = strata_parser::parse(&text).with_context(|| format!("parsing {name}"))?;
    let globals = df.meta_arg_defs().count();
    outln!(
        "{name}: {} stage{}, {globals} global ARG{}, escape {}",
        df.stages.len(),
        if df.stages.len() == 1 { "" } else { "s" },
        if globals == 1 { "" } else { "s" },
        df.escape()
    )?;
    if let Some(syntax) = &df.directives.syntax {
        outln!("  syntax: {syntax}")?;
    }
    for s in &df.stages {
        let name = s
            .name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let platform = s
            .from
            .platform
            .as_deref()
            .map(|p| format!(" --platform={p}"))
            .unwrap_or_default();
        let end = s
            .instructions
            .last()
            .map(|i| i.span.end_line)
            .unwrap_or(s.span.end_line);
        outln!(
            "  stage {}{name}: FROM{platform} {} (lines {}-{end}): {} instruction{}, {} layer{}",
            s.index,
            s.from.image,
            s.span.start_line,
            s.instructions.len(),
            if s.instructions.len() == 1 { "" } else { "s" },
            s.layer_count(),
            if s.layer_count() == 1 { "" } else { "s" },
        )?;
    }
    for w in &df.warnings {
        eprintln!(
            "{name}:{}:{}: warning: {}",
            w.span.start_line, w.span.start_col, w.message
        );
    }
    Ok(ExitCode::SUCCESS)
}
