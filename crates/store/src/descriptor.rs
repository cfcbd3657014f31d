//! A content descriptor with a typed digest.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// What a ref or a manifest points at: media type, digest and size of one blob.
///
/// The store's own small descriptor, with a validated [`Digest`]; converts to and from
/// `oci_spec::image::Descriptor` for everything that goes into manifests and indexes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The blob's media type.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
}

impl Descriptor {
    /// A descriptor for a blob.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
        }
    }

    /// The OCI type, for manifests and indexes.
    pub fn to_oci(&self) -> oci_spec::image::Descriptor {
        oci_spec::image::Descriptor::new(
            self.media_type.as_str().into(),
            self.size,
            oci_spec::image::Digest::from(self.digest),
        )
    }

    /// Read an OCI descriptor, refusing digests the store cannot verify.
    pub fn from_oci(d: &oci_spec::image::Descriptor, what: &str) -> Result<Descriptor> {
        let digest = Digest::try_from(d.digest())
            .map_err(|e| Error::content(what.to_string(), e.to_string()))?;
        Ok(Descriptor {
            media_type: d.media_type().to_string(),
            digest,
            size: d.size(),
        })
    }
}
