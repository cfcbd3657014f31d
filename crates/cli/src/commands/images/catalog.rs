//! Every image in the store, loaded once: its tags, layers with their sizes, history, the
//! image it was built on and the containers that use it. `images`, `history`, `inspect`,
//! `rmi` and `system df` all read the store through this one view.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use strata_builder::analyze::{history_of, HistoryEntry};
use strata_store::{Descriptor, Digest, Image, RefKind, Reference, Store};

use crate::ui::human;

/// One image (one image ID) and everything that names it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The image (through the first manifest that names it).
    pub image: Image,
    /// Its tags, sorted.
    pub tags: Vec<Reference>,
    /// The tags with the manifest each points at (a tag may point at another manifest of
    /// the same config).
    pub tag_targets: Vec<(Reference, Descriptor)>,
    /// Whether an untagged ref keeps it.
    pub untagged: bool,
    /// Its config as JSON.
    pub config: serde_json::Value,
    /// The uncompressed size of each layer, base first.
    pub layer_sizes: Vec<u64>,
    /// Creation time, seconds since the epoch.
    pub created: Option<i64>,
    /// The containers (container ref names) using it.
    pub containers: Vec<String>,
}

impl Entry {
    /// The image ID.
    pub fn id(&self) -> Digest {
        self.image.id()
    }

    /// Uncompressed size of all its layers (Docker's SIZE).
    pub fn size(&self) -> u64 {
        self.layer_sizes.iter().sum()
    }

    /// The config's history, oldest first.
    pub fn history(&self) -> Vec<HistoryEntry> {
        history_of(&self.config)
    }

    /// Tags as Docker shows them (`busybox:latest`).
    pub fn familiar_tags(&self) -> Vec<String> {
        self.tags.iter().map(Reference::familiar).collect()
    }

    /// `repository@sha256:<manifest>` for each tagged repository, as Docker's image store
    /// lists `RepoDigests`.
    pub fn repo_digests(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .tag_targets
            .iter()
            .map(|(r, d)| format!("{}@{}", r.familiar_name(), d.digest))
            .collect();
        set.into_iter().collect()
    }

    /// A short label: its tags, or `<none>` and its ID.
    pub fn label(&self) -> String {
        if self.tags.is_empty() {
            format!("<none> ({})", self.id().short())
        } else {
            self.familiar_tags().join(", ")
        }
    }
}

/// The whole store, by image ID.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: BTreeMap<Digest, Entry>,
}

impl Catalog {
    /// Read every tagged and untagged image and the container refs. An image whose blobs
    /// cannot be read is left out with a warning (`strata fsck` says more).
    pub fn load(store: &Store) -> anyhow::Result<Catalog> {
        let _lease = store.lease()?;
        let mut refs = store.list_refs(RefKind::Tag)?;
        refs.extend(store.list_refs(RefKind::Untagged)?);
        let mut by_manifest: BTreeMap<Digest, Digest> = BTreeMap::new();
        let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut entries: BTreeMap<Digest, Entry> = BTreeMap::new();
        for r in refs {
            let image = match store.image(&r.target) {
                Ok(image) => image,
                Err(e) => {
                    log::warn!(
                        "skipping {} ref {}: {e} (`strata fsck` checks the store)",
                        r.kind.dir_name(),
                        r.name
                    );
                    continue;
                }
            };
            let id = image.id();
            by_manifest.insert(r.target.digest, id);
            if let std::collections::btree_map::Entry::Vacant(slot) = entries.entry(id) {
                let config: serde_json::Value = serde_json::from_slice(&image.config_bytes)
                    .with_context(|| format!("reading config {id}"))?;
                let mut layer_sizes = Vec::with_capacity(image.layers.len());
                for (blob, diff_id) in image.layers.iter().zip(&image.diff_ids) {
                    let size = match sizes.get(diff_id) {
                        Some(s) => *s,
                        None => {
                            let s = store
                                .layer_blobs(diff_id)?
                                .first()
                                .map_or(blob.size, |l| l.uncompressed_size);
                            sizes.insert(*diff_id, s);
                            s
                        }
                    };
                    layer_sizes.push(size);
                }
                let created = image.config_parsed.created().and_then(human::parse_rfc3339);
                slot.insert(Entry {
                    image,
                    tags: Vec::new(),
                    tag_targets: Vec::new(),
                    untagged: false,
                    config,
                    layer_sizes,
                    created,
                    containers: Vec::new(),
                });
            }
            let Some(entry) = entries.get_mut(&id) else {
                continue;
            };
            match r.kind {
                RefKind::Tag => match Reference::parse(&r.name) {
                    Ok(reference) => {
                        entry.tags.push(reference.clone());
                        entry.tag_targets.push((reference, r.target));
                    }
                    Err(e) => log::warn!("skipping tag {}: {e}", r.name),
                },
                _ => entry.untagged = true,
            }
        }
        for entry in entries.values_mut() {
            entry.tags.sort();
        }
        // Containers: a container ref points at a record that references the image's
        // manifest (or, directly, the manifest or config).
        for r in store.list_refs(RefKind::Container)? {
            let mut named: Vec<Digest> = vec![r.target.digest];
            if r.target.media_type == strata_store::media::STRATA_RECORD {
                match store.read_record(&r.target.digest) {
                    Ok(record) => named.extend(record.references.iter().map(|d| d.digest)),
                    Err(e) => log::warn!("cannot read container record {}: {e}", r.name),
                }
            }
            let users: BTreeSet<Digest> = named
                .iter()
                .filter_map(|d| {
                    by_manifest
                        .get(d)
                        .copied()
                        .or_else(|| entries.contains_key(d).then_some(*d))
                })
                .collect();
            for id in users {
                if let Some(e) = entries.get_mut(&id) {
                    e.containers.push(r.name.clone());
                }
            }
        }
        Ok(Catalog { entries })
    }

    /// Every image, by ID.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The image with this ID.
    pub fn get(&self, id: &Digest) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// The image a user names (reference, full or short ID), resolved as the store does.
    pub fn find(&self, store: &Store, name: &str) -> anyhow::Result<&Entry> {
        let image = store.resolve(name)?;
        self.get(&image.id()).ok_or_else(|| {
            anyhow::Error::new(strata_store::Error::ImageNotFound {
                reference: name.to_string(),
            })
        })
    }

    /// The image `child` was built on: the closest other image whose layers and history
    /// both start `child`'s (what Docker calls the parent of a locally built image).
    pub fn parent_of(&self, child: &Entry) -> Option<&Entry> {
        let child_history = child.history();
        self.entries
            .values()
            .filter(|p| is_parent(p, &p.history(), child, &child_history))
            .max_by_key(|p| (p.history().len(), p.image.diff_ids.len()))
    }

    /// The images built on `parent`.
    pub fn children_of(&self, parent: &Entry) -> Vec<&Entry> {
        let parent_history = parent.history();
        self.entries
            .values()
            .filter(|c| is_parent(parent, &parent_history, c, &c.history()))
            .collect()
    }
}

/// Whether `p` is an image `c` was built on: `p` has layers, `c`'s layers start with all of
/// `p`'s, `c`'s history starts with all of `p`'s, and `c` adds something.
fn is_parent(p: &Entry, ph: &[HistoryEntry], c: &Entry, ch: &[HistoryEntry]) -> bool {
    p.id() != c.id()
        && !p.image.diff_ids.is_empty()
        && c.image.diff_ids.starts_with(&p.image.diff_ids)
        && ch.starts_with(ph)
        && (ch.len() > ph.len() || c.image.diff_ids.len() > p.image.diff_ids.len())
}
