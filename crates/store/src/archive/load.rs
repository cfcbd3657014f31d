//! `load`: bring images in from docker (legacy and OCI-inside) and OCI layout archives.
//!
//! One streaming pass over the tar (plain, gzip or zstd; from a file or a pipe): every member
//! that can be content goes through the store's verified ingest path, small metadata members
//! are kept in memory (capped). Members named `blobs/sha256/<hex>` whose content the store
//! already has are skipped unread.
//!
//! Each layer is checked against its config's diffID and reported (one [`LoadEvent`]) as
//! soon as the archive has shown its manifest, its config and the layer itself: as the layer
//! is read when the metadata comes first (as `strata save` writes), at the manifest when it
//! comes last (as Docker writes). The layers are then already in the store, which is the only
//! spool: memory stays bounded either way. Only when the whole archive has been read are the
//! images written and, all being well, tagged together.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::rc::Rc;

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use super::{
    blob_member_digest, normalise_member_name, LoadEvent, LoadOptions, LoadReport, LoadedImage,
};
use crate::config::ImageConfig;
use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::LayerInfo;
use crate::media::{self, Compression};
use crate::reference::Reference;
use crate::refs::{Ref, RefKind, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::store::{Store, MAX_JSON_BLOB};

/// Largest member kept in memory (metadata: manifests, configs, `repositories`).
const MAX_METADATA_MEMBER: u64 = MAX_JSON_BLOB;
/// Largest total of metadata kept in memory.
const MAX_METADATA_TOTAL: u64 = 64 << 20;
/// Most members an archive may have.
const MAX_MEMBERS: usize = 1_000_000;
/// Most times the manifests are re-read as the metadata they name arrives (each re-read
/// parses them again; beyond this, layers are reported at the end of the archive).
const MAX_LEARNS: u32 = 256;

/// What one archive member turned out to be.
#[derive(Clone, Debug)]
enum Content {
    /// Small metadata, in memory.
    Memory(Vec<u8>),
    /// Content now in the store (`existed`: the store had it before this load).
    Blob {
        digest: Digest,
        size: u64,
        compression: Compression,
        existed: bool,
    },
    /// `blobs/sha256/<hex>` skipped unread because the store holds the layer with diffID
    /// `<hex>` in another blob.
    KnownLayer { diff_id: Digest, size: u64 },
    /// A link to another member (normalised target).
    Link(String),
}

/// A writer wrapper that remembers the first bytes written (to sniff compression).
struct Head<W> {
    inner: W,
    head: Vec<u8>,
}

impl<W: Write> Write for Head<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.head.len() < 8 {
            let take = (8 - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// One image found in the archive, ready to be written.
struct Found {
    config: Vec<u8>,
    layers: Vec<Descriptor>,
    /// The archive's own manifest, when it can be kept as is.
    original_manifest: Option<Descriptor>,
    tags: Vec<Reference>,
}

/// One image as its manifest and config describe it.
struct Planned {
    config: Vec<u8>,
    diff_ids: Vec<Digest>,
    /// The member holding each layer.
    layer_members: Vec<String>,
    /// An OCI manifest and the layer descriptors it names (kept if the layers are unchanged).
    manifest: Option<(Descriptor, Vec<Descriptor>)>,
    tags: Vec<Reference>,
}

/// A layer as stored: its descriptor, whether the store had it, its size in the archive.
type Resolved = (Descriptor, bool, u64);

struct Reader<'s, 'e> {
    store: &'s Store,
    options: LoadOptions,
    members: HashMap<String, Content>,
    memory_total: u64,
    /// Layer members the manifests read so far name, with their diffIDs and indexes.
    expected: HashMap<String, Vec<(Digest, usize)>>,
    /// Members the manifests name that had not arrived when they were last read.
    awaited: HashSet<String>,
    learns_left: u32,
    /// Link members by their target.
    links_to: HashMap<String, Vec<String>>,
    /// Layers checked and stored so far, by member and diffID.
    resolved: HashMap<(String, Digest), Resolved>,
    /// diffIDs already reported.
    reported: HashSet<Digest>,
    out: LoadReport,
    report: &'e mut dyn FnMut(LoadEvent),
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed archive, refusing to expand beyond the options' limit.
struct Expansion<R> {
    inner: R,
    out: u64,
    /// Compressed bytes read so far (`None`: the archive is not compressed).
    compressed: Option<Rc<Cell<u64>>>,
    options: LoadOptions,
}

impl<R: Read> Read for Expansion<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let limit = match &self.compressed {
            Some(c) => self.options.limit(c.get()),
            None => self.options.max_uncompressed,
        };
        if self.out > limit {
            return Err(io::Error::other(format!(
                "the archive expands to more than {limit} bytes from {} compressed bytes, \
                 refused as a possible decompression bomb",
                self.compressed.as_ref().map_or(self.out, |c| c.get())
            )));
        }
        Ok(n)
    }
}

impl Store {
    /// Load every image of an archive (see the module docs for the formats) with the default
    /// [`LoadOptions`]. Events go to `report`: one per distinct layer as soon as it is
    /// checked, then one per tag (or per untagged image). Tags are written only after every
    /// image of the archive is complete and verified; on error nothing is tagged.
    pub fn load<'r>(
        &self,
        input: impl Read + 'r,
        report: &mut dyn FnMut(LoadEvent),
    ) -> Result<LoadReport> {
        self.load_with(input, &LoadOptions::default(), report)
    }

    /// [`Store::load`] with explicit limits against hostile archives.
    pub fn load_with<'r>(
        &self,
        input: impl Read + 'r,
        options: &LoadOptions,
        report: &mut dyn FnMut(LoadEvent),
    ) -> Result<LoadReport> {
        let _lease = self.lease()?;
        let mut input = BufReader::with_capacity(1 << 20, input);
        let head = input
            .fill_buf()
            .map_err(|e| Error::stream("read the archive", e))?;
        if head.is_empty() {
            return Err(Error::archive_whole("the input is empty"));
        }
        let compression = Compression::sniff(head);
        let count = Rc::new(Cell::new(0));
        let counted = Counted {
            inner: input,
            count: count.clone(),
        };
        let decoded: Box<dyn Read + 'r> = match compression {
            Compression::None => Box::new(counted),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(counted)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(counted)
                    .map_err(|e| Error::stream("start zstd decoder", e))?,
            ),
        };
        let outer = Expansion {
            inner: decoded,
            out: 0,
            compressed: (compression != Compression::None).then_some(count),
            options: *options,
        };
        let mut reader = Reader {
            store: self,
            options: *options,
            members: HashMap::new(),
            memory_total: 0,
            expected: HashMap::new(),
            awaited: HashSet::new(),
            learns_left: MAX_LEARNS,
            links_to: HashMap::new(),
            resolved: HashMap::new(),
            reported: HashSet::new(),
            out: LoadReport::default(),
            report,
        };
        reader.read_all(outer)?;
        let plans = if reader.members.contains_key("manifest.json") {
            reader.docker_plans(None)?
        } else if reader.members.contains_key("index.json") {
            reader.oci_plans(None)?
        } else {
            return Err(Error::archive_whole(
                "it holds neither manifest.json nor index.json",
            ));
        };
        // Layers not reported yet (metadata after them) are checked and reported now.
        let mut found = Vec::new();
        for p in plans {
            found.push(reader.found(p)?);
        }

        // Every image is complete: write configs and manifests, then tag them all at once.
        let mut refs = Vec::new();
        let mut out = std::mem::take(&mut reader.out);
        for f in found {
            let manifest = match f.original_manifest {
                Some(m) => {
                    // Checks config, layer count and that every blob is here.
                    self.image(&m)?;
                    m
                }
                None => self.write_image_raw(&f.config, &f.layers)?.manifest,
            };
            for t in &f.tags {
                refs.push(Ref {
                    kind: RefKind::Tag,
                    name: t.to_string(),
                    target: manifest.clone(),
                });
            }
            if f.tags.is_empty() {
                // Kept by ID (Docker's dangling image), or the next prune would remove it.
                refs.push(Ref {
                    kind: RefKind::Untagged,
                    name: Digest::of(&f.config).hex(),
                    target: manifest.clone(),
                });
            }
            out.images.push(LoadedImage {
                id: Digest::of(&f.config),
                manifest,
                tags: f.tags,
            });
        }
        self.set_refs(&refs)?;
        let report = reader.report;
        for image in &out.images {
            if image.tags.is_empty() {
                report(LoadEvent::ImageIdLoaded { id: image.id });
            }
            for t in &image.tags {
                report(LoadEvent::ImageLoaded {
                    reference: t.clone(),
                });
            }
        }
        Ok(out)
    }
}

fn is_metadata_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    name.ends_with(".json") || matches!(base, "json" | "VERSION" | "repositories" | "oci-layout")
}

impl Reader<'_, '_> {
    fn read_all(&mut self, outer: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(outer);
        let entries = archive
            .entries()
            .map_err(|e| Error::archive_whole(format!("not a tar archive: {e}")))?;
        let mut count = 0usize;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                if count == 0 {
                    Error::archive_whole("not a tar archive (its first header is not a tar header)")
                } else {
                    let why: String = e
                        .to_string()
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(200)
                        .collect();
                    Error::archive_whole(format!(
                        "the tar stream is corrupt or truncated after {count} members: {}",
                        why.escape_debug()
                    ))
                }
            })?;
            count += 1;
            if count > MAX_MEMBERS {
                return Err(Error::archive_whole("more than a million members"));
            }
            let raw = String::from_utf8(entry.path_bytes().into_owned())
                .map_err(|_| Error::archive_whole("a member name is not UTF-8"))?;
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::Directory && matches!(raw.as_str(), "." | "./") {
                continue;
            }
            let name = normalise_member_name(&raw).map_err(|why| Error::archive(&raw, why))?;
            let content = match kind {
                tar::EntryType::Directory => continue,
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    Content::Link(
                        resolve_link(&name, &target, kind == tar::EntryType::Link)
                            .map_err(|why| Error::archive(&raw, why))?,
                    )
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    self.read_member(&name, &mut entry)?
                }
                other => {
                    return Err(Error::archive(
                        &raw,
                        format!("unsupported member type {other:?}"),
                    ))
                }
            };
            match self.members.get(&name) {
                None => {
                    self.members.insert(name.clone(), content);
                    self.arrived(&name)?;
                }
                Some(previous) if same_content(previous, &content) => {}
                Some(_) => {
                    return Err(Error::archive(&raw, "appears twice with different content"))
                }
            }
        }
        if self.members.is_empty() {
            return Err(Error::archive_whole("it has no files"));
        }
        Ok(())
    }

    fn read_member<R: Read>(
        &mut self,
        name: &str,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Content> {
        let size = entry.size();
        if let Some(digest) = blob_member_digest(name) {
            let digest = digest.map_err(|e| Error::archive(name, e.to_string()))?;
            if let Some(have) = self.store.blob_size(&digest)? {
                // Already stored: skip the bytes unread (the tar reader discards them).
                if have != size {
                    return Err(Error::archive(
                        name,
                        format!("is {size} bytes but blob {digest} has {have}"),
                    ));
                }
                return Ok(Content::Blob {
                    digest,
                    size,
                    compression: self.stored_compression(&digest)?,
                    existed: true,
                });
            }
            if !self.store.layer_blobs(&digest)?.is_empty() {
                return Ok(Content::KnownLayer {
                    diff_id: digest,
                    size,
                });
            }
            return self.ingest(name, entry, Some(digest), size);
        }
        if is_metadata_name(name) {
            if size > MAX_METADATA_MEMBER {
                return Err(Error::archive(
                    name,
                    format!("declares {size} bytes, more than a metadata file may have"),
                ));
            }
            self.memory_total += size;
            if self.memory_total > MAX_METADATA_TOTAL {
                return Err(Error::archive_whole("too much metadata"));
            }
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20));
            entry
                .take(size)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::archive(name, format!("cannot be read: {e}")))?;
            if bytes.len() as u64 != size {
                return Err(Error::archive(name, "is truncated"));
            }
            return Ok(Content::Memory(bytes));
        }
        self.ingest(name, entry, None, size)
    }

    fn ingest<R: Read>(
        &mut self,
        name: &str,
        entry: &mut tar::Entry<'_, R>,
        expected: Option<Digest>,
        size: u64,
    ) -> Result<Content> {
        let mut writer = self.store.blob_writer_expecting_opt(expected, Some(size))?;
        writer.describe(format!("archive member {name:?}"));
        let mut head = Head {
            inner: writer,
            head: Vec::new(),
        };
        let copied = io::copy(entry, &mut head)
            .map_err(|e| Error::archive(name, format!("cannot be read: {e}")))?;
        if copied != size {
            return Err(Error::archive(
                name,
                format!("is truncated: {copied} of {size} bytes"),
            ));
        }
        let compression = Compression::sniff(&head.head);
        if expected.is_none() && compression == Compression::None {
            // A plain member (a legacy `layer.tar`) whose layer the store already holds in
            // another blob: drop this copy rather than store the layer twice.
            let digest = head.inner.digest();
            if !self.store.has_blob(&digest) && !self.store.layer_blobs(&digest)?.is_empty() {
                return Ok(Content::KnownLayer {
                    diff_id: digest,
                    size,
                });
            }
        }
        let info = head.inner.commit().map_err(|e| match e {
            Error::DigestMismatch {
                expected, actual, ..
            } => Error::archive(
                name,
                format!("content does not match its digest: expected {expected}, got {actual}"),
            ),
            other => other,
        })?;
        Ok(Content::Blob {
            digest: info.digest,
            size,
            compression,
            existed: info.existed,
        })
    }

    fn stored_compression(&self, digest: &Digest) -> Result<Compression> {
        let mut file = self.store.open_blob(digest)?;
        let mut head = [0u8; 8];
        let mut n = 0;
        while n < head.len() {
            match file.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(Error::io("read", self.store.blob_path(digest), e)),
            }
        }
        Ok(Compression::sniff(&head[..n]))
    }

    /// A member by name, following one link.
    fn member(&self, name: &str) -> Result<&Content> {
        let find = |n: &str| {
            self.members
                .get(n)
                .ok_or_else(|| Error::archive(n, "is named by the manifest but not in the archive"))
        };
        match find(name)? {
            Content::Link(target) => match find(target)? {
                Content::Link(_) => Err(Error::archive(name, "links to another link")),
                c => Ok(c),
            },
            c => Ok(c),
        }
    }

    /// The bytes of a small member (in memory or a stored blob).
    fn bytes(&self, name: &str) -> Result<Vec<u8>> {
        match self.member(name)? {
            Content::Memory(b) => Ok(b.clone()),
            Content::Blob { digest, size, .. } => {
                if *size > MAX_JSON_BLOB {
                    return Err(Error::archive(
                        name,
                        "is too large for a config or manifest",
                    ));
                }
                self.store.read_blob(digest)
            }
            Content::KnownLayer { .. } => Err(Error::archive(name, "is a layer, not metadata")),
            Content::Link(_) => Err(Error::archive(name, "links to another link")),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let bytes = self.bytes(name)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::archive(name, format!("invalid JSON: {e}")))
    }

    /// The stored blob holding layer `index` of an image, checked against its diffID.
    fn layer(&self, name: &str, diff_id: &Digest, index: usize) -> Result<(Descriptor, bool, u64)> {
        let mismatch = |actual: Digest| {
            Error::archive(
                name,
                format!("layer {index} has diffID {actual} but the image config says {diff_id}"),
            )
        };
        let content = match self.member(name)? {
            Content::Memory(bytes) => {
                let info = self.store.write_blob(bytes)?;
                Content::Blob {
                    digest: info.digest,
                    size: info.size,
                    compression: Compression::sniff(bytes),
                    existed: info.existed,
                }
            }
            c => c.clone(),
        };
        match content {
            Content::KnownLayer {
                diff_id: have,
                size,
            } => {
                if have != *diff_id {
                    return Err(mismatch(have));
                }
                let variant = self
                    .store
                    .layer_blobs(diff_id)?
                    .into_iter()
                    .next()
                    .ok_or(Error::BlobNotFound { digest: *diff_id })?;
                Ok((variant.descriptor(), true, size))
            }
            Content::Blob {
                digest,
                size,
                compression,
                existed,
            } => {
                let info = if compression == Compression::None {
                    // A plain tar's digest is its diffID: no second read needed.
                    let info = LayerInfo {
                        diff_id: digest,
                        digest,
                        size,
                        uncompressed_size: size,
                        media_type: media::OCI_LAYER_TAR.to_string(),
                    };
                    if info.diff_id == *diff_id {
                        self.store.record_layer(&info)?;
                    }
                    info
                } else {
                    let options = self.options;
                    self.store
                        .index_layer_blob_within(&digest, |c| options.limit(c))
                        .map_err(|e| match e {
                            Error::TooLarge {
                                limit, compressed, ..
                            } => Error::archive(
                                name,
                                format!(
                                    "layer {index} expands to more than {limit} bytes from \
                                     {compressed} compressed bytes, refused as a possible \
                                     decompression bomb (see LoadOptions)"
                                ),
                            ),
                            other => other,
                        })?
                };
                if info.diff_id != *diff_id {
                    return Err(mismatch(info.diff_id));
                }
                let existed = existed || self.store.layer_blobs(diff_id)?.len() > 1;
                Ok((info.descriptor(), existed, size))
            }
            Content::Memory(_) | Content::Link(_) => Err(Error::archive(name, "is not a layer")),
        }
    }

    /// Whether `name` is here (following one link) as content.
    fn present(&self, name: &str) -> bool {
        match self.members.get(name) {
            Some(Content::Link(target)) => {
                matches!(self.members.get(target), Some(c) if !matches!(c, Content::Link(_)))
            }
            Some(_) => true,
            None => false,
        }
    }

    /// In a lenient pass (`awaited` given), note a missing member and say to skip the image.
    fn missing(&self, name: &str, awaited: &mut Option<&mut HashSet<String>>) -> bool {
        let Some(awaited) = awaited else {
            return false;
        };
        if self.present(name) {
            return false;
        }
        awaited.insert(name.to_string());
        if let Some(Content::Link(target)) = self.members.get(name) {
            awaited.insert(target.clone());
        }
        true
    }

    /// A member arrived: learn from it if it is metadata the manifests need, then check and
    /// report the layers it completes.
    fn arrived(&mut self, name: &str) -> Result<()> {
        if let Some(Content::Link(target)) = self.members.get(name) {
            self.links_to
                .entry(target.clone())
                .or_default()
                .push(name.to_string());
        }
        let mut candidates = vec![name.to_string()];
        if let Some(links) = self.links_to.get(name) {
            candidates.extend(links.iter().cloned());
        }
        if self.learns_left > 0
            && (matches!(name, "manifest.json" | "index.json") || self.awaited.remove(name))
        {
            self.learns_left -= 1;
            self.learn();
            candidates.extend(self.expected.keys().cloned());
        }
        for member in candidates {
            for (diff_id, index) in self.expected.get(&member).cloned().unwrap_or_default() {
                if self.present(&member) && !self.resolved.contains_key(&(member.clone(), diff_id))
                {
                    self.resolve(&member, &diff_id, index)?;
                }
            }
        }
        Ok(())
    }

    /// Read the manifests and configs here so far and note the layers they name. Errors wait
    /// for the end of the archive, where the same reading is done strictly.
    fn learn(&mut self) {
        let mut awaited = HashSet::new();
        let plans = if self.members.contains_key("manifest.json") {
            self.docker_plans(Some(&mut awaited))
        } else {
            self.oci_plans(Some(&mut awaited))
        };
        self.awaited = awaited;
        for plan in plans.unwrap_or_default() {
            for (i, (member, diff_id)) in plan
                .layer_members
                .into_iter()
                .zip(plan.diff_ids)
                .enumerate()
            {
                let list = self.expected.entry(member).or_default();
                if !list.iter().any(|(d, _)| *d == diff_id) {
                    list.push((diff_id, i));
                }
            }
        }
    }

    /// Check and store one layer (once) and report it (once per diffID).
    fn resolve(&mut self, name: &str, diff_id: &Digest, index: usize) -> Result<Resolved> {
        let key = (name.to_string(), *diff_id);
        if let Some(done) = self.resolved.get(&key) {
            return Ok(done.clone());
        }
        let done = self.layer(name, diff_id, index)?;
        self.resolved.insert(key, done.clone());
        if self.reported.insert(*diff_id) {
            let (_, existed, size) = done;
            if existed {
                self.out.layers_existing += 1;
                (self.report)(LoadEvent::LayerExists { diff_id: *diff_id });
            } else {
                self.out.layers_loaded += 1;
                (self.report)(LoadEvent::LayerLoaded {
                    diff_id: *diff_id,
                    size,
                });
            }
        }
        Ok(done)
    }

    /// An image with every layer checked and stored.
    fn found(&mut self, plan: Planned) -> Result<Found> {
        let mut layers = Vec::new();
        for (i, (member, diff_id)) in plan.layer_members.iter().zip(&plan.diff_ids).enumerate() {
            layers.push(self.resolve(member, diff_id, i)?.0);
        }
        let original_manifest = plan.manifest.and_then(|(manifest, wanted)| {
            let unchanged = wanted.len() == layers.len()
                && wanted
                    .iter()
                    .zip(&layers)
                    .all(|(w, l)| w.digest == l.digest && w.size == l.size);
            unchanged.then_some(manifest)
        });
        Ok(Found {
            config: plan.config,
            layers,
            original_manifest,
            tags: plan.tags,
        })
    }

    /// Images listed by `manifest.json` (Docker, both layouts). Lenient (`awaited` given):
    /// images whose config is not here yet are skipped and their config noted.
    fn docker_plans(&self, mut awaited: Option<&mut HashSet<String>>) -> Result<Vec<Planned>> {
        let entries: Option<Vec<DockerManifestEntry>> = self.json("manifest.json")?;
        let entries = entries.ok_or_else(|| Error::archive("manifest.json", "is null"))?;
        let mut plans = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            let config_name = normalise_member_name(&entry.config).map_err(|why| {
                Error::archive(
                    "manifest.json",
                    format!("entry {n}: Config {:?}: {why}", entry.config),
                )
            })?;
            if self.missing(&config_name, &mut awaited) {
                continue;
            }
            let config = self.bytes(&config_name)?;
            let parsed = ImageConfig::parse(&config)
                .map_err(|e| Error::archive(&config_name, e.to_string()))?;
            let diff_ids = parsed.diff_ids()?;
            if diff_ids.len() != entry.layers.len() {
                return Err(Error::archive(
                    "manifest.json",
                    format!(
                        "entry {n}: invalid manifest, layers length mismatch: {} layers, {} diffIDs in the config",
                        entry.layers.len(),
                        diff_ids.len()
                    ),
                ));
            }
            let mut layer_members = Vec::new();
            for path in &entry.layers {
                layer_members.push(normalise_member_name(path).map_err(|why| {
                    Error::archive("manifest.json", format!("entry {n}: layer {path:?}: {why}"))
                })?);
            }
            let mut tags = Vec::new();
            for t in entry.repo_tags.iter().flatten() {
                let r = Reference::parse(t).map_err(|e| {
                    Error::archive("manifest.json", format!("entry {n}: RepoTags: {e}"))
                })?;
                tags.push(r);
            }
            plans.push(Planned {
                config,
                diff_ids,
                layer_members,
                manifest: None,
                tags,
            });
        }
        Ok(plans)
    }

    /// Images listed by `index.json` (an OCI layout); lenient as [`Reader::docker_plans`].
    fn oci_plans(&self, mut awaited: Option<&mut HashSet<String>>) -> Result<Vec<Planned>> {
        let index: ImageIndex = self.json("index.json")?;
        let mut plans = Vec::new();
        for (n, d) in index.manifests().iter().enumerate() {
            let what = format!("index.json entry {n}");
            let desc = Descriptor::from_oci(d, &what)?;
            let annotations = d.annotations().clone().unwrap_or_default();
            let name = annotations.get(ANNOTATION_IMAGE_NAME).or_else(|| {
                annotations
                    .get(ANNOTATION_REF_NAME)
                    .filter(|r| r.contains(['/', ':', '@']))
            });
            let tags = match name {
                Some(n) => vec![Reference::parse(n)
                    .map_err(|e| Error::archive("index.json", format!("entry {n}: {e}")))?],
                None => Vec::new(),
            };
            if let Some(plan) = self.oci_plan(&desc, tags, 0, &mut awaited)? {
                plans.push(plan);
            }
        }
        Ok(plans)
    }

    fn oci_plan(
        &self,
        desc: &Descriptor,
        tags: Vec<Reference>,
        depth: u32,
        awaited: &mut Option<&mut HashSet<String>>,
    ) -> Result<Option<Planned>> {
        let name = format!("blobs/sha256/{}", desc.digest.hex());
        if self.missing(&name, awaited) {
            return Ok(None);
        }
        let bytes = self.bytes(&name)?;
        if Digest::of(&bytes) != desc.digest || bytes.len() as u64 != desc.size {
            return Err(Error::archive(&name, "does not match its descriptor"));
        }
        if media::is_index(&desc.media_type) {
            if depth > 4 {
                return Err(Error::archive(&name, "indexes nested too deeply"));
            }
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| Error::archive(&name, format!("invalid index: {e}")))?;
            let arch = crate::image::host_arch();
            let pick = index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.architecture().to_string() == arch && p.os().to_string() == "linux"
                    })
                })
                .or_else(|| index.manifests().first())
                .ok_or_else(|| Error::archive(&name, "empty index"))?;
            let d = Descriptor::from_oci(pick, &name)?;
            return self.oci_plan(&d, tags, depth + 1, awaited);
        }
        if !media::is_manifest(&desc.media_type) {
            return Err(Error::UnsupportedMediaType {
                media_type: desc.media_type.clone(),
                what: name,
            });
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::archive(&name, format!("invalid manifest: {e}")))?;
        let config_desc = Descriptor::from_oci(manifest.config(), &name)?;
        let config_name = format!("blobs/sha256/{}", config_desc.digest.hex());
        if self.missing(&config_name, awaited) {
            return Ok(None);
        }
        let config = self.bytes(&config_name)?;
        let parsed =
            ImageConfig::parse(&config).map_err(|e| Error::archive(&config_name, e.to_string()))?;
        let diff_ids = parsed.diff_ids()?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::archive(
                &name,
                format!(
                    "{} layers but the config lists {} diffIDs",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut wanted = Vec::new();
        let mut layer_members = Vec::new();
        for l in manifest.layers() {
            let want = Descriptor::from_oci(l, &name)?;
            layer_members.push(format!("blobs/sha256/{}", want.digest.hex()));
            wanted.push(want);
        }
        Ok(Some(Planned {
            config,
            diff_ids,
            layer_members,
            manifest: Some((desc.clone(), wanted)),
            tags,
        }))
    }
}

fn same_content(a: &Content, b: &Content) -> bool {
    match (a, b) {
        (Content::Memory(x), Content::Memory(y)) => x == y,
        (Content::Blob { digest: x, .. }, Content::Blob { digest: y, .. }) => x == y,
        (Content::KnownLayer { diff_id: x, .. }, Content::KnownLayer { diff_id: y, .. }) => x == y,
        (Content::Link(x), Content::Link(y)) => x == y,
        _ => false,
    }
}

/// Where a link member points, as a normalised member name. Symlink targets are relative to
/// the link's folder (Docker's legacy `layer.tar` links are `../<id>/layer.tar`); hard link
/// targets are archive paths. A target outside the archive is refused.
fn resolve_link(name: &str, target: &str, hard: bool) -> Result<String, String> {
    if target.is_empty() {
        return Err("link with an empty target".into());
    }
    if target.starts_with('/') {
        return Err(format!("link to an absolute path {target:?}"));
    }
    let mut parts: Vec<&str> = if hard {
        Vec::new()
    } else {
        let mut p: Vec<&str> = name.split('/').collect();
        p.pop();
        p
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("link target {target:?} escapes the archive"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!("link target {target:?} is the archive root"));
    }
    Ok(parts.join("/"))
}

impl Store {
    /// A blob writer with an optional expected digest (for archive members).
    pub(crate) fn blob_writer_expecting_opt(
        &self,
        digest: Option<Digest>,
        size: Option<u64>,
    ) -> Result<crate::BlobWriter> {
        crate::blob::BlobWriter::new(self.paths.clone(), self.lease()?, digest, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_archive_only() {
        assert_eq!(
            resolve_link("b/layer.tar", "../a/layer.tar", false).unwrap(),
            "a/layer.tar"
        );
        assert_eq!(
            resolve_link("x", "a/layer.tar", true).unwrap(),
            "a/layer.tar"
        );
        assert!(resolve_link("b/layer.tar", "../../etc/passwd", false).is_err());
        assert!(resolve_link("b/layer.tar", "/etc/passwd", false).is_err());
        assert!(resolve_link("b/layer.tar", "..", false).is_err());
    }
}
