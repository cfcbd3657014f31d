//! `strata fsck`: verify the store, optionally repair it.

use std::process::ExitCode;

use clap::Args;
use strata_store::{human_size, FsckOptions};

use crate::global::GlobalArgs;

/// Options of `strata fsck`.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Drop corrupt blobs and refs whose content is incomplete; name the affected images.
    #[arg(long)]
    repair: bool,
}

pub fn run(global: &GlobalArgs, args: &FsckArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let report = store.fsck(FsckOptions {
        repair: args.repair,
    })?;
    println!(
        "checked {} blobs ({})",
        report.blobs_checked,
        human_size(report.bytes_checked)
    );
    for d in &report.corrupt_blobs {
        println!("corrupt blob: {d}");
    }
    for (d, by) in &report.missing_blobs {
        println!("missing blob: {d} (referenced by {by})");
    }
    for (kind, name, why) in &report.broken_refs {
        println!("broken {} ref {name}: {why}", kind.dir_name());
    }
    for r in &report.bad_layer_records {
        println!("bad layer record: {r}");
    }
    for p in &report.stray_files {
        println!("stray file: {}", p.display());
    }
    if report.index_out_of_step {
        println!("index.json is out of step with the tags");
    }
    if report.temp_files > 0 {
        println!(
            "{} leftover temp file(s) of interrupted writes (`strata prune` removes them)",
            report.temp_files
        );
    }
    for image in &report.affected_images {
        let verb = if args.repair { "removed" } else { "damaged" };
        println!("{verb} image: {image}");
    }
    for r in &report.repairs {
        println!("repair: {r}");
    }
    if report.is_clean() {
        println!("store is consistent");
        Ok(ExitCode::SUCCESS)
    } else if args.repair {
        println!("store repaired");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("store has problems: run `strata fsck --repair`");
        Ok(ExitCode::from(1))
    }
}
