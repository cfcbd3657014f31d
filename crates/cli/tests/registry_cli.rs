//! `strata push/pull/login/logout` against a real `docker-registry` on 127.0.0.1, checked with
//! skopeo: strata push -> skopeo copy -> same blobs; skopeo push -> strata pull; htpasswd basic
//! auth over TLS with a throw-away CA; credentials in Docker's format that skopeo reads too.

mod common;
#[path = "../../store/tests/registry_common/mod.rs"]
mod registry_common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{add_image_on_busybox, random_layer_tar, store_with_busybox, temp};
use registry_common::{Registry, Setup, PASSWORD, USER};
use strata_store::{Compression, FsckOptions, Store};

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs")
}

fn skopeo_ok(args: &[&str]) -> String {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run strata with its own DOCKER_CONFIG and optional stdin.
fn strata(root: &Path, docker_config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = common::strata()
        .arg("--root")
        .arg(root)
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} succeeded but should not");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The manifest of the only image in an OCI layout written by skopeo.
fn layout_manifest(dir: &Path) -> serde_json::Value {
    let index = json(&dir.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    json(
        &dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

fn have_skopeo() -> bool {
    if common::have("skopeo") {
        return true;
    }
    eprintln!("SKIPPED: skopeo is missing (apt-get install skopeo)");
    false
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn strata_push_then_skopeo_copy_gives_the_same_blobs() {
    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    if !have_skopeo() {
        return;
    }
    let tmp = temp();
    let root = tmp.path().join("store");
    let Some(store) = store_with_busybox(&root, Compression::Zstd) else {
        return;
    };
    let name = format!("{}/strata/app:zstd", reg.addr);
    add_image_on_busybox(
        &store,
        &name,
        &random_layer_tar(7, 300_000),
        Compression::Zstd,
    );
    let image = store.resolve(&name).unwrap();
    let dc = tmp.path().join("docker");
    let out = ok(&strata(&root, &dc, &["push", &name], None), "strata push");
    assert!(
        out.contains("Pushed") && out.contains(&image.manifest.digest.to_string()),
        "{out}"
    );

    // skopeo 1.9 copies OCI zstd layers as they are.
    let dest = tmp.path().join("copy");
    skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("oci:{}:x", dest.display()),
    ]);
    let m = layout_manifest(&dest);
    assert_eq!(m["config"]["digest"], image.config.digest.to_string());
    let layers: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let ours: Vec<String> = image.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(layers, ours);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );

    // --compression gzip: the same image (ID), gzip layers, readable by older clients.
    let gzip_name = strata_store::Reference::parse(&name.replace(":zstd", ":gzip")).unwrap();
    store.tag(&gzip_name, &image).unwrap();
    let out = ok(
        &strata(
            &root,
            &dc,
            &[
                "push",
                "--compression",
                "gzip",
                &name.replace(":zstd", ":gzip"),
            ],
            None,
        ),
        "strata push --compression gzip",
    );
    assert!(out.contains("Pushed"), "{out}");
    let raw = skopeo_ok(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", name.replace(":zstd", ":gzip")),
    ]);
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["config"]["digest"], image.config.digest.to_string());
    for l in raw["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    let again = ok(&strata(&root, &dc, &["push", &name], None), "second push");
    assert!(again.contains("up to date"), "{again}");
    assert!(store.fsck(FsckOptions::default()).unwrap().is_clean());
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn skopeo_push_then_strata_pull_docker_and_oci_formats() {
    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    if !have_skopeo() {
        return;
    }
    let tmp = temp();
    let src_root = tmp.path().join("src");
    // gzip layers, so skopeo can also write Docker schema 2.
    let Some(src) = store_with_busybox(&src_root, Compression::Gzip) else {
        return;
    };
    let original = src.resolve("busybox:latest").unwrap();
    let source = format!(
        "oci:{}:docker.io/library/busybox:latest",
        src_root.display()
    );
    for (format, tag) in [("v2s2", "docker"), ("oci", "oci")] {
        let name = format!("{}/skopeo/busybox:{tag}", reg.addr);
        skopeo_ok(&[
            "copy",
            "--dest-tls-verify=false",
            "--format",
            format,
            &source,
            &format!("docker://{name}"),
        ]);
        let root = tmp.path().join(format!("pulled-{tag}"));
        let dc = tmp.path().join("docker");
        let out = ok(&strata(&root, &dc, &["pull", &name], None), "strata pull");
        assert!(
            out.contains("Downloaded newer image") && out.contains(&name),
            "{out}"
        );
        let store = Store::open(&root).unwrap();
        let pulled = store.resolve(&name).unwrap();
        assert_eq!(
            pulled.id(),
            original.id(),
            "{format}: same config, same image ID"
        );
        let expected_type = if format == "v2s2" {
            "application/vnd.docker.distribution.manifest.v2+json"
        } else {
            "application/vnd.oci.image.manifest.v1+json"
        };
        assert_eq!(pulled.manifest.media_type, expected_type);
        let images = ok(&strata(&root, &dc, &["images"], None), "strata images");
        assert!(
            images.contains(&format!("{}/skopeo/busybox", reg.addr)) && images.contains(tag),
            "{images}"
        );
        let mut layer = store
            .open_layer(&pulled.layers[0].digest, &pulled.diff_ids[0])
            .unwrap();
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut layer, &mut tar).unwrap();
        assert!(tar.windows(11).any(|w| w == b"bin/busybox"));
        assert!(store.fsck(FsckOptions::default()).unwrap().is_clean());
        // Already there: nothing is downloaded.
        let out = ok(&strata(&root, &dc, &["pull", &name], None), "second pull");
        assert!(out.contains("Image is up to date"), "{out}");
    }
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn login_logout_and_basic_auth_over_tls() {
    let Some(reg) = Registry::start(Setup {
        auth: true,
        tls: true,
        ..Setup::default()
    }) else {
        return;
    };
    let tmp = temp();
    let root = tmp.path().join("store");
    let Some(store) = store_with_busybox(&root, Compression::Zstd) else {
        return;
    };
    let name = format!("{}/auth/busybox:v1", reg.addr);
    add_image_on_busybox(
        &store,
        &name,
        &random_layer_tar(9, 100_000),
        Compression::Zstd,
    );
    let dc = tmp.path().join("docker");
    let cert_dir = reg.cert_dir.clone().unwrap();
    let cd = cert_dir.to_str().unwrap();
    let verify = ["--tls-verify", "--cert-dir", cd];

    // Without credentials: 401, with the registry, repository and a hint.
    let e = err(
        &strata(&root, &dc, &["push", &name], None),
        "anonymous push",
    );
    assert!(
        e.contains("authentication required")
            && e.contains("strata login")
            && e.contains("auth/busybox"),
        "{e}"
    );

    // Verification on and no CA: a certificate error with a hint.
    let e = err(
        &strata(
            &root,
            &dc,
            &[
                "login",
                "--tls-verify",
                "-u",
                USER,
                "--password-stdin",
                &reg.addr,
            ],
            Some(PASSWORD),
        ),
        "login without the CA",
    );
    assert!(
        e.contains("--cert-dir") && e.to_lowercase().contains("certificate"),
        "{e}"
    );

    // A wrong password is refused and nothing is stored.
    let mut args = vec!["login"];
    args.extend(verify);
    args.extend(["-u", USER, "--password-stdin", &reg.addr]);
    let e = err(
        &strata(&root, &dc, &args, Some("wrong\n")),
        "login with a wrong password",
    );
    assert!(e.contains("401"), "{e}");
    assert!(!dc.join("config.json").exists());

    let out = ok(
        &strata(&root, &dc, &args, Some(&format!("{PASSWORD}\n"))),
        "login",
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    let config = dc.join("config.json");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let auth = json(&config)["auths"][&reg.addr]["auth"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!auth.is_empty());

    // Push with verification against the CA; pull into a fresh store with the defaults
    // (loopback: TLS without verification).
    let mut args = vec!["push"];
    args.extend(verify);
    args.push(&name);
    ok(&strata(&root, &dc, &args, None), "push with credentials");
    let fresh = tmp.path().join("fresh");
    ok(
        &strata(&fresh, &dc, &["pull", &name], None),
        "pull with credentials",
    );
    assert_eq!(
        Store::open(&fresh).unwrap().resolve(&name).unwrap().id(),
        store.resolve(&name).unwrap().id()
    );

    // skopeo reads the credentials file strata wrote.
    if common::have("skopeo") {
        let out = skopeo(&[
            "inspect",
            "--authfile",
            config.to_str().unwrap(),
            "--cert-dir",
            &cert_dir.join(&reg.addr).display().to_string(),
            &format!("docker://{name}"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = ok(&strata(&root, &dc, &["logout", &reg.addr], None), "logout");
    assert!(out.contains("Removing login credentials"), "{out}");
    let out = ok(
        &strata(&root, &dc, &["logout", &reg.addr], None),
        "second logout",
    );
    assert!(out.contains("Not logged in"), "{out}");
    let e = err(
        &strata(&tmp.path().join("f2"), &dc, &["pull", &name], None),
        "pull after logout",
    );
    assert!(e.contains("authentication required"), "{e}");
}
