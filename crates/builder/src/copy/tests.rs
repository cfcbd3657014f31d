//! End-to-end tests of `prepare` + `apply` on plain temp directories (no mounts needed:
//! `apply` works on any directory).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::context::walk::tests::make_tree;
use crate::context::{read_ignore_file, ContextIndex, PatternMatcher};

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A copy request from the build context, with everything else at its default.
pub(crate) fn request<'a>(from: SourceRoot<'a>, sources: &[&str], dest: &str) -> CopyRequest<'a> {
    CopyRequest {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        inline: Vec::new(),
        dest: dest.to_string(),
        workdir: "/".to_string(),
        from,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        excludes: Vec::new(),
        add: None,
    }
}

/// A context tree and its index (with the `.dockerignore` it holds, if any).
pub(crate) struct Ctx {
    pub dir: tempfile::TempDir,
    pub index: ContextIndex,
}

impl Ctx {
    pub fn new(spec: &[&str]) -> Ctx {
        let dir = make_tree(spec);
        Ctx::index(dir)
    }

    pub fn index(dir: tempfile::TempDir) -> Ctx {
        let ignore = read_ignore_file(dir.path(), None).unwrap();
        let matcher = ignore.map(|f| PatternMatcher::new(&f.patterns).unwrap());
        let index = ContextIndex::walk(dir.path(), matcher.as_ref()).unwrap();
        Ctx { dir, index }
    }

    pub fn root(&self) -> SourceRoot<'_> {
        SourceRoot::Context {
            dir: self.dir.path(),
            index: &self.index,
        }
    }

    pub fn reindex(&mut self) {
        let ignore = read_ignore_file(self.dir.path(), None).unwrap();
        let matcher = ignore.map(|f| PatternMatcher::new(&f.patterns).unwrap());
        self.index = ContextIndex::walk(self.dir.path(), matcher.as_ref()).unwrap();
    }
}

/// Prepares and applies `req` into a new empty destination.
pub(crate) fn copy_into_new(req: &CopyRequest) -> Result<(tempfile::TempDir, CopyStats), Error> {
    let dest = tempfile::tempdir().unwrap();
    let plan = prepare(req)?;
    let stats = plan.apply(dest.path())?;
    Ok((dest, stats))
}

/// `path kind mode [-> target | = content]` for everything below `root`, sorted.
pub(crate) fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.push(format!("{rel} link -> {}", t.display()));
        } else if meta.is_dir() {
            out.push(format!("{rel}/ {mode:o}"));
            walk(root, &p, out);
        } else {
            let content = std::fs::read(&p).unwrap();
            let shown = String::from_utf8_lossy(&content[..content.len().min(40)]).into_owned();
            out.push(format!("{rel} {mode:o} = {shown}"));
        }
    }
}

fn err_text(e: Error) -> String {
    e.to_string()
}

#[test]
fn a_single_file_goes_to_a_file_name_or_into_a_directory() {
    let ctx = Ctx::new(&["a.txt", "dir/b.txt"]);
    let (d, stats) = copy_into_new(&request(ctx.root(), &["a.txt"], "/x/renamed")).unwrap();
    assert_eq!(listing(d.path()), ["x/ 755", "x/renamed 644 = a.txt"]);
    assert_eq!(stats.files, 1);
    let (d, _) = copy_into_new(&request(ctx.root(), &["a.txt"], "/x/")).unwrap();
    assert_eq!(listing(d.path()), ["x/ 755", "x/a.txt 644 = a.txt"]);
    // Relative to the working directory.
    let mut req = request(ctx.root(), &["dir/b.txt"], "sub/");
    req.workdir = "/work".into();
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "work/ 755",
            "work/sub/ 755",
            "work/sub/b.txt 644 = dir/b.txt"
        ]
    );
    // An existing directory without a trailing slash: the file goes inside.
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir(dest.path().join("x")).unwrap();
    prepare(&request(ctx.root(), &["a.txt"], "/x"))
        .unwrap()
        .apply(dest.path())
        .unwrap();
    assert!(dest.path().join("x/a.txt").is_file());
}

#[test]
fn a_directory_source_copies_its_contents_and_merges() {
    let ctx = Ctx::new(&["src/a", "src/sub/b", "src/sub/deeper/c"]);
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dest.path().join("app/sub")).unwrap();
    std::fs::write(dest.path().join("app/keep"), "old").unwrap();
    std::fs::write(dest.path().join("app/a"), "old a").unwrap();
    let plan = prepare(&request(ctx.root(), &["src"], "/app")).unwrap();
    let stats = plan.apply(dest.path()).unwrap();
    assert_eq!(
        listing(dest.path()),
        [
            "app/ 755",
            "app/a 644 = src/a",
            "app/keep 644 = old",
            "app/sub/ 755",
            "app/sub/b 644 = src/sub/b",
            "app/sub/deeper/ 755",
            "app/sub/deeper/c 644 = src/sub/deeper/c"
        ]
    );
    assert_eq!((stats.files, stats.dirs), (3, 2));
    // The whole context.
    let (d, _) = copy_into_new(&request(ctx.root(), &["."], "/")).unwrap();
    assert!(d.path().join("src/sub/deeper/c").is_file());
}

#[test]
fn several_sources_need_a_directory_destination() {
    let ctx = Ctx::new(&["a.txt", "b.txt", "c.md"]);
    let err = copy_into_new(&request(ctx.root(), &["a.txt", "b.txt"], "/dest")).unwrap_err();
    assert!(
        matches!(err, Error::DestMustBeDir { command: "COPY" }),
        "{err:?}"
    );
    // A wildcard that matches several files counts as several sources.
    let err = copy_into_new(&request(ctx.root(), &["*.txt"], "/dest")).unwrap_err();
    assert!(matches!(err, Error::DestMustBeDir { .. }), "{err:?}");
    // ... one match is a single file.
    let (d, _) = copy_into_new(&request(ctx.root(), &["*.md"], "/dest")).unwrap();
    assert_eq!(listing(d.path()), ["dest 644 = c.md"]);
    let (d, _) = copy_into_new(&request(ctx.root(), &["*.txt"], "/dest/")).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "dest/ 755",
            "dest/a.txt 644 = a.txt",
            "dest/b.txt 644 = b.txt"
        ]
    );
    // An existing directory is a directory destination even without the slash.
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir(dest.path().join("dest")).unwrap();
    prepare(&request(ctx.root(), &["a.txt", "b.txt"], "/dest"))
        .unwrap()
        .apply(dest.path())
        .unwrap();
    assert!(dest.path().join("dest/b.txt").is_file());
}

#[test]
fn directories_and_files_do_not_replace_each_other() {
    let ctx = Ctx::new(&["tree/x/inner", "tree/f", "file"]);
    // The source has directory x where the destination has a file.
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir(dest.path().join("d")).unwrap();
    std::fs::write(dest.path().join("d/x"), "file").unwrap();
    let err = prepare(&request(ctx.root(), &["tree"], "/d"))
        .unwrap()
        .apply(dest.path())
        .unwrap_err();
    assert_eq!(err_text(err), "cannot copy to non-directory: /d/x");
    // The source has file f where the destination has a directory.
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dest.path().join("d/f")).unwrap();
    let err = prepare(&request(ctx.root(), &["tree"], "/d"))
        .unwrap()
        .apply(dest.path())
        .unwrap_err();
    assert_eq!(err_text(err), "cannot replace directory /d/f with a file");
    // A directory onto an existing file.
    let dest = tempfile::tempdir().unwrap();
    std::fs::write(dest.path().join("d"), "file").unwrap();
    let err = prepare(&request(ctx.root(), &["tree"], "/d"))
        .unwrap()
        .apply(dest.path())
        .unwrap_err();
    assert_eq!(err_text(err), "cannot copy to non-directory: /d");
    // A file whose destination parent is a file.
    let err = prepare(&request(ctx.root(), &["file"], "/d/name"))
        .unwrap()
        .apply(dest.path())
        .unwrap_err();
    assert_eq!(err_text(err), "cannot copy to non-directory: /d");
    // A file onto an existing file replaces it.
    prepare(&request(ctx.root(), &["file"], "/d"))
        .unwrap()
        .apply(dest.path())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.path().join("d")).unwrap(),
        "file"
    );
}

#[test]
fn wildcards_match_within_one_component() {
    let ctx = Ctx::new(&[
        "a.txt",
        "b.txt",
        "docs/c.txt",
        "docs/sub/d.txt",
        "src/app/main.go",
        "src/lib/util.go",
    ]);
    let (d, _) = copy_into_new(&request(ctx.root(), &["*.txt"], "/o/")).unwrap();
    assert_eq!(
        listing(d.path()),
        ["o/ 755", "o/a.txt 644 = a.txt", "o/b.txt 644 = b.txt"]
    );
    let (d, _) = copy_into_new(&request(ctx.root(), &["src/*/*.go"], "/o/")).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/main.go 644 = src/app/main.go",
            "o/util.go 644 = src/lib/util.go"
        ]
    );
    // A matching directory is copied whole (its contents).
    let (d, _) = copy_into_new(&request(ctx.root(), &["doc?"], "/o/")).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/c.txt 644 = docs/c.txt",
            "o/sub/ 755",
            "o/sub/d.txt 644 = docs/sub/d.txt"
        ]
    );
}

#[test]
fn missing_sources_and_empty_wildcards() {
    let ctx = Ctx::new(&["a.txt"]);
    let err = copy_into_new(&request(ctx.root(), &["*.none"], "/o/")).unwrap_err();
    assert!(matches!(err, Error::NoSourceFiles), "{err:?}");
    let err = copy_into_new(&request(ctx.root(), &["nodir/*.txt"], "/o/")).unwrap_err();
    assert!(matches!(err, Error::NoSourceFiles), "{err:?}");
    // A wildcard that matches nothing beside a source that exists is fine.
    let (d, _) = copy_into_new(&request(ctx.root(), &["*.none", "a.txt"], "/o/")).unwrap();
    assert_eq!(listing(d.path()), ["o/ 755", "o/a.txt 644 = a.txt"]);
    let err = copy_into_new(&request(ctx.root(), &["missing.txt"], "/o/")).unwrap_err();
    assert_eq!(err_text(err), "missing.txt not found in the build context");
    let err = copy_into_new(&request(ctx.root(), &["a["], "/o/")).unwrap_err();
    assert!(matches!(err, Error::BadPattern { .. }), "{err:?}");
}

#[test]
fn ignored_files_cannot_be_copied_and_dotdot_stays_in_the_context() {
    let ctx = Ctx::new(&[
        ".dockerignore",
        "keep.txt",
        "secret.key",
        "logs/x.log",
        "logs/keep.log",
    ]);
    std::fs::write(
        ctx.dir.path().join(".dockerignore"),
        "*.key\nlogs\n!logs/keep.log\n",
    )
    .unwrap();
    let mut ctx = ctx;
    ctx.reindex();
    let err = copy_into_new(&request(ctx.root(), &["secret.key"], "/o/")).unwrap_err();
    assert_eq!(err_text(err), "secret.key not found in the build context");
    let (d, _) = copy_into_new(&request(ctx.root(), &["logs"], "/o/")).unwrap();
    assert_eq!(
        listing(d.path()),
        ["o/ 755", "o/keep.log 644 = logs/keep.log"]
    );
    // `..` cannot leave the context: `../keep.txt` is `keep.txt`.
    let (d, _) = copy_into_new(&request(ctx.root(), &["../../keep.txt"], "/o/")).unwrap();
    assert_eq!(listing(d.path()), ["o/ 755", "o/keep.txt 644 = keep.txt"]);
    let (d, _) = copy_into_new(&request(ctx.root(), &["/keep.txt"], "/o/")).unwrap();
    assert_eq!(listing(d.path()), ["o/ 755", "o/keep.txt 644 = keep.txt"]);
}

#[test]
fn excludes_apply_below_directories_and_to_wildcard_matches() {
    let ctx = Ctx::new(&[
        "home.txt",
        "home.md",
        "homer.rs",
        "app/main.rs",
        "app/main.log",
        "app/sub/deep.log",
        "app/sub/keep.rs",
        "app/target/out.bin",
        "app/target/keep/me.txt",
    ]);
    let mut req = request(ctx.root(), &["hom*"], "/o/");
    req.excludes = vec!["*.txt".into(), "*.md".into()];
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(listing(d.path()), ["o/ 755", "o/homer.rs 644 = homer.rs"]);

    let mut req = request(ctx.root(), &["app"], "/o/");
    req.excludes = vec!["**/*.log".into(), "target".into(), "!target/keep".into()];
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/main.rs 644 = app/main.rs",
            "o/sub/ 755",
            "o/sub/keep.rs 644 = app/sub/keep.rs",
            "o/target/ 755",
            "o/target/keep/ 755",
            "o/target/keep/me.txt 644 = app/target/keep/me.txt"
        ]
    );
    // Every match excluded: nothing was specified.
    let mut req = request(ctx.root(), &["hom*"], "/o/");
    req.excludes = vec!["*".into()];
    let err = copy_into_new(&req).unwrap_err();
    assert!(matches!(err, Error::NoSourceFiles), "{err:?}");
}

#[test]
fn parents_keep_the_source_directories() {
    let ctx = Ctx::new(&[
        "x/a/one.txt",
        "x/a/two.md",
        "x/b/sub/three.txt",
        "y/four.txt",
        "top.txt",
    ]);
    let mut req = request(ctx.root(), &["x/a/*.txt", "y/four.txt"], "/o/");
    req.parents = true;
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/x/ 755",
            "o/x/a/ 755",
            "o/x/a/one.txt 644 = x/a/one.txt",
            "o/y/ 755",
            "o/y/four.txt 644 = y/four.txt"
        ]
    );
    // The `./` pivot: parents kept from there on.
    let mut req = request(ctx.root(), &["x/./b/sub/*.txt"], "/o/");
    req.parents = true;
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/b/ 755",
            "o/b/sub/ 755",
            "o/b/sub/three.txt 644 = x/b/sub/three.txt"
        ]
    );
    // `**` crosses directories.
    let mut req = request(ctx.root(), &["x/**/*.txt"], "/o/");
    req.parents = true;
    req.excludes = vec!["x/b".into()];
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/x/ 755",
            "o/x/a/ 755",
            "o/x/a/one.txt 644 = x/a/one.txt"
        ]
    );
    // A directory match is copied with everything below it.
    let mut req = request(ctx.root(), &["x/b"], "/o/");
    req.parents = true;
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/x/ 755",
            "o/x/b/ 755",
            "o/x/b/sub/ 755",
            "o/x/b/sub/three.txt 644 = x/b/sub/three.txt"
        ]
    );
}

#[test]
fn symlinks_are_copied_as_symlinks_but_followed_at_the_top() {
    let ctx = Ctx::new(&[
        "real/file",
        "real/rel -> file",
        "real/abs -> /etc/passwd",
        "top -> real/file",
        "dirlink -> real",
        "outside -> ../../../../etc",
        "loop -> loop",
    ]);
    let (d, stats) = copy_into_new(&request(ctx.root(), &["real"], "/o/")).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/abs link -> /etc/passwd",
            "o/file 644 = real/file",
            "o/rel link -> file"
        ]
    );
    assert_eq!(stats.symlinks, 2);
    // A top-level symlink is followed and keeps its own name.
    let (d, _) = copy_into_new(&request(ctx.root(), &["top"], "/o/")).unwrap();
    assert_eq!(listing(d.path()), ["o/ 755", "o/top 644 = real/file"]);
    // ... also through a directory link and a wildcard match.
    let (d, _) = copy_into_new(&request(ctx.root(), &["dirlink/fi*"], "/o/")).unwrap();
    assert_eq!(listing(d.path()), ["o/ 755", "o/file 644 = real/file"]);
    let (d, _) = copy_into_new(&request(ctx.root(), &["dirl?nk"], "/o/")).unwrap();
    assert!(d.path().join("o/file").is_file());
    // Links are followed inside the context only: `/etc` of the host is not in it.
    let err = copy_into_new(&request(ctx.root(), &["outside/passwd"], "/o/")).unwrap_err();
    assert_eq!(
        err_text(err),
        "outside/passwd not found in the build context"
    );
    let err = copy_into_new(&request(ctx.root(), &["real/abs"], "/o/")).unwrap_err();
    assert!(matches!(err, Error::SourceNotFound { .. }), "{err:?}");
    let err = copy_into_new(&request(ctx.root(), &["loop"], "/o/")).unwrap_err();
    assert_eq!(
        err_text(err),
        "too many levels of symbolic links resolving loop"
    );
}

#[test]
fn hard_links_inside_a_copy_stay_hard_links() {
    let ctx = Ctx::new(&["d/a", "d/sub/"]);
    std::fs::hard_link(ctx.dir.path().join("d/a"), ctx.dir.path().join("d/sub/b")).unwrap();
    let mut ctx = ctx;
    ctx.reindex();
    let (d, stats) = copy_into_new(&request(ctx.root(), &["d"], "/o/")).unwrap();
    let a = std::fs::metadata(d.path().join("o/a")).unwrap();
    let b = std::fs::metadata(d.path().join("o/sub/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!((stats.files, stats.hardlinks), (1, 1));
}

#[test]
fn mtimes_are_kept_and_never_keyed() {
    let ctx = Ctx::new(&["d/f", "d/sub/g"]);
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for p in ["d/f", "d/sub/g"] {
        let f = std::fs::File::options()
            .write(true)
            .open(ctx.dir.path().join(p))
            .unwrap();
        f.set_modified(when).unwrap();
    }
    let key_before = prepare(&request(ctx.root(), &["d"], "/o/"))
        .unwrap()
        .sources_input();
    let (d, _) = copy_into_new(&request(ctx.root(), &["d"], "/o/")).unwrap();
    for p in ["o/f", "o/sub/g"] {
        let m = std::fs::metadata(d.path().join(p)).unwrap();
        assert_eq!(m.modified().unwrap(), when, "{p}");
    }
    // The copied directory gets the source directory's mtime, after its children.
    let src_sub = std::fs::metadata(ctx.dir.path().join("d/sub")).unwrap();
    let dst_sub = std::fs::metadata(d.path().join("o/sub")).unwrap();
    assert_eq!(dst_sub.mtime(), src_sub.mtime());
    // Touching files does not change the key.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.dir.path().join("d/f"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    let key_after = prepare(&request(ctx.root(), &["d"], "/o/"))
        .unwrap()
        .sources_input();
    assert_eq!(key_before, key_after);
}

#[test]
fn an_existing_target_directory_keeps_its_times() {
    let ctx = Ctx::new(&["d/f"]);
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir(dest.path().join("app")).unwrap();
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567_890);
    std::fs::File::open(dest.path().join("app"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    prepare(&request(ctx.root(), &["d"], "/app"))
        .unwrap()
        .apply(dest.path())
        .unwrap();
    assert!(dest.path().join("app/f").is_file());
    let m = std::fs::metadata(dest.path().join("app")).unwrap();
    assert_eq!(m.modified().unwrap(), when);
}

#[test]
fn chmod_sets_the_written_mode_and_the_key_follows_it() {
    let mut ctx = Ctx::new(&["d/script", "d/data", "d/sub/x"]);
    std::fs::set_permissions(
        ctx.dir.path().join("d/script"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    ctx.reindex();
    let mut req = request(ctx.root(), &["d"], "/o/");
    req.chmod = Some("u=rwX,go=rX".into());
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/data 644 = d/data",
            "o/script 755 = d/script",
            "o/sub/ 755",
            "o/sub/x 644 = d/sub/x"
        ]
    );
    let mut req = request(ctx.root(), &["d/data"], "/o/data");
    req.chmod = Some("4755".into());
    let (d, _) = copy_into_new(&req).unwrap();
    assert_eq!(listing(d.path()), ["o/ 755", "o/data 4755 = d/data"]);

    // With --chmod, the source's own mode does not matter to the key ...
    let key = |ctx: &Ctx, chmod: Option<&str>| {
        let mut req = request(ctx.root(), &["d/data"], "/o/");
        req.chmod = chmod.map(str::to_string);
        prepare(&req).unwrap().sources_input()
    };
    let with_before = key(&ctx, Some("0755"));
    let without_before = key(&ctx, None);
    std::fs::set_permissions(
        ctx.dir.path().join("d/data"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    ctx.reindex();
    assert_eq!(key(&ctx, Some("0755")), with_before);
    // ... without it, it does, and the record names the file and its new mode.
    let without_after = key(&ctx, None);
    assert_ne!(without_after.digest, without_before.digest);
    assert_eq!(without_after.files["d/data"].mode, 0o600);
    assert_eq!(with_before.files["d/data"].mode, 0o755);
}

#[test]
fn owners_are_root_for_the_context_and_chown_when_asked() {
    if !is_root() {
        eprintln!("skipped: setting owners needs root");
        return;
    }
    let ctx = Ctx::new(&["d/f", "d/sub/g"]);
    std::os::unix::fs::chown(ctx.dir.path().join("d/f"), Some(1234), Some(1234)).unwrap();
    let (d, _) = copy_into_new(&request(ctx.root(), &["d"], "/o/")).unwrap();
    let m = std::fs::metadata(d.path().join("o/f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0));

    let mut req = request(ctx.root(), &["d"], "/new/parent/");
    req.chown = Some("1000:2000".into());
    let (d, _) = copy_into_new(&req).unwrap();
    for p in [
        "new",
        "new/parent",
        "new/parent/f",
        "new/parent/sub",
        "new/parent/sub/g",
    ] {
        let m = std::fs::metadata(d.path().join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 2000), "{p}");
    }
    // A name is looked up in the destination's /etc/passwd and /etc/group.
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir(dest.path().join("etc")).unwrap();
    std::fs::write(
        dest.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1500:1600::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dest.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
    let mut req = request(ctx.root(), &["d/f"], "/f");
    req.chown = Some("app".into());
    let plan = prepare(&req).unwrap();
    plan.apply(dest.path()).unwrap();
    let m = std::fs::metadata(dest.path().join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1500, 1600));
    req.chown = Some("app:staff".into());
    prepare(&req).unwrap().apply(dest.path()).unwrap();
    let m = std::fs::metadata(dest.path().join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1500, 50));
    // An unknown name is an error; with --link the caller points at the base's users.
    req.chown = Some("nobody".into());
    let plan = prepare(&req).unwrap();
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        err_text(plan.apply(empty.path()).unwrap_err()),
        "unable to find user nobody: no matching entries in passwd file"
    );
    req.chown = Some("app".into());
    let plan = prepare(&req).unwrap();
    plan.apply_with(empty.path(), Some(dest.path())).unwrap();
    let m = std::fs::metadata(empty.path().join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1500, 1600));
}

#[test]
fn chown_enters_the_key_as_written() {
    let ctx = Ctx::new(&["f"]);
    let key = |chown: Option<&str>| {
        let mut req = request(ctx.root(), &["f"], "/f");
        req.chown = chown.map(str::to_string);
        prepare(&req).unwrap().sources_input().digest
    };
    assert_eq!(key(None), key(Some("0:0")));
    assert_eq!(key(None), key(Some("0")));
    assert_ne!(key(None), key(Some("1000")));
    assert_ne!(key(Some("1000")), key(Some("1000:1001")));
    assert_ne!(key(Some("app")), key(Some("1000")));
    assert_ne!(key(Some("app")), key(Some("app:staff")));
}

#[test]
fn xattrs_are_carried() {
    let ctx = Ctx::new(&["f", "g"]);
    let f = ctx.dir.path().join("f");
    if rustix::fs::setxattr(&f, "user.origin", b"ci", rustix::fs::XattrFlags::empty()).is_err() {
        eprintln!("skipped: the temp filesystem has no user xattrs");
        return;
    }
    // A capability (needs root; v2 format, cap_net_bind_service).
    let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let with_cap = is_root()
        && rustix::fs::setxattr(
            ctx.dir.path().join("g"),
            "security.capability",
            &cap,
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
    let mut req = request(ctx.root(), &["f", "g"], "/o/");
    if with_cap {
        req.chown = Some("1000".into());
    }
    let (d, _) = copy_into_new(&req).unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(d.path().join("o/f"), "user.origin", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"ci");
    if with_cap {
        // Set after the chown, which would have cleared it.
        let n =
            rustix::fs::getxattr(d.path().join("o/g"), "security.capability", &mut buf).unwrap();
        assert_eq!(&buf[..n], &cap);
    }
}
