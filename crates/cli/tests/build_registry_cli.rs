//! `strata build` with registries: the shared build cache (`--cache-to` / `--cache-from`,
//! through a real `docker-registry` on 127.0.0.1 and through an OCI layout folder), `FROM`
//! of an image missing from the store (pulled), `--pull` (a re-pushed tag is picked up), and
//! cache exports that fail (a warning, in bounded time). A "second machine" is a fresh store.
//! Builds need root and overlayfs: every test is privileged.

mod common;
#[path = "../../store/tests/registry_common/mod.rs"]
mod registry_common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::temp;
use registry_common::{Registry, Setup};
use strata_store::registry::{Client, ClientOptions, Event as RegistryEvent};
use strata_store::{Compression, FsckOptions, Reference, Store};

/// A store at `root` holding `busybox:latest` (zstd); `None` without busybox.
fn store_with_busybox(root: &Path) -> Option<Store> {
    common::store_with_busybox(root, Compression::Zstd)
}

/// `strata --root ROOT ARGS...`, with a private (empty) Docker config.
fn strata(root: &Path, args: &[&str]) -> Output {
    common::strata()
        .arg("--root")
        .arg(root)
        .args(args)
        .env("DOCKER_CONFIG", root.with_extension("docker"))
        .env_remove("NO_COLOR")
        .env_remove("STRATA_STORAGE_DRIVER")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("strata runs")
}

/// Runs and requires success; returns stdout and stderr together (progress is on stderr).
fn ok(root: &Path, args: &[&str]) -> String {
    let out = strata(root, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "strata {args:?} failed:\n{text}");
    text
}

/// A build context holding `Dockerfile` and `a.txt`.
fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("a.txt"), "from the context\n").unwrap();
    ctx
}

/// Two stages: the first makes a 3 MB file the result never holds.
fn two_stages(base: &str) -> String {
    format!(
        "FROM {base} AS build\n\
         RUN head -c 3000000 /dev/urandom > /big && echo built > /out\n\
         COPY a.txt /a.txt\n\
         FROM {base}\n\
         COPY --from=build /out /out\n\
         COPY a.txt /copied\n\
         RUN cat /out /copied > /both\n"
    )
}

/// Steps of [`two_stages`] (`FROM`s included), as progress numbers them.
const TWO_STAGE_STEPS: usize = 7;

/// Builds `ctx` in `root` as `tag` with `extra` options; returns the image ID and the output.
fn build(root: &Path, ctx: &Path, tag: &str, extra: &[&str]) -> (String, String) {
    let iid = root.with_extension("iid");
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--iidfile",
        iid.to_str().unwrap(),
        "-t",
        tag,
    ];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = ok(root, &args);
    let id = std::fs::read_to_string(&iid).unwrap().trim().to_string();
    (id, out)
}

fn cached_steps(out: &str) -> usize {
    out.lines()
        .filter(|l| l.starts_with('#') && l.ends_with(" CACHED"))
        .count()
}

/// A store with busybox pushed to `reg` as `<reg>/base/busybox:1`; returns that name.
fn push_base(reg: &Registry, root: &Path) -> Option<String> {
    store_with_busybox(root)?;
    let name = format!("{}/base/busybox:1", reg.addr);
    ok(root, &["tag", "busybox:latest", &name]);
    ok(root, &["push", &name]);
    Some(name)
}

/// The layers of the manifest `reference` names in the registry, largest first.
fn remote_layers(reference: &str) -> Vec<(String, u64)> {
    let client = Client::new(ClientOptions::default());
    let quiet = |_: RegistryEvent| {};
    let m = client
        .fetch_manifest(&Reference::parse(reference).unwrap(), &quiet)
        .unwrap()
        .expect("the cache manifest is there");
    let mut layers: Vec<(String, u64)> = m
        .layers
        .iter()
        .map(|l| (l.digest.to_string(), l.size))
        .collect();
    layers.sort_by_key(|l| std::cmp::Reverse(l.1));
    layers
}

fn fsck_clean(root: &Path) {
    let report = Store::open(root)
        .unwrap()
        .fsck(FsckOptions::default())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
#[ignore = "privileged: needs root, overlayfs and docker-registry (run by cargo xtask test)"]
fn cache_to_a_registry_then_a_fresh_store_hits_every_step() {
    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    let tmp = temp();
    let first = tmp.path().join("first");
    let Some(base) = push_base(&reg, &first) else {
        return;
    };
    let ctx = context(tmp.path(), &two_stages(&base));
    let cache = format!("{}/team/app:cache", reg.addr);
    let started = Instant::now();
    let (cold_id, out) = build(
        &first,
        &ctx,
        "app:1",
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    let cold = started.elapsed();
    assert!(out.contains(&format!("exported cache to {cache}")), "{out}");

    // The cache is an OCI image manifest whose layers are the blobs, the big one included.
    let layers = remote_layers(&cache);
    assert_eq!(
        layers.len(),
        5,
        "one per step that made a layer: {layers:?}"
    );
    let (big, big_size) = layers[0].clone();
    assert!(big_size > 2_000_000, "{layers:?}");

    // A second machine: an empty store, the same files in another folder. FROM pulls the
    // base; every step hits.
    let second = tmp.path().join("second");
    let ctx = context(&tmp.path().join("elsewhere"), &two_stages(&base));
    let before = reg.requests().len();
    let started = Instant::now();
    let (id, out) = build(
        &second,
        &ctx,
        "app:1",
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    let warm = started.elapsed();
    eprintln!(
        "cold build with --cache-to: {:.2}s; fresh store with --cache-from: {:.2}s",
        cold.as_secs_f64(),
        warm.as_secs_f64()
    );
    assert_eq!(id, cold_id, "same inputs, same image ID");
    assert!(out.contains(&format!("pulled {base}")), "{out}");
    assert!(!out.contains("cache miss"), "{out}");
    assert_eq!(cached_steps(&out), TWO_STAGE_STEPS, "{out}");
    // Only the layers the result holds came down; the build stage's 3 MB never did.
    let requests = reg.requests()[before..].to_vec();
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET") && r.contains(&big)),
        "{requests:#?}"
    );
    let store = Store::open(&second).unwrap();
    assert!(!store.has_blob(&strata_store::Digest::parse(&big).unwrap()));
    let image = store.resolve("app:1").unwrap();
    for layer in &image.layers {
        assert!(store.has_blob(&layer.digest), "{layer:?}");
    }
    drop(store);
    fsck_clean(&second);

    // The hits whose layers came down became local records: without the source, the
    // result's steps hit again; the build stage's, whose layers never came, run.
    let (again, out) = build(&second, &ctx, "app:1", &[]);
    assert_eq!(again, cold_id);
    let misses = out.lines().filter(|l| l.contains("cache miss")).count();
    assert_eq!(misses, 2, "{out}");
    assert_eq!(cached_steps(&out), TWO_STAGE_STEPS - 2, "{out}");

    // An image that was there all along runs: its files are complete.
    let (_, out) = build(
        &second,
        &context(
            &tmp.path().join("check"),
            "FROM app:1\nRUN test \"$(cat /both)\" = \"$(printf 'built\\nfrom the context')\"\n",
        ),
        "check:1",
        &[],
    );
    assert!(out.contains("cache miss"), "{out}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_local_cache_folder_round_trips_and_min_leaves_intermediate_stages_out() {
    let tmp = temp();
    let first = tmp.path().join("first");
    if store_with_busybox(&first).is_none() {
        return;
    }
    let ctx = context(tmp.path(), &two_stages("busybox:latest"));
    let max_dir = tmp.path().join("cache-max");
    let min_dir = tmp.path().join("cache-min");
    let (cold_id, out) = build(
        &first,
        &ctx,
        "app:1",
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", max_dir.display()),
            "--cache-to",
            &format!("type=local,dest={}", min_dir.display()),
        ],
    );
    assert!(out.contains("exported cache to"), "{out}");
    // Each folder is an OCI layout whose index tags the cache manifest.
    for dir in [&max_dir, &min_dir] {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
        assert!(dir.join("oci-layout").exists());
    }

    let second = tmp.path().join("second");
    store_with_busybox(&second).unwrap();
    let (id, out) = build(
        &second,
        &ctx,
        "app:1",
        &[
            "--cache-from",
            &format!("type=local,src={}", max_dir.display()),
        ],
    );
    assert_eq!(id, cold_id);
    assert!(!out.contains("cache miss"), "{out}");
    assert_eq!(cached_steps(&out), TWO_STAGE_STEPS, "{out}");
    fsck_clean(&second);

    // mode=min holds the result's steps only: the build stage runs again, and its output
    // being the same, the result's steps still hit.
    let third = tmp.path().join("third");
    store_with_busybox(&third).unwrap();
    let (id, out) = build(
        &third,
        &ctx,
        "app:1",
        &[
            "--cache-from",
            &format!("type=local,src={}", min_dir.display()),
        ],
    );
    assert_eq!(id, cold_id);
    let misses = out.lines().filter(|l| l.contains("cache miss")).count();
    assert_eq!(misses, 2, "the build stage's RUN and COPY: {out}");
    assert_eq!(cached_steps(&out), TWO_STAGE_STEPS - 2, "{out}");
}

/// A TCP server that accepts connections and never answers.
fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    addr
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_failed_cache_export_is_a_warning_and_its_time_is_bounded() {
    let tmp = temp();
    let root = tmp.path().join("store");
    if store_with_busybox(&root).is_none() {
        return;
    }
    let ctx = context(tmp.path(), "FROM busybox:latest\nRUN echo x > /x\n");
    // Nobody listens: the registry is down.
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let started = Instant::now();
    let (id, out) = build(
        &root,
        &ctx,
        "app:1",
        &[
            "--cache-from",
            &format!("type=registry,ref={down}/app:cache"),
            "--cache-to",
            &format!("type=registry,ref={down}/app:cache"),
        ],
    );
    let took = started.elapsed();
    assert!(
        out.contains(&format!(
            "WARN: cannot read the cache {down}/app:cache, building without it"
        )),
        "{out}"
    );
    // Reading retries twice (0.75 s of backoff), the export three times (1.75 s).
    assert!(took < Duration::from_secs(20), "{took:?}\n{out}");
    assert!(
        out.contains(&format!(
            "WARN: the build cache was not exported to {down}/app:cache"
        )),
        "{out}"
    );
    assert_eq!(
        Store::open(&root)
            .unwrap()
            .resolve("app:1")
            .unwrap()
            .id()
            .to_string(),
        id
    );

    // A registry that accepts and never answers: the export gives up after its timeout.
    let silent = silent_server();
    let started = Instant::now();
    let (_, out) = build(
        &root,
        &ctx,
        "app:2",
        &[
            "--cache-to",
            &format!("type=registry,ref={silent}/app:cache,timeout=2s"),
        ],
    );
    let took = started.elapsed();
    assert!(out.contains("did not finish within 2s"), "{out}");
    assert!(took < Duration::from_secs(15), "{took:?}\n{out}");
    fsck_clean(&root);
}

#[test]
#[ignore = "privileged: needs root, overlayfs and docker-registry (run by cargo xtask test)"]
fn from_pulls_a_missing_image_and_pull_picks_up_a_re_pushed_tag() {
    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    let tmp = temp();
    let publisher = tmp.path().join("publisher");
    let Some(base) = push_base(&reg, &publisher) else {
        return;
    };
    let ctx = context(tmp.path(), &format!("FROM {base}\nRUN echo hi > /hi\n"));
    let user = tmp.path().join("user");
    let (first, out) = build(&user, &ctx, "app:1", &[]);
    assert!(out.contains(&format!("pulling {base}")), "{out}");
    assert!(out.contains(&format!("pulled {base}")), "{out}");
    fsck_clean(&user);

    // The publisher moves the tag to a new image.
    let v2 = context(
        &tmp.path().join("v2"),
        &format!("FROM {base}\nRUN echo 2 > /version\n"),
    );
    build(&publisher, &v2, &base, &[]);
    ok(&publisher, &["push", &base]);

    // Without --pull the image in the store is used as it is.
    let (same, out) = build(&user, &ctx, "app:1", &[]);
    assert_eq!(same, first);
    assert!(!out.contains("pulling"), "{out}");

    // --pull checks the tag and takes the new image; the RUN step misses for it.
    let (moved, out) = build(&user, &ctx, "app:1", &["--pull"]);
    assert_ne!(moved, first);
    assert!(out.contains(&format!("pulled {base}")), "{out}");
    assert!(out.contains("cache miss: the base image"), "{out}");

    // The tag did not move again: nothing to download, every step hits.
    let (again, out) = build(&user, &ctx, "app:1", &["--pull"]);
    assert_eq!(again, moved);
    assert!(out.contains(&format!("{base} is up to date")), "{out}");
    assert!(!out.contains("cache miss"), "{out}");
    fsck_clean(&user);
}

/// `strata login` for `root`'s Docker config, the password on standard input.
fn login(root: &Path, registry_args: &[&str], registry: &str) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = common::strata()
        .arg("--root")
        .arg(root)
        .arg("login")
        .args(registry_args)
        .args(["-u", registry_common::USER, "--password-stdin", registry])
        .env("DOCKER_CONFIG", root.with_extension("docker"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", registry_common::PASSWORD).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "privileged: needs root, overlayfs and docker-registry (run by cargo xtask test)"]
fn pulls_and_the_shared_cache_go_through_basic_auth_over_tls() {
    let Some(reg) = Registry::start(Setup {
        auth: true,
        tls: true,
        ..Setup::default()
    }) else {
        return;
    };
    let tmp = temp();
    let cert_dir = reg.cert_dir.clone().unwrap();
    let verify = ["--tls-verify", "--cert-dir", cert_dir.to_str().unwrap()];
    let first = tmp.path().join("first");
    if store_with_busybox(&first).is_none() {
        return;
    }
    login(&first, &verify, &reg.addr);
    let base = format!("{}/base/busybox:1", reg.addr);
    ok(&first, &["tag", "busybox:latest", &base]);
    let mut push = vec!["push"];
    push.extend(verify);
    push.push(&base);
    ok(&first, &push);

    let ctx = context(tmp.path(), &two_stages(&base));
    let cache = format!("type=registry,ref={}/team/app:cache,mode=max", reg.addr);
    let mut args = verify.to_vec();
    args.extend(["--cache-to", &cache]);
    let (cold, out) = build(&first, &ctx, "app:1", &args);
    assert!(out.contains("exported cache to"), "{out}");

    // A second machine with the same credentials: the base is pulled and every step hits,
    // all over verified TLS with basic auth.
    let second = tmp.path().join("second");
    std::fs::create_dir_all(second.with_extension("docker")).unwrap();
    std::fs::copy(
        first.with_extension("docker").join("config.json"),
        second.with_extension("docker").join("config.json"),
    )
    .unwrap();
    let mut args = verify.to_vec();
    args.extend(["--cache-from", &cache]);
    let (id, out) = build(&second, &ctx, "app:1", &args);
    assert_eq!(id, cold);
    assert!(out.contains(&format!("pulled {base}")), "{out}");
    assert!(
        !out.contains("cache miss") && !out.contains("WARN"),
        "{out}"
    );

    // Without credentials the base image cannot be pulled: a clear error (before the cache
    // is read).
    let third = tmp.path().join("third");
    let out = strata(
        &third,
        &[
            "build",
            "--tls-verify",
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            "--cache-from",
            &cache,
            ctx.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("could not pull it from its registry")
            && stderr.contains("authentication required"),
        "{stderr}"
    );
}
