//! Walking the build context into a sorted index, with `.dockerignore` applied.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Statx, StatxFlags};

use super::hashcache::{HashCache, StatId};
use super::ignore::{ParentMatches, PatternMatcher};
use super::pathtable::PathTable;
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
    /// The kind of a file with mode bits `mode` (`st_mode` / `stx_mode`); anything that is not
    /// one of the special types is a regular file.
    pub fn from_mode(mode: u32) -> FileKind {
        match FileType::from_raw_mode(mode) {
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::Socket => FileKind::Socket,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            _ => FileKind::File,
        }
    }

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
    /// The `lstat` identity of each entry, for the digest memo; `None` when `statx` did
    /// not return all of it (the memo then never answers for the entry).
    stats: Vec<Option<StatId>>,
    /// Path to position, over the paths `entries` owns; built on the first lookup that
    /// needs it.
    positions: OnceLock<PathTable>,
    /// For each position, how many regular files come before it.
    file_ranks: Vec<u32>,
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
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", root, e.into()))?;
        let mut walker = Walker {
            ignore,
            pending: Vec::new(),
            out: Vec::new(),
            stats: Vec::new(),
        };
        walker.push(
            entry_from("", &meta, None),
            Some(StatId::from_metadata(&meta)),
        );
        walker.dir(fd, root, "", &ParentMatches::default())?;
        if walker.out.len() >= u32::MAX as usize / 2 {
            return Err(Error::io(
                "walk",
                root,
                std::io::Error::other("too many files in the build context"),
            ));
        }
        let (entries, stats) = (walker.out, walker.stats);
        let mut files = 0u32;
        let file_ranks = entries
            .iter()
            .map(|e| {
                let rank = files;
                files += u32::from(e.kind == FileKind::File);
                rank
            })
            .collect();
        Ok(ContextIndex {
            root: root.to_path_buf(),
            entries,
            stats,
            positions: OnceLock::new(),
            file_ranks,
            hash_cache: None,
        })
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
        if path.is_empty() {
            return (!self.entries.is_empty()).then_some(0);
        }
        self.positions
            .get_or_init(|| {
                PathTable::build(self.entries.len(), |i| self.entries[i].path.as_bytes())
                    .unwrap_or_default()
            })
            .find(path.as_bytes(), |i| self.entries[i].path.as_bytes())
    }

    /// How many regular files come before position `pos` in walk order (0 past the end).
    pub fn file_rank(&self, pos: usize) -> usize {
        self.file_ranks.get(pos).map_or(0, |r| *r as usize)
    }

    /// [`ContextIndex::position`], trying `guess` first (for paths looked up in walk
    /// order: the position after the previous one).
    pub fn position_near(&self, path: &str, guess: usize) -> Option<usize> {
        match self.entries.get(guess) {
            Some(e) if e.path == path => Some(guess),
            _ => self.position(path),
        }
    }

    /// The `lstat` identity the walk saw for the entry at `pos`; `None` when `statx` did
    /// not return every field of it (such a file is always read).
    pub fn stat(&self, pos: usize) -> Option<&StatId> {
        self.stats.get(pos)?.as_ref()
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

/// What the walk asks `statx` for: the fields of [`Entry`] and [`StatId`] (the device
/// numbers always come along).
fn statx_mask() -> StatxFlags {
    StatxFlags::TYPE
        | StatxFlags::MODE
        | StatxFlags::NLINK
        | StatxFlags::UID
        | StatxFlags::GID
        | StatxFlags::MTIME
        | StatxFlags::CTIME
        | StatxFlags::INO
        | StatxFlags::SIZE
}

/// The entry and identity of `path` from its `statx`. The identity is `None` unless
/// `statx` returned every field of it (`stx_mask`): a filesystem may leave out what it
/// does not keep, such as a timestamp, and a zero there would let the memo trust a
/// changed file.
fn from_statx(path: String, st: &Statx, link: Option<String>) -> (Entry, Option<StatId>) {
    let mode = u32::from(st.stx_mode);
    let kind = FileKind::from_mode(mode);
    let id = StatId {
        dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        size: st.stx_size,
        mtime: (st.stx_mtime.tv_sec, i64::from(st.stx_mtime.tv_nsec)),
        ctime: (st.stx_ctime.tv_sec, i64::from(st.stx_ctime.tv_nsec)),
        mode,
        uid: st.stx_uid,
        gid: st.stx_gid,
        nlink: u64::from(st.stx_nlink),
    };
    let id = StatxFlags::from_bits_retain(st.stx_mask)
        .contains(statx_mask())
        .then_some(id);
    let entry = Entry {
        path,
        kind,
        mode: mode & 0o7777,
        size: if kind == FileKind::File {
            st.stx_size
        } else {
            0
        },
        uid: st.stx_uid,
        gid: st.stx_gid,
        rdev: rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
        link_target: link,
    };
    (entry, id)
}

/// Directories with at least this many entries are `statx`ed in parallel.
const PARALLEL_STAT: usize = 1024;

struct Walker<'a> {
    ignore: Option<&'a PatternMatcher>,
    /// Excluded directories being walked because an exception may include something below
    /// them; emitted (in order) when that happens. The flag says whether it was emitted.
    pending: Vec<(Entry, Option<StatId>, bool)>,
    out: Vec<Entry>,
    /// The identity of each of `out`.
    stats: Vec<Option<StatId>>,
}

/// One name of a directory, with what `statx` said about it.
struct Child {
    name: String,
    stat: rustix::io::Result<Statx>,
}

impl Walker<'_> {
    fn push(&mut self, entry: Entry, stat: Option<StatId>) {
        self.out.push(entry);
        self.stats.push(stat);
    }

    /// Walks the directory open as `fd` (at `abs`, `rel` in the context).
    fn dir(
        &mut self,
        fd: OwnedFd,
        abs: &Path,
        rel: &str,
        parent: &ParentMatches,
    ) -> Result<(), Error> {
        let read_err = |e: rustix::io::Errno| Error::io("read directory", abs, e.into());
        let mut names = Vec::new();
        {
            // `getdents64` into one buffer: no allocation per name but the name itself.
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 32 * 1024];
            let mut dir = RawDir::new(&fd, &mut buf);
            while let Some(item) = dir.next() {
                let item = item.map_err(read_err)?;
                let bytes = item.file_name().to_bytes();
                if bytes == b"." || bytes == b".." {
                    continue;
                }
                let Ok(name) = std::str::from_utf8(bytes) else {
                    return Err(Error::NonUtf8Path {
                        path: abs.join(std::ffi::OsStr::from_bytes(bytes)),
                    });
                };
                names.push(name.to_string());
            }
        }
        names.sort_unstable();
        let dfd = fd.as_fd();
        // `statx` relative to the open directory (no walk of the whole path per file) with
        // only the fields needed: a cached build of a large context is mostly these calls.
        let stat = |name: String| {
            let stat =
                rustix::fs::statx(dfd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW, statx_mask());
            Child { name, stat }
        };
        let children: Vec<Child> = if names.len() >= PARALLEL_STAT {
            use rayon::prelude::*;
            names.into_par_iter().with_min_len(256).map(stat).collect()
        } else {
            names.into_iter().map(stat).collect()
        };
        // Sibling directories are walked in parallel when no excluded ancestor waits to be
        // emitted (each subtree's output is then independent of the others').
        let parallel = self.pending.is_empty()
            && children
                .iter()
                .filter(|c| matches!(&c.stat, Ok(st) if FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory))
                .nth(1)
                .is_some();
        if parallel {
            use rayon::prelude::*;
            let ignore = self.ignore;
            type Part = (Vec<Entry>, Vec<Option<StatId>>);
            let parts: Vec<Result<Part, Error>> = children
                .into_par_iter()
                .with_max_len(1)
                .map(|child| {
                    let mut sub = Walker {
                        ignore,
                        pending: Vec::new(),
                        out: Vec::new(),
                        stats: Vec::new(),
                    };
                    sub.child(dfd, child, abs, rel, parent)?;
                    Ok((sub.out, sub.stats))
                })
                .collect();
            let parts = parts.into_iter().collect::<Result<Vec<Part>, Error>>()?;
            let n: usize = parts.iter().map(|p| p.0.len()).sum();
            self.out.reserve(n);
            self.stats.reserve(n);
            for (out, stats) in parts {
                self.out.extend(out);
                self.stats.extend(stats);
            }
        } else {
            self.out.reserve(children.len());
            self.stats.reserve(children.len());
            for child in children {
                self.child(dfd, child, abs, rel, parent)?;
            }
        }
        Ok(())
    }

    /// Adds the child `child` of the directory `dfd` (at `abs`, `rel` in the context), and
    /// what is below it.
    fn child(
        &mut self,
        dfd: BorrowedFd<'_>,
        child: Child,
        abs: &Path,
        rel: &str,
        parent: &ParentMatches,
    ) -> Result<(), Error> {
        let Child { name, stat } = child;
        // Only links, directories and errors need the full path (not every file).
        let child_abs = || abs.join(&name);
        let st = stat.map_err(|e| Error::io("stat", child_abs(), e.into()))?;
        let ft = FileType::from_raw_mode(u32::from(st.stx_mode));
        let link = if ft == FileType::Symlink {
            let target = rustix::fs::readlinkat(dfd, name.as_str(), Vec::new())
                .map_err(|e| Error::io("read link", child_abs(), e.into()))?;
            match target.into_string() {
                Ok(t) => Some(t),
                Err(_) => return Err(Error::NonUtf8Path { path: child_abs() }),
            }
        } else {
            None
        };
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let (entry, stat) = from_statx(child_rel, &st, link);
        let is_dir = entry.kind == FileKind::Dir;
        let (excluded, matches) = match self.ignore {
            Some(m) => m.is_excluded_in_walk(&entry.path, parent)?,
            None => (false, ParentMatches::default()),
        };
        let open_dir = || {
            rustix::fs::openat(
                dfd,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open", child_abs(), e.into()))
        };
        if excluded {
            let ignore = self.ignore.filter(|m| is_dir && !m.can_prune(&entry.path));
            if ignore.is_some() {
                let child_rel = entry.path.clone();
                self.pending.push((entry, stat, false));
                self.dir(open_dir()?, &child_abs(), &child_rel, &matches)?;
                self.pending.pop();
            }
            return Ok(());
        }
        for (parent_entry, parent_stat, emitted) in self.pending.iter_mut() {
            if !*emitted {
                self.out.push(parent_entry.clone());
                self.stats.push(*parent_stat);
                *emitted = true;
            }
        }
        if is_dir {
            let child_rel = entry.path.clone();
            self.push(entry, stat);
            self.dir(open_dir()?, &child_abs(), &child_rel, &matches)?;
        } else {
            self.push(entry, stat);
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
    fn parallel_walk_keeps_order_ignores_and_identities() {
        let mut spec: Vec<String> = Vec::new();
        for d in 0..12 {
            for f in 0..5 {
                spec.push(format!("d{d:02}/f{f}"));
            }
            spec.push(format!("d{d:02}/sub/x.log"));
            spec.push(format!("d{d:02}/sub/keep.log"));
        }
        spec.push("d03.txt".into());
        let refs: Vec<&str> = spec.iter().map(String::as_str).collect();
        let dir = make_tree(&refs);
        let m = PatternMatcher::new(&["d05", "**/*.log", "!d07/sub/keep.log"]).unwrap();
        let index = ContextIndex::walk(dir.path(), Some(&m)).unwrap();
        let mut want = vec![String::new()];
        for d in 0..12 {
            if d == 5 {
                continue;
            }
            want.push(format!("d{d:02}"));
            for f in 0..5 {
                want.push(format!("d{d:02}/f{f}"));
            }
            want.push(format!("d{d:02}/sub"));
            if d == 7 {
                want.push("d07/sub/keep.log".into());
            }
            if d == 3 {
                // "d03.txt" sorts after "d03" and its subtree.
            }
        }
        let at = want.iter().position(|p| p == "d04").unwrap();
        want.insert(at, "d03.txt".into());
        assert_eq!(paths(&index), want);
        let mut files = 0;
        for (i, e) in index.entries().iter().enumerate() {
            assert_eq!(index.position(&e.path), Some(i));
            assert_eq!(index.position_near(&e.path, i), Some(i));
            assert_eq!(index.position_near(&e.path, i + 1), Some(i));
            assert_eq!(index.file_rank(i), files);
            files += usize::from(e.kind == FileKind::File);
        }
        assert_eq!(index.position_near("d05/f0", 0), None);
        assert_eq!(index.position("d05/f0"), None);
        // The walk's identity is the one `fstat` of the opened file gives (the memo
        // compares them).
        let pos = index.position("d07/f3").unwrap();
        let file = std::fs::File::open(dir.path().join("d07/f3")).unwrap();
        let st = rustix::fs::fstat(&file).unwrap();
        assert_eq!(index.stat(pos), Some(&StatId::from_stat(&st)));
        let meta = std::fs::symlink_metadata(dir.path().join("d07/f3")).unwrap();
        assert_eq!(index.stat(pos), Some(&StatId::from_metadata(&meta)));
        assert_eq!(index.get("d07/f3").unwrap().size, 6);
    }

    /// An identity `statx` returned only in part (no ctime, or no mtime) is not one the
    /// memo may trust: the entry is still listed, without an identity.
    #[test]
    fn partial_statx_gives_no_identity() {
        let dir = make_tree(&["f"]);
        let st = rustix::fs::statx(
            rustix::fs::CWD,
            dir.path().join("f"),
            AtFlags::SYMLINK_NOFOLLOW,
            statx_mask(),
        )
        .unwrap();
        let (entry, id) = from_statx("f".into(), &st, None);
        assert_eq!(entry.kind, FileKind::File);
        let meta = std::fs::symlink_metadata(dir.path().join("f")).unwrap();
        assert_eq!(id, Some(StatId::from_metadata(&meta)));
        for missing in [StatxFlags::CTIME, StatxFlags::MTIME, StatxFlags::INO] {
            let mut partial = st;
            partial.stx_mask &= !missing.bits();
            let (entry, id) = from_statx("f".into(), &partial, None);
            assert_eq!((entry.kind, entry.size), (FileKind::File, 1));
            assert_eq!(id, None, "{missing:?} missing");
        }
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
