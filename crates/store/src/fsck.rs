//! Verifying the store, and repairing what can be repaired.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsutil::read_capped;
use crate::media::Compression;
use crate::refs::{Ref, RefKind};
use crate::store::Store;

/// Options of [`Store::fsck`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FsckOptions {
    /// Drop corrupt blobs, refs whose content is incomplete, stale layer records and temp
    /// files, and rewrite `index.json` from the tags.
    pub repair: bool,
}

/// What `fsck` found (and, with `repair`, did).
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    /// Blobs hashed.
    pub blobs_checked: usize,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Blobs whose content does not match their name.
    pub corrupt_blobs: Vec<Digest>,
    /// Referenced blobs the store lacks, with what referenced them.
    pub missing_blobs: Vec<(Digest, String)>,
    /// Refs whose content is incomplete or unreadable, with the reason.
    pub broken_refs: Vec<(RefKind, String, String)>,
    /// Layer records that are wrong or point at nothing.
    pub bad_layer_records: Vec<String>,
    /// Files in `blobs/sha256` whose names are not digests.
    pub stray_files: Vec<PathBuf>,
    /// Whether `index.json` disagrees with the tag refs (or is unreadable).
    pub index_out_of_step: bool,
    /// Leftover temp files of interrupted writes (harmless; `repair` and `prune` remove them).
    pub temp_files: usize,
    /// Images (tags) that were removed or are damaged.
    pub affected_images: Vec<String>,
    /// What `repair` did, one line each.
    pub repairs: Vec<String>,
}

impl FsckReport {
    /// True when nothing is wrong (leftover temp files do not count).
    pub fn is_clean(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.missing_blobs.is_empty()
            && self.broken_refs.is_empty()
            && self.bad_layer_records.is_empty()
            && self.stray_files.is_empty()
            && !self.index_out_of_step
    }
}

impl Store {
    /// Verify every blob, every layer record (compressed layers are decompressed and their
    /// diffID checked), every ref's content, and `index.json`.
    pub fn fsck(&self, options: FsckOptions) -> Result<FsckReport> {
        // Repair deletes, so it excludes every other user, like GC.
        let (_gc, _lease) = if options.repair {
            (Some(self.lock_gc_exclusive()?), None)
        } else {
            (None, Some(self.lease()?))
        };
        let _refs = self.lock_refs(options.repair)?;
        let mut report = FsckReport::default();

        let mut corrupt = BTreeSet::new();
        for (digest, size) in self.list_blobs()? {
            report.blobs_checked += 1;
            report.bytes_checked += size;
            match self.verify_blob(&digest) {
                Ok(()) => {}
                Err(Error::DigestMismatch { .. }) => {
                    corrupt.insert(digest);
                }
                Err(e) => return Err(e),
            }
        }
        report.corrupt_blobs = corrupt.iter().copied().collect();
        let dir = &self.paths.blobs;
        for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", dir, e))?;
            let ok = entry
                .file_name()
                .to_str()
                .is_some_and(|n| Digest::from_hex(n).is_ok());
            if !ok || !entry.path().is_file() {
                report.stray_files.push(entry.path());
            }
        }

        let mut bad_records = Vec::new();
        for record in self.layer_records()? {
            let problem = if !self.has_blob(&record.digest) {
                Some("its blob is gone".to_string())
            } else if corrupt.contains(&record.digest) {
                Some("its blob is corrupt".to_string())
            } else if record.compression() == Compression::None {
                (record.diff_id != record.digest)
                    .then(|| "an uncompressed layer's diffID must be its digest".to_string())
            } else {
                let mut reader = self.open_layer(&record.digest, &record.diff_id)?;
                let mut sink = io::sink();
                match io::copy(&mut reader, &mut sink) {
                    Ok(n) if n == record.uncompressed_size => None,
                    Ok(n) => Some(format!(
                        "uncompressed size is {n}, record says {}",
                        record.uncompressed_size
                    )),
                    Err(e) => Some(e.to_string()),
                }
            };
            if let Some(p) = problem {
                report.bad_layer_records.push(format!(
                    "layer {} in blob {}: {p}",
                    record.diff_id, record.digest
                ));
                bad_records.push(record);
            }
        }

        let mut refs: Vec<Ref> = Vec::new();
        for kind in RefKind::ALL {
            refs.extend(self.list_refs_locked(kind)?);
        }
        let mut broken: Vec<Ref> = Vec::new();
        for r in &refs {
            let reach = self.reach(std::slice::from_ref(r));
            let mut reasons: Vec<String> = Vec::new();
            for (d, by) in &reach.missing {
                reasons.push(format!("{d} is missing"));
                report.missing_blobs.push((*d, by.clone()));
            }
            for (d, why) in &reach.damaged {
                reasons.push(format!("{d} is damaged: {why}"));
            }
            for d in &reach.blobs {
                if corrupt.contains(d) {
                    reasons.push(format!("{d} is corrupt"));
                }
            }
            if reasons.is_empty() && matches!(r.kind, RefKind::Tag | RefKind::Untagged) {
                if let Err(e) = self.image(&r.target) {
                    reasons.push(e.to_string());
                }
            }
            if !reasons.is_empty() {
                report
                    .broken_refs
                    .push((r.kind, r.name.clone(), reasons.join("; ")));
                if matches!(r.kind, RefKind::Tag | RefKind::Untagged) {
                    report.affected_images.push(r.name.clone());
                }
                broken.push(r.clone());
            }
        }
        report.missing_blobs.sort();
        report.missing_blobs.dedup();

        let tags: Vec<Ref> = refs
            .iter()
            .filter(|r| r.kind == RefKind::Tag)
            .cloned()
            .collect();
        report.index_out_of_step = !self.index_matches(&tags);
        report.temp_files = self.temp_files()?.len();

        if options.repair {
            for d in &report.corrupt_blobs {
                self.remove_blob(d)?;
                report.repairs.push(format!("removed corrupt blob {d}"));
            }
            for path in &report.stray_files {
                let _ = fs::remove_file(path);
                report
                    .repairs
                    .push(format!("removed stray file {}", path.display()));
            }
            for record in &bad_records {
                self.remove_layer_record(record)?;
                report.repairs.push(format!(
                    "removed layer record {} -> {}",
                    record.diff_id, record.digest
                ));
            }
            for r in &broken {
                self.remove_ref_locked(r.kind, &r.name)?;
                report
                    .repairs
                    .push(format!("removed {} ref {}", r.kind.dir_name(), r.name));
            }
            if report.index_out_of_step || !broken.is_empty() {
                self.write_index_locked()?;
                report
                    .repairs
                    .push("rewrote index.json from the tags".into());
            }
            for path in self.temp_files()? {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(report)
    }

    /// Whether `index.json` lists exactly the tags (same names, same targets).
    fn index_matches(&self, tags: &[Ref]) -> bool {
        let Ok(bytes) = read_capped(&self.paths.index_json(), crate::MAX_JSON_BLOB) else {
            return false;
        };
        let Ok(actual) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return false;
        };
        let Ok(expected) =
            serde_json::from_slice::<serde_json::Value>(&Store::index_json_for(tags))
        else {
            return false;
        };
        actual == expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;
    use crate::ImageConfig;
    use std::io::Write;

    #[test]
    fn fsck_finds_and_repairs_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut w = s.layer_writer(Compression::Zstd).unwrap();
        w.write_all(&vec![9u8; 50_000]).unwrap();
        let layer = w.finish().unwrap();
        let image = s
            .write_image(&ImageConfig::default(), std::slice::from_ref(&layer))
            .unwrap();
        s.tag(&Reference::parse("x").unwrap(), &image).unwrap();
        let other = s.write_image(&ImageConfig::default(), &[]).unwrap();
        s.tag(&Reference::parse("y").unwrap(), &other).unwrap();
        assert!(s.fsck(FsckOptions::default()).unwrap().is_clean());

        let path = s.blob_path(&layer.digest);
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&path, &bytes).unwrap();

        let report = s.fsck(FsckOptions::default()).unwrap();
        assert!(!report.is_clean());
        assert_eq!(report.corrupt_blobs, vec![layer.digest]);
        assert_eq!(report.affected_images, vec!["docker.io/library/x:latest"]);
        assert_eq!(report.bad_layer_records.len(), 1);

        let repaired = s.fsck(FsckOptions { repair: true }).unwrap();
        assert!(!repaired.repairs.is_empty());
        assert!(!s.has_blob(&layer.digest));
        assert!(s.resolve("x").is_err());
        assert!(s.resolve("y").is_ok());
        let after = s.fsck(FsckOptions::default()).unwrap();
        assert!(after.is_clean(), "{after:?}");
    }

    #[test]
    fn fsck_notices_a_stale_index_json() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let image = s.write_image(&ImageConfig::default(), &[]).unwrap();
        s.tag(&Reference::parse("x").unwrap(), &image).unwrap();
        fs::write(
            s.root().join("index.json"),
            br#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        assert!(s.fsck(FsckOptions::default()).unwrap().index_out_of_step);
        s.fsck(FsckOptions { repair: true }).unwrap();
        assert!(s.fsck(FsckOptions::default()).unwrap().is_clean());
    }
}
