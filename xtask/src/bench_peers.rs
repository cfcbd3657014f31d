//! `cargo xtask bench peers`: strata against BuildKit (Debian's docker.io, on a private
//! `dockerd`) and buildah on the same machine, in the same run, interleaved run by run.
//!
//! Every tool gets the same busybox base (Debian's busybox-static): `strata load` of an
//! OCI layout made with umoci, `docker import` of the root filesystem tar, `buildah from
//! scratch` + `buildah add` + `buildah commit`. A peer that cannot be started is reported
//! missing, never replaced by anything.
//!
//! Scenarios (issue 9), each as cold (store/cache emptied, base only), warm (everything
//! cached) and one file changed:
//! 1. `seed`: `layer-base:v1`, then `layer-urm:v1` and `layer-sso:v1` on it (one timed
//!    measurement is the three builds); the change edits urm's Dockerfile (its RUN text);
//! 2. `3-stage`: three independent stages that each write 50 MB and 5,000 files, a final
//!    stage that copies from each and then `COPY stamp`; the change rewrites `stamp`. Then
//!    the parallel efficiency: from the base only, each stage alone (`--target`), then the
//!    full build with the stages cached (the final stage alone); efficiency = ideal /
//!    actual with ideal = max(slowest stage, sum of the stages / cores) and actual = cold
//!    build - final stage;
//! 3. `copy-20k`: `COPY . /app` of 20,000 files / 200 MB; the change rewrites one file;
//! 4. `100-run`: 100 RUNs with `COPY stamp` after the 50th; the change rewrites `stamp`;
//! 5. `save-load`: `save` of urm and sso (sharing layer-base) into one archive, `load` of it
//!    into an empty store and into a store that has the base (buildah has no multi-image
//!    save: reported as missing).
//!
//! Per measurement: wall time; bytes written (`write_bytes` of `/proc/self/io`, which takes
//! in reaped children: the tool and everything it ran; for BuildKit the growth of
//! `write_bytes` of `dockerd` and its containerd, where the work happens); peak memory
//! (`/usr/bin/time` max RSS of the tool; for BuildKit `dockerd`'s `VmHWM`, reset before each
//! measurement through `clear_refs`, idle footprint included); disk growth of the tool's
//! storage folder over the cold phase. Physical limits of the machine are measured on the
//! 200 MB context in the same run: `tar -cf`, `tar -xf`, `openssl dgst -sha256`,
//! `zstd -3 -T0`.
//!
//! Results: a Markdown report (`BENCHMARKS.md` at the workspace root unless `--out`) and
//! the raw samples as JSON (`bench/peers.json` unless `--json`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use crate::bench_build::{
    busybox_oci, docker, start_dockerd, strata_store, three_stages, Dockerd, SEED,
};
use crate::deps::ensure_packages;
use crate::shared::workspace_root;

/// Options of `cargo xtask bench peers`.
#[derive(Debug, Args)]
pub struct PeersBenchArgs {
    /// Repetitions of every measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Run only these scenarios (`seed`, `3-stage`, `copy-20k`, `100-run`, `save-load`;
    /// repeatable; `--only` is the same).
    #[arg(long = "scenario", visible_alias = "only", value_name = "NAME")]
    only: Vec<String>,
    /// Leave BuildKit out (reported as missing).
    #[arg(long)]
    no_buildkit: bool,
    /// Leave buildah out (reported as missing).
    #[arg(long)]
    no_buildah: bool,
    /// Where to write the Markdown report (default: BENCHMARKS.md at the workspace root).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to write the JSON results (default: bench/peers.json at the workspace root).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the work folder (under target/bench-peers; it stays mounted).
    #[arg(long)]
    keep: bool,
    /// Measure on the file system of target/ itself rather than on a fresh ext4 file
    /// system with a journal in a loop-mounted image (see `bench_fs`).
    #[arg(long)]
    root_fs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Strata,
    BuildKit,
    Buildah,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Strata => "strata",
            Tool::BuildKit => "BuildKit",
            Tool::Buildah => "buildah",
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    secs: f64,
    written: u64,
    peak_kb: u64,
}

impl Sample {
    /// Several commands measured as one (a scenario made of several builds).
    fn add(self, o: Sample) -> Sample {
        Sample {
            secs: self.secs + o.secs,
            written: self.written + o.written,
            peak_kb: self.peak_kb.max(o.peak_kb),
        }
    }
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn median_u(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// `write_bytes` of `/proc/<pid>/io`.
fn write_bytes(pid: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: ").map(str::to_string))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A field (kB) of `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
            })
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `pid` and its direct children (dockerd and its containerd).
fn with_children(pid: u32) -> Vec<String> {
    let mut out = vec![pid.to_string()];
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(name);
            }
        }
    }
    out
}

/// Writes back every dirty page of the machine before a measurement (not timed).
///
/// A tool that syncs (strata's `syncfs` at each layer commit, buildah's and containerd's
/// `fsync`s) would otherwise also wait for the writeback of whatever the previous tool (or
/// the previous run) left dirty on the same filesystem, so its time would depend on the order
/// of the runs.
fn settle_writeback() -> anyhow::Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` as the tool runs it and measures it; fails when it fails.
fn measure(cmd: &mut Command, daemon: Option<u32>) -> anyhow::Result<Sample> {
    let time_out = tempfile_path("time");
    let mut wrapped = match daemon {
        Some(_) => {
            let mut c = Command::new(cmd.get_program());
            c.args(cmd.get_args());
            c
        }
        None => {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "%M", "-o"])
                .arg(&time_out)
                .arg(cmd.get_program());
            c.args(cmd.get_args());
            c
        }
    };
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    settle_writeback()?;
    let pids = daemon.map(with_children).unwrap_or_default();
    if let Some(pid) = daemon {
        // Resets the peak resident set size (VmHWM) of the daemon.
        let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
    let before: u64 = if daemon.is_some() {
        pids.iter().map(|p| write_bytes(p)).sum()
    } else {
        write_bytes("self")
    };
    let start = Instant::now();
    let out = wrapped
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after: u64 = if daemon.is_some() {
        pids.iter().map(|p| write_bytes(p)).sum()
    } else {
        write_bytes("self")
    };
    let peak_kb = match daemon {
        Some(pid) => status_kb(pid, "VmHWM:"),
        None => fs::read_to_string(&time_out)
            .ok()
            .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0),
    };
    let _ = fs::remove_file(&time_out);
    Ok(Sample {
        secs,
        written: after.saturating_sub(before),
        peak_kb,
    })
}

/// Error texts of peer failures that are races inside the peer, not a verdict on it:
/// buildah re-executes itself from a sealed memfd copy (runc's CVE-2019-5736 guard), and
/// sealing that copy fails now and then with EBUSY.
const TRANSIENT_PEER_ERRORS: [&str; 1] = ["sealing memfd copy: Device or resource busy"];

/// Runs `f`; when a peer (never strata) fails with a known transient error, runs it once
/// more and records that it did (the report lists every retry).
fn retry_transient(
    tool: Tool,
    what: &str,
    retries: &mut Vec<String>,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match f() {
        Err(e)
            if tool != Tool::Strata
                && TRANSIENT_PEER_ERRORS
                    .iter()
                    .any(|t| format!("{e:#}").contains(t)) =>
        {
            let first = TRANSIENT_PEER_ERRORS
                .iter()
                .find(|t| format!("{e:#}").contains(*t))
                .copied()
                .unwrap_or_default();
            eprintln!("    {} failed ({first}); retrying once", tool.name());
            retries.push(format!(
                "{} {what}: retried once after `{first}`",
                tool.name()
            ));
            f()
        }
        other => other,
    }
}

/// A failure in one Markdown line: the command's own error lines (the first line names
/// the command, which is long and says little), at most 300 characters.
fn failure_summary(why: &str) -> String {
    let lines: Vec<&str> = why
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let body = if lines.len() > 1 {
        lines[1..].join(" / ")
    } else {
        lines.join("")
    };
    let mut out: String = body.chars().take(300).collect();
    if body.chars().count() > 300 {
        out.push_str("...");
    }
    out
}

fn tempfile_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "strata-bench-{what}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ))
}

/// Runs a setup command (not measured); fails when it fails.
pub(crate) fn quiet(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Moves `dir` (a store left by a failed attempt that is retried) out of the way under a
/// new name, when it exists. Nothing is deleted while the suite measures: creating files
/// right after a large delete is several times slower on this ext4 (reference notes §11);
/// the whole work folder goes at the end.
fn set_aside(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for n in 1.. {
        let aside = PathBuf::from(format!("{}.aside-{n}", dir.display()));
        if !aside.exists() {
            return fs::rename(dir, &aside)
                .with_context(|| format!("moving {} aside", dir.display()));
        }
    }
    Ok(())
}

/// Lazily unmounts whatever the peers left mounted under `dir` (buildah's overlay homes,
/// dockerd's data roots), deepest first, so that the work folder can go.
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix) && *p != prefix)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// Disk usage in bytes of `dir` (`du -sx`), 0 when missing.
fn disk_usage(dir: &Path) -> u64 {
    Command::new("du")
        .args(["-sx", "--block-size=1"])
        .arg(dir)
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// `n` files of `size` bytes (distinct, incompressible content) in 100 folders.
fn write_files(dir: &Path, n: usize, size: usize) -> anyhow::Result<()> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        let sub = dir.join(format!("d{:02}", i % 100));
        fs::create_dir_all(&sub)?;
        let mut data = Vec::with_capacity(size + 8);
        while data.len() < size {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.extend_from_slice(&seed.to_le_bytes());
        }
        data.truncate(size);
        fs::write(sub.join(format!("f{i:05}")), data)?;
    }
    Ok(())
}

/// A build: a context folder and the tag it is built as.
#[derive(Debug, Clone)]
struct BuildSpec {
    ctx: PathBuf,
    tag: String,
    /// `--target`: build only up to this stage.
    target: Option<String>,
}

/// One scenario: its builds (in order), what "one file changed" does, its phases.
struct Scenario {
    name: &'static str,
    title: &'static str,
    builds: Vec<BuildSpec>,
    change: Box<dyn Fn(usize) -> anyhow::Result<()>>,
}

fn seed_dockerfiles() -> [(&'static str, String); 3] {
    [
        ("layer-base:v1", SEED.to_string()),
        (
            "layer-urm:v1",
            "FROM layer-base:v1\nRUN echo \"urm service startup\" > /opt/startup\nCMD [\"cat\",\"/opt/startup\"]\n".into(),
        ),
        (
            "layer-sso:v1",
            "FROM layer-base:v1\nRUN echo \"sso service startup\" > /opt/sso\nCMD [\"cat\",\"/opt/sso\"]\n".into(),
        ),
    ]
}

fn hundred_runs() -> String {
    let mut s = String::from("FROM busybox\n");
    for i in 1..=100 {
        if i == 51 {
            s.push_str("COPY stamp /stamp\n");
        }
        s.push_str(&format!("RUN echo step {i} > /step{i}\n"));
    }
    s
}

fn scenarios(work: &Path, only: &[String]) -> anyhow::Result<Vec<Scenario>> {
    let want = |n: &str| only.is_empty() || only.iter().any(|o| o == n);
    let mut out = Vec::new();
    if want("seed") || want("save-load") {
        let mut builds = Vec::new();
        for (tag, df) in seed_dockerfiles() {
            let name = tag.split(':').next().unwrap_or(tag);
            let ctx = work.join(format!("ctx-seed-{name}"));
            fs::create_dir_all(&ctx)?;
            fs::write(ctx.join("Dockerfile"), df)?;
            builds.push(BuildSpec {
                ctx,
                tag: tag.into(),
                target: None,
            });
        }
        let urm = builds[1].ctx.join("Dockerfile");
        if want("seed") {
            out.push(Scenario {
                name: "seed",
                title: "1. seed: layer-base:v1, then layer-urm:v1 and layer-sso:v1 on it",
                builds: builds.clone(),
                change: Box::new(move |round| {
                    let df = seed_dockerfiles()[1].1.replace(
                        "urm service startup",
                        &format!("urm service startup {round}"),
                    );
                    Ok(fs::write(&urm, df)?)
                }),
            });
        }
        if want("save-load") {
            out.push(Scenario {
                name: "save-load",
                title: "5. save of layer-urm:v1 + layer-sso:v1 (sharing layer-base:v1), load into an empty store and into one that has the base",
                builds,
                change: Box::new(|_| Ok(())),
            });
        }
    }
    let stamped = |name: &'static str, df: String| -> anyhow::Result<(PathBuf, PathBuf)> {
        let ctx = work.join(format!("ctx-{name}"));
        fs::create_dir_all(&ctx)?;
        fs::write(ctx.join("Dockerfile"), df)?;
        // Never what a change writes: every change is new content (a retried run and the
        // first tool's first run included).
        fs::write(ctx.join("stamp"), "initial\n")?;
        let stamp = ctx.join("stamp");
        Ok((ctx, stamp))
    };
    if want("3-stage") {
        let (ctx, stamp) = stamped("3-stage", format!("{}COPY stamp /stamp\n", three_stages()))?;
        out.push(Scenario {
            name: "3-stage",
            title: "2. three independent stages (50 MB + 5,000 files each), a final stage copying from each",
            builds: vec![BuildSpec {
                ctx,
                tag: "bench-3-stage:1".into(),
                target: None,
            }],
            change: Box::new(move |round| {
                Ok(fs::write(&stamp, format!("change {round} {:?}\n", Instant::now()))?)
            }),
        });
    }
    if want("copy-20k") {
        let ctx = work.join("ctx-copy-20k");
        fs::create_dir_all(&ctx)?;
        fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /app\n")?;
        eprintln!("==> writing the 20,000-file, 200 MB context");
        write_files(&ctx, 20_000, 10_000)?;
        let file = ctx.join("d00/f00000");
        out.push(Scenario {
            name: "copy-20k",
            title: "3. COPY . /app of a 20,000-file, 200 MB context",
            builds: vec![BuildSpec {
                ctx,
                tag: "bench-copy-20k:1".into(),
                target: None,
            }],
            change: Box::new(move |round| {
                Ok(fs::write(
                    &file,
                    format!("changed {round} {:?}", Instant::now()),
                )?)
            }),
        });
    }
    if want("100-run") {
        let (ctx, stamp) = stamped("100-run", hundred_runs())?;
        out.push(Scenario {
            name: "100-run",
            title: "4. 100 RUN steps (COPY stamp after the 50th)",
            builds: vec![BuildSpec {
                ctx,
                tag: "bench-100-run:1".into(),
                target: None,
            }],
            change: Box::new(move |round| {
                Ok(fs::write(
                    &stamp,
                    format!("change {round} {:?}\n", Instant::now()),
                )?)
            }),
        });
    }
    // In the issue's order (the titles are numbered).
    out.sort_by(|a, b| a.title.cmp(b.title));
    Ok(out)
}

/// What every tool needs to be driven.
struct Env {
    strata: PathBuf,
    work: PathBuf,
    oci: PathBuf,
    rootfs_tar: PathBuf,
    /// The running dockerd; `reset` replaces it with one on a fresh data root.
    dockerd: RefCell<Option<Dockerd>>,
    buildah: bool,
}

impl Env {
    fn strata_root(&self, scenario: &str, run: usize) -> PathBuf {
        self.work.join(format!("strata-{scenario}-{run}"))
    }

    /// The folder of the dockerd that serves one scenario run (data and exec roots, socket).
    fn docker_dir(&self, scenario: &str, run: usize) -> PathBuf {
        self.work.join(format!("docker-{scenario}-{run}"))
    }

    fn buildah_root(&self, scenario: &str, run: usize) -> (PathBuf, PathBuf) {
        (
            self.work.join(format!("buildah-{scenario}-{run}")),
            self.work.join(format!("buildah-run-{scenario}-{run}")),
        )
    }

    fn buildah(&self, scenario: &str, run: usize) -> Command {
        let (root, runroot) = self.buildah_root(scenario, run);
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(root)
            .arg("--runroot")
            .arg(runroot)
            .args(["--storage-driver", "overlay"])
            .env("BUILDAH_ISOLATION", "chroot")
            .env("DOCKER_CONFIG", self.work.join("docker-config"));
        c
    }

    fn strata(&self, root: &Path) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--"])
            .arg(&self.strata)
            .arg("--root")
            .arg(root);
        c
    }

    /// The tool's storage folder (for disk growth).
    fn storage(&self, tool: Tool, scenario: &str, run: usize) -> PathBuf {
        match tool {
            Tool::Strata => self.strata_root(scenario, run),
            Tool::BuildKit => self.docker_dir(scenario, run).join("docker-data"),
            Tool::Buildah => self.buildah_root(scenario, run).0,
        }
    }

    /// Empties the tool's store and cache down to the busybox base (not measured).
    fn reset(&self, tool: Tool, scenario: &str, run: usize) -> anyhow::Result<()> {
        match tool {
            Tool::Strata => {
                let root = self.strata_root(scenario, run);
                set_aside(&root)?;
                strata_store(&self.strata, &root, &self.oci)
            }
            Tool::BuildKit => {
                // A new dockerd on a fresh data root rather than `rmi` + `builder prune`:
                // nothing is deleted while the suite measures (creating files right after a
                // large delete is several times slower on this ext4, reference notes §11).
                let mut slot = self.dockerd.borrow_mut();
                drop(slot.take());
                *slot = Some(start_dockerd(&self.docker_dir(scenario, run))?);
                let d = slot.as_ref().context("no dockerd")?;
                quiet(
                    docker(d)
                        .arg("import")
                        .arg(&self.rootfs_tar)
                        .arg("busybox:latest"),
                )?;
                Ok(())
            }
            Tool::Buildah => {
                let (root, runroot) = self.buildah_root(scenario, run);
                set_aside(&root)?;
                set_aside(&runroot)?;
                let ctr = quiet(self.buildah(scenario, run).args(["from", "scratch"]))?;
                let ctr = ctr.trim().to_string();
                quiet(
                    self.buildah(scenario, run)
                        .args(["add", &ctr])
                        .arg(&self.rootfs_tar)
                        .arg("/"),
                )?;
                quiet(self.buildah(scenario, run).args([
                    "config",
                    "--cmd",
                    "sh",
                    "--env",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    &ctr,
                ]))?;
                quiet(self.buildah(scenario, run).args([
                    "commit",
                    "-q",
                    &ctr,
                    "docker.io/library/busybox:latest",
                ]))?;
                quiet(self.buildah(scenario, run).args(["rm", &ctr]))?;
                Ok(())
            }
        }
    }

    fn remove_buildah(&self, scenario: &str, run: usize) {
        let (root, runroot) = self.buildah_root(scenario, run);
        if root.exists() {
            let _ = quiet(self.buildah(scenario, run).args(["rm", "--all"]));
            let _ = quiet(self.buildah(scenario, run).args(["rmi", "--all", "-f"]));
        }
        let _ = fs::remove_dir_all(root);
        let _ = fs::remove_dir_all(runroot);
    }

    /// The command building `b` with `tool`.
    fn build_cmd(&self, tool: Tool, scenario: &str, run: usize, b: &BuildSpec) -> Command {
        match tool {
            Tool::Strata => {
                let mut c = self.strata(&self.strata_root(scenario, run));
                c.args(["build", "-q", "-t", &b.tag]);
                c.args(target_args(b)).arg(&b.ctx);
                c
            }
            Tool::BuildKit => {
                let d = self.dockerd.borrow().as_ref().map(docker);
                let mut c = d.unwrap_or_else(|| Command::new("false"));
                c.args(["build", "-q", "--network", "host", "-t", &b.tag])
                    .args(target_args(b))
                    .arg(&b.ctx);
                c
            }
            Tool::Buildah => {
                let mut c = self.buildah(scenario, run);
                c.args([
                    "build",
                    "-q",
                    "--layers",
                    "--isolation",
                    "chroot",
                    "--jobs",
                    "3",
                    "-t",
                    &b.tag,
                ])
                .args(target_args(b))
                .arg(&b.ctx);
                c
            }
        }
    }

    fn daemon(&self, tool: Tool) -> Option<u32> {
        match tool {
            Tool::BuildKit => self.dockerd.borrow().as_ref().map(|d| d.child.id()),
            _ => None,
        }
    }

    fn build_all(
        &self,
        tool: Tool,
        scenario: &str,
        run: usize,
        builds: &[BuildSpec],
    ) -> anyhow::Result<Sample> {
        let mut total = Sample::default();
        for b in builds {
            let s = measure(
                &mut self.build_cmd(tool, scenario, run, b),
                self.daemon(tool),
            )?;
            total = total.add(s);
        }
        Ok(total)
    }
}

/// Samples by scenario, phase and tool.
type Results = BTreeMap<String, BTreeMap<String, BTreeMap<Tool, Vec<Sample>>>>;

const BUILD_PHASES: [&str; 3] = ["cold", "warm", "one file changed"];
const SAVE_PHASES: [&str; 3] = ["save", "load into empty store", "load into store with base"];

/// cold / warm / one file changed of one tool on one scenario; disk growth over the cold
/// build.
fn build_scenario(
    env: &Env,
    tool: Tool,
    sc: &Scenario,
    run: usize,
    results: &mut Results,
    disk: &mut BTreeMap<(String, Tool), Vec<u64>>,
) -> anyhow::Result<()> {
    env.reset(tool, sc.name, run)?;
    let storage = env.storage(tool, sc.name, run);
    let before = disk_usage(&storage);
    let cold = env.build_all(tool, sc.name, run, &sc.builds)?;
    let grown = disk_usage(&storage).saturating_sub(before);
    let warm = env.build_all(tool, sc.name, run, &sc.builds)?;
    (sc.change)(run * 10 + tool as usize)?;
    let changed = env.build_all(tool, sc.name, run, &sc.builds)?;
    // Recorded only once every phase ran, so that a retried run counts once.
    disk.entry((sc.name.to_string(), tool))
        .or_default()
        .push(grown);
    let phases = results.entry(sc.name.to_string()).or_default();
    for (phase, s) in BUILD_PHASES.iter().zip([cold, warm, changed]) {
        phases
            .entry(phase.to_string())
            .or_default()
            .entry(tool)
            .or_default()
            .push(s);
    }
    Ok(())
}

/// `--target` arguments of a build (none without a target).
fn target_args(b: &BuildSpec) -> Vec<String> {
    b.target
        .iter()
        .flat_map(|t| ["--target".to_string(), t.clone()])
        .collect()
}

/// The stages of `3-stage`, each built alone in the parallel-efficiency measurement.
const STAGES: [&str; 3] = ["one", "two", "three"];

/// The phase holding the time of `stage` built alone, cold.
fn stage_phase(stage: &str) -> String {
    format!("stage {stage} alone")
}

/// The phase holding the time of the final stage alone (its three stages cached).
const FINAL_PHASE: &str = "final stage (stages cached)";

/// Parallel efficiency of `3-stage`: from the base only, each stage alone, cold
/// (`--target one`, then `two`, then `three`: the stages share nothing but the base, so each
/// build is cold for its own stage), then the full build with the three stages cached: the
/// final stage's own time.
fn stage_efficiency(
    env: &Env,
    tool: Tool,
    sc: &Scenario,
    run: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    // A store of its own: deleting the cold build's store right before would slow the
    // file creation measured here (ext4 here skips recently freed inodes one by one).
    let key = stages_key(sc.name);
    env.reset(tool, &key, run)?;
    let full = sc.builds.first().context("3-stage has no build")?;
    let phases = results.entry(sc.name.to_string()).or_default();
    for stage in STAGES {
        let alone = BuildSpec {
            target: Some(stage.to_string()),
            tag: format!("bench-3-stage-{stage}:1"),
            ..full.clone()
        };
        let s = measure(
            &mut env.build_cmd(tool, &key, run, &alone),
            env.daemon(tool),
        )?;
        phases
            .entry(stage_phase(stage))
            .or_default()
            .entry(tool)
            .or_default()
            .push(s);
    }
    let last = measure(&mut env.build_cmd(tool, &key, run, full), env.daemon(tool))?;
    phases
        .entry(FINAL_PHASE.to_string())
        .or_default()
        .entry(tool)
        .or_default()
        .push(last);
    Ok(())
}

/// The storage key (strata store, buildah root) of the stages-alone measurement.
fn stages_key(scenario: &str) -> String {
    format!("{scenario}-stages")
}

/// Parallel efficiency from medians (seconds): `ideal / actual`, where ideal = max(slowest
/// stage alone, sum of the stages alone / cores) and actual = cold build - final stage.
/// `None` when a figure is missing or the actual time is not positive.
fn efficiency(alone: &[f64], cold: f64, last: f64, cores: usize) -> Option<(f64, f64, f64)> {
    if alone.is_empty() || alone.iter().any(|t| !t.is_finite()) || cores == 0 {
        return None;
    }
    let slowest = alone.iter().copied().fold(0.0, f64::max);
    let ideal = slowest.max(alone.iter().sum::<f64>() / cores as f64);
    let actual = cold - last;
    if !actual.is_finite() || actual <= 0.0 {
        return None;
    }
    Some((ideal, actual, ideal / actual))
}

/// save / load into empty / load with base, for strata and BuildKit; returns the archive
/// size.
fn save_load_scenario(
    env: &Env,
    tool: Tool,
    sc: &Scenario,
    run: usize,
    results: &mut Results,
) -> anyhow::Result<u64> {
    let archive = env.work.join(format!("archive-{}-{run}.tar", tool.name()));
    let _ = fs::remove_file(&archive);
    env.reset(tool, sc.name, run)?;
    env.build_all(tool, sc.name, run, &sc.builds)?;
    let images = ["layer-urm:v1", "layer-sso:v1"];
    let (save, empty, with_base) = match tool {
        Tool::Strata => {
            let root = env.strata_root(sc.name, run);
            let save = measure(
                env.strata(&root)
                    .arg("save")
                    .arg("-o")
                    .arg(&archive)
                    .args(images),
                None,
            )?;
            let empty_root = env.work.join(format!("strata-empty-{run}"));
            let _ = fs::remove_dir_all(&empty_root);
            fs::create_dir_all(&empty_root)?;
            let empty = measure(
                env.strata(&empty_root).arg("load").arg("-i").arg(&archive),
                None,
            )?;
            let _ = fs::remove_dir_all(&empty_root);
            // A store with busybox and layer-base:v1 only.
            let base_root = env.work.join(format!("strata-base-{run}"));
            let _ = fs::remove_dir_all(&base_root);
            strata_store(&env.strata, &base_root, &env.oci)?;
            quiet(
                env.strata(&base_root)
                    .args(["build", "-q", "-t", &sc.builds[0].tag])
                    .arg(&sc.builds[0].ctx),
            )?;
            let with_base = measure(
                env.strata(&base_root).arg("load").arg("-i").arg(&archive),
                None,
            )?;
            let _ = fs::remove_dir_all(&base_root);
            (save, empty, with_base)
        }
        Tool::BuildKit => {
            let slot = env.dockerd.borrow();
            let d = slot.as_ref().context("no dockerd")?;
            let pid = env.daemon(tool);
            let save = measure(
                docker(d).arg("save").arg("-o").arg(&archive).args(images),
                pid,
            )?;
            // Empty: every image removed.
            let ids = quiet(docker(d).args(["images", "-q", "--no-trunc"]))?;
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let _ = quiet(docker(d).args(["rmi", "-f", id]));
            }
            quiet(docker(d).args(["builder", "prune", "-af"]))?;
            let empty = measure(docker(d).arg("load").arg("-i").arg(&archive), pid)?;
            // With the base: urm and sso removed, layer-base:v1 kept.
            quiet(docker(d).args(["rmi", "-f"]).args(images))?;
            let with_base = measure(docker(d).arg("load").arg("-i").arg(&archive), pid)?;
            (save, empty, with_base)
        }
        Tool::Buildah => bail!("buildah has no multi-image save"),
    };
    let size = fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    let _ = fs::remove_file(&archive);
    let phases = results.entry(sc.name.to_string()).or_default();
    for (phase, s) in SAVE_PHASES.iter().zip([save, empty, with_base]) {
        phases
            .entry(phase.to_string())
            .or_default()
            .entry(tool)
            .or_default()
            .push(s);
    }
    Ok(size)
}

/// The machine's own speed on the 200 MB context: seconds of each yardstick.
fn physical_limits(work: &Path, ctx: &Path, runs: usize) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        // Fresh names every run: nothing is deleted between repetitions (see `set_aside`).
        let tar = work.join(format!("limits-ctx-{run}.tar"));
        let out = work.join(format!("limits-x-{run}"));
        let mut time = |name: &str, cmd: &mut Command| -> anyhow::Result<()> {
            settle_writeback()?;
            let start = Instant::now();
            quiet(cmd.stdout(Stdio::null()))?;
            samples
                .entry(name.to_string())
                .or_default()
                .push(start.elapsed().as_secs_f64());
            Ok(())
        };
        time(
            "tar -cf (context)",
            Command::new("tar")
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(ctx)
                .arg("."),
        )?;
        fs::create_dir_all(&out)?;
        time(
            "tar -xf (context)",
            Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&out),
        )?;
        time(
            "openssl dgst -sha256",
            Command::new("openssl").args(["dgst", "-sha256"]).arg(&tar),
        )?;
        time(
            "zstd -3 -T0",
            Command::new("zstd")
                .args(["-3", "-T0", "-q", "-c"])
                .arg(&tar),
        )?;
    }
    Ok(samples.into_iter().map(|(k, v)| (k, median_f(v))).collect())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn version_of(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn secs(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.2}")
    }
}

fn mb(v: u64) -> String {
    format!("{:.1}", v as f64 / 1e6)
}

/// Run the peers benchmark, write the report and the JSON.
pub fn run(args: &PeersBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let started = Instant::now();
    let load_start = load_average();
    ensure_packages(&["busybox-static", "umoci", "tar", "time", "zstd", "openssl"])?;
    let strata = crate::strata_bin::build_release()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let work = workspace_root().join(format!("target/bench-peers/run-{stamp}"));
    let scratch = if args.root_fs {
        fs::create_dir_all(&work)?;
        None
    } else {
        let parent = work.parent().context("work folder has no parent")?;
        fs::create_dir_all(parent)?;
        // Three quarters of the free space, at most 64 GiB (a sparse image: only what the
        // suite writes is used).
        let size = (crate::bench_fs::available_bytes(parent)? / 4 * 3).min(64 << 30);
        let image = parent.join(format!("run-{stamp}.ext4"));
        let s = crate::bench_fs::ScratchFs::create(&image, &work, size)?;
        eprintln!("==> measuring on {}", s.describe());
        Some(s)
    };
    let fs_condition = match &scratch {
        Some(s) => format!(
            "{}, mounted for this run only: the VM's root ext4 has no journal, and there ext4 \
             checks every inode freed in the last minutes one by one before it hands one out, \
             so every tool's file creation slowed run after run with the deletes of all of \
             them (`--root-fs` measures there anyway)",
            s.describe()
        ),
        None => "the file system of target/ itself (`--root-fs`)".to_string(),
    };
    let rootfs = work.join("busybox-rootfs");
    crate::busybox::rootfs(&rootfs)?;
    let oci = busybox_oci(&work, &rootfs)?;
    // The plain tar, for `docker import`.
    let rootfs_tar = work.join("busybox.tar");
    crate::busybox::pack(&work, &rootfs, &rootfs_tar)?;
    fs::create_dir_all(work.join("docker-config"))?;
    fs::write(work.join("docker-config/config.json"), "{}")?;

    let mut missing: BTreeMap<Tool, String> = BTreeMap::new();
    let dockerd = if args.no_buildkit {
        missing.insert(Tool::BuildKit, "left out (--no-buildkit)".into());
        None
    } else {
        match start_dockerd(&work) {
            Ok(d) => Some(d),
            Err(e) => {
                missing.insert(
                    Tool::BuildKit,
                    format!("dockerd could not be started: {e:#}"),
                );
                None
            }
        }
    };
    let buildah = if args.no_buildah {
        missing.insert(Tool::Buildah, "left out (--no-buildah)".into());
        false
    } else if Command::new("buildah")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        true
    } else {
        missing.insert(Tool::Buildah, "buildah is not installed".into());
        false
    };
    let env = Env {
        strata: strata.clone(),
        work: work.clone(),
        oci,
        rootfs_tar,
        dockerd: RefCell::new(dockerd),
        buildah,
    };
    let mut tools = vec![Tool::Strata];
    if env.dockerd.borrow().is_some() {
        tools.push(Tool::BuildKit);
    }
    if env.buildah {
        tools.push(Tool::Buildah);
    }
    let versions = json!({
        "strata": version_of(Command::new(&strata).arg("--version")),
        "docker": version_of(Command::new("/usr/bin/docker").arg("--version")),
        "buildah": version_of(Command::new("buildah").arg("--version")),
        "kernel": version_of(Command::new("uname").arg("-r")),
    });

    let scs = scenarios(&work, &args.only)?;
    let mut results: Results = BTreeMap::new();
    let mut disk: BTreeMap<(String, Tool), Vec<u64>> = BTreeMap::new();
    let mut archive: BTreeMap<Tool, Vec<u64>> = BTreeMap::new();
    let mut scenario_missing: BTreeMap<(String, Tool), String> = BTreeMap::new();
    let mut loads: Vec<(String, String)> = Vec::new();
    let mut retries: Vec<String> = Vec::new();
    for sc in &scs {
        for run in 0..args.runs {
            loads.push((format!("{} run {}", sc.name, run + 1), load_average()));
            for &tool in &tools {
                if scenario_missing.contains_key(&(sc.name.to_string(), tool)) {
                    continue;
                }
                eprintln!(
                    "==> {} run {}/{}: {}",
                    sc.name,
                    run + 1,
                    args.runs,
                    tool.name()
                );
                let what = format!("{} run {}", sc.name, run + 1);
                let outcome = if sc.name == "save-load" {
                    if tool == Tool::Buildah {
                        Err(anyhow::anyhow!(
                            "buildah 1.28 has no multi-image save (podman save -m has)"
                        ))
                    } else {
                        save_load_scenario(&env, tool, sc, run, &mut results)
                            .map(|size| archive.entry(tool).or_default().push(size))
                    }
                } else {
                    retry_transient(tool, &what, &mut retries, || {
                        build_scenario(&env, tool, sc, run, &mut results, &mut disk)
                    })
                    .and_then(|()| {
                        if sc.name == "3-stage" {
                            retry_transient(tool, &what, &mut retries, || {
                                stage_efficiency(&env, tool, sc, run, &mut results)
                            })
                        } else {
                            Ok(())
                        }
                    })
                };
                if let Err(e) = outcome {
                    eprintln!("    {} failed: {e:#}", tool.name());
                    scenario_missing.insert((sc.name.to_string(), tool), format!("{e:#}"));
                }
            }
        }
    }
    let limits = scs
        .iter()
        .find(|s| s.name == "copy-20k")
        .map(|s| physical_limits(&work, &s.builds[0].ctx, args.runs))
        .transpose()?
        .unwrap_or_default();
    let load_end = load_average();
    // Only now, with everything measured: buildah's roots need buildah to let go of them.
    if env.buildah {
        for sc in &scs {
            for run in 0..args.runs {
                for key in [sc.name.to_string(), stages_key(sc.name)] {
                    env.remove_buildah(&key, run);
                }
            }
        }
    }
    drop(env);
    unmount_under(&work);
    let elapsed = started.elapsed().as_secs_f64();

    // ---- report ----
    let mut md = String::new();
    let date = version_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    md.push_str("# Benchmarks: strata against BuildKit and buildah\n\n");
    md.push_str(&format!(
        "Written by `cargo xtask bench peers --runs {}` ({date}, {:.0} s in all). Peers and strata run \
         on the same machine in the same run, interleaved run by run; every figure is the median of \
         {} runs. Absolute times depend on the machine; the ratios are the result (ratio = strata / \
         peer: below 1, strata is faster).\n\n",
        args.runs, elapsed, args.runs
    ));
    md.push_str("## Conditions\n\n");
    md.push_str(&format!(
        "- load average (1/5/15 min) at start: {load_start}; at end: {load_end}; per scenario run: {}\n",
        loads.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")
    ));
    if !retries.is_empty() {
        md.push_str(&format!(
            "- peer runs retried after a transient failure inside the peer: {}\n",
            retries.join("; ")
        ));
    }
    md.push_str(&format!(
        "- {} cores; kernel {}; {}; {}; {}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        versions["kernel"].as_str().unwrap_or(""),
        versions["strata"].as_str().unwrap_or(""),
        versions["docker"].as_str().unwrap_or(""),
        versions["buildah"].as_str().unwrap_or("")
    ));
    md.push_str(
        "- BuildKit: Debian's dockerd on a private socket and data root (`--iptables=false \
         --bridge=none`, overlay2), `DOCKER_BUILDKIT=1 docker build --network host`; cold = a \
         new dockerd on a fresh data root, then `docker import` of the base.\n\
         - buildah: `buildah build --layers --isolation chroot --jobs 3`, overlay driver, its own \
         storage root per run; cold = a fresh root with the base committed from scratch.\n\
         - strata: `strata build` (release build), a fresh store per run holding the base; cold = \
         that fresh store.\n\
         - Same busybox base everywhere (Debian busybox-static).\n\
         - Before every measured command, `sync` (not timed): no tool waits for the writeback \
         of what another left dirty.\n\
         - The suite itself deletes nothing while it measures (every run of every tool gets \
         fresh folders; all go at the end). buildah removes its intermediate containers as it \
         goes, as it does by default (`--rm=false` would leave each one mounted, and thousands \
         of mounts slow every tool's mounts and namespaces).\n\
         - Bytes written: `write_bytes` of the tool and everything it ran (for BuildKit: of \
         dockerd and containerd, where the work happens). Peak memory: max RSS of the tool from \
         `/usr/bin/time` (for BuildKit: dockerd's VmHWM, reset before each measurement, its idle \
         footprint included). Disk: growth of the tool's storage folder over the cold phase.\n",
    );
    md.push_str(&format!("- File system: {fs_condition}.\n"));
    for (tool, why) in &missing {
        md.push_str(&format!("- **{} missing**: {why}\n", tool.name()));
    }
    md.push('\n');
    let ratio = |a: f64, b: f64| {
        if a.is_nan() || b.is_nan() || b <= 0.0 {
            "-".to_string()
        } else {
            format!("{:.2}", a / b)
        }
    };
    let mut summary: Vec<String> = Vec::new();
    for sc in &scs {
        md.push_str(&format!("## {}\n\n", sc.title));
        let phases: &[&str] = if sc.name == "save-load" {
            &SAVE_PHASES
        } else {
            &BUILD_PHASES
        };
        let peers: Vec<Tool> = tools
            .iter()
            .copied()
            .filter(|t| *t != Tool::Strata)
            .collect();
        md.push_str("| seconds (median) | strata |");
        for p in &peers {
            md.push_str(&format!(" {} |", p.name()));
        }
        for p in &peers {
            md.push_str(&format!(" strata/{} |", p.name()));
        }
        md.push_str("\n|---|---:|");
        for _ in 0..peers.len() * 2 {
            md.push_str("---:|");
        }
        md.push('\n');
        let get = |phase: &str, tool: Tool| -> Option<Vec<Sample>> {
            results.get(sc.name)?.get(phase)?.get(&tool).cloned()
        };
        let med = |phase: &str, tool: Tool| -> f64 {
            get(phase, tool).map_or(f64::NAN, |v| median_f(v.iter().map(|s| s.secs).collect()))
        };
        for phase in phases {
            let ours = med(phase, Tool::Strata);
            md.push_str(&format!("| {phase} | {} |", secs(ours)));
            for p in &peers {
                md.push_str(&format!(" {} |", secs(med(phase, *p))));
            }
            for p in &peers {
                let r = ratio(ours, med(phase, *p));
                md.push_str(&format!(" {r} |"));
                summary.push(format!("{} {phase}: strata/{} = {r}", sc.name, p.name()));
            }
            md.push('\n');
        }
        md.push('\n');
        // Resources.
        let res_phase = phases[if sc.name == "save-load" { 1 } else { 0 }];
        md.push_str(&format!(
            "| resources ({res_phase}, median) | strata |{}\n|---|---:|{}\n",
            peers
                .iter()
                .map(|p| format!(" {} |", p.name()))
                .collect::<String>(),
            "---:|".repeat(peers.len())
        ));
        let mut row = |label: &str, f: &dyn Fn(Tool) -> String| {
            md.push_str(&format!("| {label} | {} |", f(Tool::Strata)));
            for p in &peers {
                md.push_str(&format!(" {} |", f(*p)));
            }
            md.push('\n');
        };
        row("bytes written (MB)", &|t| {
            get(res_phase, t).map_or("-".into(), |v| {
                mb(median_u(v.iter().map(|s| s.written).collect()))
            })
        });
        row("peak memory (MB)", &|t| {
            get(res_phase, t).map_or("-".into(), |v| {
                mb(median_u(v.iter().map(|s| s.peak_kb * 1024).collect()))
            })
        });
        if sc.name == "save-load" {
            row("archive size (MB)", &|t| {
                archive
                    .get(&t)
                    .map_or("-".into(), |v| mb(median_u(v.clone())))
            });
        } else {
            row("disk growth, cold (MB)", &|t| {
                disk.get(&(sc.name.to_string(), t))
                    .map_or("-".into(), |v| mb(median_u(v.clone())))
            });
        }
        md.push('\n');
        for ((name, tool), why) in &scenario_missing {
            if name == sc.name {
                md.push_str(&format!(
                    "- **{} missing here**: {}\n",
                    tool.name(),
                    failure_summary(why)
                ));
            }
        }
        if sc.name == "3-stage" {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            md.push_str(&format!(
                "\nParallel efficiency (medians, seconds; {cores} cores): each stage built alone, \
                 cold (`--target one|two|three` from the base only), and the final stage alone \
                 (the full build once the three stages are cached). ideal = max(slowest stage \
                 alone, sum of the stages alone / {cores}); actual = cold build - final stage; \
                 efficiency = ideal / actual (1 = the stages take no longer together than the \
                 cores allow; the target is above 0.8).\n\n\
                 | tool | stage one | stage two | stage three | final stage | ideal | cold | actual | efficiency |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            ));
            for &tool in &tools {
                let alone: Vec<f64> = STAGES
                    .iter()
                    .map(|st| med(&stage_phase(st), tool))
                    .collect();
                let last = med(FINAL_PHASE, tool);
                let cold = med("cold", tool);
                let (ideal, actual, eff) = match efficiency(&alone, cold, last, cores) {
                    Some((i, a, e)) => (secs(i), secs(a), format!("{e:.2}")),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {ideal} | {} | {actual} | {eff} |\n",
                    tool.name(),
                    secs(alone[0]),
                    secs(alone[1]),
                    secs(alone[2]),
                    secs(last),
                    secs(cold),
                ));
                if tool == Tool::Strata || eff != "-" {
                    summary.push(format!(
                        "3-stage parallel efficiency: {} = {eff}",
                        tool.name()
                    ));
                }
            }
        }
        if sc.name == "copy-20k" && !limits.is_empty() {
            md.push_str("\nPhysical limits on the same 200 MB context, same run (median seconds), and strata's cold and one-file figures as multiples of them:\n\n| yardstick | seconds | MB/s | strata cold / it | strata one file / it |\n|---|---:|---:|---:|---:|\n");
            let cold = med("cold", Tool::Strata);
            let touched = med("one file changed", Tool::Strata);
            for (name, s) in &limits {
                md.push_str(&format!(
                    "| {name} | {} | {:.0} | {} | {} |\n",
                    secs(*s),
                    200.0 / s,
                    ratio(cold, *s),
                    ratio(touched, *s)
                ));
            }
        }
        md.push('\n');
    }
    md.push_str(&format!(
        "## Ratios in one line each\n\n{}\n",
        summary
            .iter()
            .map(|s| format!("- {s}\n"))
            .collect::<String>()
    ));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("BENCHMARKS.md"));
    // Keep a hand-written closing section (after this marker) across reruns.
    const NOTES: &str = "<!-- notes: kept by cargo xtask bench peers -->";
    let notes = fs::read_to_string(&out)
        .ok()
        .and_then(|s| s.find(NOTES).map(|i| s[i..].to_string()))
        .unwrap_or_else(|| format!("{NOTES}\n"));
    md.push('\n');
    md.push_str(&notes);
    fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    print!("{md}");

    let sample_json =
        |s: &Sample| json!({"secs": s.secs, "written_bytes": s.written, "peak_kb": s.peak_kb});
    let mut jr = serde_json::Map::new();
    for (sc, phases) in &results {
        let mut jp = serde_json::Map::new();
        for (phase, tools) in phases {
            let mut jt = serde_json::Map::new();
            for (tool, v) in tools {
                jt.insert(
                    tool.name().into(),
                    json!({
                        "median_secs": median_f(v.iter().map(|s| s.secs).collect()),
                        "samples": v.iter().map(sample_json).collect::<Vec<_>>(),
                    }),
                );
            }
            jp.insert(phase.clone(), serde_json::Value::Object(jt));
        }
        jr.insert(sc.clone(), serde_json::Value::Object(jp));
    }
    let doc = json!({
        "runs": args.runs,
        "elapsed_secs": elapsed,
        "load_average": {"start": load_start, "end": load_end, "per_run": loads},
        "versions": versions,
        "missing": missing.iter().map(|(t, w)| (t.name().to_string(), w.clone())).collect::<BTreeMap<_, _>>(),
        "retries": retries,
        "scenario_missing": scenario_missing.iter().map(|((s, t), w)| format!("{s}/{}: {w}", t.name())).collect::<Vec<_>>(),
        "results": jr,
        "disk_growth_bytes": disk.iter().map(|((s, t), v)| (format!("{s}/{}", t.name()), v.clone())).collect::<BTreeMap<_, _>>(),
        "archive_bytes": archive.iter().map(|(t, v)| (t.name().to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        "physical_limits_secs": limits,
    });
    let json_out = args
        .json
        .clone()
        .unwrap_or_else(|| workspace_root().join("bench/peers.json"));
    if let Some(dir) = json_out.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&json_out, serde_json::to_vec_pretty(&doc)?)?;
    eprintln!(
        "report: {}; data: {}; took {:.0} s",
        out.display(),
        json_out.display(),
        elapsed
    );
    if args.keep {
        eprintln!("work folder kept: {}", work.display());
        std::mem::forget(scratch);
    } else if scratch.is_none() {
        let _ = fs::remove_dir_all(&work);
    } else {
        drop(scratch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_takes_the_cores_or_the_slowest_stage_as_ideal() {
        // Three 1 s stages on 2 cores: ideal 1.5 s; cold 4 s with a 1 s final stage: 3 s.
        let (ideal, actual, eff) = efficiency(&[1.0, 1.0, 1.0], 4.0, 1.0, 2).unwrap();
        assert_eq!((ideal, actual), (1.5, 3.0));
        assert!((eff - 0.5).abs() < 1e-9);
        // One long stage dominates: ideal is the slowest stage.
        let (ideal, _, eff) = efficiency(&[3.0, 0.5, 0.5], 4.0, 1.0, 2).unwrap();
        assert_eq!(ideal, 3.0);
        assert!((eff - 1.0).abs() < 1e-9);
    }

    #[test]
    fn efficiency_is_missing_without_figures() {
        assert!(efficiency(&[1.0, f64::NAN, 1.0], 4.0, 1.0, 2).is_none());
        assert!(efficiency(&[1.0, 1.0, 1.0], 1.0, 1.0, 2).is_none());
        assert!(efficiency(&[], 4.0, 1.0, 2).is_none());
        assert!(efficiency(&[1.0], f64::NAN, 1.0, 2).is_none());
    }
}
