//! Images: manifest + config + layers, tags, and making images from layers.

use std::collections::BTreeMap;
use std::io::{self, Read};

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::config::ImageConfig;
use crate::descriptor::Descriptor;
use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::layer::LayerInfo;
use crate::media::{self, Compression};
use crate::reference::Reference;
use crate::refs::{Ref, RefKind};
use crate::store::Store;

/// An image in the store: its manifest, its config (exact bytes and parsed), and its layers.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest blob.
    pub manifest: Descriptor,
    /// The config blob; its digest is the image ID.
    pub config: Descriptor,
    /// The config's exact bytes.
    pub config_bytes: Vec<u8>,
    /// The config, parsed.
    pub config_parsed: ImageConfig,
    /// Layer blobs, base first.
    pub layers: Vec<Descriptor>,
    /// diffIDs, base first (same length as `layers`).
    pub diff_ids: Vec<Digest>,
}

impl Image {
    /// The image ID (the config digest).
    pub fn id(&self) -> Digest {
        self.config.digest
    }

    /// The chainID of every layer prefix (element `i` names `layers[..=i]`); the last one
    /// names the image's whole filesystem.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.diff_ids)
    }
}

/// One line of `strata images`: a tag (or an untagged image) and what it points at.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    /// The tag (or digest reference); `None` for an untagged image.
    pub reference: Option<Reference>,
    /// The manifest it points at.
    pub manifest: Descriptor,
    /// The image ID.
    pub id: Digest,
    /// The config's `created` time, RFC 3339.
    pub created: Option<String>,
    /// Uncompressed size of the layers (what Docker shows as SIZE).
    pub size: u64,
}

/// This machine's architecture as OCI names it: the platform the store prefers when a tag
/// or an archive points at an index.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

/// Build a manifest's canonical bytes (sorted keys, compact).
pub(crate) fn manifest_bytes(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    // Fields are declared in sorted order: the bytes are those of a JSON object with sorted
    // keys, written without building one (an image of many layers is written per build).
    #[derive(serde::Serialize)]
    struct Desc<'a> {
        digest: String,
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        size: u64,
    }
    #[derive(serde::Serialize)]
    struct Manifest<'a> {
        config: Desc<'a>,
        layers: Vec<Desc<'a>>,
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
    }
    fn desc(d: &Descriptor) -> Desc<'_> {
        Desc {
            digest: d.digest.to_string(),
            media_type: &d.media_type,
            size: d.size,
        }
    }
    let manifest = Manifest {
        config: desc(config),
        layers: layers.iter().map(desc).collect(),
        media_type: media::OCI_MANIFEST,
        schema_version: 2,
    };
    serde_json::to_vec(&manifest).expect("plain data always serialises")
}

impl Store {
    /// Load the image a manifest (or an index: the host platform's entry) describes, checking
    /// that its config is present, parses, and lists as many diffIDs as there are layers.
    pub fn image(&self, target: &Descriptor) -> Result<Image> {
        self.image_depth(target, 0)
    }

    fn image_depth(&self, target: &Descriptor, depth: u32) -> Result<Image> {
        let what = format!("manifest {}", target.digest);
        let bytes = self.read_blob(&target.digest)?;
        if media::is_index(&target.media_type) {
            if depth > 4 {
                return Err(Error::content(what, "indexes nested too deeply"));
            }
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| Error::json(what.clone(), e))?;
            let pick = index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.architecture().to_string() == host_arch() && p.os().to_string() == "linux"
                    })
                })
                .or_else(|| index.manifests().first())
                .ok_or_else(|| Error::content(what.clone(), "empty index"))?;
            let d = Descriptor::from_oci(pick, &what)?;
            return self.image_depth(&d, depth + 1);
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::json(what.clone(), e))?;
        let config = Descriptor::from_oci(manifest.config(), &what)?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| Descriptor::from_oci(l, &what))
            .collect::<Result<Vec<_>>>()?;
        let config_bytes = self.read_blob(&config.digest)?;
        let config_parsed = ImageConfig::parse(&config_bytes)
            .map_err(|e| Error::content(format!("config {}", config.digest), e.to_string()))?;
        let diff_ids = config_parsed.diff_ids()?;
        if diff_ids.len() != layers.len() {
            return Err(Error::content(
                what,
                format!(
                    "{} layers but the config lists {} diffIDs",
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        Ok(Image {
            manifest: target.clone(),
            config,
            config_bytes,
            config_parsed,
            layers,
            diff_ids,
        })
    }

    /// Write an image from a config this store creates and layers already in the store: the
    /// config's diffIDs are set from `layers`. Returns the new (untagged) image.
    pub fn write_image(&self, config: &ImageConfig, layers: &[LayerInfo]) -> Result<Image> {
        let mut config = config.clone();
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
        config.set_diff_ids(&diff_ids);
        let descriptors: Vec<Descriptor> = layers.iter().map(LayerInfo::descriptor).collect();
        self.write_image_raw(&config.to_bytes(), &descriptors)
    }

    /// Write an image from exact config bytes and layer blobs already in the store (loading
    /// keeps foreign configs byte for byte). Checks the config and the layer count.
    pub fn write_image_raw(&self, config_bytes: &[u8], layers: &[Descriptor]) -> Result<Image> {
        self.write_image_known(config_bytes, layers, &|_| false)
    }

    /// [`Store::write_image_raw`] for a caller that has seen some of the layer blobs in the
    /// store while holding a lease (so GC cannot have removed them): those `present` vouches
    /// for are not looked for again.
    pub fn write_image_known(
        &self,
        config_bytes: &[u8],
        layers: &[Descriptor],
        present: &dyn Fn(&Digest) -> bool,
    ) -> Result<Image> {
        let parsed = ImageConfig::parse(config_bytes)?;
        let diff_ids = parsed.diff_ids()?;
        if diff_ids.len() != layers.len() {
            return Err(Error::content(
                "image",
                format!(
                    "{} layers but the config lists {} diffIDs",
                    layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        for l in layers {
            if !present(&l.digest) && !self.has_blob(&l.digest) {
                return Err(Error::BlobNotFound { digest: l.digest });
            }
        }
        let config_info = self.write_blob(config_bytes)?;
        let config = Descriptor::new(media::OCI_CONFIG, config_info.digest, config_info.size);
        let manifest_info = self.write_blob(&manifest_bytes(&config, layers))?;
        Ok(Image {
            manifest: Descriptor::new(
                media::OCI_MANIFEST,
                manifest_info.digest,
                manifest_info.size,
            ),
            config,
            config_bytes: config_bytes.to_vec(),
            config_parsed: parsed,
            layers: layers.to_vec(),
            diff_ids,
        })
    }

    /// Make a one-layer image from an uncompressed tar stream and a config (`import`): the
    /// layer is ingested with `compression` and the config's diffIDs are set to it.
    pub fn import(
        &self,
        tar: impl Read,
        config: &ImageConfig,
        compression: Compression,
    ) -> Result<Image> {
        let _lease = self.lease()?;
        let mut w = self.layer_writer(compression)?;
        let mut tar = tar;
        io::copy(&mut tar, &mut w).map_err(|e| Error::stream("read the layer tar", e))?;
        let layer = w.finish()?;
        self.write_image(config, &[layer])
    }

    /// Tag an image (the reference is stored in its full normalised form).
    pub fn tag(&self, reference: &Reference, image: &Image) -> Result<()> {
        self.set_ref(RefKind::Tag, &reference.to_string(), &image.manifest)
    }

    /// Tag several images under one lock (used by `load` once every blob is in place).
    pub fn tag_all(&self, tags: &[(Reference, Descriptor)]) -> Result<()> {
        let refs: Vec<Ref> = tags
            .iter()
            .map(|(r, d)| Ref {
                kind: RefKind::Tag,
                name: r.to_string(),
                target: d.clone(),
            })
            .collect();
        self.set_refs(&refs)
    }

    /// Remove a tag; returns whether it existed.
    pub fn untag(&self, reference: &Reference) -> Result<bool> {
        self.remove_ref(RefKind::Tag, &reference.to_string())
    }

    /// Find an image by reference (`busybox`, `busybox:1`), full or short image ID
    /// (`sha256:<hex>`, a hex prefix of at least 4 digits), or `name@sha256:<manifest>`.
    pub fn resolve(&self, name: &str) -> Result<Image> {
        let not_found = || Error::ImageNotFound {
            reference: name.to_string(),
        };
        // The common case, a tag, is one ref read (not a listing of every tag).
        if let Ok(reference) = Reference::parse(name) {
            if let Some(target) = self.get_ref(RefKind::Tag, &reference.to_string())? {
                return self.image(&target);
            }
        }
        let tags = self.list_refs(RefKind::Tag)?;
        let untagged = self.list_refs(RefKind::Untagged)?;
        if let Ok(reference) = Reference::parse(name) {
            let full = reference.to_string();
            if let Some(r) = tags.iter().find(|r| r.name == full) {
                return self.image(&r.target);
            }
            if let Some(d) = reference.digest() {
                if let Some(r) = tags.iter().find(|r| {
                    r.target.digest == d
                        && Reference::parse(&r.name).is_ok_and(|t| t.name() == reference.name())
                }) {
                    return self.image(&r.target);
                }
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let mut found: BTreeMap<Digest, Image> = BTreeMap::new();
            for r in tags.iter().chain(&untagged) {
                if let Ok(image) = self.image(&r.target) {
                    if image.id().hex().starts_with(&hex) {
                        found.insert(image.id(), image);
                    }
                }
            }
            return match found.len() {
                0 => Err(not_found()),
                1 => Ok(found.into_values().next().expect("one image")),
                _ => Err(Error::InvalidReference {
                    input: name.to_string(),
                    reason: "ambiguous short image ID".into(),
                }),
            };
        }
        Err(not_found())
    }

    /// Every tag with its image, sorted by reference, then the untagged images (those no tag
    /// points at) by ID.
    pub fn images(&self) -> Result<Vec<ImageSummary>> {
        let _lease = self.lease()?;
        let tags = self.list_refs(RefKind::Tag)?;
        let tagged: std::collections::BTreeSet<Digest> =
            tags.iter().map(|r| r.target.digest).collect();
        let untagged = self
            .list_refs(RefKind::Untagged)?
            .into_iter()
            .filter(|r| !tagged.contains(&r.target.digest));
        let mut out = Vec::new();
        for r in tags.into_iter().chain(untagged) {
            let reference = match r.kind {
                RefKind::Tag => match Reference::parse(&r.name) {
                    Ok(reference) => Some(reference),
                    Err(_) => continue,
                },
                _ => None,
            };
            let image = self.image(&r.target)?;
            let mut size = 0;
            for (blob, diff_id) in image.layers.iter().zip(&image.diff_ids) {
                size += match self.layer_blobs(diff_id)?.first() {
                    Some(l) => l.uncompressed_size,
                    None => blob.size,
                };
            }
            out.push(ImageSummary {
                reference,
                manifest: r.target,
                id: image.id(),
                created: image.config_parsed.created().map(str::to_string),
                size,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::tests::store;

    #[test]
    fn manifest_bytes_are_sorted_compact_json() {
        // The bytes decide manifest digests: they must be those of a sorted-key JSON
        // object, as they always were, so that images keep their digests.
        let config = Descriptor::new(media::OCI_CONFIG, Digest::of(b"config"), 12);
        for n in [0usize, 1, 3] {
            let layers: Vec<Descriptor> = (0..n)
                .map(|i| {
                    Descriptor::new(
                        media::OCI_LAYER_ZSTD,
                        Digest::of(&[i as u8]),
                        100 + i as u64,
                    )
                })
                .collect();
            let d = |d: &Descriptor| serde_json::json!({"mediaType": d.media_type, "digest": d.digest.to_string(), "size": d.size});
            let value = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": d(&config),
                "layers": layers.iter().map(d).collect::<Vec<_>>(),
            });
            assert_eq!(
                String::from_utf8(manifest_bytes(&config, &layers)).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }
    }

    #[test]
    fn import_tag_resolve_and_list() {
        let (_d, s) = store();
        let tar = vec![0u8; 2048];
        let image = s
            .import(&tar[..], &ImageConfig::default(), Compression::Zstd)
            .unwrap();
        assert_eq!(image.diff_ids, vec![Digest::of(&tar)]);
        let r = Reference::parse("example/app:1").unwrap();
        s.tag(&r, &image).unwrap();
        assert_eq!(s.resolve("example/app:1").unwrap().id(), image.id());
        assert_eq!(s.resolve(&image.id().short()).unwrap().id(), image.id());
        assert_eq!(s.resolve(&image.id().to_string()).unwrap().id(), image.id());
        let pinned = format!("example/app@{}", image.manifest.digest);
        assert_eq!(s.resolve(&pinned).unwrap().id(), image.id());
        assert!(matches!(
            s.resolve("nothere"),
            Err(Error::ImageNotFound { .. })
        ));
        let list = s.images().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].size, 2048);
        assert_eq!(
            list[0].reference.as_ref().unwrap().familiar(),
            "example/app:1"
        );
        assert!(s.untag(&r).unwrap());
        assert!(s.images().unwrap().is_empty());
    }

    #[test]
    fn write_image_raw_checks_layer_count() {
        let (_d, s) = store();
        let mut c = ImageConfig::default();
        c.set_diff_ids(&[Digest::of(b"a")]);
        let err = s.write_image_raw(&c.to_bytes(), &[]).unwrap_err();
        assert!(err.to_string().contains("1 diffIDs"), "{err}");
    }
}
