//! COPY and ADD in builds: sources and flags, stages and images as sources, the cache,
//! `--link`, and destinations that try to escape the root through symlinks.

use std::process::Command;

use crate::common::*;

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn copy_and_add_sources_and_flags() {
    let ts = TestStore::new();
    let ctx = context(&[
        ("app/main.sh", "echo main\n"),
        ("app/lib/util.sh", "echo util\n"),
        ("app/notes.md", "notes\n"),
        ("conf/a.conf", "a\n"),
        ("conf/b.conf", "b\n"),
        ("secret.key", "do not ship\n"),
        (".dockerignore", "*.key\n"),
    ]);
    let tarball = ctx.path().join("bundle.tar.gz");
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("bundle")).unwrap();
    std::fs::write(src.path().join("bundle/inside.txt"), "from the archive\n").unwrap();
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(src.path())
        .arg("bundle")
        .status()
        .unwrap();
    assert!(status.success());
    let df = r#"FROM busybox AS tools
RUN mkdir -p /out && echo tool > /out/tool.txt
FROM busybox
WORKDIR /srv
COPY app/ app/
COPY conf/*.conf /etc/myapp/
COPY --chown=app:staff --chmod=0750 app/main.sh /usr/local/bin/main
COPY --exclude=*.md app /only-code/
COPY --parents app/lib/util.sh /parents/
COPY --from=tools /out/tool.txt /tool.txt
COPY --from=busybox /etc/passwd /from-image-passwd
COPY <<EOF /etc/greeting
hello $HOSTNAME-less
EOF
ADD bundle.tar.gz /unpacked/
COPY bundle.tar.gz /copied/
COPY . /ctx/
"#;
    let (r, _) = build_ok(&ts.engine, df, ctx.path(), &[]);
    let e = &ts.engine;
    let t = |p: &str| read_text(e, &r.image, p);
    assert_eq!(t("/srv/app/main.sh").as_deref(), Some("echo main\n"));
    assert_eq!(t("/srv/app/lib/util.sh").as_deref(), Some("echo util\n"));
    assert_eq!(t("/etc/myapp/a.conf").as_deref(), Some("a\n"));
    assert_eq!(t("/etc/myapp/b.conf").as_deref(), Some("b\n"));
    assert_eq!(t("/only-code/main.sh").as_deref(), Some("echo main\n"));
    assert_eq!(t("/only-code/notes.md"), None, "--exclude");
    assert_eq!(
        t("/parents/app/lib/util.sh").as_deref(),
        Some("echo util\n")
    );
    assert_eq!(t("/tool.txt").as_deref(), Some("tool\n"));
    assert!(t("/from-image-passwd").unwrap().starts_with("root:"));
    assert_eq!(t("/etc/greeting").as_deref(), Some("hello -less\n"));
    assert_eq!(
        t("/unpacked/bundle/inside.txt").as_deref(),
        Some("from the archive\n")
    );
    assert!(
        read_file(e, &r.image, "/copied/bundle.tar.gz").is_some(),
        "COPY does not unpack"
    );
    assert_eq!(t("/ctx/secret.key"), None, ".dockerignore");
    assert_eq!(t("/ctx/app/notes.md").as_deref(), Some("notes\n"));
    // Owner and mode as asked, checked inside the image.
    let (check, _) = build_ok(
        &ts.engine,
        &format!(
            "FROM {}\nRUN stat -c '%u:%g %a' /usr/local/bin/main /srv/app/main.sh > /modes\n",
            r.image.id()
        ),
        ctx.path(),
        &[],
    );
    assert_eq!(
        read_text(e, &check.image, "/modes").as_deref(),
        Some("1000:50 750\n0:0 644\n")
    );
    let h = history(e, &r.image);
    let texts: Vec<&str> = h.iter().map(|(t, _, _)| t.as_str()).collect();
    assert!(
        texts.contains(
            &"COPY --chown=app:staff --chmod=0750 app/main.sh /usr/local/bin/main # buildkit"
        ),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"COPY <<EOF /etc/greeting # buildkit"),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"ADD bundle.tar.gz /unpacked/ # buildkit"),
        "{texts:?}"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn copy_cache_follows_content_not_mtime_and_link_survives_base_changes() {
    let ts = TestStore::new();
    let ctx = context(&[("src/app.txt", "v1\n"), ("src/other.txt", "o\n")]);
    let e = &ts.engine;
    let df = |base: &str| {
        format!(
            "FROM busybox\nRUN echo {base} > /base\nCOPY src/ /plain/\nCOPY --link src/ /linked/\n"
        )
    };
    build_ok(e, &df("one"), ctx.path(), &[]);
    // mtime only: everything hits.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("src/app.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    drop(f);
    let (_, t) = build_ok(e, &df("one"), ctx.path(), &[]);
    assert!(
        t.cache_lines().iter().all(|l| l.starts_with("HIT")),
        "{:?}",
        t.cache_lines()
    );
    // Content: both copies miss and say which file.
    std::fs::write(ctx.path().join("src/app.txt"), "v2\n").unwrap();
    let (_, t) = build_ok(e, &df("one"), ctx.path(), &[]);
    assert_eq!(
        t.cache_lines(),
        [
            "HIT  RUN echo one > /base",
            "MISS COPY src/ /plain/: file src/app.txt changed",
            "MISS COPY --link src/ /linked/: file src/app.txt changed",
        ]
    );
    // The base changes: the plain COPY misses, the --link one still hits.
    let (r, t) = build_ok(e, &df("two"), ctx.path(), &[]);
    let lines = t.cache_lines();
    assert!(lines[0].starts_with("MISS RUN echo two"), "{lines:?}");
    assert!(
        lines[1].starts_with("MISS COPY src/ /plain/: the previous step changed"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "HIT  COPY --link src/ /linked/");
    assert_eq!(
        read_text(e, &r.image, "/linked/app.txt").as_deref(),
        Some("v2\n")
    );
    assert_eq!(read_text(e, &r.image, "/base").as_deref(), Some("two\n"));
    // A RUN after the linked COPY depends on the base again.
    let after = |base: &str| format!("{}RUN cat /base /linked/app.txt > /both\n", df(base));
    build_ok(e, &after("two"), ctx.path(), &[]);
    let (r, t) = build_ok(e, &after("three"), ctx.path(), &[]);
    assert!(
        t.cache_lines()[3].starts_with("MISS RUN cat"),
        "{:?}",
        t.cache_lines()
    );
    assert_eq!(
        read_text(e, &r.image, "/both").as_deref(),
        Some("three\nv2\n")
    );
    // --chmod enters the key.
    let (_, t) = build_ok(
        e,
        "FROM busybox\nCOPY --chmod=0600 src/app.txt /a\n",
        ctx.path(),
        &[],
    );
    let (_, t2) = build_ok(
        e,
        "FROM busybox\nCOPY --chmod=0644 src/app.txt /a\n",
        ctx.path(),
        &[],
    );
    assert!(t.cache_lines()[0].starts_with("MISS"));
    assert!(
        t2.cache_lines()[0].starts_with("MISS"),
        "{:?}",
        t2.cache_lines()
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn copy_destinations_cannot_escape_through_symlinks() {
    let ts = TestStore::new();
    let host = tempfile::tempdir().unwrap();
    let host_dir = host.path().join("victim");
    std::fs::create_dir(&host_dir).unwrap();
    let ctx = context(&[("payload.txt", "payload\n")]);
    let df = format!(
        "FROM busybox\n\
         RUN mkdir -p {hd} && ln -s {hd} /abs && ln -s ../../../../../../../..{hd} /climb && ln -s / /rootlink\n\
         COPY payload.txt /abs/\n\
         COPY payload.txt /climb/\n\
         COPY payload.txt /rootlink/etc/dropped\n",
        hd = host_dir.display()
    );
    let (r, _) = build_ok(&ts.engine, &df, ctx.path(), &[]);
    // Nothing reached the host folder the links name...
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 0);
    // ...the files are inside the image, where the links resolve in its root.
    let inside = format!("{}/payload.txt", host_dir.display());
    assert_eq!(
        read_text(&ts.engine, &r.image, &inside).as_deref(),
        Some("payload\n")
    );
    assert_eq!(
        read_text(&ts.engine, &r.image, "/etc/dropped").as_deref(),
        Some("payload\n")
    );
}

/// The snapshot folder of `image`'s top layer (overlay: the layer's own files).
fn top_diff_dir(
    engine: &strata_builder::Engine,
    image: &strata_store::Image,
) -> std::path::PathBuf {
    let name = strata_builder::engine::chain_name(&image.diff_ids).unwrap();
    engine
        .snapshotter()
        .unwrap()
        .graph_driver_data(&name)
        .unwrap()
        .upper_dir
}

/// A build whose new files' times are clamped, so that two builds of the same files give the
/// same layer (a directory the copy creates gets the time it was made).
fn build_clamped(
    engine: &strata_builder::Engine,
    dockerfile: &str,
    ctx: &std::path::Path,
) -> strata_builder::BuildResult {
    let (r, t) = build_with(engine, dockerfile, ctx, |o| {
        o.source_date_epoch = Some(1_700_000_000)
    });
    r.unwrap_or_else(|e| {
        panic!(
            "build failed: {}\n{}",
            strata_builder::error_text(&e),
            t.output().join("\n")
        )
    })
}

fn nlink(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().nlink()
}

/// A rebuild of `COPY . /app` after a change links the unchanged files from the previous
/// layer, and still gives byte for byte the layer a cold build of the changed context gives;
/// a file whose content, mode or mtime changed is written anew.
#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_copy_rebuild_links_unchanged_files_and_gives_the_cold_layer() {
    use std::os::unix::fs::PermissionsExt;
    let ts = TestStore::new();
    let mut files: Vec<(String, String)> = (0..40)
        .map(|i| (format!("d{}/f{i:02}", i % 4), format!("content {i}\n")))
        .collect();
    files.push(("top.txt".into(), "top\n".into()));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let ctx = context(&refs);
    let df = "FROM busybox\nCOPY . /app\n";
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    let first = build_clamped(&ts.engine, df, ctx.path());

    // One file's content, one file's mode, one file's mtime change.
    std::fs::write(ctx.path().join("d0/f00"), "changed content\n").unwrap();
    let moded = ctx.path().join("d1/f01");
    std::fs::set_permissions(&moded, std::fs::Permissions::from_mode(0o755)).unwrap();
    let touched = ctx.path().join("d2/f02");
    let f = std::fs::File::options().write(true).open(&touched).unwrap();
    f.set_modified(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000),
    )
    .unwrap();
    drop(f);
    let second = build_clamped(&ts.engine, df, ctx.path());
    assert_ne!(first.image.diff_ids, second.image.diff_ids);

    // A cold build of the changed context in another store: the same layer.
    let cold_store = TestStore::new();
    let cold = build_clamped(&cold_store.engine, df, ctx.path());
    assert_eq!(second.image.diff_ids, cold.image.diff_ids);
    assert_eq!(
        second.image.layers.last().unwrap().digest,
        cold.image.layers.last().unwrap().digest,
        "the same blob"
    );

    let e = &ts.engine;
    assert_eq!(
        read_text(e, &second.image, "/app/d0/f00").as_deref(),
        Some("changed content\n")
    );
    assert_eq!(
        read_text(e, &second.image, "/app/d3/f03").as_deref(),
        Some("content 3\n")
    );
    if ts.engine.snapshotter().unwrap().driver() == strata_overlay::Driver::Overlay {
        let old = top_diff_dir(e, &first.image);
        let new = top_diff_dir(e, &second.image);
        // Unchanged: the previous layer's inode.
        for p in ["app/d3/f03", "app/d1/f05", "app/top.txt", "app/Dockerfile"] {
            assert!(nlink(&new.join(p)) >= 2, "{p} is linked");
            assert_eq!(
                std::fs::read(new.join(p)).unwrap(),
                std::fs::read(old.join(p)).unwrap()
            );
        }
        // Changed content, mode or mtime: written anew.
        for p in ["app/d0/f00", "app/d1/f01", "app/d2/f02"] {
            assert_eq!(nlink(&new.join(p)), 1, "{p} is a new file");
        }
        let mode = std::fs::symlink_metadata(new.join("app/d1/f01"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }
}

/// `--chown` is part of what a file is: a copy with another owner does not link the files
/// of a copy with the first owner (and the files get the owner asked for).
#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_copy_with_another_owner_does_not_link_the_old_files() {
    use std::os::unix::fs::MetadataExt;
    let ts = TestStore::new();
    let ctx = context(&[("a/one", "1\n"), ("a/two", "2\n")]);
    let first_df = "FROM busybox\nCOPY --chown=1:1 a /app\n";
    build_clamped(&ts.engine, first_df, ctx.path());
    let df = "FROM busybox\nCOPY --chown=2:2 a /app\n";
    let r = build_clamped(&ts.engine, df, ctx.path());
    std::fs::write(ctx.path().join("a/two"), "two\n").unwrap();
    let again = build_clamped(&ts.engine, df, ctx.path());
    assert_ne!(r.image.diff_ids, again.image.diff_ids);
    if ts.engine.snapshotter().unwrap().driver() == strata_overlay::Driver::Overlay {
        let new = top_diff_dir(&ts.engine, &again.image);
        let one = std::fs::symlink_metadata(new.join("app/one")).unwrap();
        assert_eq!((one.uid(), one.gid()), (2, 2));
        assert!(one.nlink() >= 2, "linked from the --chown=2:2 layer");
        let old = top_diff_dir(&ts.engine, &r.image);
        assert_eq!(
            std::fs::symlink_metadata(old.join("app/one"))
                .unwrap()
                .ino(),
            one.ino()
        );
    }
    let cold_store = TestStore::new();
    let cold = build_clamped(&cold_store.engine, df, ctx.path());
    assert_eq!(again.image.diff_ids, cold.image.diff_ids);
}

/// The snapshot folder of the layer that ends the first `n` layers of `image`.
fn layer_diff_dir(
    engine: &strata_builder::Engine,
    image: &strata_store::Image,
    n: usize,
) -> std::path::PathBuf {
    let name = strata_builder::engine::chain_name(&image.diff_ids[..n]).unwrap();
    engine
        .snapshotter()
        .unwrap()
        .graph_driver_data(&name)
        .unwrap()
        .upper_dir
}

/// `COPY --from` hard-links a stage's or image's file from the layer folder that holds it
/// when the copy writes it unchanged (mode, owner, mtime), copies it otherwise (here:
/// `--chmod`), and the layers are byte for byte those of a store that copies everything
/// (vfs): a file whose other names are in other layers is written with its content.
#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn copy_from_links_unchanged_files_from_the_source_layers() {
    use std::os::unix::fs::MetadataExt;
    let df = "FROM busybox AS one\n\
RUN mkdir -p /data/sub && echo old > /data/over && echo a > /data/a && echo b > /data/sub/b \
&& chown 5:6 /data/sub/b && chmod 4750 /data/a && ln /data/a /data/a2 && ln -s a /data/sym \
&& echo u > /data/up && touch -d '2020-09-13 12:26:40' /data/a /data/sub/b /data/over\n\
RUN rm /data/over && echo new > /data/over && echo more >> /data/up \
&& touch -d '2020-09-13 12:26:40' /data/over /data/up\n\
FROM busybox\n\
COPY --from=one /data /one\n\
COPY --from=one --chmod=600 /data /two\n\
COPY --from=one /bin/busybox /tools/\n";
    let ctx = context(&[]);
    let ts = TestStore::new();
    let r = build_clamped(&ts.engine, df, ctx.path());
    let e = &ts.engine;
    assert_eq!(
        read_text(e, &r.image, "/one/over").as_deref(),
        Some("new\n")
    );
    assert_eq!(read_text(e, &r.image, "/two/sub/b").as_deref(), Some("b\n"));
    assert_eq!(
        read_text(e, &r.image, "/one/up").as_deref(),
        Some("u\nmore\n")
    );
    let n = r.image.diff_ids.len();
    if e.snapshotter().unwrap().driver() == strata_overlay::Driver::Overlay {
        let meta = |layer: usize, p: &str| {
            std::fs::symlink_metadata(layer_diff_dir(e, &r.image, layer).join(p)).unwrap()
        };
        // Linked: a and a2 (one inode in the stage) stay one inode, with the stage's.
        let (a, a2) = (meta(n - 2, "one/a"), meta(n - 2, "one/a2"));
        assert_eq!(a.ino(), a2.ino());
        assert!(a.nlink() >= 4, "linked from the stage: {}", a.nlink());
        assert_eq!(a.mode() & 0o7777, 0o4750);
        let b = meta(n - 2, "one/sub/b");
        assert!(b.nlink() >= 2, "one/sub/b is linked");
        assert_eq!((b.uid(), b.gid()), (5, 6));
        // From the topmost stage layer that has it (made anew over a whiteout there).
        assert!(meta(n - 2, "one/over").nlink() >= 2);
        assert_eq!(
            std::fs::read(layer_diff_dir(e, &r.image, n - 2).join("one/over")).unwrap(),
            b"new\n"
        );
        // Copied up and changed by a RUN, so carrying overlay's own xattrs: copied.
        assert_eq!(meta(n - 2, "one/up").nlink(), 1);
        // From the image's own layer, below the stage's.
        assert!(meta(n, "tools/busybox").nlink() >= 2, "busybox is linked");
        // Another mode: copied (a and a2 still one inode of their own).
        let (a, a2) = (meta(n - 1, "two/a"), meta(n - 1, "two/a2"));
        assert_eq!(a.ino(), a2.ino());
        assert_eq!(a.nlink(), 2);
        assert_eq!(a.mode() & 0o7777, 0o600);
        assert_eq!(meta(n - 1, "two/sub/b").nlink(), 1);
    }
    // A store that copies every file gives the same layers.
    let vfs = TestStore::with_driver(Some(strata_overlay::Driver::Vfs));
    let copied = build_clamped(&vfs.engine, df, ctx.path());
    assert_eq!(r.image.diff_ids, copied.image.diff_ids);
}

/// The file lists kept for linking unchanged files go with what they describe: `prune`
/// keeps only those whose snapshot is still there, `prune --cache` removes them all.
#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn prune_sweeps_the_kept_copy_lists() {
    let ts = TestStore::new();
    let ctx = context(&[("d0/a", "a\n"), ("d1/b", "b\n")]);
    let df = "FROM busybox\nCOPY . /app\n";
    std::fs::write(ctx.path().join("Dockerfile"), df).unwrap();
    build_clamped(&ts.engine, df, ctx.path());
    let lists = ts.engine.builder_dir().join("copy-layers");
    let count = || std::fs::read_dir(&lists).map(|d| d.count()).unwrap_or(0);
    if ts.engine.snapshotter().unwrap().driver() != strata_overlay::Driver::Overlay {
        assert_eq!(count(), 0, "no lists without overlay");
        return;
    }
    assert_eq!(count(), 1);
    // A list naming a snapshot that does not exist, and a stray file.
    strata_builder::copy::CopiedFiles::default()
        .save(&lists.join("gone"), "no-such-snapshot")
        .unwrap();
    std::fs::write(lists.join("stray"), "junk").unwrap();
    ts.engine
        .prune(&strata_builder::engine::PruneOptions::default())
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(&lists)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for path in &left {
        let snap = strata_builder::copy::listed_snapshot(path).expect("a list");
        assert!(ts.engine.snapshotter().unwrap().stat(&snap).is_ok());
    }
    assert!(!left
        .iter()
        .any(|p| p.ends_with("gone") || p.ends_with("stray")));
    ts.engine
        .prune(&strata_builder::engine::PruneOptions {
            cache: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(count(), 0);
}
