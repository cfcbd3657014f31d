//! `strata rm [-f] CONTAINER...`: remove containers and their writable layers; `-f` kills
//! a running one first (through its init's pid).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use strata_builder::Error as BuildError;

use crate::global::GlobalArgs;
use crate::ui::color::Palette;
use crate::ui::error::{self, Failure};

const EXAMPLES: &str = "\
Examples:
  strata rm web                 remove a stopped container
  strata rm -f web              kill it first if it runs
  strata rm $(strata ps -aq)    remove every container";

/// Options of `strata rm`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RmArgs {
    /// Kill a running container before removing it.
    #[arg(short, long)]
    force: bool,
    /// The containers (names, IDs or unique ID prefixes).
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: &RmArgs) -> anyhow::Result<ExitCode> {
    let engine = global.open_engine()?;
    let containers = engine.containers();
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for name in &args.containers {
        match containers.remove(name, args.force) {
            Ok(_) => writeln!(out, "{name}")?,
            Err(e) => {
                // Like Docker: report this one and go on with the others.
                failed = true;
                out.flush()?;
                let e = match &e {
                    BuildError::ContainerRunning { .. } => anyhow::Error::new(
                        Failure::new(e.to_string())
                            .hint("stop it first, or use `strata rm -f` to kill it and remove it"),
                    ),
                    _ => e.into(),
                };
                let place = format!("container {name}");
                eprint!("{}", error::render(&e, Some(&place), Palette::stderr()));
            }
        }
    }
    Ok(if failed {
        ExitCode::from(error::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
