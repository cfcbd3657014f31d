//! `strata save`, `load`, `images`, `fsck` and `prune` end to end, through the binary.

mod common;

use common::*;
use strata_store::Compression;

#[test]
fn save_then_load_into_another_store_round_trips() {
    let dir = temp();
    let a = at(dir.path(), "a");
    let Some(store) = store_with_busybox(&a, Compression::Zstd) else {
        return;
    };
    add_image_on_busybox(
        &store,
        "app:1",
        &random_layer_tar(1, 100_000),
        Compression::Zstd,
    );
    let archive = at(dir.path(), "x.tar");
    ok(&a, &["save", "-o", s(&archive), "busybox", "app:1"]);

    let b = at(dir.path(), "b");
    let out = ok(&b, &["load", "-i", s(&archive)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("Loading layer ") && lines[0].contains(": done ("),
        "{out}"
    );
    assert!(lines[1].starts_with("Loading layer "), "{out}");
    assert_eq!(lines[2], "Loaded image: busybox:latest");
    assert_eq!(lines[3], "Loaded image: app:1");

    // Same image IDs on both sides.
    let ids_a = ok(&a, &["images", "-q"]);
    let ids_b = ok(&b, &["images", "-q"]);
    assert_eq!(ids_a, ids_b);

    // Loading again: every layer already exists.
    let again = ok(&b, &["load", "-i", s(&archive)]);
    assert_eq!(again.matches("already exists").count(), 2, "{again}");
    assert!(!again.contains("Loading layer"), "{again}");

    // Loading into the source store (which holds zstd blobs): nothing is stored twice.
    let back = ok(&a, &["load", "-i", s(&archive)]);
    assert_eq!(back.matches("already exists").count(), 2, "{back}");

    let table = ok(&b, &["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(
        table.contains("busybox") && table.contains("app"),
        "{table}"
    );
    let json = ok(&b, &["images", "--format", "json"]);
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["ID"].as_str().unwrap().len() == 12);
    }
    assert!(ok(&b, &["fsck"]).contains("store is consistent"));
}

#[test]
fn save_to_stdout_and_load_from_stdin_with_compressions() {
    let dir = temp();
    let a = at(dir.path(), "a");
    if store_with_busybox(&a, Compression::None).is_none() {
        return;
    }
    for (format, compression) in [("docker", "gzip"), ("oci", "zstd"), ("oci", "none")] {
        let out = run(
            &a,
            &[
                "save",
                "--format",
                format,
                "--compression",
                compression,
                "busybox",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let b = at(dir.path(), &format!("b-{format}-{compression}"));
        let mut child = strata()
            .arg("--root")
            .arg(&b)
            .arg("load")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let loaded = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&loaded.stdout);
        assert!(loaded.status.success(), "{format}/{compression}: {text}");
        assert!(
            text.contains("Loaded image: busybox:latest"),
            "{format}/{compression}: {text}"
        );
    }
}

#[test]
fn fsck_reports_damage_and_repair_names_the_image() {
    let dir = temp();
    let root = at(dir.path(), "s");
    let Some(store) = store_with_busybox(&root, Compression::Zstd) else {
        return;
    };
    let image = store.resolve("busybox").unwrap();
    let layer = store.blob_path(&image.layers[0].digest);
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let out = run(&root, &["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("corrupt blob"), "{text}");
    assert!(
        text.contains("damaged image: docker.io/library/busybox:latest"),
        "{text}"
    );
    let fixed = ok(&root, &["fsck", "--repair"]);
    assert!(
        fixed.contains("removed image: docker.io/library/busybox:latest"),
        "{fixed}"
    );
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
    assert_eq!(ok(&root, &["images", "-q"]), "");
}

#[test]
fn prune_removes_only_unreferenced_blobs() {
    let dir = temp();
    let root = at(dir.path(), "s");
    let Some(store) = store_with_busybox(&root, Compression::Zstd) else {
        return;
    };
    add_image_on_busybox(
        &store,
        "app:1",
        &random_layer_tar(2, 50_000),
        Compression::Zstd,
    );
    let dry = ok(&root, &["prune", "--dry-run"]);
    assert!(dry.contains("Total reclaimable space: 0B"), "{dry}");
    assert!(store
        .untag(&strata_store::Reference::parse("app:1").unwrap())
        .unwrap());
    let dry = ok(&root, &["prune", "--dry-run"]);
    assert_eq!(dry.matches("would remove sha256:").count(), 3, "{dry}");
    let done = ok(&root, &["prune"]);
    assert_eq!(done.matches("removed sha256:").count(), 3, "{done}");
    assert!(store.resolve("busybox").is_ok());
    assert!(ok(&root, &["fsck"]).contains("store is consistent"));
}

#[test]
fn errors_are_clear() {
    let dir = temp();
    let root = at(dir.path(), "s");
    let out = run(
        &root,
        &["save", "-o", s(&at(dir.path(), "x.tar")), "nothere"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image: nothere"));
    assert!(!at(dir.path(), "x.tar").exists());
    let out = run(&root, &["load", "-i", s(&at(dir.path(), "missing.tar"))]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    let out = run(&root, &["save", "-o", "x", "UPPER"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image"));
}
