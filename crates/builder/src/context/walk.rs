//! Walking the build context into a sorted index, with `.dockerignore` applied.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::hashcache::{HashCache, StatId};
use super::ignore::{ParentMatches, PatternMatcher};
use crate::Error;

/// The type of a file in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

impl FileKind {
    /// Short name used in records and explanations (`file`, `dir`, `symlink`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "char",
            FileKind::BlockDevice => "block",
        }
    }

    fn of(ft: std::fs::FileType) -> FileKind {
        if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_fifo() {
            FileKind::Fifo
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else if ft.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::File
        }
    }
}

/// One file of the context, as seen by `lstat` during the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the context root, `/`-separated; `""` for the root itself.
    pub path: String,
    /// File type.
    pub kind: FileKind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Size in bytes (regular files).
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (devices).
    pub rdev: u64,
    /// Target of a symbolic link.
    pub link_target: Option<String>,
}

impl Entry {
    /// Number of path components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.path.is_empty() {
            0
        } else {
            self.path.split('/').count()
        }
    }

    /// The last path component (`""` for the root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

/// The files of a context in walk order: the root first, then depth-first with the names of
/// each directory in byte order (Go's `filepath.Walk` order), so a directory's descendants
/// directly follow it.
#[derive(Debug, Clone)]
pub struct ContextIndex {
    root: PathBuf,
    entries: Vec<Entry>,
    /// The `lstat` identity of each entry, for the digest memo.
    stats: Vec<StatId>,
    positions: HashMap<String, usize>,
    hash_cache: Option<Arc<HashCache>>,
}

impl ContextIndex {
    /// Walks `root` without following symbolic links, leaving out what `ignore` excludes.
    ///
    /// An excluded directory is skipped whole when [`PatternMatcher::can_prune`] allows it;
    /// otherwise it is walked and appears in the index only if something below it is
    /// included (as its parent). File names must be valid UTF-8.
    pub fn walk(root: &Path, ignore: Option<&PatternMatcher>) -> Result<Self, Error> {
        let meta = std::fs::metadata(root).map_err(|e| Error::io("stat", root, e))?;
        let mut index = ContextIndex {
            root: root.to_path_buf(),
            entries: Vec::new(),
            stats: Vec::new(),
            positions: HashMap::new(),
            hash_cache: None,
        };
        index.entries.push(entry_from("", &meta, None));
        index.stats.push(StatId::from_metadata(&meta));
        let mut walker = Walker {
            ignore,
            pending: Vec::new(),
            out: &mut index.entries,
            stats: &mut index.stats,
        };
        walker.dir(root, "", &ParentMatches::default())?;
        index.positions = index
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.clone(), i))
            .collect();
        Ok(index)
    }

    /// The directory that was walked.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All entries, in walk order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Position of `path` (relative, clean; `""` for the root) in [`ContextIndex::entries`].
    pub fn position(&self, path: &str) -> Option<usize> {
        self.positions.get(path).copied()
    }

    /// The `lstat` identity the walk saw for the entry at `pos`.
    pub fn stat(&self, pos: usize) -> Option<&StatId> {
        self.stats.get(pos)
    }

    /// Attaches the digest memo that hashing this context consults and feeds.
    pub fn set_hash_cache(&mut self, cache: Arc<HashCache>) {
        self.hash_cache = Some(cache);
    }

    /// The digest memo, if one is attached.
    pub fn hash_cache(&self) -> Option<&HashCache> {
        self.hash_cache.as_deref()
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.position(path).map(|i| &self.entries[i])
    }

    /// Positions `start..end` of the entry at `pos` and everything below it.
    pub fn subtree_range(&self, pos: usize) -> std::ops::Range<usize> {
        let Some(entry) = self.entries.get(pos) else {
            return pos..pos;
        };
        if entry.path.is_empty() {
            return 0..self.entries.len();
        }
        let prefix = format!("{}/", entry.path);
        let end = self.entries[pos + 1..]
            .iter()
            .position(|e| !e.path.starts_with(&prefix))
            .map_or(self.entries.len(), |n| pos + 1 + n);
        pos..end
    }
}

fn entry_from(path: &str, meta: &std::fs::Metadata, link: Option<String>) -> Entry {
    let kind = FileKind::of(meta.file_type());
    Entry {
        path: path.to_string(),
        kind,
        mode: meta.mode() & 0o7777,
        size: if kind == FileKind::File {
            meta.size()
        } else {
            0
        },
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev(),
        link_target: link,
    }
}

/// Directories with at least this many entries are `lstat`ed in parallel.
const PARALLEL_STAT: usize = 64;

struct Walker<'a> {
    ignore: Option<&'a PatternMatcher>,
    /// Excluded directories being walked because an exception may include something below
    /// them; emitted (in order) when that happens. The flag says whether it was emitted.
    pending: Vec<(Entry, StatId, bool)>,
    out: &'a mut Vec<Entry>,
    stats: &'a mut Vec<StatId>,
}

impl Walker<'_> {
    fn dir(&mut self, abs: &Path, rel: &str, parent: &ParentMatches) -> Result<(), Error> {
        let mut names = Vec::new();
        for item in std::fs::read_dir(abs).map_err(|e| Error::io("read directory", abs, e))? {
            let item = item.map_err(|e| Error::io("read directory", abs, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::NonUtf8Path { path: item.path() });
            };
            names.push((name.to_string(), item));
        }
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // `lstat` relative to the open directory (no walk of the whole path per file), on
        // the current rayon pool when the directory is large enough to be worth it: a
        // cached build of a large context is mostly these calls.
        let metas: Vec<std::io::Result<std::fs::Metadata>> = if names.len() >= PARALLEL_STAT {
            use rayon::prelude::*;
            names.par_iter().map(|(_, item)| item.metadata()).collect()
        } else {
            names.iter().map(|(_, item)| item.metadata()).collect()
        };
        for ((name, _), meta) in names.into_iter().zip(metas) {
            // Only links, directories and errors need the full path (not every file).
            let child_abs = || abs.join(&name);
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let meta = meta.map_err(|e| Error::io("stat", child_abs(), e))?;
            let link = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(child_abs())
                    .map_err(|e| Error::io("read link", child_abs(), e))?;
                match target.into_os_string().into_string() {
                    Ok(t) => Some(t),
                    Err(_) => return Err(Error::NonUtf8Path { path: child_abs() }),
                }
            } else {
                None
            };
            let entry = entry_from(&child_rel, &meta, link);
            let stat = StatId::from_metadata(&meta);
            let is_dir = entry.kind == FileKind::Dir;
            let (excluded, matches) = match self.ignore {
                Some(m) => m.is_excluded_in_walk(&child_rel, parent)?,
                None => (false, ParentMatches::default()),
            };
            if excluded {
                let ignore = self.ignore.filter(|m| is_dir && !m.can_prune(&child_rel));
                if ignore.is_some() {
                    self.pending.push((entry, stat, false));
                    self.dir(&child_abs(), &child_rel, &matches)?;
                    self.pending.pop();
                }
                continue;
            }
            for (parent_entry, parent_stat, emitted) in self.pending.iter_mut() {
                if !*emitted {
                    self.out.push(parent_entry.clone());
                    self.stats.push(*parent_stat);
                    *emitted = true;
                }
            }
            self.out.push(entry);
            self.stats.push(stat);
            if is_dir {
                self.dir(&child_abs(), &child_rel, &matches)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Makes files (`name`), directories (`name/`) and links (`name -> target`).
    pub(crate) fn make_tree(spec: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for item in spec {
            let path = dir.path();
            if let Some((name, target)) = item.split_once(" -> ") {
                std::os::unix::fs::symlink(target, path.join(name)).unwrap();
            } else if let Some(name) = item.strip_suffix('/') {
                std::fs::create_dir_all(path.join(name)).unwrap();
            } else {
                let p = path.join(item);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, item.as_bytes()).unwrap();
            }
        }
        dir
    }

    fn paths(index: &ContextIndex) -> Vec<&str> {
        index.entries().iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn walk_order_is_depth_first_by_name() {
        let dir = make_tree(&["b", "a.txt", "a/z", "a/b/c", "link -> /etc/passwd"]);
        let index = ContextIndex::walk(dir.path(), None).unwrap();
        assert_eq!(
            paths(&index),
            ["", "a", "a/b", "a/b/c", "a/z", "a.txt", "b", "link"]
        );
        let link = index.get("link").unwrap();
        assert_eq!(link.kind, FileKind::Symlink);
        assert_eq!(link.link_target.as_deref(), Some("/etc/passwd"));
        assert_eq!(index.get("a/z").unwrap().size, 3);
        assert_eq!(index.subtree_range(index.position("a").unwrap()), 1..5);
        assert_eq!(index.subtree_range(0), 0..8);
    }

    #[test]
    fn ignored_paths_are_left_out_and_exceptions_keep_parents() {
        let dir = make_tree(&[
            "src/main.rs",
            "src/gen/big.bin",
            "target/debug/app",
            "target/keep.txt",
            "docs/a.md",
            "docs/README.md",
            "notes.log",
            "deep/x/y.log",
            "Dockerfile",
        ]);
        let m = PatternMatcher::new(&[
            "target",
            "!target/keep.txt",
            "*.log",
            "**/*.log",
            "docs",
            "!docs/README.md",
            "src/gen",
        ])
        .unwrap();
        let index = ContextIndex::walk(dir.path(), Some(&m)).unwrap();
        assert_eq!(
            paths(&index),
            [
                "",
                "Dockerfile",
                "deep",
                "deep/x",
                "docs",
                "docs/README.md",
                "src",
                "src/main.rs",
                "target",
                "target/keep.txt"
            ]
        );
    }

    #[test]
    fn non_utf8_names_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"bad\xff");
        std::fs::write(dir.path().join(name), "").unwrap();
        let err = ContextIndex::walk(dir.path(), None).unwrap_err();
        assert!(matches!(err, Error::NonUtf8Path { .. }), "{err:?}");
    }
}
