//! The engine: one store and its snapshotter, opened together.
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
//! to explain cache misses), `hash-memo/` (what a `COPY --from` of an immutable layer stack
//! hashed to), `hash-cache/` (the digests of build context files by their `lstat` identity,
//! [`crate::context::hashcache`]) and `logs/` (every step's full output).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use strata_overlay::{Driver, LayerSource, Snapshotter, UnpackOptions};
use strata_store::{chain_ids, Descriptor, Digest, GcOptions, GcReport, Image, RefKind, Store};

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
                let _ = self.engine.snapshotter.unmount(key);
                let _ = self.engine.snapshotter.remove(key);
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
}

/// What [`Engine::prune`] removed (or would remove).
#[derive(Debug, Default)]
pub struct PruneReport {
    /// The store's part: blobs and temp files.
    pub gc: GcReport,
    /// Cache records dropped (their refs).
    pub cache_records: usize,
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
#[derive(Debug)]
pub struct Engine {
    store: Store,
    snapshotter: Snapshotter,
}

impl Engine {
    /// Opens (creating if needed) the store at `root` and its snapshotter with `driver`
    /// (`None`: overlay where it works, vfs otherwise).
    pub fn open(root: &Path, driver: Option<Driver>) -> Result<Engine, Error> {
        let store = Store::open(root)?;
        let snapshotter = Snapshotter::open(store.root(), driver)?;
        Ok(Engine { store, snapshotter })
    }

    /// Pairs an open store with the snapshotter opened on the same root.
    pub fn new(store: Store, snapshotter: Snapshotter) -> Engine {
        Engine { store, snapshotter }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The snapshotter.
    pub fn snapshotter(&self) -> &Snapshotter {
        &self.snapshotter
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
        let mut last_error = None;
        for _ in 0..4 {
            let present = names
                .iter()
                .rposition(|n| self.snapshotter.stat(n).is_ok())
                .map(|i| i + 1)
                .unwrap_or(0);
            if present == names.len() {
                return Ok(Some(top));
            }
            let mut sources = Vec::with_capacity(names.len() - present);
            for (layer, name) in layers[present..].iter().zip(&names[present..]) {
                let reader = self.store.open_layer(&layer.blob.digest, &layer.diff_id)?;
                sources.push(LayerSource {
                    name: name.clone(),
                    reader: Box::new(reader),
                });
            }
            let base = present.checked_sub(1).map(|i| names[i].as_str());
            match self
                .snapshotter
                .unpack_chain(base, sources, &UnpackOptions::default())
            {
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
        self.snapshotter.view(&key, Some(&top))?;
        let mut view = View {
            engine: self,
            key: Some(key.clone()),
            path: PathBuf::new(),
        };
        // From here on, dropping the view undoes what was done.
        view.path = self.snapshotter.mount(&key)?;
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
        if options.cache {
            let records = self.store.list_refs(RefKind::Cache)?;
            report.cache_records = records.len();
            let mounts_dir = self.builder_dir().join("cache-mounts");
            for entry in read_dir_sorted(&mounts_dir)? {
                let size = tree_size(&entry);
                report.unpacked_bytes += size;
                report.cache_mounts.push((entry, size));
            }
            if !options.dry_run {
                for r in &records {
                    self.store.remove_ref(RefKind::Cache, &r.name)?;
                }
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
        let keep: BTreeSet<String> = report
            .gc
            .reachable
            .chain_ids
            .iter()
            .map(Digest::hex)
            .collect();
        let all = self.snapshotter.walk()?;
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
            let size = self.snapshotter.usage(&key).map(|u| u.size).unwrap_or(0);
            if !options.dry_run {
                match self.snapshotter.remove(&key) {
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
            self.snapshotter.empty_trash()?;
        }
        Ok(report)
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
}
