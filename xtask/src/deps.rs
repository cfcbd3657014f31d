//! Debian packages the test suites and benchmarks need, installed on demand.

use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Whether dpkg reports `package` as installed.
fn installed(package: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", package])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("Status: install ok installed")
        })
        .unwrap_or(false)
}

/// Whether this process runs as root (uid 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Make sure the Debian `packages` are installed: as root, run `apt-get update` and
/// `apt-get install -y` for the missing ones; otherwise fail with the exact command to run.
pub fn ensure_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing Debian packages: {}; install them with: sudo sh -c '{command}'",
            missing.join(", ")
        );
    }
    eprintln!(
        "==> installing missing Debian packages: {}",
        missing.join(" ")
    );
    let update = Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not run apt-get update")?;
    if !update.success() {
        bail!("`apt-get update` failed ({update}); run by hand: {command}");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not run apt-get install")?;
    if !install.success() {
        bail!("`apt-get install` failed ({install}); run by hand: {command}");
    }
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}
