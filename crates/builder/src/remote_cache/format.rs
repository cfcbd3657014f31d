//! The form a shared cache takes: one OCI image manifest (what every registry accepts, as
//! BuildKit's `image-manifest=true` cache) whose layers are the cached layer blobs and whose
//! config carries the records.
//!
//! ```text
//! manifest  application/vnd.oci.image.manifest.v1+json
//!   config  application/vnd.strata.cache.config.v1+json
//!   layers  the layer blobs the records name, as built (zstd, gzip or plain tar)
//! config    {"architecture", "os", "rootfs": {"type": "layers", "diff_ids": [...]},
//!            "strata.cache.v1": {"records": [...], "copy_hashes": [...]}}
//! ```
//!
//! The config is a valid image config too (its `rootfs.diff_ids` are the manifest's layers'),
//! so OCI tools, and the store's own GC and fsck over a `type=local` folder, read it as one.
//! A record is what a cache hit needs without running the step ([`CacheRecord`]); copy hashes
//! are what a `COPY --from` of an immutable layer stack hashed to ([`CopyHash`]), so a fresh
//! machine can key such a step without the source stage's files.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use strata_store::media::OCI_MANIFEST;
use strata_store::{Descriptor, Digest, LayerInfo};

use crate::cachekey::{CacheKey, KeyInputs, SourcesInput, CACHE_KEY_VERSION};
use crate::platform::Platform;
use crate::Error;

/// The media type of a cache manifest's config.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.strata.cache.config.v1+json";

/// The config field holding the records (versioned with the layout).
const CONTENT_FIELD: &str = "strata.cache.v1";

/// The annotation a cache manifest carries, so a person browsing a registry can tell.
const ANNOTATION: &str = "dev.strata.cache";

/// One step's result, as shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The step's cache key.
    pub key: CacheKey,
    /// The layer it made (`None`: it changed nothing).
    pub layer: Option<LayerInfo>,
    /// The diffIDs of the whole stack after the step, base first: a hit needs the same stack
    /// below it, so a layer is never applied on other layers than it was made on.
    pub chain: Vec<Digest>,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// The history entry's `created`.
    pub created: Option<String>,
    /// The inputs of the key (copied files' per-file records left out: their digest stands
    /// for them).
    pub inputs: KeyInputs,
}

impl CacheRecord {
    /// Whether this record may answer a step that builds on `below` (diffIDs, base first).
    /// Steps keyed without what is below (`COPY --link`, a first step on scratch) fit any
    /// stack.
    pub fn fits(&self, below: &[Digest]) -> bool {
        if matches!(self.inputs.parent, crate::cachekey::Parent::None) {
            return true;
        }
        let own = usize::from(self.layer.is_some());
        self.chain.len() == below.len() + own && self.chain[..below.len()] == *below
    }
}

/// What a `COPY --from` of an immutable stack hashed to, by the copy memo's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyHash {
    /// The memo key (hex): the stack's chainID and the copy request.
    pub memo: String,
    /// The destination it resolved to.
    pub dest: String,
    /// The sources' digest (per-file records left out).
    pub sources: SourcesInput,
}

/// Everything a shared cache carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheContent {
    /// Step records.
    #[serde(default)]
    pub records: Vec<CacheRecord>,
    /// Copy hashes.
    #[serde(default)]
    pub copy_hashes: Vec<CopyHash>,
}

impl CacheContent {
    /// Adds a record unless one with its key is there; per-file records are dropped.
    pub fn add_record(&mut self, record: &CacheRecord) {
        if self.records.iter().any(|r| r.key == record.key) {
            return;
        }
        let mut r = record.clone();
        if let Some(s) = r.inputs.sources.as_mut() {
            s.files.clear();
        }
        self.records.push(r);
    }

    /// Adds a copy hash unless its memo key is there; per-file records are dropped.
    pub fn add_copy_hash(&mut self, hash: &CopyHash) {
        if self.copy_hashes.iter().any(|h| h.memo == hash.memo) {
            return;
        }
        let mut h = hash.clone();
        h.sources.files.clear();
        self.copy_hashes.push(h);
    }

    /// The layer blobs the records name, each once, in record order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        let mut seen = BTreeSet::new();
        self.records
            .iter()
            .filter_map(|r| r.layer.clone())
            .filter(|l| seen.insert(l.digest))
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<Digest>,
}

#[derive(Serialize)]
struct ConfigOut<'a> {
    architecture: &'a str,
    os: &'a str,
    rootfs: RootFs,
    #[serde(rename = "strata.cache.v1")]
    content: &'a CacheContent,
}

#[derive(Deserialize)]
struct ConfigIn {
    #[serde(rename = "strata.cache.v1")]
    content: Option<CacheContent>,
}

/// A cache ready to be written: the config and manifest bytes and the layers.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The config's descriptor.
    pub config_descriptor: Descriptor,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// The manifest's descriptor.
    pub manifest_descriptor: Descriptor,
    /// The layer blobs, in manifest order.
    pub layers: Vec<LayerInfo>,
}

impl Encoded {
    /// Every blob the manifest names: the config, then the layers.
    pub fn blobs(&self) -> Vec<Descriptor> {
        std::iter::once(self.config_descriptor.clone())
            .chain(self.layers.iter().map(LayerInfo::descriptor))
            .collect()
    }
}

/// Writes `content` as a config and a manifest.
pub fn encode(content: &CacheContent, platform: &Platform) -> Encoded {
    let layers = content.layers();
    let config = serde_json::to_vec(&ConfigOut {
        architecture: &platform.architecture,
        os: &platform.os,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id).collect(),
        },
        content,
    })
    // Plain data with string keys always serialises.
    .unwrap_or_default();
    let config_descriptor = Descriptor::new(
        CACHE_CONFIG_MEDIA_TYPE,
        Digest::of(&config),
        config.len() as u64,
    );
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor_json(&config_descriptor),
        "layers": layers.iter().map(|l| descriptor_json(&l.descriptor())).collect::<Vec<_>>(),
        "annotations": { ANNOTATION: "v1" },
    }))
    .unwrap_or_default();
    let manifest_descriptor =
        Descriptor::new(OCI_MANIFEST, Digest::of(&manifest), manifest.len() as u64);
    Encoded {
        config,
        config_descriptor,
        manifest,
        manifest_descriptor,
        layers,
    }
}

fn descriptor_json(d: &Descriptor) -> serde_json::Value {
    serde_json::json!({
        "mediaType": d.media_type,
        "digest": d.digest.to_string(),
        "size": d.size,
    })
}

/// Reads a cache config (`what` names it in errors). Records of another key scheme, whose
/// key does not match their inputs, or whose layer the manifest (`layers`) does not carry are
/// left out: they could never be used safely.
pub fn decode(
    config: &[u8],
    config_media_type: &str,
    layers: &[Descriptor],
    what: &str,
) -> Result<CacheContent, Error> {
    let not_ours = |reason: String| Error::InvalidCache {
        what: what.to_string(),
        reason,
    };
    if config_media_type != CACHE_CONFIG_MEDIA_TYPE {
        return Err(not_ours(format!(
            "its config is {config_media_type}, not a strata cache ({CACHE_CONFIG_MEDIA_TYPE})"
        )));
    }
    let parsed: ConfigIn =
        serde_json::from_slice(config).map_err(|e| not_ours(format!("unreadable config: {e}")))?;
    let mut content = parsed
        .content
        .ok_or_else(|| not_ours(format!("the config has no {CONTENT_FIELD:?} field")))?;
    let carried: BTreeSet<Digest> = layers.iter().map(|l| l.digest).collect();
    content.records.retain(|r| {
        r.inputs.version == CACHE_KEY_VERSION
            && r.inputs.key() == r.key
            && r.layer
                .as_ref()
                .is_none_or(|l| carried.contains(&l.digest) && r.chain.last() == Some(&l.diff_id))
    });
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cachekey::{OpKind, Parent};

    fn layer(n: u8) -> LayerInfo {
        LayerInfo {
            diff_id: Digest::of(&[n, 1]),
            digest: Digest::of(&[n, 2]),
            size: 100 + u64::from(n),
            uncompressed_size: 1000,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
        }
    }

    fn record(text: &str, parent: Parent, below: &[Digest], l: Option<LayerInfo>) -> CacheRecord {
        let inputs = KeyInputs::new(OpKind::Run, "linux/amd64", parent, text);
        let mut chain = below.to_vec();
        chain.extend(l.iter().map(|l| l.diff_id));
        CacheRecord {
            key: inputs.key(),
            layer: l,
            chain,
            created_by: format!("{text} # buildkit"),
            created: Some("2024-01-01T00:00:00Z".into()),
            inputs,
        }
    }

    fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    #[test]
    fn content_round_trips_through_config_and_manifest() {
        let base = [Digest::of(b"base")];
        let a = record(
            "RUN a",
            Parent::Image {
                name: "busybox".into(),
                id: "sha256:00".into(),
            },
            &base,
            Some(layer(1)),
        );
        let b_parent = Parent::Step { key: a.key };
        let b = record("RUN b", b_parent, &a.chain, None);
        let mut content = CacheContent::default();
        content.add_record(&a);
        content.add_record(&b);
        content.add_record(&a);
        let mut sources = SourcesInput {
            digest: "sha256:11".into(),
            files: Default::default(),
        };
        sources.files.insert(
            "f".into(),
            crate::cachekey::FileInput {
                kind: "file".into(),
                mode: 0o644,
                size: 1,
                digest: "sha256:22".into(),
            },
        );
        content.add_copy_hash(&CopyHash {
            memo: "ab".into(),
            dest: "/x".into(),
            sources,
        });
        assert_eq!(content.records.len(), 2);
        assert!(content.copy_hashes[0].sources.files.is_empty());

        let enc = encode(&content, &host());
        assert_eq!(enc.layers, vec![layer(1)]);
        assert_eq!(enc.blobs().len(), 2);
        let m: serde_json::Value = serde_json::from_slice(&enc.manifest).unwrap();
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert_eq!(m["config"]["mediaType"], CACHE_CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["digest"], layer(1).digest.to_string());
        // The config reads as an image config with the layers' diffIDs.
        let image = strata_store::ImageConfig::parse(&enc.config).unwrap();
        assert_eq!(image.diff_ids().unwrap(), vec![layer(1).diff_id]);

        let back = decode(
            &enc.config,
            CACHE_CONFIG_MEDIA_TYPE,
            &[layer(1).descriptor()],
            "test",
        )
        .unwrap();
        assert_eq!(back, content);
        // Encoding is deterministic.
        assert_eq!(encode(&back, &host()).manifest, enc.manifest);
    }

    #[test]
    fn decode_drops_records_it_could_not_use_and_refuses_foreign_configs() {
        let a = record("RUN a", Parent::None, &[], Some(layer(1)));
        let mut forged = record("RUN b", Parent::None, &[], Some(layer(2)));
        forged.key = a.key;
        let mut old = record("RUN c", Parent::None, &[], None);
        old.inputs.version = 0;
        let missing_layer = record("RUN d", Parent::None, &[], Some(layer(3)));
        let content = CacheContent {
            records: vec![a.clone(), forged, old, missing_layer],
            copy_hashes: Vec::new(),
        };
        let enc = encode(&content, &host());
        let back = decode(
            &enc.config,
            CACHE_CONFIG_MEDIA_TYPE,
            &[layer(1).descriptor(), layer(2).descriptor()],
            "test",
        )
        .unwrap();
        assert_eq!(back.records, vec![a]);
        let e = decode(
            &enc.config,
            "application/vnd.buildkit.cacheconfig.v0",
            &[],
            "r:cache",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a strata cache"), "{e}");
        let e = decode(b"{}", CACHE_CONFIG_MEDIA_TYPE, &[], "r:cache").unwrap_err();
        assert!(e.to_string().contains("strata.cache.v1"), "{e}");
    }

    #[test]
    fn records_fit_only_the_stack_they_were_made_on() {
        let below = [Digest::of(b"a"), Digest::of(b"b")];
        let r = record(
            "RUN x",
            Parent::Step {
                key: CacheKey::parse(&"1".repeat(64)).unwrap(),
            },
            &below,
            Some(layer(1)),
        );
        assert!(r.fits(&below));
        assert!(!r.fits(&below[..1]));
        assert!(!r.fits(&[Digest::of(b"a"), Digest::of(b"c")]));
        let empty = record(
            "RUN y",
            Parent::Step {
                key: CacheKey::parse(&"1".repeat(64)).unwrap(),
            },
            &below,
            None,
        );
        assert!(empty.fits(&below));
        let linked = record("COPY --link x /", Parent::None, &below, Some(layer(2)));
        assert!(linked.fits(&[]));
    }
}
