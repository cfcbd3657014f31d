//! `cargo xtask bench build`: `strata build` (release) on three Dockerfiles, each cold (a
//! fresh store holding only the busybox base), fully cached, and after touching one file of
//! the context; and, when Debian's `dockerd` can be started here, BuildKit on the same
//! Dockerfiles in the same run (peers.md says how), for ratios measured side by side.
//!
//! - `seed`: the seed example (`FROM busybox`, one RUN, CMD);
//! - `3-stage`: three independent stages that each write 50 MB and 5,000 files, and a final
//!   stage that copies the three results (`COPY --from`);
//! - `copy-20k`: `COPY . /app` of a 20,000-file, 200 MB context.
//!
//! Every case runs `--runs` times (default 3) and reports the median wall time of the whole
//! command as a user runs it (process start, context walk, build, export). Cold runs of
//! strata use a fresh store per run (making it is not timed); cold runs of BuildKit use
//! `--no-cache` after the base image is imported. "touch" rewrites one context file with new
//! content (so `copy-20k`'s COPY runs again and the others stay cached).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::deps::ensure_packages;
use crate::shared::workspace_root;

/// Options of `cargo xtask bench build`.
#[derive(Debug, Args)]
pub struct BuildBenchArgs {
    /// Repetitions of every case (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Do not try to start dockerd for the BuildKit comparison.
    #[arg(long)]
    no_docker: bool,
    /// Keep the work folder (under target/bench-build) instead of removing it at the end.
    #[arg(long)]
    keep: bool,
    /// Run only these cases (`seed`, `3-stage`, `copy-20k`; default: all).
    #[arg(long = "case", value_name = "NAME")]
    only: Vec<String>,
}

pub(crate) const SEED: &str = "FROM busybox\nRUN mkdir /opt/ && echo \"base jdk env\" > /opt/env\nCMD [\"cat\",\"/opt/env\"]\n";

pub(crate) fn three_stages() -> String {
    let stage = |name: &str| {
        format!(
            "FROM busybox AS {name}\nRUN mkdir -p /data && cd /data && dd if=/dev/urandom of=big bs=1M count=50 2>/dev/null && \
             for i in $(seq 1 5000); do echo {name} $i > f$i; done\n"
        )
    };
    format!(
        "{}{}{}FROM busybox\nCOPY --from=one /data /one\nCOPY --from=two /data /two\nCOPY --from=three /data /three\n",
        stage("one"),
        stage("two"),
        stage("three")
    )
}

const COPY_20K: &str = "FROM busybox\nCOPY . /app\n";

/// A case: its name, Dockerfile, and a context maker.
struct Case {
    name: &'static str,
    dockerfile: String,
    files: usize,
    file_size: usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "seed",
            dockerfile: SEED.to_string(),
            files: 1,
            file_size: 100,
        },
        Case {
            name: "3-stage",
            dockerfile: three_stages(),
            files: 1,
            file_size: 100,
        },
        Case {
            name: "copy-20k",
            dockerfile: COPY_20K.to_string(),
            files: 20_000,
            file_size: 10_000,
        },
    ]
}

/// Writes `n` files of `size` bytes (distinct content) in 100 folders, plus the Dockerfile.
fn make_context(dir: &Path, case: &Case) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("Dockerfile"), &case.dockerfile)?;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..case.files {
        let sub = dir.join(format!("d{:02}", i % 100));
        fs::create_dir_all(&sub)?;
        let mut data = Vec::with_capacity(case.file_size);
        while data.len() < case.file_size {
            // xorshift: cheap, incompressible enough, deterministic.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.extend_from_slice(&seed.to_le_bytes());
        }
        data.truncate(case.file_size);
        fs::write(sub.join(format!("f{i:05}")), data)?;
    }
    Ok(())
}

/// A fresh strata store holding `busybox:latest` from `tar`.
pub(crate) fn strata_store(strata: &Path, root: &Path, oci: &Path) -> anyhow::Result<()> {
    let out = Command::new(strata)
        .arg("--root")
        .arg(root)
        .args(["load", "-i"])
        .arg(oci)
        .output()?;
    if !out.status.success() {
        bail!(
            "strata load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image ID: ").map(str::to_string))
        .context("strata load printed no image ID")?;
    let out = Command::new(strata)
        .arg("--root")
        .arg(root)
        .args(["tag", &id, "busybox:latest"])
        .output()?;
    if !out.status.success() {
        bail!(
            "strata tag failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// An OCI layout archive of the busybox root filesystem, made with umoci.
pub(crate) fn busybox_oci(work: &Path, rootfs: &Path) -> anyhow::Result<PathBuf> {
    let layout = work.join("busybox-oci");
    let bundle = work.join("busybox-bundle");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("umoci").args(args).output()?;
        if !out.status.success() {
            bail!("umoci {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let l = layout.display().to_string();
    let b = bundle.display().to_string();
    run(&["init", "--layout", &l])?;
    run(&["new", "--image", &format!("{l}:latest")])?;
    run(&["unpack", "--image", &format!("{l}:latest"), &b])?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", rootfs.display()))
        .arg(bundle.join("rootfs"))
        .status()?;
    if !status.success() {
        bail!("cp -a into the bundle failed");
    }
    run(&["repack", "--image", &format!("{l}:latest"), &b])?;
    run(&[
        "config",
        "--image",
        &format!("{l}:latest"),
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ])?;
    let tar = work.join("busybox-oci.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()?;
    if !status.success() {
        bail!("tar of the OCI layout failed");
    }
    Ok(tar)
}

/// Runs `cmd` and returns its wall time; fails when it fails.
fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// cold, cached, touched medians of one tool on one case.
#[derive(Debug, Clone, Copy)]
struct Figures {
    cold: Duration,
    cached: Duration,
    touched: Duration,
}

fn touch(ctx: &Path, round: usize) -> anyhow::Result<()> {
    // New content in one file (a rename-free rewrite, as an editor does).
    let f = ctx.join("d00/f00000");
    fs::write(&f, format!("touched {round} {:?}", Instant::now()))?;
    Ok(())
}

fn strata_case(
    strata: &Path,
    work: &Path,
    oci: &Path,
    case: &Case,
    ctx: &Path,
    runs: usize,
) -> anyhow::Result<Figures> {
    let build = |root: &Path| {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--"])
            .arg(strata)
            .arg("--root")
            .arg(root)
            .args(["build", "-q", "-t", &format!("bench-{}:1", case.name)])
            .arg(ctx)
            .stdout(Stdio::piped());
        c
    };
    let (mut cold, mut cached, mut touched) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let root = work.join(format!("strata-{}-{r}", case.name));
        strata_store(strata, &root, oci)?;
        cold.push(timed(&mut build(&root))?);
        cached.push(timed(&mut build(&root))?);
        touch(ctx, r)?;
        touched.push(timed(&mut build(&root))?);
    }
    Ok(Figures {
        cold: median(cold),
        cached: median(cached),
        touched: median(touched),
    })
}

/// A private dockerd (peers.md), stopped on drop.
pub(crate) struct Dockerd {
    pub(crate) child: Child,
    socket: String,
    /// The exec root (containerd's sockets), removed on drop.
    exec: PathBuf,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.exec);
    }
}

/// A short folder for a dockerd's exec root: containerd puts its sockets there, and a
/// socket path must fit in 108 bytes, which deep work folders do not.
fn short_exec_root() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("sdx-{}-{n}", std::process::id()))
}

pub(crate) fn start_dockerd(work: &Path) -> anyhow::Result<Dockerd> {
    let Some(dockerd) = ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        bail!("dockerd is not installed (Debian's docker.io)");
    };
    let data = work.join("docker-data");
    let exec = short_exec_root();
    fs::create_dir_all(&data)?;
    fs::create_dir_all(&exec)?;
    let socket = work.join("docker.sock").display().to_string();
    let log = fs::File::create(work.join("dockerd.log"))?;
    let child = Command::new(dockerd)
        .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
        .args(["--storage-driver=overlay2", "--data-root"])
        .arg(&data)
        .arg("--exec-root")
        .arg(&exec)
        .arg("--pidfile")
        .arg(work.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{socket}"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd")?;
    let d = Dockerd {
        child,
        socket,
        exec,
    };
    for _ in 0..120 {
        if docker(&d)
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "dockerd did not answer within 60 s (see {})",
        work.join("dockerd.log").display()
    )
}

pub(crate) fn docker(d: &Dockerd) -> Command {
    let mut c = Command::new("/usr/bin/docker");
    c.env("DOCKER_HOST", format!("unix://{}", d.socket))
        .env("DOCKER_BUILDKIT", "1");
    c
}

fn buildkit_case(d: &Dockerd, case: &Case, ctx: &Path, runs: usize) -> anyhow::Result<Figures> {
    let build = |no_cache: bool| {
        let mut c = docker(d);
        c.args([
            "build",
            "-q",
            "--network",
            "host",
            "-t",
            &format!("bench-{}:1", case.name),
        ]);
        if no_cache {
            c.arg("--no-cache");
        }
        c.arg(ctx);
        c
    };
    let (mut cold, mut cached, mut touched) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        cold.push(timed(&mut build(true))?);
        cached.push(timed(&mut build(false))?);
        touch(ctx, 100 + r)?;
        touched.push(timed(&mut build(false))?);
    }
    Ok(Figures {
        cold: median(cold),
        cached: median(cached),
        touched: median(touched),
    })
}

/// Run the build benchmark and print the table.
pub fn run(args: &BuildBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    ensure_packages(&["busybox-static", "umoci", "tar"])?;
    let strata = crate::strata_bin::build_release()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let work = workspace_root().join(format!("target/bench-build/run-{stamp}"));
    fs::create_dir_all(&work)?;
    let rootfs = work.join("busybox-rootfs");
    crate::busybox::rootfs(&rootfs)?;
    let oci = busybox_oci(&work, &rootfs)?;
    // The plain tar, for `docker import`.
    let plain_tar = work.join("busybox.tar");
    crate::busybox::pack(&work, &rootfs, &plain_tar)?;

    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| o == c.name))
        .collect();
    let mut contexts = Vec::new();
    for case in &cases {
        let ctx = work.join(format!("ctx-{}", case.name));
        eprintln!("==> context {} ({} files)", case.name, case.files);
        make_context(&ctx, case)?;
        contexts.push(ctx);
    }
    let mut results: Vec<(String, Figures, Option<Figures>)> = Vec::new();
    for (case, ctx) in cases.iter().zip(&contexts) {
        eprintln!("==> strata: {}", case.name);
        let f = strata_case(&strata, &work, &oci, case, ctx, args.runs)?;
        results.push((case.name.to_string(), f, None));
    }
    if !args.no_docker {
        match start_dockerd(&work) {
            Ok(d) => {
                let import = docker(&d)
                    .args(["import"])
                    .arg(&plain_tar)
                    .arg("busybox:latest")
                    .output()?;
                if !import.status.success() {
                    bail!(
                        "docker import failed: {}",
                        String::from_utf8_lossy(&import.stderr)
                    );
                }
                for ((case, ctx), r) in cases.iter().zip(&contexts).zip(results.iter_mut()) {
                    eprintln!("==> BuildKit: {}", case.name);
                    r.2 = Some(buildkit_case(&d, case, ctx, args.runs)?);
                }
                drop(d);
            }
            Err(e) => eprintln!("BuildKit comparison skipped: {e:#}"),
        }
    }
    println!(
        "\n`strata build` (release) vs BuildKit (Debian docker.io), median of {} runs, seconds:",
        args.runs
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>7} {:>7} {:>7}",
        "case",
        "cold",
        "cached",
        "touch",
        "bk cold",
        "bk cache",
        "bk touch",
        "x cold",
        "x cache",
        "x touch"
    );
    let s = |d: Duration| format!("{:.3}", d.as_secs_f64());
    for (name, f, bk) in &results {
        match bk {
            Some(b) => {
                let x = |ours: Duration, theirs: Duration| {
                    format!("{:.2}", theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9))
                };
                println!(
                    "{name:<10} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>7} {:>7} {:>7}",
                    s(f.cold),
                    s(f.cached),
                    s(f.touched),
                    s(b.cold),
                    s(b.cached),
                    s(b.touched),
                    x(f.cold, b.cold),
                    x(f.cached, b.cached),
                    x(f.touched, b.touched),
                );
            }
            None => println!(
                "{name:<10} {:>9} {:>9} {:>9} | (no BuildKit figures)",
                s(f.cold),
                s(f.cached),
                s(f.touched)
            ),
        }
    }
    println!("x = BuildKit time / strata time (above 1: strata is faster)");
    if !args.keep {
        let _ = fs::remove_dir_all(&work);
    } else {
        eprintln!("work folder kept: {}", work.display());
    }
    Ok(())
}
