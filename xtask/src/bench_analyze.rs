//! `cargo xtask bench analyze`: `strata analyze` against just reading the same layers.
//!
//! Generates a 1 GiB, 30-layer image (by default) in a fresh store through the store API:
//! zstd layers of many small text-like files and larger text, random and sparse files, with
//! the waste analysis looks for (files deleted and opaque folders hidden by later layers,
//! files rewritten with the same bytes, copies of earlier files). Then, with the page cache
//! warm, in interleaved rounds it times:
//! - `cat` of the layer blobs (reading them),
//! - `zstd -dc` of the layer blobs to /dev/null (reading and decompressing them: the
//!   yardstick "the time it takes to read it"),
//! - `strata analyze` (release build) on all cores, and on one (`RAYON_NUM_THREADS=1`).
//!
//! Medians are reported, with the ratio analyze / `zstd -dc` (1.0 = as fast) and peak memory.
//! Analyze does more than the yardstick per byte: it also checks every blob's digest and
//! diffID and hashes every file (three sha256 passes), and parses every header.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use clap::Args;
use strata_store::{Compression, ImageConfig, Reference, Store};

use crate::deps::ensure_packages;
use crate::shared::workspace_root;

/// Options of `cargo xtask bench analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeBenchArgs {
    /// Total size of the files in the image, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Number of layers.
    #[arg(long, default_value_t = 30)]
    layers: usize,
    /// Rounds of measurements (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Keep the work folder (under target/bench-analyze) instead of removing it at the end.
    #[arg(long)]
    keep: bool,
}

/// Deterministic pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A file's contents are a function of (seed, size): equal pairs make equal bytes.
#[derive(Debug, Clone, Copy)]
struct FileSpec {
    seed: u64,
    size: usize,
}

fn fill(spec: FileSpec, buf: &mut Vec<u8>) {
    const WORDS: [&str; 16] = [
        "lib", "usr", "share", "config", "error", "value", "return", "static", "const", "function",
        "0x00", "mov", "eax", "call", "the", "data",
    ];
    let mut rng = Rng::new(spec.seed);
    buf.clear();
    buf.resize(spec.size, 0);
    match spec.seed % 3 {
        0 => {
            let mut at = 0;
            while at < spec.size {
                let w = WORDS[(rng.next() % 16) as usize].as_bytes();
                let n = w.len().min(spec.size - at);
                buf[at..at + n].copy_from_slice(&w[..n]);
                at += n;
                if at < spec.size {
                    buf[at] = if rng.next() % 8 == 0 { b'\n' } else { b' ' };
                    at += 1;
                }
            }
        }
        1 => {
            for chunk in buf.chunks_mut(8) {
                let v = rng.next().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
        }
        _ => {
            for _ in 0..spec.size / 64 {
                let at = (rng.next() % spec.size as u64) as usize;
                buf[at] = rng.next() as u8;
            }
        }
    }
}

enum Item {
    Dir(String),
    File(String, FileSpec),
    Whiteout(String),
    Opaque(String),
}

/// What each layer holds: new files, plus deletions, rewrites and copies of earlier ones.
fn plan(size_mib: u64, layers: usize) -> Vec<Vec<Item>> {
    let per_layer = (size_mib << 20) / layers.max(1) as u64;
    let mut all: Vec<Vec<Item>> = Vec::new();
    let mut files_of: Vec<Vec<(String, FileSpec)>> = Vec::new();
    for l in 0..layers {
        let mut rng = Rng::new(1000 + l as u64);
        let mut items = vec![Item::Dir(format!("usr/lib/bench/l{l:02}"))];
        let mut mine = Vec::new();
        let mut bytes = 0u64;
        let mut j = 0u64;
        // Many small files (like a package's), then larger ones up to the layer's share.
        while bytes < per_layer {
            let size = if j < 600 {
                512 + (rng.next() % (16 << 10)) as usize
            } else {
                (256 << 10) + (rng.next() % (4 << 20)) as usize
            };
            let size = size.min((per_layer - bytes) as usize).max(1);
            let dir = format!("usr/lib/bench/l{l:02}/d{:02}", j % 16);
            if j < 16 {
                items.push(Item::Dir(dir.clone()));
            }
            let path = format!("{dir}/f{j:05}");
            let spec = FileSpec {
                seed: (l as u64) << 32 | j,
                size,
            };
            items.push(Item::File(path.clone(), spec));
            mine.push((path, spec));
            bytes += size as u64;
            j += 1;
        }
        if l > 0 {
            let prev = &files_of[l - 1];
            match l % 4 {
                // Delete a few files and hide a whole folder of the layer below.
                0 => {
                    for (p, _) in prev.iter().step_by(97).take(5) {
                        items.push(Item::Whiteout(p.clone()));
                    }
                    items.push(Item::Opaque(format!("usr/lib/bench/l{:02}/d07", l - 1)));
                }
                // Rewrite a few files with the same bytes (a chmod).
                1 => {
                    for (p, s) in prev.iter().skip(600).step_by(7).take(3) {
                        items.push(Item::File(p.clone(), *s));
                    }
                }
                // Copy a file of the base layer elsewhere.
                2 => {
                    if let Some((_, s)) = files_of[0].get(600 + l) {
                        items.push(Item::File(format!("opt/copy-{l:02}"), *s));
                    }
                }
                _ => {}
            }
        }
        all.push(items);
        files_of.push(mine);
    }
    all
}

fn write_layer(store: &Store, items: &[Item]) -> anyhow::Result<strata_store::LayerInfo> {
    let w = store.layer_writer(Compression::Zstd)?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, w));
    let mut buf = Vec::new();
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    for item in items {
        match item {
            Item::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755);
                tar.append_data(&mut h, format!("{p}/"), std::io::empty())?;
            }
            Item::File(p, spec) => {
                fill(*spec, &mut buf);
                let mut h = header(tar::EntryType::Regular, buf.len() as u64, 0o644);
                tar.append_data(&mut h, p, &buf[..])?;
            }
            Item::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                let mut h = header(tar::EntryType::Regular, 0, 0o600);
                tar.append_data(&mut h, format!("{dir}/.wh.{name}"), std::io::empty())?;
            }
            Item::Opaque(dir) => {
                let mut h = header(tar::EntryType::Regular, 0, 0o755);
                tar.append_data(&mut h, format!("{dir}/.wh..wh..opq"), std::io::empty())?;
            }
        }
    }
    let w = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(w.finish()?)
}

/// Make the image in a new store at `root` and tag it `bench:analyze`.
fn generate(root: &Path, size_mib: u64, layers: usize) -> anyhow::Result<Vec<PathBuf>> {
    let store = Store::open(root)?;
    let mut infos = Vec::new();
    let mut history = Vec::new();
    for (i, items) in plan(size_mib, layers).iter().enumerate() {
        infos.push(write_layer(&store, items)?);
        history.push(serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": format!("RUN /bin/sh -c install step {i} # buildkit"),
            "comment": "buildkit.dockerfile.v0",
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": history,
    });
    let config = ImageConfig::parse(&serde_json::to_vec(&config)?)?;
    let image = store.write_image(&config, &infos)?;
    store.tag(&Reference::parse("bench:analyze")?, &image)?;
    Ok(infos.iter().map(|l| store.blob_path(&l.digest)).collect())
}

/// Wall time and peak memory of one command.
struct Measured {
    seconds: f64,
    max_rss_kib: u64,
}

fn measure(dir: &Path, cmd: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Measured> {
    let timing = dir.join("time.txt");
    let start = std::time::Instant::now();
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&timing)
        .args(cmd)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("could not run {cmd:?}"))?;
    // Our clock, not time(1)'s 10 ms resolution.
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    let text = fs::read_to_string(&timing)?;
    let last = text.lines().last().unwrap_or_default();
    let max_rss_kib: u64 = last.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok(Measured {
        seconds,
        max_rss_kib,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Set when this benchmark re-runs itself as a release build.
const RELEASE_MARK: &str = "STRATA_BENCH_ANALYZE_RELEASE";

/// Run the benchmark and print the ratios.
pub fn run(args: &AnalyzeBenchArgs) -> anyhow::Result<()> {
    // Generating a gigabyte of layers (content, zstd, sha256) takes minutes in a debug build
    // of xtask and seconds in a release one: run the whole benchmark as a release build.
    if cfg!(debug_assertions) && std::env::var_os(RELEASE_MARK).is_none() {
        eprintln!("==> building xtask in release mode to generate the image quickly");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["run", "--release", "--quiet", "-p", "xtask", "--"])
            .args(["bench", "analyze"])
            .args(["--size-mib", &args.size_mib.to_string()])
            .args(["--layers", &args.layers.to_string()])
            .args(["--rounds", &args.rounds.to_string()])
            .env(RELEASE_MARK, "1")
            .current_dir(workspace_root());
        if args.keep {
            cmd.arg("--keep");
        }
        let status = cmd.status()?;
        if !status.success() {
            bail!("the release build of the benchmark failed: {status}");
        }
        return Ok(());
    }
    ensure_packages(&["zstd", "time"])?;
    eprintln!("==> building the release binary");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "strata"])
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p strata failed");
    }
    let strata = workspace_root().join("target/release/strata");
    let strata = strata.to_str().context("non-UTF-8 target path")?;
    // A fresh folder; old runs are removed at the end, never right before measuring (on this
    // ext4 with discard, creating files right after a large delete is much slower).
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let dir = workspace_root().join(format!("target/bench-analyze/run-{stamp}"));
    fs::create_dir_all(&dir)?;
    let root = dir.join("store");
    eprintln!(
        "==> generating a {} MiB, {}-layer image in {}",
        args.size_mib,
        args.layers,
        root.display()
    );
    let start = std::time::Instant::now();
    let blobs = generate(&root, args.size_mib, args.layers)?;
    eprintln!("    {:.1} s", start.elapsed().as_secs_f64());
    let blob_args: Vec<String> = blobs.iter().map(|p| p.display().to_string()).collect();
    let compressed: u64 = blobs
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let root_s = root.to_str().context("non-UTF-8 store path")?;
    let mut cat = vec!["cat"];
    cat.extend(blob_args.iter().map(String::as_str));
    let mut zstd = vec!["zstd", "-dc", "-q"];
    zstd.extend(blob_args.iter().map(String::as_str));
    let analyze = [strata, "--root", root_s, "analyze", "bench:analyze"];

    // Warm the page cache, and show what is being analysed.
    measure(&dir, &cat, &[])?;
    let report = Command::new(strata)
        .args(["--root", root_s, "analyze", "bench:analyze"])
        .output()?;
    let text = String::from_utf8_lossy(&report.stdout);
    for line in text.lines().take(3) {
        eprintln!("    {line}");
    }

    let (mut t_cat, mut t_zstd, mut t_all, mut t_one) = (vec![], vec![], vec![], vec![]);
    let mut peak = 0;
    for round in 1..=args.rounds.max(1) {
        eprintln!("==> round {round}");
        t_cat.push(measure(&dir, &cat, &[])?.seconds);
        t_zstd.push(measure(&dir, &zstd, &[])?.seconds);
        let m = measure(&dir, &analyze, &[])?;
        peak = peak.max(m.max_rss_kib);
        t_all.push(m.seconds);
        let m = measure(&dir, &analyze, &[("RAYON_NUM_THREADS", "1")])?;
        peak = peak.max(m.max_rss_kib);
        t_one.push(m.seconds);
        eprintln!(
            "    cat {:.2} s, zstd -dc {:.2} s, analyze {:.2} s, analyze (1 thread) {:.2} s",
            t_cat[round - 1],
            t_zstd[round - 1],
            t_all[round - 1],
            t_one[round - 1]
        );
    }
    let (c, z, a, o) = (median(t_cat), median(t_zstd), median(t_all), median(t_one));
    let uncompressed = (args.size_mib << 20) as f64;
    println!();
    println!(
        "image: {} layers, {:.0} MiB of files, {:.0} MiB of zstd blobs",
        args.layers,
        uncompressed / f64::from(1 << 20),
        compressed as f64 / f64::from(1 << 20)
    );
    println!(
        "{:<34} {:>8} {:>12} {:>16}",
        format!("median of {} rounds", args.rounds.max(1)),
        "seconds",
        "MB/s files",
        "vs zstd -dc"
    );
    for (name, t) in [
        ("cat (read the blobs)", c),
        ("zstd -dc (read + decompress)", z),
        ("strata analyze (all cores)", a),
        ("strata analyze (1 thread)", o),
    ] {
        println!(
            "{:<34} {:>8.2} {:>12.0} {:>15.2}x",
            name,
            t,
            uncompressed / t / 1e6,
            t / z
        );
    }
    println!(
        "strata analyze peak memory: {:.1} MiB",
        peak as f64 / 1024.0
    );
    if !args.keep {
        fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}
