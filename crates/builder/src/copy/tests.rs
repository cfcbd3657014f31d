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

/// A folder outside the destination that no copy may touch, and a climb to it.
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("victim"), "untouched").unwrap();
        Sentinel { dir }
    }

    fn abs(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn climb(&self) -> String {
        format!("../../../../../../../../..{}", self.abs())
    }

    fn assert_untouched(&self) {
        assert_eq!(listing(self.dir.path()), ["victim 644 = untouched"]);
    }
}

/// Symlinks to plant: (name, target).
type Links = Vec<(String, String)>;

#[test]
fn destination_symlinks_never_lead_outside_the_root() {
    let ctx = Ctx::new(&["f", "tree/sub/file", "tree/top"]);
    let s = Sentinel::new();
    // Where the sentinel's path lands when it is read inside the root.
    let inside = s.abs().trim_start_matches('/').to_string();
    let link = |name: &str, target: &str| (name.to_string(), target.to_string());
    // (symlinks in the destination, source, destination, a file that must then exist)
    let attempts: Vec<(Links, &str, &str, String)> = vec![
        (vec![link("app", "/")], "f", "/app/x", "x".into()),
        (
            vec![link("app", &s.abs())],
            "f",
            "/app/",
            format!("{inside}/f"),
        ),
        (
            vec![link("app", &s.climb())],
            "f",
            "/app/",
            format!("{inside}/f"),
        ),
        (
            vec![link("app", &s.climb())],
            "tree",
            "/app",
            format!("{inside}/sub/file"),
        ),
        (
            vec![link("app", &s.climb())],
            "tree",
            "/app/new/deeper/",
            format!("{inside}/new/deeper/top"),
        ),
        (
            vec![link("a", "b"), link("b", &s.climb())],
            "f",
            "/a/victim",
            format!("{inside}/victim"),
        ),
        (
            vec![link("app", "/proc/self/root")],
            "f",
            "/app/",
            "proc/self/root/f".into(),
        ),
        (
            vec![link("victim", &format!("{}/victim", s.abs()))],
            "f",
            "/victim",
            "victim".into(),
        ),
        (
            vec![link("app", &format!("{}/", s.climb()))],
            "f",
            "/app/victim",
            format!("{inside}/victim"),
        ),
        (
            vec![link("app", "../../x"), link("x", "../../y/..")],
            "f",
            "/app/z/",
            "z/f".into(),
        ),
        // A dangling chain: the final target is created, inside.
        (
            vec![link("a", "real"), link("real", "/r1/r2")],
            "f",
            "/a/b/",
            "r1/r2/b/f".into(),
        ),
    ];
    for (links, src, dest_path, landed) in attempts {
        let dest = tempfile::tempdir().unwrap();
        for (name, target) in &links {
            std::os::unix::fs::symlink(target, dest.path().join(name)).unwrap();
        }
        let plan = prepare(&request(ctx.root(), &[src], dest_path)).unwrap();
        let result = plan.apply(dest.path());
        s.assert_untouched();
        assert!(result.is_ok(), "{links:?} {src} {dest_path}: {result:?}");
        let meta = std::fs::symlink_metadata(dest.path().join(&landed));
        assert!(
            meta.is_ok_and(|m| m.is_file()),
            "{links:?} {dest_path}: expected {landed}, have {:?}",
            listing(dest.path())
        );
    }
}

#[test]
fn a_dangling_relative_link_is_read_from_where_it_is() {
    let ctx = Ctx::new(&["f"]);
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dest.path().join("x/y")).unwrap();
    std::os::unix::fs::symlink("/x/y", dest.path().join("a")).unwrap();
    std::os::unix::fs::symlink("../c", dest.path().join("x/y/b")).unwrap();
    prepare(&request(ctx.root(), &["f"], "/a/b/d/"))
        .unwrap()
        .apply(dest.path())
        .unwrap();
    assert!(
        dest.path().join("x/c/d/f").is_file(),
        "{:?}",
        listing(dest.path())
    );
}

#[test]
fn a_symlink_below_the_target_is_never_followed() {
    let ctx = Ctx::new(&["tree/sub/file", "tree/link/x"]);
    let s = Sentinel::new();
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir(dest.path().join("app")).unwrap();
    std::os::unix::fs::symlink(s.abs(), dest.path().join("app/sub")).unwrap();
    let err = prepare(&request(ctx.root(), &["tree"], "/app"))
        .unwrap()
        .apply(dest.path())
        .unwrap_err();
    assert_eq!(err_text(err), "cannot copy to non-directory: /app/sub");
    s.assert_untouched();
    // A file whose name is an existing symlink replaces the link.
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dest.path().join("app/sub")).unwrap();
    std::os::unix::fs::symlink(
        format!("{}/victim", s.abs()),
        dest.path().join("app/sub/file"),
    )
    .unwrap();
    prepare(&request(ctx.root(), &["tree"], "/app"))
        .unwrap()
        .apply(dest.path())
        .unwrap();
    s.assert_untouched();
    assert_eq!(
        std::fs::read_to_string(dest.path().join("app/sub/file")).unwrap(),
        "tree/sub/file"
    );
}

#[test]
fn from_a_rootfs_links_resolve_inside_it() {
    let s = Sentinel::new();
    let rootfs = make_tree(&[
        "usr/lib/libx.so",
        "usr/bin/tool",
        "lib -> usr/lib",
        "abs -> /usr/bin",
        "etc/",
    ]);
    std::os::unix::fs::symlink(s.abs(), rootfs.path().join("escape_abs")).unwrap();
    std::os::unix::fs::symlink(s.climb(), rootfs.path().join("escape_up")).unwrap();
    let from = SourceRoot::Rootfs {
        root: rootfs.path(),
    };
    let (d, _) = copy_into_new(&request(from, &["/lib/libx.so", "/abs/tool"], "/o/")).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "o/ 755",
            "o/libx.so 644 = usr/lib/libx.so",
            "o/tool 644 = usr/bin/tool"
        ]
    );
    let (d, _) = copy_into_new(&request(from, &["/lib/*.so"], "/o/")).unwrap();
    assert_eq!(
        listing(d.path()),
        ["o/ 755", "o/libx.so 644 = usr/lib/libx.so"]
    );
    for src in [
        "/escape_abs/victim",
        "/escape_up/victim",
        "/../../../../etc/passwd",
    ] {
        let err = copy_into_new(&request(from, &[src], "/o/")).unwrap_err();
        assert_eq!(
            err_text(err),
            format!("{src} not found in the --from source")
        );
    }
    // The rootfs's own /etc/passwd is not the host's.
    let err = copy_into_new(&request(from, &["/etc/passwd"], "/o/")).unwrap_err();
    assert!(matches!(err, Error::SourceNotFoundInRoot { .. }), "{err:?}");
    s.assert_untouched();
}

#[test]
fn from_a_rootfs_owners_are_kept() {
    if !is_root() {
        eprintln!("skipped: setting owners needs root");
        return;
    }
    let rootfs = make_tree(&["home/app/.profile", "home/app/bin/run"]);
    for p in [
        "home/app",
        "home/app/.profile",
        "home/app/bin",
        "home/app/bin/run",
    ] {
        std::os::unix::fs::lchown(rootfs.path().join(p), Some(1000), Some(1000)).unwrap();
    }
    let from = SourceRoot::Rootfs {
        root: rootfs.path(),
    };
    let (d, _) = copy_into_new(&request(from, &["/home/app"], "/home/app")).unwrap();
    for p in ["home/app/.profile", "home/app/bin", "home/app/bin/run"] {
        let m = std::fs::metadata(d.path().join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{p}");
    }
    // The key records the owner too: a chown in the source changes it.
    let before = prepare(&request(from, &["/home/app"], "/x/"))
        .unwrap()
        .sources_input();
    std::os::unix::fs::lchown(rootfs.path().join("home/app/bin/run"), Some(0), Some(0)).unwrap();
    let after = prepare(&request(from, &["/home/app"], "/x/"))
        .unwrap()
        .sources_input();
    assert_ne!(before.digest, after.digest);
    assert_ne!(
        before.files["home/app/bin/run"].digest,
        after.files["home/app/bin/run"].digest
    );
}

#[test]
fn heredoc_files_are_written_with_their_names() {
    let ctx = Ctx::new(&["a.txt"]);
    let mut req = request(ctx.root(), &[], "/etc/");
    req.inline = vec![
        InlineFile {
            name: "motd".into(),
            content: "hello\n".into(),
        },
        InlineFile {
            name: "issue".into(),
            content: "strata\n".into(),
        },
    ];
    let (d, stats) = copy_into_new(&req).unwrap();
    assert_eq!(
        listing(d.path()),
        [
            "etc/ 755",
            "etc/issue 644 = strata\n",
            "etc/motd 644 = hello\n"
        ]
    );
    assert_eq!((stats.files, stats.bytes), (2, 13));
    let plan = prepare(&req).unwrap();
    assert!(plan.sources_input().files.contains_key("<<motd"));
    // One heredoc to a file name, with --chmod.
    let mut req = request(ctx.root(), &[], "/usr/local/bin/run");
    req.inline = vec![InlineFile {
        name: "EOF".into(),
        content: "#!/bin/sh\n".into(),
    }];
    req.chmod = Some("755".into());
    let (d, _) = copy_into_new(&req).unwrap();
    assert!(listing(d.path()).contains(&"usr/local/bin/run 755 = #!/bin/sh\n".to_string()));
}

#[test]
fn per_file_digests_agree_with_the_context_hash() {
    let ctx = Ctx::new(&["app/main.rs", "app/sub/lib.rs", "app/link -> main.rs"]);
    let plan = prepare(&request(ctx.root(), &["app"], "/src/")).unwrap();
    let ours = plan.sources_input();
    let theirs = crate::context::hash_selection(
        &ctx.index,
        &["app"],
        &crate::context::HashOptions::context(),
    )
    .unwrap();
    assert_eq!(ours.files.len(), theirs.files.len());
    for (path, record) in &theirs.files {
        assert_eq!(ours.files.get(path), Some(record), "{path}");
    }
}

#[test]
fn a_changed_file_is_named_when_the_cache_misses() {
    let ctx = Ctx::new(&["app/main.rs", "app/sub/lib.rs", "other"]);
    let inputs = |ctx: &Ctx| {
        let plan = prepare(&request(ctx.root(), &["app"], "/src/")).unwrap();
        let mut k = crate::cachekey::KeyInputs::new(
            crate::cachekey::OpKind::Copy,
            "linux/amd64",
            crate::cachekey::Parent::None,
            "COPY app /src/",
        );
        k.sources = Some(plan.sources_input());
        k
    };
    let before = inputs(&ctx);
    std::fs::write(ctx.dir.path().join("other"), "not copied").unwrap();
    assert_eq!(inputs(&ctx).key(), before.key());
    std::fs::write(ctx.dir.path().join("app/sub/lib.rs"), "changed").unwrap();
    let mut ctx = ctx;
    ctx.reindex();
    let after = inputs(&ctx);
    assert_ne!(after.key(), before.key());
    let text = crate::cachekey::explain(&before, &after).unwrap();
    assert!(text.contains("app/sub/lib.rs"), "{text}");
}

fn add_request<'a>(from: SourceRoot<'a>, sources: &[&str], dest: &str) -> CopyRequest<'a> {
    let mut req = request(from, sources, dest);
    req.add = Some(AddOptions::default());
    req
}

/// A tar with a directory, a file, a symlink and a hard link.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    // Every numeric field set: the layer reader refuses empty ones.
    let header = || {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h
    };
    let mut dir = header();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o750);
    dir.set_size(0);
    dir.set_mtime(1_000_000);
    b.append_data(&mut dir, "pkg/", &[][..]).unwrap();
    let mut file = header();
    file.set_mode(0o755);
    file.set_size(6);
    file.set_mtime(1_000_000);
    file.set_uid(1234);
    file.set_gid(1234);
    b.append_data(&mut file, "pkg/run.sh", &b"echo!\n"[..])
        .unwrap();
    let mut link = header();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    b.append_link(&mut link, "pkg/latest", "run.sh").unwrap();
    let mut hard = header();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    b.append_link(&mut hard, "pkg/again.sh", "pkg/run.sh")
        .unwrap();
    b.into_inner().unwrap()
}

#[test]
fn add_extracts_local_archives_in_every_compression() {
    use super::archive::tests::{compress, ALL};
    let tar = sample_tar();
    for kind in ALL {
        let ctx = Ctx::new(&["placeholder"]);
        // A name that says nothing: archives are recognised by content.
        std::fs::write(ctx.dir.path().join("blob.bin"), compress(kind, &tar)).unwrap();
        let mut ctx = ctx;
        ctx.reindex();
        let dest = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dest.path().join("opt/keep")).unwrap();
        let plan = prepare(&add_request(ctx.root(), &["blob.bin"], "/opt")).unwrap();
        let stats = plan.apply(dest.path()).unwrap();
        assert_eq!(
            listing(dest.path()),
            [
                "opt/ 755",
                "opt/keep/ 755",
                "opt/pkg/ 750",
                "opt/pkg/again.sh 755 = echo!\n",
                "opt/pkg/latest link -> run.sh",
                "opt/pkg/run.sh 755 = echo!\n"
            ],
            "{kind:?}"
        );
        assert_eq!((stats.archives, stats.archive_entries), (1, 4), "{kind:?}");
        let run = std::fs::metadata(dest.path().join("opt/pkg/run.sh")).unwrap();
        let again = std::fs::metadata(dest.path().join("opt/pkg/again.sh")).unwrap();
        assert_eq!(run.ino(), again.ino());
        assert_eq!(run.mtime(), 1_000_000);
        if is_root() {
            // Archive entries keep their owners, like tar -x as root.
            assert_eq!((run.uid(), run.gid()), (1234, 1234));
        }
        // COPY never extracts.
        let (d, _) = copy_into_new(&request(ctx.root(), &["blob.bin"], "/opt/")).unwrap();
        assert!(d.path().join("opt/blob.bin").is_file());
    }
}

#[test]
fn add_copies_what_is_not_an_archive_or_asked_not_to_unpack() {
    use super::archive::tests::compress;
    use super::archive::Compression;
    let ctx = Ctx::new(&["placeholder"]);
    std::fs::write(ctx.dir.path().join("empty.tar.gz"), "").unwrap();
    std::fs::write(
        ctx.dir.path().join("text.tar.gz"),
        compress(Compression::Gzip, b"not a tar"),
    )
    .unwrap();
    std::fs::write(ctx.dir.path().join("real.tar"), sample_tar()).unwrap();
    let mut ctx = ctx;
    ctx.reindex();
    let (d, stats) = copy_into_new(&add_request(
        ctx.root(),
        &["empty.tar.gz", "text.tar.gz"],
        "/o/",
    ))
    .unwrap();
    assert_eq!(stats.archives, 0);
    assert!(d.path().join("o/empty.tar.gz").is_file());
    assert!(d.path().join("o/text.tar.gz").is_file());
    let mut req = add_request(ctx.root(), &["real.tar"], "/o/");
    req.add = Some(AddOptions {
        unpack: Some(false),
        ..AddOptions::default()
    });
    let (d, stats) = copy_into_new(&req).unwrap();
    assert_eq!(stats.archives, 0);
    assert_eq!(
        std::fs::read(d.path().join("o/real.tar")).unwrap(),
        sample_tar()
    );
    // Wildcard matches are extracted each; the archive's name does not matter.
    let (d, stats) = copy_into_new(&add_request(ctx.root(), &["*.tar*"], "/o/")).unwrap();
    assert_eq!(stats.archives, 1);
    assert!(d.path().join("o/pkg/run.sh").is_file());
    assert!(d.path().join("o/empty.tar.gz").is_file());
}

/// A tar header with a raw name (the tar crate refuses to write `..`).
fn raw_entry(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn hostile_archives_stay_inside_the_destination() {
    let s = Sentinel::new();
    let cases: Vec<Vec<u8>> = vec![
        raw_entry(
            "../../../../../../../../tmp/escape",
            tar::EntryType::Regular,
            "",
            b"x",
        ),
        [
            raw_entry("l", tar::EntryType::Symlink, &s.abs(), b""),
            raw_entry("l/victim", tar::EntryType::Regular, "", b"owned"),
        ]
        .concat(),
        [
            raw_entry("up", tar::EntryType::Symlink, &s.climb(), b""),
            raw_entry("up/new", tar::EntryType::Regular, "", b"owned"),
        ]
        .concat(),
        raw_entry(
            "h",
            tar::EntryType::Link,
            &format!("{}/victim", s.climb()),
            b"",
        ),
    ];
    let mut reasons = Vec::new();
    for (i, body) in cases.into_iter().enumerate() {
        let ctx = Ctx::new(&["placeholder"]);
        let mut tar = body;
        tar.extend_from_slice(&[0u8; 1024]);
        std::fs::write(ctx.dir.path().join("evil.tar"), tar).unwrap();
        let mut ctx = ctx;
        ctx.reindex();
        let dest = tempfile::tempdir().unwrap();
        let result = prepare(&add_request(ctx.root(), &["evil.tar"], "/x/"))
            .unwrap()
            .apply(dest.path());
        s.assert_untouched();
        let Err(Error::Extract { source, .. }) = &result else {
            panic!("case {i}: {result:?}");
        };
        reasons.push(source.to_string());
    }
    let expect = [
        "leaves the root",
        "symlink made earlier",
        "symlink made earlier",
        "leaves the root",
    ];
    for (reason, want) in reasons.iter().zip(expect) {
        assert!(reason.contains(want), "{reason}");
    }
    assert!(!Path::new("/tmp/escape").exists());
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for download tests: serves fixed responses by
/// path, stops when dropped (and by itself after 30 s).
struct Server {
    base: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// (path, status, extra headers, body)
type Route = (&'static str, u16, Vec<String>, Vec<u8>);

impl Server {
    fn start(routes: Vec<Route>) -> Server {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !stopped.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let (stream, _) = match listener.accept() {
                    Ok(s) => s,
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if header == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let (status, headers, body) = routes
                    .iter()
                    .find(|r| r.0 == path)
                    .map(|r| (r.1, r.2.clone(), r.3.clone()))
                    .unwrap_or((404, Vec::new(), b"not found".to_vec()));
                let mut out = stream;
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for h in headers {
                    head.push_str(&h);
                    head.push_str("\r\n");
                }
                head.push_str("\r\n");
                let _ = out.write_all(head.as_bytes());
                let _ = out.write_all(&body);
            }
        });
        Server {
            base,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

#[test]
fn add_downloads_urls() {
    use std::io::Write as _;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    let modified = format!("Last-Modified: {}", httpdate::fmt_http_date(when));
    let tar = sample_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let tgz = gz.finish().unwrap();
    let server = Server::start(vec![
        (
            "/files/tool.sh",
            200,
            vec![modified.clone()],
            b"#!/bin/sh\necho hi\n".to_vec(),
        ),
        ("/", 200, vec![], b"index".to_vec()),
        ("/pkg.tgz", 200, vec![], tgz.clone()),
        (
            "/moved",
            302,
            vec!["Location: /files/tool.sh".into()],
            Vec::new(),
        ),
    ]);
    let ctx = Ctx::new(&["placeholder"]);
    let url = server.url("/files/tool.sh");

    // Into a directory: named after the URL path, mode 0600, mtime from Last-Modified.
    let (d, stats) = copy_into_new(&add_request(ctx.root(), &[&url], "/dl/")).unwrap();
    assert_eq!(
        listing(d.path()),
        ["dl/ 755", "dl/tool.sh 600 = #!/bin/sh\necho hi\n"]
    );
    assert_eq!(stats.bytes, 18);
    let m = std::fs::metadata(d.path().join("dl/tool.sh")).unwrap();
    assert_eq!(m.modified().unwrap(), when);
    // To a file name, with --chmod; a redirect is followed.
    let mut req = add_request(ctx.root(), &[&server.url("/moved")], "/usr/bin/tool");
    req.chmod = Some("755".into());
    let (d, _) = copy_into_new(&req).unwrap();
    assert!(listing(d.path()).contains(&"usr/bin/tool 755 = #!/bin/sh\necho hi\n".to_string()));
    // No name in the path.
    let (d, _) = copy_into_new(&add_request(ctx.root(), &[&server.url("/")], "/dl/")).unwrap();
    assert_eq!(listing(d.path()), ["dl/ 755", "dl/__unnamed__ 600 = index"]);
    // Downloads are not extracted unless asked.
    let (d, _) =
        copy_into_new(&add_request(ctx.root(), &[&server.url("/pkg.tgz")], "/o/")).unwrap();
    assert_eq!(std::fs::read(d.path().join("o/pkg.tgz")).unwrap(), tgz);
    let mut req = add_request(ctx.root(), &[&server.url("/pkg.tgz")], "/o/");
    req.add = Some(AddOptions {
        unpack: Some(true),
        ..AddOptions::default()
    });
    let (d, stats) = copy_into_new(&req).unwrap();
    assert_eq!(stats.archives, 1);
    assert!(d.path().join("o/pkg/run.sh").is_file());

    // --checksum.
    let body_digest = sha256_hex(b"#!/bin/sh\necho hi\n");
    let mut req = add_request(ctx.root(), &[&url], "/dl/");
    req.add = Some(AddOptions {
        checksum: Some(body_digest.clone()),
        ..AddOptions::default()
    });
    let plan = prepare(&req).unwrap();
    // The key holds the downloaded content's digest, under the URL.
    let record = &plan.sources_input().files[&url];
    assert_eq!(
        (record.kind.as_str(), record.mode, record.size),
        ("file", 0o600, 18)
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    req.add = Some(AddOptions {
        checksum: Some(wrong.clone()),
        ..AddOptions::default()
    });
    let err = prepare(&req).unwrap_err();
    assert_eq!(
        err_text(err),
        format!("checksum mismatch for {url}: expected {wrong}, got {body_digest}")
    );
    // Errors from the server.
    let missing = server.url("/nope");
    let err = prepare(&add_request(ctx.root(), &[&missing], "/dl/")).unwrap_err();
    assert_eq!(
        err_text(err),
        format!("could not download {missing}: the server answered 404 Not Found")
    );
}

#[test]
fn the_key_of_a_download_is_its_content() {
    let server = Server::start(vec![
        ("/a/file", 200, vec![], b"same".to_vec()),
        ("/b/file", 200, vec![], b"same".to_vec()),
        ("/c/file", 200, vec![], b"other".to_vec()),
    ]);
    let ctx = Ctx::new(&["placeholder"]);
    let key = |path: &str| {
        let url = server.url(path);
        let input = prepare(&add_request(ctx.root(), &[&url], "/dl/"))
            .unwrap()
            .sources_input();
        input.files[&url].digest.clone()
    };
    assert_eq!(key("/a/file"), key("/b/file"));
    assert_ne!(key("/a/file"), key("/c/file"));
}

#[test]
fn urls_and_git_are_refused_where_they_do_not_belong() {
    let ctx = Ctx::new(&["a.txt"]);
    let err = prepare(&request(ctx.root(), &["https://example.com/x"], "/x")).unwrap_err();
    assert_eq!(err_text(err), "source can't be a URL for COPY");
    let err = prepare(&request(
        ctx.root(),
        &["git@github.com:moby/buildkit.git"],
        "/x",
    ))
    .unwrap_err();
    assert_eq!(err_text(err), "source can't be a URL for COPY");
    for git in [
        "https://github.com/moby/buildkit.git",
        "https://github.com/moby/buildkit.git#v0.12:docs",
        "git://example.com/repo",
        "git@github.com:moby/buildkit.git",
    ] {
        let err = prepare(&add_request(ctx.root(), &[git], "/x")).unwrap_err();
        assert_eq!(
            err_text(err),
            format!("ADD of a git repository is not supported yet: {git}")
        );
    }
    let mut req = add_request(ctx.root(), &["a.txt"], "/x");
    req.add = Some(AddOptions {
        checksum: Some(format!("sha256:{}", "a".repeat(64))),
        ..AddOptions::default()
    });
    let err = prepare(&req).unwrap_err();
    assert!(matches!(err, Error::InvalidChecksum { .. }), "{err:?}");
}

/// The error and its causes, as the CLI would print them.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    text
}

#[test]
fn error_messages() {
    let ctx = Ctx::new(&["a.txt", "b.txt", "dir/x", "loop -> loop", "evil.tar"]);
    std::fs::write(
        ctx.dir.path().join("evil.tar"),
        [
            raw_entry("../up", tar::EntryType::Regular, "", b"x"),
            vec![0u8; 1024],
        ]
        .concat(),
    )
    .unwrap();
    let mut ctx = ctx;
    ctx.reindex();
    let rootfs = make_tree(&["bin/sh"]);
    let server = Server::start(vec![("/f", 200, vec![], b"data".to_vec())]);
    let mut lines = Vec::new();
    let mut push = |what: &str, result: Result<CopyStats, Error>| {
        let e = result.expect_err(what);
        lines.push(format!("{what}: {}", chain(&e)));
    };
    let run = |req: &CopyRequest, dest: Option<&Path>| -> Result<CopyStats, Error> {
        let plan = prepare(req)?;
        match dest {
            Some(d) => plan.apply(d),
            None => plan.apply(tempfile::tempdir().unwrap().path()),
        }
    };
    let root = ctx.root();
    push(
        "copy url",
        run(&request(root, &["http://example.com/x"], "/"), None),
    );
    push(
        "add git",
        run(&add_request(root, &["https://h/r.git#main"], "/"), None),
    );
    push("no match", run(&request(root, &["*.none"], "/o/"), None));
    push("missing", run(&request(root, &["nope/x"], "/o/"), None));
    let from = SourceRoot::Rootfs {
        root: rootfs.path(),
    };
    push(
        "missing in --from",
        run(&request(from, &["/bin/bash"], "/o/"), None),
    );
    push("loop", run(&request(root, &["loop"], "/o/"), None));
    push("bad pattern", run(&request(root, &["[a"], "/o/"), None));
    push(
        "several to a file",
        run(&request(root, &["a.txt", "b.txt"], "/f"), None),
    );
    push(
        "several to a file (ADD)",
        run(&add_request(root, &["*.txt"], "/f"), None),
    );
    let dest = tempfile::tempdir().unwrap();
    std::fs::write(dest.path().join("file"), "").unwrap();
    std::fs::create_dir_all(dest.path().join("d/x")).unwrap();
    push(
        "dir onto file",
        run(&request(root, &["dir"], "/file"), Some(dest.path())),
    );
    push(
        "file onto dir",
        run(&request(root, &["dir"], "/d/"), Some(dest.path())),
    );
    push(
        "parent is a file",
        run(&request(root, &["a.txt"], "/file/a"), Some(dest.path())),
    );
    let mut req = request(root, &["a.txt"], "/");
    req.chmod = Some("u+q".into());
    push("bad chmod", run(&req, None));
    req.chmod = Some("9".into());
    push("bad octal chmod", run(&req, None));
    req.chmod = None;
    req.chown = Some("nobody:nogroup".into());
    push("unknown user", run(&req, None));
    let mut req = add_request(root, &[&server.url("/f")], "/");
    req.add = Some(AddOptions {
        checksum: Some("md5:abc".into()),
        ..AddOptions::default()
    });
    push("bad checksum", run(&req, None));
    req.add = Some(AddOptions {
        checksum: Some(format!("sha256:{}", "0".repeat(64))),
        ..AddOptions::default()
    });
    push("checksum mismatch", run(&req, None));
    push(
        "http 404",
        run(&add_request(root, &[&server.url("/gone")], "/"), None),
    );
    push(
        "unsafe archive",
        run(&add_request(root, &["evil.tar"], "/x/"), None),
    );

    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT");
    settings.bind(|| insta::assert_snapshot!(lines.join("\n")));
}

#[test]
fn many_files_in_parallel_chunks_and_a_plan_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    for d in 0..3 {
        std::fs::create_dir(dir.path().join(format!("d{d}"))).unwrap();
        for f in 0..150 {
            std::fs::write(
                dir.path().join(format!("d{d}/f{f:03}")),
                format!("{d}-{f}").repeat(f + 1),
            )
            .unwrap();
        }
    }
    // Hard links spread over different chunks and directories.
    std::fs::hard_link(dir.path().join("d0/f000"), dir.path().join("d2/link")).unwrap();
    let ctx = Ctx::index(dir);
    let plan = prepare(&request(ctx.root(), &["."], "/data")).unwrap();
    let dest = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let stats = plan.apply(dest.path()).unwrap();
        assert_eq!((stats.files, stats.hardlinks, stats.dirs), (450, 1, 3));
        for d in 0..3 {
            for f in 0..150 {
                let rel = format!("d{d}/f{f:03}");
                assert_eq!(
                    std::fs::read(dest.path().join("data").join(&rel)).unwrap(),
                    std::fs::read(ctx.dir.path().join(&rel)).unwrap(),
                    "{rel}"
                );
            }
        }
        let a = std::fs::metadata(dest.path().join("data/d0/f000")).unwrap();
        let b = std::fs::metadata(dest.path().join("data/d2/link")).unwrap();
        assert_eq!(a.ino(), b.ino());
    }
}

#[test]
fn a_file_changed_after_prepare_is_not_copied() {
    let ctx = Ctx::new(&["f"]);
    let plan = prepare(&request(ctx.root(), &["f"], "/f")).unwrap();
    std::fs::write(ctx.dir.path().join("f"), "something longer").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = plan.apply(dest.path()).unwrap_err();
    assert_eq!(
        err_text(err),
        "f changed after it was hashed for the cache key"
    );
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn copy_into_a_mounted_overlay_snapshot() {
    use strata_overlay::{Driver, Snapshotter};
    let store = tempfile::tempdir().unwrap();
    let snap = Snapshotter::open(store.path(), Some(Driver::Overlay)).unwrap();
    // A base layer with an escape attempt and a directory to merge into.
    snap.prepare("base-w", None).unwrap();
    let base = snap.mount("base-w").unwrap();
    let s = Sentinel::new();
    std::fs::create_dir_all(base.join("app/old")).unwrap();
    std::fs::write(base.join("app/old/keep"), "base").unwrap();
    std::os::unix::fs::symlink(s.climb(), base.join("escape")).unwrap();
    snap.commit("base-w", "base").unwrap();
    snap.prepare("step", Some("base")).unwrap();
    let rootfs = snap.mount("step").unwrap();

    let ctx = Ctx::new(&["src/main.rs", "src/old/new.rs"]);
    prepare(&request(ctx.root(), &["src"], "/app"))
        .unwrap()
        .apply(&rootfs)
        .unwrap();
    prepare(&request(ctx.root(), &["src/main.rs"], "/escape/"))
        .unwrap()
        .apply(&rootfs)
        .unwrap();
    s.assert_untouched();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/old/keep")).unwrap(),
        "base"
    );
    assert!(rootfs.join("app/old/new.rs").is_file());
    let changes: Vec<String> = snap
        .diff("step")
        .unwrap()
        .into_iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
        .collect();
    let inside = s.abs().trim_start_matches('/').to_string();
    assert!(
        changes.contains(&"A app/main.rs".to_string()),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"A app/old/new.rs".to_string()),
        "{changes:?}"
    );
    assert!(
        changes.contains(&format!("A {inside}/main.rs")),
        "{changes:?}"
    );
    assert!(!changes.iter().any(|c| c.contains("keep")), "{changes:?}");
    snap.unmount("step").unwrap();
}

#[test]
fn plans_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CopyPlan>();
    send_sync::<CopyStats>();
    send_sync::<CopyRequest<'static>>();
}

/// The digest of copying the whole context, through a digest memo kept in `builder` (with
/// no settling time) when given, and how many files the memo answered.
fn context_digest(ctx: &mut Ctx, builder: Option<&Path>) -> (String, u64) {
    ctx.reindex();
    let memo = builder.map(|b| {
        let memo = std::sync::Arc::new(crate::context::HashCache::open_with_settle(
            b,
            ctx.dir.path(),
            std::time::Duration::ZERO,
        ));
        ctx.index.set_hash_cache(memo.clone());
        memo
    });
    let plan = prepare(&request(ctx.root(), &["."], "/app/")).unwrap();
    let hits = memo.map_or(0, |m| {
        m.save(|p| ctx.index.position(p).is_some());
        m.hits()
    });
    (plan.sources_input().digest, hits)
}

/// Lets the next change get a later ctime than what the memo remembered.
fn next_tick() {
    std::thread::sleep(std::time::Duration::from_millis(30));
}

#[test]
fn digest_memo_reads_only_what_changed_and_is_never_wrong() {
    let mut ctx = Ctx::new(&["a", "b", "sub/c", "sub/e"]);
    let builder = tempfile::tempdir().unwrap();
    let memo = Some(builder.path());
    let plain = |ctx: &mut Ctx| context_digest(ctx, None).0;
    next_tick();

    let first = context_digest(&mut ctx, memo);
    assert_eq!(first, (plain(&mut ctx), 0));
    assert_eq!(context_digest(&mut ctx, memo), (first.0.clone(), 4));

    // touch without a change: read again (once), same digest.
    next_tick();
    let a = ctx.dir.path().join("a");
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    assert_eq!(context_digest(&mut ctx, memo), (first.0.clone(), 3));
    assert_eq!(context_digest(&mut ctx, memo), (first.0.clone(), 4));

    // A same-size edit with the mtime put back: the ctime gives it away.
    next_tick();
    let b = ctx.dir.path().join("b");
    let mtime = std::fs::metadata(&b).unwrap().modified().unwrap();
    std::fs::write(&b, "B").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let edited = context_digest(&mut ctx, memo);
    assert_ne!(edited.0, first.0);
    assert_eq!(edited, (plain(&mut ctx), 3));

    // A rename, and two same-size files swapping names.
    next_tick();
    std::fs::rename(ctx.dir.path().join("sub/c"), ctx.dir.path().join("sub/d")).unwrap();
    let renamed = context_digest(&mut ctx, memo);
    assert_ne!(renamed.0, edited.0);
    assert_eq!(renamed, (plain(&mut ctx), 3));
    next_tick();
    let tmp = ctx.dir.path().join("tmp-swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let swapped = context_digest(&mut ctx, memo);
    assert_ne!(swapped.0, renamed.0);
    assert_eq!(swapped, (plain(&mut ctx), 2));

    // Other copy flags never share a digest; a chmod is a change.
    let mut chmod = request(ctx.root(), &["."], "/app/");
    chmod.chmod = Some("700".into());
    let with_chmod = prepare(&chmod).unwrap().sources_input().digest;
    assert_ne!(with_chmod, swapped.0);
    next_tick();
    std::fs::set_permissions(
        ctx.dir.path().join("sub/e"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let chmodded = context_digest(&mut ctx, memo);
    assert_ne!(chmodded.0, swapped.0);
    assert_eq!(chmodded, (plain(&mut ctx), 3));
}

#[test]
fn digest_memo_ignores_files_changed_in_their_timestamp_tick() {
    // Default settling time: files written just now are hashed but never remembered.
    let mut ctx = Ctx::new(&["a"]);
    let builder = tempfile::tempdir().unwrap();
    let memo = std::sync::Arc::new(crate::context::HashCache::open(
        builder.path(),
        ctx.dir.path(),
    ));
    ctx.index.set_hash_cache(memo.clone());
    prepare(&request(ctx.root(), &["."], "/app/")).unwrap();
    assert!(memo.is_empty());
    assert!(!memo.save(|_| true));
}

/// A tree to copy out of, as a stage's files: regular files of several modes, a hard-link
/// pair, a symlink and a file with a user xattr, all with an old mtime.
fn stage_tree() -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    let d = src.path().join("data");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    for (p, mode) in [("a", 0o644), ("x", 0o4755), ("sub/b", 0o640), ("h1", 0o644)] {
        std::fs::write(d.join(p), format!("content of {p}\n")).unwrap();
        std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::hard_link(d.join("h1"), d.join("h2")).unwrap();
    std::os::unix::fs::symlink("a", d.join("sym")).unwrap();
    std::fs::write(d.join("tagged"), "tagged\n").unwrap();
    let _ = rustix::fs::setxattr(
        d.join("tagged").as_path(),
        "user.k",
        b"v",
        rustix::fs::XattrFlags::empty(),
    );
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    for p in ["a", "x", "sub/b", "h1", "tagged"] {
        let f = std::fs::File::options()
            .write(true)
            .open(d.join(p))
            .unwrap();
        f.set_modified(old).unwrap();
    }
    src
}

/// The layer tar of everything below `dir` (as if it were a new layer on nothing).
fn layer_tar(dir: &Path) -> Vec<u8> {
    let empty = tempfile::tempdir().unwrap();
    let set = strata_overlay::diff_dirs(empty.path(), dir).unwrap();
    let mut out = Vec::new();
    strata_overlay::write_tar(&set, &mut out, &strata_overlay::TarOptions::default()).unwrap();
    out
}

fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

/// Applies `req` with the source's layer folders `layers` into a new folder that is its own
/// upper folder.
fn apply_linking(req: &CopyRequest, layers: &[&Path]) -> (tempfile::TempDir, CopyStats) {
    let dest = tempfile::tempdir().unwrap();
    let dirs: Vec<std::path::PathBuf> = layers.iter().map(|p| p.to_path_buf()).collect();
    let layers = strata_overlay::layers::Layers::open(&dirs).unwrap();
    let reuse = Reuse {
        upper: dest.path(),
        previous: None,
        source: Some(&layers),
    };
    let plan = prepare(req).unwrap();
    let (stats, _) = plan.apply_reusing(dest.path(), None, &reuse).unwrap();
    (dest, stats)
}

#[test]
fn copy_from_links_files_from_the_source_layer_and_writes_the_same_layer() {
    let src = tempfile::tempdir().unwrap();
    let stage = stage_tree();
    // The stage's files are its one layer folder.
    std::fs::rename(stage.path().join("data"), src.path().join("data")).unwrap();
    let req = request(SourceRoot::Rootfs { root: src.path() }, &["data"], "/out/");
    let (linked, stats) = apply_linking(&req, &[src.path()]);
    let (copied, plain) = copy_into_new(&req).unwrap();
    assert_eq!(plain.linked, 0);
    // a, x, sub/b and one of the h1/h2 pair (the other is linked to it); not the file
    // with an xattr, not the symlink.
    assert_eq!(stats.linked, 4, "{stats:?}");
    assert_eq!(stats.files, plain.files);
    assert_eq!(stats.hardlinks, 1);
    for p in ["a", "x", "sub/b", "h1", "h2"] {
        assert_eq!(
            ino(&linked.path().join("out").join(p)),
            ino(&src.path().join("data").join(p)),
            "{p} is the source's file"
        );
    }
    assert_ne!(
        ino(&linked.path().join("out/tagged")),
        ino(&src.path().join("data/tagged"))
    );
    assert_eq!(listing(linked.path()), listing(copied.path()));
    // The tar writer pairs names of one inode inside the layer only: the same bytes.
    let tar = layer_tar(linked.path());
    assert_eq!(tar, layer_tar(copied.path()));
    assert_eq!(
        std::fs::symlink_metadata(linked.path().join("out/a"))
            .unwrap()
            .nlink(),
        2
    );

    // Another mode written: nothing is linked, the same layer as a copy.
    let mut chmod = req.clone();
    chmod.chmod = Some("600".into());
    let (linked, stats) = apply_linking(&chmod, &[src.path()]);
    let (copied, _) = copy_into_new(&chmod).unwrap();
    assert_eq!(stats.linked, 0);
    assert_eq!(layer_tar(linked.path()), layer_tar(copied.path()));
}

#[test]
fn copy_from_links_only_the_inode_the_source_root_shows() {
    let src = tempfile::tempdir().unwrap();
    let stage = stage_tree();
    std::fs::rename(stage.path().join("data"), src.path().join("data")).unwrap();
    // Layer folders that hold equal-looking files which are not the root's: never linked.
    let other = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(src.path().join("data"))
        .arg(other.path())
        .status()
        .unwrap();
    assert!(status.success());
    let req = request(SourceRoot::Rootfs { root: src.path() }, &["data"], "/out/");
    let (linked, stats) = apply_linking(&req, &[other.path()]);
    assert_eq!(stats.linked, 0);
    let (copied, _) = copy_into_new(&req).unwrap();
    assert_eq!(layer_tar(linked.path()), layer_tar(copied.path()));

    // Two layers: the upper one's file hides the lower one's.
    let upper = tempfile::tempdir().unwrap();
    std::fs::create_dir(upper.path().join("data")).unwrap();
    std::fs::hard_link(src.path().join("data/a"), upper.path().join("data/a")).unwrap();
    let (linked, stats) = apply_linking(&req, &[upper.path(), other.path()]);
    assert_eq!(stats.linked, 1, "only a, from the upper layer");
    assert_eq!(
        ino(&linked.path().join("out/a")),
        ino(&src.path().join("data/a"))
    );
    assert_eq!(layer_tar(linked.path()), layer_tar(copied.path()));
}
