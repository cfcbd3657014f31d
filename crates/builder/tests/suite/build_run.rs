//! RUN: shell and exec forms, heredocs, users, environment, network, mounts, secrets,
//! cancellation.

use std::time::{Duration, Instant};

use strata_builder::exec::CancelToken;
use strata_builder::{BuildOptions, Error, SecretSpec};
use strata_store::Digest;

use crate::common::*;

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn run_forms_users_environment_and_heredocs() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let df = r#"FROM busybox
ARG GREETING=hi
ENV WHO=world
RUN echo "$GREETING $WHO" > /greet
RUN ["/bin/sh", "-c", "echo exec-form > /exec"]
USER app
RUN (id -u; id -g; id -G; echo $HOME) > /tmp/as-app
USER 1234:5678
RUN (id -u; id -g) > /tmp/numeric
USER root
WORKDIR /w
RUN pwd > here
SHELL ["/bin/sh", "-ec"]
RUN <<EOF
echo heredoc-a > /hd
echo heredoc-b >> /hd
EOF
RUN <<EOF
#!/bin/sh
echo "script $0" > /script-ran
EOF
RUN cat <<EOF > /complex
line1 $WHO
EOF
"#;
    let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| {
        o.build_args = vec![("GREETING".into(), "hello".into())]
    });
    let r = r.unwrap();
    let e = &ts.engine;
    let t = |p: &str| read_text(e, &r.image, p).unwrap_or_else(|| format!("<{p} missing>"));
    assert_eq!(t("/greet"), "hello world\n");
    assert_eq!(t("/exec"), "exec-form\n");
    assert_eq!(t("/tmp/as-app"), "1000\n1000\n1000 50\n/home/app\n");
    assert_eq!(t("/tmp/numeric"), "1234\n5678\n");
    assert_eq!(t("/w/here"), "/w\n");
    assert_eq!(t("/hd"), "heredoc-a\nheredoc-b\n");
    assert_eq!(t("/script-ran"), "script /run/strata-heredoc/EOF\n");
    assert_eq!(t("/complex"), "line1 world\n");
    // The heredoc script's mount point is not in the image.
    assert!(read_file(e, &r.image, "/run").is_none());
    let h = history(e, &r.image);
    assert_eq!(
        h[4].0,
        "RUN |1 GREETING=hello /bin/sh -c echo \"$GREETING $WHO\" > /greet # buildkit"
    );
    assert_eq!(
        h[5].0,
        "RUN |1 GREETING=hello /bin/sh -c echo exec-form > /exec # buildkit"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn network_none_has_only_loopback() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let (r, _) = build_ok(
        &ts.engine,
        "FROM busybox\nRUN --network=none ls /sys/class/net > /none\nRUN ls /sys/class/net > /host\n",
        ctx.path(),
        &[],
    );
    assert_eq!(
        read_text(&ts.engine, &r.image, "/none").as_deref(),
        Some("lo\n")
    );
    let host = read_text(&ts.engine, &r.image, "/host").unwrap();
    assert!(
        host.lines().count() > 1,
        "host networking sees the host's interfaces: {host}"
    );
    // The default network of a build can be none.
    let (r, _) = build_with(
        &ts.engine,
        "FROM busybox\nRUN ls /sys/class/net > /d\n",
        ctx.path(),
        |o| o.network = strata_builder::exec::NetworkMode::None,
    );
    assert_eq!(
        read_text(&ts.engine, &r.unwrap().image, "/d").as_deref(),
        Some("lo\n")
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn cache_mounts_persist_across_builds_and_stay_out_of_layers() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let df = "FROM busybox\nRUN --mount=type=cache,target=/var/cache/app,sharing=locked,uid=1000,mode=0700 \
              echo run >> /var/cache/app/log && cat /var/cache/app/log > /seen && stat -c '%u %a' /var/cache/app > /owner\n";
    let (first, _) = build_ok(&ts.engine, df, ctx.path(), &[]);
    assert_eq!(
        read_text(&ts.engine, &first.image, "/seen").as_deref(),
        Some("run\n")
    );
    assert_eq!(
        read_text(&ts.engine, &first.image, "/owner").as_deref(),
        Some("1000 700\n")
    );
    assert_eq!(
        read_file(&ts.engine, &first.image, "/var/cache/app/log"),
        None
    );
    let (second, _) = build_with(&ts.engine, df, ctx.path(), |o| o.no_cache = true);
    let second = second.unwrap();
    assert_eq!(
        read_text(&ts.engine, &second.image, "/seen").as_deref(),
        Some("run\nrun\n")
    );
    // A different id is a different folder.
    let (third, _) = build_ok(
        &ts.engine,
        "FROM busybox\nRUN --mount=type=cache,id=other,target=/var/cache/app ls /var/cache/app | wc -l > /n\n",
        ctx.path(),
        &[],
    );
    assert_eq!(
        read_text(&ts.engine, &third.image, "/n").as_deref(),
        Some("0\n")
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn tmpfs_and_bind_mounts() {
    let ts = TestStore::new();
    let ctx = context(&[
        ("a.txt", "from the context\n"),
        ("sub/b.txt", "b\n"),
        ("secret.key", "do not ship\n"),
        (".dockerignore", "*.key\n"),
    ]);
    let df = r#"FROM busybox AS producer
RUN mkdir /out && echo produced > /out/file
FROM busybox
RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/f && cat /scratch/f > /t
RUN --mount=type=bind,target=/ctx cat /ctx/a.txt > /a && ls -a /ctx > /listing && (touch /ctx/new 2>/dev/null && echo writable || echo read-only) > /ro
RUN --mount=type=bind,source=sub,target=/sub,rw echo changed > /sub/b.txt && cat /sub/b.txt > /rw
RUN --mount=type=bind,from=producer,source=/out,target=/in cat /in/file > /copied
"#;
    let (r, _) = build_ok(&ts.engine, df, ctx.path(), &[]);
    let e = &ts.engine;
    let t = |p: &str| read_text(e, &r.image, p);
    assert_eq!(t("/t").as_deref(), Some("x\n"));
    assert_eq!(read_file(e, &r.image, "/scratch"), None);
    assert_eq!(t("/a").as_deref(), Some("from the context\n"));
    assert_eq!(
        t("/listing").as_deref(),
        Some(".\n..\n.dockerignore\na.txt\nsub\n")
    );
    assert_eq!(t("/ro").as_deref(), Some("read-only\n"));
    assert_eq!(t("/rw").as_deref(), Some("changed\n"));
    // Writes to a read-write bind are thrown away.
    assert_eq!(
        std::fs::read_to_string(ctx.path().join("sub/b.txt")).unwrap(),
        "b\n"
    );
    assert_eq!(t("/copied").as_deref(), Some("produced\n"));
    assert_eq!(read_file(e, &r.image, "/ctx"), None);
    assert_eq!(read_file(e, &r.image, "/in"), None);
}

/// Every blob of the store (layers uncompressed) as one byte string.
fn all_store_bytes(ts: &TestStore) -> Vec<u8> {
    let store = ts.engine.store();
    let mut out = Vec::new();
    let blobs = store.root().join("blobs/sha256");
    for entry in std::fs::read_dir(blobs).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let digest = Digest::from_hex(&name).unwrap();
        match store.layer_of_blob(&digest).unwrap() {
            Some(layer) => {
                let mut r = store.open_layer(&digest, &layer.diff_id).unwrap();
                std::io::Read::read_to_end(&mut r, &mut out).unwrap();
            }
            None => out.extend(store.read_blob(&digest).unwrap()),
        }
    }
    out
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn secrets_are_usable_but_never_reach_a_layer_or_the_cache_key() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("token");
    std::fs::write(&file, "s3cr3t-value-1").unwrap();
    let df = "FROM busybox\n\
              RUN --mount=type=secret,id=token stat -c '%a %u' /run/secrets/token > /mode && wc -c < /run/secrets/token > /len\n\
              RUN --mount=type=secret,id=token,env=TOKEN,target=/etc/tok,mode=0440,uid=1000 test \"$TOKEN\" = \"$(cat /etc/tok)\" && stat -c '%a %u' /etc/tok > /mode2\n";
    let spec = |f: &std::path::Path| {
        vec![SecretSpec::parse(&format!("id=token,src={}", f.display())).unwrap()]
    };
    let (r, _) = build_with(&ts.engine, df, ctx.path(), |o| o.secrets = spec(&file));
    let r = r.unwrap();
    let e = &ts.engine;
    assert_eq!(read_text(e, &r.image, "/mode").as_deref(), Some("400 0\n"));
    assert_eq!(read_text(e, &r.image, "/len").as_deref(), Some("14\n"));
    assert_eq!(
        read_text(e, &r.image, "/mode2").as_deref(),
        Some("440 1000\n")
    );
    assert_eq!(read_file(e, &r.image, "/run/secrets"), None);
    assert_eq!(read_file(e, &r.image, "/etc/tok"), None);
    let everything = all_store_bytes(&ts);
    let needle = b"s3cr3t-value";
    assert!(
        !everything.windows(needle.len()).any(|w| w == needle),
        "the secret is in the store"
    );
    // Another value of the secret is the same step: a cache hit.
    let other = secrets.path().join("token2");
    std::fs::write(&other, "s3cr3t-value-2").unwrap();
    let (again, t) = build_with(&ts.engine, df, ctx.path(), |o| o.secrets = spec(&other));
    assert_eq!(again.unwrap().image.id(), r.image.id());
    assert!(
        t.cache_lines().iter().all(|l| l.starts_with("HIT")),
        "{:?}",
        t.cache_lines()
    );
    // A required secret that was not given fails the step.
    let (missing, _) = build_with(
        &ts.engine,
        "FROM busybox\nRUN --mount=type=secret,id=absent,required true\n",
        ctx.path(),
        |_| {},
    );
    let err = strata_builder::error_text(&missing.unwrap_err());
    assert!(err.contains("secret \"absent\" is required"), "{err}");
    // An optional one is simply not there.
    let (optional, _) = build_ok(
        &ts.engine,
        "FROM busybox\nRUN --mount=type=secret,id=absent (test -e /run/secrets/absent && echo yes || echo no) > /o\n",
        ctx.path(),
        &[],
    );
    assert_eq!(read_text(e, &optional.image, "/o").as_deref(), Some("no\n"));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn cancelling_kills_the_step_and_leaves_the_store_consistent() {
    let ts = TestStore::new();
    let ctx = context(&[]);
    let mut opts = BuildOptions::new("FROM busybox\nRUN echo started && sleep 30\n", ctx.path());
    opts.tags = vec!["cancelled:1".into()];
    let cancel = CancelToken::new().unwrap();
    let reporter = Timed::default();
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let c = cancel.clone();
        let rep = &reporter;
        s.spawn(move || {
            // Cancel once the step is running.
            for _ in 0..400 {
                if rep.output().iter().any(|l| l == "started") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            c.cancel();
        });
        ts.engine.build(&opts, &reporter, &cancel)
    });
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let base = ts.engine.store().resolve("busybox").unwrap();
    assert_eq!(
        snapshots(&ts.engine),
        [strata_builder::engine::chain_name(&base.diff_ids).unwrap()]
    );
    assert!(ts.engine.store().resolve("cancelled:1").is_err());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&ts.root().display().to_string()),
        "a mount was left behind"
    );
    assert!(ts
        .engine
        .store()
        .fsck(Default::default())
        .unwrap()
        .is_clean());
}
