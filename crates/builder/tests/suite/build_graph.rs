//! Multi-stage builds: parallel stages, skipped stages, stages built once, args across
//! stages, layer limits.

use std::collections::BTreeMap;
use std::time::Instant;

use strata_builder::progress::{Event, StepId};

use crate::common::*;

/// When each step started and ended (`StepStarted` .. `StepDone`), by instruction text.
fn intervals(t: &Timed) -> BTreeMap<String, (Instant, Instant)> {
    let events = t.events();
    let mut names: BTreeMap<StepId, String> = BTreeMap::new();
    let mut starts: BTreeMap<StepId, Instant> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (at, e) in events {
        match e {
            Event::StepStarted(i) => {
                names.insert(i.id, format!("[{}] {}", i.stage, i.instruction));
                starts.insert(i.id, at);
            }
            Event::StepDone { step, .. } => {
                if let (Some(n), Some(s)) = (names.get(&step), starts.get(&step)) {
                    out.insert(n.clone(), (*s, at));
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn independent_stages_run_at_the_same_time() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let df = "FROM busybox AS left\nRUN sleep 1 && echo left > /l\n\
              FROM busybox AS right\nRUN sleep 1 && echo right > /r\n\
              FROM busybox\nRUN --mount=type=bind,from=left,target=/a --mount=type=bind,from=right,target=/b cat /a/l /b/r > /both\n";
    // Stages do not take turns on rayon's threads: even a one-thread pool runs both.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (r, t) = pool.install(|| build_with(&ts.engine, df, ctx.path(), |_| {}));
    let r = r.unwrap();
    assert_eq!(
        read_text(&ts.engine, &r.image, "/both").as_deref(),
        Some("left\nright\n")
    );
    let iv = intervals(&t);
    let left = iv["[left] RUN sleep 1 && echo left > /l"];
    let right = iv["[right] RUN sleep 1 && echo right > /r"];
    let last = iv
        .iter()
        .find(|(k, _)| k.starts_with("[stage-2] RUN"))
        .map(|(_, v)| *v)
        .unwrap();
    // The two sleeps overlap in time...
    assert!(left.0 < right.1 && right.0 < left.1, "{left:?} {right:?}");
    // ...and the stage that needs both starts after both are done.
    assert!(last.0 >= left.1 && last.0 >= right.1);

    // With one stage at a time (`--jobs 1`) they run one after the other.
    let (r, t) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.no_cache = true;
        o.max_stages = Some(1);
    });
    r.unwrap();
    let iv = intervals(&t);
    let left = iv["[left] RUN sleep 1 && echo left > /l"];
    let right = iv["[right] RUN sleep 1 && echo right > /r"];
    assert!(left.1 <= right.0 || right.1 <= left.0, "{left:?} {right:?}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn unused_stages_are_skipped_and_shared_stages_built_once() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let df = "FROM busybox AS broken\nRUN echo never runs && false\n\
              FROM busybox AS base\nRUN echo base > /base\n\
              FROM base AS one\nRUN echo one > /one\n\
              FROM base AS two\nRUN --mount=type=bind,from=one,target=/o cat /o/one /base > /two\n";
    let (r, t) = build_ok(&ts.engine, df, ctx.path(), &[]);
    assert_eq!(
        read_text(&ts.engine, &r.image, "/two").as_deref(),
        Some("one\nbase\n")
    );
    let started: Vec<String> = t
        .events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::StepStarted(i) => Some(format!(
                "[{} {}/{}] {}",
                i.stage, i.index, i.total, i.instruction
            )),
            _ => None,
        })
        .collect();
    insta::assert_debug_snapshot!(started, @r###"
    [
        "[base 1/2] FROM docker.io/library/busybox:latest",
        "[base 2/2] RUN echo base > /base",
        "[one 1/2] FROM base",
        "[one 2/2] RUN echo one > /one",
        "[two 1/2] FROM base",
        "[two 2/2] RUN --mount=type=bind,from=one,target=/o cat /o/one /base > /two",
    ]
    "###);
    // --target picks a stage; the broken stage is only built when asked for.
    let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.target = Some("one".into())
    });
    assert_eq!(
        read_text(&ts.engine, &r.unwrap().image, "/one").as_deref(),
        Some("one\n")
    );
    let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.target = Some("broken".into())
    });
    assert!(strata_builder::error_text(&r.unwrap_err()).contains("returned exit code 1"));
    let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.target = Some("nope".into())
    });
    let err = r.unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn args_and_env_flow_through_from_stage_and_global_args_pick_bases() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let df = "ARG BASE=busybox\nARG GLOBAL=g\n\
              FROM $BASE AS first\nARG X=1\nENV Y=2\nRUN true\n\
              FROM first\nARG GLOBAL\nRUN echo \"$X$Y$GLOBAL\" > /xy\n";
    let (r, t) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.build_args = vec![
            ("GLOBAL".into(), "cli".into()),
            ("UNUSED".into(), "u".into()),
        ]
    });
    let r = r.unwrap();
    assert_eq!(
        read_text(&ts.engine, &r.image, "/xy").as_deref(),
        Some("12cli\n")
    );
    assert_eq!(
        r.warnings,
        ["one or more build-args [UNUSED] were not consumed"]
    );
    assert!(t
        .events()
        .iter()
        .any(|(_, e)| matches!(e, Event::Warning { message, .. } if message.contains("UNUSED"))));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn more_than_128_layers_is_refused_before_anything_runs_and_128_builds() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    // busybox has one layer: 127 RUNs that each write a file reach 128.
    let runs = |n: usize| -> String { (0..n).map(|i| format!("RUN echo {i} > /f{i}\n")).collect() };
    let (r, t) = build_with(
        &ts.engine,
        &format!("FROM busybox AS deep\n{}", runs(128)),
        ctx.path(),
        |_| {},
    );
    let err = r.unwrap_err().to_string();
    assert!(
        err.starts_with(
            "stage deep would stack 129 filesystem layers (1 from its base, 128 from RUN/COPY/ADD)"
        ),
        "{err}"
    );
    assert!(
        err.contains("merge some of its RUN/COPY/ADD instructions"),
        "{err}"
    );
    assert!(!t
        .events()
        .iter()
        .any(|(_, e)| matches!(e, Event::StepStarted(_))));

    let (r, _) = build_ok(
        &ts.engine,
        &format!("FROM busybox\n{}", runs(127)),
        ctx.path(),
        &["deep:128"],
    );
    assert_eq!(r.image.diff_ids.len(), 128);
    assert_eq!(
        read_text(&ts.engine, &r.image, "/f126").as_deref(),
        Some("126\n")
    );
    assert_eq!(
        read_text(&ts.engine, &r.image, "/f0").as_deref(),
        Some("0\n")
    );
}
