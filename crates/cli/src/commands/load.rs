//! `strata load`: read images from a tar archive.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use strata_store::{human_size, LoadEvent};

use crate::global::GlobalArgs;

/// Options of `strata load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Only print the loaded images.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(global: &GlobalArgs, args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let quiet = args.quiet;
    let mut out = std::io::stdout().lock();
    let mut print = |event: LoadEvent| {
        let line = match event {
            LoadEvent::LayerLoaded { diff_id, size } if !quiet => {
                format!(
                    "Loading layer {}: done ({})",
                    diff_id.short(),
                    human_size(size)
                )
            }
            LoadEvent::LayerExists { diff_id } if !quiet => {
                format!("Layer {}: already exists", diff_id.short())
            }
            LoadEvent::ImageLoaded { reference } => {
                format!("Loaded image: {}", reference.familiar())
            }
            LoadEvent::ImageIdLoaded { id } => format!("Loaded image ID: {id}"),
            _ => return,
        };
        let _ = writeln!(out, "{line}");
    };
    match &args.input {
        Some(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            store
                .load(file, &mut print)
                .with_context(|| format!("cannot load {}", path.display()))?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty: use -i FILE or a pipe");
            }
            store.load(stdin.lock(), &mut print)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
