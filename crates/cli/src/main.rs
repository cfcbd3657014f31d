//! The `strata` command line: a daemonless Dockerfile image builder and layer store.
//!
//! The binary only defines the command line, renders output and maps outcomes to exit codes;
//! the work is done by the library crates. Exit codes follow Docker's convention: 0 on
//! success, 1 on failure, 125 on a usage error.

mod commands;
mod global;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::Command;
use crate::global::GlobalArgs;

/// A daemonless Dockerfile image builder and layer store.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Exit code for a command line that could not be understood (Docker's convention).
const EXIT_USAGE: u8 = 125;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match commands::run(&cli.global, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}
