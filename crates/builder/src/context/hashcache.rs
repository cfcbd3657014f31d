//! A metadata-keyed memo of context file digests, so a rebuild reads only the files that
//! changed.
//!
//! Hashing a 200 MB context on every build costs more than the rest of a cached build
//! together. Like git's index and BuildKit's `contenthash` cache, we remember, per context
//! file, the `lstat` identity it had when it was hashed ([`StatId`]: device, inode, size,
//! mtime and ctime to the nanosecond, type and mode bits, owner, link count) with the
//! extended attributes read then and the digest(s) computed. When the walk of the next
//! build sees the same identity at the same path, the digest is reused without opening the
//! file.
//!
//! Why this cannot be wrong:
//! - any write to a file moves its mtime and ctime; `touch -d` or `utimensat` can restore
//!   the mtime but never the ctime (the kernel sets it to "now" on every inode change,
//!   including chmod, chown, xattr changes, link and rename), and a replaced file has
//!   another inode;
//! - a file changed twice within one timestamp tick could keep its ctime: an entry is
//!   therefore only remembered when its ctime and mtime are at least [`SETTLE`] older than
//!   the moment hashing began (git's "racily clean" rule), so a later change cannot share
//!   the remembered timestamp;
//! - what enters a digest besides the content (mode after `--chmod`, owner, size,
//!   extended attributes) is summed into a header digest that must match too, so copies
//!   with other flags never share a digest;
//! - the file on disk carries a sha256 of its body; a torn or damaged file is ignored
//!   (and rewritten), never trusted. Losing it only costs a re-hash.
//!
//! One file per context folder, `<root>/builder/hash-cache/<sha256 of the canonical
//! context path>.bin`, written (temp file + rename, no fsync: it is a cache) at the end of
//! a build that learnt something, keeping only the paths of that build's context walk, in
//! walk order. It is checked whole when opened and then read in place (no per-file copy),
//! and a lookup tries the record where walk order puts it before looking the path up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use sha2::{Digest as _, Sha256};

use super::pathtable::PathTable;

/// How old a file's timestamps must be, relative to the start of hashing, before its digest
/// is remembered (covers coarse timestamp ticks and clock steps of up to this much).
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

const MAGIC: &[u8] = b"strata-hash-cache-v1\n";

/// Remembered digests per path, at most this many header variants each.
const MAX_VARIANTS: usize = 4;

/// Extended attributes (name, value), in name order.
pub type Xattrs = Vec<(String, Vec<u8>)>;

/// What `lstat` says about a file, as far as its content digest depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatId {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Inode change time (seconds, nanoseconds).
    pub ctime: (i64, i64),
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u64,
}

impl StatId {
    /// From a `std` metadata (an `lstat`).
    pub fn from_metadata(m: &std::fs::Metadata) -> StatId {
        use std::os::unix::fs::MetadataExt;
        StatId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            nlink: m.nlink(),
        }
    }

    /// From a `rustix` stat (an `fstat` of the open file).
    #[allow(clippy::unnecessary_cast)] // field types differ between targets
    pub fn from_stat(st: &rustix::fs::Stat) -> StatId {
        StatId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            nlink: st.st_nlink as u64,
        }
    }

    /// Whether both timestamps are older than `limit` (seconds, nanoseconds).
    fn settled_before(&self, limit: (i64, i64)) -> bool {
        self.mtime < limit && self.ctime < limit
    }
}

/// One remembered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// Its identity when it was hashed.
    pub id: StatId,
    /// The extended attributes read then (name order).
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// (header digest, entry digest) pairs, most recent first.
    pub digests: Vec<([u8; 32], [u8; 32])>,
}

/// The digest memo of one build context. Shared by the steps of a build (lookups and
/// inserts take `&self`).
#[derive(Debug)]
pub struct HashCache {
    path: PathBuf,
    /// What the file held, looked up in place (nothing is copied per remembered file).
    loaded: Loaded,
    /// What this build learnt; an entry here replaces the loaded one of its path. Written
    /// only on a miss.
    fresh: RwLock<HashMap<String, CachedFile>>,
    /// Set (under the write lock) once `fresh` holds anything: a lookup reads this flag,
    /// not the lock, while nothing was learnt (taking a read lock writes a cache line
    /// every thread shares).
    has_fresh: AtomicBool,
    dirty: AtomicBool,
    hits: AtomicU64,
    /// Entries whose timestamps are not older than this are not remembered.
    settle_limit: (i64, i64),
}

/// The records of the memo file, checked whole when read and then read in place.
#[derive(Debug, Default)]
struct Loaded {
    /// The file as read.
    bytes: Vec<u8>,
    /// Where the body ends (the sum follows).
    end: usize,
    /// Offset in `bytes` of each record, of its path bytes, and the path's length.
    records: Vec<(u32, u32, u32)>,
    /// Path to record, over the paths in `bytes`; built on the first lookup that the
    /// caller's guess (the record after the previous one) does not answer.
    table: std::sync::OnceLock<PathTable>,
}

/// One loaded record, borrowed from the body.
struct View<'a> {
    id: StatId,
    /// The encoded extended attributes (count first).
    xattrs: &'a [u8],
    /// (header digest, entry digest) pairs, 64 bytes each.
    digests: &'a [u8],
}

impl View<'_> {
    fn xattrs(&self) -> Xattrs {
        let mut r = Reader { buf: self.xattrs };
        read_xattrs(&mut r).unwrap_or_default()
    }

    fn digest(&self, header: &[u8; 32]) -> Option<[u8; 32]> {
        self.digests
            .chunks_exact(64)
            .find(|pair| pair[..32] == header[..])
            .and_then(|pair| pair[32..].try_into().ok())
    }

    fn to_cached(&self) -> CachedFile {
        CachedFile {
            id: self.id,
            xattrs: self.xattrs(),
            digests: self
                .digests
                .chunks_exact(64)
                .filter_map(|p| Some((p[..32].try_into().ok()?, p[32..].try_into().ok()?)))
                .collect(),
        }
    }
}

impl Loaded {
    fn path(&self, i: usize) -> &[u8] {
        let (_, start, len) = self.records[i];
        &self.bytes[start as usize..start as usize + len as usize]
    }

    fn table(&self) -> &PathTable {
        self.table.get_or_init(|| {
            PathTable::build(self.records.len(), |i| self.path(i)).unwrap_or_default()
        })
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.table().find(path.as_bytes(), |i| self.path(i))
    }

    /// [`Loaded::find`], trying the record at `guess` first.
    fn find_near(&self, path: &str, guess: usize) -> Option<usize> {
        // Should a (damaged but summed) file repeat a path, either record is one that was
        // true when written: the identity check decides as for any record.
        if guess < self.records.len() && self.path(guess) == path.as_bytes() {
            return Some(guess);
        }
        self.find(path)
    }

    /// The record at `i` (it was checked when loaded).
    fn view(&self, i: usize) -> Option<View<'_>> {
        let (start, _, _) = *self.records.get(i)?;
        let mut r = Reader {
            buf: self.bytes.get(start as usize..self.end)?,
        };
        let rec = read_record(&mut r)?;
        Some(View {
            id: rec.id,
            xattrs: rec.xattrs,
            digests: rec.digests,
        })
    }

    /// The encoded record `i`, as it is written again.
    fn raw(&self, i: usize) -> &[u8] {
        let (start, _, _) = self.records[i];
        let end = self.records.get(i + 1).map_or(self.end, |r| r.0 as usize);
        &self.bytes[start as usize..end]
    }
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl HashCache {
    /// The memo of `context` kept under `builder_dir`, loaded if present and intact (an
    /// unreadable one is treated as empty). Only files whose timestamps are at least
    /// [`SETTLE`] older than now will be remembered.
    pub fn open(builder_dir: &Path, context: &Path) -> HashCache {
        HashCache::open_with_settle(builder_dir, context, SETTLE)
    }

    /// [`HashCache::open`] with another settling time (tests use zero and wait for the
    /// timestamp tick themselves).
    pub fn open_with_settle(
        builder_dir: &Path,
        context: &Path,
        settle: std::time::Duration,
    ) -> HashCache {
        let canon = std::fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        let name = hex::encode(Sha256::digest(canon.as_os_str().as_encoded_bytes()));
        let path = builder_dir.join("hash-cache").join(format!("{name}.bin"));
        let loaded = std::fs::read(&path)
            .ok()
            .and_then(decode)
            .unwrap_or_default();
        let now = std::time::SystemTime::now()
            .checked_sub(settle)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        HashCache {
            path,
            loaded,
            fresh: RwLock::new(HashMap::new()),
            has_fresh: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            settle_limit: (now.as_secs() as i64, i64::from(now.subsec_nanos())),
        }
    }

    /// The file the memo lives in.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// Number of remembered paths.
    pub fn len(&self) -> usize {
        let fresh = read(&self.fresh);
        let only_fresh = fresh
            .keys()
            .filter(|p| self.loaded.find(p).is_none())
            .count();
        self.loaded_paths().count() + only_fresh
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions of the loaded records, one per path (the first, should the file repeat one).
    fn loaded_paths(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.loaded.records.len()).filter(|&i| {
            self.loaded
                .table()
                .find(self.loaded.path(i), |j| self.loaded.path(j))
                == Some(i)
        })
    }

    /// Calls `f` with what is remembered for `path` at identity `id`: the extended
    /// attributes and a way to find the digest under a header digest.
    fn with_entry<R>(
        &self,
        path: &str,
        id: &StatId,
        guess: usize,
        f: impl FnOnce(
            &dyn Fn() -> Xattrs,
            &[(String, Vec<u8>)],
            &dyn Fn(&[u8; 32]) -> Option<[u8; 32]>,
        ) -> Option<R>,
    ) -> Option<R> {
        // An insert of `path` that happened before this lookup set the flag first; one
        // racing with it finds either record, and the identity check decides as ever.
        if self.has_fresh.load(Ordering::Acquire) {
            let fresh = read(&self.fresh);
            if !fresh.is_empty() {
                if let Some(c) = fresh.get(path) {
                    if c.id != *id {
                        return None;
                    }
                    let find =
                        |h: &[u8; 32]| c.digests.iter().find(|(k, _)| k == h).map(|(_, d)| *d);
                    return f(&|| c.xattrs.clone(), &c.xattrs, &find);
                }
            }
        }
        let at = self.loaded.find_near(path, guess)?;
        let view = self.loaded.view(at)?;
        if view.id != *id {
            return None;
        }
        let xattrs = view.xattrs();
        f(&|| xattrs.clone(), &xattrs, &|h| view.digest(h))
    }

    /// The extended attributes remembered for `path` if its identity is still `id`.
    pub fn xattrs(&self, path: &str, id: &StatId) -> Option<Vec<(String, Vec<u8>)>> {
        self.with_entry(path, id, 0, |owned, _, _| Some(owned()))
    }

    /// One lookup for a cached file: when `path` is remembered at identity `id`, `header`
    /// gets its remembered extended attributes and returns the header digest to look for;
    /// the result is the digest remembered under it, with those attributes.
    pub fn lookup(
        &self,
        path: &str,
        id: &StatId,
        header: impl FnOnce(&[(String, Vec<u8>)]) -> [u8; 32],
    ) -> Option<([u8; 32], Xattrs)> {
        self.lookup_near(path, id, 0, header)
    }

    /// [`HashCache::lookup`] trying the record at `guess` first: the memo is saved in walk
    /// order (see [`HashCache::save_in_order`]), so the record of the regular file at a
    /// position of the walk is, while the context keeps its files, at the number of
    /// regular files before it ([`crate::context::ContextIndex::file_rank`]). The path
    /// is compared either way; a wrong guess only costs a lookup by path.
    pub fn lookup_near(
        &self,
        path: &str,
        id: &StatId,
        guess: usize,
        header: impl FnOnce(&[(String, Vec<u8>)]) -> [u8; 32],
    ) -> Option<([u8; 32], Xattrs)> {
        let found = self.lookup_near_uncounted(path, id, guess, header);
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// [`HashCache::lookup_near`] without counting a hit: for callers that look up many
    /// files in parallel and add their hits once ([`HashCache::add_hits`]), so the
    /// threads do not all write one shared counter per file.
    pub fn lookup_near_uncounted(
        &self,
        path: &str,
        id: &StatId,
        guess: usize,
        header: impl FnOnce(&[(String, Vec<u8>)]) -> [u8; 32],
    ) -> Option<([u8; 32], Xattrs)> {
        self.with_entry(path, id, guess, |owned, xattrs, find| {
            let digest = find(&header(xattrs))?;
            Some((digest, owned()))
        })
    }

    /// Counts `n` digests answered by [`HashCache::lookup_near_uncounted`].
    pub fn add_hits(&self, n: u64) {
        if n > 0 {
            self.hits.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The digest remembered for `path` at identity `id` under header digest `header`.
    pub fn digest(&self, path: &str, id: &StatId, header: &[u8; 32]) -> Option<[u8; 32]> {
        let found = self.with_entry(path, id, 0, |_, _, find| find(header));
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// How many digests were answered from the memo since it was opened.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Remembers that `path`, read at identity `id` (from `fstat` of the descriptor that
    /// was read) with `xattrs`, hashed to `digest` under header digest `header`. Ignored
    /// when its timestamps are too recent to be trusted later (see the module docs).
    pub fn insert(
        &self,
        path: &str,
        id: StatId,
        xattrs: Vec<(String, Vec<u8>)>,
        header: [u8; 32],
        digest: [u8; 32],
    ) {
        if !id.settled_before(self.settle_limit) {
            return;
        }
        let mut fresh = write(&self.fresh);
        // Under the write lock: a lookup that sees the flag waits for this insert.
        self.has_fresh.store(true, Ordering::Release);
        let slot = fresh.entry(path.to_string()).or_insert_with(|| {
            // Start from what the file remembered, so its other variants are kept.
            self.loaded
                .find(path)
                .and_then(|i| self.loaded.view(i))
                .map(|v| v.to_cached())
                .unwrap_or_else(|| CachedFile {
                    id,
                    xattrs: xattrs.clone(),
                    digests: Vec::new(),
                })
        });
        if slot.id != id || slot.xattrs != xattrs {
            *slot = CachedFile {
                id,
                xattrs,
                digests: Vec::new(),
            };
        }
        if slot.digests.first() == Some(&(header, digest)) {
            return;
        }
        slot.digests.retain(|(h, _)| *h != header);
        slot.digests.insert(0, (header, digest));
        slot.digests.truncate(MAX_VARIANTS);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the memo if it learnt something, keeping only the paths `keep` accepts (the
    /// files of this build's context). Best effort: returns whether it was written.
    pub fn save(&self, keep: impl Fn(&str) -> bool) -> bool {
        let fresh = read(&self.fresh);
        let mut paths: Vec<&str> = self
            .loaded_paths()
            .filter_map(|i| std::str::from_utf8(self.loaded.path(i)).ok())
            .chain(fresh.keys().map(String::as_str))
            .filter(|p| keep(p))
            .collect();
        paths.sort_unstable();
        paths.dedup();
        self.write_paths(&fresh, paths)
    }

    /// Writes the memo if it learnt something, with the remembered ones of `paths` (the
    /// files of this build's context, in walk order, so the next build's lookups in that
    /// order find each record next to the previous one). Best effort: returns whether it
    /// was written.
    pub fn save_in_order<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> bool {
        let fresh = read(&self.fresh);
        self.write_paths(&fresh, paths)
    }

    fn write_paths<'a>(
        &self,
        fresh: &HashMap<String, CachedFile>,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        if !self.dirty.load(Ordering::Relaxed) {
            return false;
        }
        let mut body = Vec::with_capacity(self.loaded.bytes.len() + fresh.len() * 160);
        put_u64(&mut body, 0);
        let mut n = 0u64;
        let mut cursor = 0;
        for path in paths {
            if let Some(f) = fresh.get(path) {
                encode_record(&mut body, path, f);
                n += 1;
            } else if let Some(i) = self.loaded.find_near(path, cursor) {
                // Unchanged records are copied as they were read.
                cursor = i + 1;
                body.extend_from_slice(self.loaded.raw(i));
                n += 1;
            }
        }
        body[..8].copy_from_slice(&n.to_le_bytes());
        let bytes = seal(body);
        let Some(dir) = self.path.parent() else {
            return false;
        };
        if std::fs::create_dir_all(dir).is_err() {
            return false;
        }
        let Ok(mut tmp) = tempfile::Builder::new()
            .prefix(".hash-cache-")
            .tempfile_in(dir)
        else {
            return false;
        };
        use std::io::Write;
        if tmp.write_all(&bytes).is_err() || tmp.persist(&self.path).is_err() {
            return false;
        }
        self.dirty.store(false, Ordering::Relaxed);
        true
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn encode_record(body: &mut Vec<u8>, path: &str, f: &CachedFile) {
    put_bytes(body, path.as_bytes());
    let id = &f.id;
    for v in [
        id.dev,
        id.ino,
        id.size,
        id.mtime.0 as u64,
        id.mtime.1 as u64,
        id.ctime.0 as u64,
        id.ctime.1 as u64,
        u64::from(id.mode),
        u64::from(id.uid),
        u64::from(id.gid),
        id.nlink,
    ] {
        put_u64(body, v);
    }
    put_u64(body, f.xattrs.len() as u64);
    for (name, value) in &f.xattrs {
        put_bytes(body, name.as_bytes());
        put_bytes(body, value);
    }
    put_u64(body, f.digests.len() as u64);
    for (h, d) in &f.digests {
        body.extend_from_slice(h);
        body.extend_from_slice(d);
    }
}

/// `MAGIC`, the body, then the sha256 of the body.
fn seal(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Sha256::digest(&body));
    out
}

/// The file of `entries` (a record count, then each record).
#[cfg(test)]
fn encode(entries: &HashMap<String, CachedFile>) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * 160);
    put_u64(&mut body, entries.len() as u64);
    for (path, f) in entries {
        encode_record(&mut body, path, f);
    }
    seal(body)
}

/// A cursor over the body; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?)
            .ok()
            .filter(|n| *n <= self.buf.len())
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
}

/// One record, borrowed from the body.
struct Record<'a> {
    path: &'a [u8],
    id: StatId,
    xattrs: &'a [u8],
    digests: &'a [u8],
}

/// Extended attributes as [`encode_record`] writes them.
fn read_xattrs(r: &mut Reader<'_>) -> Option<Xattrs> {
    let nx = r.len()?;
    let mut xattrs = Vec::with_capacity(nx.min(64));
    for _ in 0..nx {
        let name = std::str::from_utf8(r.bytes()?).ok()?.to_string();
        xattrs.push((name, r.bytes()?.to_vec()));
    }
    Some(xattrs)
}

/// Reads and checks one record: a path in UTF-8, an identity whose mode and owner fit,
/// well-formed extended attributes and at most [`MAX_VARIANTS`] digest pairs.
fn read_record<'a>(r: &mut Reader<'a>) -> Option<Record<'a>> {
    let path = r.bytes()?;
    std::str::from_utf8(path).ok()?;
    let mut v = [0u64; 11];
    for slot in &mut v {
        *slot = r.u64()?;
    }
    let id = StatId {
        dev: v[0],
        ino: v[1],
        size: v[2],
        mtime: (v[3] as i64, v[4] as i64),
        ctime: (v[5] as i64, v[6] as i64),
        mode: u32::try_from(v[7]).ok()?,
        uid: u32::try_from(v[8]).ok()?,
        gid: u32::try_from(v[9]).ok()?,
        nlink: v[10],
    };
    let xattrs_start = r.buf;
    let nx = r.len()?;
    for _ in 0..nx {
        std::str::from_utf8(r.bytes()?).ok()?;
        r.bytes()?;
    }
    let xattrs = &xattrs_start[..xattrs_start.len() - r.buf.len()];
    let nd = r.len()?;
    if nd > MAX_VARIANTS {
        return None;
    }
    let digests = r.take(nd * 64)?;
    Some(Record {
        path,
        id,
        xattrs,
        digests,
    })
}

/// The records of an intact memo file; `None` when anything about it is off.
fn decode(bytes: Vec<u8>) -> Option<Loaded> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let split = rest.len().checked_sub(32)?;
    let (body, sum) = rest.split_at(split);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    // Offsets are kept as u32.
    u32::try_from(body.len()).ok()?;
    let end = MAGIC.len() + split;
    let mut r = Reader { buf: body };
    let n = r.len()?;
    let mut records = Vec::with_capacity(n.min(body.len() / 100));
    for _ in 0..n {
        let start = end - r.buf.len();
        let rec = read_record(&mut r)?;
        let path_start = rec.path.as_ptr() as usize - bytes.as_ptr() as usize;
        records.push((start as u32, path_start as u32, rec.path.len() as u32));
    }
    if !r.buf.is_empty() {
        return None;
    }
    Some(Loaded {
        bytes,
        end,
        records,
        table: std::sync::OnceLock::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_id(ino: u64) -> StatId {
        StatId {
            dev: 1,
            ino,
            size: 10,
            mtime: (1_000, 5),
            ctime: (1_000, 7),
            mode: 0o100644,
            uid: 0,
            gid: 0,
            nlink: 1,
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let cache = HashCache::open(dir.path(), ctx.path());
        assert!(cache.is_empty());
        let xattrs = vec![("user.a".to_string(), b"v".to_vec())];
        cache.insert("a/b", old_id(3), xattrs.clone(), [1; 32], [2; 32]);
        cache.insert("a/b", old_id(3), xattrs.clone(), [3; 32], [4; 32]);
        cache.insert("c", old_id(4), Vec::new(), [1; 32], [5; 32]);
        assert!(cache.save(|p| p != "c"));
        assert!(!cache.save(|_| true), "nothing new: not written again");

        let again = HashCache::open(dir.path(), ctx.path());
        assert_eq!(again.len(), 1);
        assert_eq!(again.digest("a/b", &old_id(3), &[1; 32]), Some([2; 32]));
        assert_eq!(again.digest("a/b", &old_id(3), &[3; 32]), Some([4; 32]));
        assert_eq!(again.digest("a/b", &old_id(3), &[9; 32]), None);
        assert_eq!(again.xattrs("a/b", &old_id(3)), Some(xattrs));
        let mut moved = old_id(3);
        moved.ctime.1 += 1;
        assert_eq!(again.digest("a/b", &moved, &[1; 32]), None);
        assert_eq!(again.xattrs("a/b", &moved), None);

        // A flipped byte anywhere: ignored.
        let mut bytes = std::fs::read(again.file()).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(again.file(), &bytes).unwrap();
        assert!(HashCache::open(dir.path(), ctx.path()).is_empty());
        bytes.truncate(mid);
        std::fs::write(again.file(), &bytes).unwrap();
        assert!(HashCache::open(dir.path(), ctx.path()).is_empty());
    }

    #[test]
    fn loaded_records_are_kept_shadowed_and_extended() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let cache = HashCache::open(dir.path(), ctx.path());
        let xattrs = vec![("user.a".to_string(), b"v".to_vec())];
        cache.insert("a", old_id(1), xattrs.clone(), [1; 32], [2; 32]);
        cache.insert("b", old_id(2), Vec::new(), [1; 32], [3; 32]);
        cache.insert("gone", old_id(3), Vec::new(), [1; 32], [4; 32]);
        assert!(cache.save(|_| true));

        let again = HashCache::open(dir.path(), ctx.path());
        assert_eq!(again.len(), 3);
        // Another variant of a loaded path keeps the loaded one.
        again.insert("a", old_id(1), xattrs.clone(), [5; 32], [6; 32]);
        // A changed file replaces its loaded record.
        again.insert("b", old_id(9), Vec::new(), [1; 32], [7; 32]);
        again.insert("new", old_id(4), Vec::new(), [1; 32], [8; 32]);
        assert_eq!(again.len(), 4);
        assert_eq!(again.digest("b", &old_id(2), &[1; 32]), None);
        assert_eq!(again.digest("b", &old_id(9), &[1; 32]), Some([7; 32]));
        assert!(again.save(|p| p != "gone"));

        let third = HashCache::open(dir.path(), ctx.path());
        assert_eq!(third.len(), 3);
        assert_eq!(third.digest("a", &old_id(1), &[1; 32]), Some([2; 32]));
        assert_eq!(third.digest("a", &old_id(1), &[5; 32]), Some([6; 32]));
        assert_eq!(third.xattrs("a", &old_id(1)), Some(xattrs));
        assert_eq!(third.digest("b", &old_id(2), &[1; 32]), None);
        assert_eq!(third.digest("b", &old_id(9), &[1; 32]), Some([7; 32]));
        assert_eq!(third.digest("new", &old_id(4), &[1; 32]), Some([8; 32]));
        assert_eq!(third.digest("gone", &old_id(3), &[1; 32]), None);
        let found = third.lookup("a", &old_id(1), |x| {
            assert_eq!(x.len(), 1);
            [5; 32]
        });
        assert_eq!(found.map(|f| f.0), Some([6; 32]));
        assert_eq!(third.hits(), 5);
    }

    #[test]
    fn saved_in_walk_order_and_found_by_guess_or_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let cache = HashCache::open(dir.path(), ctx.path());
        let order = ["a", "b/c", "b/d", "e"];
        for (i, p) in order.iter().enumerate().rev() {
            cache.insert(p, old_id(i as u64), Vec::new(), [1; 32], [i as u8; 32]);
        }
        // "x" is remembered but not in this walk: left out.
        cache.insert("x", old_id(9), Vec::new(), [1; 32], [9; 32]);
        assert!(cache.save_in_order(["", "a", "b", "b/c", "b/d", "e"]));
        let again = HashCache::open(dir.path(), ctx.path());
        let saved: Vec<&[u8]> = (0..again.loaded.records.len())
            .map(|i| again.loaded.path(i))
            .collect();
        assert_eq!(saved, order.map(str::as_bytes));
        for (i, p) in order.iter().enumerate() {
            let want = Some([i as u8; 32]);
            // The right guess, a wrong one, one past the end: the same answer.
            for guess in [i, (i + 1) % order.len(), 99] {
                let got = again.lookup_near(p, &old_id(i as u64), guess, |_| [1; 32]);
                assert_eq!(got.map(|g| g.0), want, "{p} guessed at {guess}");
            }
            // Another identity at the guessed record: a miss.
            assert!(again.lookup_near(p, &old_id(50), i, |_| [1; 32]).is_none());
        }
        assert!(again.lookup_near("x", &old_id(9), 0, |_| [1; 32]).is_none());
        assert!(again.lookup_near("b", &old_id(1), 1, |_| [1; 32]).is_none());
    }

    /// Whatever the body holds, a file with a right sum never panics the reader, and what
    /// it accepts reads back the same.
    #[test]
    fn any_body_with_a_right_sum_is_read_safely() {
        let mut entries = HashMap::new();
        for i in 0..5u64 {
            entries.insert(
                format!("d/f{i}"),
                CachedFile {
                    id: old_id(i),
                    xattrs: if i % 2 == 0 {
                        vec![("user.x".to_string(), vec![i as u8; 3])]
                    } else {
                        Vec::new()
                    },
                    digests: vec![([i as u8; 32], [7; 32])],
                },
            );
        }
        let good = encode(&entries);
        let body = &good[MAGIC.len()..good.len() - 32];
        let reseal = |body: &[u8]| seal(body.to_vec());
        assert!(decode(reseal(body)).is_some());
        let mut accepted = 0;
        for cut in 0..body.len() {
            // Truncated bodies (resealed, so only the structure can reject them).
            if let Some(l) = decode(reseal(&body[..cut])) {
                accepted += 1;
                for i in 0..l.records.len() {
                    l.view(i).unwrap();
                }
            }
            // Every byte changed in turn.
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = body.to_vec();
                b[cut] ^= flip;
                if let Some(l) = decode(reseal(&b)) {
                    for i in 0..l.records.len() {
                        let v = l.view(i).unwrap();
                        let _ = (v.xattrs(), v.digest(&[0; 32]), l.raw(i));
                    }
                }
            }
        }
        // Only the cut before any record (count 0 wrongly read) could pass: none do.
        assert_eq!(accepted, 0);
        // A bad sum, a short file, another magic: empty.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode(bad).is_none());
        assert!(decode(good[..10].to_vec()).is_none());
        assert!(decode(b"strata-hash-cache-v0\n".to_vec()).is_none());
    }

    #[test]
    fn fresh_timestamps_are_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HashCache::open(dir.path(), dir.path());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let mut id = old_id(1);
        id.ctime = (now.as_secs() as i64, 0);
        cache.insert("f", id, Vec::new(), [1; 32], [2; 32]);
        assert_eq!(cache.digest("f", &id, &[1; 32]), None);
        assert!(!cache.save(|_| true));
    }

    #[test]
    fn variants_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HashCache::open(dir.path(), dir.path());
        for h in 0..10u8 {
            cache.insert("f", old_id(1), Vec::new(), [h; 32], [h; 32]);
        }
        let entries = read(&cache.fresh);
        assert_eq!(entries["f"].digests.len(), MAX_VARIANTS);
        assert_eq!(entries["f"].digests[0], ([9; 32], [9; 32]));
    }
}
