//! `cargo xtask bench store`: the store's throughput and memory against yardsticks measured
//! in the same run on the same data.
//!
//! On a generated layer tar (1 GiB by default, mixed text/random/sparse content):
//! - uncompressed ingest (hash + durable write) against `openssl dgst -sha256` (SHA-NI);
//! - zstd ingest (diffID + zstd -3 on all cores + blob hash + durable write) against
//!   `zstd -3 -T0`;
//! - `strata save` of a 2-image archive (zstd layers in the store, plain tar in the archive,
//!   both digests verified) against `zstd -dc` of the same blobs into one file + `sync`;
//! - `strata load` of that archive into a fresh store (every blob verified) against
//!   `tar -xf` of it + `sync`.
//!
//! Ratios are yardstick time / our time (1.0 = as fast). Peak memory is the maximum RSS
//! reported by `/usr/bin/time`. The store's own hasher is also timed against openssl to show
//! that sha2 uses SHA-NI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;

use crate::deps::ensure_packages;
use crate::shared::workspace_root;

/// Options of `cargo xtask bench store`.
#[derive(Debug, Args)]
pub struct StoreBenchArgs {
    /// Size of the generated layer in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Keep the work folder (under target/bench-store) instead of removing it at the end.
    #[arg(long)]
    keep: bool,
}

/// Wall time and peak memory of one command.
struct Measured {
    seconds: f64,
    max_rss_kib: u64,
}

fn measure(what: &str, cmd: &[&str], dir: &Path) -> anyhow::Result<Measured> {
    let timing = dir.join(format!("time-{}.txt", what.replace(' ', "-")));
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&timing)
        .args(cmd)
        .current_dir(dir)
        .output()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what}: {cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = fs::read_to_string(&timing)?;
    let last = text.lines().last().unwrap_or_default();
    let mut parts = last.split_whitespace();
    let seconds: f64 = parts.next().unwrap_or("0").parse()?;
    let max_rss_kib: u64 = parts.next().unwrap_or("0").parse()?;
    eprintln!("    {what}: {seconds:.2} s, peak {max_rss_kib} KiB");
    Ok(Measured {
        seconds,
        max_rss_kib,
    })
}

fn cargo_build(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .args(args)
        .current_dir(workspace_root())
        .status()?;
    if !status.success() {
        bail!("cargo build {args:?} failed");
    }
    Ok(())
}

/// Blob files over 1 MiB in a store (the layers).
fn big_blobs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(root.join("blobs/sha256"))? {
        let e = e?;
        if e.metadata()?.len() > 1 << 20 {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Run the store benchmark and print the ratios.
pub fn run(args: &StoreBenchArgs) -> anyhow::Result<()> {
    ensure_packages(&["openssl", "zstd", "time", "tar"])?;
    eprintln!("==> building release binaries");
    cargo_build(&["-p", "strata"])?;
    cargo_build(&["-p", "strata-store", "--example", "store_tool"])?;
    let release = workspace_root().join("target/release");
    let strata = release.join("strata");
    let tool = release.join("examples/store_tool");
    let (strata, tool) = (strata.to_str().unwrap(), tool.to_str().unwrap());

    // A fresh folder; old runs are removed at the end, never right before measuring (on this
    // ext4 with discard, creating files right after a large delete is much slower).
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let dir = workspace_root().join(format!("target/bench-store/run-{stamp}"));
    fs::create_dir_all(&dir)?;
    let mib = args.size_mib.to_string();
    let second_mib = (args.size_mib / 4).max(1).to_string();
    eprintln!(
        "==> generating a {mib} MiB layer and a {second_mib} MiB one in {}",
        dir.display()
    );
    measure("generate", &[tool, "gen", "layer.tar", &mib, "1"], &dir)?;
    measure(
        "generate 2",
        &[tool, "gen", "layer2.tar", &second_mib, "2"],
        &dir,
    )?;
    // Warm the page cache for both sides alike.
    measure("warm", &["cat", "layer.tar", "layer2.tar"], &dir).ok();
    let size = fs::metadata(dir.join("layer.tar"))?.len() as f64;

    eprintln!("==> hashing");
    let openssl = measure(
        "openssl dgst -sha256",
        &["openssl", "dgst", "-sha256", "layer.tar"],
        &dir,
    )?;
    let hasher = measure("store hasher", &[tool, "hash", "layer.tar"], &dir)?;

    eprintln!("==> uncompressed ingest");
    let ingest_none = measure(
        "ingest none",
        &[tool, "ingest", "store-none", "layer.tar", "none"],
        &dir,
    )?;

    eprintln!("==> zstd ingest");
    let zstd_cli = measure(
        "zstd -3 -T0",
        &[
            "zstd",
            "-3",
            "-T0",
            "-q",
            "-f",
            "layer.tar",
            "-o",
            "layer.tar.zst",
        ],
        &dir,
    )?;
    let ingest_zstd = measure(
        "ingest zstd",
        &[tool, "ingest", "store-zstd", "layer.tar", "zstd"],
        &dir,
    )?;

    eprintln!("==> save and load of a 2-image archive");
    measure(
        "import img1",
        &[
            tool,
            "import",
            "store-img",
            "layer.tar",
            "img1:latest",
            "zstd",
        ],
        &dir,
    )?;
    measure(
        "import img2",
        &[
            tool,
            "import",
            "store-img",
            "layer2.tar",
            "img2:latest",
            "zstd",
            "img1:latest",
        ],
        &dir,
    )?;
    let blobs = big_blobs(&dir.join("store-img"))?;
    let blob_args: Vec<String> = blobs.iter().map(|p| p.display().to_string()).collect();
    let yard_save_cmd = format!(
        "zstd -dc {} > yard-save.out && sync yard-save.out",
        blob_args.join(" ")
    );
    let yard_save = measure("zstd -dc + sync", &["sh", "-c", &yard_save_cmd], &dir)?;
    let save = measure(
        "strata save",
        &[
            strata,
            "--root",
            "store-img",
            "save",
            "-o",
            "two.tar",
            "img1",
            "img2",
        ],
        &dir,
    )?;
    let archive = fs::metadata(dir.join("two.tar"))?.len() as f64;
    fs::create_dir_all(dir.join("yard-load"))?;
    let yard_load = measure(
        "tar -xf + sync",
        &[
            "sh",
            "-c",
            "tar -xf two.tar -C yard-load && sync -f yard-load",
        ],
        &dir,
    )?;
    let load = measure(
        "strata load",
        &[strata, "--root", "store-load", "load", "-i", "two.tar"],
        &dir,
    )?;
    let save_zstd = measure(
        "strata save --compression zstd",
        &[
            strata,
            "--root",
            "store-load",
            "save",
            "--compression",
            "zstd",
            "-o",
            "two-zstd.tar",
            "img1",
            "img2",
        ],
        &dir,
    )?;

    let gb = |bytes: f64, m: &Measured| bytes / m.seconds / 1e9;
    let rows = [
        (
            "sha256 (store hasher)",
            &hasher,
            "openssl dgst -sha256",
            &openssl,
            size,
        ),
        (
            "ingest, uncompressed",
            &ingest_none,
            "openssl dgst -sha256",
            &openssl,
            size,
        ),
        ("ingest, zstd", &ingest_zstd, "zstd -3 -T0", &zstd_cli, size),
        (
            "save, 2 images",
            &save,
            "zstd -dc + sync",
            &yard_save,
            archive,
        ),
        (
            "load, 2 images",
            &load,
            "tar -xf + sync",
            &yard_load,
            archive,
        ),
    ];
    println!();
    println!(
        "{:<24} {:>8} {:>9} {:>10}   {:<22} {:>8} {:>7}",
        "store", "seconds", "GB/s", "peak MiB", "yardstick", "seconds", "ratio"
    );
    for (name, ours, yard_name, yard, bytes) in rows {
        println!(
            "{:<24} {:>8.2} {:>9.2} {:>10.1}   {:<22} {:>8.2} {:>7.2}",
            name,
            ours.seconds,
            gb(bytes, ours),
            ours.max_rss_kib as f64 / 1024.0,
            yard_name,
            yard.seconds,
            yard.seconds / ours.seconds
        );
    }
    println!(
        "peak memory: save {:.1} MiB, load {:.1} MiB, save --compression zstd {:.1} MiB (archive {:.2} GB)",
        save.max_rss_kib as f64 / 1024.0,
        load.max_rss_kib as f64 / 1024.0,
        save_zstd.max_rss_kib as f64 / 1024.0,
        archive / 1e9
    );
    if hasher.seconds > openssl.seconds * 1.5 {
        println!("WARNING: the store's sha256 is much slower than openssl's: is SHA-NI in use?");
    }
    if !args.keep {
        fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}
