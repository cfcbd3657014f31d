//! Where cache records and blobs are read from: a registry, or an OCI layout folder.
//!
//! Reading a cache costs its manifest and config only; a layer blob is fetched when a build
//! needs it (into the store, verified: digest while it streams, diffID before it is used).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_store::registry::{Client, Event as RegistryEvent};
use strata_store::{Descriptor, Digest, Reference, Store, ANNOTATION_REF_NAME, MAX_JSON_BLOB};

use super::format::{self, CacheContent};
use super::spec::CacheLocation;
use crate::Error;

/// A cache to read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A manifest in a registry.
    Registry {
        /// The client (shared with the rest of the build).
        client: Arc<Client>,
        /// The cache's reference.
        reference: Reference,
    },
    /// An OCI image layout folder.
    Local {
        /// The folder.
        dir: PathBuf,
        /// The tag of the cache manifest in its `index.json`.
        tag: String,
    },
}

/// Registry events nobody shows (a cache read is a handful of small requests).
fn quiet(_: RegistryEvent) {}

impl Source {
    /// The source for `location`.
    pub fn new(location: &CacheLocation, client: &Arc<Client>) -> Source {
        match location {
            CacheLocation::Registry(r) => Source::Registry {
                client: client.clone(),
                reference: r.clone(),
            },
            CacheLocation::Local { dir, tag } => Source::Local {
                dir: dir.clone(),
                tag: tag.clone(),
            },
        }
    }

    /// How messages name it.
    pub fn describe(&self) -> String {
        match self {
            Source::Registry { reference, .. } => reference.to_string(),
            Source::Local { dir, tag } => CacheLocation::Local {
                dir: dir.clone(),
                tag: tag.clone(),
            }
            .to_string(),
        }
    }

    /// Reads the cache's records (manifest and config, no layers); `Ok(None)` when there is
    /// no cache there yet.
    pub fn load(&self) -> Result<Option<CacheContent>, Error> {
        let what = self.describe();
        match self {
            Source::Registry { client, reference } => {
                let Some(manifest) = client.fetch_manifest(reference, &quiet)? else {
                    return Ok(None);
                };
                let config = client.fetch_blob_bytes(reference, &manifest.config, &quiet)?;
                format::decode(
                    &config,
                    &manifest.config.media_type,
                    &manifest.layers,
                    &what,
                )
                .map(Some)
            }
            Source::Local { dir, tag } => {
                let Some(manifest) = local_manifest(dir, tag)? else {
                    return Ok(None);
                };
                let bytes = read_local_blob(dir, &manifest, &what)?;
                let parsed: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| Error::InvalidCache {
                        what: what.clone(),
                        reason: format!("unreadable manifest: {e}"),
                    })?;
                let config = descriptor_of(&parsed["config"], &what)?;
                let layers: Vec<Descriptor> = parsed["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| descriptor_of(l, &what))
                    .collect::<Result<_, _>>()?;
                let config_bytes = read_local_blob(dir, &config, &what)?;
                format::decode(&config_bytes, &config.media_type, &layers, &what).map(Some)
            }
        }
    }

    /// Puts the layer blob `blob` (diffID `diff_id`) into `store`, verified.
    pub fn fetch_layer(
        &self,
        store: &Store,
        blob: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(), Error> {
        match self {
            Source::Registry { client, reference } => {
                client.fetch_layer(store, reference, blob, diff_id, &quiet)?;
                Ok(())
            }
            Source::Local { dir, .. } => {
                if store.has_blob(&blob.digest) {
                    return Ok(());
                }
                let path = blob_path(dir, &blob.digest);
                let file = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
                let _lease = store.lease()?;
                store.ingest(file.take(blob.size.saturating_add(1)), Some(blob.digest))?;
                let info = store.index_layer_blob(&blob.digest)?;
                if info.diff_id != *diff_id {
                    return Err(Error::InvalidCache {
                        what: self.describe(),
                        reason: format!(
                            "layer {} holds diffID {}, not {diff_id} as its record says",
                            blob.digest, info.diff_id
                        ),
                    });
                }
                Ok(())
            }
        }
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// A blob of a layout folder, whole and verified (small blobs only: manifests, configs).
fn read_local_blob(dir: &Path, d: &Descriptor, what: &str) -> Result<Vec<u8>, Error> {
    if d.size > MAX_JSON_BLOB {
        return Err(Error::InvalidCache {
            what: what.to_string(),
            reason: format!("blob {} declares {} bytes", d.digest, d.size),
        });
    }
    let path = blob_path(dir, &d.digest);
    let file = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BLOB + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", &path, e))?;
    if Digest::of(&bytes) != d.digest {
        return Err(Error::InvalidCache {
            what: what.to_string(),
            reason: format!("{} does not hash to its name", path.display()),
        });
    }
    Ok(bytes)
}

fn descriptor_of(v: &serde_json::Value, what: &str) -> Result<Descriptor, Error> {
    let bad = |reason: &str| Error::InvalidCache {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    let digest = v["digest"]
        .as_str()
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| bad("a descriptor without a valid digest"))?;
    let size = v["size"]
        .as_u64()
        .ok_or_else(|| bad("a descriptor without a size"))?;
    let media_type = v["mediaType"].as_str().unwrap_or_default();
    Ok(Descriptor::new(media_type, digest, size))
}

/// The manifest tagged `tag` in a layout folder's `index.json`: its ref name is the tag, or
/// a full reference with that tag (as the store writes). `Ok(None)` when the folder has no
/// layout or no such tag.
fn local_manifest(dir: &Path, tag: &str) -> Result<Option<Descriptor>, Error> {
    let path = dir.join("index.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let what = dir.display().to_string();
    let index: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidCache {
            what: what.clone(),
            reason: format!("unreadable index.json: {e}"),
        })?;
    for m in index["manifests"].as_array().into_iter().flatten() {
        let name = m["annotations"][ANNOTATION_REF_NAME]
            .as_str()
            .unwrap_or_default();
        let tag_of_name = Reference::parse(name)
            .ok()
            .and_then(|r| r.tag().map(str::to_string));
        if name == tag || tag_of_name.as_deref() == Some(tag) {
            return descriptor_of(m, &what).map(Some);
        }
    }
    Ok(None)
}

/// The reference a local cache's manifest is tagged with in the store layout we write
/// (`index.json` names it `localhost/strata-cache:<tag>`).
pub fn local_tag_reference(tag: &str) -> Result<Reference, Error> {
    Ok(Reference::parse(&format!("localhost/strata-cache:{tag}"))?)
}
