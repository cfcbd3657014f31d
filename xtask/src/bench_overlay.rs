//! `cargo xtask bench overlay`: the snapshotter's speed, as ratios against yardsticks measured
//! in the same run (the machine drifts ±10-15% between runs).
//!
//! 1. diff + commit of an upper dir with one changed file over a 10,000-file image against the
//!    same over a 10-file image (the diff must cost what changed, not the image);
//! 2. unpack of a 200 MB, 10,000-file layer against `tar -x` of the same tar, each into fresh
//!    folders with nothing deleted in between (ext4 here is slow right after big deletes);
//! 3. mount + unmount of 1, 32 and 128 lower layers (and 128 by each mount strategy).
//!
//! Runs as root in a private mount namespace, in a release build (it re-runs itself so).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use strata_overlay::tar_write::{build_header, EntryKind, HeaderSpec};
use strata_overlay::{Driver, Snapshotter, Strategy, TarOptions, UnpackOptions};

use crate::shared::workspace_root;

const INNER: &str = "STRATA_BENCH_INNER";

/// Entry point: make sure we run optimised, as root, in a private mount namespace.
pub fn run() -> anyhow::Result<()> {
    if std::env::var_os(INNER).is_none() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "-p", "xtask"])
            .current_dir(workspace_root())
            .status()?;
        if !status.success() {
            bail!("release build of xtask failed");
        }
        let exe = workspace_root().join("target/release/xtask");
        let status = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(exe)
            .args(["bench", "overlay"])
            .env(INNER, "1")
            .status()
            .context("running the benchmark under unshare (needs root)")?;
        if !status.success() {
            bail!("benchmark failed ({status})");
        }
        return Ok(());
    }
    let base = workspace_root().join("target/bench-overlay");
    std::fs::create_dir_all(&base)?;
    let work = tempdir_in(&base)?;
    let r = benches(&work);
    let _ = std::fs::remove_dir_all(&work);
    r
}

fn tempdir_in(base: &Path) -> anyhow::Result<PathBuf> {
    let d = base.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn header(path: &str, kind: EntryKind, size: u64) -> Vec<u8> {
    build_header(&HeaderSpec {
        path: path.as_bytes().to_vec(),
        kind,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        size,
        mtime: 1_500_000_000,
        link: Vec::new(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: Vec::new(),
    })
}

/// A layer tar with `files` files of `size` bytes spread over folders of 100.
fn image_tar(out: &mut impl Write, files: usize, size: usize) -> anyhow::Result<()> {
    let mut data = vec![0u8; size];
    let mut seed = 0x1234_5678u32;
    for i in 0..files {
        if i % 100 == 0 {
            out.write_all(&header(&format!("d{:03}/", i / 100), EntryKind::Dir, 0))?;
        }
        for b in data.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        out.write_all(&header(
            &format!("d{:03}/f{i:05}", i / 100),
            EntryKind::File,
            size as u64,
        ))?;
        out.write_all(&data)?;
        out.write_all(&vec![0u8; (512 - size % 512) % 512])?;
    }
    out.write_all(&[0u8; 1024])?;
    Ok(())
}

fn diff_commit(work: &Path, files: usize, driver: Driver, reps: usize) -> anyhow::Result<Duration> {
    let store = work.join(format!("diff-{}-{files}", driver.name()));
    let snap = Snapshotter::open(&store, Some(driver))?;
    let mut tar = Vec::new();
    image_tar(&mut tar, files, 1024)?;
    snap.unpack("image", None, &tar[..], &UnpackOptions::default())?;
    let mut times = Vec::new();
    for r in 0..reps {
        let key = format!("step-{r}");
        snap.prepare(&key, Some("image"))?;
        let root = snap.mount(&key)?;
        std::fs::write(root.join("d000/f00003"), format!("changed {r}"))?;
        snap.unmount(&key)?;
        let t = Instant::now();
        let mut sink = std::io::sink();
        snap.write_layer(&key, &mut sink, &TarOptions::default())?;
        snap.commit(&key, &format!("layer-{r}"))?;
        times.push(t.elapsed());
    }
    Ok(median(times))
}

fn bench_diff(work: &Path) -> anyhow::Result<()> {
    println!("== diff + commit of 1 changed file (median of 15)");
    for driver in [Driver::Overlay, Driver::Vfs] {
        let small = diff_commit(work, 10, driver, 15)?;
        let big = diff_commit(work, 10_000, driver, 15)?;
        println!(
            "   {:<8} 10-file image {:>8.2} ms | 10,000-file image {:>8.2} ms | ratio big/small {:.2}",
            driver.name(),
            ms(small),
            ms(big),
            big.as_secs_f64() / small.as_secs_f64()
        );
    }
    Ok(())
}

fn bench_unpack(work: &Path) -> anyhow::Result<()> {
    let tar_path = work.join("layer.tar");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tar_path)?);
        image_tar(&mut f, 10_000, 20_000)?;
        f.flush()?;
    }
    let size = std::fs::metadata(&tar_path)?.len();
    println!(
        "== unpack of a {} MB, 10,000-file layer (median of 3, fresh folders, no deletes)",
        size / 1_000_000
    );
    let snap = Snapshotter::open(&work.join("unpack-store"), Some(Driver::Overlay))?;
    let mut ours = Vec::new();
    let mut tar_x = Vec::new();
    let mut tar_sync = Vec::new();
    for r in 0..3 {
        let t = Instant::now();
        let f = std::fs::File::open(&tar_path)?;
        snap.unpack(
            &format!("u{r}"),
            None,
            std::io::BufReader::with_capacity(1 << 20, f),
            &UnpackOptions::default(),
        )?;
        ours.push(t.elapsed());
        for (sync, times) in [(false, &mut tar_x), (true, &mut tar_sync)] {
            let dir = work.join(format!("tar-{r}-{sync}"));
            std::fs::create_dir_all(&dir)?;
            let t = Instant::now();
            let st = Command::new("tar")
                .arg("-xf")
                .arg(&tar_path)
                .arg("-C")
                .arg(&dir)
                .status()?;
            if !st.success() {
                bail!("tar -x failed");
            }
            if sync {
                Command::new("sync").arg("-f").arg(&dir).status()?;
            }
            times.push(t.elapsed());
        }
    }
    let (o, x, xs) = (median(ours), median(tar_x), median(tar_sync));
    println!(
        "   strata unpack (syncfs included) {:>8.0} ms | tar -x {:>8.0} ms | tar -x + sync {:>8.0} ms",
        ms(o),
        ms(x),
        ms(xs)
    );
    println!(
        "   ratio strata/tar -x {:.2} | strata/(tar -x + sync) {:.2}",
        o.as_secs_f64() / x.as_secs_f64(),
        o.as_secs_f64() / xs.as_secs_f64()
    );
    Ok(())
}

fn bench_mounts(work: &Path) -> anyhow::Result<()> {
    println!("== mount + unmount of a read-only view (median of 50)");
    let snap = Snapshotter::open(&work.join("mount-store"), Some(Driver::Overlay))?;
    let mut parent: Option<String> = None;
    for i in 0..128 {
        let mut tar = Vec::new();
        tar.extend(header(&format!("f{i}"), EntryKind::File, 0));
        tar.extend([0u8; 1024]);
        let name = format!("l{i:03}");
        snap.unpack(
            &name,
            parent.as_deref(),
            &tar[..],
            &UnpackOptions::default(),
        )?;
        parent = Some(name);
    }
    let target = work.join("mnt");
    std::fs::create_dir_all(&target)?;
    let mut one = None;
    for (lowers, strategy) in [
        (1usize, Strategy::Auto),
        (2, Strategy::Auto),
        (32, Strategy::Auto),
        (128, Strategy::Auto),
        (128, Strategy::NewApi),
        (128, Strategy::Relative),
    ] {
        // A view on layer N has N+1... the view of l{n-1} stacks n lowers.
        let key = format!("v{lowers}-{strategy:?}");
        let mounts = snap.view(&key, Some(&format!("l{:03}", lowers - 1)))?;
        let mut times = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            for m in &mounts {
                m.mount_with(&target, strategy)?;
            }
            strata_overlay::unmount(&target)?;
            times.push(t.elapsed());
        }
        let m = median(times);
        let base = *one.get_or_insert(m);
        println!(
            "   {lowers:>3} lowers ({:<5} {strategy:?}) {:>7.3} ms  ratio to 1 lower {:.2}",
            mounts[0].fs_type,
            ms(m),
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    Ok(())
}

fn benches(work: &Path) -> anyhow::Result<()> {
    bench_diff(work)?;
    bench_mounts(work)?;
    bench_unpack(work)?;
    Ok(())
}
