//! Manifests that are not images to this store (a shared build cache): fetched and pushed
//! whole, their config read into memory, their layers moved one at a time and only on demand.
//!
//! The caller owns the meaning of the config; this module only keeps the registry side
//! honest: every byte verified against its digest, layers checked against their diffID before
//! they become visible, uploads skipped for blobs the registry already holds.

use std::sync::atomic::AtomicBool;

use ureq::http::Method;

use super::auth::repository_scope;
use super::manifest::{self, Fetched};
use super::pull::{download, fetch_manifest};
use super::push::{
    blob_exists, manifest_target, mount_sources, push_blob, put_manifest, remote_manifest_digest,
};
use super::transport::{Call, Op};
use super::{BlobKind, BlobOutcome, Client, Event, Progress, PushReport, Reporter};
use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::LayerInfo;
use crate::reference::Reference;
use crate::store::{Store, MAX_JSON_BLOB};

/// An image manifest as the registry holds it, whatever its config is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteManifest {
    /// The manifest itself (media type, digest, size).
    pub descriptor: Descriptor,
    /// Its bytes, verified against the digest.
    pub bytes: Vec<u8>,
    /// Its config descriptor (any media type).
    pub config: Descriptor,
    /// Its layers.
    pub layers: Vec<Descriptor>,
}

/// A manifest to push: its bytes and media type, and the blobs it names.
#[derive(Clone, Debug)]
pub struct ManifestUpload {
    /// The manifest's media type (`application/vnd.oci.image.manifest.v1+json`).
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The blobs it names (config first, then layers); each must be in the store, in the
    /// registry already, or made available by the caller's `fetch_missing`.
    pub blobs: Vec<Descriptor>,
}

impl Client {
    fn op<'a>(
        &self,
        remote: &'a super::transport::Remote,
        reference: &Reference,
        push: bool,
        reporter: &'a dyn Reporter,
        cancel: &'a AtomicBool,
    ) -> Op<'a> {
        Op {
            remote,
            repository: reference.path().to_string(),
            scopes: vec![repository_scope(reference.path(), push)],
            reporter,
            cancel,
        }
    }

    /// Fetch the manifest `reference` names, without storing anything. `Ok(None)` when the
    /// registry has no such manifest (or repository); an index is an error (the caller
    /// asked for one manifest).
    pub fn fetch_manifest(
        &self,
        reference: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<Option<RemoteManifest>> {
        let remote = self.remote(reference.domain())?;
        let cancel = AtomicBool::new(false);
        let op = self.op(&remote, reference, false, reporter, &cancel);
        let target = manifest_target(reference);
        let (descriptor, bytes, fetched) = match fetch_manifest(&op, &target, reference.digest()) {
            Ok(f) => f,
            Err(Error::Registry {
                status: Some(404), ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match fetched {
            Fetched::Manifest(manifest::Manifest { config, layers, .. }) => {
                Ok(Some(RemoteManifest {
                    descriptor,
                    bytes,
                    config,
                    layers,
                }))
            }
            Fetched::Index(_) => Err(Error::content(
                format!("{reference}"),
                "is an index, not a single manifest",
            )),
        }
    }

    /// Fetch a small blob (a config, at most [`MAX_JSON_BLOB`] bytes) into memory, verified
    /// against its digest and size.
    pub fn fetch_blob_bytes(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        reporter: &dyn Reporter,
    ) -> Result<Vec<u8>> {
        let remote = self.remote(reference.domain())?;
        let cancel = AtomicBool::new(false);
        let op = self.op(&remote, reference, false, reporter, &cancel);
        let action = format!("fetch blob {}", blob.digest);
        if blob.size > MAX_JSON_BLOB {
            return Err(op.error(
                &action,
                None,
                format!(
                    "it declares {} bytes, more than a config may have",
                    blob.size
                ),
            ));
        }
        let call = Call::new(Method::GET, op.url(&format!("blobs/{}", blob.digest))?);
        let resp = op.send(&action, &call)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(op.status_error(&action, resp));
        }
        let bytes = resp
            .into_body()
            .into_with_config()
            .limit(MAX_JSON_BLOB)
            .read_to_vec()
            .map_err(|e| op.error(&action, Some(status), e.to_string()))?;
        let actual = Digest::of(&bytes);
        if actual != blob.digest || bytes.len() as u64 != blob.size {
            return Err(Error::DigestMismatch {
                what: format!("blob from {}/{}", remote.name, reference.path()),
                expected: blob.digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Download one layer blob of `reference`'s repository into `store`: verified against its
    /// digest, its diffID checked in the same pass before the blob becomes visible, the layer
    /// recorded, and the repository remembered as a source of the blob (for later
    /// cross-repository mounts). A blob the store holds already is not downloaded.
    pub fn fetch_layer(
        &self,
        store: &Store,
        reference: &Reference,
        blob: &Descriptor,
        diff_id: &Digest,
        reporter: &dyn Reporter,
    ) -> Result<LayerInfo> {
        let _lease = store.lease()?;
        if store.has_blob(&blob.digest) {
            if let Some(info) = store
                .layer_blobs(diff_id)?
                .into_iter()
                .find(|l| l.digest == blob.digest)
            {
                return Ok(info);
            }
            let info = store.index_layer_blob(&blob.digest)?;
            if info.diff_id != *diff_id {
                return Err(Error::DiffIdMismatch {
                    blob: blob.digest,
                    expected: *diff_id,
                    actual: info.diff_id,
                });
            }
            return Ok(info);
        }
        let remote = self.remote(reference.domain())?;
        let cancel = AtomicBool::new(false);
        let op = self.op(&remote, reference, false, reporter, &cancel);
        reporter.report(Event::BlobStarted {
            digest: blob.digest,
            size: blob.size,
            kind: BlobKind::Layer,
        });
        let progress = Progress::new(reporter, blob.digest, blob.size);
        let (_, info) = download(&op, store, blob, Some(*diff_id), &progress)?;
        let info = info
            .ok_or_else(|| Error::content(format!("layer {}", blob.digest), "no layer record"))?;
        reporter.report(Event::BlobDone {
            digest: blob.digest,
            size: blob.size,
            kind: BlobKind::Layer,
            outcome: BlobOutcome::Downloaded,
        });
        store.record_blob_source(&blob.digest, &reference.name())?;
        Ok(info)
    }

    /// Push a manifest of any kind to `dest` (a tag). Each blob goes up unless the registry
    /// has it (`HEAD`) or can mount it from another repository the store knows holds it; a
    /// blob that is neither there nor in the store is first handed to `fetch_missing`, which
    /// must put it in the store. The manifest goes last. `cancel` stops the push between
    /// requests (and stops retries).
    pub fn push_manifest(
        &self,
        store: &Store,
        dest: &Reference,
        upload: &ManifestUpload,
        fetch_missing: &dyn Fn(&Descriptor) -> Result<()>,
        cancel: &AtomicBool,
        reporter: &dyn Reporter,
    ) -> Result<PushReport> {
        let _lease = store.lease()?;
        let remote = self.remote(dest.domain())?;
        let registry_prefix = format!("{}/", dest.domain());
        let dest_name = dest.name();
        let manifest = Descriptor::new(
            upload.media_type.clone(),
            Digest::of(&upload.bytes),
            upload.bytes.len() as u64,
        );
        let mut op = self.op(&remote, dest, true, reporter, cancel);
        let target = manifest_target(dest);
        let mut report = PushReport::new(dest, &manifest);
        if remote_manifest_digest(&op, &target)? == Some(manifest.digest) {
            report.up_to_date = true;
            report.existing = upload.blobs.len();
            return Ok(report);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, blob) in upload.blobs.iter().enumerate() {
            let kind = if i == 0 {
                BlobKind::Config
            } else {
                BlobKind::Layer
            };
            if !seen.insert(blob.digest) {
                continue;
            }
            if op.cancelled() {
                return Err(op.error("push blobs", None, "cancelled"));
            }
            let from = mount_sources(store, &blob.digest, &dest_name, &registry_prefix)?;
            for repo in &from {
                let scope = repository_scope(repo, false);
                if !op.scopes.contains(&scope) {
                    op.scopes.push(scope);
                }
            }
            if !store.has_blob(&blob.digest) {
                if blob_exists(&op, &blob.digest)? {
                    report.existing += 1;
                    continue;
                }
                if from.is_empty() {
                    fetch_missing(blob)?;
                }
            }
            reporter.report(Event::BlobStarted {
                digest: blob.digest,
                size: blob.size,
                kind,
            });
            let outcome = match push_blob(&op, store, blob, &from) {
                Err(Error::BlobNotFound { .. }) if !from.is_empty() => {
                    // The mount did not happen and the store lacks it: fetch, then upload.
                    fetch_missing(blob)?;
                    push_blob(&op, store, blob, &[])?
                }
                other => other?,
            };
            report.count(&outcome, blob.size);
            reporter.report(Event::BlobDone {
                digest: blob.digest,
                size: blob.size,
                kind,
                outcome,
            });
            if store.has_blob(&blob.digest) {
                store.record_blob_source(&blob.digest, &dest_name)?;
            }
        }
        put_manifest(&op, &target, &manifest, &upload.bytes, dest)?;
        reporter.report(Event::ManifestPushed {
            reference: dest.clone(),
            manifest: manifest.clone(),
        });
        Ok(report)
    }
}
