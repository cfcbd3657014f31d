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
//! a build that learnt something, keeping only the paths of that build's context walk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use sha2::{Digest as _, Sha256};

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
    /// Read by every file of a cached `COPY` in parallel, written only on a miss.
    entries: RwLock<HashMap<String, CachedFile>>,
    dirty: AtomicBool,
    hits: AtomicU64,
    /// Entries whose timestamps are not older than this are not remembered.
    settle_limit: (i64, i64),
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
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        let now = std::time::SystemTime::now()
            .checked_sub(settle)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        HashCache {
            path,
            entries: RwLock::new(entries),
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
        read(&self.entries).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The extended attributes remembered for `path` if its identity is still `id`.
    pub fn xattrs(&self, path: &str, id: &StatId) -> Option<Vec<(String, Vec<u8>)>> {
        let entries = read(&self.entries);
        let f = entries.get(path)?;
        (f.id == *id).then(|| f.xattrs.clone())
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
        let entries = read(&self.entries);
        let f = entries.get(path)?;
        if f.id != *id {
            return None;
        }
        let wanted = header(&f.xattrs);
        let digest = f
            .digests
            .iter()
            .find(|(h, _)| *h == wanted)
            .map(|(_, d)| *d)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some((digest, f.xattrs.clone()))
    }

    /// The digest remembered for `path` at identity `id` under header digest `header`.
    pub fn digest(&self, path: &str, id: &StatId, header: &[u8; 32]) -> Option<[u8; 32]> {
        let entries = read(&self.entries);
        let f = entries.get(path)?;
        if f.id != *id {
            return None;
        }
        let found = f.digests.iter().find(|(h, _)| h == header).map(|(_, d)| *d);
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
        let mut entries = write(&self.entries);
        let slot = entries
            .entry(path.to_string())
            .or_insert_with(|| CachedFile {
                id,
                xattrs: xattrs.clone(),
                digests: Vec::new(),
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
        if !self.dirty.load(Ordering::Relaxed) {
            return false;
        }
        let bytes = {
            let mut entries = write(&self.entries);
            entries.retain(|p, _| keep(p));
            encode(&entries)
        };
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

/// `MAGIC`, the body, then the sha256 of the body.
fn encode(entries: &HashMap<String, CachedFile>) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * 160);
    put_u64(&mut body, entries.len() as u64);
    for (path, f) in entries {
        put_bytes(&mut body, path.as_bytes());
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
            put_u64(&mut body, v);
        }
        put_u64(&mut body, f.xattrs.len() as u64);
        for (name, value) in &f.xattrs {
            put_bytes(&mut body, name.as_bytes());
            put_bytes(&mut body, value);
        }
        put_u64(&mut body, f.digests.len() as u64);
        for (h, d) in &f.digests {
            body.extend_from_slice(h);
            body.extend_from_slice(d);
        }
    }
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Sha256::digest(&body));
    out
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

    fn digest(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }
}

fn decode(bytes: &[u8]) -> Option<HashMap<String, CachedFile>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let split = rest.len().checked_sub(32)?;
    let (body, sum) = rest.split_at(split);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader { buf: body };
    let n = r.len()?;
    let mut out = HashMap::with_capacity(n);
    for _ in 0..n {
        let path = std::str::from_utf8(r.bytes()?).ok()?.to_string();
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
        let nx = r.len()?;
        let mut xattrs = Vec::with_capacity(nx);
        for _ in 0..nx {
            let name = std::str::from_utf8(r.bytes()?).ok()?.to_string();
            xattrs.push((name, r.bytes()?.to_vec()));
        }
        let nd = r.len()?;
        let mut digests = Vec::with_capacity(nd.min(MAX_VARIANTS));
        for _ in 0..nd {
            digests.push((r.digest()?, r.digest()?));
        }
        out.insert(
            path,
            CachedFile {
                id,
                xattrs,
                digests,
            },
        );
    }
    r.buf.is_empty().then_some(out)
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
        let entries = read(&cache.entries);
        assert_eq!(entries["f"].digests.len(), MAX_VARIANTS);
        assert_eq!(entries["f"].digests[0], ([9; 32], [9; 32]));
    }
}
