//! The layered path map: an image's merged filesystem as its layers are applied one by one,
//! with the bookkeeping the analysis needs.
//!
//! It follows the OCI layer rules (reference notes §3.2-3.4), without touching a disk:
//! - an entry adds a path, or replaces what lower layers had there (a directory over a
//!   directory merges; anything else replaces, and a non-directory over a directory removes
//!   the directory's whole subtree);
//! - `.wh.<name>` removes `<name>` and everything below it, `.wh..wh..opq` removes every
//!   child of its directory, and both only ever hide entries of *lower* layers (never the
//!   layer's own, wherever they sit in the stream);
//! - an entry below a path that lower layers hold as a non-directory replaces that path.
//!
//! Every regular file entry becomes an [`Object`]: the bytes one layer stores. Hard links are
//! more names for the object their target names, so an object dies only when its last name is
//! hidden; its [`Fate`] says which layer hid it and how. Memory is proportional to the number
//! of paths, never to file sizes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use strata_store::Digest;

/// A normalised path inside the image, relative to `/`, as raw bytes (`usr/bin/gcc`).
pub(crate) type PathBytes = Box<[u8]>;

/// One entry of a layer, after the tar header was read and its name normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The path (for whiteouts: the path removed; for opaque markers: the directory).
    pub path: PathBytes,
    /// What the entry is.
    pub item: Item,
}

/// What a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// A regular file with its data's size and sha256.
    File { size: u64, digest: Digest },
    /// A hard link to an earlier entry of the same layer.
    HardLink { target: PathBytes },
    /// A symbolic link.
    Symlink,
    /// A directory.
    Dir,
    /// A device or FIFO.
    Other,
    /// `.wh.<name>`: `path` is removed from the lower layers.
    Whiteout,
    /// `.wh..wh..opq`: every lower child of the directory `path` is removed.
    Opaque,
}

/// How a file's bytes stopped being visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// A later layer deleted it (a whiteout, or an opaque directory).
    Deleted,
    /// A later layer put something else at its path (or turned a parent into a file).
    Overwritten,
    /// A later layer wrote the same bytes at the same path again (chmod, chown, touch).
    Rewritten,
}

/// Which layer hid an object's last name, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fate {
    /// The layer (0-based) that hid it.
    pub by: usize,
    /// How.
    pub how: How,
}

/// The bytes one regular-file entry stored in one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Object {
    /// The layer (0-based) that stored it.
    pub layer: usize,
    /// The path it was stored under.
    pub path: PathBytes,
    /// Its size.
    pub size: u64,
    /// The sha256 of its contents.
    pub digest: Digest,
    /// Visible names (the path and hard links to it).
    names: u32,
    /// `None` while some name of it is visible.
    pub fate: Option<Fate>,
}

/// What a changed path is in the layer that changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A hard link (stores no bytes of its own).
    HardLink,
    /// A symbolic link.
    Symlink,
    /// A device or FIFO.
    Other,
}

/// Whether a layer added, modified or removed a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChangeKind {
    /// The path did not exist below this layer (`A`).
    #[serde(rename = "A")]
    Added,
    /// The path existed below and this layer replaced it or (directories) its metadata (`M`).
    #[serde(rename = "M")]
    Modified,
    /// This layer removed the path (and whatever was below it) (`D`).
    #[serde(rename = "D")]
    Deleted,
}

impl ChangeKind {
    /// `A`, `M` or `D`, as dive and `docker diff` mark changes.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'M',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One path a layer changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The absolute path (`/usr/bin/gcc`; non-UTF-8 bytes shown lossily).
    pub path: String,
    /// Added, modified or deleted.
    pub change: ChangeKind,
    /// What the path is (for a deletion: what it was).
    pub kind: NodeKind,
    /// Added or modified files: the bytes the layer stores for it; deletions: the bytes
    /// that stopped being visible (files whose last name this removed).
    pub size: u64,
    /// Deletions: how many non-directory paths were removed (the path and those below it).
    /// Otherwise 1 for a non-directory, 0 for a directory.
    pub files: u64,
}

/// The changes of one layer, in stream order, and their counts (non-directories only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayerChanges {
    /// Every changed path.
    pub changes: Vec<Change>,
    /// Non-directory paths added.
    pub added: u64,
    /// Non-directory paths modified.
    pub modified: u64,
    /// Non-directory paths removed (whiteouts, opaque directories, directories replaced by
    /// files), counted one by one below a removed directory.
    pub removed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u32),
    Symlink,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    layer: usize,
    node: Node,
}

/// The merged view and everything the layers stored.
#[derive(Debug, Default)]
pub(crate) struct PathMap {
    live: BTreeMap<PathBytes, Slot>,
    /// Every regular-file entry of every layer, in order.
    pub objects: Vec<Object>,
    /// Per layer, what it changed.
    pub layers: Vec<LayerChanges>,
}

/// The absolute, printable form of a path.
pub(crate) fn shown(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// Bounds of the keys strictly below `dir` (`dir/` up to `dir0`, `0` being the byte after
/// `/`); the whole map for the root.
fn below(dir: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if dir.is_empty() {
        return (Vec::new(), None);
    }
    // Keys of the subtree start with `dir/`; `/` + 1 is `0`, so `dir0` bounds them and
    // `dir-x` (`-` sorts before `/`) falls outside.
    let mut lo = dir.to_vec();
    lo.push(b'/');
    let mut hi = dir.to_vec();
    hi.push(b'/' + 1);
    (lo, Some(hi))
}

/// Every proper ancestor of `path` (`a`, `a/b` for `a/b/c`).
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &path[..i])
}

impl PathMap {
    /// An empty filesystem.
    pub fn new() -> PathMap {
        PathMap::default()
    }

    /// The live keys strictly below `dir`, optionally only those lower layers wrote.
    fn keys_below(&self, dir: &[u8], not_of: Option<usize>) -> Vec<PathBytes> {
        let keep = |(k, s): (&PathBytes, &Slot)| (Some(s.layer) != not_of).then(|| k.clone());
        match below(dir) {
            (lo, Some(hi)) => {
                use std::ops::Bound::{Excluded, Included};
                self.live
                    .range::<[u8], _>((Included(lo.as_slice()), Excluded(hi.as_slice())))
                    .filter_map(keep)
                    .collect()
            }
            (_, None) => self.live.iter().filter_map(keep).collect(),
        }
    }

    /// Remove a live path; returns (bytes that stopped being visible, non-directories removed).
    fn drop_path(&mut self, key: &[u8], by: usize, how: How) -> (u64, u64) {
        let Some(slot) = self.live.remove(key) else {
            return (0, 0);
        };
        match slot.node {
            Node::Dir => (0, 0),
            Node::Symlink | Node::Other => (0, 1),
            Node::File(id) => {
                let obj = &mut self.objects[id as usize];
                obj.names = obj.names.saturating_sub(1);
                if obj.names == 0 && obj.fate.is_none() {
                    obj.fate = Some(Fate { by, how });
                    (obj.size, 1)
                } else {
                    (0, 1)
                }
            }
        }
    }

    fn kind_of(node: Node, hard: bool) -> NodeKind {
        match node {
            Node::Dir => NodeKind::Dir,
            Node::File(_) if hard => NodeKind::HardLink,
            Node::File(_) => NodeKind::File,
            Node::Symlink => NodeKind::Symlink,
            Node::Other => NodeKind::Other,
        }
    }

    /// Apply the next layer's entries, in stream order.
    pub fn apply(&mut self, entries: impl IntoIterator<Item = Entry>) {
        let layer = self.layers.len();
        self.layers.push(LayerChanges::default());
        // Path -> index of its change in this layer, so a path written twice is one change.
        let mut seen: HashMap<PathBytes, usize> = HashMap::new();
        for e in entries {
            match e.item {
                Item::Whiteout => self.whiteout(layer, &e.path),
                Item::Opaque => self.opaque(layer, &e.path),
                item => self.put(layer, e.path, item, &mut seen),
            }
        }
    }

    fn push_change(&mut self, layer: usize, change: Change) {
        self.layers[layer].changes.push(change);
    }

    fn whiteout(&mut self, layer: usize, path: &[u8]) {
        let victim = self
            .live
            .get(path)
            .filter(|s| s.layer != layer)
            .map(|s| s.node);
        let below = self.keys_below(path, Some(layer));
        if victim.is_none() && below.is_empty() {
            return; // nothing of lower layers there: a no-op
        }
        let (mut bytes, mut files) = (0, 0);
        if victim.is_some() {
            let (b, f) = self.drop_path(path, layer, How::Deleted);
            bytes += b;
            files += f;
        }
        for key in &below {
            let (b, f) = self.drop_path(key, layer, How::Deleted);
            bytes += b;
            files += f;
        }
        let kind = match victim {
            Some(node) => Self::kind_of(node, false),
            None => NodeKind::Dir, // only children were there: an implied directory
        };
        self.layers[layer].removed += files;
        self.push_change(
            layer,
            Change {
                path: shown(path),
                change: ChangeKind::Deleted,
                kind,
                size: bytes,
                files,
            },
        );
    }

    fn opaque(&mut self, layer: usize, dir: &[u8]) {
        let keys = self.keys_below(dir, Some(layer));
        if keys.is_empty() {
            return;
        }
        let hidden: BTreeSet<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        // Report each removal at its top-most removed ancestor below `dir`.
        let mut groups: BTreeMap<PathBytes, (NodeKind, u64, u64)> = BTreeMap::new();
        let mut tops: Vec<(PathBytes, PathBytes)> = Vec::with_capacity(keys.len());
        for key in &keys {
            let top = ancestors(key)
                .filter(|a| a.len() > dir.len())
                .find(|a| hidden.contains(a))
                .unwrap_or(key);
            tops.push((key.clone(), top.into()));
        }
        for (key, top) in tops {
            let node = self.live.get(&key).map(|s| s.node).unwrap_or(Node::Dir);
            let (b, f) = self.drop_path(&key, layer, How::Deleted);
            let g = groups.entry(top.clone()).or_insert((NodeKind::Dir, 0, 0));
            if key == top {
                g.0 = Self::kind_of(node, false);
            }
            g.1 += b;
            g.2 += f;
        }
        for (path, (kind, size, files)) in groups {
            self.layers[layer].removed += files;
            self.push_change(
                layer,
                Change {
                    path: shown(&path),
                    change: ChangeKind::Deleted,
                    kind,
                    size,
                    files,
                },
            );
        }
    }

    fn put(
        &mut self,
        layer: usize,
        path: PathBytes,
        item: Item,
        seen: &mut HashMap<PathBytes, usize>,
    ) {
        // A lower non-directory where this entry needs a parent directory is replaced.
        let blocked: Vec<PathBytes> = ancestors(&path)
            .filter(|a| self.live.get(*a).is_some_and(|s| s.node != Node::Dir))
            .map(Into::into)
            .collect();
        for a in blocked {
            let (_, f) = self.drop_path(&a, layer, How::Overwritten);
            self.layers[layer].removed += f;
        }
        let (node, hard, size) = match item {
            Item::File { size, digest } => {
                let id = self.objects.len() as u32;
                self.objects.push(Object {
                    layer,
                    path: path.clone(),
                    size,
                    digest,
                    names: 1,
                    fate: None,
                });
                (Node::File(id), false, size)
            }
            Item::HardLink { target } => match self.live.get(&target).map(|s| s.node) {
                Some(Node::File(id)) => {
                    self.objects[id as usize].names += 1;
                    (Node::File(id), true, 0)
                }
                // A link to something that is not a file we know: it stores nothing.
                Some(other) => (other, true, 0),
                None => (Node::Other, true, 0),
            },
            Item::Symlink => (Node::Symlink, false, 0),
            Item::Dir => (Node::Dir, false, 0),
            Item::Other | Item::Whiteout | Item::Opaque => (Node::Other, false, 0),
        };
        let old = self.live.get(&path).copied();
        let mut change = match old {
            Some(_) => ChangeKind::Modified,
            None => ChangeKind::Added,
        };
        if node != Node::Dir {
            // A non-directory where a directory was (explicit, or implied by its children):
            // the whole subtree goes.
            let below = self.keys_below(&path, None);
            if !below.is_empty() {
                change = ChangeKind::Modified;
            }
            for key in below {
                let (_, f) = self.drop_path(&key, layer, How::Overwritten);
                self.layers[layer].removed += f;
            }
        }
        if let Some(old) = old {
            if !(old.node == Node::Dir && node == Node::Dir) {
                let how = match (old.node, node) {
                    (Node::File(a), Node::File(b))
                        if self.objects[a as usize].digest == self.objects[b as usize].digest
                            && self.objects[a as usize].size == self.objects[b as usize].size =>
                    {
                        How::Rewritten
                    }
                    _ => How::Overwritten,
                };
                // The new name was counted first, so a link over its own target keeps it.
                self.drop_path(&path, layer, how);
            }
        }
        self.live.insert(path.clone(), Slot { layer, node });
        let kind = Self::kind_of(node, hard);
        let files = u64::from(node != Node::Dir);
        let record = Change {
            path: shown(&path),
            change,
            kind,
            size,
            files,
        };
        let changes = &mut self.layers[layer];
        match seen.get(&path) {
            Some(&i) => {
                // Written twice in one layer: one change, the first classification.
                let first = changes.changes[i].change;
                let was_file = changes.changes[i].files;
                changes.changes[i] = Change {
                    change: first,
                    ..record
                };
                if was_file == 0 && files == 1 {
                    match first {
                        ChangeKind::Added => changes.added += 1,
                        _ => changes.modified += 1,
                    }
                }
            }
            None => {
                if files == 1 {
                    match change {
                        ChangeKind::Added => changes.added += 1,
                        _ => changes.modified += 1,
                    }
                }
                seen.insert(path, changes.changes.len());
                changes.changes.push(record);
            }
        }
    }

    /// Whether `path` (relative, `a/b`) is visible in the merged view.
    #[cfg(test)]
    pub fn is_live(&self, path: &str) -> bool {
        self.live.contains_key(path.as_bytes())
    }

    /// The merged view: each visible path with its file's digest (`None` for the rest).
    #[cfg(test)]
    pub fn view(&self) -> BTreeMap<String, Option<Digest>> {
        self.live
            .iter()
            .map(|(k, s)| {
                let digest = match s.node {
                    Node::File(id) => Some(self.objects[id as usize].digest),
                    _ => None,
                };
                (String::from_utf8_lossy(k).into_owned(), digest)
            })
            .collect()
    }

    /// The objects still visible under some name, each once.
    pub fn live_objects(&self) -> impl Iterator<Item = (usize, &Object)> {
        self.objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.fate.is_none())
    }

    /// Live objects whose exact bytes a live object of an *earlier* layer already holds:
    /// `(duplicate, original)` object indexes. The original is the copy in the lowest layer;
    /// copies within that same layer are not counted (a layer may hold two equal files).
    /// Empty files are never duplicates.
    pub fn duplicates(&self) -> Vec<(usize, usize)> {
        let mut by_digest: HashMap<(Digest, u64), Vec<usize>> = HashMap::new();
        for (id, o) in self.live_objects() {
            if o.size > 0 {
                by_digest.entry((o.digest, o.size)).or_default().push(id);
            }
        }
        let mut out = Vec::new();
        for ids in by_digest.values() {
            if ids.len() < 2 {
                continue;
            }
            // Objects are numbered in layer order, so the first is the lowest.
            let original = ids[0];
            let base = self.objects[original].layer;
            for &id in &ids[1..] {
                if self.objects[id].layer != base {
                    out.push((id, original));
                }
            }
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.as_bytes().into(),
            item: Item::File {
                size: data.len() as u64,
                digest: Digest::of(data),
            },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.as_bytes().into(),
            item: Item::Dir,
        }
    }

    fn of(path: &str, item: Item) -> Entry {
        Entry {
            path: path.as_bytes().into(),
            item,
        }
    }

    fn changes(m: &PathMap, layer: usize) -> Vec<String> {
        m.layers[layer]
            .changes
            .iter()
            .map(|c| format!("{} {} {} {}", c.change.letter(), c.path, c.size, c.files))
            .collect()
    }

    fn fates(m: &PathMap) -> Vec<String> {
        m.objects
            .iter()
            .map(|o| {
                let p = shown(&o.path);
                match o.fate {
                    None => format!("{p}@{} live", o.layer),
                    Some(f) => format!("{p}@{} {:?} by {}", o.layer, f.how, f.by),
                }
            })
            .collect()
    }

    #[test]
    fn added_then_modified_then_deleted() {
        let mut m = PathMap::new();
        m.apply([dir("etc"), file("etc/a", b"one"), file("etc/b", b"bb")]);
        m.apply([dir("etc"), file("etc/a", b"two!")]);
        m.apply([of("etc/b", Item::Whiteout)]);
        assert_eq!(
            changes(&m, 0),
            ["A /etc 0 0", "A /etc/a 3 1", "A /etc/b 2 1"]
        );
        assert_eq!(changes(&m, 1), ["M /etc 0 0", "M /etc/a 4 1"]);
        assert_eq!(changes(&m, 2), ["D /etc/b 2 1"]);
        assert_eq!(
            (m.layers[0].added, m.layers[1].modified, m.layers[2].removed),
            (2, 1, 1)
        );
        assert_eq!(
            fates(&m),
            [
                "/etc/a@0 Overwritten by 1",
                "/etc/b@0 Deleted by 2",
                "/etc/a@1 live"
            ]
        );
        assert!(m.is_live("etc/a") && !m.is_live("etc/b"));
    }

    #[test]
    fn whiteout_of_a_directory_removes_its_subtree_but_not_lookalike_siblings() {
        let mut m = PathMap::new();
        m.apply([
            dir("var/lib/apt/lists"),
            file("var/lib/apt/lists/x_Packages", &[1; 100]),
            file("var/lib/apt/lists/y_Packages", &[2; 50]),
            file("var/lib/apt/lists-keep", b"k"),
            file("var/lib/apt/lists0", b"z"),
        ]);
        m.apply([of("var/lib/apt/lists", Item::Whiteout)]);
        assert_eq!(changes(&m, 1), ["D /var/lib/apt/lists 150 2"]);
        assert!(m.is_live("var/lib/apt/lists-keep") && m.is_live("var/lib/apt/lists0"));
        assert!(!m.is_live("var/lib/apt/lists/x_Packages"));
        assert_eq!(m.layers[1].removed, 2);
    }

    #[test]
    fn whiteouts_never_hide_the_layers_own_entries_nor_nothing() {
        let mut m = PathMap::new();
        m.apply([file("a", b"1")]);
        // The same layer writes `b` and whites it out: the whiteout only looks below.
        m.apply([
            file("b", b"2"),
            of("b", Item::Whiteout),
            of("zz", Item::Whiteout),
        ]);
        assert!(m.is_live("a") && m.is_live("b"));
        assert_eq!(changes(&m, 1), ["A /b 1 1"]);
    }

    #[test]
    fn opaque_directories_hide_lower_children_wherever_the_marker_sits() {
        let mut m = PathMap::new();
        m.apply([
            dir("app"),
            file("app/old", &[0; 10]),
            dir("app/sub"),
            file("app/sub/f", &[0; 5]),
            file("app/sub/g", &[1; 7]),
            file("apple", b"x"),
        ]);
        // New content first, marker last: the layer's own `app/new` stays.
        m.apply([dir("app"), file("app/new", b"n"), of("app", Item::Opaque)]);
        assert!(m.is_live("app/new") && m.is_live("apple"));
        assert!(!m.is_live("app/old") && !m.is_live("app/sub") && !m.is_live("app/sub/f"));
        assert_eq!(
            changes(&m, 1),
            [
                "M /app 0 0",
                "A /app/new 1 1",
                "D /app/old 10 1",
                "D /app/sub 12 2"
            ]
        );
        assert_eq!(m.layers[1].removed, 3);
    }

    #[test]
    fn opaque_keeps_a_restated_subdirectory_but_hides_its_lower_files() {
        // Marker after the layer's own `d/s`: that one stays, its lower file goes.
        let mut m = PathMap::new();
        m.apply([dir("d"), dir("d/s"), file("d/s/f", b"ff")]);
        m.apply([dir("d"), dir("d/s"), of("d", Item::Opaque)]);
        assert!(m.is_live("d/s") && !m.is_live("d/s/f"));
        assert_eq!(changes(&m, 1), ["M /d 0 0", "M /d/s 0 0", "D /d/s/f 2 1"]);
        // Marker first: the lower `d/s` goes with its file and the layer's `d/s` is new.
        let mut m = PathMap::new();
        m.apply([dir("d"), dir("d/s"), file("d/s/f", b"ff")]);
        m.apply([of("d", Item::Opaque), dir("d"), dir("d/s")]);
        assert!(m.is_live("d/s") && !m.is_live("d/s/f"));
        assert_eq!(changes(&m, 1), ["D /d/s 2 1", "M /d 0 0", "A /d/s 0 0"]);
    }

    #[test]
    fn a_file_over_a_directory_removes_the_subtree_and_a_dir_under_a_file_replaces_it() {
        let mut m = PathMap::new();
        m.apply([
            dir("x"),
            file("x/1", b"1"),
            file("x/2", b"22"),
            file("y", b"yyy"),
        ]);
        m.apply([file("x", b"now a file"), dir("y"), file("y/in", b"i")]);
        assert!(m.is_live("x") && !m.is_live("x/1"));
        assert!(m.is_live("y/in"));
        assert_eq!(m.layers[1].removed, 2, "x/1 and x/2");
        assert_eq!(
            fates(&m),
            [
                "/x/1@0 Overwritten by 1",
                "/x/2@0 Overwritten by 1",
                "/y@0 Overwritten by 1",
                "/x@1 live",
                "/y/in@1 live"
            ]
        );
        // An entry below a lower file without a directory entry of its own also replaces it.
        let mut m = PathMap::new();
        m.apply([file("p", b"file")]);
        m.apply([file("p/q", b"q")]);
        assert_eq!(fates(&m), ["/p@0 Overwritten by 1", "/p/q@1 live"]);
    }

    #[test]
    fn same_bytes_at_the_same_path_is_a_rewrite() {
        let mut m = PathMap::new();
        m.apply([file("app/bin", &[7; 1000])]);
        m.apply([file("app/bin", &[7; 1000])]);
        assert_eq!(fates(&m), ["/app/bin@0 Rewritten by 1", "/app/bin@1 live"]);
        assert_eq!(changes(&m, 1), ["M /app/bin 1000 1"]);
    }

    #[test]
    fn hard_links_keep_their_bytes_alive_until_the_last_name_goes() {
        let mut m = PathMap::new();
        m.apply([
            file("bin/busybox", &[9; 500]),
            of(
                "bin/sh",
                Item::HardLink {
                    target: b"bin/busybox".as_slice().into(),
                },
            ),
        ]);
        m.apply([of("bin/busybox", Item::Whiteout)]);
        assert_eq!(
            fates(&m),
            ["/bin/busybox@0 live"],
            "still visible as /bin/sh"
        );
        assert_eq!(changes(&m, 1), ["D /bin/busybox 0 1"]);
        m.apply([of("bin/sh", Item::Whiteout)]);
        assert_eq!(fates(&m), ["/bin/busybox@0 Deleted by 2"]);
        assert_eq!(changes(&m, 2), ["D /bin/sh 500 1"]);
        assert_eq!(changes(&m, 0), ["A /bin/busybox 500 1", "A /bin/sh 0 1"]);
    }

    #[test]
    fn a_path_written_twice_in_one_layer_is_one_change_and_the_first_copy_is_waste() {
        let mut m = PathMap::new();
        m.apply([file("f", b"first"), file("f", b"second")]);
        assert_eq!(changes(&m, 0), ["A /f 6 1"]);
        assert_eq!(m.layers[0].added, 1);
        assert_eq!(fates(&m), ["/f@0 Overwritten by 0", "/f@0 live"]);
    }

    #[test]
    fn an_opaque_root_hides_everything_below() {
        let mut m = PathMap::new();
        m.apply([file("a", b"1"), dir("b"), file("b/c", b"22")]);
        m.apply([of("", Item::Opaque), file("n", b"n")]);
        assert!(m.is_live("n") && !m.is_live("a") && !m.is_live("b/c"));
        assert_eq!(changes(&m, 1), ["D /a 1 1", "D /b 2 1", "A /n 1 1"]);
    }

    #[test]
    fn a_file_over_an_implied_directory_removes_its_subtree() {
        let mut m = PathMap::new();
        // No entry for `a` itself: the directory is implied by its child.
        m.apply([file("a/b", b"bb"), file("a/c/d", b"d")]);
        m.apply([file("a", b"file")]);
        assert!(m.is_live("a") && !m.is_live("a/b") && !m.is_live("a/c/d"));
        assert_eq!(changes(&m, 1), ["M /a 4 1"]);
        assert_eq!(m.layers[1].removed, 2);
        // The same within one layer: the later entry wins.
        let mut m = PathMap::new();
        m.apply([file("x/y", b"y"), file("x", b"x")]);
        assert!(m.is_live("x") && !m.is_live("x/y"));
    }

    #[test]
    fn duplicates_are_live_copies_in_later_layers_only() {
        let mut m = PathMap::new();
        let big = [5u8; 300];
        m.apply([
            file("a/one", &big),
            file("a/two", &big),
            file("a/empty", b""),
        ]);
        m.apply([file("b/three", &big), file("b/empty", b"")]);
        m.apply([file("c/four", &big)]);
        // Within layer 0 the two copies are not counted; layers 1 and 2 copy layer 0's.
        let d: Vec<(String, String)> = m
            .duplicates()
            .into_iter()
            .map(|(d, o)| (shown(&m.objects[d].path), shown(&m.objects[o].path)))
            .collect();
        assert_eq!(
            d,
            [
                ("/b/three".to_string(), "/a/one".to_string()),
                ("/c/four".into(), "/a/one".into())
            ]
        );
        // A deleted original leaves the next copy as the original.
        let mut m = PathMap::new();
        m.apply([file("a", &big)]);
        m.apply([file("b", &big), of("a", Item::Whiteout)]);
        assert!(m.duplicates().is_empty());
    }

    /// A reference applier written differently: per layer, first every whiteout and opaque
    /// marker against the layers below, then the entries in order (what the OCI spec
    /// describes); the path map must end with the same visible files.
    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            File(String, u8),
            Dir(String),
            Gone(String),
            Opaque(String),
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
                .prop_map(|v| v.join("/"))
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (path(), 0u8..4).prop_map(|(p, c)| Op::File(p, c)),
                2 => path().prop_map(Op::Dir),
                1 => path().prop_map(Op::Gone),
                1 => prop_oneof![path(), Just(String::new())].prop_map(Op::Opaque),
            ]
        }

        fn content(c: u8) -> Vec<u8> {
            vec![c; usize::from(c) * 10 + 1]
        }

        /// path -> Some(content) for files, None for directories.
        type Fs = BTreeMap<String, Option<Vec<u8>>>;

        fn under(k: &str, dir: &str) -> bool {
            dir.is_empty() || k.starts_with(&format!("{dir}/"))
        }

        fn apply(fs: &mut Fs, layer: &[Op]) {
            for op in layer {
                match op {
                    Op::Gone(p) => fs.retain(|k, _| k != p && !under(k, p)),
                    Op::Opaque(d) => fs.retain(|k, _| !under(k, d) || k == d),
                    _ => {}
                }
            }
            for op in layer {
                let (p, value) = match op {
                    Op::File(p, c) => (p, Some(content(*c))),
                    Op::Dir(p) => (p, None),
                    _ => continue,
                };
                let parts: Vec<&str> = p.split('/').collect();
                for i in 1..parts.len() {
                    let a = parts[..i].join("/");
                    if matches!(fs.get(&a), Some(Some(_))) {
                        fs.remove(&a);
                    }
                }
                if value.is_some() {
                    fs.retain(|k, _| !under(k, p));
                }
                if value.is_none() && matches!(fs.get(p.as_str()), Some(None)) {
                    continue; // a directory over a directory merges
                }
                fs.insert(p.clone(), value);
            }
        }

        fn entries(layer: &[Op]) -> Vec<Entry> {
            layer
                .iter()
                .map(|op| match op {
                    Op::File(p, c) => file(p, &content(*c)),
                    Op::Dir(p) => dir(p),
                    Op::Gone(p) => of(p, Item::Whiteout),
                    Op::Opaque(p) => of(p, Item::Opaque),
                })
                .collect()
        }

        proptest! {
            #[test]
            fn the_path_map_agrees_with_the_two_phase_model(
                layers in prop::collection::vec(prop::collection::vec(op(), 0..8), 1..6)
            ) {
                let mut m = PathMap::new();
                let mut fs = Fs::new();
                for layer in &layers {
                    m.apply(entries(layer));
                    apply(&mut fs, layer);
                    let want: BTreeMap<String, Option<Digest>> = fs
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_ref().map(|c| Digest::of(c))))
                        .collect();
                    prop_assert_eq!(m.view(), want);
                }
                // Every stored byte is either visible or has a fate.
                let stored: u64 = m.objects.iter().map(|o| o.size).sum();
                let live: u64 = m.live_objects().map(|(_, o)| o.size).sum();
                let dead: u64 = m.objects.iter().filter(|o| o.fate.is_some()).map(|o| o.size).sum();
                let visible: u64 = fs.values().flatten().map(|c| c.len() as u64).sum();
                prop_assert_eq!(live, visible);
                prop_assert_eq!(live + dead, stored);
            }
        }
    }
}
