//! The shared build cache: `--cache-from` and `--cache-to`, through a registry or an OCI
//! layout folder.
//!
//! **Format** ([`format`]): one OCI image manifest whose layers are the cached layer blobs
//! and whose config (media type [`format::CACHE_CONFIG_MEDIA_TYPE`]) carries the records: per
//! step, its cache key, the layer it made, the diffID stack after it, its history entry and
//! its key inputs; and the content hashes of `COPY --from` sources, so a fresh machine can key
//! those steps without the source stage's files.
//!
//! **Import** ([`RemoteCache::import`]): before the build, each `--cache-from`'s manifest and
//! config are read (never its layers) and the records merged as candidates, in the order the
//! sources were given. A step whose key the local cache lacks but a candidate has is a HIT
//! when the candidate was made on the same layer stack ([`format::CacheRecord::fits`]).
//!
//! **Lazy layers**: a remote hit adds the record's layer to the stage without fetching it.
//! Its blob is fetched only when a build needs files ([`RemoteCache::ensure_local`]): a step
//! that misses on top of it, a `COPY --from` or `RUN --mount=from` of it, and the result image,
//! whose layers are all fetched before it is written (the image in the store is always
//! complete: `run`, `save` and `push` work without a registry). BuildKit stops earlier (it
//! keeps even the result's layers lazy until they are used); strata trades that for a store
//! that never holds an image it cannot read. A blob the store holds under another compression
//! (same diffID) is used instead of being fetched. After the build, every remote hit whose
//! layer is now local becomes a local cache record, so the next build hits without the source.
//!
//! **Export** ([`export`]): after the image is tagged, the records of the result's steps
//! (`mode=min`) or of every stage built (`mode=max`) go to each `--cache-to`. A registry gets
//! the blobs it lacks and then the manifest; a folder becomes an OCI layout (the store's own
//! layout code, so `index.json` tags it) from which earlier exports' unused blobs are
//! collected. An export that fails or takes longer than its timeout is a warning: the build
//! has already succeeded.
//!
//! Keys are the same on every machine: they are built only from the Dockerfile, the build
//! args, file contents and modes, and base images' IDs (the digest of their config), never
//! from paths, owners, times or other local state.

pub mod format;
pub mod source;
pub mod spec;

mod export;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use strata_store::registry::Client;
use strata_store::{chain_ids, Descriptor, Digest, Store};

pub use export::{export, ExportReport};
pub use format::{CacheContent, CacheRecord, CopyHash};
pub use source::Source;
pub use spec::{CacheExport, CacheImport, CacheLocation, ExportMode};

use crate::cachekey::CacheKey;
use crate::engine::{Engine, LayerRef};
use crate::progress::{Event, Reporter};
use crate::Error;

/// Retries when reading a `--cache-from`'s manifest and config.
pub const IMPORT_RETRIES: u32 = 2;

/// Layer fetches at once (they wait on the network or the disk, not the CPU).
const MAX_PARALLEL_FETCHES: usize = 4;

/// What the `--cache-from` sources offer, merged.
#[derive(Debug, Default)]
pub struct RemoteCache {
    sources: Vec<Source>,
    /// Candidates by key, in source order.
    records: HashMap<CacheKey, Vec<CacheRecord>>,
    copy_hashes: HashMap<String, CopyHash>,
    /// Each layer blob the records name: its diffID and the sources that carry it.
    blobs: HashMap<Digest, (Digest, Vec<usize>)>,
    /// One fetch per blob at a time.
    fetching: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

/// Locks a mutex, shrugging off poisoning.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RemoteCache {
    /// A cache with no sources: every lookup misses.
    pub fn new() -> RemoteCache {
        RemoteCache::default()
    }

    /// Reads every source's records (manifest and config only). A source that cannot be
    /// read is reported as a warning and skipped; the warnings are returned too. Reading
    /// retries less than `client` does ([`IMPORT_RETRIES`]): a cache registry that is down
    /// should cost a build seconds, not the full backoff; layers are fetched with `client`.
    pub fn import(
        imports: &[CacheImport],
        client: &Arc<Client>,
        reporter: &dyn Reporter,
    ) -> (RemoteCache, Vec<String>) {
        let mut cache = RemoteCache::new();
        let mut warnings = Vec::new();
        let mut options = client.options().clone();
        options.retries = options.retries.min(IMPORT_RETRIES);
        let reader = Arc::new(Client::new(options));
        for import in imports {
            let source = Source::new(&import.location, client);
            let started = Instant::now();
            match Source::new(&import.location, &reader).load() {
                Ok(content) => {
                    let records = content.as_ref().map_or(0, |c| c.records.len());
                    reporter.report(&Event::CacheImported {
                        source: source.describe(),
                        found: content.is_some(),
                        records,
                        duration: started.elapsed(),
                    });
                    cache.add(source, content.unwrap_or_default());
                }
                Err(e) => {
                    let message = format!(
                        "cannot read the cache {}, building without it: {}",
                        source.describe(),
                        crate::error_text(&e)
                    );
                    reporter.report(&Event::Warning {
                        step: None,
                        message: message.clone(),
                    });
                    warnings.push(message);
                }
            }
        }
        (cache, warnings)
    }

    /// Adds a source and what it offers.
    pub fn add(&mut self, source: Source, content: CacheContent) {
        let index = self.sources.len();
        self.sources.push(source);
        for r in content.records {
            if let Some(l) = &r.layer {
                let entry = self
                    .blobs
                    .entry(l.digest)
                    .or_insert_with(|| (l.diff_id, Vec::new()));
                if entry.0 == l.diff_id && !entry.1.contains(&index) {
                    entry.1.push(index);
                }
            }
            self.records.entry(r.key).or_default().push(r);
        }
        for h in content.copy_hashes {
            self.copy_hashes.entry(h.memo.clone()).or_insert(h);
        }
    }

    /// Whether no source was read.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Records offered, over all sources.
    pub fn len(&self) -> usize {
        self.records.values().map(Vec::len).sum()
    }

    /// The record for `key` made on the stack `below` (diffIDs, base first), if a source has
    /// one.
    pub fn lookup(&self, key: &CacheKey, below: &[Digest]) -> Option<CacheRecord> {
        self.records
            .get(key)?
            .iter()
            .find(|r| r.fits(below))
            .cloned()
    }

    /// The content hash of a `COPY --from` another build recorded under memo key `memo`.
    pub fn copy_hash(&self, memo: &str) -> Option<CopyHash> {
        self.copy_hashes.get(memo).cloned()
    }

    /// Makes the stack `layers` usable. With `whole`, every layer's blob is in the store
    /// when this returns, and the returned stack names the stored blobs (a blob held under
    /// another compression replaces a missing one). Without, only what unpacking the stack
    /// needs is made local: nothing when it is unpacked already, else the blobs of the
    /// layers above its unpacked part whose diffID the store holds in no blob.
    pub fn ensure_local(
        &self,
        engine: &Engine,
        layers: &[LayerRef],
        whole: bool,
        reporter: &dyn Reporter,
    ) -> Result<Vec<LayerRef>, Error> {
        let store = engine.store();
        let mut out = layers.to_vec();
        let start = if whole {
            0
        } else {
            unpacked_prefix(engine, layers)
        };
        let mut missing = Vec::new();
        for (i, layer) in out.iter_mut().enumerate().skip(start) {
            if store.has_blob(&layer.blob.digest) {
                continue;
            }
            match store.layer_blobs(&layer.diff_id)?.into_iter().next() {
                Some(local) => {
                    if whole {
                        layer.blob = local.descriptor();
                    }
                }
                None => missing.push(i),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let jobs: Vec<Descriptor> = missing.iter().map(|i| out[*i].blob.clone()).collect();
        let results: Mutex<Vec<Result<(), Error>>> = Mutex::new(Vec::new());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..jobs.len().min(MAX_PARALLEL_FETCHES) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(blob) = jobs.get(i) else { return };
                    let started = Instant::now();
                    let r = self.fetch_blob(store, blob).map(|source| {
                        if let Some(source) = source {
                            reporter.report(&Event::CacheLayerFetched {
                                source,
                                digest: blob.digest.to_string(),
                                size: blob.size,
                                duration: started.elapsed(),
                            });
                        }
                    });
                    let failed = r.is_err();
                    lock(&results).push(r);
                    if failed {
                        return;
                    }
                });
            }
        });
        for r in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
            r?;
        }
        Ok(out)
    }

    /// Puts `blob` into `store` from the first source that has it; returns the source's name,
    /// or `None` when the store had it already.
    pub fn fetch_blob(&self, store: &Store, blob: &Descriptor) -> Result<Option<String>, Error> {
        let Some((diff_id, sources)) = self.blobs.get(&blob.digest) else {
            return Err(Error::InvalidCache {
                what: format!("layer {}", blob.digest),
                reason: "it is not in the store and no --cache-from source names it".into(),
            });
        };
        let gate = lock(&self.fetching).entry(blob.digest).or_default().clone();
        let _one_at_a_time = lock(&gate);
        if store.has_blob(&blob.digest) {
            return Ok(None);
        }
        let mut last = None;
        for i in sources {
            let Some(source) = self.sources.get(*i) else {
                continue;
            };
            match source.fetch_layer(store, blob, diff_id) {
                Ok(()) => return Ok(Some(source.describe())),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidCache {
            what: format!("layer {}", blob.digest),
            reason: "no source carries it".into(),
        }))
    }
}

/// How many layers of the stack (from the base) are unpacked already: its highest unpacked
/// snapshot, as [`Engine::ensure_chain`] looks for it.
fn unpacked_prefix(engine: &Engine, layers: &[LayerRef]) -> usize {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    chain_ids(&diff_ids)
        .iter()
        .rposition(|c| engine.snapshotter().is_ok_and(|s| s.stat(&c.hex()).is_ok()))
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::time::Duration;

    use strata_store::registry::ClientOptions;
    use strata_store::{Compression, LayerInfo};

    use super::*;
    use crate::cachekey::{KeyInputs, OpKind, Parent};
    use crate::progress::CollectingReporter;

    fn layer(store: &Store, bytes: &[u8]) -> LayerInfo {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, "file", bytes).unwrap();
        let mut w = store.layer_writer(Compression::Zstd).unwrap();
        w.write_all(&tar.into_inner().unwrap()).unwrap();
        w.finish().unwrap()
    }

    fn record(text: &str, l: &LayerInfo) -> CacheRecord {
        let inputs = KeyInputs::new(OpKind::Run, "linux/amd64", Parent::None, text);
        CacheRecord {
            key: inputs.key(),
            layer: Some(l.clone()),
            chain: vec![l.diff_id],
            created_by: format!("{text} # buildkit"),
            created: None,
            inputs,
        }
    }

    fn local(dir: &Path) -> CacheLocation {
        CacheLocation::Local {
            dir: dir.to_path_buf(),
            tag: spec::DEFAULT_LOCAL_TAG.into(),
        }
    }

    fn import(location: CacheLocation) -> (RemoteCache, Vec<String>) {
        let client = Arc::new(Client::new(ClientOptions::default()));
        RemoteCache::import(
            &[CacheImport { location }],
            &client,
            &CollectingReporter::new(),
        )
    }

    #[test]
    fn a_local_folder_round_trips_records_and_serves_verified_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("a")).unwrap();
        let (one, two) = (layer(&store, b"one"), layer(&store, b"two"));
        let mut content = CacheContent::default();
        let r1 = record("RUN one", &one);
        content.add_record(&r1);
        content.add_record(&record("RUN two", &two));
        // A step keyed on its parent: made on the stack [one].
        let mut on_one = record("RUN two", &two);
        on_one.inputs = KeyInputs::new(
            OpKind::Run,
            "linux/amd64",
            Parent::Step { key: r1.key },
            "RUN two",
        );
        on_one.key = on_one.inputs.key();
        on_one.chain = vec![one.diff_id, two.diff_id];
        content.add_record(&on_one);
        let dir = tmp.path().join("cache");
        let spec = CacheExport {
            location: local(&dir),
            mode: ExportMode::Max,
            timeout: Duration::from_secs(60),
        };
        let empty = Arc::new(RemoteCache::new());
        let report = export(&store, &content, &spec, &ClientOptions::default(), &empty).unwrap();
        assert_eq!((report.records, report.layers, report.sent), (3, 2, 2));
        let again = export(&store, &content, &spec, &ClientOptions::default(), &empty).unwrap();
        assert!(again.up_to_date && again.sent == 0, "{again:?}");

        // Nothing there yet is no error; the folder's records read back.
        let (nothing, warnings) = import(local(&tmp.path().join("none")));
        assert!(warnings.is_empty());
        assert_eq!(nothing.len(), 0, "no records: nothing was there");
        let (remote, warnings) = import(local(&dir));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(remote.len(), 3);
        assert_eq!(remote.lookup(&r1.key, &[]), Some(r1.clone()));
        // Keyed on its parent: a hit only on the stack it was made on.
        assert_eq!(
            remote.lookup(&on_one.key, &[one.diff_id]),
            Some(on_one.clone())
        );
        assert_eq!(remote.lookup(&on_one.key, &[two.diff_id]), None);
        assert_eq!(remote.lookup(&on_one.key, &[]), None);

        // A fresh store gets one layer on demand, verified.
        let fresh = Store::open(&tmp.path().join("b")).unwrap();
        let got = remote.fetch_blob(&fresh, &one.descriptor()).unwrap();
        assert!(got.is_some());
        assert!(fresh.has_blob(&one.digest) && !fresh.has_blob(&two.digest));
        assert_eq!(remote.fetch_blob(&fresh, &one.descriptor()).unwrap(), None);

        // A blob swapped in the folder is refused and never becomes visible.
        let path = dir.join("blobs/sha256").join(two.digest.hex());
        let three = layer(&store, b"six");
        std::fs::remove_file(&path).unwrap();
        std::fs::copy(
            tmp.path().join("a/blobs/sha256").join(three.digest.hex()),
            &path,
        )
        .unwrap();
        assert!(remote.fetch_blob(&fresh, &two.descriptor()).is_err());
        assert!(!fresh.has_blob(&two.digest));
        assert!(fresh
            .fsck(strata_store::FsckOptions::default())
            .unwrap()
            .is_clean());
    }

    #[test]
    fn an_export_that_hangs_gives_up_after_its_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming().flatten() {
                held.push(c);
            }
        });
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let l = layer(&store, b"x");
        let mut content = CacheContent::default();
        content.add_record(&record("RUN x", &l));
        let spec = CacheExport::parse(&format!("type=registry,ref={addr}/app:cache,timeout=500ms"))
            .unwrap();
        let started = Instant::now();
        let e = export(
            &store,
            &content,
            &spec,
            &ClientOptions::default(),
            &Arc::new(RemoteCache::new()),
        )
        .unwrap_err();
        assert!(matches!(e, Error::CacheExportTimeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
