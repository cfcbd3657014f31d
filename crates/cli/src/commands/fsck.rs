//! `strata fsck`: verify the store, optionally repair it.

use std::process::ExitCode;

use clap::Args;
use strata_store::{human_size, FsckOptions};

use crate::global::GlobalArgs;
use crate::ui::out::outln;

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
    outln!(
        "checked {} blobs ({})",
        report.blobs_checked,
        human_size(report.bytes_checked)
    )?;
    for d in &report.corrupt_blobs {
        outln!("corrupt blob: {d}")?;
    }
    for (d, by) in &report.missing_blobs {
        outln!("missing blob: {d} (referenced by {by})")?;
    }
    for (kind, name, why) in &report.broken_refs {
        outln!("broken {} ref {name}: {why}", kind.dir_name())?;
    }
    for r in &report.bad_layer_records {
        outln!("bad layer record: {r}")?;
    }
    for p in &report.stray_files {
        outln!("stray file: {}", p.display())?;
    }
    if report.index_out_of_step {
        outln!("index.json is out of step with the tags")?;
    }
    if report.temp_files > 0 {
        outln!(
            "{} leftover temp file(s) of interrupted writes (`strata prune` removes them)",
            report.temp_files
        )?;
    }
    for image in &report.affected_images {
        let verb = if args.repair { "removed" } else { "damaged" };
        outln!("{verb} image: {image}")?;
    }
    for r in &report.repairs {
        outln!("repair: {r}")?;
    }
    if report.is_clean() {
        outln!("store is consistent")?;
        Ok(ExitCode::SUCCESS)
    } else if args.repair {
        outln!("store repaired")?;
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("store has problems: run `strata fsck --repair`")?;
        Ok(ExitCode::from(1))
    }
}
