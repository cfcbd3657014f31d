//! `strata analyze` end to end, through the binary, on purpose-built images made with the
//! store API: `apt:1` downloads package lists in one RUN and deletes them in the next,
//! `multi:1` is a multi-stage build done right (only the binary reaches the final stage).

mod common;

use std::path::Path;

use common::*;
use strata_store::{Reference, Store};

/// Run `strata --root ROOT ARGS...` in `tests/fixtures` (so `-f apt.Dockerfile` works);
/// exit code, stdout and stderr as one text.
fn strata(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::strata()
        .arg("--root")
        .arg(root)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
        .env_remove("NO_COLOR")
        .env_remove("STRATA_LOG_LEVEL")
        .output()
        .expect("strata runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn transcript(root: &Path, args: &[&str]) -> String {
    let (code, out, err) = strata(root, args);
    format!(
        "$ strata {}\nexit: {code}\n--- stdout\n{out}--- stderr\n{err}",
        args.join(" ")
    )
}

fn snap(root: &Path, name: &str, runs: &[&[&str]]) {
    let text: Vec<String> = runs.iter().map(|a| transcript(root, a)).collect();
    let mut s = settings(root);
    // Image IDs and diffIDs: the images are deterministic, but the snapshots are about the
    // analysis, not about how the store spells configs.
    s.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]");
    s.add_filter(r"\([0-9a-f]{12}\)", "([ID])");
    s.bind(|| insta::assert_snapshot!(name, text.join("\n")));
}

/// The busybox-like base layer: /bin/sh (3000 bytes) and /etc/passwd (30 bytes).
fn base_layer(store: &Store) -> strata_store::LayerInfo {
    layer(
        store,
        &layer_tar(&[
            ("bin/", b""),
            ("bin/sh", &[0x7f; 3000]),
            ("etc/", b""),
            ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        ]),
    )
}

const LISTS: &str = "var/lib/apt/lists/";
const IN_RELEASE: &str = "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease";
const PACKAGES: &str =
    "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages";

/// `apt:1` and `multi:1` in a new store at `root`.
fn seed(root: &Path) -> Store {
    let store = Store::open(root).unwrap();
    let base = base_layer(&store);

    let whiteout = |p: &str| {
        let (dir, name) = p.rsplit_once('/').unwrap();
        format!("{dir}/.wh.{name}")
    };
    let update = layer(
        &store,
        &layer_tar(&[
            ("usr/", b""),
            ("usr/bin/", b""),
            ("usr/bin/curl", &[0xcc; 25_000]),
            ("var/", b""),
            ("var/lib/", b""),
            ("var/lib/apt/", b""),
            (LISTS, b""),
            (IN_RELEASE, &[0x11; 15_000]),
            (PACKAGES, &[0x22; 80_000]),
            ("var/lib/apt/lists/lock", b""),
        ]),
    );
    let (w1, w2, w3) = (
        whiteout(IN_RELEASE),
        whiteout(PACKAGES),
        whiteout("var/lib/apt/lists/lock"),
    );
    let clean = layer(
        &store,
        &layer_tar(&[
            (LISTS, b""),
            (w1.as_str(), b""),
            (w2.as_str(), b""),
            (w3.as_str(), b""),
        ]),
    );
    let mut steps = base_steps();
    steps.push(step(
        "RUN /bin/sh -c apt-get update && apt-get install -y curl # buildkit",
        false,
        "2024-01-02T00:00:00Z",
    ));
    steps.push(step(
        "RUN /bin/sh -c rm -rf /var/lib/apt/lists/* # buildkit",
        false,
        "2024-01-02T00:00:00Z",
    ));
    steps.push(step(
        "CMD [\"curl\" \"--version\"]",
        true,
        "2024-01-02T00:00:00Z",
    ));
    let apt = store
        .write_image(
            &config("2024-01-02T00:00:00Z", &steps, &["curl", "--version"]),
            &[base.clone(), update, clean],
        )
        .unwrap();
    store
        .tag(&Reference::parse("apt:1").unwrap(), &apt)
        .unwrap();

    let app = layer(
        &store,
        &layer_tar(&[
            ("usr/", b""),
            ("usr/local/", b""),
            ("usr/local/bin/", b""),
            ("usr/local/bin/app", &[0xab; 50_000]),
        ]),
    );
    let mut steps = base_steps();
    steps.push(step(
        "COPY /out/app /usr/local/bin/app # buildkit",
        false,
        "2024-01-03T00:00:00Z",
    ));
    steps.push(step("USER 1000", true, "2024-01-03T00:00:00Z"));
    let multi = store
        .write_image(
            &config("2024-01-03T00:00:00Z", &steps, &["/usr/local/bin/app"]),
            &[base, app],
        )
        .unwrap();
    store
        .tag(&Reference::parse("multi:1").unwrap(), &multi)
        .unwrap();
    store
}

#[test]
fn analyze_names_the_waste_its_instructions_and_the_fix() {
    let (_d, root) = temp_root();
    seed(&root);
    snap(
        &root,
        "analyze_apt",
        &[
            &["analyze", "apt:1"],
            &["analyze", "-f", "apt.Dockerfile", "apt:1"],
        ],
    );
}

#[test]
fn analyze_layer_lists_its_changes_as_a_tree() {
    let (_d, root) = temp_root();
    seed(&root);
    snap(
        &root,
        "analyze_layer",
        &[
            &["analyze", "--layer", "2", "apt:1"],
            &["analyze", "--layer", "3", "-f", "apt.Dockerfile", "apt:1"],
        ],
    );
}

#[test]
fn a_multi_stage_image_done_right_has_no_findings() {
    let (_d, root) = temp_root();
    seed(&root);
    snap(&root, "analyze_multi", &[&["analyze", "multi:1"]]);
}

#[test]
fn json_for_ci_and_fail_under() {
    let (_d, root) = temp_root();
    seed(&root);
    let (code, out, err) = strata(&root, &["analyze", "--format", "json", "apt:1"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reference"], "apt:1");
    // 3030 + 25000 + 15000 + 80000 = 123030 stored; 95000 deleted; 28030 useful.
    assert_eq!(v["totals"]["content_bytes"], 123_030);
    assert_eq!(v["totals"]["wasted_bytes"], 95_000);
    assert_eq!(v["totals"]["useful_bytes"], 28_030);
    let eff = v["efficiency"].as_f64().unwrap();
    assert!((eff - 28_030.0 / 123_030.0).abs() < 1e-12, "{eff}");
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    assert_eq!(v["layers"][1]["instruction"]["keyword"], "RUN");
    assert_eq!(v["findings"][0]["rule"], "deleted-later");
    assert_eq!(v["findings"][0]["layer"], 2);
    assert_eq!(v["findings"][0]["related_layer"], 3);
    assert_eq!(v["wasted"][0]["waste"], "deleted");

    let (code, out, _) = strata(
        &root,
        &["analyze", "--format", "json", "--layer", "3", "apt:1"],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{changes:?}");
    assert_eq!(changes[1]["change"], "D");
    assert_eq!(changes[1]["size"], 15_000);

    // 22.8% efficient: below 50% fails (exit 1, the report still printed), 20% passes.
    let (code, out, err) = strata(&root, &["analyze", "--fail-under", "50%", "apt:1"]);
    assert_eq!(code, 1);
    assert!(out.contains("Efficiency:  22.8%"), "{out}");
    assert_eq!(
        err,
        "Error: efficiency 22.8% is below --fail-under 50.0% (image apt:1)\n"
    );
    assert_eq!(
        strata(&root, &["analyze", "--fail-under", "0.2", "apt:1"]).0,
        0
    );
    assert_eq!(
        strata(&root, &["analyze", "--fail-under", "100", "multi:1"]).0,
        0
    );
}

#[test]
fn usage_errors() {
    let (_d, root) = temp_root();
    seed(&root);
    snap(
        &root,
        "analyze_errors",
        &[
            &["analyze", "--layer", "4", "apt:1"],
            &["analyze", "--fail-under", "150%", "apt:1"],
            &[
                "analyze",
                "-f",
                "apt.Dockerfile",
                "--target",
                "nothere",
                "apt:1",
            ],
            &["analyze", "nothere:1"],
        ],
    );
}
