//! Helpers: a busybox base image in a fresh store, builds with recorded events, and reading
//! files and history back from images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use strata_builder::exec::CancelToken;
use strata_builder::imageconfig::{edit_exec_config, history_entry, push_history};
use strata_builder::progress::{Event, Reporter, StepId};
use strata_builder::{BuildOptions, BuildResult, Engine, Error};
use strata_overlay::{diff_dirs, write_tar, TarOptions};
use strata_store::{Compression, Image, ImageConfig, Reference};

/// A root filesystem like Docker Hub's busybox: `/bin/busybox` with its applet links, a
/// user database (root, nobody, app 1000:1000 with group staff 50), `/tmp` and `/root`.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("group"),
        "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("root")).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
}

/// A fresh store in a temp dir, holding `busybox:latest` (one layer, `Cmd ["sh"]`).
pub struct TestStore {
    pub _dir: tempfile::TempDir,
    pub engine: Engine,
}

impl TestStore {
    /// With the driver `STRATA_STORAGE_DRIVER` names (`cargo xtask test` runs the suite once
    /// with the default and once with `vfs`), else the default.
    pub fn new() -> TestStore {
        let driver = std::env::var("STRATA_STORAGE_DRIVER")
            .ok()
            .filter(|d| !d.is_empty())
            .map(|d| {
                d.parse::<strata_overlay::Driver>()
                    .expect("STRATA_STORAGE_DRIVER names a driver")
            });
        TestStore::with_driver(driver)
    }

    /// A fresh store whose layers are unpacked with `driver` (`None`: overlay here).
    pub fn with_driver(driver: Option<strata_overlay::Driver>) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("store"), driver).unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        busybox_rootfs(rootfs.path());
        let empty = tempfile::tempdir().unwrap();
        let set = diff_dirs(empty.path(), rootfs.path()).unwrap();
        let mut tar = Vec::new();
        write_tar(
            &set,
            &mut tar,
            &TarOptions {
                clamp_mtime: Some(1_700_000_000),
            },
        )
        .unwrap();
        let mut config = ImageConfig::default();
        let host = strata_builder::platform::Platform::host();
        config
            .oci
            .set_architecture(host.architecture.as_str().into());
        config.oci.set_os(host.os.as_str().into());
        config.oci.set_created(Some("2023-11-14T22:13:20Z".into()));
        edit_exec_config(&mut config, |c| {
            c.set_env(Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]));
            c.set_cmd(Some(vec!["sh".into()]));
        });
        let mut first = history_entry(
            "/bin/sh -c #(nop) ADD file:busybox in / ",
            false,
            Some("2023-11-14T22:13:20Z".into()),
        );
        first.set_comment(None);
        push_history(&mut config, first);
        let mut cmd = history_entry(
            "/bin/sh -c #(nop)  CMD [\"sh\"]",
            true,
            Some("2023-11-14T22:13:20Z".into()),
        );
        cmd.set_comment(None);
        push_history(&mut config, cmd);
        let image = engine
            .store()
            .import(&tar[..], &config, Compression::Zstd)
            .unwrap();
        engine
            .store()
            .tag(&Reference::parse("busybox:latest").unwrap(), &image)
            .unwrap();
        TestStore { _dir: dir, engine }
    }

    /// The store root.
    pub fn root(&self) -> PathBuf {
        self.engine.store().root().to_path_buf()
    }
}

/// A reporter that keeps every event with the time it arrived.
#[derive(Default)]
pub struct Timed {
    pub events: Mutex<Vec<(Instant, Event)>>,
}

impl Reporter for Timed {
    fn report(&self, event: &Event) {
        self.events
            .lock()
            .unwrap()
            .push((Instant::now(), event.clone()));
    }
}

impl Timed {
    pub fn events(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }

    /// `(instruction, HIT|MISS, reason)` per keyed step, in step order.
    pub fn cache_lines(&self) -> Vec<String> {
        let events = self.events();
        let mut names: BTreeMap<StepId, String> = BTreeMap::new();
        let mut out: BTreeMap<StepId, String> = BTreeMap::new();
        for (_, e) in &events {
            match e {
                Event::StepStarted(i) => {
                    names.insert(i.id, i.instruction.clone());
                }
                Event::Cached { step, .. } => {
                    let n = names.get(step).cloned().unwrap_or_default();
                    if !n.starts_with("FROM") {
                        out.insert(*step, format!("HIT  {n}"));
                    }
                }
                Event::CacheMiss { step, reason, .. } => {
                    let n = names.get(step).cloned().unwrap_or_default();
                    out.insert(
                        *step,
                        format!("MISS {n}: {}", reason.clone().unwrap_or_default()),
                    );
                }
                _ => {}
            }
        }
        out.into_values().collect()
    }

    /// Output lines of all steps, in order.
    pub fn output(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Output { line, .. } => Some(String::from_utf8_lossy(&line).into_owned()),
                _ => None,
            })
            .collect()
    }
}

/// A context folder with `files` (path -> content).
pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

/// Builds `dockerfile` in `ctx` with options edited by `edit`.
pub fn build_with(
    engine: &Engine,
    dockerfile: &str,
    ctx: &Path,
    edit: impl FnOnce(&mut BuildOptions),
) -> (Result<BuildResult, Error>, Timed) {
    let mut opts = BuildOptions::new(dockerfile, ctx);
    opts.dockerfile_path = Some(ctx.join("Dockerfile"));
    edit(&mut opts);
    let reporter = Timed::default();
    let cancel = CancelToken::new().unwrap();
    let result = engine.build(&opts, &reporter, &cancel);
    (result, reporter)
}

/// Builds and expects success.
pub fn build_ok(
    engine: &Engine,
    dockerfile: &str,
    ctx: &Path,
    tags: &[&str],
) -> (BuildResult, Timed) {
    let (r, t) = build_with(engine, dockerfile, ctx, |o| {
        o.tags = tags.iter().map(|s| s.to_string()).collect()
    });
    match r {
        Ok(r) => (r, t),
        Err(e) => panic!(
            "build failed: {}\noutput:\n{}",
            strata_builder::error_text(&e),
            t.output().join("\n")
        ),
    }
}

/// The content of `path` in `image`'s filesystem (`None` when missing).
pub fn read_file(engine: &Engine, image: &Image, path: &str) -> Option<Vec<u8>> {
    let top = engine.ensure_unpacked(image).unwrap()?;
    let key = format!("test-view-{}", strata_builder::random_hex());
    let snap = engine.snapshotter().unwrap();
    snap.view(&key, Some(&top)).unwrap();
    let merged = snap.mount(&key).unwrap();
    let out = std::fs::read(merged.join(path.trim_start_matches('/'))).ok();
    snap.unmount(&key).unwrap();
    snap.remove(&key).unwrap();
    out
}

/// Text of `path` in `image`.
pub fn read_text(engine: &Engine, image: &Image, path: &str) -> Option<String> {
    read_file(engine, image, path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `(created_by, empty_layer, layer size)` per history entry, `docker history` order
/// reversed (oldest first).
pub fn history(engine: &Engine, image: &Image) -> Vec<(String, bool, Option<u64>)> {
    let mut layers = image.diff_ids.iter();
    image
        .config_parsed
        .oci
        .history()
        .iter()
        .flatten()
        .map(|h| {
            let empty = h.empty_layer().unwrap_or(false);
            let size = if empty {
                None
            } else {
                layers.next().map(|d| {
                    engine
                        .store()
                        .layer_blobs(d)
                        .unwrap()
                        .first()
                        .map(|l| l.uncompressed_size)
                        .unwrap_or(0)
                })
            };
            (h.created_by().clone().unwrap_or_default(), empty, size)
        })
        .collect()
}

/// Names of the snapshots (all kinds) in the store.
pub fn snapshots(engine: &Engine) -> Vec<String> {
    engine
        .snapshotter()
        .unwrap()
        .walk()
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect()
}
