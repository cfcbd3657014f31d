//! `strata load`: read images from a tar archive.
//!
//! One line per layer on standard output (`Loading layer <id>: done (<size>)` or
//! `Layer <id>: already exists`), then `Loaded image: <name>`. When standard error is a
//! terminal, a progress bar there shows how much of the archive was read.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use strata_store::{human_size, LoadEvent};

use crate::global::GlobalArgs;
use crate::ui::progress;

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
    let (input, size, name): (Box<dyn Read>, Option<u64>, String) = match &args.input {
        Some(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let size = regular_file_size(&file);
            (Box::new(file), size, path.display().to_string())
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty: use -i FILE or a pipe");
            }
            // A redirected file has a size; a pipe has none (the bar then counts bytes).
            let size = std::fs::File::open("/proc/self/fd/0")
                .ok()
                .and_then(|f| regular_file_size(&f));
            (Box::new(stdin.lock()), size, "standard input".into())
        }
    };
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| progress::bytes_bar("Reading", size));
    let input: Box<dyn Read> = match &bar {
        Some(bar) => Box::new(bar.wrap_read(input)),
        None => input,
    };
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
        let mut write = || {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        match &bar {
            // The bar steps aside while the line is written, then redraws below it.
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    };
    let result = store.load(input, &mut print);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    result.with_context(|| format!("cannot load {name}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The size of `file` when it is a regular file (not a pipe or a device).
fn regular_file_size(file: &File) -> Option<u64> {
    file.metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}
