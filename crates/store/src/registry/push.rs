//! Push: store -> registry.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::sync::atomic::AtomicBool;

use ureq::http::Method;

use super::auth::repository_scope;
use super::manifest::accept_header;
use super::transport::{
    describe_status, drain, header, join_location, retryable_status, with_query, Call, Op, Payload,
};
use super::{parallel, BlobKind, BlobOutcome, Client, Event, Progress, Reporter};
use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::layer::LayerInfo;
use crate::media::Compression;
use crate::reference::Reference;
use crate::store::Store;

/// Options of [`Client::push`].
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Push every layer with this compression, converting (once; the converted blobs are
    /// kept in the store) those stored otherwise. `None`: push the blobs as stored.
    /// `Some(Gzip)` is for clients without zstd support (Docker before 23).
    pub compression: Option<Compression>,
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushReport {
    /// Where it went.
    pub reference: Reference,
    /// The manifest pushed.
    pub manifest: Descriptor,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs the registry already had.
    pub existing: usize,
    /// The registry already had this manifest under this tag: nothing was sent.
    pub up_to_date: bool,
}

impl PushReport {
    /// A report of nothing done yet.
    pub(super) fn new(reference: &Reference, manifest: &Descriptor) -> PushReport {
        PushReport {
            reference: reference.clone(),
            manifest: manifest.clone(),
            uploaded: 0,
            bytes_uploaded: 0,
            mounted: 0,
            existing: 0,
            up_to_date: false,
        }
    }

    /// Counts one blob of `size` bytes that ended as `outcome`.
    pub(super) fn count(&mut self, outcome: &BlobOutcome, size: u64) {
        match outcome {
            BlobOutcome::Uploaded => {
                self.uploaded += 1;
                self.bytes_uploaded += size;
            }
            BlobOutcome::Mounted { .. } => self.mounted += 1,
            _ => self.existing += 1,
        }
    }
}

/// The other repositories of the registry at `registry_prefix` that the store knows hold
/// `digest` (cross-repository mount sources), at most [`MAX_MOUNT_SOURCES`].
pub(super) fn mount_sources(
    store: &Store,
    digest: &Digest,
    dest_name: &str,
    registry_prefix: &str,
) -> Result<Vec<String>> {
    let mut from: Vec<String> = store
        .blob_sources(digest)?
        .into_iter()
        .filter(|s| s != dest_name)
        .filter_map(|s| s.strip_prefix(registry_prefix).map(str::to_string))
        .collect();
    from.truncate(MAX_MOUNT_SOURCES);
    Ok(from)
}

/// The manifest path segment a push to `reference` uses: its digest, else its tag, else
/// `latest`.
pub(super) fn manifest_target(reference: &Reference) -> String {
    match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".to_string(),
    }
}

/// Why one upload session failed.
enum UploadError {
    /// Worth a fresh session (connection cut, 5xx, the session vanished).
    Transient(String),
    /// Not worth retrying.
    Fatal(Error),
}

/// How many other repositories to try mounting a blob from.
pub(super) const MAX_MOUNT_SOURCES: usize = 3;

impl Client {
    /// Push `image` from `store` to `dest` (a tag or a digest reference). See the module docs.
    pub fn push(
        &self,
        store: &Store,
        image: &Image,
        dest: &Reference,
        options: &PushOptions,
        reporter: &dyn Reporter,
    ) -> Result<PushReport> {
        let _lease = store.lease()?;
        let (manifest, manifest_bytes, layers) = push_form(store, image, options.compression)?;
        let remote = self.remote(dest.domain())?;
        let registry_prefix = format!("{}/", dest.domain());
        let dest_name = dest.name();

        // Blobs, each with the other repositories of this registry known to hold it.
        let mut blobs: Vec<(Descriptor, BlobKind, Vec<String>)> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut source_repos = BTreeSet::new();
        for (d, kind) in std::iter::once((&image.config, BlobKind::Config))
            .chain(layers.iter().map(|l| (l, BlobKind::Layer)))
        {
            if !seen.insert(d.digest) {
                continue;
            }
            let from = mount_sources(store, &d.digest, &dest_name, &registry_prefix)?;
            source_repos.extend(from.iter().cloned());
            blobs.push((d.clone(), kind, from));
        }
        let mut scopes = vec![repository_scope(dest.path(), true)];
        scopes.extend(source_repos.iter().map(|r| repository_scope(r, false)));
        let cancel = AtomicBool::new(false);
        let op = Op {
            remote: &remote,
            repository: dest.path().to_string(),
            scopes,
            reporter,
            cancel: &cancel,
        };
        let target = manifest_target(dest);
        if let Some(d) = dest.digest() {
            if d != manifest.digest {
                return Err(Error::DigestMismatch {
                    what: format!("push of {dest}: the image's manifest"),
                    expected: d,
                    actual: manifest.digest,
                });
            }
        }

        let mut report = PushReport::new(dest, &manifest);
        // An unchanged image: the registry already has this manifest under this tag, so it
        // has every blob it references.
        if remote_manifest_digest(&op, &target)? == Some(manifest.digest) {
            report.up_to_date = true;
            report.existing = blobs.len();
            record_sources(store, &blobs, &manifest, &dest_name)?;
            return Ok(report);
        }

        let outcomes = parallel(
            &blobs,
            self.options.max_concurrent,
            &cancel,
            |(d, kind, from)| {
                reporter.report(Event::BlobStarted {
                    digest: d.digest,
                    size: d.size,
                    kind: *kind,
                });
                let outcome = push_blob(&op, store, d, from)?;
                reporter.report(Event::BlobDone {
                    digest: d.digest,
                    size: d.size,
                    kind: *kind,
                    outcome: outcome.clone(),
                });
                Ok(outcome)
            },
        )?;
        for ((d, _, _), outcome) in blobs.iter().zip(&outcomes) {
            report.count(outcome, d.size);
        }

        // The manifest last: the registry checks that every blob it names is there.
        put_manifest(&op, &target, &manifest, &manifest_bytes, dest)?;
        record_sources(store, &blobs, &manifest, &dest_name)?;
        reporter.report(Event::ManifestPushed {
            reference: dest.clone(),
            manifest: manifest.clone(),
        });
        Ok(report)
    }
}

/// `PUT` a manifest under `target` (a tag or its digest) and check the digest the registry
/// answers with.
pub(super) fn put_manifest(
    op: &Op<'_>,
    target: &str,
    manifest: &Descriptor,
    bytes: &[u8],
    dest: &Reference,
) -> Result<()> {
    let action = format!("push manifest {target}");
    let call = Call::new(Method::PUT, op.url(&format!("manifests/{target}"))?)
        .header("content-type", manifest.media_type.clone())
        .payload(Payload::Bytes(bytes));
    let resp = op.send(&action, &call)?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(op.status_error(&action, resp));
    }
    if let Some(a) =
        header(&resp, "docker-content-digest").and_then(|a| Digest::parse(a.trim()).ok())
    {
        if a != manifest.digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest pushed to {dest} (the registry's Docker-Content-Digest)"),
                expected: manifest.digest,
                actual: a,
            });
        }
    }
    drain(resp);
    Ok(())
}

fn record_sources(
    store: &Store,
    blobs: &[(Descriptor, BlobKind, Vec<String>)],
    manifest: &Descriptor,
    dest_name: &str,
) -> Result<()> {
    for (d, _, _) in blobs {
        store.record_blob_source(&d.digest, dest_name)?;
    }
    store.record_blob_source(&manifest.digest, dest_name)
}

/// The manifest, its bytes and its layers as they will be pushed: the stored ones, or with
/// every layer converted to `compression`.
fn push_form(
    store: &Store,
    image: &Image,
    compression: Option<Compression>,
) -> Result<(Descriptor, Vec<u8>, Vec<Descriptor>)> {
    let convert = compression.filter(|c| {
        image
            .layers
            .iter()
            .any(|l| crate::media::layer_compression(&l.media_type) != Some(*c))
    });
    let Some(c) = convert else {
        let bytes = store.read_blob(&image.manifest.digest)?;
        return Ok((image.manifest.clone(), bytes, image.layers.clone()));
    };
    let mut layers = Vec::with_capacity(image.layers.len());
    for (blob, diff_id) in image.layers.iter().zip(&image.diff_ids) {
        let info: LayerInfo = match store.layer_blob(diff_id, c)? {
            Some(info) => info,
            None => {
                let mut reader = store.open_layer(&blob.digest, diff_id)?;
                let mut w = store.layer_writer(c)?;
                io::copy(&mut reader, &mut w)
                    .map_err(|e| Error::stream(format!("recompress layer {}", blob.digest), e))?;
                w.finish()?
            }
        };
        layers.push(info.descriptor());
    }
    let converted = store.write_image_raw(&image.config_bytes, &layers)?;
    let bytes = store.read_blob(&converted.manifest.digest)?;
    Ok((converted.manifest, bytes, layers))
}

/// The digest the registry has under `target`, if any (`HEAD` of the manifest).
pub(super) fn remote_manifest_digest(op: &Op<'_>, target: &str) -> Result<Option<Digest>> {
    let action = format!("check manifest {target}");
    let call = Call::new(Method::HEAD, op.url(&format!("manifests/{target}"))?)
        .header("accept", accept_header());
    let resp = op.send(&action, &call)?;
    let status = resp.status().as_u16();
    match status {
        200 => {
            Ok(header(&resp, "docker-content-digest").and_then(|d| Digest::parse(d.trim()).ok()))
        }
        404 => Ok(None),
        401 | 403 => Err(op.status_error(&action, resp)),
        // Anything else only loses the shortcut.
        _ => Ok(None),
    }
}

/// Make sure the registry has one blob: `HEAD`, else mount, else upload.
pub(super) fn push_blob(
    op: &Op<'_>,
    store: &Store,
    desc: &Descriptor,
    from: &[String],
) -> Result<BlobOutcome> {
    let d = desc.digest;
    if blob_exists(op, &d)? {
        return Ok(BlobOutcome::AlreadyInRegistry);
    }
    let base = op.remote.base(op)?;
    let uploads = op.url("blobs/uploads/")?;
    let mut location = None;
    for repo in from {
        let action = format!("mount blob {d} from {repo}");
        let url = with_query(&uploads, &[("mount", &d.to_string()), ("from", repo)]);
        let resp = op.send(&action, &Call::new(Method::POST, url))?;
        match resp.status().as_u16() {
            201 => {
                drain(resp);
                return Ok(BlobOutcome::Mounted { from: repo.clone() });
            }
            // Not mounted (no access to the source, or it is gone): the registry opened an
            // upload session instead.
            202 => {
                location = header(&resp, "location").map(|l| join_location(&base, &l));
                drain(resp);
                break;
            }
            _ => drain(resp),
        }
    }
    let file = store.open_blob(&d)?;
    let progress = Progress::new(op.reporter, d, desc.size);
    let action = format!("upload blob {d}");
    let mut failures = 0u32;
    loop {
        let loc = match location.take() {
            Some(l) => l,
            None => start_upload(op, &base, &uploads)?,
        };
        match upload(op, &file, desc, &loc, &progress) {
            Ok(()) => return Ok(BlobOutcome::Uploaded),
            Err(UploadError::Fatal(e)) => return Err(e),
            Err(UploadError::Transient(why)) => {
                failures += 1;
                if failures >= op.attempts() || op.cancelled() {
                    return Err(op.error(&action, None, why));
                }
                op.backoff(&action, failures, &why);
            }
        }
    }
}

pub(super) fn blob_exists(op: &Op<'_>, d: &Digest) -> Result<bool> {
    let action = format!("check blob {d}");
    let resp = op.send(
        &action,
        &Call::new(Method::HEAD, op.url(&format!("blobs/{d}"))?),
    )?;
    match resp.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(op.status_error(&action, resp)),
    }
}

/// `POST .../blobs/uploads/`: a new upload session's URL.
fn start_upload(op: &Op<'_>, base: &str, uploads: &str) -> Result<String> {
    let action = "start a blob upload";
    let resp = op.send(action, &Call::new(Method::POST, uploads.to_string()))?;
    let status = resp.status().as_u16();
    if status != 202 {
        return Err(op.status_error(action, resp));
    }
    let loc = header(&resp, "location")
        .ok_or_else(|| op.error(action, Some(status), "the answer has no Location header"))?;
    drain(resp);
    Ok(join_location(base, &loc))
}

/// How many bytes a registry holds, from its `Range: 0-<last>` header. Distribution answers
/// `0-0` for an empty upload as well as for a one-byte one; it is taken as empty (chunks are
/// never one byte, and a wrong guess ends in a refused digest and a fresh upload, never in a
/// stored blob that differs from ours).
fn range_held(value: &str) -> Option<u64> {
    range_end(value).map(|end| if end == 0 { 0 } else { end + 1 })
}

/// The last byte of a `Range: 0-<last>` header.
fn range_end(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (start, end) = v.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse().ok()
}

/// One upload session: a single `PUT` for a small blob; otherwise `PATCH` chunks, resuming
/// where the registry's `Range` says after a failure, then the closing `PUT ?digest=`.
fn upload(
    op: &Op<'_>,
    file: &File,
    desc: &Descriptor,
    location: &str,
    progress: &Progress<'_>,
) -> Result<(), UploadError> {
    let d = desc.digest;
    let size = desc.size;
    let opts = op.remote.options.as_ref();
    let digest_text = d.to_string();
    let base = op.remote.base(op).map_err(UploadError::Fatal)?;
    let fatal = UploadError::Fatal;

    if size <= opts.monolithic_max {
        let action = format!("upload blob {d}");
        let report = |n: u64| progress.update(n);
        let call = Call::new(
            Method::PUT,
            with_query(location, &[("digest", &digest_text)]),
        )
        .header("content-type", "application/octet-stream")
        .payload(Payload::File {
            file,
            offset: 0,
            len: size,
            progress: Some(&report),
        })
        .no_retry();
        return match op.send_once(&action, &call).map_err(fatal)? {
            Err(e) => Err(UploadError::Transient(e.to_string())),
            Ok(resp) => finish_status(op, &action, resp, false),
        };
    }

    let mut loc = location.to_string();
    let mut offset = 0u64;
    let mut failures = 0u32;
    while offset < size {
        let n = if opts.chunk_size == 0 {
            size - offset
        } else {
            opts.chunk_size.min(size - offset)
        };
        let action = format!("upload blob {d} (bytes {offset}-{})", offset + n - 1);
        let start = offset;
        let report = move |k: u64| progress.update(start + k);
        let call = Call::new(Method::PATCH, loc.clone())
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{}", offset + n - 1))
            .payload(Payload::File {
                file,
                offset,
                len: n,
                progress: Some(&report),
            })
            .no_retry();
        let why = match op.send_once(&action, &call).map_err(fatal)? {
            Ok(resp) if resp.status().as_u16() == 202 => {
                if let Some(l) = header(&resp, "location") {
                    loc = join_location(&base, &l);
                }
                let held = header(&resp, "range").and_then(|r| range_held(&r));
                drain(resp);
                offset = match held {
                    Some(h) if h < offset + n => h,
                    _ => offset + n,
                };
                continue;
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                if !(retryable_status(status) || status == 416) {
                    return Err(fatal(op.status_error(&action, resp)));
                }
                let mut resp = resp;
                describe_status(status, &mut resp)
            }
            Err(e) => e.to_string(),
        };
        // Ask the registry how much it holds, and go on from there.
        failures += 1;
        if failures >= op.attempts() || op.cancelled() {
            return Err(UploadError::Transient(why));
        }
        op.backoff(&action, failures, &why);
        let status_call = Call::new(Method::GET, loc.clone());
        let resp = match op
            .send_once("check the upload", &status_call)
            .map_err(fatal)?
        {
            Ok(r) => r,
            Err(e) => return Err(UploadError::Transient(format!("{why}; then {e}"))),
        };
        if resp.status().as_u16() != 204 {
            // The session is gone (distribution drops it when a PATCH broke off midway).
            drain(resp);
            return Err(UploadError::Transient(why));
        }
        if let Some(l) = header(&resp, "location") {
            loc = join_location(&base, &l);
        }
        let held = header(&resp, "range").and_then(|r| range_held(&r));
        drain(resp);
        let resumed = held.unwrap_or(0);
        if resumed > size {
            return Err(UploadError::Transient(why));
        }
        if resumed > offset {
            failures = 0;
        }
        offset = resumed;
    }
    let action = format!("finish the upload of blob {d}");
    let call = Call::new(Method::PUT, with_query(&loc, &[("digest", &digest_text)])).no_retry();
    match op.send_once(&action, &call).map_err(fatal)? {
        Ok(resp) => finish_status(op, &action, resp, true),
        // The answer was lost: the registry may have the blob already.
        Err(e) => match blob_exists(op, &d) {
            Ok(true) => Ok(()),
            _ => Err(UploadError::Transient(e.to_string())),
        },
    }
}

/// Judge the answer to the closing `PUT` of an upload. After `PATCH`es, a refused digest
/// means the session's bytes went wrong on the way (a registry that does not check
/// `Content-Range`, a chunk cut midway): worth a fresh session.
fn finish_status(
    op: &Op<'_>,
    action: &str,
    resp: ureq::http::Response<ureq::Body>,
    chunked: bool,
) -> Result<(), UploadError> {
    let status = resp.status().as_u16();
    if status == 201 || status == 204 || status == 200 {
        drain(resp);
        return Ok(());
    }
    if retryable_status(status) || status == 404 || (chunked && status == 400) {
        // 404: the session vanished (e.g. a retried PUT whose first try went through).
        let mut resp = resp;
        return Err(UploadError::Transient(describe_status(status, &mut resp)));
    }
    Err(UploadError::Fatal(op.status_error(action, resp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_last_byte_held() {
        assert_eq!(range_end("0-99"), Some(99));
        assert_eq!(range_held("0-99"), Some(100));
        assert_eq!(range_held("0-0"), Some(0));
        assert_eq!(range_end("bytes=0-0"), Some(0));
        assert_eq!(range_end("5-9"), None);
        assert_eq!(range_end("junk"), None);
    }

    #[test]
    fn push_form_converts_layers_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let tar = vec![1u8; 4096];
        let image = s
            .import(&tar[..], &crate::ImageConfig::default(), Compression::Zstd)
            .unwrap();
        let (m, bytes, layers) = push_form(&s, &image, None).unwrap();
        assert_eq!(m, image.manifest);
        assert_eq!(Digest::of(&bytes), m.digest);
        assert_eq!(layers, image.layers);
        let (m2, bytes2, layers2) = push_form(&s, &image, Some(Compression::Gzip)).unwrap();
        assert_ne!(m2.digest, m.digest);
        assert_eq!(Digest::of(&bytes2), m2.digest);
        assert_eq!(layers2[0].media_type, crate::media::OCI_LAYER_GZIP);
        let converted = s.image(&m2).unwrap();
        assert_eq!(converted.id(), image.id());
        // Asked again, the converted blob is reused: same manifest.
        let (m3, _, _) = push_form(&s, &image, Some(Compression::Gzip)).unwrap();
        assert_eq!(m3, m2);
        // Already in that compression: nothing converted.
        let (m4, _, _) = push_form(&s, &image, Some(Compression::Zstd)).unwrap();
        assert_eq!(m4, image.manifest);
    }
}
