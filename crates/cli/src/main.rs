//! The `strata` command line: a daemonless Dockerfile image builder and layer store.
//!
//! The binary only defines the command line, renders output and maps outcomes to exit codes;
//! the work is done by the library crates.

use clap::Parser;

/// A daemonless Dockerfile image builder and layer store.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
