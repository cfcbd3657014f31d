//! Records: small JSON blobs of ours (a build-cache entry, a container) that name the blobs
//! they keep alive, so garbage collection can follow them like manifests.

use serde::{Deserialize, Serialize};

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media::STRATA_RECORD;
use crate::store::Store;

/// A record blob (media type [`STRATA_RECORD`]).
///
/// `references` are kept alive by GC (followed recursively: a manifest keeps its config and
/// layers). `chain` lists diffIDs, base first, of a layer stack the record implies (a cache
/// entry's snapshot): GC reports the chainIDs of its prefixes as reachable, so the unpacked
/// layers stay. `data` is the caller's own payload, opaque to the store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Blobs this record keeps alive.
    #[serde(default)]
    pub references: Vec<Descriptor>,
    /// diffIDs of a layer stack, base first, whose unpacked layers this record keeps.
    #[serde(default)]
    pub chain: Vec<Digest>,
    /// The caller's payload.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Store {
    /// Store a record; point a `cache/` or `containers/` ref at the returned descriptor.
    /// Every referenced blob must already be in the store.
    pub fn write_record(&self, record: &Record) -> Result<Descriptor> {
        for r in &record.references {
            if !self.has_blob(&r.digest) {
                return Err(Error::BlobNotFound { digest: r.digest });
            }
        }
        let value = serde_json::to_value(record).map_err(|e| Error::json("record", e))?;
        let bytes = serde_json::to_vec(&value).map_err(|e| Error::json("record", e))?;
        let info = self.write_blob(&bytes)?;
        Ok(Descriptor::new(STRATA_RECORD, info.digest, info.size))
    }

    /// Read a record back (verified).
    pub fn read_record(&self, digest: &Digest) -> Result<Record> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::json(format!("record {digest}"), e))
    }

    /// Read only a record's payload (verified), as `T`: what a reader that does not need the
    /// references and the chain wants (a build-cache hit). The chain of a deep stack's
    /// record is long; skipping it saves decoding every digest in it on every lookup.
    pub fn read_record_data<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        #[derive(Deserialize)]
        struct DataOnly<T> {
            data: T,
        }
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice::<DataOnly<T>>(&bytes)
            .map(|r| r.data)
            .map_err(|e| Error::json(format!("record {digest}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_need_their_references() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let blob = s.write_blob(b"layer").unwrap();
        let rec = Record {
            references: vec![Descriptor::new("x", blob.digest, blob.size)],
            chain: vec![Digest::of(b"t")],
            data: serde_json::json!({"step": "RUN true"}),
        };
        let d = s.write_record(&rec).unwrap();
        assert_eq!(s.read_record(&d.digest).unwrap(), rec);
        assert_eq!(
            s.read_record_data::<serde_json::Value>(&d.digest).unwrap(),
            rec.data
        );
        #[derive(Deserialize, Debug, PartialEq)]
        struct Step {
            step: String,
        }
        assert_eq!(
            s.read_record_data::<Step>(&d.digest).unwrap(),
            Step {
                step: "RUN true".into()
            }
        );
        assert!(s.read_record_data::<u32>(&d.digest).is_err());
        let dangling = Record {
            references: vec![Descriptor::new("x", Digest::of(b"nope"), 1)],
            ..Record::default()
        };
        assert!(s.write_record(&dangling).is_err());
    }
}
