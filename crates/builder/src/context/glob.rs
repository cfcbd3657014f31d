//! Expanding `COPY`/`ADD` source wildcards against a tree, as BuildKit does.
//!
//! [`expand_wildcards`] follows BuildKit's `ResolveWildcards`: the source is split at the
//! first path component that holds a wildcard; the part before it is a plain directory, the
//! rest a `filepath.Match` pattern matched against every path below that directory (so `*`
//! stays within one component); a matching directory is taken whole and not searched
//! further. [`expand_double_star`] is for `COPY --parents`, whose sources may use `**`
//! with `.dockerignore` semantics.

use super::gopath::{clean, go_match, has_wildcards};
use super::ignore::PatternMatcher;
use super::walk::ContextIndex;
use crate::Error;

/// Splits a source at its first component with a wildcard: (`a/b`, `Some("c*/d")`) for
/// `a/b/c*/d`; (`a/b`, `None`) when there is no wildcard. The path is cleaned first and a
/// leading `/` dropped (sources are relative to the tree's root).
pub fn split_wildcards(source: &str) -> (String, Option<String>) {
    let cleaned = clean(source.trim_start_matches('/'));
    let cleaned = if cleaned == "." {
        String::new()
    } else {
        cleaned
    };
    let parts: Vec<&str> = cleaned.split('/').filter(|p| !p.is_empty()).collect();
    match parts.iter().position(|p| has_wildcards(p)) {
        None => (cleaned, None),
        Some(i) => (parts[..i].join("/"), Some(parts[i..].join("/"))),
    }
}

/// The paths of `index` (relative to its root, in walk order) that `source` names. A source
/// without wildcards is returned as is (whether or not it exists: the caller reports a
/// missing source); a wildcard that matches nothing gives an empty list.
pub fn expand_wildcards(index: &ContextIndex, source: &str) -> Result<Vec<String>, Error> {
    let (base, pattern) = split_wildcards(source);
    let Some(pattern) = pattern else {
        return Ok(vec![base]);
    };
    let Some(base_pos) = index.position(&base) else {
        return Ok(Vec::new());
    };
    let bad = |_| Error::BadPattern {
        pattern: source.to_string(),
        reason: "syntax error in pattern",
    };
    // Fail on a malformed pattern even when there is nothing to match against.
    go_match(&pattern, "").map_err(bad)?;
    let entries = index.entries();
    let range = index.subtree_range(base_pos);
    let prefix_len = if base.is_empty() { 0 } else { base.len() + 1 };
    let mut out = Vec::new();
    let mut i = range.start + 1;
    while i < range.end {
        let rel = &entries[i].path[prefix_len..];
        if go_match(&pattern, rel).map_err(bad)? {
            out.push(entries[i].path.clone());
            // A matching directory is taken whole.
            i = index.subtree_range(i).end;
            continue;
        }
        i += 1;
    }
    Ok(out)
}

/// The paths of `index` that a `COPY --parents` source with `**` names: every path the
/// pattern matches itself (`.dockerignore` matching, without the parent rule), a matching
/// directory taken whole.
pub fn expand_double_star(index: &ContextIndex, source: &str) -> Result<Vec<String>, Error> {
    let cleaned = clean(source.trim_start_matches('/'));
    let matcher = PatternMatcher::new(&[cleaned.as_str()])?;
    let Some(pattern) = matcher.patterns().first() else {
        return Ok(Vec::new());
    };
    let entries = index.entries();
    let mut out = Vec::new();
    let mut i = 1;
    while i < entries.len() {
        if pattern.matches(&entries[i].path)? {
            out.push(entries[i].path.clone());
            i = index.subtree_range(i).end;
            continue;
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::walk::tests::make_tree;

    fn tree() -> (tempfile::TempDir, ContextIndex) {
        let dir = make_tree(&[
            "a.txt",
            "b.txt",
            "c.md",
            "docs/x.txt",
            "docs/sub/y.txt",
            "src/app/main.go",
            "src/lib/util.go",
            "src/lib/util_test.go",
            "te[st]/f",
            "star*/f",
        ]);
        let index = ContextIndex::walk(dir.path(), None).unwrap();
        (dir, index)
    }

    #[test]
    fn split_at_the_first_wildcard_component() {
        assert_eq!(split_wildcards("/a/b/c"), ("a/b/c".into(), None));
        assert_eq!(split_wildcards("a/b*/c"), ("a".into(), Some("b*/c".into())));
        assert_eq!(split_wildcards("*.txt"), ("".into(), Some("*.txt".into())));
        assert_eq!(
            split_wildcards("./x/../y/[ab]"),
            ("y".into(), Some("[ab]".into()))
        );
        assert_eq!(split_wildcards("te\\[st]/f"), ("te\\[st]/f".into(), None));
        assert_eq!(split_wildcards("."), ("".into(), None));
    }

    #[test]
    fn star_stays_within_a_component() {
        let (_d, index) = tree();
        let e = |p: &str| expand_wildcards(&index, p).unwrap();
        assert_eq!(e("*.txt"), ["a.txt", "b.txt"]);
        assert_eq!(e("?.md"), ["c.md"]);
        assert_eq!(e("docs/*.txt"), ["docs/x.txt"]);
        assert_eq!(
            e("src/*/*.go"),
            ["src/app/main.go", "src/lib/util.go", "src/lib/util_test.go"]
        );
        assert_eq!(e("src/*/*_test.go"), ["src/lib/util_test.go"]);
        assert_eq!(e("[ab].txt"), ["a.txt", "b.txt"]);
        assert_eq!(e("[^a].txt"), ["b.txt"]);
    }

    #[test]
    fn matching_directories_are_taken_whole() {
        let (_d, index) = tree();
        assert_eq!(expand_wildcards(&index, "s*").unwrap(), ["src", "star*"]);
        assert_eq!(expand_wildcards(&index, "doc?").unwrap(), ["docs"]);
    }

    #[test]
    fn escapes_and_misses() {
        let (_d, index) = tree();
        assert_eq!(
            expand_wildcards(&index, "star\\*/f").unwrap(),
            ["star\\*/f"]
        );
        assert_eq!(
            expand_wildcards(&index, "te[[]st]/f").unwrap(),
            ["te[st]/f"]
        );
        assert!(expand_wildcards(&index, "*.none").unwrap().is_empty());
        assert!(expand_wildcards(&index, "nodir/*.txt").unwrap().is_empty());
        assert_eq!(
            expand_wildcards(&index, "plain/missing").unwrap(),
            ["plain/missing"]
        );
        assert!(matches!(
            expand_wildcards(&index, "a[").unwrap_err(),
            Error::BadPattern { .. }
        ));
    }

    #[test]
    fn double_star_crosses_directories() {
        let (_d, index) = tree();
        let e = |p: &str| expand_double_star(&index, p).unwrap();
        assert_eq!(
            e("**/*.txt"),
            ["a.txt", "b.txt", "docs/sub/y.txt", "docs/x.txt"]
        );
        assert_eq!(e("src/**/*_test.go"), ["src/lib/util_test.go"]);
        assert_eq!(e("docs/**"), ["docs/sub", "docs/x.txt"]);
    }
}
