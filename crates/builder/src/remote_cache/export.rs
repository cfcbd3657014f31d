//! Writing a shared cache, with a bound on the time it may take.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use strata_store::registry::{Client, ClientOptions, Event as RegistryEvent, ManifestUpload};
use strata_store::{Descriptor, GcOptions, RefKind, Store};

use super::format::{encode, CacheContent, Encoded};
use super::source::local_tag_reference;
use super::spec::{CacheExport, CacheLocation};
use super::RemoteCache;
use crate::platform::Platform;
use crate::Error;

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Where it went.
    pub target: String,
    /// Records written.
    pub records: usize,
    /// Layer blobs the cache names.
    pub layers: usize,
    /// Blobs sent (uploaded, or copied into the folder).
    pub sent: usize,
    /// Bytes sent.
    pub bytes: u64,
    /// The destination held this very cache already.
    pub up_to_date: bool,
}

/// Registry events nobody shows.
fn quiet(_: RegistryEvent) {}

/// Writes `content` to `spec`'s location. Runs on a thread of its own and gives up when
/// `spec.timeout` has passed (the thread is told to stop and left to finish its current
/// request). Blobs the store lacks (layers of remote hits that were never needed) are
/// fetched from `remote` only when the destination lacks them too.
pub fn export(
    store: &Store,
    content: &CacheContent,
    spec: &CacheExport,
    client_options: &ClientOptions,
    remote: &Arc<RemoteCache>,
) -> Result<ExportReport, Error> {
    let encoded = encode(content, &Platform::host());
    let records = content.records.len();
    let (tx, rx) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut options = client_options.clone();
    // No single request may outlast the export, and a dead registry is not worth many tries.
    options.connect_timeout = options.connect_timeout.min(spec.timeout);
    options.read_timeout = options.read_timeout.min(spec.timeout);
    options.retries = options.retries.min(3);
    let job = Job {
        store: store.clone(),
        encoded,
        location: spec.location.clone(),
        client: Client::new(options),
        remote: remote.clone(),
        cancel: cancel.clone(),
    };
    let spawned = std::thread::Builder::new()
        .name("strata-cache-export".into())
        .spawn(move || {
            let _ = tx.send(job.run());
        });
    if let Err(e) = spawned {
        return Err(Error::InvalidCache {
            what: spec.location.to_string(),
            reason: format!("could not start the export: {e}"),
        });
    }
    match rx.recv_timeout(spec.timeout) {
        Ok(result) => result.map(|mut r| {
            r.records = records;
            r
        }),
        Err(_) => {
            cancel.store(true, Ordering::Relaxed);
            Err(Error::CacheExportTimeout {
                target: spec.location.to_string(),
                timeout: spec.timeout,
            })
        }
    }
}

/// Everything the export thread owns.
struct Job {
    store: Store,
    encoded: Encoded,
    location: CacheLocation,
    client: Client,
    remote: Arc<RemoteCache>,
    cancel: Arc<AtomicBool>,
}

impl Job {
    fn run(&self) -> Result<ExportReport, Error> {
        match &self.location {
            CacheLocation::Registry(reference) => self.to_registry(reference),
            CacheLocation::Local { dir, tag } => self.to_folder(dir, tag),
        }
    }

    fn to_registry(&self, reference: &strata_store::Reference) -> Result<ExportReport, Error> {
        // Blobs are pushed from the store, so the config is written there first (nothing
        // refers to it: the next GC takes it).
        let _lease = self.store.lease()?;
        self.store.write_blob(&self.encoded.config)?;
        let upload = ManifestUpload {
            media_type: self.encoded.manifest_descriptor.media_type.clone(),
            bytes: self.encoded.manifest.clone(),
            blobs: self.encoded.blobs(),
        };
        let fetch_missing = |blob: &Descriptor| -> strata_store::Result<()> {
            self.remote
                .fetch_blob(&self.store, blob)
                .map(|_| ())
                .map_err(|e| strata_store::Error::InvalidContent {
                    what: format!("cache layer {}", blob.digest),
                    reason: crate::error_text(&e),
                })
        };
        let report = self.client.push_manifest(
            &self.store,
            reference,
            &upload,
            &fetch_missing,
            &self.cancel,
            &quiet,
        )?;
        Ok(ExportReport {
            target: reference.to_string(),
            records: 0,
            layers: self.encoded.layers.len(),
            sent: report.uploaded,
            bytes: report.bytes_uploaded,
            up_to_date: report.up_to_date,
        })
    }

    fn to_folder(&self, dir: &Path, tag: &str) -> Result<ExportReport, Error> {
        let dest = Store::open(dir)?;
        let tag_ref = local_tag_reference(tag)?;
        let mut sent = 0;
        let mut bytes = 0;
        {
            let _lease = dest.lease()?;
            for layer in &self.encoded.layers {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                if dest.has_blob(&layer.digest) {
                    continue;
                }
                if self.store.has_blob(&layer.digest) {
                    let file = self.store.open_blob(&layer.digest)?;
                    dest.ingest(std::io::BufReader::new(file), Some(layer.digest))?;
                } else {
                    self.remote.fetch_blob(&dest, &layer.descriptor())?;
                }
                sent += 1;
                bytes += layer.size;
            }
            let previous = dest.get_ref(RefKind::Tag, &tag_ref.to_string())?;
            let up_to_date = previous.as_ref().map(|d| d.digest)
                == Some(self.encoded.manifest_descriptor.digest);
            dest.write_blob(&self.encoded.config)?;
            dest.write_blob(&self.encoded.manifest)?;
            dest.set_ref(
                RefKind::Tag,
                &tag_ref.to_string(),
                &self.encoded.manifest_descriptor,
            )?;
            if up_to_date {
                return Ok(ExportReport {
                    target: self.location.to_string(),
                    records: 0,
                    layers: self.encoded.layers.len(),
                    sent,
                    bytes,
                    up_to_date,
                });
            }
        }
        // Blobs of earlier exports no tag names any more go, unless the folder is the very
        // store this build uses (its GC waits for our own lease).
        if !same_folder(dest.root(), self.store.root()) {
            dest.gc(GcOptions { dry_run: false })?;
        }
        Ok(ExportReport {
            target: self.location.to_string(),
            records: 0,
            layers: self.encoded.layers.len(),
            sent,
            bytes,
            up_to_date: false,
        })
    }
}

fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
