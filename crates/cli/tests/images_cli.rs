//! `strata images`, `history`, `inspect`, `tag`, `rmi` and `system df` end to end, through
//! the binary, on a deterministic family of images made with the store API: `busybox`,
//! `layer-base:v1` built on it, and `layer-urm:v1`, `layer-sso:v1` built on the base.

mod common;

use common::*;
use strata_builder::cache;
use strata_builder::cachekey::{CacheKey, KeyInputs, OpKind, Parent};
use strata_overlay::{Driver, Snapshotter};
use strata_store::{Digest, Record, RefKind, Store};

fn snap(root: &std::path::Path, name: &str, runs: &[&[&str]]) {
    let text: Vec<String> = runs.iter().map(|a| transcript(root, a)).collect();
    settings(root).bind(|| insta::assert_snapshot!(name, text.join("\n")));
}

#[test]
fn history_like_docker() {
    let (_d, root) = temp_root();
    seed(&root);
    snap(
        &root,
        "history",
        &[
            &["history", "layer-urm:v1"],
            &["history", "--no-trunc", "layer-urm:v1"],
            &["history", "-q", "layer-urm:v1"],
            &["history", "-H=false", "busybox"],
            &["history", "--format", "json", "layer-base:v1"],
        ],
    );
}

#[test]
fn history_sizes_follow_diff_ids_in_order() {
    let (_d, root) = temp_root();
    let seed = seed(&root);
    let urm = seed.store.resolve("layer-urm:v1").unwrap();
    let raw = ok(
        &root,
        &["history", "-H=false", "--format", "json", "layer-urm:v1"],
    );
    let sizes: Vec<String> = raw
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["Size"].as_str().unwrap().to_string()
        })
        .collect();
    // Newest first: RUN (urm), CMD, RUN (base), CMD, ADD (busybox).
    let layer = |i: usize| {
        seed.store.layer_blobs(&urm.diff_ids[i]).unwrap()[0]
            .uncompressed_size
            .to_string()
    };
    assert_eq!(
        sizes,
        [layer(2), "0".into(), layer(1), "0".into(), layer(0)]
    );
}

#[test]
fn images_table_filters_digests_and_json() {
    let (_d, root) = temp_root();
    seed(&root);
    snap(
        &root,
        "images",
        &[
            &["images"],
            &["images", "--digests"],
            &["images", "-q"],
            &["images", "layer-urm"],
            &["images", "layer-urm:v2"],
            &["images", "--no-trunc", "busybox:latest"],
            &["images", "--format", "json", "busybox"],
        ],
    );
}

#[test]
fn images_tree_draws_shared_chains_once() {
    let (_d, root) = temp_root();
    let seed = seed(&root);
    // An image with no layers of its own sits apart.
    let empty = seed
        .store
        .write_image(&config("2024-02-01T00:00:00Z", &[], &["true"]), &[])
        .unwrap();
    seed.store
        .tag(
            &strata_store::Reference::parse("scratch-cfg:1").unwrap(),
            &empty,
        )
        .unwrap();
    snap(
        &root,
        "images_tree",
        &[&["images", "--tree"], &["images", "--tree", "layer-sso"]],
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&root, &["images", "--tree", "--format", "json"])).unwrap();
    let roots = json["Layers"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "one base layer shared by all: {json}");
    let base = &roots[0]["Children"][0];
    assert_eq!(base["Images"][0]["Tags"][0], "layer-base:v1");
    assert_eq!(base["Children"].as_array().unwrap().len(), 2);
    assert_eq!(json["ImagesWithoutLayers"][0]["Tags"][0], "scratch-cfg:1");
}

#[test]
fn inspect_prints_dockers_shape() {
    let (_d, root) = temp_root();
    seed(&root);
    snap(
        &root,
        "inspect",
        &[
            &["inspect", "layer-urm:v1"],
            &["inspect", "busybox", "nothere"],
        ],
    );
}

/// Unpack an image's layers as committed snapshots named by chainID hex, as the engine does.
fn unpack(store: &Store, root: &std::path::Path, name: &str, driver: strata_overlay::Driver) {
    let image = store.resolve(name).unwrap();
    let snap = strata_overlay::Snapshotter::open(root, Some(driver)).unwrap();
    let layers = image
        .chain_ids()
        .iter()
        .zip(image.layers.iter().zip(&image.diff_ids))
        .map(|(chain, (blob, diff_id))| strata_overlay::LayerSource {
            name: chain.hex(),
            reader: Box::new(store.open_layer(&blob.digest, diff_id).unwrap()),
        })
        .collect();
    snap.unpack_chain(None, layers, &strata_overlay::UnpackOptions::default())
        .unwrap();
}

#[test]
fn inspect_graph_driver_names_the_unpacked_folders_vfs() {
    let (_d, root) = temp_root();
    let seed = seed(&root);
    unpack(
        &seed.store,
        &root,
        "layer-urm:v1",
        strata_overlay::Driver::Vfs,
    );
    let text = transcript(
        &root,
        &[
            "--storage-driver",
            "vfs",
            "inspect",
            "layer-urm:v1",
            "layer-sso:v1",
        ],
    );
    let json_start = text.find('[').unwrap();
    let json_end = text.rfind(']').unwrap();
    let docs: serde_json::Value = serde_json::from_str(&text[json_start..=json_end]).unwrap();
    let urm = seed.store.resolve("layer-urm:v1").unwrap();
    let top = urm.chain_ids().last().unwrap().hex();
    let gd = &docs[0]["GraphDriver"];
    assert_eq!(gd["Name"], "vfs");
    let root = root.canonicalize().unwrap();
    assert_eq!(
        gd["Data"]["UpperDir"],
        root.join("vfs")
            .join(&top)
            .join("diff")
            .display()
            .to_string()
    );
    // sso was never unpacked: the engine unpacks it on first use.
    assert_eq!(docs[1]["GraphDriver"]["Data"], serde_json::Value::Null);

    // system df counts the three folders; once urm is gone its top one is reclaimable.
    let df = |root: &std::path::Path| -> serde_json::Value {
        let out = ok(
            root,
            &[
                "--storage-driver",
                "vfs",
                "system",
                "df",
                "--format",
                "json",
            ],
        );
        serde_json::from_str(out.lines().nth(3).unwrap()).unwrap()
    };
    let row = df(&root);
    assert_eq!(row["Type"], "Unpacked Layers");
    assert_eq!(
        (row["TotalCount"].as_str(), row["Active"].as_str()),
        (Some("3"), Some("3"))
    );
    assert!(
        row["Reclaimable"].as_str().unwrap().starts_with("0B"),
        "{row}"
    );
    ok(&root, &["rmi", "layer-urm:v1"]);
    let row = df(&root);
    assert_eq!(
        (row["TotalCount"].as_str(), row["Active"].as_str()),
        (Some("3"), Some("2"))
    );
    // (vfs: the top folder is a full copy, its size counts every file it holds)
    assert!(
        !row["Reclaimable"].as_str().unwrap().starts_with("0B"),
        "{row}"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn inspect_overlay_lower_dirs_are_shared_by_images_on_one_base() {
    let (_d, root) = temp_root();
    let seed = seed(&root);
    unpack(
        &seed.store,
        &root,
        "layer-urm:v1",
        strata_overlay::Driver::Overlay,
    );
    unpack(
        &seed.store,
        &root,
        "layer-sso:v1",
        strata_overlay::Driver::Overlay,
    );
    let out = ok(&root, &["inspect", "layer-urm:v1", "layer-sso:v1"]);
    let docs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let data = |i: usize| docs[i]["GraphDriver"]["Data"].clone();
    assert_eq!(docs[0]["GraphDriver"]["Name"], "overlay2");
    let (urm, sso) = (data(0), data(1));
    let lower = |d: &serde_json::Value| d["LowerDir"].as_str().unwrap().to_string();
    assert_eq!(
        lower(&urm),
        lower(&sso),
        "both stack on the same base folders"
    );
    assert_eq!(lower(&urm).split(':').count(), 2);
    assert_ne!(urm["UpperDir"], sso["UpperDir"]);
    for d in [&urm, &sso] {
        for key in ["MergedDir", "UpperDir", "WorkDir"] {
            assert!(d[key]
                .as_str()
                .unwrap()
                .starts_with(root.canonicalize().unwrap().to_str().unwrap()));
        }
    }
}

/// Point a container ref at a record that references an image's manifest.
fn add_container(store: &Store, id: &str, image: &str) {
    let image = store.resolve(image).unwrap();
    let record = store
        .write_record(&Record {
            references: vec![image.manifest.clone()],
            chain: image.diff_ids.clone(),
            data: serde_json::json!({"Image": image.id().to_string()}),
        })
        .unwrap();
    store.set_ref(RefKind::Container, id, &record).unwrap();
}

#[test]
fn tag_and_rmi_follow_dockers_rules() {
    let (_d, root) = temp_root();
    let seed = seed(&root);
    let base_id = seed.store.resolve("layer-base:v1").unwrap().id().short();
    let urm_id = seed.store.resolve("layer-urm:v1").unwrap().id().short();
    let bb_id = seed.store.resolve("busybox").unwrap().id().short();
    add_container(&seed.store, &"c0".repeat(32), "layer-sso:v1");
    snap(
        &root,
        "tag_rmi",
        &[
            // A second name, then removing one of two names only untags.
            &["tag", "busybox", "me/bb:1"],
            &["tag", &urm_id, "urm-alias"],
            &["images"],
            &["rmi", "me/bb:1"],
            // By ID with several names: must force.
            &["rmi", &urm_id],
            &["rmi", "-f", &urm_id],
            // An image others are built on: refused by ID, kept untagged by name.
            &["rmi", &base_id],
            &["rmi", "layer-base:v1"],
            &["images"],
            &["images", "-a"],
            // An image a container uses.
            &["rmi", "layer-sso:v1"],
            // Several at once: errors do not stop the others.
            &["rmi", "nothere", "busybox:latest"],
            &["images", "-a"],
            &["rmi", "-f", &base_id, &bb_id],
            &["images", "-a"],
        ],
    );
    // A moved tag leaves its old image untagged, not lost.
    let (_d2, root2) = temp_root();
    seed_and_move(&root2);
}

fn seed_and_move(root: &std::path::Path) {
    let seed = seed(root);
    let urm = seed.store.resolve("layer-urm:v1").unwrap();
    ok(root, &["tag", "layer-sso:v1", "layer-urm:v1"]);
    let listing = ok(root, &["images"]);
    assert!(
        listing.contains(&format!("<none>       <none>    {}", urm.id().short())),
        "{listing}"
    );
    assert_eq!(
        seed.store.resolve(&urm.id().short()).unwrap().id(),
        urm.id(),
        "still in the store"
    );
}

#[test]
fn system_df_counts_shared_layers_once() {
    let (_d, root) = temp_root();
    let seed = seed(&root);
    snap(
        &root,
        "system_df",
        &[
            &["system", "df"],
            &["system", "df", "-v"],
            &["system", "df", "--format", "json"],
        ],
    );
    // Images total = every distinct blob once: the sum of the per-image unique sizes plus
    // the shared blobs counted one time each.
    let usage = seed.store.disk_usage().unwrap();
    let json = ok(&root, &["system", "df", "--format", "json"]);
    let images: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(images["Type"], "Images");
    assert_eq!(images["TotalCount"], "4");
    assert!(usage.reachable < usage.images.iter().map(|i| i.total).sum::<u64>());
}

#[test]
fn system_df_counts_cache_records_and_containers() {
    let (_d, root) = temp_root();
    let seed = seed(&root);
    add_container(&seed.store, &"c0".repeat(32), "layer-sso:v1");
    // A cache record holding one layer of its own and one the images share.
    let own = layer(
        &seed.store,
        &layer_tar(&[("cache/", b""), ("cache/x", &[1; 5000][..])]),
    );
    let shared = seed.store.resolve("busybox").unwrap().layers[0].clone();
    let rec = seed
        .store
        .write_record(&Record {
            references: vec![own.descriptor(), shared],
            chain: vec![own.diff_id],
            data: serde_json::Value::Null,
        })
        .unwrap();
    seed.store
        .set_ref(RefKind::Cache, &Digest::of(b"key").hex(), &rec)
        .unwrap();
    // And a blob nothing references.
    seed.store.write_blob(&[7; 1234]).unwrap();
    // Two records a build made, in stages `build` (one own layer of 3000 bytes) and
    // `runtime` (on the busybox layer the images share).
    let build_layer = layer(
        &seed.store,
        &layer_tar(&[("app/", b""), ("app/bin", &[2; 3000][..])]),
    );
    let busybox = seed.store.resolve("busybox").unwrap();
    let busybox_layer = seed
        .store
        .layer_of_blob(&busybox.layers[0].digest)
        .unwrap()
        .unwrap();
    for (n, stage, l) in [(1u8, "build", &build_layer), (2, "runtime", &busybox_layer)] {
        let inputs = KeyInputs::new(
            OpKind::Run,
            "linux/amd64",
            Parent::Step {
                key: CacheKey::parse(&format!("{n:02x}").repeat(32)).unwrap(),
            },
            "RUN make",
        );
        cache::store_record(
            &seed.store,
            &cache::NewRecord {
                key: &inputs.key(),
                layer: Some(l),
                chain: &[l.diff_id],
                created_by: &format!("RUN /bin/sh -c make {stage} # buildkit"),
                inputs: &inputs,
                stage,
            },
            None,
        )
        .unwrap();
    }
    // The container's writable layer: 4000 bytes in its upper folder.
    let snapshotter = Snapshotter::open(&root, Some(Driver::Vfs)).unwrap();
    snapshotter
        .prepare(&format!("container-{}", "c0".repeat(32)), None)
        .unwrap();
    let upper = snapshotter
        .graph_driver_data(&format!("container-{}", "c0".repeat(32)))
        .unwrap()
        .upper_dir;
    std::fs::write(upper.join("written"), [5; 4000]).unwrap();
    snap(
        &root,
        "system_df_cache_containers",
        &[&["system", "df"], &["system", "df", "-v"]],
    );
    let json = ok(&root, &["system", "df", "-v", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["Containers"][0]["Size"], 4000);
    let stages: Vec<(&str, u64)> = v["BuildCacheStages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["Stage"].as_str().unwrap(), s["Records"].as_u64().unwrap()))
        .collect();
    assert_eq!(stages.len(), 3, "{stages:?}");
    assert!(stages.contains(&("build", 1)) && stages.contains(&("<unknown>", 1)));
    // The total counts each blob once: every blob in the store plus the upper folder.
    let blobs: u64 = std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(v["TotalSize"], blobs + 4000);
}

#[test]
fn errors_name_the_place_give_hints_and_exit_codes() {
    let (_d, root) = temp_root();
    seed(&root);
    snap(
        &root,
        "errors",
        &[
            &["history", "nothere"],
            &["inspect", "nothere"],
            &["tag", "nothere", "x:1"],
            &["tag", "busybox", "Bad:Name"],
            &["tag", "busybox", &format!("x@sha256:{}", "a".repeat(64))],
            &["images", "UPPER"],
            &["rmi"],
            &["history"],
            &["images", "--tree", "-q"],
            &["completion", "tcsh"],
        ],
    );
}

#[test]
fn no_colour_when_piped_or_no_color_set_and_log_levels() {
    let (_d, root) = temp_root();
    seed(&root);
    for args in [&["history", "nothere"][..], &["images", "--tree"]] {
        let out = run(&root, args);
        let all = [out.stdout, out.stderr].concat();
        assert!(!all.contains(&0x1b), "no escapes when piped: {args:?}");
    }
    let out = run(&root, &["--log-level", "info", "images", "-q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("info: store: "), "{err}");
    let out = run(&root, &["-vv", "images", "-q"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("info: store: "));
    let out = run(&root, &["-v", "images", "-q"]);
    assert!(out.stderr.is_empty(), "one -v only asks for verbose output");
    let out = run(&root, &["--log-level", "loud", "images"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn completion_scripts_for_three_shells() {
    let (_d, root) = temp_root();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&root, &["completion", shell]);
        for word in ["history", "inspect", "rmi", "system", "tree"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
}

#[test]
fn man_pages_cover_every_command() {
    let (d, root) = temp_root();
    let dir = d.path().join("man");
    let listed = ok(&root, &["__man", dir.to_str().unwrap()]);
    assert!(listed.lines().count() >= 15, "{listed}");
    for page in [
        "strata.1",
        "strata-history.1",
        "strata-system-df.1",
        "strata-rmi.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is roff");
    }
    let history = std::fs::read_to_string(dir.join("strata-history.1")).unwrap();
    assert!(history.contains("Examples"), "examples reach the man page");
}

/// Run `strata --root ROOT ARGS...` with standard output a pipe whose reader is already
/// closed, as `strata images | head -0` would leave it; returns the exit code and stderr.
fn into_closed_pipe(root: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    // Closing the reader before the child starts makes its first write fail, every time.
    drop(reader);
    let out = strata()
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_standard_output_ends_listings_quietly() {
    let (_d, root) = temp_root();
    seed(&root);
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app.Dockerfile");
    for args in [
        &["images"][..],
        &["images", "--format", "json"],
        &["images", "--tree"],
        &["history", "layer-urm:v1"],
        &["inspect", "layer-urm:v1"],
        &["system", "df", "-v"],
        &["system", "df", "-v", "--format", "json"],
        &["fsck"],
        &["version"],
        &["completion", "bash"],
        &["parse", "--dump", fixtures],
        &["lint", "--format", "json", fixtures],
    ] {
        let (code, stderr) = into_closed_pipe(&root, args);
        assert_eq!((code, stderr.as_str()), (Some(141), ""), "strata {args:?}");
    }
    // A real failure is still reported while nobody reads standard output.
    let (code, stderr) = into_closed_pipe(&root, &["history", "nothere"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("Error: no such image: nothere"),
        "{stderr}"
    );
}

#[test]
fn prune_reports_as_json_what_its_text_lists() {
    let (_d, root) = temp_root();
    let seed = seed(&root);
    // A blob nothing references, and a cache record with a layer of its own.
    let stray = seed.store.write_blob(&[7; 1234]).unwrap();
    let own = layer(
        &seed.store,
        &layer_tar(&[("cache/", b""), ("cache/x", &[1; 5000][..])]),
    );
    let rec = seed
        .store
        .write_record(&Record {
            references: vec![own.descriptor()],
            chain: vec![],
            data: serde_json::Value::Null,
        })
        .unwrap();
    seed.store
        .set_ref(RefKind::Cache, &Digest::of(b"key").hex(), &rec)
        .unwrap();
    let vfs = ["--storage-driver", "vfs"];
    let prune = |args: &[&str]| ok(&root, &[&vfs[..], args].concat());
    let text = prune(&["prune", "--cache", "--dry-run"]);
    let dry: serde_json::Value = serde_json::from_str(&prune(&[
        "prune",
        "--cache",
        "--dry-run",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(dry["DryRun"], true);
    assert_eq!(dry["CacheRecordsRemoved"], 1);
    let blobs: Vec<String> = dry["Blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["Name"].as_str().unwrap().to_string())
        .collect();
    // The stray blob, the record and its layer: each one also a line of the text.
    assert_eq!(blobs.len(), 3, "{dry}");
    assert!(blobs.contains(&stray.digest.to_string()), "{dry}");
    for b in &blobs {
        assert!(text.contains(&format!("would remove {b} (")), "{b}\n{text}");
    }
    let total = dry["SpaceReclaimed"].as_u64().unwrap();
    let listed: u64 = dry["Blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["Size"].as_u64().unwrap())
        .sum();
    assert_eq!(total, listed, "{dry}");
    // The real prune removes what the dry run listed; builder prune has the same switch.
    let done: serde_json::Value =
        serde_json::from_str(&prune(&["prune", "--cache", "--format", "json"])).unwrap();
    assert_eq!(
        (&done["DryRun"], &done["Blobs"], &done["SpaceReclaimed"]),
        (&false.into(), &dry["Blobs"], &dry["SpaceReclaimed"])
    );
    let again: serde_json::Value =
        serde_json::from_str(&prune(&["builder", "prune", "--format", "json"])).unwrap();
    assert_eq!(
        (&again["Blobs"], &again["SpaceReclaimed"]),
        (&serde_json::json!([]), &0.into()),
        "{again}"
    );
}
