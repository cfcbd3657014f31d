//! The store handle: its layout on disk, blobs, and locking.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blob::{BlobInfo, BlobWriter};
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::fsutil::{create_private_dir, read_capped_file, write_atomic};
use crate::lock::{lock, Lease, LockGuard, LockKind};

/// The largest JSON blob (manifest, index, config, record) the store will parse.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const EMPTY_INDEX: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

/// Where everything lives under a store root.
#[derive(Debug)]
pub(crate) struct Paths {
    pub root: PathBuf,
    pub blobs: PathBuf,
    pub refs: PathBuf,
    pub diffids: PathBuf,
    pub sources: PathBuf,
    pub ingest: PathBuf,
    pub locks: PathBuf,
    /// `blobs` opened for reads relative to it.
    pub blobs_dir: crate::dirfd::DirHandle,
    /// `refs/<kind>` opened for reads relative to them, in [`crate::RefKind::ALL`] order.
    pub ref_dirs: [crate::dirfd::DirHandle; 4],
}

impl Paths {
    fn new(root: &Path) -> Paths {
        let refs = root.join("refs");
        let blobs = root.join("blobs").join("sha256");
        Paths {
            root: root.to_path_buf(),
            blobs_dir: crate::dirfd::DirHandle::new(blobs.clone()),
            blobs,
            ref_dirs: crate::refs::RefKind::ALL
                .map(|kind| crate::dirfd::DirHandle::new(refs.join(kind.dir_name()))),
            refs,
            diffids: root.join("diffids"),
            sources: root.join("sources"),
            ingest: root.join("ingest"),
            locks: root.join("locks"),
        }
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn index_json(&self) -> PathBuf {
        self.root.join("index.json")
    }
}

/// A content-addressed store rooted at a folder that is itself a valid OCI image layout.
///
/// ```text
/// <root>/oci-layout, index.json, blobs/sha256/<hex>   the OCI image layout (index.json lists tags)
/// <root>/refs/{tags,cache,containers,untagged}/<n>   the only mutable state: one file per ref
/// <root>/diffids/<diffID hex>/<blob hex>               layer records: which blobs hold a diffID
/// <root>/sources/<blob hex>/<repository>               registry repositories known to hold a blob
/// <root>/ingest/                                       temp files of blobs being written
/// <root>/locks/{gc,refs}.lock                          the store-wide locks
/// ```
///
/// Cloning is cheap; clones share the root. Every method takes the locks it needs.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) paths: Arc<Paths>,
}

impl Store {
    /// Open the store at `root`, creating the layout if it does not exist yet.
    pub fn open(root: &Path) -> Result<Store> {
        let paths = Paths::new(root);
        for dir in [
            &paths.root,
            &paths.blobs,
            &paths.diffids,
            &paths.sources,
            &paths.ingest,
            &paths.locks,
        ] {
            create_private_dir(dir)?;
        }
        for kind in crate::refs::RefKind::ALL {
            create_private_dir(&paths.refs.join(kind.dir_name()))?;
        }
        let store = Store {
            paths: Arc::new(paths),
        };
        let layout = store.paths.root.join("oci-layout");
        let index = store.paths.index_json();
        if !layout.exists() || !index.exists() {
            let _refs = store.lock_refs(true)?;
            if !layout.exists() {
                write_atomic(&store.paths.ingest, &layout, OCI_LAYOUT)?;
            }
            if !index.exists() {
                write_atomic(&store.paths.ingest, &index, EMPTY_INDEX)?;
            }
        }
        Ok(store)
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.paths.root
    }

    /// Hold the store's content against garbage collection (see [`Lease`]).
    pub fn lease(&self) -> Result<Lease> {
        Ok(Lease::new(lock(&self.paths.locks, LockKind::Gc, false)?))
    }

    pub(crate) fn lock_gc_exclusive(&self) -> Result<LockGuard> {
        lock(&self.paths.locks, LockKind::Gc, true)
    }

    pub(crate) fn lock_refs(&self, exclusive: bool) -> Result<LockGuard> {
        lock(&self.paths.locks, LockKind::Refs, exclusive)
    }

    /// The path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.paths.blob(digest)
    }

    /// Whether the store holds a blob.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.paths.blobs_dir.is_file(&digest.hex())
    }

    /// The size of a blob, or `None` if the store does not have it.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.paths.blob(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Open a blob for reading (unverified: see [`Store::verify_blob`] and
    /// [`Store::open_layer`]).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.paths.blob(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound { digest: *digest },
            _ => Error::io("open", path, e),
        })
    }

    /// Read a small blob whole, verifying its digest; refuses blobs over [`MAX_JSON_BLOB`].
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.paths.blob(digest);
        let file = match self.paths.blobs_dir.open(&digest.hex()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound { digest: *digest })
            }
            Err(e) => return Err(Error::io("open", path, e)),
        };
        let bytes = read_capped_file(file, &path, MAX_JSON_BLOB)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", path.display()),
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Hash a stored blob and check it against its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<()> {
        let file = self.open_blob(digest)?;
        let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, file));
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| Error::io("read", self.paths.blob(digest), e))?;
        let (actual, _, _) = reader.finish();
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", self.paths.blob(digest).display()),
                expected: *digest,
                actual,
            });
        }
        Ok(())
    }

    /// Start writing a blob whose digest is computed as it is written.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(self.paths.clone(), self.lease()?, None, None)
    }

    /// Start writing a blob that must have `digest` (and `size`, when given); `commit` fails
    /// and leaves nothing if it does not.
    pub fn blob_writer_expecting(&self, digest: Digest, size: Option<u64>) -> Result<BlobWriter> {
        BlobWriter::new(self.paths.clone(), self.lease()?, Some(digest), size)
    }

    /// Store a small blob from memory.
    ///
    /// A blob the store has already is not written again (re-tagging the same image writes
    /// nothing): its digest is known before any byte is written.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<BlobInfo> {
        let digest = Digest::of(bytes);
        {
            // Under a lease, so GC cannot be removing the blob as we find it.
            let _lease = self.lease()?;
            if self.has_blob(&digest) {
                return Ok(BlobInfo {
                    digest,
                    size: bytes.len() as u64,
                    existed: true,
                });
            }
        }
        let mut w = self.blob_writer_expecting(digest, Some(bytes.len() as u64))?;
        io::Write::write_all(&mut w, bytes).map_err(|e| Error::stream("write blob", e))?;
        w.commit()
    }

    /// Copy a stream into the store as one blob.
    pub fn ingest(&self, mut reader: impl Read, expected: Option<Digest>) -> Result<BlobInfo> {
        let mut w = BlobWriter::new(self.paths.clone(), self.lease()?, expected, None)?;
        io::copy(&mut reader, &mut w).map_err(|e| Error::stream("ingest blob", e))?;
        w.commit()
    }

    /// Every blob file in the store (names that are not digests are skipped).
    pub(crate) fn list_blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        let entries =
            fs::read_dir(&self.paths.blobs).map_err(|e| Error::io("list", &self.paths.blobs, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.paths.blobs, e))?;
            let name = entry.file_name();
            let Some(d) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) else {
                continue;
            };
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((d, len));
        }
        out.sort();
        Ok(out)
    }

    /// Remove a blob (callers hold the GC lock exclusively).
    pub(crate) fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.paths.blob(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A fresh store in a temporary folder (for the crate's unit tests).
    pub(crate) fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("store")).unwrap();
        (dir, s)
    }

    #[test]
    fn open_lays_down_an_oci_layout() {
        let (_d, s) = store();
        let layout = fs::read_to_string(s.root().join("oci-layout")).unwrap();
        assert!(layout.contains("1.0.0"));
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(s.root().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert!(s.root().join("blobs/sha256").is_dir());
        // Opening again is harmless.
        Store::open(s.root()).unwrap();
    }

    #[test]
    fn blobs_are_written_once_and_verified() {
        let (_d, s) = store();
        let a = s.write_blob(b"hello").unwrap();
        assert!(!a.existed);
        assert_eq!(a.digest, Digest::of(b"hello"));
        assert_eq!(s.read_blob(&a.digest).unwrap(), b"hello");
        let again = s.write_blob(b"hello").unwrap();
        assert!(again.existed);
        s.verify_blob(&a.digest).unwrap();
        assert!(fs::read_dir(&s.paths.ingest).unwrap().next().is_none());
    }

    #[test]
    fn a_mismatching_blob_leaves_nothing() {
        let (_d, s) = store();
        let wrong = Digest::of(b"other");
        let mut w = s.blob_writer_expecting(wrong, None).unwrap();
        w.write_all(b"hello").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.has_blob(&wrong));
        assert!(!s.has_blob(&Digest::of(b"hello")));
        assert!(fs::read_dir(&s.paths.ingest).unwrap().next().is_none());

        let mut w = s
            .blob_writer_expecting(Digest::of(b"hello"), Some(3))
            .unwrap();
        assert!(w.write_all(b"hello").is_err());
        drop(w);
        assert!(fs::read_dir(&s.paths.ingest).unwrap().next().is_none());
    }

    #[test]
    fn large_blobs_go_through_the_writer_thread() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        let info = s.ingest(&data[..], Some(Digest::of(&data))).unwrap();
        assert_eq!(info.size, data.len() as u64);
        assert_eq!(fs::read(s.blob_path(&info.digest)).unwrap(), data);
    }

    #[test]
    fn a_corrupted_byte_is_caught() {
        let (_d, s) = store();
        let data = vec![7u8; 100_000];
        let info = s.write_blob(&data).unwrap();
        let path = s.blob_path(&info.digest);
        for at in [0usize, 50_000, 99_999] {
            let mut bytes = data.clone();
            bytes[at] ^= 1;
            fs::write(&path, &bytes).unwrap();
            assert!(s.verify_blob(&info.digest).is_err());
            assert!(s.read_blob(&info.digest).is_err());
        }
    }

    #[test]
    fn concurrent_writers_of_one_blob_are_safe() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 13) as u8).collect();
        let digest = Digest::of(&data);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let s = s.clone();
                let data = &data;
                scope.spawn(move || s.ingest(&data[..], Some(digest)).unwrap());
            }
        });
        s.verify_blob(&digest).unwrap();
        assert!(fs::read_dir(&s.paths.ingest).unwrap().next().is_none());
    }
}
