//! Helpers shared by every CLI integration test: running the built `strata`, one busybox
//! base image made from Debian's busybox-static, a deterministic family of images made
//! through the store API (no builder, no busybox binary) with snapshot filters, temp stores
//! and small layer builders.
//!
//! Each test file includes it with `mod common;` and uses what it needs.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_overlay::{diff_dirs, write_tar, TarOptions};
use strata_store::{Compression, ImageConfig, LayerInfo, Reference, Store};

/// The `strata` binary cargo built for these tests.
pub fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

/// Run `strata --root ROOT ARGS...` and return its output (any exit status), with colour
/// and logging at their defaults for a pipe (so: no colour) and `NO_COLOR` unset. The
/// storage driver is left to `STRATA_STORAGE_DRIVER`, so `cargo xtask test`'s vfs pass
/// reaches the tests that run through here.
pub fn run(root: &Path, args: &[&str]) -> Output {
    strata()
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("STRATA_LOG_LEVEL")
        .output()
        .expect("strata runs")
}

/// Exit code, stdout and stderr as one text, for snapshots.
pub fn transcript(root: &Path, args: &[&str]) -> String {
    let out = run(root, args);
    format!(
        "$ strata {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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

/// Lay out a busybox root filesystem in `dir`: `bin/busybox` and a symlink per applet
/// (`busybox --list`), a user database for root, `/root` and `/tmp`. Returns `false` (and
/// says so) when busybox is not installed.
pub fn busybox_rootfs(dir: &Path) -> bool {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    if std::fs::copy(BUSYBOX, bin.join("busybox")).is_err() {
        eprintln!("SKIPPED: {BUSYBOX} is missing (apt-get install busybox-static)");
        return false;
    }
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    true
}

/// The busybox root filesystem as one uncompressed layer tar, packed by the overlay crate's
/// tar writer as a built layer would be (deterministic: times clamped). `None` (and says so)
/// when busybox is not installed.
pub fn busybox_tar() -> Option<Vec<u8>> {
    let rootfs = temp();
    if !busybox_rootfs(rootfs.path()) {
        return None;
    }
    let empty = temp();
    let set = diff_dirs(empty.path(), rootfs.path()).unwrap();
    let mut tar = Vec::new();
    let options = TarOptions {
        clamp_mtime: Some(1_700_000_000),
    };
    write_tar(&set, &mut tar, &options).unwrap();
    Some(tar)
}

/// A config for a busybox image, for this machine's architecture.
pub fn busybox_config() -> ImageConfig {
    let bytes = br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"strata test: busybox-static rootfs"}]}"#;
    let mut config = ImageConfig::parse(bytes).expect("valid config");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    config.oci.set_architecture(arch.into());
    config
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

/// Makes `busybox:latest` (zstd) in the store at `root`; busybox-static must be installed.
pub fn busybox_base(root: &Path) {
    store_with_busybox(root, Compression::Zstd).expect("busybox-static is installed");
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

/// insta settings: the temp root becomes `[ROOT]`, relative times `N years ago` or `[AGO]`, tag times
/// `[TAG TIME]`. IDs are not filtered: the images are deterministic, and seeing the same
/// layer IDs under different images is the point of several snapshots.
pub fn settings(root: &Path) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(&regex_escape(&root.display().to_string()), "[ROOT]");
    // The fixed 2024 dates read "N years ago" for years to come; keeping the width keeps
    // the columns of the snapshots aligned as the real output is.
    s.add_filter(r"\b\d years ago", "N years ago");
    s.add_filter(
        r"(\d+ (seconds|minutes|hours|days|weeks|months|years)|About an? (minute|hour)|Less than a second|1 second) ago",
        "[AGO]",
    );
    s.add_filter(
        r#""LastTagTime": "[0-9T:Z-]+""#,
        r#""LastTagTime": "[TAG TIME]""#,
    );
    s
}

/// `s` with regex metacharacters escaped.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A deterministic layer tar from `(path, contents)` pairs; paths ending in `/` are folders.
pub fn layer_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, path, std::io::empty()).unwrap();
        } else {
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, path, *data).unwrap();
        }
    }
    tar.into_inner().unwrap()
}

/// Ingest a layer tar (uncompressed, so blob digest = diffID and sizes are exact).
pub fn layer(store: &Store, tar: &[u8]) -> LayerInfo {
    let mut w = store.layer_writer(Compression::None).unwrap();
    w.write_all(tar).unwrap();
    w.finish().unwrap()
}

/// One history entry: `(created_by, empty_layer, created)`.
pub type Step = (String, bool, String);

/// A history entry.
pub fn step(by: &str, empty: bool, created: &str) -> Step {
    (by.to_string(), empty, created.to_string())
}

/// A config created at `created` with BuildKit-style history (`comment:
/// buildkit.dockerfile.v0`) and `cmd`. Entries inherited from a base keep their own
/// times, as a build keeps them.
pub fn config(created: &str, steps: &[Step], cmd: &[&str]) -> ImageConfig {
    let history: Vec<serde_json::Value> = steps
        .iter()
        .map(|(by, empty, at)| {
            let mut h = serde_json::json!({
                "created": at,
                "created_by": by,
                "comment": "buildkit.dockerfile.v0",
            });
            if *empty {
                h["empty_layer"] = serde_json::Value::Bool(true);
            }
            h
        })
        .collect();
    let value = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/",
            "Labels": {"org.example.seed": "layering"},
        },
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": history,
    });
    ImageConfig::parse(&serde_json::to_vec(&value).unwrap()).unwrap()
}

/// The busybox image's history.
pub fn base_steps() -> Vec<Step> {
    vec![
        step("ADD rootfs.tar / # buildkit", false, "2024-01-01T00:00:00Z"),
        step("CMD [\"sh\"]", true, "2024-01-01T00:00:00Z"),
    ]
}

/// The seed family: `busybox:latest` (one layer), `layer-base:v1` built on it (a RUN layer
/// and a CMD), and `layer-urm:v1`, `layer-sso:v1` built on the base (one RUN layer each).
pub struct Seed {
    /// The store.
    pub store: Store,
}

/// Make the seed family in a new store at `root`.
pub fn seed(root: &Path) -> Seed {
    let store = Store::open(root).unwrap();
    let rootfs = layer_tar(&[
        ("bin/", b""),
        ("bin/sh", &[0x7f; 3000][..]),
        ("etc/", b""),
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    ]);
    let busybox = store
        .import(
            &rootfs[..],
            &config("2024-01-01T00:00:00Z", &base_steps(), &["sh"]),
            Compression::None,
        )
        .unwrap();
    store
        .tag(&Reference::parse("busybox:latest").unwrap(), &busybox)
        .unwrap();
    let bb_layer = store.layer_blobs(&busybox.diff_ids[0]).unwrap()[0].clone();

    let env = layer(
        &store,
        &layer_tar(&[("opt/", b""), ("opt/env", b"base jdk env\n")]),
    );
    let mut steps = base_steps();
    steps.push(step(
        "RUN /bin/sh -c mkdir /opt/ && echo \"base jdk env\" > /opt/env # buildkit",
        false,
        "2024-01-02T00:00:00Z",
    ));
    steps.push(step(
        "CMD [\"cat\" \"/opt/env\"]",
        true,
        "2024-01-02T00:00:00Z",
    ));
    let base = store
        .write_image(
            &config("2024-01-02T00:00:00Z", &steps, &["cat", "/opt/env"]),
            &[bb_layer.clone(), env.clone()],
        )
        .unwrap();
    store
        .tag(&Reference::parse("layer-base:v1").unwrap(), &base)
        .unwrap();

    for (name, day) in [("urm", "03"), ("sso", "04")] {
        let text = format!("{name} service startup\n");
        let startup = layer(
            &store,
            &layer_tar(&[("opt/", b""), ("opt/startup", text.as_bytes())]),
        );
        let mut steps = steps.clone();
        let created = format!("2024-01-{day}T00:00:00Z");
        let run = format!(
            "RUN /bin/sh -c echo \"{name} service startup\" > /opt/startup && chmod 0644 /opt/startup # buildkit"
        );
        steps.push(step(&run, false, &created));
        let image = store
            .write_image(
                &config(&created, &steps, &["cat", "/opt/startup"]),
                &[bb_layer.clone(), env.clone(), startup],
            )
            .unwrap();
        store
            .tag(
                &Reference::parse(&format!("layer-{name}:v1")).unwrap(),
                &image,
            )
            .unwrap();
    }
    Seed { store }
}

/// A fresh temp dir and the store root inside it.
pub fn temp_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    (dir, root)
}
