//! `load`: bring images in from docker (legacy and OCI-inside) and OCI layout archives.
//!
//! One streaming pass over the tar (plain, gzip or zstd; from a file or a pipe): every member
//! that can be content goes through the store's verified ingest path, small metadata members
//! are kept in memory (capped). Members named `blobs/sha256/<hex>` whose content the store
//! already has are skipped unread. Only when the whole archive has been read are the images
//! checked (every layer's diffID against its config) and, all being well, tagged together.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use super::{blob_member_digest, normalise_member_name, LoadEvent, LoadReport, LoadedImage};
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
    diff_ids: Vec<Digest>,
    /// Per layer: (existed before, size in archive).
    layer_state: Vec<(bool, u64)>,
}

struct Reader<'s> {
    store: &'s Store,
    members: HashMap<String, Content>,
    memory_total: u64,
}

impl Store {
    /// Load every image of an archive (see the module docs for the formats). Events go to
    /// `report`: one per distinct layer, then one per tag (or per untagged image). Tags are
    /// written only after every image of the archive is complete and verified; on error
    /// nothing is tagged.
    pub fn load<'r>(
        &self,
        input: impl Read + 'r,
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
        let outer: Box<dyn Read + 'r> = match Compression::sniff(head) {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(input)
                    .map_err(|e| Error::stream("start zstd decoder", e))?,
            ),
        };
        let mut reader = Reader {
            store: self,
            members: HashMap::new(),
            memory_total: 0,
        };
        reader.read_all(outer)?;
        let found = if reader.members.contains_key("manifest.json") {
            reader.docker_images()?
        } else if reader.members.contains_key("index.json") {
            reader.oci_images()?
        } else {
            return Err(Error::archive_whole(
                "it holds neither manifest.json nor index.json",
            ));
        };

        // Every image is complete: write configs and manifests, then tag them all at once.
        let mut out = LoadReport::default();
        let mut seen_layers = BTreeSet::new();
        let mut refs = Vec::new();
        for f in &found {
            for (diff_id, (existed, size)) in f.diff_ids.iter().zip(&f.layer_state) {
                if !seen_layers.insert(*diff_id) {
                    continue;
                }
                if *existed {
                    out.layers_existing += 1;
                    report(LoadEvent::LayerExists { diff_id: *diff_id });
                } else {
                    out.layers_loaded += 1;
                    report(LoadEvent::LayerLoaded {
                        diff_id: *diff_id,
                        size: *size,
                    });
                }
            }
        }
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

impl Reader<'_> {
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
                    self.members.insert(name, content);
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
                    self.store.index_layer_blob(&digest)?
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

    /// Images listed by `manifest.json` (Docker, both layouts).
    fn docker_images(&self) -> Result<Vec<Found>> {
        let entries: Option<Vec<DockerManifestEntry>> = self.json("manifest.json")?;
        let entries = entries.ok_or_else(|| Error::archive("manifest.json", "is null"))?;
        let mut found = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            let config_name = normalise_member_name(&entry.config).map_err(|why| {
                Error::archive(
                    "manifest.json",
                    format!("entry {n}: Config {:?}: {why}", entry.config),
                )
            })?;
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
            let mut layers = Vec::new();
            let mut layer_state = Vec::new();
            for (i, (path, diff_id)) in entry.layers.iter().zip(&diff_ids).enumerate() {
                let name = normalise_member_name(path).map_err(|why| {
                    Error::archive("manifest.json", format!("entry {n}: layer {path:?}: {why}"))
                })?;
                let (desc, existed, size) = self.layer(&name, diff_id, i)?;
                layers.push(desc);
                layer_state.push((existed, size));
            }
            let mut tags = Vec::new();
            for t in entry.repo_tags.iter().flatten() {
                let r = Reference::parse(t).map_err(|e| {
                    Error::archive("manifest.json", format!("entry {n}: RepoTags: {e}"))
                })?;
                tags.push(r);
            }
            found.push(Found {
                config,
                layers,
                original_manifest: None,
                tags,
                diff_ids,
                layer_state,
            });
        }
        Ok(found)
    }

    /// Images listed by `index.json` (an OCI layout).
    fn oci_images(&self) -> Result<Vec<Found>> {
        let index: ImageIndex = self.json("index.json")?;
        let mut found = Vec::new();
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
            found.push(self.oci_image(&desc, tags, 0)?);
        }
        Ok(found)
    }

    fn oci_image(&self, desc: &Descriptor, tags: Vec<Reference>, depth: u32) -> Result<Found> {
        let name = format!("blobs/sha256/{}", desc.digest.hex());
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
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            };
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
            return self.oci_image(&d, tags, depth + 1);
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
        let mut layers = Vec::new();
        let mut layer_state = Vec::new();
        let mut unchanged = true;
        for (i, (l, diff_id)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
            let want = Descriptor::from_oci(l, &name)?;
            let member = format!("blobs/sha256/{}", want.digest.hex());
            let (desc, existed, size) = self.layer(&member, diff_id, i)?;
            if desc.digest != want.digest || desc.size != want.size {
                unchanged = false;
            }
            layers.push(desc);
            layer_state.push((existed, size));
        }
        Ok(Found {
            config,
            layers,
            original_manifest: unchanged.then(|| desc.clone()),
            tags,
            diff_ids,
            layer_state,
        })
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
