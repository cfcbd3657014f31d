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
    eprintln!("==> building the strata CLI: cargo build -p strata --bin strata");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "strata", "--bin", "strata"])
        .current_dir(workspace_root())
        .status()
        .context("could not run cargo build")?;
    if !status.success() {
        bail!("cargo build -p strata failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_relative() {
        workspace_root().join(target)
    } else {
        target
    };
    Ok(target.join("debug").join("strata"))
}
