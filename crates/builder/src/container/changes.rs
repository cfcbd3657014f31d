//! `docker diff`'s view of a container's changes: every changed path plus the directories
//! above it (a directory whose children changed shows as `C`), in the order Go's
//! `filepath.Walk` visits them (each directory before its entries, entries by name).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use strata_overlay::{Change, ChangeKind};

/// The lines `docker diff` prints for `changes` (a snapshot's changes, relative paths):
/// the changes plus their parent directories as modified, sorted in walk order.
pub fn docker_changes(changes: &[Change]) -> Vec<Change> {
    let mut all: BTreeMap<Vec<Vec<u8>>, ChangeKind> = BTreeMap::new();
    for c in changes {
        let parts: Vec<Vec<u8>> = c
            .path
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .filter(|p| !p.is_empty() && p != b"/" && p != b".")
            .collect();
        if parts.is_empty() {
            continue;
        }
        for depth in 1..parts.len() {
            all.entry(parts[..depth].to_vec())
                .or_insert(ChangeKind::Modify);
        }
        all.insert(parts, c.kind);
    }
    all.into_iter()
        .map(|(parts, kind)| Change {
            kind,
            path: parts
                .iter()
                .map(|p| std::ffi::OsStr::from_bytes(p))
                .collect::<PathBuf>(),
        })
        .collect()
}

/// One `docker diff` line: `A /path`.
pub fn line(change: &Change) -> String {
    format!("{} /{}", change.kind.letter(), change.path.display())
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

    fn lines(changes: &[Change]) -> Vec<String> {
        docker_changes(changes).iter().map(line).collect()
    }

    #[test]
    fn parents_show_as_changed_and_the_order_is_the_walk_order() {
        use ChangeKind::*;
        // What the snapshotter reports after `mkdir /opt/new; echo > /opt/x; rm /opt/env`
        // (deletions first within a folder), and deeper changes whose parents kept their
        // metadata.
        let snapshot = [
            c(Modify, "opt"),
            c(Delete, "opt/env"),
            c(Add, "opt/new"),
            c(Add, "opt/x"),
            c(Delete, "usr/lib/z"),
            c(Modify, "usr/lib/a.so"),
            c(Add, "etc.d"),
            c(Add, "etc/conf"),
        ];
        assert_eq!(
            lines(&snapshot),
            [
                "C /etc",
                "A /etc/conf",
                "A /etc.d",
                "C /opt",
                "D /opt/env",
                "A /opt/new",
                "A /opt/x",
                "C /usr",
                "C /usr/lib",
                "C /usr/lib/a.so",
                "D /usr/lib/z",
            ]
        );
    }

    #[test]
    fn an_own_change_wins_over_the_implied_parent_and_nothing_is_repeated() {
        use ChangeKind::*;
        let snapshot = [c(Add, "a/b/c"), c(Add, "a/b"), c(Add, "a/b/c"), c(Add, "a")];
        assert_eq!(lines(&snapshot), ["A /a", "A /a/b", "A /a/b/c"]);
        assert!(lines(&[]).is_empty());
    }
}
