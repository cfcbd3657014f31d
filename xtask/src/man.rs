//! `cargo xtask man [DIR]`: write strata's man pages (one per command, roff, section 1)
//! into `DIR`, by default `target/man`.
//!
//! The pages come from the CLI's own clap definition, rendered by clap_mangen inside the
//! `strata` binary (its hidden `__man DIR` command, as ripgrep generates its man page
//! from `rg` itself): the definition lives in the binary crate, so the binary is the one
//! place that knows every command, option and example.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;

use crate::shared::workspace_root;

/// Options of `cargo xtask man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write the pages (default: target/man).
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: &ManArgs) -> anyhow::Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = match &args.dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => std::env::current_dir()?.join(d),
        None => target.join("man"),
    };
    eprintln!("==> building strata");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "strata", "--bin", "strata"])
        .current_dir(workspace_root())
        .status()
        .context("could not run cargo build")?;
    if !status.success() {
        bail!("building strata failed ({status})");
    }
    let exe = target.join("debug").join("strata");
    let out = Command::new(&exe)
        .arg("__man")
        .arg(&dir)
        .output()
        .with_context(|| format!("could not run {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "strata __man failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pages = String::from_utf8_lossy(&out.stdout);
    let count = pages.lines().count();
    if count == 0 {
        bail!("strata wrote no man pages into {}", dir.display());
    }
    eprintln!(
        "==> {count} man pages in {} (read one with `man -l {}/strata.1`)",
        dir.display(),
        dir.display()
    );
    Ok(())
}
