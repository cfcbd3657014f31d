//! The analysis of purpose-built images, made through the store API (layer tars ingested,
//! configs with BuildKit-style history), read back from a real store.

use std::io::Write;

use strata_store::{Compression, Image, ImageConfig, LayerInfo, Store};

use super::*;

/// One entry of a test layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, Vec<u8>),
    /// `.wh.<name>` for this path.
    Gone(&'a str),
    /// `<dir>/.wh..wh..opq`.
    Opaque(&'a str),
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    // Distinct, incompressible-ish contents per seed so equal bytes are always deliberate.
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut put = |name: &str, kind: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    for e in entries {
        match e {
            E::Dir(p) => put(&format!("{p}/"), tar::EntryType::Directory, b""),
            E::File(p, data) => put(p, tar::EntryType::Regular, data),
            E::Gone(p) => {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                let wh = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                put(&wh, tar::EntryType::Regular, b"");
            }
            E::Opaque(dir) => put(&format!("{dir}/.wh..wh..opq"), tar::EntryType::Regular, b""),
        }
    }
    b.into_inner().unwrap()
}

fn layer(store: &Store, entries: &[E<'_>], compression: Compression) -> LayerInfo {
    let mut w = store.layer_writer(compression).unwrap();
    w.write_all(&tar_of(entries)).unwrap();
    w.finish().unwrap()
}

/// An image from `(created_by, layer)` steps; `None` layers are metadata-only entries.
fn image(store: &Store, steps: Vec<(&str, Option<Vec<E<'_>>>)>) -> Image {
    let mut history = Vec::new();
    let mut layers = Vec::new();
    for (i, (by, entries)) in steps.iter().enumerate() {
        let mut h = serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": by,
            "comment": "buildkit.dockerfile.v0",
        });
        match entries {
            Some(entries) => {
                let compression = [Compression::Zstd, Compression::None, Compression::Gzip][i % 3];
                layers.push(layer(store, entries, compression));
            }
            None => h["empty_layer"] = serde_json::Value::Bool(true),
        }
        history.push(h);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": history,
    });
    let config = ImageConfig::parse(&serde_json::to_vec(&config).unwrap()).unwrap();
    store.write_image(&config, &layers).unwrap()
}

/// The busybox-like base every test image starts from: 3000 + 30 bytes of files.
fn base<'a>() -> (&'a str, Option<Vec<E<'a>>>) {
    (
        "ADD rootfs.tar / # buildkit",
        Some(vec![
            E::Dir("bin"),
            E::File("bin/sh", bytes(3000, 1)),
            E::Dir("etc"),
            E::File("etc/passwd", bytes(30, 2)),
        ]),
    )
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

const APT_UPDATE: &str = "RUN /bin/sh -c apt-get update && apt-get install -y curl # buildkit";
const APT_CLEAN: &str = "RUN /bin/sh -c rm -rf /var/lib/apt/lists/* # buildkit";

/// Downloads package lists in one RUN and deletes them in the next.
fn apt_image(store: &Store) -> Image {
    image(
        store,
        vec![
            base(),
            ("CMD [\"sh\"]", None),
            (
                APT_UPDATE,
                Some(vec![
                    E::Dir("usr"),
                    E::Dir("usr/bin"),
                    E::File("usr/bin/curl", bytes(25_000, 3)),
                    E::Dir("var"),
                    E::Dir("var/lib"),
                    E::Dir("var/lib/apt"),
                    E::Dir("var/lib/apt/lists"),
                    E::File(
                        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
                        bytes(15_000, 4),
                    ),
                    E::File(
                        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
                        bytes(80_000, 5),
                    ),
                    E::File("var/lib/apt/lists/lock", Vec::new()),
                ]),
            ),
            (
                APT_CLEAN,
                Some(vec![
                    E::Dir("var/lib/apt/lists"),
                    E::Gone("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease"),
                    E::Gone(
                        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
                    ),
                    E::Gone("var/lib/apt/lists/lock"),
                ]),
            ),
        ],
    )
}

const APT_DOCKERFILE: &str = "\
# syntax=docker/dockerfile:1
FROM busybox
RUN apt-get update && apt-get install -y curl
RUN rm -rf /var/lib/apt/lists/*
";

#[test]
fn package_lists_deleted_in_a_later_run_are_waste_with_both_lines_named_and_a_fix() {
    let (_d, store) = store();
    let img = apt_image(&store);
    let df = strata_parser::parse(APT_DOCKERFILE).unwrap();
    let options = AnalyzeOptions {
        dockerfile: Some(DockerfileSource::new("Dockerfile", &df, None).unwrap()),
        ..AnalyzeOptions::default()
    };
    let a = analyze(&store, &img, &options).unwrap();

    // Stored: base 3000 + 30; layer 2: curl 25000 + lists 15000 + 80000 (+ an empty lock).
    //   3030 + 120000 = 123030.
    // Wasted: the two lists, deleted by layer 3: 15000 + 80000 = 95000.
    // Useful: 123030 - 95000 = 28030; efficiency 28030 / 123030 = 0.22783...
    assert_eq!(a.totals.content_bytes, 123_030);
    assert_eq!(a.totals.wasted_bytes, 95_000);
    assert_eq!(a.totals.deleted_bytes, 95_000);
    assert_eq!(a.totals.useful_bytes, 28_030);
    assert!((a.efficiency - 28_030.0 / 123_030.0).abs() < 1e-12);
    assert_eq!(a.totals.files, 3, "sh, passwd, curl");

    let l: Vec<(u64, u64, u64, u64)> = a
        .layers
        .iter()
        .map(|l| (l.added, l.modified, l.removed, l.wasted_bytes))
        .collect();
    assert_eq!(l, [(2, 0, 0, 0), (4, 0, 0, 95_000), (0, 0, 3, 0)]);
    assert_eq!(
        a.layers[1].instruction.as_ref().unwrap().display(),
        "RUN apt-get update && apt-get install -y curl"
    );
    assert_eq!(a.layers[1].source.as_ref().unwrap().line, 3);
    assert_eq!(a.layers[2].source.as_ref().unwrap().line, 4);
    assert_eq!(
        a.layers[0].source, None,
        "the base image's layer is not in the file"
    );
    // Sizes are the uncompressed tars, whatever the blob's compression.
    for (l, d) in a.layers.iter().zip(&img.diff_ids) {
        assert_eq!(l.size, store.layer_blobs(d).unwrap()[0].uncompressed_size);
    }

    assert_eq!(a.wasted.len(), 2);
    assert_eq!(
        (
            a.wasted[0].bytes,
            a.wasted[0].layer,
            a.wasted[0].by_layer,
            a.wasted[0].waste
        ),
        (80_000, 2, 3, Waste::Deleted)
    );

    assert_eq!(a.findings.len(), 1, "{:#?}", a.findings);
    let f = &a.findings[0];
    assert_eq!(
        (f.rule, f.severity),
        (Rule::DeletedLater, Severity::Warning)
    );
    assert_eq!((f.layer, f.related_layer), (2, Some(3)));
    assert_eq!((f.bytes, f.path_count), (95_000, 2));
    assert_eq!(f.source.as_ref().map(|s| s.line), Some(3));
    assert_eq!(f.related_source.as_ref().map(|s| s.line), Some(4));
    for needle in [
        "/var/lib/apt/lists/",
        "layer 2 `RUN apt-get update && apt-get install -y curl` (Dockerfile:3)",
        "layer 3 `RUN rm -rf /var/lib/apt/lists/*` (Dockerfile:4)",
        "the bytes stay in layer 2",
    ] {
        assert!(
            f.message.contains(needle),
            "{needle:?} not in {:?}",
            f.message
        );
    }
    assert!(f.fix.contains("same RUN"), "{}", f.fix);
    assert!(f.fix.contains("rm -rf /var/lib/apt/lists/*"), "{}", f.fix);

    // Without the Dockerfile the instructions are still named.
    let a = analyze(&store, &img, &AnalyzeOptions::default()).unwrap();
    assert!(a.findings[0]
        .message
        .contains("layer 3 `RUN rm -rf /var/lib/apt/lists/*`;"));
    assert!(a.findings[0].source.is_none());
}

#[test]
fn package_lists_left_in_the_layer_are_a_package_cache_finding() {
    let (_d, store) = store();
    let img = image(
        &store,
        vec![
            base(),
            (
                "RUN /bin/sh -c apt-get update && apt-get install -y curl # buildkit",
                Some(vec![
                    E::Dir("var/lib/apt/lists"),
                    E::File("var/lib/apt/lists/x_Packages", bytes(5000, 7)),
                    E::File("root/.cache/pip/http/ab", bytes(700, 8)),
                    E::File("tmp/build.log", bytes(10, 9)),
                ]),
            ),
        ],
    );
    let a = analyze(&store, &img, &AnalyzeOptions::default()).unwrap();
    let rules: Vec<(Rule, Severity, u64)> = a
        .findings
        .iter()
        .map(|f| (f.rule, f.severity, f.bytes))
        .collect();
    assert_eq!(
        rules,
        [
            (Rule::PackageCache, Severity::Warning, 5000),
            (Rule::PackageCache, Severity::Warning, 700),
            (Rule::TmpLeftovers, Severity::Info, 10),
        ]
    );
    assert!(a.findings[0].fix.contains("rm -rf /var/lib/apt/lists/*"));
    assert!(a.findings[1].fix.contains("--no-cache-dir"));
    assert!(a.findings[2].fix.contains("type=tmpfs,target=/tmp"));
    assert_eq!(
        a.efficiency, 1.0,
        "left-over caches are visible, so not waste"
    );
}

/// The same program built in one stage (compilers stay) and in two (only the binary moves).
#[test]
fn a_multi_stage_build_done_right_has_no_findings_and_a_single_stage_one_has_build_tools() {
    let (_d, store) = store();
    let app = bytes(50_000, 10);
    let good = image(
        &store,
        vec![
            base(),
            ("CMD [\"sh\"]", None),
            (
                "COPY /out/app /usr/local/bin/app # buildkit",
                Some(vec![
                    E::Dir("usr/local/bin"),
                    E::File("usr/local/bin/app", app.clone()),
                ]),
            ),
            ("USER 1000", None),
            ("ENTRYPOINT [\"/usr/local/bin/app\"]", None),
        ],
    );
    let a = analyze(&store, &good, &AnalyzeOptions::default()).unwrap();
    assert!(a.findings.is_empty(), "{:#?}", a.findings);
    assert_eq!(a.efficiency, 1.0);
    assert_eq!(a.totals.content_bytes, 3030 + 50_000);
    assert_eq!(
        a.layers[1].history.as_ref().map(|h| h.created_by.as_str()),
        Some("COPY /out/app /usr/local/bin/app # buildkit"),
        "metadata-only entries are skipped when matching layers"
    );

    let bad = image(
        &store,
        vec![
            base(),
            (
                "RUN /bin/sh -c apt-get install -y build-essential && rm -rf /var/lib/apt/lists/* # buildkit",
                Some(vec![
                    E::File("usr/bin/x86_64-linux-gnu-gcc-12", bytes(900, 11)),
                    E::File("usr/bin/make", bytes(250, 12)),
                    E::File("usr/lib/gcc/x86_64-linux-gnu/12/cc1", bytes(30_000, 13)),
                    E::File("usr/include/stdio.h", bytes(300, 14)),
                ]),
            ),
            ("RUN /bin/sh -c make -C /src # buildkit", Some(vec![E::File("usr/local/bin/app", app)])),
        ],
    );
    let a = analyze(&store, &bad, &AnalyzeOptions::default()).unwrap();
    assert_eq!(a.findings.len(), 1, "{:#?}", a.findings);
    let f = &a.findings[0];
    assert_eq!(
        (f.rule, f.layer, f.bytes, f.path_count),
        (Rule::BuildTools, 2, 31_450, 4)
    );
    for needle in ["C/C++ compiler", "build system", "headers"] {
        assert!(f.message.contains(needle), "{needle} not in {}", f.message);
    }
    assert!(f.fix.contains("multi-stage"));
    assert_eq!(f.paths[0], "/usr/lib/gcc/x86_64-linux-gnu/12/cc1");
}

#[test]
fn duplicated_and_rewritten_files_across_layers_are_found_and_counted() {
    let (_d, store) = store();
    let lib = bytes(2 << 20, 20); // 2 MiB: a warning-sized copy
    let small = bytes(4000, 21);
    let img = image(
        &store,
        vec![
            base(),
            (
                "COPY vendor /app/vendor # buildkit",
                Some(vec![
                    E::Dir("app/vendor"),
                    E::File("app/vendor/lib.so", lib.clone()),
                    E::File("app/vendor/small.js", small.clone()),
                ]),
            ),
            (
                "RUN /bin/sh -c cp -r /app/vendor /app/copy # buildkit",
                Some(vec![
                    E::Dir("app/copy"),
                    E::File("app/copy/lib.so", lib.clone()),
                    E::File("app/copy/small.js", small.clone()),
                ]),
            ),
            (
                "RUN /bin/sh -c chmod -R 755 /app/vendor # buildkit",
                Some(vec![
                    E::Dir("app/vendor"),
                    E::File("app/vendor/lib.so", lib.clone()),
                    E::File("app/vendor/small.js", small.clone()),
                ]),
            ),
        ],
    );
    let a = analyze(&store, &img, &AnalyzeOptions::default()).unwrap();
    let (l, s) = (lib.len() as u64, small.len() as u64);
    // Stored: the base (3030) and three copies of l + s bytes.
    // Layer 4 rewrites layer 2's files with the same bytes: layer 2's copies are waste
    // (rewritten, l + s). The copies still visible are layer 3's (/app/copy) and layer 4's
    // (/app/vendor); the lowest one is the original, so layer 4's are duplicates (l + s).
    // Useful: 3030 + l + s; efficiency = (3030 + l + s) / (3030 + 3 (l + s)).
    assert_eq!(a.totals.content_bytes, 3030 + 3 * (l + s));
    assert_eq!(a.totals.overwritten_bytes, l + s);
    assert_eq!(a.totals.duplicate_bytes, l + s);
    assert_eq!(a.totals.useful_bytes, 3030 + l + s);
    let want = (3030 + l + s) as f64 / (3030 + 3 * (l + s)) as f64;
    assert!(
        (a.efficiency - want).abs() < 1e-12,
        "{} != {want}",
        a.efficiency
    );
    assert_eq!(
        a.layers.iter().map(|l| l.wasted_bytes).collect::<Vec<_>>(),
        [0, l + s, 0, l + s]
    );

    let found: Vec<(Rule, Severity, usize, Option<usize>, u64)> = a
        .findings
        .iter()
        .map(|f| (f.rule, f.severity, f.layer, f.related_layer, f.bytes))
        .collect();
    assert_eq!(
        found,
        [
            (Rule::MetadataRewrite, Severity::Warning, 2, Some(4), l + s),
            (Rule::DuplicateFiles, Severity::Warning, 4, Some(3), l + s),
        ]
    );
    let rewrite = &a.findings[0];
    assert!(rewrite.fix.contains("COPY --chown"), "{}", rewrite.fix);
    assert!(
        rewrite
            .message
            .starts_with("Layer 4 `RUN chmod -R 755 /app/vendor` stores"),
        "{}",
        rewrite.message
    );
    let dup = &a.findings[1];
    assert!(
        dup.message
            .contains("(e.g. /app/vendor/lib.so = /app/copy/lib.so)"),
        "{}",
        dup.message
    );
}

#[test]
fn a_large_file_copied_then_removed_is_its_own_finding() {
    let (_d, store) = store();
    let img =
        image(
            &store,
            vec![
            base(),
            (
                "COPY app.tar.gz /tmp/ # buildkit",
                Some(vec![E::Dir("tmp"), E::File("tmp/app.tar.gz", bytes(3 << 20, 30))]),
            ),
            (
                "RUN /bin/sh -c tar -xzf /tmp/app.tar.gz -C /opt && rm /tmp/app.tar.gz # buildkit",
                Some(vec![
                    E::Dir("opt/app"),
                    E::File("opt/app/run", bytes(1000, 31)),
                    E::Dir("tmp"),
                    E::Gone("tmp/app.tar.gz"),
                ]),
            ),
        ],
        );
    let a = analyze(&store, &img, &AnalyzeOptions::default()).unwrap();
    assert_eq!(a.findings.len(), 1, "{:#?}", a.findings);
    let f = &a.findings[0];
    assert_eq!(
        (f.rule, f.severity, f.layer, f.related_layer, f.bytes),
        (
            Rule::CopiedThenRemoved,
            Severity::Warning,
            2,
            Some(3),
            3 << 20
        )
    );
    assert!(f.fix.contains(".dockerignore") && f.fix.contains("--mount=type=bind"));
}

#[test]
fn opaque_directories_and_layer_changes() {
    let (_d, store) = store();
    let img = image(
        &store,
        vec![
            base(),
            (
                "RUN /bin/sh -c mkdir -p /srv/www && echo > /srv/www/a # buildkit",
                Some(vec![
                    E::Dir("srv/www"),
                    E::File("srv/www/a", bytes(100, 40)),
                    E::File("srv/www/b", bytes(200, 41)),
                ]),
            ),
            (
                "RUN /bin/sh -c rm -rf /srv/www && mkdir /srv/www && echo > /srv/www/c # buildkit",
                Some(vec![
                    E::Dir("srv/www"),
                    E::Opaque("srv/www"),
                    E::File("srv/www/c", bytes(10, 42)),
                    E::File("etc/passwd", bytes(31, 43)),
                ]),
            ),
        ],
    );
    let a = analyze(&store, &img, &AnalyzeOptions::default()).unwrap();
    let changes: Vec<String> = a.layers[2]
        .changes
        .iter()
        .map(|c| format!("{} {} {}", c.change.letter(), c.path, c.size))
        .collect();
    assert_eq!(
        changes,
        [
            "M /srv/www 0",
            "D /srv/www/a 100",
            "D /srv/www/b 200",
            "A /srv/www/c 10",
            "M /etc/passwd 31"
        ]
    );
    assert_eq!(
        (a.layers[2].added, a.layers[2].modified, a.layers[2].removed),
        (1, 1, 2)
    );
    // 300 deleted + 30 overwritten.
    assert_eq!(a.totals.wasted_bytes, 330);
}

#[test]
fn a_corrupt_layer_is_an_error_naming_the_layer() {
    let (_d, store) = store();
    let img = image(
        &store,
        vec![
            base(),
            (
                "RUN /bin/sh -c true # buildkit",
                Some(vec![E::File("x", bytes(5000, 50))]),
            ),
        ],
    );
    // Layer 2 is stored uncompressed (see `image`): flip one byte of file data.
    let path = store.blob_path(&img.layers[1].digest);
    let mut raw = std::fs::read(&path).unwrap();
    raw[600] ^= 0xff;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, raw).unwrap();
    let err = analyze(&store, &img, &AnalyzeOptions::default()).unwrap_err();
    assert!(
        matches!(err, crate::Error::AnalyzeLayer { layer: 2, diff_id, .. } if diff_id == img.diff_ids[1]),
        "{err:?}"
    );
    let chain = format!("{}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains("sha256") || chain.contains("digest"),
        "{chain}"
    );
}
