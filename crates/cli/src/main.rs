//! The `strata` command line: a daemonless Dockerfile image builder and layer store.
//!
//! The binary only defines the command line, renders output and maps outcomes to exit codes;
//! the work is done by the library crates. Exit codes follow Docker's convention: 0 on
//! success, 1 on failure, 125 on a usage error. A reader that closes standard output early
//! (`strata images | head -1`) ends the command quietly with exit 0.

// Printing goes through `ui::out` so a closed pipe is an error to handle, not a panic.
#![deny(clippy::print_stdout)]

mod commands;
mod global;
mod render;
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
            if !e.use_stderr() {
                // --help and --version.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // Usage errors read like every other error: `Error: ...`, exit 125.
            let text = e.render().to_string();
            let rest = text.strip_prefix("error: ").unwrap_or(&text);
            eprint!("{} {rest}", ui::color::Palette::stderr().error("Error:"));
            return ExitCode::from(ui::error::EXIT_USAGE);
        }
    };
    ui::log::init(ui::log::level(
        cli.global.log_level.map(global::LogLevel::filter),
        cli.global.verbose,
    ));
    match commands::run(&cli.global, cli.command) {
        Ok(code) => code,
        Err(e) if ui::out::is_closed_stdout(&e) => {
            // The reader stopped reading (`| head`): say nothing, as a process killed by
            // SIGPIPE would, and exit with that process's status (128 + 13), so that a
            // `save | ...` cut short still fails under `set -o pipefail`.
            log::debug!("standard output closed: {e:#}");
            ExitCode::from(ui::error::EXIT_CLOSED_STDOUT)
        }
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command a user can see shows an example under `--help` (and in its man page).
    #[test]
    fn every_subcommand_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() || sub.get_name() == "help" {
                    continue;
                }
                let name = format!("{path} {}", sub.get_name());
                let help = sub.get_after_help().map(|h| h.to_string());
                if !help.is_some_and(|h| h.contains("strata ")) {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "strata", &mut missing);
        assert!(missing.is_empty(), "no example in --help: {missing:?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
