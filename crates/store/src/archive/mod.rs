//! Image archives: `save` (docker-compatible or OCI layout tars) and `load`.

mod load;
mod save;

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::media::Compression;
use crate::reference::Reference;

/// The shape of a saved archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// What `docker save` (Docker 25+) writes: an OCI layout plus `manifest.json` and
    /// `repositories`, which older Docker (20.10) loads too. `index.json` annotates each tag
    /// with `org.opencontainers.image.ref.name` = the tag and `io.containerd.image.name` = the
    /// full reference, as Docker does.
    #[default]
    Docker,
    /// A plain OCI image layout; `org.opencontainers.image.ref.name` holds the full reference
    /// (as in the store's own `index.json`).
    Oci,
}

/// Options of [`crate::Store::save`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SaveOptions {
    /// Archive shape.
    pub format: ArchiveFormat,
    /// Layer compression in the archive (`None` by default, as `docker save` writes).
    pub compression: Option<Compression>,
}

impl SaveOptions {
    /// The layer compression actually used.
    pub fn layer_compression(&self) -> Compression {
        self.compression.unwrap_or(Compression::None)
    }
}

/// Limits `load` holds hostile archives to: a compressed layer, or a compressed archive as a
/// whole, may expand to at most [`LoadOptions::limit`] of its compressed size; any layer and
/// the whole (uncompressed) archive to at most `max_uncompressed` bytes. A layer over the
/// limit is refused with an error naming it before anything refers to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Uncompressed bytes allowed per compressed byte, beyond `expansion_allowance`.
    pub max_expansion_ratio: u64,
    /// Uncompressed bytes always allowed, whatever the ratio (small layers of zeros compress
    /// very well and are not hostile).
    pub expansion_allowance: u64,
    /// The most uncompressed bytes of any one layer or of the whole archive.
    pub max_uncompressed: u64,
}

impl Default for LoadOptions {
    /// 1024:1 beyond 4 GiB, at most 1 TiB: real layers compress 2-20:1, even a layer holding
    /// a large file of zeros stays within, while a zstd bomb (over 30000:1) does not.
    fn default() -> Self {
        LoadOptions {
            max_expansion_ratio: 1024,
            expansion_allowance: 4 << 30,
            max_uncompressed: 1 << 40,
        }
    }
}

impl LoadOptions {
    /// The most uncompressed bytes allowed from `compressed` compressed bytes.
    pub fn limit(&self, compressed: u64) -> u64 {
        compressed
            .saturating_mul(self.max_expansion_ratio)
            .max(self.expansion_allowance)
            .min(self.max_uncompressed)
    }
}

/// Progress of a load, one event per distinct layer and per loaded image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadEvent {
    /// A layer the store did not have was read and stored (`size`: bytes in the archive).
    LayerLoaded {
        /// Its diffID.
        diff_id: Digest,
        /// Its size in the archive.
        size: u64,
    },
    /// A layer the store already had; it was neither decompressed nor written again.
    LayerExists {
        /// Its diffID.
        diff_id: Digest,
    },
    /// An image was tagged.
    ImageLoaded {
        /// The tag.
        reference: Reference,
    },
    /// An image without a tag was loaded.
    ImageIdLoaded {
        /// Its ID (config digest).
        id: Digest,
    },
}

/// One image a load brought in.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// The image ID.
    pub id: Digest,
    /// Its manifest in the store.
    pub manifest: Descriptor,
    /// The tags it got.
    pub tags: Vec<Reference>,
}

/// What a load did.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// The images, in archive order.
    pub images: Vec<LoadedImage>,
    /// Layers that were new.
    pub layers_loaded: usize,
    /// Layers the store already had.
    pub layers_existing: usize,
}

/// Check an archive member name or a path inside `manifest.json`, and return it normalised
/// (no leading `./`, no empty or `.` components). Names that are absolute, contain `..`,
/// NUL or backslashes are refused: nothing in an archive may name anything outside it.
pub(crate) fn normalise_member_name(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("empty name");
    }
    if raw.starts_with('/') {
        return Err("absolute path");
    }
    if raw.contains('\0') || raw.contains('\\') {
        return Err("NUL or backslash in name");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err("path escapes the archive (\"..\")"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("name is only \".\"");
    }
    Ok(parts.join("/"))
}

/// The digest named by a member `blobs/sha256/<hex>`, if the name has that shape.
pub(crate) fn blob_member_digest(name: &str) -> Option<Result<Digest, crate::Error>> {
    let hex = name.strip_prefix("blobs/sha256/")?;
    Some(Digest::from_hex(hex))
}

/// Docker's human sizes: decimal units, three significant digits (`2.15MB`, `512B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let text = format!("{value:.4}");
    // Three significant digits, trailing zeros dropped (Go's %.4g).
    let digits_before = text.find('.').unwrap_or(text.len());
    let keep = 4usize.saturating_sub(digits_before);
    let mut s = format!("{value:.keep$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    format!("{s}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_normalised_or_refused() {
        assert_eq!(normalise_member_name("./a//b/").unwrap(), "a/b");
        assert_eq!(
            normalise_member_name("manifest.json").unwrap(),
            "manifest.json"
        );
        for bad in ["", "/etc/passwd", "a/../../b", "..", "./.", "a\\b", "a\0b"] {
            assert!(normalise_member_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn human_sizes_look_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(2_150_000), "2.15MB");
        assert_eq!(human_size(4_404_019), "4.404MB");
        assert_eq!(human_size(1_073_741_824), "1.074GB");
    }
}
