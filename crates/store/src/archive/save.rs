//! `save`: stream images into a docker-compatible or OCI layout tar.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{ArchiveFormat, SaveOptions};
use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::direct::DirectWriter;
use crate::error::{Error, Result};
use crate::image::{manifest_bytes, Image};
use crate::layer::LayerInfo;
use crate::media::{self, Compression};
use crate::reference::Reference;
use crate::refs::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::store::Store;

/// Where the bytes of one archive blob come from.
enum Source {
    /// A stored blob, copied as is.
    Blob(Digest),
    /// A stored compressed layer, decompressed (and verified) on the way out.
    Decompress { blob: Digest, diff_id: Digest },
    /// Small generated content (a manifest).
    Bytes(Vec<u8>),
}

struct ArchiveBlob {
    size: u64,
    source: Source,
}

/// One image as it goes into the archive.
struct Exported {
    image: Image,
    tags: Vec<Reference>,
    manifest: Descriptor,
    layers: Vec<Descriptor>,
}

/// A reader that must yield exactly `expected` bytes (a tar header promised that many).
struct Exact<R> {
    inner: R,
    left: u64,
    what: String,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Anything beyond the promised size is an error too.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "{} is longer than recorded",
                    self.what
                ))),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "{} is shorter than recorded",
                self.what
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(if dir { 0 } else { size });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h
}

impl Store {
    /// Write the named images (references or image IDs) as one archive to `out`, streaming:
    /// memory use does not grow with the archive. Layers shared by several images appear
    /// once. Layers are recompressed as `options` asks; a compressed variant made for that is
    /// kept in the store (recorded under its diffID) so the next save reuses it.
    pub fn save(&self, names: &[&str], out: impl Write, options: &SaveOptions) -> Result<()> {
        if names.is_empty() {
            return Err(Error::content("save", "no images named"));
        }
        let _lease = self.lease()?;
        let compression = options.layer_compression();

        // Resolve names; several tags of one image become one entry.
        let mut order: Vec<Digest> = Vec::new();
        let mut by_manifest: BTreeMap<Digest, (Image, Vec<Reference>)> = BTreeMap::new();
        for name in names {
            let image = self.resolve(name)?;
            let tag = Reference::parse(name)
                .ok()
                .filter(|r| r.tag().is_some() && r.digest().is_none())
                .filter(|r| {
                    self.get_ref(crate::RefKind::Tag, &r.to_string())
                        .ok()
                        .flatten()
                        .is_some_and(|t| t.digest == image.manifest.digest)
                });
            let entry = by_manifest.entry(image.manifest.digest).or_insert_with(|| {
                order.push(image.manifest.digest);
                (image, Vec::new())
            });
            if let Some(t) = tag {
                if !entry.1.contains(&t) {
                    entry.1.push(t);
                }
            }
        }

        // Choose (or make) the blob of every layer before writing a byte.
        let mut blobs: BTreeMap<Digest, ArchiveBlob> = BTreeMap::new();
        let mut exported = Vec::new();
        for digest in &order {
            let (image, tags) = by_manifest.remove(digest).expect("resolved above");
            let mut layers = Vec::new();
            for (blob, diff_id) in image.layers.iter().zip(&image.diff_ids) {
                let (desc, source) = self.export_layer(blob, diff_id, compression, &image)?;
                blobs.entry(desc.digest).or_insert(ArchiveBlob {
                    size: desc.size,
                    source,
                });
                layers.push(desc);
            }
            blobs.entry(image.config.digest).or_insert(ArchiveBlob {
                size: image.config.size,
                source: Source::Blob(image.config.digest),
            });
            let config = Descriptor::new(media::OCI_CONFIG, image.config.digest, image.config.size);
            let manifest_body = manifest_bytes(&config, &layers);
            let manifest = Descriptor::new(
                media::OCI_MANIFEST,
                Digest::of(&manifest_body),
                manifest_body.len() as u64,
            );
            blobs.entry(manifest.digest).or_insert(ArchiveBlob {
                size: manifest.size,
                source: Source::Bytes(manifest_body),
            });
            exported.push(Exported {
                image,
                tags,
                manifest,
                layers,
            });
        }

        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
        let fail = |e: io::Error| Error::stream("write the archive", e);
        for dir in ["blobs/", "blobs/sha256/"] {
            tar.append_data(&mut header(0, true), dir, io::empty())
                .map_err(fail)?;
        }
        let mut files: Vec<(&str, Vec<u8>)> =
            vec![("index.json", index_json(&exported, options.format))];
        if options.format == ArchiveFormat::Docker {
            files.push(("manifest.json", manifest_json(&exported)));
        }
        files.push(("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
        if options.format == ArchiveFormat::Docker {
            files.push(("repositories", repositories(&exported)));
        }
        for (name, body) in files {
            tar.append_data(&mut header(body.len() as u64, false), name, &body[..])
                .map_err(fail)?;
        }
        // Metadata and configs before layers, so that `load` knows each layer when it meets it
        // and reports it at once instead of at the end of the archive.
        // Layers go base first, in the order the images stack them, so that `load` reports
        // them in that order, as `docker load` prints them.
        let mut layer_order: Vec<Digest> = Vec::new();
        for digest in exported
            .iter()
            .flat_map(|e| e.layers.iter().map(|l| l.digest))
        {
            if !layer_order.contains(&digest) {
                layer_order.push(digest);
            }
        }
        let small = blobs.iter().filter(|(d, _)| !layer_order.contains(d));
        let layers = layer_order.iter().filter_map(|d| blobs.get_key_value(d));
        for (digest, blob) in small.chain(layers) {
            let path = format!("blobs/sha256/{}", digest.hex());
            let what = format!("blob {digest}");
            let reader: Box<dyn Read> = match &blob.source {
                Source::Blob(d) => {
                    Box::new(io::BufReader::with_capacity(1 << 20, self.open_blob(d)?))
                }
                Source::Decompress { blob, diff_id } => Box::new(self.open_layer(blob, diff_id)?),
                Source::Bytes(b) => Box::new(io::Cursor::new(b.clone())),
            };
            let mut exact = Exact {
                inner: reader,
                left: blob.size,
                what,
            };
            tar.append_data(&mut header(blob.size, false), &path, &mut exact)
                .map_err(|e| Error::stream(format!("write {path} into the archive"), e))?;
        }
        let mut inner = tar.into_inner().map_err(fail)?;
        inner.flush().map_err(fail)?;
        Ok(())
    }

    /// [`Store::save`] into the file `path`, atomically: the archive is written beside it
    /// (bypassing the page cache where the filesystem allows), fsynced, and renamed into place
    /// only when complete, so a failed save leaves no half archive under that name.
    pub fn save_to_file(&self, names: &[&str], path: &Path, options: &SaveOptions) -> Result<()> {
        self.save_to_file_observed(names, path, options, &mut |_| {})
    }

    /// [`Store::save_to_file`], telling `written` how many bytes each write added (for a
    /// progress bar).
    pub fn save_to_file_observed(
        &self,
        names: &[&str],
        path: &Path,
        options: &SaveOptions,
        written: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".strata-save-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io("create a file in", &dir, e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| Error::io("open", tmp.path(), e))?;
        let mut out = DirectWriter::new(file, tmp.path());
        self.save(
            names,
            Observed {
                inner: &mut out,
                written,
            },
            options,
        )?;
        out.finish()
            .map_err(|e| Error::io("write", tmp.path(), e))?;
        tmp.persist(path)
            .map_err(|e| Error::io("rename into", path, e.error))?;
        crate::fsutil::sync_dir(&dir)
    }

    /// The archive descriptor and byte source of one layer in the requested compression.
    fn export_layer(
        &self,
        blob: &Descriptor,
        diff_id: &Digest,
        compression: Compression,
        image: &Image,
    ) -> Result<(Descriptor, Source)> {
        let variants = self.layer_blobs(diff_id)?;
        if let Some(v) = variants.iter().find(|v| v.compression() == compression) {
            return Ok((v.descriptor(), Source::Blob(v.digest)));
        }
        // Learn what the manifest's blob holds (verifying it) if no record says so yet.
        let known: LayerInfo = match variants.first() {
            Some(v) => v.clone(),
            None => {
                let info = self.index_layer_blob(&blob.digest)?;
                if info.diff_id != *diff_id {
                    return Err(Error::Export {
                        image: image.manifest.digest.to_string(),
                        reason: format!(
                            "layer blob {} holds {} but the config says {diff_id}",
                            blob.digest, info.diff_id
                        ),
                    });
                }
                if info.compression() == compression {
                    return Ok((info.descriptor(), Source::Blob(info.digest)));
                }
                info
            }
        };
        match compression {
            Compression::None => Ok((
                Descriptor::new(media::OCI_LAYER_TAR, *diff_id, known.uncompressed_size),
                Source::Decompress {
                    blob: known.digest,
                    diff_id: *diff_id,
                },
            )),
            _ => {
                // A compressed blob's size is only known once made: make it in the store.
                let mut reader = self.open_layer(&known.digest, diff_id)?;
                let mut writer = self.layer_writer(compression)?;
                io::copy(&mut reader, &mut writer)
                    .map_err(|e| Error::stream(format!("recompress layer {diff_id}"), e))?;
                let made = writer.finish()?;
                Ok((made.descriptor(), Source::Blob(made.digest)))
            }
        }
    }
}

fn index_json(images: &[Exported], format: ArchiveFormat) -> Vec<u8> {
    let mut manifests = Vec::new();
    for e in images {
        let base = serde_json::json!({
            "mediaType": e.manifest.media_type,
            "digest": e.manifest.digest.to_string(),
            "size": e.manifest.size,
        });
        if e.tags.is_empty() {
            manifests.push(base.clone());
        }
        for t in &e.tags {
            let ref_name = match format {
                ArchiveFormat::Docker => t.tag().unwrap_or("latest").to_string(),
                ArchiveFormat::Oci => t.to_string(),
            };
            let mut d = base.clone();
            d["annotations"] = serde_json::json!({
                ANNOTATION_IMAGE_NAME: t.to_string(),
                ANNOTATION_REF_NAME: ref_name,
            });
            manifests.push(d);
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    });
    serde_json::to_vec(&index).expect("a JSON value always serialises")
}

fn manifest_json(images: &[Exported]) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = images
        .iter()
        .map(|e| {
            let tags: Option<Vec<String>> =
                (!e.tags.is_empty()).then(|| e.tags.iter().map(Reference::familiar).collect());
            serde_json::json!({
                "Config": format!("blobs/sha256/{}", e.image.config.digest.hex()),
                "RepoTags": tags,
                "Layers": e.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_vec(&entries).expect("a JSON value always serialises")
}

fn repositories(images: &[Exported]) -> Vec<u8> {
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for e in images {
        let Some(top) = e.image.diff_ids.last() else {
            continue;
        };
        for t in &e.tags {
            if let Some(tag) = t.tag() {
                repos
                    .entry(t.familiar_name())
                    .or_default()
                    .insert(tag.to_string(), top.hex());
            }
        }
    }
    serde_json::to_vec(&repos).expect("a JSON value always serialises")
}

/// A writer that reports the bytes each write accepted.
struct Observed<'a, W: Write> {
    inner: &'a mut W,
    written: &'a mut dyn FnMut(u64),
}

impl<W: Write> Write for Observed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.written)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
