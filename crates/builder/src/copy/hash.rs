//! Content digests of what a copy writes, for its cache key.
//!
//! Each entry is hashed as [`crate::context::hash`] hashes context files (same header
//! layout: type, permission bits, owner, size, link target, device numbers, extended
//! attributes, then the content; never the mtime), but with the metadata the copy WRITES:
//! the `--chmod` result instead of the source mode, the `--chown` owner instead of the
//! source owner (a `--chown` by name enters as its text, since names are resolved in the
//! destination, which the parent key covers), 0:0 for the build context. So without those
//! flags a context file has the same per-file digest here as in `hash_selection`, and with
//! `--chmod=755` a file checked out as 0644 or 0755 keys alike. Only the extended
//! attributes a copy carries (`security.capability`, `user.*`) are hashed.
//!
//! Hashing reads every file once, in parallel on the current rayon pool; it is a separate
//! pass from copying (the key must be known before the copy runs), which copies with
//! `copy_file_range` and so does not read the data into the process again.

use std::cell::RefCell;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use sha2::{Digest as _, Sha256};
use strata_overlay::in_root::{Follow, Root};
use strata_overlay::meta::carried_xattr;

use super::chmod::Chmod;
use super::sources::overlay_io;
use crate::cachekey::Encoder;
use crate::context::{Entry, FileKind, HashCache, StatId};
use crate::user::Owner;
use crate::Error;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; 128 * 1024]);
    /// Header bytes of memo lookups on this thread: the one being built, and the last
    /// one hashed with its digest. The files of a copy mostly share their header (same
    /// mode, owner, and often size), and a memo hit needs only its digest; the buffers are
    /// reused, so a hit allocates nothing.
    static HEADERS: RefCell<HeaderScratch> = RefCell::new(HeaderScratch::default());
}

#[derive(Default)]
struct HeaderScratch {
    building: Encoder,
    last: Vec<u8>,
    digest: [u8; 32],
}

/// The sha256 of the header that `write` encodes (the same bytes as last time on this
/// thread are not hashed again).
fn header_digest(write: impl FnOnce(&mut Encoder)) -> [u8; 32] {
    HEADERS.with(|h| {
        let h = &mut *h.borrow_mut();
        h.building.clear();
        write(&mut h.building);
        let header = h.building.as_bytes();
        if h.last.is_empty() || h.last != header {
            h.digest = Sha256::digest(header).into();
            h.last.clear();
            h.last.extend_from_slice(header);
        }
        h.digest
    })
}

/// How the owner enters an entry's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerKey {
    /// The source's owner (`keep`: another root) or 0:0 (the build context).
    Source {
        /// Whether the source owner is kept.
        keep: bool,
    },
    /// A numeric `--chown`.
    Fixed(Owner),
    /// A `--chown` naming a user or group, resolved only when applying.
    Named(String),
}

/// What hashing an entry learnt about it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hashed {
    /// Permission bits written (after `--chmod`).
    pub mode: u32,
    /// Size of the source (regular files).
    pub size: u64,
    /// Modification time of the source (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Device and inode, to keep hard links.
    pub dev_ino: (u64, u64),
    /// Link count.
    pub nlink: u64,
    /// The extended attributes copied along, sorted.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// The entry's digest (header + content).
    pub digest: [u8; 32],
}

/// The settings every entry of one copy is hashed with.
pub(crate) struct HashSettings<'a> {
    pub chmod: Option<&'a Chmod>,
    pub owner: &'a OwnerKey,
}

impl HashSettings<'_> {
    /// The mode written for a source entry of `kind` and permission bits `mode`.
    pub fn mode(&self, kind: FileKind, mode: u32) -> u32 {
        match self.chmod {
            Some(c) if kind != FileKind::Symlink => c.apply(mode, kind == FileKind::Dir),
            _ => mode,
        }
    }

    /// The header part of a digest (the layout of `context::hash`).
    fn header(&self, e: &Entry, mode: u32, size: u64, xattrs: &[(String, Vec<u8>)]) -> Encoder {
        let mut enc = Encoder::new();
        self.write_header(&mut enc, e, mode, size, xattrs);
        enc
    }

    /// Appends the header of [`HashSettings::header`] to `enc`.
    fn write_header(
        &self,
        enc: &mut Encoder,
        e: &Entry,
        mode: u32,
        size: u64,
        xattrs: &[(String, Vec<u8>)],
    ) {
        enc.str("strata-file-v1");
        enc.field("kind").str(e.kind.name());
        enc.field("mode").u64(u64::from(mode));
        match self.owner {
            OwnerKey::Named(spec) => {
                enc.field("owner").str(spec);
            }
            owner => {
                let (uid, gid) = match owner {
                    OwnerKey::Fixed(o) => (o.uid, o.gid),
                    OwnerKey::Source { keep: true } => (e.uid, e.gid),
                    _ => (0, 0),
                };
                enc.field("uid").u64(u64::from(uid));
                enc.field("gid").u64(u64::from(gid));
            }
        }
        enc.field("size").u64(size);
        enc.field("link").opt_str(e.link_target.as_deref());
        let (major, minor) = match e.kind {
            FileKind::CharDevice | FileKind::BlockDevice => {
                (nix::sys::stat::major(e.rdev), nix::sys::stat::minor(e.rdev))
            }
            _ => (0, 0),
        };
        enc.field("devmajor").u64(major);
        enc.field("devminor").u64(minor);
        enc.field("xattrs").list(xattrs.len());
        for (name, value) in xattrs {
            enc.str(name).bytes(value);
        }
    }

    /// Hashes the entry `e` (its `path` relative to `root`, never through a symlink).
    pub fn hash_entry(&self, root: &Root, e: &Entry) -> Result<Hashed, Error> {
        self.hash_entry_read(root, e).map(|(hashed, _, _)| hashed)
    }

    /// Reads and hashes the build-context entry `e` without asking the memo (the caller
    /// did), and remembers it if it is a regular file.
    pub fn hash_entry_remember(
        &self,
        root: &Root,
        e: &Entry,
        memo: &HashCache,
    ) -> Result<Hashed, Error> {
        if e.kind != FileKind::File {
            return self.hash_entry(root, e);
        }
        let (hashed, id, header) = self.hash_entry_read(root, e)?;
        memo.insert(&e.path, id, hashed.xattrs.clone(), header, hashed.digest);
        Ok(hashed)
    }

    /// What the memo remembers for the regular file `e` at `path` (`e.path` is not read)
    /// at its walked identity `id`, if it was hashed with the same header (one lookup;
    /// nothing allocated for a file without extended attributes). `guess` is that of
    /// [`HashCache::lookup_near`]. Not counted in the memo's hits: the caller adds them
    /// ([`HashCache::add_hits`]).
    pub fn memo_hit(
        &self,
        e: &Entry,
        path: &str,
        id: &StatId,
        memo: &HashCache,
        guess: usize,
    ) -> Option<Hashed> {
        if e.kind != FileKind::File {
            return None;
        }
        let mode = self.mode(e.kind, id.mode & 0o7777);
        let (digest, xattrs) = memo.lookup_near_uncounted(path, id, guess, |xattrs| {
            header_digest(|enc| self.write_header(enc, e, mode, id.size, xattrs))
        })?;
        Some(Hashed {
            mode,
            size: id.size,
            mtime: id.mtime,
            dev_ino: (id.dev, id.ino),
            nlink: id.nlink,
            xattrs,
            digest,
        })
    }

    /// Reads and hashes `e`; also returns the `fstat` identity of what was read and the
    /// digest of the header alone (the memo's keys).
    fn hash_entry_read(&self, root: &Root, e: &Entry) -> Result<(Hashed, StatId, [u8; 32]), Error> {
        let open = |flags: OFlags| {
            root.open_at(Path::new(&e.path), flags, Mode::empty(), Follow::Never)
                .map_err(|err| Error::io("open", shown(&e.path), overlay_io(err)))
        };
        let fd = match e.kind {
            FileKind::File => open(OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK)?,
            FileKind::Dir => open(OFlags::RDONLY | OFlags::DIRECTORY)?,
            _ => open(OFlags::PATH | OFlags::NOFOLLOW)?,
        };
        let st =
            rustix::fs::fstat(&fd).map_err(|err| Error::io("stat", shown(&e.path), err.into()))?;
        let kind_now = FileType::from_raw_mode(st.st_mode);
        let same_kind = match e.kind {
            FileKind::File => kind_now == FileType::RegularFile,
            FileKind::Dir => kind_now == FileType::Directory,
            FileKind::Symlink => kind_now == FileType::Symlink,
            _ => true,
        };
        if !same_kind {
            return Err(Error::ChangedWhileHashing {
                path: shown(&e.path).into(),
            });
        }
        let source_mode = st.st_mode & 0o7777;
        let mode = self.mode(e.kind, source_mode);
        let size = if e.kind == FileKind::File {
            st.st_size as u64
        } else {
            0
        };
        let xattrs = match e.kind {
            FileKind::File | FileKind::Dir => read_xattrs(&fd),
            _ => Vec::new(),
        };
        let header = self.header(e, mode, size, &xattrs);
        let header_digest: [u8; 32] = Sha256::digest(header.as_bytes()).into();
        let mut hasher = Sha256::new();
        hasher.update(header.as_bytes());
        if e.kind == FileKind::File {
            let read = hash_content(&fd, &mut hasher)
                .map_err(|err| Error::io("read", shown(&e.path), err))?;
            if read != size {
                return Err(Error::ChangedWhileHashing {
                    path: shown(&e.path).into(),
                });
            }
        }
        let hashed = Hashed {
            mode,
            size,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            dev_ino: (st.st_dev, st.st_ino),
            nlink: st.st_nlink,
            xattrs,
            digest: hasher.finalize().into(),
        };
        Ok((hashed, StatId::from_stat(&st), header_digest))
    }

    /// Hashes an inline (heredoc) file: mode 0644 before `--chmod`, written now.
    pub fn hash_inline(&self, name: &str, content: &str) -> Hashed {
        let e = Entry {
            path: name.to_string(),
            kind: FileKind::File,
            mode: 0o644,
            size: content.len() as u64,
            uid: 0,
            gid: 0,
            rdev: 0,
            link_target: None,
        };
        let mode = self.mode(FileKind::File, 0o644);
        let mut hasher = Sha256::new();
        hasher.update(self.header(&e, mode, e.size, &[]).as_bytes());
        hasher.update(content.as_bytes());
        Hashed {
            mode,
            size: e.size,
            mtime: now(),
            dev_ino: (0, 0),
            nlink: 1,
            xattrs: Vec::new(),
            digest: hasher.finalize().into(),
        }
    }
}

/// The current time as (seconds, nanoseconds).
pub(crate) fn now() -> (i64, i64) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, i64::from(d.subsec_nanos()))
}

/// A source path for messages (`.` for the root).
fn shown(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

/// Feeds the whole file to `hasher`; returns the bytes read.
fn hash_content(fd: &OwnedFd, hasher: &mut Sha256) -> std::io::Result<u64> {
    BUFFER.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut file = std::fs::File::from(fd.try_clone()?);
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf[..]) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            total += n as u64;
        }
    })
}

/// The extended attributes a copy carries (`security.capability`, `user.*` but overlay's
/// own), read through an open descriptor, sorted by name. Filesystems without xattrs give
/// none.
pub(crate) fn read_xattrs(fd: &OwnedFd) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let len = loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < (1 << 20) => {
                names.resize(names.len() * 4, 0)
            }
            Err(_) => return Vec::new(),
        }
    };
    let mut out: Vec<(String, Vec<u8>)> = names[..len]
        .split(|b| *b == 0)
        .filter_map(|n| std::str::from_utf8(n).ok())
        .filter(|n| !n.is_empty() && carried_xattr(n))
        .filter_map(|n| {
            let mut value = vec![0u8; 64 * 1024];
            let len = rustix::fs::fgetxattr(fd, n, &mut value[..]).ok()?;
            value.truncate(len);
            Some((n.to_string(), value))
        })
        .collect();
    out.sort();
    out
}

/// The digest of a directory-like top: the top directory's own digest, then for each
/// child, in walk (name) order, its name and digest, recursively (the layout of
/// `context::hash`'s directory digests). `entries` are `(rel, is_dir, digest)` in walk
/// order, the first being the top directory itself (`rel` empty).
pub(crate) fn tree_digest(entries: &[(&str, bool, [u8; 32])]) -> [u8; 32] {
    let Some((_, _, own)) = entries.first() else {
        return [0; 32];
    };
    let start = |own: &[u8; 32]| {
        let mut enc = Encoder::new();
        enc.str("strata-dir-v1");
        enc.bytes(own);
        enc
    };
    // Open directories from the top down: (rel, encoder).
    let mut stack: Vec<(String, Encoder)> = vec![(String::new(), start(own))];
    let close = |stack: &mut Vec<(String, Encoder)>| {
        if let Some((rel, enc)) = stack.pop() {
            let digest: [u8; 32] = Sha256::digest(enc.as_bytes()).into();
            if let Some((_, parent)) = stack.last_mut() {
                parent
                    .str(rel.rsplit('/').next().unwrap_or(""))
                    .bytes(&digest);
            }
            return digest;
        }
        [0; 32]
    };
    for (rel, is_dir, digest) in &entries[1..] {
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        while stack.len() > 1 && stack.last().is_some_and(|(r, _)| r != parent) {
            close(&mut stack);
        }
        if *is_dir {
            stack.push((rel.to_string(), start(digest)));
        } else if let Some((_, enc)) = stack.last_mut() {
            enc.str(rel.rsplit('/').next().unwrap_or("")).bytes(digest);
        }
    }
    let mut digest = [0; 32];
    while !stack.is_empty() {
        digest = close(&mut stack);
    }
    digest
}

/// `sha256:<hex>`.
pub(crate) fn hex_digest(d: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(d))
}
