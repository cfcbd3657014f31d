//! The cache: hits, misses and why, --no-cache, reproducible images, pruning.

use strata_builder::PruneOptions;
use strata_store::{RefKind, Reference};

use crate::common::*;

const DF: &str = "FROM busybox\n\
ARG VERSION=1\n\
RUN echo prepare > /prepare\n\
RUN --mount=type=bind,source=src,target=/src cat /src/app.txt > /app\n\
RUN echo \"version $VERSION\" > /version\n\
CMD [\"cat\", \"/version\"]\n";

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn hits_misses_and_why() {
    let ts = TestStore::new();
    let ctx = context(&[("src/app.txt", "v1\n"), ("src/other.txt", "x\n")]);
    let e = &ts.engine;
    let mut log = Vec::new();
    let mut record = |title: &str, df: &str, args: &[(&str, &str)]| {
        let (r, t) = build_with(e, df, ctx.path(), |o| {
            o.build_args = args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
        r.unwrap();
        log.push(format!("## {title}"));
        log.extend(t.cache_lines());
    };
    record("first build", DF, &[]);
    record("same again", DF, &[]);
    record("a build arg changes", DF, &[("VERSION", "2")]);
    std::fs::write(ctx.path().join("src/app.txt"), "v2\n").unwrap();
    record("a bound context file changes", DF, &[("VERSION", "2")]);
    // Only the mtime changes: nothing to rebuild.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("src/app.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    drop(f);
    record("a file is touched", DF, &[("VERSION", "2")]);
    record(
        "an instruction is edited",
        &DF.replace("echo prepare", "echo prepared"),
        &[("VERSION", "2")],
    );
    record(
        "a step is inserted",
        &DF.replace("RUN echo prepare", "RUN echo first\nRUN echo prepared"),
        &[("VERSION", "2")],
    );
    insta::with_settings!({filters => vec![(r"sha256:[0-9a-f]{12}…", "sha256:[key]")]}, {
        insta::assert_snapshot!(log.join("\n"));
    });
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn no_cache_and_no_cache_filter() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let df = "FROM busybox AS a\nRUN echo a > /a\nFROM busybox\nRUN --mount=type=bind,from=a,target=/m cat /m/a > /b\n";
    // A fixed SOURCE_DATE_EPOCH makes a re-run of stage a give the same layer even when it
    // runs in another second (file times are clamped to it).
    let epoch = Some(1_700_000_000);
    let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| o.source_date_epoch = epoch);
    r.unwrap();
    let (r, t) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.no_cache = true;
        o.source_date_epoch = epoch;
    });
    r.unwrap();
    assert_eq!(
        t.cache_lines(),
        [
            "MISS RUN echo a > /a: the cache is off for this stage (--no-cache or --no-cache-filter)",
            "MISS RUN --mount=type=bind,from=a,target=/m cat /m/a > /b: the cache is off for this stage (--no-cache or --no-cache-filter)",
        ]
    );
    let (r, t) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.no_cache_filter = vec!["a".into()];
        o.source_date_epoch = epoch;
    });
    r.unwrap();
    let lines = t.cache_lines();
    assert!(lines[0].starts_with("MISS RUN echo a"), "{lines:?}");
    // Stage a made the same layer again, so the stage built on it still hits.
    assert!(lines[1].starts_with("HIT"), "{lines:?}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn source_date_epoch_gives_the_same_image_in_two_stores() {
    let df = "FROM busybox\nRUN mkdir /app && date > /app/built-at && echo hello > /app/hello\n\
              WORKDIR /srv\nENV A=1\nLABEL x=y\nCMD [\"cat\", \"/app/hello\"]\n";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let ts = TestStore::new();
        let ctx = context(&[]);
        let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| {
            o.no_cache = true;
            o.source_date_epoch = Some(1_700_000_000);
        });
        let r = r.unwrap();
        assert_eq!(
            r.image.config_parsed.created(),
            Some("2023-11-14T22:13:20Z")
        );
        ids.push((r.image.id(), r.image.manifest.digest));
        // `date` differs between the builds, but not within one second; make the content
        // itself the same by comparing what does not depend on the wall clock.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // `date` writes the wall clock into a file, so the layers differ: the builds are only
    // reproducible when the commands are. Build again without it.
    let df = df.replace("date > /app/built-at && ", "");
    let mut same = Vec::new();
    for _ in 0..2 {
        let ts = TestStore::new();
        let ctx = context(&[]);
        let (r, _) = build_with(&ts.engine, &df, ctx.path(), |o| {
            o.no_cache = true;
            o.source_date_epoch = Some(1_700_000_000);
        });
        let r = r.unwrap();
        same.push((r.image.id(), r.image.manifest.digest));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_ne!(ids[0], ids[1], "the wall clock in a file changes the image");
    assert_eq!(
        same[0], same[1],
        "same inputs, same image ID and manifest digest"
    );
    let ts = TestStore::new();
    let ctx = context(&[]);
    let (r, _) = build_with(&ts.engine, &df, ctx.path(), |o| o.no_cache = true);
    assert_ne!(
        r.unwrap().image.id(),
        same[0].0,
        "without the epoch, times differ"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn prune_keeps_what_refs_reach_and_drops_the_rest() {
    let ts = TestStore::new();
    let e = &ts.engine;
    let ctx = context(&[]);
    let (kept, _) = build_ok(
        e,
        "FROM busybox\nRUN echo kept > /k\n",
        ctx.path(),
        &["kept:1"],
    );
    let (gone, _) = build_ok(
        e,
        "FROM busybox\nRUN echo gone > /g\n",
        ctx.path(),
        &["gone:1"],
    );
    build_ok(
        e,
        "FROM busybox\nRUN --mount=type=cache,target=/c echo x > /c/x\n",
        ctx.path(),
        &["cachemount:1"],
    );
    let chain = |i: &strata_store::Image| strata_builder::engine::chain_name(&i.diff_ids).unwrap();
    e.store()
        .untag(&Reference::parse("gone:1").unwrap())
        .unwrap();
    // Without --cache the cache records keep the untagged image's layer.
    let report = e.prune(&PruneOptions::default()).unwrap();
    assert!(report.snapshots.is_empty(), "{:?}", report.snapshots);
    assert!(snapshots(e).contains(&chain(&gone.image)));
    // Dry run with the cache: nothing goes.
    let dry = e
        .prune(&PruneOptions {
            dry_run: true,
            cache: true,
        })
        .unwrap();
    assert!(dry.cache_records >= 3);
    assert!(snapshots(e).contains(&chain(&gone.image)));
    assert!(!e.store().list_refs(RefKind::Cache).unwrap().is_empty());
    // With the cache: the untagged image's layer folder goes, tagged ones stay.
    let report = e
        .prune(&PruneOptions {
            dry_run: false,
            cache: true,
        })
        .unwrap();
    assert_eq!(report.snapshots.len(), 1, "{:?}", report.snapshots);
    assert_eq!(report.snapshots[0].0, chain(&gone.image));
    assert_eq!(report.cache_mounts.len(), 1);
    assert!(report.gc.bytes_freed > 0);
    let left = snapshots(e);
    assert!(left.contains(&chain(&kept.image)));
    assert!(!left.contains(&chain(&gone.image)));
    assert!(e.store().list_refs(RefKind::Cache).unwrap().is_empty());
    assert!(e.store().fsck(Default::default()).unwrap().is_clean());
    // Builds still work and still find the tagged image's layers.
    let (again, t) = build_ok(e, "FROM kept:1\nRUN cat /k\n", ctx.path(), &[]);
    assert_eq!(read_text(e, &again.image, "/k").as_deref(), Some("kept\n"));
    assert!(t.output().contains(&"kept".to_string()));
}
