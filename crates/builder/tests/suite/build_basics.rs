//! The seed example, metadata instructions, images and failures.

use strata_builder::imageconfig::exec_config;
use strata_builder::progress::Event;
use strata_store::RefKind;

use crate::common::*;

const SEED_BASE: &str = "FROM busybox\nRUN mkdir /opt/ && echo \"base jdk env\" > /opt/env\nCMD [\"cat\",\"/opt/env\"]\n";
const SEED_URM: &str = "FROM layer-base:v1\nRUN echo \"urm service startup\" > /opt/startup\nCMD [\"cat\",\"/opt/startup\"]\n";
const SEED_SSO: &str = "FROM layer-base:v1\nRUN echo \"sso service startup\" > /opt/startup\nCMD [\"cat\",\"/opt/startup\"]\n";

/// `docker history`'s view, oldest first: CREATED BY and SIZE (`0B` for metadata).
fn history_table(ts: &TestStore, image: &strata_store::Image) -> String {
    history(&ts.engine, image)
        .into_iter()
        .map(|(by, empty, size)| {
            let size = if empty {
                "0B".to_string()
            } else {
                format!("{}B", size.unwrap_or(0))
            };
            format!("{size:>9}  {by}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn seed_example_builds_shares_its_base_and_rebuilds_from_cache() {
    let ts = TestStore::new();
    let e = &ts.engine;
    let base_ctx = context(&[]);
    let (base, _) = build_ok(e, SEED_BASE, base_ctx.path(), &["layer-base:v1"]);
    let urm_ctx = context(&[]);
    let (urm, _) = build_ok(e, SEED_URM, urm_ctx.path(), &["layer-urm:v1"]);
    let sso_ctx = context(&[]);
    let (sso, _) = build_ok(e, SEED_SSO, sso_ctx.path(), &["layer-sso:v1"]);

    // The images behave.
    assert_eq!(
        read_text(e, &urm.image, "/opt/env").as_deref(),
        Some("base jdk env\n")
    );
    assert_eq!(
        read_text(e, &urm.image, "/opt/startup").as_deref(),
        Some("urm service startup\n")
    );
    assert_eq!(
        read_text(e, &sso.image, "/opt/startup").as_deref(),
        Some("sso service startup\n")
    );
    let cmd = exec_config(&urm.image.config_parsed).cmd().clone().unwrap();
    assert_eq!(cmd, ["cat", "/opt/startup"]);
    assert_eq!(
        e.store().resolve("layer-urm:v1").unwrap().id(),
        urm.image.id()
    );

    // One sized layer per RUN, 0B for CMD; urm = busybox + base RUN + its RUN.
    assert_eq!(base.image.diff_ids.len(), 2);
    assert_eq!(urm.image.diff_ids.len(), 3);
    assert_eq!(urm.image.diff_ids[..2], base.image.diff_ids[..]);
    assert_eq!(sso.image.diff_ids[..2], base.image.diff_ids[..]);
    insta::assert_snapshot!(history_table(&ts, &urm.image), @r###"
     2125312B  /bin/sh -c #(nop) ADD file:busybox in / 
           0B  /bin/sh -c #(nop)  CMD ["sh"]
        2560B  RUN /bin/sh -c mkdir /opt/ && echo "base jdk env" > /opt/env # buildkit
           0B  CMD ["cat" "/opt/env"]
        2560B  RUN /bin/sh -c echo "urm service startup" > /opt/startup # buildkit
           0B  CMD ["cat" "/opt/startup"]
    "###);
    let h = urm.image.config_parsed.oci.history().clone().unwrap();
    assert_eq!(h[2].comment().as_deref(), Some("buildkit.dockerfile.v0"));
    assert_eq!(h[3].empty_layer(), Some(true));

    // urm and sso stack on the very same lower folders of the base.
    let snap = e.snapshotter().unwrap();
    let top = |i: &strata_store::Image| strata_builder::engine::chain_name(&i.diff_ids).unwrap();
    let urm_gd = snap.graph_driver_data(&top(&urm.image)).unwrap();
    let sso_gd = snap.graph_driver_data(&top(&sso.image)).unwrap();
    let base_gd = snap.graph_driver_data(&top(&base.image)).unwrap();
    assert_ne!(urm_gd.upper_dir, sso_gd.upper_dir);
    // vfs (the suite's second run) copies each layer whole: there are no lower folders.
    if urm_gd.name == "overlay2" {
        let lowers = urm_gd.lower_dir.clone().unwrap();
        assert_eq!(Some(lowers.clone()), sso_gd.lower_dir);
        let expected = format!(
            "{}:{}",
            base_gd.upper_dir.display(),
            base_gd.lower_dir.clone().unwrap()
        );
        assert_eq!(lowers, expected);
    }
    // One folder per distinct layer: busybox, base RUN, urm RUN, sso RUN.
    assert_eq!(snapshots(e).len(), 4);

    // A rebuild is all HIT and makes the same images.
    for (df, ctx, tag, first) in [
        (SEED_BASE, &base_ctx, "layer-base:v1", &base),
        (SEED_URM, &urm_ctx, "layer-urm:v1", &urm),
        (SEED_SSO, &sso_ctx, "layer-sso:v1", &sso),
    ] {
        let (again, t) = build_ok(e, df, ctx.path(), &[tag]);
        assert_eq!(again.image.id(), first.image.id(), "{tag}");
        assert_eq!(t.cache_lines().len(), 1);
        assert!(
            t.cache_lines().iter().all(|l| l.starts_with("HIT")),
            "{:?}",
            t.cache_lines()
        );
        assert!(again.steps.iter().all(|s| s.cached));
    }
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn metadata_instructions_set_the_config_and_history() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let df = r#"FROM busybox
LABEL org.example.team=build "with space"="a b"
ENV APP_HOME=/srv/app LANG=C.UTF-8
ENV GREETING="hello $APP_HOME"
ARG VERSION=1.2
EXPOSE 8080 53/udp
VOLUME ["/data", "/logs"]
USER app:staff
WORKDIR $APP_HOME
WORKDIR sub
SHELL ["/bin/sh", "-ec"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD wget -q -O- http://localhost/ || exit 1
ONBUILD RUN echo triggered > /onbuild
MAINTAINER someone@example.com
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $GREETING"]
"#;
    let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.labels = vec![("from.cli".into(), "yes".into())];
    });
    let r = r.unwrap();
    let c = &r.image.config_parsed;
    let x = exec_config(c);
    let env = x.env().clone().unwrap();
    assert!(env.contains(&"APP_HOME=/srv/app".to_string()), "{env:?}");
    assert!(
        env.contains(&"GREETING=hello /srv/app".to_string()),
        "{env:?}"
    );
    assert!(env.iter().any(|e| e.starts_with("PATH=")));
    assert!(
        !env.iter().any(|e| e.starts_with("VERSION=")),
        "ARG is not in the image"
    );
    let labels = x.labels().clone().unwrap();
    assert_eq!(labels["org.example.team"], "build");
    assert_eq!(labels["with space"], "a b");
    assert_eq!(labels["from.cli"], "yes");
    let sorted = |v: Option<Vec<String>>| {
        let mut v = v.unwrap();
        v.sort();
        v
    };
    assert_eq!(sorted(x.exposed_ports().clone()), ["53/udp", "8080/tcp"]);
    assert_eq!(sorted(x.volumes().clone()), ["/data", "/logs"]);
    assert_eq!(x.user().as_deref(), Some("app:staff"));
    assert_eq!(x.working_dir().as_deref(), Some("/srv/app/sub"));
    assert_eq!(x.stop_signal().as_deref(), Some("SIGINT"));
    assert_eq!(x.entrypoint().clone().unwrap(), ["/bin/sh", "-c"]);
    assert_eq!(x.cmd().clone().unwrap(), ["echo $GREETING"]);
    assert_eq!(c.docker.shell.clone().unwrap(), ["/bin/sh", "-ec"]);
    let hc = c.docker.healthcheck.clone().unwrap();
    assert_eq!(hc.interval, Some(30_000_000_000));
    assert_eq!(hc.retries, Some(3));
    assert_eq!(
        c.docker.on_build.clone().unwrap(),
        ["RUN echo triggered > /onbuild"]
    );
    assert_eq!(c.oci.author().as_deref(), Some("someone@example.com"));
    // WORKDIR made the folders, owned by the USER; one layer (both WORKDIRs create).
    assert_eq!(r.image.diff_ids.len(), 3);
    let texts: Vec<(String, bool)> = history(&ts.engine, &r.image)
        .into_iter()
        .skip(2)
        .map(|(t, e, _)| (t, e))
        .collect();
    insta::assert_debug_snapshot!(texts);
    assert!(c.oci.created().is_some());
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn workdir_makes_a_layer_only_for_a_new_folder_and_owns_it_by_user() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let (r, _) = build_ok(
        &ts.engine,
        "FROM busybox\nWORKDIR /tmp\nWORKDIR /\nUSER app\nWORKDIR /home/app/work\nRUN stat -c '%u:%g %a' /home/app/work /home/app > /home/app/work/owners\n",
        ctx.path(),
        &[],
    );
    let h = history(&ts.engine, &r.image);
    assert_eq!(h[2], ("WORKDIR /tmp".to_string(), true, None));
    assert_eq!(h[3], ("WORKDIR /".to_string(), true, None));
    assert!(!h[5].1, "WORKDIR /home/app/work made a layer: {h:?}");
    assert_eq!(
        read_text(&ts.engine, &r.image, "/home/app/work/owners").as_deref(),
        Some("1000:1000 755\n1000:1000 755\n")
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_run_that_changes_nothing_makes_no_layer() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let (r, _) = build_ok(
        &ts.engine,
        "FROM busybox\nRUN true\nRUN cat /etc/passwd > /dev/null\n",
        ctx.path(),
        &[],
    );
    assert_eq!(r.image.diff_ids.len(), 1);
    let h = history(&ts.engine, &r.image);
    assert_eq!(
        h[2],
        ("RUN /bin/sh -c true # buildkit".to_string(), true, None)
    );
    assert!(h[3].1);
    // Untagged results are kept (and listed) as dangling images.
    assert!(ts
        .engine
        .store()
        .get_ref(RefKind::Untagged, &r.image.id().hex())
        .unwrap()
        .is_some());
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn failing_run_commits_nothing_and_tags_nothing() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let e = &ts.engine;
    let before_refs = e.store().all_refs().unwrap();
    let (r, t) = build_with(
        e,
        "FROM busybox\nRUN echo partial > /partial && echo to-stderr >&2 && exit 3\nRUN echo never\n",
        ctx.path(),
        |o| o.tags = vec!["broken:1".into()],
    );
    let err = r.unwrap_err();
    assert_eq!(
        err.to_string(),
        "RUN echo partial > /partial && echo to-stderr >&2 && exit 3 returned exit code 3"
    );
    // Only the base was unpacked; the failed step left no snapshot or layer.
    let base = e.store().resolve("busybox").unwrap();
    assert_eq!(
        snapshots(e),
        [strata_builder::engine::chain_name(&base.diff_ids).unwrap()]
    );
    let after_refs = e.store().all_refs().unwrap();
    assert_eq!(
        after_refs.len(),
        before_refs.len(),
        "no tag, no cache record"
    );
    assert!(e.store().resolve("broken:1").is_err());
    let events = t.events();
    assert!(events.iter().any(
        |(_, ev)| matches!(ev, Event::StepFailed { message, .. } if message.contains("exit code 3"))
    ));
    assert!(events
        .iter()
        .any(|(_, ev)| matches!(ev, Event::BuildFailed { .. })));
    assert!(t.output().contains(&"to-stderr".to_string()));
    // The second RUN never started.
    assert!(!events
        .iter()
        .any(|(_, ev)| matches!(ev, Event::StepStarted(i) if i.instruction.contains("never"))));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn step_logs_are_kept_whole_on_disk() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let (r, _) = build_ok(
        &ts.engine,
        "FROM busybox\nRUN seq 1 20000 && head -c 100000 /dev/zero | tr '\\0' x && echo && echo err >&2\n",
        ctx.path(),
        &[],
    );
    let log = std::fs::read_to_string(r.log_dir.join("2.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "1");
    assert_eq!(lines[19_999], "20000");
    assert_eq!(lines[20_000].len(), 100_000);
    assert_eq!(lines[20_001], "[stderr] err");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn onbuild_triggers_run_when_the_image_is_a_base() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    build_ok(
        &ts.engine,
        "FROM busybox\nONBUILD RUN echo triggered > /onbuild\n",
        ctx.path(),
        &["with-triggers:1"],
    );
    let (child, t) = build_ok(
        &ts.engine,
        "FROM with-triggers:1\nRUN cat /onbuild\n",
        ctx.path(),
        &[],
    );
    assert_eq!(
        read_text(&ts.engine, &child.image, "/onbuild").as_deref(),
        Some("triggered\n")
    );
    assert_eq!(
        child.image.config_parsed.docker.on_build, None,
        "triggers are not inherited"
    );
    assert!(t.output().contains(&"triggered".to_string()));
    // Triggers of an earlier stage run in the stages built on it.
    let (r, _) = build_ok(
        &ts.engine,
        "FROM busybox AS base\nONBUILD RUN echo from-stage > /f\nFROM base\nRUN cat /f\n",
        ctx.path(),
        &[],
    );
    assert_eq!(
        read_text(&ts.engine, &r.image, "/f").as_deref(),
        Some("from-stage\n")
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn missing_base_image_says_how_to_get_one() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let (r, t) = build_with(
        &ts.engine,
        "FROM alpine:3.19\nRUN true\n",
        ctx.path(),
        // Offline: a missing image is not pulled (the default would try docker.io).
        |o| o.pull = strata_builder::PullPolicy::Never,
    );
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("strata load") && err.contains("strata import"),
        "{err}"
    );
    assert!(!t
        .events()
        .iter()
        .any(|(_, e)| matches!(e, Event::StepStarted(_))));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn lint_warnings_are_reported_and_check_error_makes_them_fatal() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let df = "FROM busybox as base\nRUN true\n";
    let (r, t) = build_with(&ts.engine, df, ctx.path(), |_| {});
    let r = r.unwrap();
    assert_eq!(
        r.warnings,
        ["FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"]
    );
    // Reported before any step starts.
    let events = t.events();
    let warn = events
        .iter()
        .position(|(_, e)| matches!(e, Event::Warning { .. }))
        .unwrap();
    let first_step = events
        .iter()
        .position(|(_, e)| matches!(e, Event::StepStarted(_)))
        .unwrap();
    assert!(warn < first_step);
    let (r, t) = build_with(
        &ts.engine,
        &format!("# check=error=true\n{df}"),
        ctx.path(),
        |_| {},
    );
    assert_eq!(
        r.unwrap_err().to_string(),
        "lint violation found for rules: FromAsCasing"
    );
    assert!(!t
        .events()
        .iter()
        .any(|(_, e)| matches!(e, Event::StepStarted(_))));
    let (r, _) = build_with(
        &ts.engine,
        &format!("# check=skip=FromAsCasing;error=true\n{df}"),
        ctx.path(),
        |_| {},
    );
    assert!(r.unwrap().warnings.is_empty());
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn overlay_and_vfs_build_the_same_image() {
    let df = "FROM busybox\nRUN mkdir /opt && echo x > /opt/x && rm /etc/group\nWORKDIR /app\nRUN echo y > y && ln -s y z\n";
    let mut ids = Vec::new();
    for driver in [strata_overlay::Driver::Overlay, strata_overlay::Driver::Vfs] {
        let ts = TestStore::with_driver(Some(driver));
        assert_eq!(ts.engine.snapshotter().unwrap().driver(), driver);
        let ctx = context(&[]);
        let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| {
            o.source_date_epoch = Some(1_700_000_000)
        });
        let r = r.unwrap();
        assert_eq!(
            read_text(&ts.engine, &r.image, "/app/y").as_deref(),
            Some("y\n")
        );
        assert_eq!(read_file(&ts.engine, &r.image, "/etc/group"), None);
        ids.push(r.image.id());
    }
    assert_eq!(ids[0], ids[1]);
}
