//! One module per subcommand; this file lists them and dispatches.

use std::process::ExitCode;

use clap::Subcommand;

use crate::global::GlobalArgs;

/// Every subcommand of `strata`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information.
    Version,
}

/// Run one subcommand; the returned code becomes the process's exit code.
pub fn run(_global: &GlobalArgs, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
