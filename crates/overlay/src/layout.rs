//! The on-disk layout, as Docker's `overlay2` driver has it:
//!
//! ```text
//! <store root>/overlay/            0710
//!   l/<LINK> -> ../<id>/diff       26-character short names keep mount options small
//!   <id>/                          0710; id = the caller's name when it is a safe file name
//!     diff/                        the layer's own files (the upper dir when writable)
//!     link                         LINK
//!     lower                        l/<parent LINK>:l/<grandparent LINK>:...  (absent for a base)
//!     work/ merged/                0700, writable (and mounted) snapshots only
//!     snapshot.json                kind, key, parent (written atomically)
//! ```
//!
//! The vfs driver uses the same layout under `<store root>/vfs/`, with each `diff/` holding a
//! full tree.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The most lower layers a snapshot may stack (Docker's `maxDepth`).
pub const MAX_LOWERS: usize = 128;
/// Length of the short link names.
pub const LINK_LEN: usize = 26;

/// The folder name for a snapshot key or name: the key itself when it is a safe, short file
/// name (chainID hex is), otherwise the sha256 of the key in hex.
pub fn id_for(key: &str) -> Result<String> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            key: key.into(),
            reason: "it is empty",
        });
    }
    if key.len() > 4096 {
        return Err(Error::InvalidKey {
            key: key.chars().take(40).collect(),
            reason: "it is longer than 4096 bytes",
        });
    }
    let safe = key.len() <= 64
        && key != "l"
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if safe {
        Ok(key.to_string())
    } else {
        Ok(hex::encode(Sha256::digest(key.as_bytes())))
    }
}

/// A fresh 26-character base32 name (A-Z, 2-7) from 17 random bytes, as Docker makes them.
pub fn new_link_id() -> Result<String> {
    let mut raw = [0u8; 17];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .ctx("read", "/dev/urandom")?;
    Ok(base32(&raw)[..LINK_LEN].to_string())
}

/// A random suffix for temporary names.
pub(crate) fn random_hex() -> Result<String> {
    let mut raw = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .ctx("read", "/dev/urandom")?;
    Ok(hex::encode(raw))
}

fn base32(data: &[u8]) -> String {
    const ALPHA: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHA[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHA[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Is `s` a well-formed short link name?
pub fn valid_link(s: &str) -> bool {
    s.len() == LINK_LEN
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// Format a `lower` file: `l/A:l/B`, nearest first.
pub fn format_lower(links: &[String]) -> String {
    links
        .iter()
        .map(|l| format!("l/{l}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse a `lower` file back into link names.
pub fn parse_lower(text: &str, file: &Path) -> Result<Vec<String>> {
    let text = text.trim_end_matches('\n');
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(':')
        .map(|part| {
            part.strip_prefix("l/")
                .filter(|l| valid_link(l))
                .map(str::to_string)
                .ok_or_else(|| Error::Metadata {
                    path: file.to_path_buf(),
                    reason: format!("bad entry `{part}` in lower file"),
                })
        })
        .collect()
}

/// Paths of one snapshot folder.
#[derive(Debug, Clone)]
pub struct Folder {
    /// `<home>/<id>`.
    pub dir: PathBuf,
}

impl Folder {
    /// The layer's files.
    pub fn diff(&self) -> PathBuf {
        self.dir.join("diff")
    }
    /// overlay's work dir.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Default mount point.
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }
    /// The `link` file.
    pub fn link_file(&self) -> PathBuf {
        self.dir.join("link")
    }
    /// The `lower` file.
    pub fn lower_file(&self) -> PathBuf {
        self.dir.join("lower")
    }
    /// The metadata record.
    pub fn record(&self) -> PathBuf {
        self.dir.join("snapshot.json")
    }
    /// Present while the snapshot is mounted on purpose beyond one process (`strata
    /// mount`): crash recovery leaves such a mount in place.
    pub fn kept_mark(&self) -> PathBuf {
        self.dir.join("kept-mount")
    }
}

/// Write `data` to `path` atomically (temp file in the same folder, fsync, rename).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        random_hex()?
    ));
    let mut f = std::fs::File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(data).ctx("write", &tmp)?;
    f.sync_all().ctx("fsync", &tmp)?;
    std::fs::rename(&tmp, path).ctx("rename", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_used_as_folder_names() {
        let hex = "a".repeat(64);
        assert_eq!(id_for(&hex).unwrap(), hex);
        assert_eq!(id_for("build-step-3").unwrap(), "build-step-3");
        for odd in ["l", ".hidden", "a/b", "x y", &"z".repeat(65)] {
            let id = id_for(odd).unwrap();
            assert_eq!(id.len(), 64, "{odd}");
            assert_ne!(id, odd);
        }
        assert!(id_for("").is_err());
    }

    #[test]
    fn link_ids_look_like_dockers() {
        let a = new_link_id().unwrap();
        let b = new_link_id().unwrap();
        assert!(valid_link(&a) && valid_link(&b), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn lower_files_round_trip() {
        let links = vec!["A".repeat(26), "B".repeat(26)];
        let text = format_lower(&links);
        assert_eq!(text, format!("l/{}:l/{}", "A".repeat(26), "B".repeat(26)));
        assert_eq!(parse_lower(&text, Path::new("lower")).unwrap(), links);
        assert!(parse_lower("l/../../etc", Path::new("lower")).is_err());
        assert!(parse_lower("", Path::new("lower")).unwrap().is_empty());
    }
}
