//! Changesets: what a layer changed, in the one canonical order every driver produces.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// New in this layer.
    Add,
    /// Existed below and differs now (content, metadata or type).
    Modify,
    /// Existed below and is gone (written as a `.wh.` whiteout).
    Delete,
}

impl ChangeKind {
    /// The letter `docker diff` prints: `A`, `C` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Add => 'A',
            ChangeKind::Modify => 'C',
            ChangeKind::Delete => 'D',
        }
    }
}

/// One changed path, relative to the layer root (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// Where.
    pub path: PathBuf,
}

/// The changes of one layer, plus the folder their contents are read from when the layer is
/// written as a tar (the upper dir for overlay, the layer's full tree for vfs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changeset {
    /// Folder holding the added and modified entries (and their parent directories).
    pub source: PathBuf,
    /// The changes, in canonical order (see [`canonical_order`]).
    pub changes: Vec<Change>,
}

impl Changeset {
    /// Build a changeset, putting `changes` in canonical order and dropping duplicates.
    pub fn new(source: PathBuf, mut changes: Vec<Change>) -> Changeset {
        changes.sort_by(canonical_order);
        changes.dedup_by(|a, b| a.path == b.path);
        Changeset { source, changes }
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The canonical order of changes: depth first, a directory before its contents, and inside
/// each directory the deletions first (the spec asks for whiteouts before their siblings), then
/// the other entries, each group sorted by the bytes of the name.
pub fn canonical_order(a: &Change, b: &Change) -> Ordering {
    fn key(c: &Change) -> impl Iterator<Item = (bool, &[u8])> {
        let n = c.path.iter().count();
        let del = c.kind == ChangeKind::Delete;
        // `false` sorts first: a deletion at its own level precedes its siblings.
        c.path
            .iter()
            .enumerate()
            .map(move |(i, comp)| (!(del && i + 1 == n), comp.as_bytes()))
    }
    key(a).cmp(key(b)).then(a.kind.cmp(&b.kind))
}

/// The name of the whiteout that deletes `path` (`dir/.wh.name`).
pub fn whiteout_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or(OsStr::new(""));
    let mut w = b".wh.".to_vec();
    w.extend_from_slice(name.as_bytes());
    path.parent()
        .unwrap_or(Path::new(""))
        .join(OsStr::from_bytes(&w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(kind: ChangeKind, p: &str) -> Change {
        Change {
            kind,
            path: PathBuf::from(p),
        }
    }

    #[test]
    fn order_is_depth_first_with_deletions_first() {
        use ChangeKind::*;
        let set = Changeset::new(
            PathBuf::from("/src"),
            vec![
                c(Add, "b/z"),
                c(Modify, "a"),
                c(Delete, "c"),
                c(Add, "a-b"),
                c(Add, "a/x"),
                c(Delete, "a/w"),
                c(Modify, "b"),
                c(Delete, "b/a"),
                c(Add, "!bang"),
                c(Add, "a/x"),
            ],
        );
        let got: Vec<String> = set
            .changes
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect();
        assert_eq!(
            got,
            ["D c", "A !bang", "C a", "D a/w", "A a/x", "A a-b", "C b", "D b/a", "A b/z"]
        );
    }

    #[test]
    fn order_is_a_total_order_on_random_sets() {
        use proptest::prelude::*;
        let names = prop::sample::select(vec!["a", "b", ".x", "a-b", "é"]);
        let path = prop::collection::vec(names, 1..4).prop_map(|v| v.join("/"));
        let kind = prop::sample::select(vec![
            ChangeKind::Add,
            ChangeKind::Modify,
            ChangeKind::Delete,
        ]);
        let change = (kind, path).prop_map(|(k, p)| c(k, &p));
        proptest!(|(mut v in prop::collection::vec(change, 0..30))| {
            v.sort_by(canonical_order);
            for w in v.windows(2) {
                prop_assert_ne!(canonical_order(&w[0], &w[1]), Ordering::Greater);
            }
            // Parents come before children.
            for (i, x) in v.iter().enumerate() {
                for y in &v[..i] {
                    prop_assert!(!y.path.starts_with(&x.path) || y.path == x.path);
                }
            }
        });
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout_path(Path::new("a/b")), Path::new("a/.wh.b"));
        assert_eq!(whiteout_path(Path::new("top")), Path::new(".wh.top"));
    }
}
