//! `cargo xtask bench registry`: `strata push`/`pull` against `skopeo copy` of the same image
//! to and from the same `docker-registry` on 127.0.0.1, in the same run (release build), plus
//! the time of a no-op push of an unchanged image.
//!
//! The image has 3 zstd layers (mixed text, random and sparse content, made by the store's
//! `store_tool` example). Each repetition pushes to fresh repositories and pulls into fresh
//! folders; which tool goes first alternates. skopeo copies to an `oci:` layout, verifying
//! blob digests; strata also decompresses every layer to check its diffID and writes layer
//! records. Ratios are skopeo time / strata time (above 1.0: strata is faster).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::deps::ensure_packages;
use crate::shared::workspace_root;

/// Options of `cargo xtask bench registry`.
#[derive(Debug, Args)]
pub struct RegistryBenchArgs {
    /// Uncompressed MiB of the three layers (their compressed total is printed).
    #[arg(long, value_delimiter = ',', default_value = "256,128,64")]
    layers_mib: Vec<u64>,
    /// Repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Keep the work folder (under target/bench-registry).
    #[arg(long)]
    keep: bool,
}

/// The registry process, killed on drop.
struct Registry {
    child: Child,
    addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> anyhow::Result<Registry> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let storage = dir.join("registry");
    fs::create_dir_all(&storage)?;
    let config = dir.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            storage.display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("registry.log"))?)
        .spawn()
        .context("could not start docker-registry")?;
    let reg = Registry { child, addr };
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(&reg.addr).is_err() {
        if Instant::now() > deadline {
            bail!("docker-registry did not come up on {}", reg.addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(reg)
}

/// Run a command and return its wall time.
fn timed(what: &str, cmd: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("could not run {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn blob_bytes(root: &Path) -> u64 {
    fs::read_dir(root.join("blobs/sha256"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Run the registry benchmark and print the ratios.
pub fn run(args: &RegistryBenchArgs) -> anyhow::Result<()> {
    if args.layers_mib.len() != 3 {
        bail!("--layers-mib takes three sizes");
    }
    ensure_packages(&["docker-registry", "skopeo"])?;
    eprintln!("==> building release binaries");
    for extra in [
        &["-p", "strata"][..],
        &["-p", "strata-store", "--example", "store_tool"],
    ] {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet"])
            .args(extra)
            .current_dir(workspace_root())
            .status()?;
        if !status.success() {
            bail!("cargo build failed");
        }
    }
    let release = workspace_root().join("target/release");
    let strata = release.join("strata");
    let tool = release.join("examples/store_tool");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let dir = workspace_root().join(format!("target/bench-registry/run-{stamp}"));
    fs::create_dir_all(&dir)?;
    let src = dir.join("src");
    let name = "bench/app:v1".to_string();

    eprintln!(
        "==> making a 3-layer zstd image ({:?} MiB uncompressed)",
        args.layers_mib
    );
    let mut base: Option<String> = None;
    for (i, mib) in args.layers_mib.iter().enumerate() {
        let layer = dir.join(format!("layer{i}.tar"));
        timed(
            "generate",
            Command::new(&tool)
                .arg("gen")
                .arg(&layer)
                .arg(mib.to_string())
                .arg((i + 1).to_string()),
        )?;
        let tag = if i == 2 {
            name.clone()
        } else {
            format!("bench/layer:{i}")
        };
        let mut cmd = Command::new(&tool);
        cmd.arg("import")
            .arg(&src)
            .arg(&layer)
            .arg(&tag)
            .arg("zstd");
        if let Some(b) = &base {
            cmd.arg(b);
        }
        timed("import", &mut cmd)?;
        fs::remove_file(&layer)?;
        base = Some(tag);
    }
    let image_bytes = blob_bytes(&src);
    eprintln!(
        "    image blobs: {:.1} MB (all three images' blobs share the layers)",
        image_bytes as f64 / 1e6
    );

    let strata_cmd = |root: &Path| {
        let mut c = Command::new(&strata);
        c.arg("--root").arg(root);
        c
    };
    let oci_src = format!("oci:{}:docker.io/{name}", src.display());
    let (mut s_push, mut k_push, mut s_pull, mut k_pull) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    for rep in 0..args.reps {
        eprintln!("==> repetition {} of {}", rep + 1, args.reps);
        // A fresh registry each time: skopeo remembers where blobs went (and would mount
        // them), and distribution would find them in its storage.
        let reg_dir = dir.join(format!("registry-{rep}"));
        fs::create_dir_all(&reg_dir)?;
        let reg = start_registry(&reg_dir)?;
        let s_dest = format!("{}/strata/app:v1", reg.addr);
        let k_dest = format!("{}/skopeo/app:v1", reg.addr);
        // A fresh repository for each push, and no mount hints from the previous one: every
        // blob goes over the wire, as for skopeo.
        timed(
            "tag",
            Command::new(&tool)
                .arg("tag")
                .arg(&src)
                .arg(&name)
                .arg(&s_dest),
        )?;
        let _ = fs::remove_dir_all(src.join("sources"));
        let push_strata = || {
            timed(
                "strata push",
                strata_cmd(&src).args(["push", "--quiet", &s_dest]),
            )
        };
        let push_skopeo = || {
            timed(
                "skopeo copy (push)",
                Command::new("skopeo").args([
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    &oci_src,
                    &format!("docker://{k_dest}"),
                ]),
            )
        };
        let (sp, kp) = if rep % 2 == 0 {
            let s = push_strata()?;
            (s, push_skopeo()?)
        } else {
            let k = push_skopeo()?;
            (push_strata()?, k)
        };
        s_push.push(sp);
        k_push.push(kp);

        let s_root = dir.join(format!("pull-strata-{rep}"));
        let k_dir = dir.join(format!("pull-skopeo-{rep}"));
        let pull_strata = || {
            timed(
                "strata pull",
                strata_cmd(&s_root).args(["pull", "--quiet", &k_dest]),
            )
        };
        let pull_skopeo = || {
            timed(
                "skopeo copy (pull)",
                Command::new("skopeo").args([
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    &format!("docker://{k_dest}"),
                    &format!("oci:{}:x", k_dir.display()),
                ]),
            )
        };
        let (sl, kl) = if rep % 2 == 1 {
            let s = pull_strata()?;
            (s, pull_skopeo()?)
        } else {
            let k = pull_skopeo()?;
            (pull_strata()?, k)
        };
        s_pull.push(sl);
        k_pull.push(kl);
        eprintln!("    push: strata {sp:.2} s, skopeo {kp:.2} s; pull: strata {sl:.2} s, skopeo {kl:.2} s");
        let _ = fs::remove_dir_all(&s_root);
        let _ = fs::remove_dir_all(&k_dir);
        if rep + 1 < args.reps {
            drop(reg);
            let _ = fs::remove_dir_all(&reg_dir);
        } else {
            last = Some((reg, s_dest));
        }
    }

    eprintln!("==> no-op push of the unchanged image (10 runs)");
    let Some((reg, pushed)) = last else {
        bail!("--reps must be at least 1");
    };
    let mut noop = Vec::new();
    for _ in 0..10 {
        noop.push(timed(
            "no-op push",
            strata_cmd(&src).args(["push", "--quiet", &pushed]),
        )?);
    }
    let noop = median(noop);

    let (sp, kp, sl, kl) = (
        median(s_push),
        median(k_push),
        median(s_pull),
        median(k_pull),
    );
    let mb = image_bytes as f64 / 1e6;
    println!(
        "registry benchmark: 3-layer image, {mb:.1} MB of blobs, docker-registry on {}",
        reg.addr
    );
    println!(
        "  push: strata {sp:.2} s ({:.0} MB/s), skopeo copy {kp:.2} s: ratio {:.2}",
        mb / sp,
        kp / sp
    );
    println!(
        "  pull: strata {sl:.2} s ({:.0} MB/s), skopeo copy {kl:.2} s: ratio {:.2}",
        mb / sl,
        kl / sl
    );
    println!(
        "  no-op push of an unchanged image: {:.1} ms (target < 50 ms)",
        noop * 1000.0
    );
    drop(reg);
    if !args.keep {
        fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}
