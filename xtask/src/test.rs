//! `cargo xtask test`: the gate that `.ci/run` and the README's test command run.
//!
//! Order: formatting, clippy, unit and doc tests, conformance runs against `../shared`, then
//! the privileged integration suite (every `#[ignore]`d test: privileged, interop and slow
//! ones), run as root inside a private mount namespace so that nothing a dying test mounted
//! leaks onto the host; then the storage tests again with the `vfs` driver
//! (`STRATA_STORAGE_DRIVER=vfs`, which the builder suite and the CLI tests pass on); then the
//! tmux check of the live progress views (`cargo xtask tty-check`).
//!
//! When the privileged parts cannot run (not root, no overlayfs), it lists exactly which tests
//! did not run and fails, unless `--allow-skip` is given (CI never gives it).

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

/// Totals read from libtest's `test result:` lines, and the names of the tests that failed.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that were ignored.
    pub ignored: u64,
    /// Names of the failed tests, from libtest's `test NAME ... FAILED` lines.
    pub failed_names: Vec<String>,
}

impl Counts {
    /// Reads one line of libtest output.
    fn add_output_line(&mut self, line: &str) {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failed_names.push(name.to_string());
        }
        let normalised = trimmed.replace("test result: ok. ", "test result: ");
        let normalised = normalised.replace("test result: FAILED. ", "test result: ");
        self.add_line(&normalised);
    }

    /// Adds `other`'s totals and failures to these, naming its failures with `pass`.
    fn absorb(&mut self, other: &Counts, pass: &str) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.failed_names
            .extend(other.failed_names.iter().map(|n| format!("{n} ({pass})")));
    }

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
    let (counts, ok) = run_tests(step, cmd)?;
    if !ok {
        print_failures(&counts);
        bail!("{step} failed");
    }
    Ok(counts)
}

/// Run one test command, echoing its output; returns the counts and whether it succeeded.
fn run_tests(step: &str, cmd: &mut Command) -> anyhow::Result<(Counts, bool)> {
    eprintln!("==> {step}: {cmd:?}");
    let mut child = cmd
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {step}"))?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().context("no pipe from the test run")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        counts.add_output_line(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        eprintln!("==> {step}: {status}");
    }
    Ok((counts, status.success()))
}

fn print_failures(counts: &Counts) {
    if counts.failed_names.is_empty() {
        return;
    }
    eprintln!("==> failed tests:");
    for n in &counts.failed_names {
        eprintln!("      {n}");
    }
}

/// The test targets that store and unpack layers, run a second time with the `vfs` driver:
/// `(package, test target)`.
pub const VFS_TARGETS: &[(&str, &str)] = &[
    ("strata-builder", "suite"),
    ("strata", "build_cli"),
    ("strata", "seed"),
];

/// Cargo's target folder for this workspace.
fn cargo_target_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    if dir.is_relative() {
        workspace_root().join(dir)
    } else {
        dir
    }
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
        Ok(()) => privileged(&mut total)?,
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
            eprintln!("==> nor did the second run with the vfs driver of these test targets:");
            for (package, target) in VFS_TARGETS {
                eprintln!("      {package} --test {target}");
            }
            eprintln!("==> nor the tmux check of the live progress views (cargo xtask tty-check)");
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

/// The root-only part: the whole ignored suite under overlayfs, the storage tests again with
/// vfs, and the tmux check. Prints `N passed, N failed` and the failed tests' names.
fn privileged(total: &mut Counts) -> anyhow::Result<()> {
    // busybox-static makes the base image; skopeo and umoci read what strata writes;
    // docker.io is the Docker interop peer; tmux drives the live-progress check.
    crate::deps::ensure_packages(&[
        "busybox-static",
        "skopeo",
        "umoci",
        "tar",
        "docker-registry",
        "apache2-utils",
        "docker.io",
        "tmux",
    ])?;
    // Build first, outside the namespace, so compile errors read plainly.
    run_step(
        "build privileged suite",
        cargo().args(["test", "--workspace", "--no-run"]),
    )?;
    let mut suite = Counts::default();
    let (overlay, ok) = run_tests(
        "privileged integration suite (root, overlayfs, private mount namespace)",
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(env!("CARGO"))
            .args(["test", "--workspace", "--no-fail-fast", "--", "--ignored"]),
    )?;
    eprintln!(
        "==> integration suite (overlay): {} passed, {} failed",
        overlay.passed, overlay.failed
    );
    suite.absorb(&overlay, "overlay");
    // The Docker interop test passes without checking when dockerd cannot start here; it
    // leaves the reason in cargo's target/tmp.
    let docker_note = cargo_target_dir()
        .join("tmp")
        .join("docker-interop-skipped.txt");
    match std::fs::read_to_string(&docker_note) {
        Ok(why) => eprintln!(
            "==> SKIPPED docker interop (dockerd could not start): {}",
            why.trim()
        ),
        Err(_) => eprintln!("==> docker interop ran against a private dockerd"),
    }
    if !ok && overlay.failed == 0 {
        suite.failed += 1;
        suite
            .failed_names
            .push("the overlay run ended in error before its tests reported".into());
    }

    let mut vfs = Counts::default();
    for (package, target) in VFS_TARGETS {
        let (counts, ok) = run_tests(
            &format!("{package} --test {target} with the vfs storage driver"),
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--"])
                .arg(env!("CARGO"))
                .args(["test", "-p", package, "--test", target, "--no-fail-fast"])
                .args(["--", "--ignored"])
                .env("STRATA_STORAGE_DRIVER", "vfs"),
        )?;
        vfs.absorb(&counts, "vfs");
        if !ok && counts.failed == 0 {
            vfs.failed += 1;
            vfs.failed_names
                .push(format!("{package} --test {target} (vfs) ended in error"));
        }
    }
    eprintln!(
        "==> integration suite (vfs): {} passed, {} failed",
        vfs.passed, vfs.failed
    );
    suite.passed += vfs.passed;
    suite.failed += vfs.failed;
    suite.failed_names.extend(vfs.failed_names);

    let tty = crate::tty_check::run(&crate::tty_check::TtyCheckArgs { keep: false });
    match &tty {
        Ok(()) => suite.passed += 1,
        Err(e) => {
            eprintln!("==> tty check failed: {e:#}");
            suite.failed += 1;
            suite.failed_names.push("cargo xtask tty-check".into());
        }
    }

    eprintln!(
        "==> integration suite: {} passed, {} failed",
        suite.passed, suite.failed
    );
    print_failures(&suite);
    total.passed += suite.passed;
    total.failed += suite.failed;
    if suite.failed > 0 || !suite.failed_names.is_empty() {
        bail!("{} privileged test(s) failed", suite.failed.max(1));
    }
    Ok(())
}
