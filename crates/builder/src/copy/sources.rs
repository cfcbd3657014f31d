//! Turning `COPY`/`ADD` source strings into the entries to copy.
//!
//! A source is normalised as BuildKit does (`NormalizePath("/", src)`: a leading `/` and any
//! `..` that would leave the root are dropped, so `../x` is `x`; a trailing `/` is ignored),
//! then split at its first component with a wildcard. The part before it is resolved with
//! every symlink followed *inside the source root*; the rest is a Go `filepath.Match`
//! pattern matched against the paths below (so `*` never crosses `/`), a matching directory
//! being taken whole. Each match, or the plain source, becomes a [`Top`]:
//!
//! - a directory: its contents are copied (the directory itself is not);
//! - anything else: copied as one entry under the source's own name (a top-level symlink is
//!   followed, as BuildKit does; symlinks found below a directory are copied as symlinks).
//!
//! With `--parents` a source is `pivot/./pattern` (or just `pattern`, pivoting at the root)
//! and every path below the pivot that the pattern matches (`.dockerignore` syntax, `**`
//! allowed) is copied with its parent directories, relative to the pivot.
//!
//! `--exclude` patterns (`.dockerignore` syntax) are matched against paths relative to the
//! copied directory, and, for wildcard matches, against the match's path relative to the
//! wildcard's base directory (so `COPY --exclude=*.txt hom* /d/` leaves out `home.txt`).
//!
//! Sources are read through a [`Tree`]: the build context's index (already filtered by
//! `.dockerignore`, so ignored files cannot be copied) or another root filesystem, where
//! every lookup goes through `openat2(RESOLVE_IN_ROOT)`.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use strata_overlay::in_root::{Follow, Root};

use crate::context::gopath::{clean, go_match, has_wildcards};
use crate::context::{ContextIndex, Entry, FileKind, PatternMatcher};
use crate::Error;

/// Symlinks followed while resolving one path before giving up (the kernel's limit).
const MAX_HOPS: usize = 40;

/// How a source string is to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// An `http://` or `https://` URL.
    Url,
    /// A git repository reference.
    Git,
    /// A path in the source root.
    Path,
}

/// Classifies a source as BuildKit's Dockerfile frontend does: git references first
/// (`git://`, `ssh://`, `git@host:`, or an `http(s)` URL whose path ends in `.git`), then
/// `http(s)` URLs, else a path.
pub(crate) fn classify(src: &str) -> SourceKind {
    let is_http = src.starts_with("http://") || src.starts_with("https://");
    if src.starts_with("git://") || src.starts_with("ssh://") || is_scp_like(src) {
        return SourceKind::Git;
    }
    if is_http {
        let without_fragment = src.split('#').next().unwrap_or(src);
        let path_part = without_fragment
            .split('?')
            .next()
            .unwrap_or(without_fragment);
        if path_part.ends_with(".git") || path_part.ends_with(".git/") {
            return SourceKind::Git;
        }
        return SourceKind::Url;
    }
    SourceKind::Path
}

/// `user@host:path`, git's scp-like syntax.
fn is_scp_like(src: &str) -> bool {
    let Some((user_host, _)) = src.split_once(':') else {
        return false;
    };
    match user_host.split_once('@') {
        Some((user, host)) => {
            !user.is_empty() && !host.is_empty() && !user.contains('/') && !host.contains('/')
        }
        None => false,
    }
}

/// BuildKit's `NormalizePath("/", src)` made relative: `""` is the root.
pub(crate) fn normalize_source(src: &str) -> String {
    let cleaned = clean(&format!("/{src}"));
    cleaned.trim_start_matches('/').to_string()
}

/// The last component of a normalised path (`""` for the root).
pub(crate) fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// A source root the copy reads from.
pub(crate) trait Tree: Sync {
    /// The entry `path` names with every symlink followed inside the root; its `path` is
    /// the resolved one. `None` when nothing is there.
    fn resolve(&self, path: &str) -> Result<Option<Entry>, Error>;
    /// The entry at `path` without following any symlink.
    fn lookup(&self, path: &str) -> Result<Option<Entry>, Error>;
    /// Everything below the directory `dir`, in walk order (depth first, names sorted).
    fn subtree(&self, dir: &Entry) -> Result<Vec<Entry>, Error>;
    /// The root, for the plan to keep.
    fn into_root(self: Box<Self>) -> Root;
    /// Whether copies keep the owner of the source files (another stage or image) rather
    /// than writing 0:0 (the build context).
    fn keeps_owner(&self) -> bool;
    /// How a missing path is reported.
    fn not_found(&self, path: &str) -> Error;
}

/// The build context, through its walked index.
pub(crate) struct ContextTree<'a> {
    index: &'a ContextIndex,
    root: Root,
}

impl<'a> ContextTree<'a> {
    pub fn new(dir: &Path, index: &'a ContextIndex) -> Result<Self, Error> {
        let root = Root::open(dir).map_err(|e| Error::io("open", dir, overlay_io(e)))?;
        Ok(ContextTree { index, root })
    }
}

/// An overlay error as an `io::Error` (for [`Error::Io`]).
pub(crate) fn overlay_io(e: strata_overlay::Error) -> std::io::Error {
    match e {
        strata_overlay::Error::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

fn errno_of(e: &strata_overlay::Error) -> Option<i32> {
    match e {
        strata_overlay::Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

impl Tree for ContextTree<'_> {
    fn resolve(&self, path: &str) -> Result<Option<Entry>, Error> {
        let mut todo: VecDeque<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(comp) = todo.pop_front() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(comp);
            let joined = cur.join("/");
            let Some(entry) = self.index.get(&joined) else {
                return Ok(None);
            };
            match entry.kind {
                FileKind::Symlink => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(Error::SymlinkLoop {
                            path: path.to_string(),
                        });
                    }
                    let target = entry.link_target.clone().unwrap_or_default();
                    cur.pop();
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    for c in target.split('/').rev().filter(|c| !c.is_empty()) {
                        todo.push_front(c.to_string());
                    }
                }
                FileKind::Dir => {}
                _ if todo.is_empty() => {}
                // A file used as a directory.
                _ => return Ok(None),
            }
        }
        Ok(self.index.get(&cur.join("/")).cloned())
    }

    fn lookup(&self, path: &str) -> Result<Option<Entry>, Error> {
        Ok(self.index.get(path).cloned())
    }

    fn subtree(&self, dir: &Entry) -> Result<Vec<Entry>, Error> {
        let Some(pos) = self.index.position(&dir.path) else {
            return Ok(Vec::new());
        };
        let range = self.index.subtree_range(pos);
        Ok(self.index.entries()[range.start + 1..range.end].to_vec())
    }

    fn into_root(self: Box<Self>) -> Root {
        self.root
    }

    fn keeps_owner(&self) -> bool {
        false
    }

    fn not_found(&self, path: &str) -> Error {
        Error::SourceNotFound {
            path: path.to_string(),
        }
    }
}

/// Another root filesystem (`COPY --from`): a stage's or an image's rootfs. Lookups are
/// in-root; directories are walked through a descriptor of the directory, so nothing
/// outside the root is ever listed. The tree must not change during the build step (it
/// is a committed snapshot).
pub(crate) struct RootfsTree {
    root: Root,
}

impl RootfsTree {
    pub fn new(dir: &Path) -> Result<Self, Error> {
        let root = Root::open(dir).map_err(|e| Error::io("open", dir, overlay_io(e)))?;
        Ok(RootfsTree { root })
    }
}

/// A missing-path error from the in-root resolver.
fn is_missing(e: &strata_overlay::Error) -> bool {
    matches!(errno_of(e), Some(libc::ENOENT | libc::ENOTDIR))
}

impl Tree for RootfsTree {
    fn resolve(&self, path: &str) -> Result<Option<Entry>, Error> {
        let resolved = match self.root.resolved(Path::new(path)) {
            Ok(p) => p,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(strata_overlay::Error::Path { reason, .. }) if reason.contains("symlink") => {
                return Err(Error::SymlinkLoop {
                    path: path.to_string(),
                })
            }
            Err(e) => return Err(Error::io("resolve", path, overlay_io(e))),
        };
        let Some(text) = resolved.to_str() else {
            return Err(Error::NonUtf8Path { path: resolved });
        };
        self.lookup(text.trim_start_matches('/'))
    }

    fn lookup(&self, path: &str) -> Result<Option<Entry>, Error> {
        let fd = match self.root.open_at(
            Path::new(path),
            OFlags::PATH | OFlags::NOFOLLOW,
            Mode::empty(),
            Follow::Never,
        ) {
            Ok(fd) => fd,
            Err(e) if is_missing(&e) => return Ok(None),
            // A symlink on the way: the path is not a plain one, so there is no such entry.
            Err(strata_overlay::Error::Path { .. }) => return Ok(None),
            Err(e) => return Err(Error::io("open", path, overlay_io(e))),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", path, e.into()))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let link_target = if ft == FileType::Symlink {
            let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                .map_err(|e| Error::io("read link", path, e.into()))?;
            match target.into_string() {
                Ok(t) => Some(t),
                Err(_) => return Err(Error::NonUtf8Path { path: path.into() }),
            }
        } else {
            None
        };
        Ok(Some(entry_from_stat(path, &st, link_target)))
    }

    fn subtree(&self, dir: &Entry) -> Result<Vec<Entry>, Error> {
        let fd = self
            .root
            .open_dir(Path::new(&dir.path), Follow::Never)
            .map_err(|e| Error::io("open", &dir.path, overlay_io(e)))?;
        let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let index = ContextIndex::walk(Path::new(&via), None)?;
        let prefix = if dir.path.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.path)
        };
        Ok(index.entries()[1..]
            .iter()
            .map(|e| Entry {
                path: format!("{prefix}{}", e.path),
                ..e.clone()
            })
            .collect())
    }

    fn into_root(self: Box<Self>) -> Root {
        self.root
    }

    fn keeps_owner(&self) -> bool {
        true
    }

    fn not_found(&self, path: &str) -> Error {
        Error::SourceNotFoundInRoot {
            path: path.to_string(),
        }
    }
}

/// An [`Entry`] from a `stat` result.
pub(crate) fn entry_from_stat(path: &str, st: &rustix::fs::Stat, link: Option<String>) -> Entry {
    let kind = FileKind::from_mode(st.st_mode);
    Entry {
        path: path.to_string(),
        kind,
        mode: st.st_mode & 0o7777,
        size: if kind == FileKind::File {
            st.st_size as u64
        } else {
            0
        },
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        link_target: link,
    }
}

/// What a top-level source becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopKind {
    /// One non-directory, placed at the destination or under it by its name.
    Single,
    /// The contents of a directory, merged into the destination directory.
    Contents,
    /// `--parents` matches with their parent directories, into the destination directory.
    Parents,
    /// A tar archive extracted into the destination directory (`ADD`).
    Archive,
}

impl TopKind {
    pub fn name(self) -> &'static str {
        match self {
            TopKind::Single => "single",
            TopKind::Contents => "contents",
            TopKind::Parents => "parents",
            TopKind::Archive => "archive",
        }
    }
}

/// One entry to copy, as found in the source.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The source metadata; `path` is the resolved path in the source root.
    pub entry: Entry,
    /// Where in `entry.path` the path below the top's target starts ([`Found::rel`]):
    /// it is always a suffix, so it needs no string of its own.
    pub rel_start: usize,
    /// Existing directories get the source's metadata (false for `--parents` ancestors
    /// and for directories kept only for an included descendant: those are only set up
    /// when this copy creates them).
    pub overwrite_meta: bool,
}

impl Found {
    /// `entry`, going where its path without the first `prefix_len` bytes says.
    fn below(entry: Entry, prefix_len: usize, overwrite_meta: bool) -> Found {
        Found {
            entry,
            rel_start: prefix_len,
            overwrite_meta,
        }
    }

    /// `entry` as the top's target itself.
    fn target(entry: Entry, overwrite_meta: bool) -> Found {
        Found {
            rel_start: entry.path.len(),
            entry,
            overwrite_meta,
        }
    }

    /// Where it goes below the top's target (`""` for the target itself).
    pub fn rel(&self) -> &str {
        self.entry.path.get(self.rel_start..).unwrap_or_default()
    }
}

/// A top-level source with its entries. For directory-like tops the first entry is the
/// directory itself (`rel` empty): hashed, never copied.
#[derive(Debug, Clone)]
pub(crate) struct FoundTop {
    pub kind: TopKind,
    /// The source as matched (for the cache key and messages).
    pub label: String,
    /// The file name a [`TopKind::Single`] top gets under a directory destination.
    pub name: String,
    pub entries: Vec<Found>,
}

/// Collects tops from source strings against one tree.
pub(crate) struct Collector<'t> {
    pub tree: &'t dyn Tree,
    pub excludes: Option<PatternMatcher>,
    pub tops: Vec<FoundTop>,
}

impl<'t> Collector<'t> {
    pub fn new(tree: &'t dyn Tree, excludes: &[String]) -> Result<Self, Error> {
        let excludes = if excludes.iter().all(|e| e.trim().is_empty()) {
            None
        } else {
            Some(PatternMatcher::new(excludes)?)
        };
        Ok(Collector {
            tree,
            excludes,
            tops: Vec::new(),
        })
    }

    fn excluded(&self, rel: &str) -> Result<bool, Error> {
        match &self.excludes {
            Some(m) => m.is_excluded(rel),
            None => Ok(false),
        }
    }

    fn can_prune(&self, rel: &str) -> bool {
        self.excludes.as_ref().is_none_or(|m| m.can_prune(rel))
    }

    /// Adds the tops of one path source (not a URL).
    pub fn add(&mut self, src: &str) -> Result<(), Error> {
        let norm = normalize_source(src);
        let (base, pattern) = crate::context::split_wildcards(&norm);
        let Some(pattern) = pattern else {
            let entry = self
                .tree
                .resolve(&base)?
                .ok_or_else(|| self.tree.not_found(src))?;
            let subtree = if entry.kind == FileKind::Dir {
                Some(self.tree.subtree(&entry)?)
            } else {
                None
            };
            return self.push_top(entry, &base, subtree);
        };
        go_match(&pattern, "").map_err(|_| Error::BadPattern {
            pattern: src.to_string(),
            reason: "syntax error in pattern",
        })?;
        let Some(dir) = self.tree.resolve(&base)? else {
            return Ok(());
        };
        if dir.kind != FileKind::Dir {
            return Ok(());
        }
        let below = self.tree.subtree(&dir)?;
        let prefix_len = if dir.path.is_empty() {
            0
        } else {
            dir.path.len() + 1
        };
        let mut i = 0;
        while i < below.len() {
            let e = &below[i];
            let end = subtree_end(&below, i);
            let rel = &e.path[prefix_len..];
            let matched = go_match(&pattern, rel).map_err(|_| Error::BadPattern {
                pattern: src.to_string(),
                reason: "syntax error in pattern",
            })?;
            if !matched {
                i += 1;
                continue;
            }
            if !self.excluded(rel)? {
                let label = if base.is_empty() {
                    rel.to_string()
                } else {
                    format!("{base}/{rel}")
                };
                match e.kind {
                    FileKind::Symlink => {
                        let target = self
                            .tree
                            .resolve(&e.path)?
                            .ok_or_else(|| self.tree.not_found(&label))?;
                        let subtree = if target.kind == FileKind::Dir {
                            Some(self.tree.subtree(&target)?)
                        } else {
                            None
                        };
                        self.push_top(target, &label, subtree)?;
                    }
                    FileKind::Dir => {
                        let subtree = below[i + 1..end].to_vec();
                        self.push_top(e.clone(), &label, Some(subtree))?;
                    }
                    _ => self.push_top(e.clone(), &label, None)?,
                }
            }
            i = end;
        }
        Ok(())
    }

    /// One resolved top: `entry` (followed), named after `label`'s last component.
    fn push_top(
        &mut self,
        entry: Entry,
        label: &str,
        subtree: Option<Vec<Entry>>,
    ) -> Result<(), Error> {
        let name = base_name(label).to_string();
        let Some(below) = subtree else {
            self.tops.push(FoundTop {
                kind: TopKind::Single,
                label: label.to_string(),
                name,
                entries: vec![Found::target(entry, true)],
            });
            return Ok(());
        };
        let prefix_len = if entry.path.is_empty() {
            0
        } else {
            entry.path.len() + 1
        };
        let mut entries = Vec::with_capacity(1 + below.len());
        entries.push(Found::target(entry, false));
        if self.excludes.is_none() {
            // Nothing to filter: the entries move into the top (no copy per file).
            entries.extend(
                below
                    .into_iter()
                    .map(|entry| Found::below(entry, prefix_len, true)),
            );
        } else {
            self.filter_below(prefix_len, &below, &mut entries)?;
        }
        self.tops.push(FoundTop {
            kind: TopKind::Contents,
            label: label.to_string(),
            name,
            entries,
        });
        Ok(())
    }

    /// Appends the entries of `below` (a directory's descendants, walk order) that the
    /// `--exclude` patterns leave, with excluded directories kept (without their metadata)
    /// only as parents of included entries. Paths lose their first `prefix_len` bytes to
    /// become relative to the copied directory (or the `--parents` pivot), which is also
    /// what the patterns see.
    fn filter_below(
        &self,
        prefix_len: usize,
        below: &[Entry],
        out: &mut Vec<Found>,
    ) -> Result<(), Error> {
        // Excluded directories that may still get included descendants.
        let mut pending: Vec<(Found, bool)> = Vec::new();
        let mut i = 0;
        while i < below.len() {
            let e = &below[i];
            let rel = e.path.get(prefix_len..).unwrap_or_default();
            while let Some((p, _)) = pending.last() {
                let parent = p.rel();
                if rel.len() > parent.len()
                    && rel.starts_with(parent)
                    && rel.as_bytes()[parent.len()] == b'/'
                {
                    break;
                }
                pending.pop();
            }
            if self.excluded(rel)? {
                if e.kind == FileKind::Dir {
                    if self.can_prune(rel) {
                        i = subtree_end(below, i);
                        continue;
                    }
                    pending.push((Found::below(e.clone(), prefix_len, false), false));
                }
                i += 1;
                continue;
            }
            for (p, emitted) in pending.iter_mut() {
                if !*emitted {
                    out.push(p.clone());
                    *emitted = true;
                }
            }
            out.push(Found::below(e.clone(), prefix_len, true));
            i += 1;
        }
        Ok(())
    }

    /// Adds the top of one `--parents` source.
    pub fn add_parents(&mut self, src: &str) -> Result<(), Error> {
        let (pivot, pattern) = match src.split_once("/./") {
            Some((p, rest)) => (normalize_source(p), normalize_source(rest)),
            None => (String::new(), normalize_source(src)),
        };
        let p = self
            .tree
            .resolve(&pivot)?
            .ok_or_else(|| self.tree.not_found(src))?;
        if p.kind != FileKind::Dir {
            return Err(self.tree.not_found(src));
        }
        // Walk only below the pattern's literal leading directories.
        let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        let literal = comps
            .iter()
            .take(comps.len().saturating_sub(1))
            .take_while(|c| !has_wildcards(c))
            .count();
        let join = |parts: &[&str]| -> String {
            let rel = parts.join("/");
            match (p.path.is_empty(), rel.is_empty()) {
                (true, _) => rel,
                (false, true) => p.path.clone(),
                (false, false) => format!("{}/{rel}", p.path),
            }
        };
        let mut ancestors = Vec::new();
        for i in 1..=literal {
            match self.tree.lookup(&join(&comps[..i]))? {
                Some(e) if e.kind == FileKind::Dir => ancestors.push(e),
                _ => return Ok(()),
            }
        }
        let start = ancestors.last().cloned().unwrap_or_else(|| p.clone());
        let below = self.tree.subtree(&start)?;
        let matcher = if pattern.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(&[pattern.as_str()])?)
        };
        let prefix_len = if p.path.is_empty() {
            0
        } else {
            p.path.len() + 1
        };
        let rel_of = |e: &Entry| e.path[prefix_len..].to_string();
        let mut entries = vec![Found::target(p.clone(), false)];
        let mut emitted_ancestors = 0;
        // Directories on the path from the walk's start to the current entry, with whether
        // they were listed already.
        let mut stack: Vec<(usize, bool)> = Vec::new();
        let mut i = 0;
        let mut any = false;
        while i < below.len() {
            let e = &below[i];
            while let Some(&(j, _)) = stack.last() {
                if e.path.starts_with(&below[j].path)
                    && e.path[below[j].path.len()..].starts_with('/')
                {
                    break;
                }
                stack.pop();
            }
            let rel = rel_of(e);
            let end = subtree_end(&below, i);
            let hit = match matcher.as_ref().and_then(|m| m.patterns().first()) {
                Some(pat) => pat.matches(&rel)?,
                None => true,
            };
            if !hit {
                if e.kind == FileKind::Dir {
                    stack.push((i, false));
                }
                i += 1;
                continue;
            }
            if self.excluded(&rel)? {
                i = end;
                continue;
            }
            any = true;
            for a in &ancestors[emitted_ancestors..] {
                entries.push(Found::below(a.clone(), prefix_len, false));
            }
            emitted_ancestors = ancestors.len();
            for (j, emitted) in stack.iter_mut() {
                if !*emitted {
                    entries.push(Found::below(below[*j].clone(), prefix_len, false));
                    *emitted = true;
                }
            }
            entries.push(Found::below(e.clone(), prefix_len, true));
            if e.kind == FileKind::Dir {
                self.filter_below(prefix_len, &below[i + 1..end], &mut entries)?;
            }
            i = end;
        }
        if any {
            self.tops.push(FoundTop {
                kind: TopKind::Parents,
                label: src.to_string(),
                name: String::new(),
                entries,
            });
        }
        Ok(())
    }
}

/// The end (exclusive) of the subtree of `entries[i]` in a walk-ordered slice.
fn subtree_end(entries: &[Entry], i: usize) -> usize {
    let Some(e) = entries.get(i) else {
        return i;
    };
    if e.kind != FileKind::Dir {
        return i + 1;
    }
    let prefix = format!("{}/", e.path);
    entries[i + 1..]
        .iter()
        .position(|x| !x.path.starts_with(&prefix))
        .map_or(entries.len(), |n| i + 1 + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::walk::tests::make_tree;

    #[test]
    fn sources_are_classified_like_the_dockerfile_frontend() {
        assert_eq!(classify("https://example.com/f.tgz"), SourceKind::Url);
        assert_eq!(classify("http://example.com/"), SourceKind::Url);
        assert_eq!(classify("https://example.com/repo.git"), SourceKind::Git);
        assert_eq!(
            classify("https://example.com/repo.git#v1:sub"),
            SourceKind::Git
        );
        assert_eq!(classify("git://example.com/repo"), SourceKind::Git);
        assert_eq!(classify("ssh://git@example.com/repo"), SourceKind::Git);
        assert_eq!(classify("git@github.com:moby/moby.git"), SourceKind::Git);
        assert_eq!(classify("src/main.rs"), SourceKind::Path);
        assert_eq!(classify("a:b"), SourceKind::Path);
        assert_eq!(classify("dir/x@y:z"), SourceKind::Path);
        assert_eq!(classify("HTTP://upper.case/x"), SourceKind::Path);
    }

    #[test]
    fn sources_are_normalised_inside_the_root() {
        assert_eq!(normalize_source("a/b/"), "a/b");
        assert_eq!(normalize_source("./a"), "a");
        assert_eq!(normalize_source("../../a"), "a");
        assert_eq!(normalize_source("/abs/../x"), "x");
        assert_eq!(normalize_source("."), "");
        assert_eq!(normalize_source("/"), "");
        assert_eq!(base_name("a/b"), "b");
        assert_eq!(base_name(""), "");
    }

    #[test]
    fn context_paths_resolve_through_links_inside_the_context() {
        let dir = make_tree(&[
            "real/sub/file",
            "l1 -> real",
            "l2 -> l1/sub",
            "abs -> /real/sub",
            "up -> ../../../../real",
            "dangling -> nowhere",
            "file/",
        ]);
        let index = ContextIndex::walk(dir.path(), None).unwrap();
        let tree = ContextTree::new(dir.path(), &index).unwrap();
        let path = |p: &str| tree.resolve(p).unwrap().map(|e| e.path);
        assert_eq!(path("l1/sub/file").as_deref(), Some("real/sub/file"));
        assert_eq!(path("l2/file").as_deref(), Some("real/sub/file"));
        assert_eq!(path("abs/file").as_deref(), Some("real/sub/file"));
        assert_eq!(path("up/sub").as_deref(), Some("real/sub"));
        assert_eq!(path("l2/../sub/file").as_deref(), Some("real/sub/file"));
        assert_eq!(path("dangling"), None);
        assert_eq!(path("real/sub/file/x"), None);
        assert_eq!(path("").as_deref(), Some(""));
        // Without following: links are themselves.
        assert_eq!(
            tree.lookup("l1").unwrap().map(|e| e.kind),
            Some(FileKind::Symlink)
        );
    }

    #[test]
    fn rootfs_paths_resolve_in_root() {
        let dir = make_tree(&[
            "usr/lib/x",
            "lib -> usr/lib",
            "abs -> /usr",
            "up -> ../../..",
        ]);
        let tree = RootfsTree::new(dir.path()).unwrap();
        let path = |p: &str| tree.resolve(p).unwrap().map(|e| e.path);
        assert_eq!(path("lib/x").as_deref(), Some("usr/lib/x"));
        assert_eq!(path("/abs/lib/x").as_deref(), Some("usr/lib/x"));
        assert_eq!(path("up/usr/lib").as_deref(), Some("usr/lib"));
        assert_eq!(path("up").as_deref(), Some(""));
        assert_eq!(path("nope"), None);
        assert_eq!(path("usr/lib/x/y"), None);
        let lib = tree.lookup("lib").unwrap().unwrap();
        assert_eq!(lib.link_target.as_deref(), Some("usr/lib"));
        let usr = tree.resolve("usr").unwrap().unwrap();
        let below: Vec<String> = tree
            .subtree(&usr)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(below, ["usr/lib", "usr/lib/x"]);
        // A path through a link is not a plain path.
        assert!(tree.lookup("lib/x").unwrap().is_none());
    }
}
