//! The `strata` command line: a daemonless Dockerfile image builder and layer store.
//!
//! The binary only defines the command line, renders output and maps outcomes to exit codes;
//! the work is done by the library crates. Exit codes follow Docker's convention: 0 on
//! success, 1 on failure, 125 on a usage error.

mod commands;
mod global;
mod ui;

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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                ui::error::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ui::log::init(ui::log::level(
        cli.global.log_level.map(global::LogLevel::filter),
        cli.global.verbose,
    ));
    match commands::run(&cli.global, cli.command) {
        Ok(code) => code,
        Err(e) => {
            // Errors from the store or the snapshotter happened in the store: say which.
            let store = ui::error::is_storage_error(&e)
                .then(|| cli.global.store_root().ok())
                .flatten()
                .map(|r| format!("store {}", r.display()));
            log::debug!("{e:?}");
            eprint!(
                "{}",
                ui::error::render(&e, store.as_deref(), ui::color::Palette::stderr())
            );
            ExitCode::from(ui::error::exit_code(&e))
        }
    }
}
