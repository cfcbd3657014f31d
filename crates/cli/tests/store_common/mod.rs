//! Helpers shared by the store CLI tests: a busybox base image made from Debian's
//! busybox-static, a store with images in it, and running the built `strata`.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_overlay::{diff_dirs, write_tar, TarOptions};
use strata_store::{Compression, ImageConfig, Reference, Store};

/// The `strata` binary cargo built for these tests.
pub fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

/// Run `strata --root ROOT ARGS...` and return its output (any exit status).
pub fn run(root: &Path, args: &[&str]) -> Output {
    strata()
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("strata runs")
}

/// Run and require success; returns stdout.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let out = run(root, args);
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// A rootfs tar: `bin/busybox` plus a symlink per applet (`busybox --list`), deterministic.
/// Returns `None` (and says so) when busybox is not installed.
pub fn busybox_tar() -> Option<Vec<u8>> {
    let Ok(bin) = std::fs::read(BUSYBOX) else {
        eprintln!("SKIPPED: {BUSYBOX} is missing (apt-get install busybox-static)");
        return None;
    };
    let list = Command::new(BUSYBOX).arg("--list").output().ok()?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    tar.append_data(&mut dir, "bin/", std::io::empty()).unwrap();
    let mut file = tar::Header::new_ustar();
    file.set_mode(0o755);
    file.set_size(bin.len() as u64);
    file.set_mtime(0);
    tar.append_data(&mut file, "bin/busybox", &bin[..]).unwrap();
    for a in &applets {
        let mut link = tar::Header::new_ustar();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_mode(0o777);
        link.set_size(0);
        link.set_mtime(0);
        tar.append_link(&mut link, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    Some(tar.into_inner().unwrap())
}

/// A config for a busybox image.
pub fn busybox_config() -> ImageConfig {
    let bytes = br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"strata test: busybox-static rootfs"}]}"#;
    ImageConfig::parse(bytes).expect("valid config")
}

/// Make `busybox:latest` (and return the store), or `None` without busybox.
pub fn store_with_busybox(root: &Path, compression: Compression) -> Option<Store> {
    let tar = busybox_tar()?;
    let store = Store::open(root).unwrap();
    let image = store
        .import(&tar[..], &busybox_config(), compression)
        .unwrap();
    store
        .tag(&Reference::parse("busybox:latest").unwrap(), &image)
        .unwrap();
    Some(store)
}

/// A deterministic pseudo-random layer tar of about `size` bytes (one file).
pub fn random_layer_tar(seed: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    tar.append_data(&mut h, format!("data/blob-{seed}"), &data[..])
        .unwrap();
    tar.into_inner().unwrap()
}

/// Add an image `name` on top of busybox with one extra layer.
pub fn add_image_on_busybox(store: &Store, name: &str, extra: &[u8], compression: Compression) {
    let base = store.resolve("busybox:latest").unwrap();
    let mut layers = Vec::new();
    for (blob, diff_id) in base.layers.iter().zip(&base.diff_ids) {
        let info = store
            .layer_blobs(diff_id)
            .unwrap()
            .into_iter()
            .find(|l| l.digest == blob.digest)
            .unwrap();
        layers.push(info);
    }
    let mut w = store.layer_writer(compression).unwrap();
    w.write_all(extra).unwrap();
    layers.push(w.finish().unwrap());
    let image = store.write_image(&busybox_config(), &layers).unwrap();
    store.tag(&Reference::parse(name).unwrap(), &image).unwrap();
}

/// A fresh temp folder.
pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `path` as a `&str`.
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A path inside `dir`.
pub fn at(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Makes `busybox:latest` in the store at `root` from Debian's busybox-static: `bin/busybox`
/// and its applet links, a user database, `/tmp` and `/root`, packed by the overlay crate's
/// tar writer as a built layer would be.
pub fn busybox_base(root: &Path) {
    let rootfs = tempfile::tempdir().unwrap();
    let bin = rootfs.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).expect("busybox-static is installed");
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    let etc = rootfs.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
    std::fs::create_dir_all(rootfs.path().join("root")).unwrap();
    std::fs::create_dir_all(rootfs.path().join("tmp")).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let set = diff_dirs(empty.path(), rootfs.path()).unwrap();
    let mut tar = Vec::new();
    let options = TarOptions {
        clamp_mtime: Some(1_700_000_000),
    };
    write_tar(&set, &mut tar, &options).unwrap();
    let mut config = busybox_config();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    config.oci.set_architecture(arch.into());
    let store = Store::open(root).unwrap();
    let image = store.import(&tar[..], &config, Compression::Zstd).unwrap();
    store
        .tag(&Reference::parse("busybox:latest").unwrap(), &image)
        .unwrap();
}
