//! One module per subcommand; this file lists them and dispatches.

mod lint;
mod parse;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::global::GlobalArgs;

/// Every subcommand of `strata`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information.
    Version,
    /// Parse a Dockerfile and summarise its stages (or print BuildKit's dump format).
    Parse(parse::ParseArgs),
    /// Check a Dockerfile for common mistakes; exit 1 on any error-level finding.
    Lint(lint::LintArgs),
}

/// Run one subcommand; the returned code becomes the process's exit code.
pub fn run(_global: &GlobalArgs, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Parse(args) => parse::run(&args),
        Command::Lint(args) => lint::run(&args),
    }
}

/// Read a Dockerfile (`-` is standard input); returns the name to show and the text.
fn read_input(path: &Path) -> anyhow::Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(("-".into(), text));
    }
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    Ok((name, text))
}
