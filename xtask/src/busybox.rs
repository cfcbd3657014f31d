//! A busybox base image made locally from Debian's `busybox-static`: no Docker Hub needed.
//!
//! The root filesystem looks like Docker Hub's busybox: `/bin/busybox` and one symlink per
//! applet, a user database, `/tmp` (1777) and `/root`. It is packed with the overlay crate's
//! tar writer (sorted entries, mtimes clamped), so the same busybox gives the same layer.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use strata_overlay::{diff_dirs, write_tar, TarOptions};
use strata_store::{Compression, ImageConfig, Reference, Store};

/// Where Debian's `busybox-static` puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Fills `dir` with the busybox root filesystem.
pub fn rootfs(dir: &Path) -> anyhow::Result<()> {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(BUSYBOX, bin.join("busybox"))
        .with_context(|| format!("copying {BUSYBOX} (Debian package busybox-static)"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list"))?;
    if !list.status.success() {
        bail!("{BUSYBOX} --list failed ({})", list.status);
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", bin.join(applet))?;
        }
    }
    let etc = dir.join("etc");
    fs::create_dir_all(&etc)?;
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    )?;
    fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::create_dir_all(dir.join("root"))?;
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// Writes the busybox root filesystem as a tar file at `out` (built in a folder under
/// `work`), for `strata import` or `docker import`.
pub fn rootfs_tar(work: &Path, out: &Path) -> anyhow::Result<()> {
    let dir = work.join("busybox-rootfs");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    rootfs(&dir)?;
    pack(work, &dir, out)?;
    fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Writes the root filesystem in `dir` as a tar file at `out` (sorted, mtimes clamped),
/// using an empty folder under `work` as the diff's other side.
pub fn pack(work: &Path, dir: &Path, out: &Path) -> anyhow::Result<()> {
    let empty = work.join("busybox-empty");
    fs::create_dir_all(&empty)?;
    let set = diff_dirs(&empty, dir).context("reading the busybox root filesystem")?;
    let mut file = std::io::BufWriter::new(
        fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    write_tar(
        &set,
        &mut file,
        &TarOptions {
            clamp_mtime: Some(1_700_000_000),
        },
    )
    .context("packing the busybox root filesystem")?;
    std::io::Write::flush(&mut file)?;
    fs::remove_dir_all(&empty)?;
    Ok(())
}

/// `linux/<arch>` of this machine in Go's names.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The config of an imported single-layer image running `cmd` by default: what
/// `strata import --change 'CMD [...]'` would write.
fn config(cmd: &str) -> anyhow::Result<ImageConfig> {
    let json = serde_json::json!({
        "architecture": arch(),
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": [cmd],
        },
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "strata import (xtask)"}],
    });
    Ok(ImageConfig::parse(&serde_json::to_vec(&json)?)?)
}

/// Imports the tar at `tar` into `store` as `name`.
pub fn import(store: &Store, tar: &Path, name: &str, cmd: &str) -> anyhow::Result<()> {
    let file = fs::File::open(tar)?;
    let image = store
        .import(
            std::io::BufReader::new(file),
            &config(cmd)?,
            Compression::None,
        )
        .with_context(|| format!("importing {name}"))?;
    store.tag(&Reference::parse(name)?, &image)?;
    Ok(())
}
