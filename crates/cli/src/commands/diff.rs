//! `strata diff CONTAINER`: what the container changed, as Docker prints it (`A /opt/new`,
//! `C /opt`, `D /opt/env`), read from its writable layer only.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use strata_builder::container::diff_line;

use crate::global::GlobalArgs;
use crate::ui::error::AtPlace;

const EXAMPLES: &str = "\
Examples:
  strata diff web               A = added, C = changed, D = deleted
  strata diff web | grep '^A'   only what was added";

/// Options of `strata diff`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct DiffArgs {
    /// The container (name, ID or unique ID prefix).
    #[arg(value_name = "CONTAINER")]
    container: String,
}

pub fn run(global: &GlobalArgs, args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let engine = global.open_engine()?;
    let changes = engine
        .containers()
        .diff(&args.container)
        .at(format!("container {}", args.container))?;
    let mut out = std::io::stdout().lock();
    for c in &changes {
        writeln!(out, "{}", diff_line(c))?;
    }
    Ok(ExitCode::SUCCESS)
}
