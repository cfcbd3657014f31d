//! `strata prune`: garbage-collect unreferenced blobs.

use std::process::ExitCode;

use clap::Args;
use strata_store::{human_size, GcOptions};

use crate::global::GlobalArgs;

/// Options of `strata prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// List what would be removed without removing it.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(global: &GlobalArgs, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let report = store.gc(GcOptions {
        dry_run: args.dry_run,
    })?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for (digest, size) in &report.removed {
        println!("{verb} {digest} ({})", human_size(*size));
    }
    if !report.temp_files.is_empty() {
        println!("{verb} {} leftover temp file(s)", report.temp_files.len());
    }
    let total = if args.dry_run {
        "Total reclaimable space"
    } else {
        "Total reclaimed space"
    };
    println!("{total}: {}", human_size(report.bytes_freed));
    Ok(ExitCode::SUCCESS)
}
