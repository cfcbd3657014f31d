//! Computing changesets: from an overlay upper dir (cost proportional to what changed), and the
//! generic double walk of two trees (the vfs driver, `strata diff`, and overlay's fallback).

use std::path::{Path, PathBuf};

use crate::changes::{Change, ChangeKind, Changeset};
use crate::error::Result;
use crate::meta::{has_redirect_or_metacopy, is_opaque, same_entry};
use crate::tree::{read_dir_sorted, LayerStack, Node, PlainDir, View};

/// Why the upper dir cannot be read as a plain diff.
#[derive(Debug)]
pub(crate) enum UpperDiff {
    /// The changes.
    Done(Vec<Change>),
    /// A redirected directory or a metadata-only copy-up was found: the caller must fall back
    /// to comparing mounted views.
    NeedsNaive,
}

/// The generic diff of two folders (`old` below, `new` on top).
pub fn diff_dirs(old: &Path, new: &Path) -> Result<Changeset> {
    let old_view = PlainDir {
        root: old.to_path_buf(),
        hide_whiteouts: false,
    };
    let new_view = PlainDir {
        root: new.to_path_buf(),
        hide_whiteouts: false,
    };
    let mut out = Vec::new();
    walk_pair(
        &old_view,
        &old_view.root()?,
        &new_view,
        &new_view.root()?,
        Path::new(""),
        &mut out,
    )?;
    Ok(Changeset::new(new.to_path_buf(), out))
}

/// Double walk of two views below `rel`.
pub(crate) fn walk_pair(
    old: &dyn View,
    old_dir: &Node,
    new: &dyn View,
    new_dir: &Node,
    rel: &Path,
    out: &mut Vec<Change>,
) -> Result<()> {
    let mut olds = old.children(old_dir)?;
    for (name, n) in new.children(new_dir)? {
        let p = rel.join(&name);
        match olds.remove(&name) {
            None => {
                out.push(Change {
                    kind: ChangeKind::Add,
                    path: p.clone(),
                });
                if n.meta.is_dir() {
                    add_all(new, &n, &p, out)?;
                }
            }
            Some(o) => {
                if o.meta.kind != n.meta.kind {
                    out.push(Change {
                        kind: ChangeKind::Modify,
                        path: p.clone(),
                    });
                    if n.meta.is_dir() {
                        add_all(new, &n, &p, out)?;
                    }
                } else {
                    if !same_entry(&o.host, &o.meta, &n.host, &n.meta)? {
                        out.push(Change {
                            kind: ChangeKind::Modify,
                            path: p.clone(),
                        });
                    }
                    if n.meta.is_dir() {
                        walk_pair(old, &o, new, &n, &p, out)?;
                    }
                }
            }
        }
    }
    for name in olds.into_keys() {
        out.push(Change {
            kind: ChangeKind::Delete,
            path: rel.join(name),
        });
    }
    Ok(())
}

fn add_all(view: &dyn View, dir: &Node, rel: &Path, out: &mut Vec<Change>) -> Result<()> {
    for (name, n) in view.children(dir)? {
        let p = rel.join(&name);
        out.push(Change {
            kind: ChangeKind::Add,
            path: p.clone(),
        });
        if n.meta.is_dir() {
            add_all(view, &n, &p, out)?;
        }
    }
    Ok(())
}

/// Read the changes of an overlay upper dir against the stack of its lower layers, looking at
/// nothing but the upper dir and, for each upper entry, the same path in the lowers.
pub(crate) fn diff_upper(upper: &Path, lowers: &LayerStack) -> Result<UpperDiff> {
    let mut out = Vec::new();
    let lower_root = if lowers.layers.is_empty() {
        None
    } else {
        Some(lowers.root()?)
    };
    if walk_upper(upper, Path::new(""), lowers, lower_root.as_ref(), &mut out)?.is_some() {
        return Ok(UpperDiff::NeedsNaive);
    }
    Ok(UpperDiff::Done(out))
}

fn walk_upper(
    upper: &Path,
    rel: &Path,
    lowers: &LayerStack,
    lower_dir: Option<&Node>,
    out: &mut Vec<Change>,
) -> Result<Option<PathBuf>> {
    let plain = PlainDir {
        root: upper.to_path_buf(),
        hide_whiteouts: true,
    };
    for name in read_dir_sorted(&upper.join(rel))? {
        let p = rel.join(&name);
        let host = upper.join(&p);
        let meta = crate::meta::Meta::lstat(&host)?;
        if (meta.is_dir() || meta.kind == crate::meta::Kind::File)
            && has_redirect_or_metacopy(&host)?
        {
            return Ok(Some(p));
        }
        let low = match lower_dir {
            Some(d) => lowers.lookup_child(d, rel, &name)?,
            None => None,
        };
        if meta.is_whiteout() {
            if low.is_some() {
                out.push(Change {
                    kind: ChangeKind::Delete,
                    path: p,
                });
            }
            continue;
        }
        let node = Node {
            meta,
            host: host.clone(),
            layers: Vec::new(),
        };
        match low {
            None => {
                out.push(Change {
                    kind: ChangeKind::Add,
                    path: p.clone(),
                });
                if node.meta.is_dir() {
                    add_all(&plain, &node, &p, out)?;
                }
            }
            Some(l) if l.meta.kind != node.meta.kind => {
                out.push(Change {
                    kind: ChangeKind::Modify,
                    path: p.clone(),
                });
                if node.meta.is_dir() {
                    add_all(&plain, &node, &p, out)?;
                }
            }
            Some(l) => {
                if !same_entry(&l.host, &l.meta, &node.host, &node.meta)? {
                    out.push(Change {
                        kind: ChangeKind::Modify,
                        path: p.clone(),
                    });
                }
                if node.meta.is_dir() {
                    if is_opaque(&host)? {
                        // The directory was deleted and recreated: compare it whole against
                        // what the lowers had, as BuildKit does, so deletions are explicit.
                        walk_pair(lowers, &l, &plain, &node, &p, out)?;
                    } else if let Some(n) = walk_upper(upper, &p, lowers, Some(&l), out)? {
                        return Ok(Some(n));
                    }
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn letters(set: &Changeset) -> Vec<String> {
        set.changes
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect()
    }

    #[test]
    fn generic_diff_finds_adds_changes_and_deletions() {
        let t = tempfile::tempdir().unwrap();
        let (old, new) = (t.path().join("old"), t.path().join("new"));
        for d in [&old, &new] {
            fs::create_dir_all(d.join("etc/sub")).unwrap();
            fs::write(d.join("etc/keep"), "same").unwrap();
        }
        fs::write(old.join("etc/gone"), "x").unwrap();
        fs::create_dir_all(old.join("olddir/deep")).unwrap();
        fs::write(new.join("etc/new"), "n").unwrap();
        fs::write(old.join("etc/changed"), "1").unwrap();
        fs::write(new.join("etc/changed"), "22").unwrap();
        fs::write(old.join("swap"), "file").unwrap();
        fs::create_dir_all(new.join("swap/inner")).unwrap();
        // Make the unchanged file's times equal so only content decides.
        let src = fs::metadata(old.join("etc/keep"))
            .unwrap()
            .modified()
            .unwrap();
        fs::File::options()
            .write(true)
            .open(new.join("etc/keep"))
            .unwrap()
            .set_modified(src)
            .unwrap();
        let set = diff_dirs(&old, &new).unwrap();
        assert_eq!(
            letters(&set),
            [
                "D olddir",
                "D etc/gone",
                "C etc/changed",
                "A etc/new",
                "C swap",
                "A swap/inner"
            ]
        );
    }
}
