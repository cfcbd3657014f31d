//! Building the `strata` binary for the xtask commands that drive it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::shared::workspace_root;

/// Builds `strata` with the dev profile and returns its path.
///
/// Debug, not release: on a fresh clone `cargo xtask test` has already compiled every
/// dependency in the dev profile, so this is a few seconds of linking, while a release build
/// compiles the whole tree again with optimisations (minutes on two cores). The demo and the
/// tty check move a few megabytes; the binary's speed does not show.
pub fn build() -> anyhow::Result<PathBuf> {
    build_profile(false)
}

/// Builds `strata` with the release profile and returns its path (for benchmarks).
pub fn build_release() -> anyhow::Result<PathBuf> {
    build_profile(true)
}

fn build_profile(release: bool) -> anyhow::Result<PathBuf> {
    let mut args = vec!["build", "--quiet", "-p", "strata", "--bin", "strata"];
    if release {
        args.push("--release");
    }
    eprintln!("==> building the strata CLI: cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(workspace_root())
        .status()
        .context("could not run cargo build")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_relative() {
        workspace_root().join(target)
    } else {
        target
    };
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("strata"))
}
