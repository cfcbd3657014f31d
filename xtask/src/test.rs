//! `cargo xtask test`: the gate that `.ci/run` and the README's test command run.
//!
//! Order: formatting, clippy, unit and doc tests, conformance runs against `../shared`, then
//! the privileged integration suite (tests marked `#[ignore = "privileged: ..."]`), run as root
//! inside a private mount namespace so that nothing a dying test mounted leaks onto the host.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

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

/// Totals read from libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that were ignored.
    pub ignored: u64,
}

impl Counts {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let n = n.trim_start_matches("ok.").trim_start_matches("FAILED.");
            let Ok(n) = n.trim().parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Run one command in the workspace root, echoing its output, and fail with `step` if it fails.
fn run_step(step: &str, cmd: &mut Command) -> anyhow::Result<Counts> {
    eprintln!("==> {step}: {cmd:?}");
    let mut child = cmd
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {step}"))?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        let trimmed = line.trim_start();
        let normalised = trimmed.replace("test result: ok. ", "test result: ");
        let normalised = normalised.replace("test result: FAILED. ", "test result: ");
        counts.add_line(&normalised);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(counts)
}

fn cargo() -> Command {
    Command::new(env!("CARGO"))
}

/// True when this process can mount overlayfs: root, and the kernel knows the filesystem.
fn can_run_privileged() -> Result<(), String> {
    // `id -u` keeps xtask free of libc bindings for a single geteuid call.
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid != "0" {
        return Err(format!("not running as root (uid {uid})"));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        // The module may simply not be loaded yet.
        let _ = Command::new("modprobe").arg("overlay").status();
        let again = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !again.lines().any(|l| l.trim_end().ends_with("overlay")) {
            return Err("the kernel has no overlay filesystem".into());
        }
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        return Err("`unshare` (util-linux) is missing".into());
    }
    Ok(())
}

/// The parser's conformance target against BuildKit's test data in `dir`; prints the
/// pass count of every suite.
fn parser_conformance(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "strata-parser",
        "--test",
        "conformance",
        "--",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("STRATA_SHARED", dir)
    .current_dir(workspace_root());
    eprintln!("==> parser conformance: {cmd:?}");
    let out = cmd
        .output()
        .context("could not run the parser conformance tests")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        if let Some(at) = line.find("conformance: ") {
            eprintln!("==> {}", &line[at..]);
        }
    }
    if !out.status.success() {
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        bail!("parser conformance failed ({})", out.status);
    }
    Ok(())
}

/// Run the whole gate in order, stopping at the first failure.
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    run_step("format", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let mut total = run_step(
        "unit and doc tests",
        cargo().args(["test", "--workspace", "--no-fail-fast"]),
    )?;
    match shared_dir() {
        Some(dir) => {
            eprintln!("==> conformance data found at {}", dir.display());
            parser_conformance(&dir)?;
        }
        None => eprintln!(
            "==> SKIPPED conformance runs: ../shared does not exist next to the workspace \
             (set STRATA_SHARED to point at it)"
        ),
    }

    match can_run_privileged() {
        Ok(()) => {
            // The store's interop and integration tests use these (busybox-static makes the
            // base image; skopeo and umoci read what strata writes).
            crate::deps::ensure_packages(&[
                "busybox-static",
                "skopeo",
                "umoci",
                "tar",
                "docker-registry",
                "apache2-utils",
            ])?;
            // Build first, outside the namespace, so compile errors read plainly.
            run_step(
                "build privileged suite",
                cargo().args(["test", "--workspace", "--no-run"]),
            )?;
            let counts = run_step(
                "privileged integration suite (root, overlayfs, private mount namespace)",
                Command::new("unshare")
                    .args(["--mount", "--propagation", "private", "--"])
                    .arg(env!("CARGO"))
                    .args(["test", "--workspace", "--no-fail-fast", "--", "--ignored"]),
            )?;
            eprintln!(
                "==> integration suite: {} passed, {} failed",
                counts.passed, counts.failed
            );
            total.passed += counts.passed;
            total.failed += counts.failed;
        }
        Err(why) => {
            let listed = Command::new(env!("CARGO"))
                .args(["test", "--workspace", "--", "--ignored", "--list"])
                .current_dir(workspace_root())
                .stderr(Stdio::null())
                .output()?;
            let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .lines()
                .filter_map(|l| l.strip_suffix(": test"))
                .map(str::to_string)
                .collect();
            eprintln!(
                "==> could not run the privileged suite: {why}. These {} tests did not run:",
                names.len()
            );
            for n in &names {
                eprintln!("      {n}");
            }
            if !args.allow_skip {
                bail!("privileged tests were skipped ({why}); pass --allow-skip to accept that");
            }
        }
    }
    eprintln!(
        "==> all checks passed: {} passed, {} failed, {} ignored outside the privileged run",
        total.passed, total.failed, total.ignored
    );
    Ok(())
}
