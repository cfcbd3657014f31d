//! Pull: registry -> store.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use ureq::http::Method;

use super::auth::repository_scope;
use super::manifest::{self, accept_header, pick_platform, Fetched, Manifest, Platform};
use super::transport::{header, Call, Op};
use super::{parallel, BlobKind, BlobOutcome, Client, Event, Progress, Reporter};
use crate::blob::BlobInfo;
use crate::config::ImageConfig;
use crate::descriptor::Descriptor;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::layer::LayerInfo;
use crate::media::Compression;
use crate::reference::Reference;
use crate::store::{Store, MAX_JSON_BLOB};

/// Options of [`Client::pull`].
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// The platform to pick from an index (`None`: the host's).
    pub platform: Option<Platform>,
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct PullReport {
    /// What was pulled (and the tag it got).
    pub reference: Reference,
    /// The registry's manifest (after picking a platform).
    pub remote_manifest: Descriptor,
    /// The stored image. Its manifest is the registry's, byte for byte, unless a layer was
    /// reused from another blob of the store.
    pub image: Image,
    /// Blobs downloaded (config and layers).
    pub downloaded: usize,
    /// Bytes downloaded.
    pub bytes_downloaded: u64,
    /// Blobs not downloaded because the store had them (or had the same layer).
    pub existing: usize,
}

/// How a layer of the image will be had.
enum Plan {
    /// The store has this very blob.
    Have(LayerInfo),
    /// The store has the layer in another blob.
    Reuse(LayerInfo),
    /// Download it.
    Fetch,
}

impl Client {
    /// Pull `reference` into `store` and tag it there (under the same reference). See the
    /// module docs for what is and is not downloaded. On error nothing is tagged; blobs that
    /// were completed and verified stay (a retry does not fetch them again) until GC.
    pub fn pull(
        &self,
        store: &Store,
        reference: &Reference,
        options: &PullOptions,
        reporter: &dyn Reporter,
    ) -> Result<PullReport> {
        let _lease = store.lease()?;
        let remote = self.remote(reference.domain())?;
        let cancel = AtomicBool::new(false);
        let op = Op {
            remote: &remote,
            repository: reference.path().to_string(),
            scopes: vec![repository_scope(reference.path(), false)],
            reporter,
            cancel: &cancel,
        };
        let want = options.platform.clone().unwrap_or_else(Platform::host);
        let pinned = reference.digest();
        let target = match (pinned, reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        let (mut desc, mut bytes, fetched) = fetch_manifest(&op, &target, pinned)?;
        let manifest: Manifest = match fetched {
            Fetched::Manifest(m) => m,
            Fetched::Index(entries) => {
                let pick = pick_platform(&entries, &want).ok_or_else(|| {
                    let have: Vec<String> = entries
                        .iter()
                        .filter_map(|(_, p)| p.as_ref().map(ToString::to_string))
                        .collect();
                    op.error(
                        &format!("pick a platform from the index {target}"),
                        None,
                        format!(
                            "no image for {want} (the index has: {})",
                            if have.is_empty() {
                                "none".into()
                            } else {
                                have.join(", ")
                            }
                        ),
                    )
                })?;
                let d = pick.digest;
                let (d2, b2, f2) = fetch_manifest(&op, &d.to_string(), Some(d))?;
                match f2 {
                    Fetched::Manifest(m) => {
                        desc = d2;
                        bytes = b2;
                        m
                    }
                    Fetched::Index(_) => {
                        return Err(op.error(
                            &format!("fetch manifest {d}"),
                            None,
                            "an index entry for the platform is another index",
                        ))
                    }
                }
            }
        };
        reporter.report(Event::Resolved {
            reference: reference.clone(),
            manifest: desc.clone(),
        });
        let source = reference.name();
        let mut downloaded = 0usize;
        let mut bytes_downloaded = 0u64;
        let mut existing = 0usize;

        // The config first: its diffIDs say which layers the store already has.
        let config = &manifest.config;
        if config.size > MAX_JSON_BLOB {
            return Err(op.error(
                &format!("fetch config {}", config.digest),
                None,
                format!(
                    "the config declares {} bytes, more than a config may have",
                    config.size
                ),
            ));
        }
        reporter.report(Event::BlobStarted {
            digest: config.digest,
            size: config.size,
            kind: BlobKind::Config,
        });
        let outcome = if store.has_blob(&config.digest) {
            existing += 1;
            BlobOutcome::AlreadyStored
        } else {
            let progress = Progress::new(reporter, config.digest, config.size);
            download(&op, store, config, None, &progress)?;
            downloaded += 1;
            bytes_downloaded += config.size;
            BlobOutcome::Downloaded
        };
        reporter.report(Event::BlobDone {
            digest: config.digest,
            size: config.size,
            kind: BlobKind::Config,
            outcome,
        });
        let config_bytes = store.read_blob(&config.digest)?;
        let parsed = ImageConfig::parse(&config_bytes)
            .map_err(|e| Error::content(format!("config {}", config.digest), e.to_string()))?;
        let diff_ids = parsed.diff_ids()?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::content(
                format!("manifest {} of {reference}", desc.digest),
                format!(
                    "{} layers but the config lists {} diffIDs",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            ));
        }

        // Decide per layer, then fetch what is missing in parallel.
        let mut plans = Vec::with_capacity(diff_ids.len());
        for (i, (layer, diff_id)) in manifest.layers.iter().zip(&diff_ids).enumerate() {
            let plan = if store.has_blob(&layer.digest) {
                let info = match store
                    .layer_blobs(diff_id)?
                    .into_iter()
                    .find(|l| l.digest == layer.digest)
                {
                    Some(info) => info,
                    None => store.index_layer_blob(&layer.digest)?,
                };
                if info.diff_id != *diff_id {
                    return Err(Error::content(
                        format!("layer {i} ({}) of {reference}", layer.digest),
                        format!(
                            "holds diffID {} but the config says {diff_id}",
                            info.diff_id
                        ),
                    ));
                }
                Plan::Have(info)
            } else if pinned.is_none() {
                match store.layer_blobs(diff_id)?.into_iter().next() {
                    Some(info) => Plan::Reuse(info),
                    None => Plan::Fetch,
                }
            } else {
                Plan::Fetch
            };
            plans.push(plan);
        }
        let jobs: Vec<(usize, &Descriptor, Digest)> = manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .enumerate()
            .filter(|(i, _)| matches!(plans[*i], Plan::Fetch))
            .map(|(i, (l, d))| (i, l, *d))
            .collect();
        for (layer, plan) in manifest.layers.iter().zip(&plans) {
            let outcome = match plan {
                Plan::Fetch => continue,
                Plan::Have(_) => BlobOutcome::AlreadyStored,
                Plan::Reuse(info) => BlobOutcome::LayerReused { blob: info.digest },
            };
            existing += 1;
            reporter.report(Event::BlobStarted {
                digest: layer.digest,
                size: layer.size,
                kind: BlobKind::Layer,
            });
            reporter.report(Event::BlobDone {
                digest: layer.digest,
                size: layer.size,
                kind: BlobKind::Layer,
                outcome,
            });
        }
        let fetched = parallel(
            &jobs,
            self.options.max_concurrent,
            &cancel,
            |(_, layer, diff_id)| {
                reporter.report(Event::BlobStarted {
                    digest: layer.digest,
                    size: layer.size,
                    kind: BlobKind::Layer,
                });
                let progress = Progress::new(reporter, layer.digest, layer.size);
                let (_, info) = download(&op, store, layer, Some(*diff_id), &progress)?;
                reporter.report(Event::BlobDone {
                    digest: layer.digest,
                    size: layer.size,
                    kind: BlobKind::Layer,
                    outcome: BlobOutcome::Downloaded,
                });
                info.ok_or_else(|| {
                    Error::content(format!("layer {}", layer.digest), "no layer record")
                })
            },
        )?;
        downloaded += fetched.len();
        bytes_downloaded += jobs.iter().map(|(_, l, _)| l.size).sum::<u64>();
        let mut fetched = fetched.into_iter();
        let mut layers: Vec<LayerInfo> = Vec::with_capacity(plans.len());
        let mut reused = false;
        for plan in plans {
            layers.push(match plan {
                Plan::Have(info) => info,
                Plan::Reuse(info) => {
                    reused = true;
                    info
                }
                Plan::Fetch => fetched
                    .next()
                    .ok_or_else(|| Error::content("pull", "a fetched layer is missing"))?,
            });
        }

        // Everything is here and verified: the manifest, then the tag.
        let stored = if reused {
            let descriptors: Vec<Descriptor> = layers.iter().map(LayerInfo::descriptor).collect();
            store.write_image_raw(&config_bytes, &descriptors)?.manifest
        } else {
            let info = store.write_blob(&bytes)?;
            Descriptor::new(manifest.media_type.clone(), info.digest, info.size)
        };
        let image = store.image(&stored)?;
        store.record_blob_source(&manifest.config.digest, &source)?;
        for l in &manifest.layers {
            if store.has_blob(&l.digest) {
                store.record_blob_source(&l.digest, &source)?;
            }
        }
        store.tag(reference, &image)?;
        reporter.report(Event::Tagged {
            reference: reference.clone(),
            id: image.id(),
        });
        Ok(PullReport {
            reference: reference.clone(),
            remote_manifest: desc,
            image,
            downloaded,
            bytes_downloaded,
            existing,
        })
    }
}

/// GET a manifest (by tag or digest) and check it: against the pinned digest, and against
/// the registry's `Docker-Content-Digest` when it sends one.
pub(super) fn fetch_manifest(
    op: &Op<'_>,
    target: &str,
    pinned: Option<Digest>,
) -> Result<(Descriptor, Vec<u8>, Fetched)> {
    let action = format!("fetch manifest {target}");
    let call = Call::new(Method::GET, op.url(&format!("manifests/{target}"))?)
        .header("accept", accept_header());
    let resp = op.send(&action, &call)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(op.status_error(&action, resp));
    }
    let content_type = header(&resp, "content-type").unwrap_or_default();
    let announced = header(&resp, "docker-content-digest");
    let bytes = resp
        .into_body()
        .into_with_config()
        .limit(MAX_JSON_BLOB)
        .read_to_vec()
        .map_err(|e| op.error(&action, Some(status), e.to_string()))?;
    let digest = Digest::of(&bytes);
    if let Some(p) = pinned {
        if p != digest {
            return Err(Error::DigestMismatch {
                what: format!(
                    "manifest {target} from {}/{}",
                    op.remote.name, op.repository
                ),
                expected: p,
                actual: digest,
            });
        }
    }
    if let Some(a) = announced
        .as_deref()
        .and_then(|a| Digest::parse(a.trim()).ok())
    {
        if a != digest {
            return Err(Error::DigestMismatch {
                what: format!(
                    "manifest {target} from {}/{} (its Docker-Content-Digest header)",
                    op.remote.name, op.repository
                ),
                expected: a,
                actual: digest,
            });
        }
    }
    let what = format!("manifest {target} of {}/{}", op.remote.name, op.repository);
    let fetched = manifest::parse(&bytes, &content_type, &what)?;
    let media_type = match &fetched {
        Fetched::Manifest(m) => m.media_type.clone(),
        Fetched::Index(_) => crate::media::OCI_INDEX.to_string(),
    };
    let size = bytes.len() as u64;
    Ok((Descriptor::new(media_type, digest, size), bytes, fetched))
}

/// A reader over chunks sent through a channel (the decompressing side of [`DiffPipe`]).
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What a [`DiffPipe`] learned.
struct Decoded {
    compression: Compression,
    diff_id: Option<Digest>,
    uncompressed: u64,
}

/// Computes a layer's diffID on another thread while its blob streams in: the downloader
/// hands over each chunk; the thread sniffs the compression, decompresses and hashes.
struct DiffPipe {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<io::Result<Decoded>>>,
}

impl DiffPipe {
    fn new() -> DiffPipe {
        let (tx, rx) = sync_channel::<Vec<u8>>(8);
        let thread = std::thread::spawn(move || -> io::Result<Decoded> {
            let mut input = BufReader::with_capacity(
                1 << 16,
                ChannelReader {
                    rx,
                    chunk: Vec::new(),
                    pos: 0,
                },
            );
            let compression = Compression::sniff(input.fill_buf()?);
            let mut hasher = HashSink {
                hasher: Hasher::new(),
                size: 0,
            };
            match compression {
                // A plain layer's diffID is its blob digest, hashed by the blob writer already.
                Compression::None => {
                    let n = io::copy(&mut input, &mut io::sink())?;
                    return Ok(Decoded {
                        compression,
                        diff_id: None,
                        uncompressed: n,
                    });
                }
                Compression::Gzip => {
                    io::copy(&mut flate2::read::MultiGzDecoder::new(input), &mut hasher)?;
                }
                Compression::Zstd => {
                    io::copy(
                        &mut zstd::stream::read::Decoder::with_buffer(input)?,
                        &mut hasher,
                    )?;
                }
            }
            Ok(Decoded {
                compression,
                diff_id: Some(hasher.hasher.finish()),
                uncompressed: hasher.size,
            })
        });
        DiffPipe {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if let Some(tx) = &self.tx {
            if tx.send(data.to_vec()).is_err() {
                // The decoder stopped (bad data or end of stream); `finish` says which.
                self.tx = None;
            }
        }
    }

    fn finish(mut self) -> io::Result<Decoded> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the layer decoder thread panicked")),
        }
    }
}

impl Drop for DiffPipe {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct HashSink {
    hasher: Hasher,
    size: u64,
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

/// Download one blob into the store through the verified ingest path, resuming with `Range`
/// after a cut (a registry that ignores `Range` makes it start over). For a layer
/// (`expect_diff`), the diffID is computed in the same pass and must match before the blob
/// becomes visible; the layer record is written after.
pub(super) fn download(
    op: &Op<'_>,
    store: &Store,
    desc: &Descriptor,
    expect_diff: Option<Digest>,
    progress: &Progress<'_>,
) -> Result<(BlobInfo, Option<LayerInfo>)> {
    let action = format!("fetch blob {}", desc.digest);
    let url = op.url(&format!("blobs/{}", desc.digest))?;
    let mut restarts = 0u32;
    'fresh: loop {
        let mut writer = store.blob_writer_expecting(desc.digest, Some(desc.size))?;
        writer.describe(format!(
            "blob {} from {}/{}",
            desc.digest, op.remote.name, op.repository
        ));
        let mut pipe = expect_diff.map(|_| DiffPipe::new());
        let mut done = 0u64;
        let mut failures = 0u32;
        let mut done_at_failure = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let mut call = Call::new(Method::GET, url.clone());
            if done > 0 {
                call = call.header("range", format!("bytes={done}-"));
            }
            let resp = op.send(&action, &call)?;
            let status = resp.status().as_u16();
            let resumed_ok = status == 206
                && done > 0
                && header(&resp, "content-range").and_then(|v| content_range_start(&v))
                    == Some(done);
            match status {
                200 if done == 0 => {}
                _ if resumed_ok => {}
                200 | 206 => {
                    // The registry ignored or garbled the range: start over, a few times.
                    restarts += 1;
                    if restarts > op.attempts() {
                        return Err(op.error(
                            &action,
                            Some(status),
                            "the registry does not resume downloads and the connection keeps failing",
                        ));
                    }
                    continue 'fresh;
                }
                404 => {
                    let reason = super::transport::describe_status(404, &mut { resp });
                    return Err(op.error(
                        &action,
                        Some(404),
                        format!("{reason} (the manifest names a blob the registry does not have)"),
                    ));
                }
                _ => return Err(op.status_error(&action, resp)),
            }
            let mut reader = resp.into_body().into_reader();
            let cut = loop {
                if op.cancelled() {
                    return Err(op.error(&action, None, "cancelled after another transfer failed"));
                }
                match reader.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        writer
                            .write_all(&buf[..n])
                            .map_err(|e| op.error(&action, Some(status), format!("{e}")))?;
                        if let Some(p) = &mut pipe {
                            p.feed(&buf[..n]);
                        }
                        done += n as u64;
                        progress.update(done);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e.to_string()),
                }
            };
            let why = match cut {
                None if done == desc.size => break,
                None => format!("the connection closed after {done} of {} bytes", desc.size),
                Some(e) => format!("{e} (after {done} of {} bytes)", desc.size),
            };
            // Attempts count failures without progress; a slow but moving transfer goes on.
            if done > done_at_failure {
                failures = 0;
            }
            done_at_failure = done;
            failures += 1;
            if failures >= op.attempts() || op.cancelled() {
                return Err(op.error(&action, None, why));
            }
            op.backoff(&action, failures, &why);
        }
        let actual = writer.digest();
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                what: format!("blob from {}/{}", op.remote.name, op.repository),
                expected: desc.digest,
                actual,
            });
        }
        let layer = match (pipe, expect_diff) {
            (Some(pipe), Some(expected)) => {
                let decoded = pipe.finish().map_err(|e| {
                    Error::content(
                        format!(
                            "layer {} from {}/{}",
                            desc.digest, op.remote.name, op.repository
                        ),
                        format!("cannot be decompressed: {e}"),
                    )
                })?;
                let diff_id = decoded.diff_id.unwrap_or(actual);
                if diff_id != expected {
                    return Err(Error::DiffIdMismatch {
                        blob: desc.digest,
                        expected,
                        actual: diff_id,
                    });
                }
                Some(LayerInfo {
                    diff_id,
                    digest: desc.digest,
                    size: desc.size,
                    uncompressed_size: decoded.uncompressed,
                    media_type: decoded.compression.oci_media_type().to_string(),
                })
            }
            _ => None,
        };
        let info = writer.commit()?;
        if let Some(l) = &layer {
            store.record_layer(l)?;
        }
        return Ok((info, layer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes=5-"), None);
        assert_eq!(content_range_start("junk"), None);
    }

    #[test]
    fn the_diff_pipe_hashes_what_it_decompresses() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 97) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for (blob, c) in [(&gz, Compression::Gzip), (&zst, Compression::Zstd)] {
            let mut p = DiffPipe::new();
            for chunk in blob.chunks(100_000) {
                p.feed(chunk);
            }
            let d = p.finish().unwrap();
            assert_eq!(d.compression, c);
            assert_eq!(d.diff_id, Some(Digest::of(&data)));
            assert_eq!(d.uncompressed, data.len() as u64);
        }
        let mut p = DiffPipe::new();
        p.feed(b"plain tar bytes");
        let d = p.finish().unwrap();
        assert_eq!((d.compression, d.diff_id), (Compression::None, None));
        // Corrupt compressed data is an error, not a wrong digest.
        let mut p = DiffPipe::new();
        let mut bad = gz.clone();
        bad.truncate(gz.len() / 2);
        p.feed(&bad);
        assert!(p.finish().is_err());
        // Dropping a pipe midway does not hang.
        let mut p = DiffPipe::new();
        p.feed(&zst[..zst.len() / 2]);
        drop(p);
    }
}
