//! `cargo xtask bench parser`: the parser's throughput on the real-world corpus.
//!
//! A plain harness (no criterion): `crates/parser/examples/parse_bench.rs`, built in
//! release mode, parses every file of `../shared/corpus/dockerfiles` over and over on one
//! thread. MB/s is computed from the thread's CPU time (so a busy machine does not lower
//! it) and, for reference, from wall time. A yardstick measured in the same run (counting
//! the corpus's lines) gives a ratio that is comparable across machines.

use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;

use crate::shared::{shared_dir, workspace_root};

/// The aim from issue 2: the full parse should exceed this on one core.
const TARGET_MB_S: f64 = 100.0;

/// Options of `cargo xtask bench parser`.
#[derive(Debug, Args)]
pub struct ParserBenchArgs {
    /// Seconds spent on each measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
}

/// Build the harness in release mode, run it on the corpus and print a summary.
pub fn run(args: &ParserBenchArgs) -> anyhow::Result<()> {
    let Some(shared) = shared_dir() else {
        eprintln!(
            "==> SKIPPED parser benchmark: ../shared does not exist next to the workspace \
             (set STRATA_SHARED to point at it)"
        );
        return Ok(());
    };
    let corpus = shared.join("corpus").join("dockerfiles");
    if !corpus.is_dir() {
        bail!("no corpus at {}", corpus.display());
    }
    eprintln!("==> building the parser harness (release)");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "strata-parser",
            "--example",
            "parse_bench",
        ])
        .current_dir(workspace_root())
        .status()
        .context("could not run cargo build")?;
    if !status.success() {
        bail!("building the parser harness failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let exe = target.join("release").join("examples").join("parse_bench");
    eprintln!(
        "==> parsing {} repeatedly on one thread, {}s per measurement",
        corpus.display(),
        args.seconds
    );
    let out = Command::new(&exe)
        .arg(&corpus)
        .arg(args.seconds.to_string())
        .output()
        .with_context(|| format!("could not run {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the harness failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value = |key: &str| -> Option<f64> {
        stdout.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix('=')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    let wall = |key: &str| -> Option<f64> {
        stdout.lines().find_map(|l| {
            l.strip_prefix(key)?;
            let w = l
                .split_whitespace()
                .find_map(|t| t.strip_prefix("wall_mb_s="))?;
            w.parse().ok()
        })
    };
    let files = stdout
        .lines()
        .find(|l| l.starts_with("files="))
        .unwrap_or("files=? bytes=?");
    println!("parser benchmark ({files})");
    let rows = [
        ("full parse (both levels)", "parse_mb_s"),
        ("raw level only", "raw_parse_mb_s"),
        ("parse + lints", "parse_and_lint_mb_s"),
        ("yardstick: str::lines", "yardstick_lines_mb_s"),
    ];
    for (label, key) in rows {
        match (value(key), wall(key)) {
            (Some(cpu), Some(w)) => {
                println!("  {label:<26} {cpu:>8.1} MB/s (CPU time)  {w:>8.1} MB/s (wall)")
            }
            _ => println!("  {label:<26} missing from the harness output"),
        }
    }
    let parse = value("parse_mb_s").context("the harness printed no parse_mb_s")?;
    if let Some(y) = value("yardstick_lines_mb_s") {
        println!("  full parse / yardstick: {:.3}", parse / y);
    }
    if parse >= TARGET_MB_S {
        println!("  target: over {TARGET_MB_S} MB/s on one core: met ({parse:.1} MB/s)");
    } else {
        println!("  target: over {TARGET_MB_S} MB/s on one core: NOT met ({parse:.1} MB/s)");
    }
    Ok(())
}
