//! Reachability from the refs: garbage collection and disk accounting.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::config::ImageConfig;
use crate::descriptor::Descriptor;
use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::media;
use crate::refs::{Ref, RefKind};
use crate::store::Store;

/// Everything reachable from a set of refs.
#[derive(Clone, Debug, Default)]
pub struct Reachable {
    /// Every reachable blob.
    pub blobs: BTreeSet<Digest>,
    /// The chainIDs of every reachable layer stack prefix (images' layers and records'
    /// chains): the unpacked layers the caller must keep.
    pub chain_ids: BTreeSet<Digest>,
    /// Referenced blobs that are not in the store, with what referenced them.
    pub missing: Vec<(Digest, String)>,
    /// Referenced blobs that could not be read or parsed, with the reason.
    pub damaged: Vec<(Digest, String)>,
}

impl Reachable {
    /// Whether the walk met a missing or damaged blob: then what it would have referenced
    /// may be unknown.
    pub fn is_uncertain(&self) -> bool {
        !self.damaged.is_empty() || !self.missing.is_empty()
    }
}

/// Options of [`Store::gc`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GcOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
}

/// What a garbage collection removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Unreachable blobs with their sizes.
    pub removed: Vec<(Digest, u64)>,
    /// Their total size.
    pub bytes_freed: u64,
    /// Leftover temp files of interrupted writes (removed unless dry run).
    pub temp_files: Vec<std::path::PathBuf>,
    /// What stays; `chain_ids` tells the caller which unpacked layers to keep.
    pub reachable: Reachable,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Disk use of one image (all tags of one manifest).
#[derive(Clone, Debug)]
pub struct ImageUsage {
    /// Its tags, full references (an untagged image shows its ID's hex).
    pub tags: Vec<String>,
    /// The manifest.
    pub manifest: Digest,
    /// Bytes of every blob it needs.
    pub total: u64,
    /// Bytes of the blobs no other image needs.
    pub unique: u64,
}

/// Disk use of the whole store.
#[derive(Clone, Debug, Default)]
pub struct DiskUsage {
    /// Per image.
    pub images: Vec<ImageUsage>,
    /// Bytes of every blob reachable from any ref, shared blobs counted once.
    pub reachable: u64,
    /// Bytes of blobs nothing references (what `prune` would free).
    pub reclaimable: u64,
    /// Bytes of all blobs.
    pub total: u64,
}

impl Store {
    /// Add `target` and everything it references to `out`.
    pub(crate) fn mark(&self, target: &Descriptor, from: &str, out: &mut Reachable) {
        let mut stack = vec![(target.clone(), from.to_string(), 0u32)];
        while let Some((d, from, depth)) = stack.pop() {
            if !out.blobs.insert(d.digest) {
                continue;
            }
            if !self.has_blob(&d.digest) {
                out.missing.push((d.digest, from));
                continue;
            }
            let is_node = media::is_manifest(&d.media_type)
                || media::is_index(&d.media_type)
                || d.media_type == media::STRATA_RECORD;
            if !is_node {
                continue;
            }
            if depth > 16 {
                out.damaged
                    .push((d.digest, "references nested too deeply".into()));
                continue;
            }
            let what = format!("{} {}", d.media_type, d.digest);
            let children = self.children(&d, out);
            match children {
                Ok(children) => {
                    for c in children {
                        stack.push((c, what.clone(), depth + 1));
                    }
                }
                Err(e) => out.damaged.push((d.digest, e.to_string())),
            }
        }
    }

    /// The blobs a manifest, index or record references; records chainIDs on the way.
    fn children(&self, d: &Descriptor, out: &mut Reachable) -> Result<Vec<Descriptor>> {
        let what = format!("{} {}", d.media_type, d.digest);
        let bytes = self.read_blob(&d.digest)?;
        if media::is_manifest(&d.media_type) {
            let m: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| Error::json(what.clone(), e))?;
            let config = Descriptor::from_oci(m.config(), &what)?;
            let mut children = vec![config.clone()];
            for l in m.layers() {
                children.push(Descriptor::from_oci(l, &what)?);
            }
            if self.has_blob(&config.digest) {
                let parsed = ImageConfig::parse(&self.read_blob(&config.digest)?)?;
                out.chain_ids.extend(chain_ids(&parsed.diff_ids()?));
            }
            Ok(children)
        } else if media::is_index(&d.media_type) {
            let i: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| Error::json(what.clone(), e))?;
            i.manifests()
                .iter()
                .map(|m| Descriptor::from_oci(m, &what))
                .collect()
        } else {
            let r = self.read_record(&d.digest)?;
            out.chain_ids.extend(chain_ids(&r.chain));
            Ok(r.references)
        }
    }

    /// What the given refs reach.
    pub(crate) fn reach(&self, refs: &[Ref]) -> Reachable {
        let mut out = Reachable::default();
        for r in refs {
            self.mark(
                &r.target,
                &format!("{} ref {}", r.kind.dir_name(), r.name),
                &mut out,
            );
        }
        out
    }

    /// Everything reachable from every ref (tags, cache records, containers).
    pub fn reachable(&self) -> Result<Reachable> {
        let _lease = self.lease()?;
        let _refs = self.lock_refs(false)?;
        let mut refs = Vec::new();
        for kind in RefKind::ALL {
            refs.extend(self.list_refs_locked(kind)?);
        }
        Ok(self.reach(&refs))
    }

    /// What some refs reach (say only the tags, or only the cache records): with
    /// [`Store::reachable`] this tells what removing the other refs would free.
    pub fn reachable_from(&self, refs: &[Ref]) -> Result<Reachable> {
        let _lease = self.lease()?;
        let _refs = self.lock_refs(false)?;
        Ok(self.reach(refs))
    }

    /// Remove every blob no ref reaches, their layer records, and leftover temp files.
    ///
    /// Waits for every [`crate::Lease`] to be dropped (do not hold one while calling this).
    /// Refuses to sweep when a manifest, index or record on the way is missing or damaged
    /// (what it referenced is unknown): run `fsck --repair` first.
    pub fn gc(&self, options: GcOptions) -> Result<GcReport> {
        let _gc = self.lock_gc_exclusive()?;
        let _refs = self.lock_refs(false)?;
        let mut refs = Vec::new();
        for kind in RefKind::ALL {
            refs.extend(self.list_refs_locked(kind)?);
        }
        let reachable = self.reach(&refs);
        if reachable.is_uncertain() {
            let (d, why) = reachable
                .damaged
                .first()
                .cloned()
                .or_else(|| {
                    reachable
                        .missing
                        .first()
                        .map(|(d, from)| (*d, format!("missing, referenced by {from}")))
                })
                .unwrap_or((Digest::of(b""), String::new()));
            return Err(Error::content(
                "store",
                format!(
                    "cannot collect garbage while {d} is damaged ({why}); run `strata fsck --repair` first"
                ),
            ));
        }
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        for (digest, size) in self.list_blobs()? {
            if reachable.blobs.contains(&digest) {
                continue;
            }
            if !options.dry_run {
                self.remove_blob(&digest)?;
                self.remove_blob_sources(&digest)?;
            }
            report.bytes_freed += size;
            report.removed.push((digest, size));
        }
        if !options.dry_run {
            for record in self.layer_records()? {
                if !self.has_blob(&record.digest) {
                    self.remove_layer_record(&record)?;
                }
            }
        }
        report.temp_files = self.temp_files()?;
        if !options.dry_run {
            for path in &report.temp_files {
                let _ = fs::remove_file(path);
            }
        }
        report.reachable = reachable;
        Ok(report)
    }

    /// Temp files in `ingest/` (only leftovers when no lease is held).
    pub(crate) fn temp_files(&self) -> Result<Vec<std::path::PathBuf>> {
        let dir = &self.paths.ingest;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
            out.push(entry.map_err(|e| Error::io("list", dir, e))?.path());
        }
        out.sort();
        Ok(out)
    }

    /// Per-image and whole-store disk use of blobs, shared blobs counted once.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let _lease = self.lease()?;
        let _refs = self.lock_refs(false)?;
        let sizes: BTreeMap<Digest, u64> = self.list_blobs()?.into_iter().collect();
        let mut by_manifest: BTreeMap<Digest, (Vec<String>, BTreeSet<Digest>)> = BTreeMap::new();
        let mut images = self.list_refs_locked(RefKind::Tag)?;
        images.extend(self.list_refs_locked(RefKind::Untagged)?);
        for r in images {
            let entry = by_manifest.entry(r.target.digest).or_insert_with(|| {
                let mut reach = Reachable::default();
                self.mark(&r.target, &r.name, &mut reach);
                (Vec::new(), reach.blobs)
            });
            entry.0.push(r.name);
        }
        let mut users: BTreeMap<Digest, usize> = BTreeMap::new();
        for (_, blobs) in by_manifest.values() {
            for b in blobs {
                *users.entry(*b).or_default() += 1;
            }
        }
        let size_of = |d: &Digest| sizes.get(d).copied().unwrap_or(0);
        let mut usage = DiskUsage::default();
        for (manifest, (tags, blobs)) in &by_manifest {
            usage.images.push(ImageUsage {
                tags: tags.clone(),
                manifest: *manifest,
                total: blobs.iter().map(size_of).sum(),
                unique: blobs
                    .iter()
                    .filter(|b| users.get(*b) == Some(&1))
                    .map(size_of)
                    .sum(),
            });
        }
        let mut refs = Vec::new();
        for kind in RefKind::ALL {
            refs.extend(self.list_refs_locked(kind)?);
        }
        let reachable = self.reach(&refs);
        usage.total = sizes.values().sum();
        usage.reachable = reachable.blobs.iter().map(size_of).sum();
        usage.reclaimable = usage.total - usage.reachable;
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Compression;
    use crate::record::Record;
    use crate::reference::Reference;
    use crate::ImageConfig;
    use std::io::Write;

    fn layer(s: &Store, fill: u8, len: usize) -> crate::LayerInfo {
        let mut w = s.layer_writer(Compression::None).unwrap();
        w.write_all(&vec![fill; len]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn gc_keeps_what_refs_reach_and_reports_chain_ids() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let base = layer(&s, 1, 1000);
        let top = layer(&s, 2, 500);
        let cached = layer(&s, 3, 300);
        let garbage = layer(&s, 4, 200);
        let a = s
            .write_image(&ImageConfig::default(), &[base.clone(), top.clone()])
            .unwrap();
        let b = s
            .write_image(&ImageConfig::default(), std::slice::from_ref(&base))
            .unwrap();
        s.tag(&Reference::parse("a").unwrap(), &a).unwrap();
        s.tag(&Reference::parse("b").unwrap(), &b).unwrap();
        let rec = s
            .write_record(&Record {
                references: vec![cached.descriptor()],
                chain: vec![base.diff_id, cached.diff_id],
                data: serde_json::Value::Null,
            })
            .unwrap();
        s.set_ref(RefKind::Cache, "key", &rec).unwrap();

        let tags = s.list_refs(RefKind::Tag).unwrap();
        let by_tags = s.reachable_from(&tags).unwrap();
        assert!(by_tags.blobs.contains(&top.digest) && !by_tags.blobs.contains(&cached.digest));
        let by_cache = s
            .reachable_from(&s.list_refs(RefKind::Cache).unwrap())
            .unwrap();
        assert!(by_cache.blobs.contains(&cached.digest) && !by_cache.blobs.contains(&top.digest));

        let dry = s.gc(GcOptions { dry_run: true }).unwrap();
        assert_eq!(dry.removed, vec![(garbage.digest, 200)]);
        assert!(s.has_blob(&garbage.digest));

        let usage = s.disk_usage().unwrap();
        assert_eq!(usage.images.len(), 2);
        let ua = usage
            .images
            .iter()
            .find(|u| u.manifest == a.manifest.digest)
            .unwrap();
        assert_eq!(ua.unique, 500 + a.manifest.size + a.config.size);
        assert_eq!(ua.total, 1500 + a.manifest.size + a.config.size);
        assert_eq!(usage.reclaimable, 200);

        let report = s.gc(GcOptions::default()).unwrap();
        assert_eq!(report.bytes_freed, 200);
        assert!(!s.has_blob(&garbage.digest));
        assert!(s.layer_blobs(&garbage.diff_id).unwrap().is_empty());
        assert!(s.has_blob(&cached.digest));
        let chains = &report.reachable.chain_ids;
        for c in a.chain_ids().iter().chain(&b.chain_ids()) {
            assert!(chains.contains(c));
        }
        assert!(chains.contains(&crate::chain_id(&[base.diff_id, cached.diff_id]).unwrap()));
        assert_eq!(chains.len(), 3);

        s.remove_ref(RefKind::Cache, "key").unwrap();
        s.untag(&Reference::parse("b").unwrap()).unwrap();
        let report = s.gc(GcOptions::default()).unwrap();
        assert!(!s.has_blob(&cached.digest));
        assert!(s.has_blob(&base.digest));
        assert!(report.removed.iter().any(|(d, _)| *d == b.manifest.digest));
    }
}
