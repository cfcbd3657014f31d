//! Interop with the OCI tools: archives made by `strata save` read by skopeo, the store root
//! read by skopeo's `oci:` transport and by umoci, and skopeo's output loaded back.
//! Run by `cargo xtask test` (which installs skopeo and umoci).

mod common;

use std::process::Command;

use common::*;
use strata_store::{Compression, Store};

const IGNORE: &str = "interop: needs skopeo and umoci (run by cargo xtask test)";

fn tool(program: &str, args: &[&str]) -> String {
    assert!(have(program), "{program} is not installed ({IGNORE})");
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

fn two_images(root: &std::path::Path) -> Option<Store> {
    let store = store_with_busybox(root, Compression::Gzip)?;
    add_image_on_busybox(
        &store,
        "example.com:5000/team/app:v1",
        &random_layer_tar(7, 300_000),
        Compression::Zstd,
    );
    Some(store)
}

#[test]
#[ignore = "interop: needs skopeo and umoci (run by cargo xtask test)"]
fn skopeo_reads_and_copies_a_saved_docker_archive() {
    let dir = temp();
    let root = at(dir.path(), "s");
    let Some(store) = two_images(&root) else {
        panic!("busybox-static is needed ({IGNORE})");
    };
    let image = store.resolve("busybox").unwrap();
    let archive = at(dir.path(), "bb.tar");
    ok(&root, &["save", "-o", s(&archive), "busybox"]);
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", s(&archive))],
    ));
    let layers: Vec<String> = image.diff_ids.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        inspect["Layers"],
        serde_json::json!(layers),
        "plain layers: digest = diffID"
    );
    assert_eq!(inspect["Architecture"], "amd64");

    // A copy into an OCI layout, then back into a fresh strata store.
    let oci = at(dir.path(), "oci");
    tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            &format!("docker-archive:{}", s(&archive)),
            &format!("oci:{}:copied", s(&oci)),
        ],
    );
    let oci_tar = at(dir.path(), "oci.tar");
    let status = Command::new("tar")
        .args(["-C", s(&oci), "-cf", s(&oci_tar), "."])
        .status()
        .unwrap();
    assert!(status.success());
    let fresh = at(dir.path(), "fresh");
    let out = ok(&fresh, &["load", "-i", s(&oci_tar)]);
    // A bare `ref.name` ("copied") names no repository: the image loads untagged.
    assert!(out.contains("Loaded image ID: sha256:"), "{out}");
    assert!(
        out.contains(&format!("Loading layer {}", image.diff_ids[0].short())),
        "{out}"
    );

    // A multi-image archive: each image can be picked by reference.
    let multi = at(dir.path(), "multi.tar");
    ok(
        &root,
        &[
            "save",
            "-o",
            s(&multi),
            "busybox",
            "example.com:5000/team/app:v1",
        ],
    );
    let app = json(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("docker-archive:{}:example.com:5000/team/app:v1", s(&multi)),
        ],
    ));
    assert_eq!(app["Layers"].as_array().unwrap().len(), 2);
}

#[test]
#[ignore = "interop: needs skopeo and umoci (run by cargo xtask test)"]
fn skopeo_and_umoci_read_the_store_root() {
    let dir = temp();
    let root = at(dir.path(), "s");
    let Some(store) = two_images(&root) else {
        panic!("busybox-static is needed ({IGNORE})");
    };
    for name in [
        "docker.io/library/busybox:latest",
        "example.com:5000/team/app:v1",
    ] {
        let image = store.resolve(name).unwrap();
        let inspect = json(&tool(
            "skopeo",
            &["inspect", &format!("oci:{}:{name}", s(&root))],
        ));
        assert_eq!(
            inspect["Digest"],
            image.manifest.digest.to_string(),
            "{name}"
        );
        let blobs: Vec<String> = image.layers.iter().map(|l| l.digest.to_string()).collect();
        assert_eq!(inspect["Layers"], serde_json::json!(blobs), "{name}");
        // skopeo reads every blob of the image out of the store (and verifies it).
        let copy = at(dir.path(), "copy");
        tool(
            "skopeo",
            &[
                "--insecure-policy",
                "copy",
                &format!("oci:{}:{name}", s(&root)),
                &format!("oci:{}:x", s(&copy)),
            ],
        );
    }
    let listed = tool("umoci", &["ls", "--layout", s(&root)]);
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:latest",
            "example.com:5000/team/app:v1"
        ]
    );
    let stat = tool(
        "umoci",
        &[
            "stat",
            "--image",
            &format!("{}:docker.io/library/busybox:latest", s(&root)),
        ],
    );
    assert!(
        stat.contains("strata test: busybox-static rootfs"),
        "{stat}"
    );
}
