//! The engine: one store and its snapshotter (opened when first needed).
//!
//! The store keeps content (blobs, refs, images); the snapshotter keeps unpacked layers as
//! overlay2 folders under `<root>/overlay` (or `<root>/vfs`). They meet here: committed
//! snapshots are named by the chainID (hex) of the layers below and including them, so an
//! image's layers are unpacked once and shared by every image and build step on the same
//! base. [`Engine::ensure_chain`] unpacks what is missing; [`Engine::prune`] runs the store's
//! garbage collection and then removes the committed snapshots no ref reaches any more.
//!
//! Beside those, the builder keeps its own state under `<root>/builder/`: `cache-mounts/`
//! (`RUN --mount=type=cache` folders), `last/` (the inputs of the last build of every stage,
//! to explain cache misses; `last/files/` the per-file lists of copied sources), `hash-memo/` (what a `COPY --from` of an immutable layer stack
//! hashed to), `hash-cache/` (the digests of build context files by their `lstat` identity,
//! [`crate::context::hashcache`]) and `logs/` (every step's full output).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use strata_overlay::{Driver, LayerSource, Snapshotter, UnpackOptions};
use strata_store::{
    chain_ids, Descriptor, Digest, GcOptions, GcReport, Image, Ref, RefKind, Store,
};

use crate::cache::{self, CacheEntry};
use crate::Error;

/// A layer of a stack: its blob in the store and its diffID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// The stored blob (any compression).
    pub blob: Descriptor,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

impl LayerRef {
    /// The layers of `image`, base first.
    pub fn of_image(image: &Image) -> Vec<LayerRef> {
        image
            .layers
            .iter()
            .zip(&image.diff_ids)
            .map(|(blob, diff_id)| LayerRef {
                blob: blob.clone(),
                diff_id: *diff_id,
            })
            .collect()
    }
}

/// A read-only mounted view of a layer stack, unmounted and removed on drop.
#[derive(Debug)]
pub struct View<'a> {
    engine: &'a Engine,
    key: Option<String>,
    path: PathBuf,
}

impl View<'_> {
    /// Where the stack's files are (an empty folder for an empty stack).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        match &self.key {
            Some(key) => {
                if let Ok(snapshotter) = self.engine.snapshotter() {
                    let _ = snapshotter.unmount(key);
                    let _ = snapshotter.remove(key);
                }
            }
            None => {
                let _ = std::fs::remove_dir(&self.path);
            }
        }
    }
}

/// The snapshot name of the stack `diff_ids` (its chainID in hex), `None` when empty.
pub fn chain_name(diff_ids: &[Digest]) -> Option<String> {
    chain_ids(diff_ids).last().map(Digest::hex)
}

/// Options of [`Engine::prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Remove the build cache too: cache records, `RUN --mount=type=cache` folders and the
    /// records of last builds (`strata builder prune`, `strata prune --cache`).
    pub cache: bool,
    /// Without `cache`: evict cache records, least recently used first, until the build
    /// cache (the blobs the remaining records reach, each once: `system df`'s Build Cache
    /// SIZE) is at most this many bytes. Cache mounts and last-build records stay.
    pub keep_storage: Option<u64>,
}

/// What [`Engine::prune`] removed (or would remove).
#[derive(Debug, Default)]
pub struct PruneReport {
    /// The store's part: blobs and temp files.
    pub gc: GcReport,
    /// Cache records dropped (their refs).
    pub cache_records: usize,
    /// The records dropped, least recently used first.
    pub records: Vec<CacheEntry>,
    /// The build cache's size after the prune, when `keep_storage` was asked.
    pub cache_size_after: Option<u64>,
    /// Cache-mount folders removed, with their sizes.
    pub cache_mounts: Vec<(PathBuf, u64)>,
    /// Committed snapshots (unpacked layers) removed, by name, with their sizes.
    pub snapshots: Vec<(String, u64)>,
    /// Bytes of the removed snapshots and cache mounts.
    pub unpacked_bytes: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// A store and its snapshotter.
///
/// The snapshotter is opened on first use ([`Engine::snapshotter`]): opening it locks its
/// folder, may probe overlayfs (a test mount, when the kept result does not apply) and, after
/// a process that did not end cleanly, checks every snapshot; a build whose steps are all
/// cached never needs it.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    driver: Option<Driver>,
    snapshotter: OnceLock<Snapshotter>,
    opening: Mutex<()>,
}

impl Engine {
    /// Opens (creating if needed) the store at `root`; its snapshotter with `driver` (`None`:
    /// overlay where it works, vfs otherwise) is opened on first use.
    pub fn open(root: &Path, driver: Option<Driver>) -> Result<Engine, Error> {
        Ok(Engine::with_driver(Store::open(root)?, driver))
    }

    /// An open store, with its snapshotter (`driver`, as [`Engine::open`]) opened on first use.
    pub fn with_driver(store: Store, driver: Option<Driver>) -> Engine {
        Engine {
            store,
            driver,
            snapshotter: OnceLock::new(),
            opening: Mutex::new(()),
        }
    }

    /// Pairs an open store with the snapshotter opened on the same root.
    pub fn new(store: Store, snapshotter: Snapshotter) -> Engine {
        let driver = Some(snapshotter.driver());
        Engine {
            store,
            driver,
            snapshotter: OnceLock::from(snapshotter),
            opening: Mutex::new(()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The snapshotter, opened now if this is its first use (which fails when the driver
    /// asked for cannot work here).
    pub fn snapshotter(&self) -> Result<&Snapshotter, Error> {
        if let Some(s) = self.snapshotter.get() {
            return Ok(s);
        }
        // One opener at a time: a second would probe and recover again for nothing.
        let _opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = self.snapshotter.get() {
            return Ok(s);
        }
        let opened = Snapshotter::open(self.store.root(), self.driver)?;
        Ok(self.snapshotter.get_or_init(|| opened))
    }

    /// `<root>/builder`: the builder's own state.
    pub fn builder_dir(&self) -> PathBuf {
        self.store.root().join("builder")
    }

    /// Makes sure `image`'s layers are unpacked; returns the snapshot name of the whole
    /// stack (`None` for an image without layers).
    pub fn ensure_unpacked(&self, image: &Image) -> Result<Option<String>, Error> {
        self.ensure_chain(&LayerRef::of_image(image))
    }

    /// Makes sure the stack `layers` (base first) is unpacked as committed snapshots named by
    /// chainID; returns the name of the top one. Layers already present are not read; the
    /// missing ones are unpacked in parallel on the current rayon pool.
    ///
    /// Safe against other builds unpacking the same layers at the same time: a layer that
    /// appears meanwhile is used as it is.
    pub fn ensure_chain(&self, layers: &[LayerRef]) -> Result<Option<String>, Error> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
        let names: Vec<String> = chain_ids(&diff_ids).iter().map(Digest::hex).collect();
        let Some(top) = names.last().cloned() else {
            return Ok(None);
        };
        // Another build may be unpacking the same layers; when it wins a race our attempt
        // fails with "already exists" and the next round starts above its layer.
        let snapshotter = self.snapshotter()?;
        let mut last_error = None;
        for _ in 0..4 {
            let present = names
                .iter()
                .rposition(|n| snapshotter.stat(n).is_ok())
                .map(|i| i + 1)
                .unwrap_or(0);
            if present == names.len() {
                return Ok(Some(top));
            }
            let mut sources = Vec::with_capacity(names.len() - present);
            for (layer, name) in layers[present..].iter().zip(&names[present..]) {
                // A layer named by a blob the store lacks (a shared-cache hit) may be held
                // under another compression: any blob with its diffID will do.
                let reader = match self.store.open_layer(&layer.blob.digest, &layer.diff_id) {
                    Err(strata_store::Error::BlobNotFound { .. }) => {
                        self.store.open_layer_by_diff_id(&layer.diff_id)?
                    }
                    other => other?,
                };
                sources.push(LayerSource {
                    name: name.clone(),
                    reader: Box::new(reader),
                });
            }
            let base = present.checked_sub(1).map(|i| names[i].as_str());
            match snapshotter.unpack_chain(base, sources, &UnpackOptions::default()) {
                Ok(_) => return Ok(Some(top)),
                Err(strata_overlay::Error::AlreadyExists { key }) => {
                    last_error = Some(strata_overlay::Error::AlreadyExists { key });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_error.map_or_else(
            || Error::InvalidSpec {
                reason: "unpacking kept racing with another build".into(),
            },
            Error::from,
        ))
    }

    /// Mounts a read-only view of the stack `layers` (unpacking what is missing); an empty
    /// stack is an empty folder made under `scratch`.
    pub fn view(&self, layers: &[LayerRef], scratch: &Path) -> Result<View<'_>, Error> {
        let Some(top) = self.ensure_chain(layers)? else {
            let path = scratch.join(format!("empty-{}", crate::build::random_hex()));
            std::fs::create_dir_all(&path).map_err(|e| Error::io("create", &path, e))?;
            return Ok(View {
                engine: self,
                key: None,
                path,
            });
        };
        let key = format!("build-view-{}", crate::build::random_hex());
        self.snapshotter()?.view(&key, Some(&top))?;
        let mut view = View {
            engine: self,
            key: Some(key.clone()),
            path: PathBuf::new(),
        };
        // From here on, dropping the view undoes what was done.
        view.path = self.snapshotter()?.mount(&key)?;
        Ok(view)
    }

    /// Garbage collection of the whole store: blobs no ref reaches (store GC), then the
    /// committed snapshots whose chain no ref reaches; with `cache`, the build cache first.
    ///
    /// Must not be called while this process holds a store lease (GC waits for leases).
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, Error> {
        let mut report = PruneReport {
            dry_run: options.dry_run,
            ..PruneReport::default()
        };
        let entries = cache::records(&self.store)?;
        if options.cache {
            report.records = entries;
            let mounts_dir = self.builder_dir().join("cache-mounts");
            for entry in read_dir_sorted(&mounts_dir)? {
                let size = tree_size(&entry);
                report.unpacked_bytes += size;
                report.cache_mounts.push((entry, size));
            }
        } else if let Some(limit) = options.keep_storage {
            let (evict, after) = self.lru_evictions(entries, limit)?;
            report.records = evict;
            report.cache_size_after = Some(after);
        }
        report.cache_records = report.records.len();
        if !options.dry_run {
            for r in &report.records {
                self.store.remove_ref(RefKind::Cache, &r.name)?;
            }
            if options.cache {
                for (dir, _) in &report.cache_mounts {
                    remove_any(dir)?;
                }
                remove_any(&self.builder_dir().join("last"))?;
                remove_any(&self.builder_dir().join("hash-memo"))?;
                remove_any(&self.builder_dir().join("hash-cache"))?;
            }
        }
        report.gc = self.store.gc(GcOptions {
            dry_run: options.dry_run,
        })?;
        if options.dry_run && !report.records.is_empty() {
            // The records are still there, so the store's dry run kept what only they reach:
            // count it as the real run would free it.
            self.as_if_removed(&mut report.gc, &report.records)?;
        }
        let keep: BTreeSet<String> = report
            .gc
            .reachable
            .chain_ids
            .iter()
            .map(Digest::hex)
            .collect();
        let snapshotter = self.snapshotter()?;
        let all = snapshotter.walk()?;
        let parents: BTreeMap<String, Option<String>> = all
            .iter()
            .map(|i| (i.key.clone(), i.parent.clone()))
            .collect();
        let depth = |key: &str| {
            let mut d = 0usize;
            let mut cur = parents.get(key).cloned().flatten();
            while let Some(p) = cur {
                d += 1;
                if d > 1024 {
                    break;
                }
                cur = parents.get(&p).cloned().flatten();
            }
            d
        };
        // Children before parents: a snapshot cannot go while something sits on it.
        let mut doomed: Vec<(usize, String)> = all
            .iter()
            .filter(|i| i.kind == strata_overlay::Kind::Committed)
            .filter(|i| is_chain_name(&i.key) && !keep.contains(&i.key))
            .map(|i| (depth(&i.key), i.key.clone()))
            .collect();
        doomed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, key) in doomed {
            let size = snapshotter.usage(&key).map(|u| u.size).unwrap_or(0);
            if !options.dry_run {
                match snapshotter.remove(&key) {
                    Ok(()) => {}
                    // Something not ours (a container) sits on it: it stays.
                    Err(strata_overlay::Error::HasChildren { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            report.unpacked_bytes += size;
            report.snapshots.push((key, size));
        }
        if !options.dry_run {
            snapshotter.empty_trash()?;
            self.sweep_copy_lists(options.cache)?;
        }
        Ok(report)
    }
}

impl Engine {
    /// Removes the kept file lists of `COPY` layers (see `copy::reuse`) whose snapshot is
    /// gone, or all of them with `all` (`prune --cache`): they are only hints for linking
    /// unchanged files, but each is as long as its copy's file list.
    fn sweep_copy_lists(&self, all: bool) -> Result<(), Error> {
        let dir = self.builder_dir().join("copy-layers");
        let snapshotter = self.snapshotter()?;
        for entry in read_dir_sorted(&dir)? {
            let alive = !all
                && crate::copy::listed_snapshot(&entry)
                    .is_some_and(|name| snapshotter.stat(&name).is_ok());
            if !alive {
                remove_any(&entry)?;
            }
        }
        Ok(())
    }

    /// Fills a dry run's GC report as if the cache records `gone` were removed first: the
    /// blobs only they reach join the removed ones, and only what the other refs reach stays
    /// (so their unpacked layers are listed too).
    fn as_if_removed(&self, gc: &mut GcReport, gone: &[CacheEntry]) -> Result<(), Error> {
        let gone_names: BTreeSet<&str> = gone.iter().map(|e| e.name.as_str()).collect();
        let (gone_refs, kept_refs): (Vec<Ref>, Vec<Ref>) = self
            .store
            .all_refs()?
            .into_iter()
            .partition(|r| r.kind == RefKind::Cache && gone_names.contains(r.name.as_str()));
        let kept = self.store.reachable_from(&kept_refs)?;
        let already: BTreeSet<Digest> = gc.removed.iter().map(|(d, _)| *d).collect();
        for d in &self.store.reachable_from(&gone_refs)?.blobs {
            if kept.blobs.contains(d) || already.contains(d) {
                continue;
            }
            let size = self.store.blob_size(d)?.unwrap_or(0);
            gc.removed.push((*d, size));
            gc.bytes_freed += size;
        }
        gc.removed.sort();
        gc.reachable = kept;
        Ok(())
    }

    /// The records to evict, least recently used first, so that the blobs the others reach
    /// weigh at most `limit` bytes; and that weight.
    fn lru_evictions(
        &self,
        entries: Vec<CacheEntry>,
        limit: u64,
    ) -> Result<(Vec<CacheEntry>, u64), Error> {
        let mut users: BTreeMap<Digest, usize> = BTreeMap::new();
        let mut reach: Vec<BTreeSet<Digest>> = Vec::with_capacity(entries.len());
        for e in &entries {
            let r = Ref {
                kind: RefKind::Cache,
                name: e.name.clone(),
                target: e.target.clone(),
            };
            let blobs = self.store.reachable_from(std::slice::from_ref(&r))?.blobs;
            for d in &blobs {
                *users.entry(*d).or_default() += 1;
            }
            reach.push(blobs);
        }
        let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
        for d in users.keys() {
            sizes.insert(*d, self.store.blob_size(d)?.unwrap_or(0));
        }
        let mut total: u64 = sizes.values().sum();
        let mut evict = Vec::new();
        for (entry, blobs) in entries.into_iter().zip(reach) {
            if total <= limit {
                break;
            }
            for d in &blobs {
                if let Some(n) = users.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        total -= sizes.get(d).copied().unwrap_or(0);
                    }
                }
            }
            evict.push(entry);
        }
        Ok((evict, total))
    }
}

/// Whether a snapshot name is a chainID in hex (the only committed snapshots we sweep).
fn is_chain_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        out.push(e.map_err(|e| Error::io("list", dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// Bytes of regular files under `path` (not following symlinks).
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| tree_size(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

fn remove_any(path: &Path) -> Result<(), Error> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| Error::io("remove", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_are_chain_ids_in_hex() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(chain_name(&[]), None);
        assert_eq!(chain_name(&[a]), Some(a.hex()));
        let ab = Digest::of(format!("{a} {b}").as_bytes());
        assert_eq!(chain_name(&[a, b]), Some(ab.hex()));
        assert!(is_chain_name(&ab.hex()));
        assert!(!is_chain_name("build-0123"));
    }

    use std::io::Write as _;

    use strata_store::{Compression, ImageConfig, LayerInfo, Reference};

    use crate::cachekey::{CacheKey, KeyInputs, OpKind, Parent};

    fn layer(store: &Store, fill: u8, len: usize) -> LayerInfo {
        let mut w = store.layer_writer(Compression::None).unwrap();
        w.write_all(&vec![fill; len]).unwrap();
        w.finish().unwrap()
    }

    /// A cache record of a step with `layer`, named by `n`.
    fn record(store: &Store, n: u8, layer: &LayerInfo) -> (CacheKey, u64) {
        let inputs = KeyInputs::new(
            OpKind::Run,
            "linux/amd64",
            Parent::Step {
                key: CacheKey::parse(&format!("{n:02x}").repeat(32)).unwrap(),
            },
            &format!("RUN step {n}"),
        );
        let key = inputs.key();
        cache::store_record(
            store,
            &cache::NewRecord {
                key: &key,
                layer: Some(layer),
                chain: &[layer.diff_id],
                created_by: &format!("RUN step {n}"),
                inputs: &inputs,
                stage: "build",
            },
            None,
        )
        .unwrap();
        let target = store.get_ref(RefKind::Cache, &key.hex()).unwrap().unwrap();
        (key, target.size + layer.size)
    }

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), Some(Driver::Vfs)).unwrap();
        (dir, engine)
    }

    fn names(report: &PruneReport) -> Vec<String> {
        report.records.iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn a_dry_run_frees_what_the_real_run_frees() {
        let (_d, e) = engine();
        let store = e.store();
        let shared = layer(store, 1, 3000);
        let own = layer(store, 2, 5000);
        let image = store
            .write_image(&ImageConfig::default(), std::slice::from_ref(&shared))
            .unwrap();
        store
            .tag(&Reference::parse("kept:1").unwrap(), &image)
            .unwrap();
        let (_, rec_a) = record(store, 1, &shared);
        let (_, rec_b) = record(store, 2, &own);
        store.write_blob(&[9; 700]).unwrap();
        let options = PruneOptions {
            dry_run: true,
            cache: true,
            keep_storage: None,
        };
        let dry = e.prune(&options).unwrap();
        // The stray blob, both record blobs and the layer only a record used; not the
        // layer the image shares.
        let record_blobs = (rec_a - shared.size) + (rec_b - own.size);
        assert_eq!(dry.gc.bytes_freed, 700 + record_blobs + own.size);
        assert_eq!(dry.cache_records, 2);
        assert_eq!(store.list_refs(RefKind::Cache).unwrap().len(), 2, "dry run");
        let real = e
            .prune(&PruneOptions {
                dry_run: false,
                ..options
            })
            .unwrap();
        assert_eq!(real.gc.removed, dry.gc.removed);
        assert_eq!(real.gc.bytes_freed, dry.gc.bytes_freed);
        assert!(store.list_refs(RefKind::Cache).unwrap().is_empty());
        assert!(store.has_blob(&shared.digest));
        assert!(!store.has_blob(&own.digest));
    }

    #[test]
    fn keep_storage_evicts_the_least_recently_used_records_first() {
        let (_d, e) = engine();
        let store = e.store();
        let layers: Vec<LayerInfo> = (1..=3)
            .map(|n| layer(store, n, 1000 * n as usize))
            .collect();
        let mut recs = Vec::new();
        for (n, l) in (1..=3).zip(&layers) {
            recs.push(record(store, n, l));
            // Ref times have one-second resolution on some file systems: keep the order clear.
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        // Record 1 is used again: now record 2 is the least recently used.
        cache::touch(store, &recs[0].0).unwrap();
        let total: u64 = recs.iter().map(|r| r.1).sum();
        let keep = |limit: u64, dry_run: bool| {
            e.prune(&PruneOptions {
                dry_run,
                cache: false,
                keep_storage: Some(limit),
            })
            .unwrap()
        };
        assert!(names(&keep(total, true)).is_empty(), "already under");
        let one = keep(total - recs[1].1, true);
        assert_eq!(names(&one), [recs[1].0.hex()]);
        assert_eq!(one.cache_size_after, Some(total - recs[1].1));
        // The record blob and the layer only it used go.
        assert_eq!(one.gc.bytes_freed, recs[1].1);
        let two = keep(total - recs[1].1 - 1, true);
        assert_eq!(names(&two), [recs[1].0.hex(), recs[2].0.hex()]);
        assert_eq!(two.cache_size_after, Some(recs[0].1));
        let real = keep(total - recs[1].1 - 1, false);
        assert_eq!(names(&real), names(&two));
        assert_eq!(real.gc.bytes_freed, two.gc.bytes_freed);
        let left: Vec<String> = store
            .list_refs(RefKind::Cache)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(left, [recs[0].0.hex()]);
        assert!(store.has_blob(&layers[0].digest));
        assert!(!store.has_blob(&layers[1].digest));
        assert!(!store.has_blob(&layers[2].digest));
    }
}
