//! `strata export CONTAINER [-o FILE]`: the container's whole filesystem (image layers and
//! writable layer, merged) as one tar.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::global::GlobalArgs;
use crate::ui::error::{AtPlace, Failure};

const EXAMPLES: &str = "\
Examples:
  strata export web -o web.tar
  strata export web | tar -t | head
  strata export web | strata import - web:flat";

/// Options of `strata export`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ExportArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The container (name, ID or unique ID prefix).
    #[arg(value_name = "CONTAINER")]
    container: String,
}

pub fn run(global: &GlobalArgs, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let engine = global.open_engine()?;
    let place = format!("container {}", args.container);
    match &args.output {
        Some(path) => {
            // Written next to the target and renamed: no half-written archive appears.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot create a file in {}", dir.display()))?;
            {
                let mut w = std::io::BufWriter::new(tmp.as_file_mut());
                engine
                    .containers()
                    .export(&args.container, &mut w)
                    .at(&place)?;
                w.flush()
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(Failure::usage(
                    "cowardly refusing to write a tar archive to a terminal",
                )
                .hint("use `-o FILE` or redirect the output")
                .into());
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            engine
                .containers()
                .export(&args.container, &mut out)
                .at(&place)?;
            out.flush().context("writing standard output")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
