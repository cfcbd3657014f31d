//! `analyze` on images built here (not assembled by hand): the waste, findings and
//! efficiency of purpose-built Dockerfiles, checked against numbers computed by hand from
//! what each RUN and COPY writes.

use strata_builder::analyze::{analyze, AnalyzeOptions, DockerfileSource, Rule};
use strata_store::Image;

use crate::common::*;

/// Bytes of file contents in the busybox base image's one layer (symlinks store none).
fn base_bytes(ts: &TestStore) -> u64 {
    let base = ts.engine.store().resolve("busybox:latest").unwrap();
    let file = |p: &str| read_file(&ts.engine, &base, p).unwrap().len() as u64;
    std::fs::metadata("/bin/busybox").unwrap().len() + file("/etc/passwd") + file("/etc/group")
}

fn analysis(ts: &TestStore, image: &Image, dockerfile: &str) -> strata_builder::analyze::Analysis {
    let df = strata_parser::parse(dockerfile).unwrap();
    let options = AnalyzeOptions {
        dockerfile: Some(DockerfileSource::new("Dockerfile", &df, None).unwrap()),
        ..AnalyzeOptions::default()
    };
    analyze(ts.engine.store(), image, &options).unwrap()
}

const LISTS: &str = "\
FROM busybox
RUN mkdir -p /var/lib/apt/lists /usr/bin && head -c 80000 /dev/zero | tr '\\0' p > /var/lib/apt/lists/deb_Packages && head -c 15000 /dev/zero | tr '\\0' r > /var/lib/apt/lists/deb_InRelease && echo tool > /usr/bin/tool
RUN rm -rf /var/lib/apt/lists/*
CMD [\"tool\"]
";

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_package_list_deleted_in_a_later_run_is_waste_naming_both_lines() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let (built, _) = build_ok(&ts.engine, LISTS, ctx.path(), &["lists:1"]);
    let a = analysis(&ts, &built.image, LISTS);

    // Stored: the base, then 80000 + 15000 of lists and 5 bytes of tool; the lists (95000)
    // are deleted by the next RUN, so only the base and the tool are useful.
    let base = base_bytes(&ts);
    assert_eq!(a.totals.content_bytes, base + 95_005);
    assert_eq!(a.totals.deleted_bytes, 95_000);
    assert_eq!(a.totals.wasted_bytes, 95_000);
    assert_eq!(a.totals.useful_bytes, base + 5);
    let expected = (base + 5) as f64 / (base + 95_005) as f64;
    assert!((a.efficiency - expected).abs() < 1e-12, "{}", a.efficiency);
    assert_eq!(a.layers.len(), 3);
    assert_eq!(a.layers[1].wasted_bytes, 95_000);
    assert_eq!(a.layers[2].removed, 2);

    assert_eq!(a.findings.len(), 1, "{:#?}", a.findings);
    let f = &a.findings[0];
    assert_eq!(f.rule, Rule::DeletedLater);
    assert_eq!((f.layer, f.related_layer), (2, Some(3)));
    assert_eq!((f.bytes, f.path_count), (95_000, 2));
    // Both lines named: the RUN that downloaded (line 2) and the one that deleted (line 3).
    assert_eq!(f.source.as_ref().map(|s| s.line), Some(2));
    assert_eq!(f.related_source.as_ref().map(|s| s.line), Some(3));
    assert!(f.message.contains("(Dockerfile:2)"), "{}", f.message);
    assert!(f.message.contains("(Dockerfile:3)"), "{}", f.message);
    assert!(f.fix.contains("same RUN"), "{}", f.fix);
    assert!(f.fix.contains("rm -rf /var/lib/apt/lists/*"), "{}", f.fix);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_multi_stage_build_done_right_has_no_findings() {
    let ts = TestStore::new();
    let df = "\
FROM busybox AS build
RUN mkdir /out && head -c 50000 /dev/zero | tr '\\0' x > /out/app && head -c 30000 /dev/zero | tr '\\0' o > /out/app.o && rm /out/app.o
FROM busybox
COPY --from=build /out/app /usr/local/bin/app
USER 1000
";
    let ctx = context(&[]);
    let (built, _) = build_ok(&ts.engine, df, ctx.path(), &["multi:1"]);
    let a = analysis(&ts, &built.image, df);
    assert!(a.findings.is_empty(), "{:#?}", a.findings);
    assert_eq!(a.totals.wasted_bytes, 0);
    assert_eq!(a.totals.content_bytes, base_bytes(&ts) + 50_000);
    assert_eq!(a.efficiency, 1.0);
    assert_eq!(
        a.layers.len(),
        2,
        "the build stage's layers are not in the image"
    );
    assert_eq!(a.layers[1].source.as_ref().map(|s| s.line), Some(4));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn files_duplicated_across_layers_are_found_and_counted() {
    let ts = TestStore::new();
    let data = "d".repeat(40_000);
    let df = "\
FROM busybox
COPY data.bin /opt/one/data.bin
COPY data.bin /opt/two/data.bin
RUN cp /opt/one/data.bin /opt/three.bin && echo unique > /opt/note
";
    let ctx = context(&[("data.bin", &data)]);
    let (built, _) = build_ok(&ts.engine, df, ctx.path(), &["dup:1"]);
    let a = analysis(&ts, &built.image, df);

    // Stored: base + 3 copies of 40000 + 7 (note). The first copy is the original; the
    // other two are duplicates: 80000 wasted.
    let base = base_bytes(&ts);
    assert_eq!(a.totals.content_bytes, base + 120_007);
    assert_eq!(a.totals.duplicate_bytes, 80_000);
    assert_eq!(a.totals.wasted_bytes, 80_000);
    assert_eq!(a.totals.useful_bytes, base + 40_007);
    let expected = (base + 40_007) as f64 / (base + 120_007) as f64;
    assert!((a.efficiency - expected).abs() < 1e-12, "{}", a.efficiency);
    let dups: Vec<(usize, Option<usize>, u64, Option<usize>)> = a
        .findings
        .iter()
        .filter(|f| f.rule == Rule::DuplicateFiles)
        .map(|f| {
            (
                f.layer,
                f.related_layer,
                f.bytes,
                f.source.as_ref().map(|s| s.line),
            )
        })
        .collect();
    assert_eq!(
        dups,
        [(3, Some(2), 40_000, Some(3)), (4, Some(2), 40_000, Some(4))],
        "{:#?}",
        a.findings
    );
}
