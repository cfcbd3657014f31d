//! Refs: the store's only mutable state.
//!
//! A ref is a file `refs/<kind>/<encoded name>` holding `{"name": ..., "target": descriptor}`.
//! Updating one is a single atomic rename under the refs lock. Tag refs are mirrored into
//! `index.json` (rewritten atomically after every tag change) so OCI tools see the tags.
//!
//! File names: the name with every byte outside `[A-Za-z0-9_.-]` (and a leading `.`)
//! percent-encoded; names whose encoding would exceed 200 bytes are stored as `~` + the sha256
//! of the name. The name inside the file is authoritative.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsutil::{read_capped, read_capped_file, sync_dir, write_atomic};
use crate::media;
use crate::reference::Reference;
use crate::store::Store;

/// The OCI annotation naming a tag in an index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and Docker's) annotation carrying the full image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

const MAX_ENCODED: usize = 200;
const MAX_NAME: usize = 4096;

/// The kinds of refs; each is a GC root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    /// Image tags: a normalised reference -> an image manifest (or index).
    Tag,
    /// Build-cache entries: a cache key -> a cache record.
    Cache,
    /// Containers: an ID -> a container record.
    Container,
    /// Images without a tag (loaded by ID, like Docker's dangling images): the image ID's
    /// 64 hex digits -> its manifest.
    Untagged,
}

impl RefKind {
    /// Where `self` is in [`RefKind::ALL`].
    pub(crate) fn position(self) -> usize {
        match self {
            RefKind::Tag => 0,
            RefKind::Cache => 1,
            RefKind::Container => 2,
            RefKind::Untagged => 3,
        }
    }

    /// Every kind.
    pub const ALL: [RefKind; 4] = [
        RefKind::Tag,
        RefKind::Cache,
        RefKind::Container,
        RefKind::Untagged,
    ];

    /// The folder under `refs/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            RefKind::Tag => "tags",
            RefKind::Cache => "cache",
            RefKind::Container => "containers",
            RefKind::Untagged => "untagged",
        }
    }
}

/// One ref: its kind, name and target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    /// The kind.
    pub kind: RefKind,
    /// The name (a full normalised reference for tags).
    pub name: String,
    /// What it points at.
    pub target: Descriptor,
}

#[derive(Serialize, Deserialize)]
struct RefFile {
    name: String,
    target: Descriptor,
}

/// The file name a ref name is stored under.
pub(crate) fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_ENCODED {
        format!("~{}", Digest::of(name.as_bytes()).hex())
    } else {
        out
    }
}

fn validate(kind: RefKind, name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidRefName {
        kind: kind.dir_name(),
        name: name.chars().take(200).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.len() > MAX_NAME {
        return Err(bad("name longer than 4096 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("control characters in name"));
    }
    if kind == RefKind::Untagged && Digest::from_hex(name).is_err() {
        return Err(bad(
            "an untagged image ref is named by the image ID's 64 hex digits",
        ));
    }
    if kind == RefKind::Tag {
        match Reference::parse(name) {
            Ok(r) if r.to_string() == name => {}
            _ => return Err(bad("a tag ref is a full normalised image reference")),
        }
    }
    Ok(())
}

impl Store {
    fn ref_path(&self, kind: RefKind, name: &str) -> PathBuf {
        self.paths
            .refs
            .join(kind.dir_name())
            .join(encode_name(name))
    }

    /// Point a ref at a blob (which must be in the store).
    pub fn set_ref(&self, kind: RefKind, name: &str, target: &Descriptor) -> Result<()> {
        self.set_refs(&[Ref {
            kind,
            name: name.to_string(),
            target: target.clone(),
        }])
    }

    /// Point several refs at once under one lock; `index.json` is rewritten once. Each ref
    /// changes atomically; after a crash some of a batch may be updated and others not.
    pub fn set_refs(&self, refs: &[Ref]) -> Result<()> {
        for r in refs {
            validate(r.kind, &r.name)?;
        }
        let _lock = self.lock_refs(true)?;
        // Checked under the lock: GC sweeps while holding it, so a blob seen here stays.
        for r in refs {
            if !self.has_blob(&r.target.digest) {
                return Err(Error::BlobNotFound {
                    digest: r.target.digest,
                });
            }
        }
        let mut tags_changed = false;
        for r in refs {
            let body = serde_json::to_vec(&RefFile {
                name: r.name.clone(),
                target: r.target.clone(),
            })
            .map_err(|e| Error::json("ref", e))?;
            let path = self.ref_path(r.kind, &r.name);
            // Setting a ref to what it holds already only dates it (re-tagging the same image,
            // a rebuild that changed nothing): no write, no fsync, no index rewrite.
            if read_capped(&path, MAX_REF_FILE).is_ok_and(|old| old == body) && touch_file(&path)? {
                continue;
            }
            write_atomic(&self.paths.ingest, &path, &body)?;
            tags_changed |= r.kind == RefKind::Tag;
        }
        if tags_changed {
            self.write_index_locked()?;
        }
        Ok(())
    }

    /// Dates a ref now (its file's modification time, what [`Store::ref_modified`] reports)
    /// without changing it; returns whether it exists. The build cache dates a record this
    /// way on every hit, so `prune --keep-storage` evicts the least recently used first.
    ///
    /// Not synced to disk: when a ref was last used is advisory (a crash may lose the date,
    /// never the ref). Takes no lock: a ref replaced meanwhile is new anyway, and one removed
    /// meanwhile is reported as missing.
    pub fn touch_ref(&self, kind: RefKind, name: &str) -> Result<bool> {
        validate(kind, name)?;
        touch_file(&self.ref_path(kind, name))
    }

    /// Remove a ref; returns whether it existed.
    pub fn remove_ref(&self, kind: RefKind, name: &str) -> Result<bool> {
        let _lock = self.lock_refs(true)?;
        self.remove_ref_locked(kind, name)
    }

    pub(crate) fn remove_ref_locked(&self, kind: RefKind, name: &str) -> Result<bool> {
        let path = self.ref_path(kind, name);
        let existed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("remove", path, e)),
        };
        if existed {
            sync_dir(&self.paths.refs.join(kind.dir_name()))?;
            if kind == RefKind::Tag {
                self.write_index_locked()?;
            }
        }
        Ok(existed)
    }

    /// The target of a ref, if it exists.
    ///
    /// One read of one file, without the refs lock: a ref changes by an atomic rename, so a
    /// reader sees the old target or the new one, never a mix.
    pub fn get_ref(&self, kind: RefKind, name: &str) -> Result<Option<Descriptor>> {
        Ok(self.read_ref(kind, name, false)?.map(|(target, _)| target))
    }

    /// [`Store::get_ref`] and when the ref was last set or touched (its file's modification
    /// time, from the file that was read: one `fstat` more, no second lookup).
    pub fn get_ref_dated(
        &self,
        kind: RefKind,
        name: &str,
    ) -> Result<Option<(Descriptor, std::time::SystemTime)>> {
        Ok(self
            .read_ref(kind, name, true)?
            .and_then(|(target, modified)| modified.map(|m| (target, m))))
    }

    fn read_ref(
        &self,
        kind: RefKind,
        name: &str,
        dated: bool,
    ) -> Result<Option<(Descriptor, Option<std::time::SystemTime>)>> {
        let path = self.ref_path(kind, name);
        let dir = &self.paths.ref_dirs[kind.position()];
        let file = match dir.open(&encode_name(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        let modified = if dated {
            let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
            Some(meta.modified().map_err(|e| Error::io("stat", &path, e))?)
        } else {
            None
        };
        let bytes = read_capped_file(file, &path, MAX_REF_FILE)?;
        let file = parse_ref_file(&path, &bytes)?;
        Ok((file.name == name).then_some((file.target, modified)))
    }

    /// When a ref was last set (its file's modification time), if it exists: what
    /// `docker inspect` shows as a tag's `LastTagTime`.
    pub fn ref_modified(&self, kind: RefKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        Ok(self
            .get_ref_dated(kind, name)?
            .map(|(_, modified)| modified))
    }

    /// Every ref of one kind, sorted by name.
    pub fn list_refs(&self, kind: RefKind) -> Result<Vec<Ref>> {
        let _lock = self.lock_refs(false)?;
        self.list_refs_locked(kind)
    }

    pub(crate) fn list_refs_locked(&self, kind: RefKind) -> Result<Vec<Ref>> {
        let dir = self.paths.refs.join(kind.dir_name());
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let file = read_ref_file(&entry.path())?;
            out.push(Ref {
                kind,
                name: file.name,
                target: file.target,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every ref of every kind.
    pub fn all_refs(&self) -> Result<Vec<Ref>> {
        let _lock = self.lock_refs(false)?;
        let mut out = Vec::new();
        for kind in RefKind::ALL {
            out.extend(self.list_refs_locked(kind)?);
        }
        Ok(out)
    }

    /// The `index.json` the tag refs call for (deterministic: sorted by name, sorted keys).
    pub(crate) fn index_json_for(tags: &[Ref]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = tags
            .iter()
            .map(|r| {
                serde_json::json!({
                    "mediaType": r.target.media_type,
                    "digest": r.target.digest.to_string(),
                    "size": r.target.size,
                    "annotations": {
                        ANNOTATION_REF_NAME: r.name,
                        ANNOTATION_IMAGE_NAME: r.name,
                    },
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        });
        serde_json::to_vec(&index).expect("a JSON value always serialises")
    }

    pub(crate) fn write_index_locked(&self) -> Result<()> {
        let tags = self.list_refs_locked(RefKind::Tag)?;
        write_atomic(
            &self.paths.ingest,
            &self.paths.index_json(),
            &Self::index_json_for(&tags),
        )
    }
}

/// The largest ref file read (a ref is a name and a descriptor).
const MAX_REF_FILE: u64 = 64 << 10;

fn read_ref_file(path: &std::path::Path) -> Result<RefFile> {
    parse_ref_file(path, &read_capped(path, MAX_REF_FILE)?)
}

fn parse_ref_file(path: &std::path::Path, bytes: &[u8]) -> Result<RefFile> {
    serde_json::from_slice(bytes).map_err(|e| Error::json(format!("ref {}", path.display()), e))
}

/// Sets `path`'s modification (and access) time to now, in one `utimensat`; returns whether
/// the file exists.
fn touch_file(path: &std::path::Path) -> Result<bool> {
    let now = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
    };
    match rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &now,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(Error::io("set the time of", path, e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_kinds_position_is_its_place_in_all() {
        for (i, kind) in RefKind::ALL.iter().enumerate() {
            assert_eq!(kind.position(), i, "{kind:?}");
        }
    }

    #[test]
    fn names_encode_to_safe_file_names() {
        assert_eq!(encode_name("abc_1.2-x"), "abc_1.2-x");
        assert_eq!(
            encode_name("docker.io/library/busybox:latest"),
            "docker.io%2Flibrary%2Fbusybox%3Alatest"
        );
        assert_eq!(encode_name(".."), "%2E.");
        assert_eq!(encode_name("%"), "%25");
        let long = "a/".repeat(200);
        let e = encode_name(&long);
        assert!(e.starts_with('~') && e.len() == 65);
    }

    proptest! {
        #[test]
        fn encoded_names_are_single_safe_components_and_distinct(
            a in "\\PC{1,80}", b in "\\PC{1,80}"
        ) {
            let ea = encode_name(&a);
            prop_assert!(!ea.contains('/') && ea != "." && ea != ".." && !ea.is_empty());
            prop_assert!(ea.len() <= 255);
            if a != b { prop_assert_ne!(ea, encode_name(&b)); }
        }
    }

    #[test]
    fn refs_round_trip_and_tags_mirror_into_index_json() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let blob = s.write_blob(b"{}").unwrap();
        let target = Descriptor::new(media::OCI_MANIFEST, blob.digest, blob.size);
        let name = "docker.io/library/busybox:latest";
        s.set_ref(RefKind::Tag, name, &target).unwrap();
        s.set_ref(RefKind::Cache, "k1", &target).unwrap();
        assert_eq!(s.get_ref(RefKind::Tag, name).unwrap(), Some(target.clone()));
        let set_at = s.ref_modified(RefKind::Tag, name).unwrap().unwrap();
        assert!(set_at.elapsed().unwrap() < std::time::Duration::from_secs(600));
        assert_eq!(
            s.ref_modified(RefKind::Tag, "docker.io/library/x:1")
                .unwrap(),
            None
        );
        assert_eq!(s.list_refs(RefKind::Cache).unwrap().len(), 1);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(s.root().join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"][ANNOTATION_REF_NAME],
            name
        );
        assert!(s.remove_ref(RefKind::Tag, name).unwrap());
        assert!(!s.remove_ref(RefKind::Tag, name).unwrap());
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(s.root().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn setting_a_ref_to_its_target_again_only_dates_it_and_touch_dates_it_too() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let blob = s.write_blob(b"{}").unwrap();
        let target = Descriptor::new(media::OCI_MANIFEST, blob.digest, blob.size);
        let name = "docker.io/library/busybox:latest";
        s.set_ref(RefKind::Tag, name, &target).unwrap();
        let path = s.ref_path(RefKind::Tag, name);
        let index = s.root().join("index.json");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let backdate = |p: &std::path::Path| {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap()
        };
        backdate(&path);
        backdate(&index);
        let (inode, index_inode) = (
            fs::metadata(&path).unwrap().ino(),
            fs::metadata(&index).unwrap().ino(),
        );
        s.set_ref(RefKind::Tag, name, &target).unwrap();
        // Not rewritten (same file, index untouched), but dated now.
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(fs::metadata(&index).unwrap().ino(), index_inode);
        assert_eq!(fs::metadata(&index).unwrap().modified().unwrap(), old);
        let dated = s.ref_modified(RefKind::Tag, name).unwrap().unwrap();
        assert!(dated > old);
        // A new target is written (a new file) and mirrored into the index.
        let other = s.write_blob(b"{\"x\":1}").unwrap();
        let other = Descriptor::new(media::OCI_MANIFEST, other.digest, other.size);
        s.set_ref(RefKind::Tag, name, &other).unwrap();
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(s.get_ref(RefKind::Tag, name).unwrap(), Some(other.clone()));
        assert!(fs::read_to_string(&index)
            .unwrap()
            .contains(&other.digest.to_string()));
        // touch_ref dates without rewriting; a missing ref is reported as such.
        s.set_ref(RefKind::Cache, "k1", &target).unwrap();
        let cache = s.ref_path(RefKind::Cache, "k1");
        backdate(&cache);
        let inode = fs::metadata(&cache).unwrap().ino();
        assert!(s.touch_ref(RefKind::Cache, "k1").unwrap());
        assert_eq!(fs::metadata(&cache).unwrap().ino(), inode);
        assert!(s.ref_modified(RefKind::Cache, "k1").unwrap().unwrap() > old);
        assert!(!s.touch_ref(RefKind::Cache, "k2").unwrap());
        assert!(s.touch_ref(RefKind::Cache, "").is_err());
    }

    #[test]
    fn bad_ref_names_and_missing_targets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let blob = s.write_blob(b"x").unwrap();
        let target = Descriptor::new(media::OCI_MANIFEST, blob.digest, blob.size);
        assert!(s.set_ref(RefKind::Tag, "busybox", &target).is_err());
        assert!(s.set_ref(RefKind::Cache, "", &target).is_err());
        assert!(s.set_ref(RefKind::Cache, "a\nb", &target).is_err());
        let missing = Descriptor::new(media::OCI_MANIFEST, Digest::of(b"nope"), 4);
        assert!(matches!(
            s.set_ref(RefKind::Cache, "k", &missing),
            Err(Error::BlobNotFound { .. })
        ));
    }
}
