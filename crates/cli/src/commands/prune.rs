//! `strata prune` and `strata builder prune`: garbage-collect blobs no ref reaches and the
//! unpacked layer folders of chains no ref reaches; with `--cache` (always for `builder
//! prune`) drop the build cache first: cache records, `RUN --mount=type=cache` folders and
//! the records of last builds.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use strata_builder::{PruneOptions, PruneReport};
use strata_store::human_size;

use super::images::Format;
use crate::global::GlobalArgs;
use crate::ui::out::out;
use crate::ui::{human, json};

/// Options of `strata prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// List what would be removed without removing it.
    #[arg(long)]
    dry_run: bool,
    /// Also drop the build cache (cache records, cache mounts, last-build records).
    #[arg(long, conflicts_with = "keep_storage")]
    cache: bool,
    /// Evict build cache records, least recently used first, until the build cache
    /// (`system df`'s Build Cache SIZE) is at most SIZE (512MB, 2GB: powers of 1024, as
    /// Docker reads it).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
    /// Output format (`json`: one document, for scripts).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn parse_size(text: &str) -> Result<u64, String> {
    crate::ui::human::parse_ram_size(text)
}

/// `strata builder ...`.
#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache and what only it kept.
    #[command(
        after_help = "Examples:\n  strata builder prune\n  strata builder prune --dry-run\n  strata builder prune --keep-storage 512MB\n  strata builder prune --format json"
    )]
    Prune(BuilderPruneArgs),
}

/// Options of `strata builder prune`.
#[derive(Debug, Args)]
pub struct BuilderPruneArgs {
    /// List what would be removed without removing it.
    #[arg(long)]
    dry_run: bool,
    /// Keep the most recently used records while the build cache is at most SIZE (512MB,
    /// 2GB); without it, the whole build cache goes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
    /// Output format (`json`: one document, for scripts).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(global: &GlobalArgs, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    prune(
        global,
        PruneOptions {
            dry_run: args.dry_run,
            cache: args.cache,
            keep_storage: args.keep_storage,
        },
        args.format,
    )
}

pub fn run_builder(global: &GlobalArgs, command: &BuilderCommand) -> anyhow::Result<ExitCode> {
    match command {
        BuilderCommand::Prune(args) => prune(
            global,
            PruneOptions {
                dry_run: args.dry_run,
                cache: args.keep_storage.is_none(),
                keep_storage: args.keep_storage,
            },
            args.format,
        ),
    }
}

fn prune(global: &GlobalArgs, options: PruneOptions, format: Format) -> anyhow::Result<ExitCode> {
    let engine = global.open_engine()?;
    let report = engine.prune(&options)?;
    match format {
        Format::Table => out!("{}", describe(&report, human::now()))?,
        Format::Json => {
            json::write_pretty(&mut std::io::stdout().lock(), &JsonReport::of(&report))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `prune --format json`: what went (or would go), each thing with its size, and the total
/// as Docker's prune responses name it (`SpaceReclaimed`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonReport {
    dry_run: bool,
    /// How many build cache records were dropped.
    cache_records_removed: usize,
    /// The dropped records with their details, least recently used first (`--keep-storage`).
    cache_records: Vec<JsonCacheRecord>,
    /// The build cache's size after the prune, with `--keep-storage`.
    cache_size_after: Option<u64>,
    cache_mounts: Vec<JsonSized>,
    blobs: Vec<JsonSized>,
    layer_folders: Vec<JsonSized>,
    temp_files: usize,
    space_reclaimed: u64,
}

/// A build cache record that went.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCacheRecord {
    #[serde(rename = "ID")]
    id: String,
    stage: Option<String>,
    created_by: Option<String>,
    /// RFC 3339.
    last_used: Option<String>,
}

/// A blob, folder or cache mount that went, with its size in bytes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonSized {
    name: String,
    size: u64,
}

impl JsonReport {
    fn of(report: &PruneReport) -> JsonReport {
        let sized = |name: String, size: u64| JsonSized { name, size };
        JsonReport {
            dry_run: report.dry_run,
            cache_records_removed: report.cache_records,
            cache_records: report
                .records
                .iter()
                .map(|r| JsonCacheRecord {
                    id: r.name.clone(),
                    stage: r.stage.clone(),
                    created_by: r.created_by.clone(),
                    last_used: r.last_used.map(human::rfc3339),
                })
                .collect(),
            cache_size_after: report.cache_size_after,
            cache_mounts: report
                .cache_mounts
                .iter()
                .map(|(p, size)| sized(p.display().to_string(), *size))
                .collect(),
            blobs: report
                .gc
                .removed
                .iter()
                .map(|(d, size)| sized(d.to_string(), *size))
                .collect(),
            layer_folders: report
                .snapshots
                .iter()
                .map(|(n, size)| sized(n.clone(), *size))
                .collect(),
            temp_files: report.gc.temp_files.len(),
            space_reclaimed: report.gc.bytes_freed + report.unpacked_bytes,
        }
    }
}

/// The lines `prune` prints: what went (each cache record with its stage, instruction and
/// last use, `now` being the time to count from), then the total.
fn describe(report: &PruneReport, now: i64) -> String {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = String::new();
    if report.cache_records > 0 {
        out.push_str(&format!(
            "{verb} {} build cache record(s)\n",
            report.cache_records
        ));
    }
    for r in &report.records {
        out.push_str(&format!(
            "{verb} build cache record {} ({}, last used {}): {}\n",
            human::short_id(&r.name),
            r.stage.as_deref().unwrap_or("stage unknown"),
            human::since(r.last_used, now),
            human::ellipsis(r.created_by.as_deref().unwrap_or("-"), 60)
        ));
    }
    if let Some(after) = report.cache_size_after {
        out.push_str(&format!(
            "build cache {} {}\n",
            if report.dry_run { "would be" } else { "is now" },
            human_size(after)
        ));
    }
    for (path, size) in &report.cache_mounts {
        out.push_str(&format!(
            "{verb} cache mount {} ({})\n",
            path.display(),
            human_size(*size)
        ));
    }
    for (digest, size) in &report.gc.removed {
        out.push_str(&format!("{verb} {digest} ({})\n", human_size(*size)));
    }
    for (name, size) in &report.snapshots {
        out.push_str(&format!(
            "{verb} layer folder {} ({})\n",
            &name[..12.min(name.len())],
            human_size(*size)
        ));
    }
    if !report.gc.temp_files.is_empty() {
        out.push_str(&format!(
            "{verb} {} leftover temp file(s)\n",
            report.gc.temp_files.len()
        ));
    }
    let total = if report.dry_run {
        "Total reclaimable space"
    } else {
        "Total reclaimed space"
    };
    out.push_str(&format!(
        "{total}: {}\n",
        human_size(report.gc.bytes_freed + report.unpacked_bytes)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::Digest;

    #[test]
    fn describes_blobs_folders_and_cache() {
        let mut report = PruneReport {
            cache_records: 3,
            snapshots: vec![("ab".repeat(32), 4096)],
            unpacked_bytes: 4096,
            ..PruneReport::default()
        };
        report.gc.removed = vec![(Digest::of(b"x"), 2048)];
        report.gc.bytes_freed = 2048;
        insta::assert_snapshot!(describe(&report, 0), @r###"
        removed 3 build cache record(s)
        removed sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881 (2.048kB)
        removed layer folder abababababab (4.096kB)
        Total reclaimed space: 6.144kB
        "###);
        report.dry_run = true;
        assert!(describe(&report, 0).starts_with("would remove 3 build cache record(s)"));
    }
}
