//! The seed scenario, end to end through the `strata` binary: images built from the same base
//! share its layers in the store, on disk (the same overlay2 lower folders) and on the wire
//! (`save` writes each layer once, `load` reads only the layers a store lacks).
//!
//! The Dockerfiles are the repository's own, in `examples/seed/`. Builds need root and
//! overlayfs: `cargo xtask test` runs this test, with the overlay driver and again with
//! `STRATA_STORAGE_DRIVER=vfs` (where there are no lower folders to compare, which the test
//! says and skips).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{busybox_base, ok, s};
use regex::Regex;

/// `examples/seed/<name>` in the repository.
fn seed_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seed")
        .join(name)
}

/// The `GraphDriver` of each image `strata inspect` prints, in order.
fn graph_drivers(root: &Path, images: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["inspect"];
    args.extend_from_slice(images);
    let json: Vec<serde_json::Value> = serde_json::from_str(&ok(root, &args)).unwrap();
    json.into_iter().map(|i| i["GraphDriver"].clone()).collect()
}

/// The short ids of the layers a `load` printed `Loading layer` for, and those it said
/// already existed.
fn load_lines(out: &str) -> (Vec<String>, Vec<String>) {
    let loading = Regex::new(r"(?m)^Loading layer ([0-9a-f]{12}): done \(.+\)$").unwrap();
    let exists = Regex::new(r"(?m)^Layer ([0-9a-f]{12}): already exists$").unwrap();
    let ids = |re: &Regex| re.captures_iter(out).map(|c| c[1].to_string()).collect();
    (ids(&loading), ids(&exists))
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn images_from_one_base_share_its_layers_on_disk_and_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    busybox_base(&root);

    // 1. Build the three seed images: urm and sso both start FROM layer-base:v1.
    for (tag, folder) in [
        ("layer-base:v1", "base"),
        ("layer-urm:v1", "urm"),
        ("layer-sso:v1", "sso"),
    ] {
        ok(
            &root,
            &["build", "--progress=plain", "-t", tag, s(&seed_dir(folder))],
        );
    }

    // 2. History: the RUN steps made layers (with a size), the CMDs only config (0B).
    let history = ok(&root, &["history", "layer-urm:v1"]);
    let rows: Vec<&str> = history.lines().skip(1).collect();
    let size = Regex::new(r"\s(\d+(\.\d+)?[kMG]?B)\s").unwrap();
    let size_of = |needle: &str| -> String {
        let row = rows
            .iter()
            .find(|r| r.contains(needle))
            .unwrap_or_else(|| panic!("no history row with {needle:?}:\n{history}"));
        size.captures(row).unwrap()[1].to_string()
    };
    assert_eq!(size_of("CMD [\"cat\" \"/opt/startup\"]"), "0B", "{history}");
    assert_eq!(size_of("CMD [\"cat\" \"/opt/env\"]"), "0B", "{history}");
    for run in ["echo \"urm service startup\"", "mkdir /opt/ && echo"] {
        let s = size_of(run);
        assert_ne!(s, "0B", "RUN {run} wrote a file:\n{history}");
    }
    assert_eq!(
        rows.len(),
        5,
        "busybox, two RUN and two CMD rows:\n{history}"
    );

    // 3. On disk: urm's and sso's top folders sit on the same lower folders.
    let drivers = graph_drivers(&root, &["layer-urm:v1", "layer-sso:v1", "layer-base:v1"]);
    let (urm, sso, base) = (&drivers[0], &drivers[1], &drivers[2]);
    if urm["Name"] == "overlay2" {
        let lower = |g: &serde_json::Value| g["Data"]["LowerDir"].as_str().unwrap().to_string();
        let upper = |g: &serde_json::Value| PathBuf::from(g["Data"]["UpperDir"].as_str().unwrap());
        assert_eq!(
            lower(urm),
            lower(sso),
            "urm and sso share their lower folders"
        );
        assert_ne!(upper(urm), upper(sso), "each has its own top folder");
        // The lower folders are exactly the base's own folder and the ones below it.
        let base_stack = format!("{}:{}", upper(base).display(), lower(base));
        assert_eq!(lower(urm), base_stack);
        assert_eq!(lower(urm).split(':').count(), 2, "busybox and base");
        // overlay2's `lower` files (next to `diff`) name the same `l/` links.
        let lower_file =
            |g: &serde_json::Value| std::fs::read_to_string(upper(g).with_file_name("lower"));
        let (urm_lower, sso_lower) = (lower_file(urm).unwrap(), lower_file(sso).unwrap());
        assert_eq!(urm_lower, sso_lower);
        let links: Vec<&str> = urm_lower.trim().split(':').collect();
        assert_eq!(links.len(), 2, "{urm_lower}");
        for (link, dir) in links.iter().zip(lower(urm).split(':')) {
            assert!(link.starts_with("l/"), "{link}");
            // Each link resolves to the `diff` folder LowerDir names.
            let overlay_home = upper(urm).parent().unwrap().parent().unwrap().to_path_buf();
            let target = std::fs::canonicalize(overlay_home.join(link)).unwrap();
            assert_eq!(target, std::fs::canonicalize(dir).unwrap(), "{link}");
        }
    } else {
        eprintln!(
            "NOTE: driver {} has no lower folders; the on-disk sharing check is overlay2's",
            urm["Name"]
        );
    }

    // 4. On the wire: one archive with both images holds each distinct layer once, and an
    //    empty store reads each of them once.
    let both = dir.path().join("both.tar");
    ok(
        &root,
        &["save", "-o", s(&both), "layer-urm:v1", "layer-sso:v1"],
    );
    let other = dir.path().join("other");
    let out = ok(&other, &["load", "-i", s(&both)]);
    let (loaded, existing) = load_lines(&out);
    assert_eq!(loaded.len(), 4, "busybox, base, urm, sso:\n{out}");
    assert_eq!(
        loaded.iter().collect::<BTreeSet<_>>().len(),
        4,
        "each layer once:\n{out}"
    );
    assert!(existing.is_empty(), "{out}");
    assert!(out.contains("Loaded image: layer-urm:v1"), "{out}");
    assert!(out.contains("Loaded image: layer-sso:v1"), "{out}");

    // 5. A third image on the same base: the store has busybox's and the base's layers
    //    already, so only the new layer is read.
    ok(&root, &["build", "-t", "layer-api:v1", s(&seed_dir("api"))]);
    let api = dir.path().join("api.tar");
    ok(&root, &["save", "-o", s(&api), "layer-api:v1"]);
    let out = ok(&other, &["load", "-i", s(&api)]);
    let (loaded_api, existing_api) = load_lines(&out);
    assert_eq!(
        existing_api,
        loaded[..2].to_vec(),
        "busybox and base:\n{out}"
    );
    assert_eq!(loaded_api.len(), 1, "only api's own layer:\n{out}");
    assert!(!loaded.contains(&loaded_api[0]), "{out}");
    assert!(out.contains("Loaded image: layer-api:v1"), "{out}");

    // 6. A container over urm's layers runs its CMD; stdout is only the command's output,
    //    and `--rm` leaves no container behind.
    let out = ok(&root, &["run", "--rm", "layer-urm:v1"]);
    assert_eq!(out, "urm service startup\n");
    let out = ok(&root, &["ps", "-a", "-q"]);
    assert_eq!(out, "", "--rm left a container:\n{out}");
}
