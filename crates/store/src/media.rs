//! Media types and layer compression.

use std::fmt;
use std::str::FromStr;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, plain tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, plain tar (some tools put compressed bytes under it: sniff).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker layer, gzip.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, zstd.
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// A strata record: a small JSON blob of ours that lists the blobs it keeps alive.
pub const STRATA_RECORD: &str = "application/vnd.strata.record.v1+json";

/// Whether a media type names an image manifest (OCI or Docker).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Whether a media type names an index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// The compression a layer media type declares, or `None` if it is not a layer type we read.
/// Non-distributable variants are layers too.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        OCI_LAYER_TAR
        | DOCKER_LAYER_TAR
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Some(Compression::None),
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        OCI_LAYER_ZSTD
        | DOCKER_LAYER_ZSTD
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Compression {
    /// Plain tar: the blob digest equals the diffID.
    None,
    /// gzip, for docker-compatible output.
    Gzip,
    /// zstd, the store's default (multithreaded on all cores).
    #[default]
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }

    /// The name used on the command line and in records (`none`, `gzip`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// Recognise a stream's compression from its first bytes (magic numbers as go-archive
    /// detects them); anything else is taken to be plain.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b, 0x08]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || is_zstd_skippable(head) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

fn is_zstd_skippable(head: &[u8]) -> bool {
    head.len() >= 8
        && matches!(
            u32::from_le_bytes([head[0], head[1], head[2], head[3]]),
            0x184D_2A50..=0x184D_2A5F
        )
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "tar" | "uncompressed" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            other => Err(format!(
                "unknown compression {other:?} (expected none, gzip or zstd)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_numbers() {
        assert_eq!(
            Compression::sniff(&[0x1f, 0x8b, 0x08, 0]),
            Compression::Gzip
        );
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(
            Compression::sniff(&[0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    #[test]
    fn media_types_map_to_compression() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(layer_compression(c.oci_media_type()), Some(c));
            assert_eq!(c.name().parse::<Compression>(), Ok(c));
        }
        assert_eq!(
            layer_compression(DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(layer_compression(OCI_CONFIG), None);
        assert!("lz4".parse::<Compression>().is_err());
    }
}
