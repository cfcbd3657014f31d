//! Reading one layer: its tar stream, once, front to back.
//!
//! Headers are walked with the snapshotter's capped reader ([`strata_overlay::TarReader`]);
//! each regular file's data is hashed (sha256) as it streams past and then forgotten, so
//! memory holds one entry per path and never file contents. After the end-of-archive blocks
//! the rest of the stream is drained, so a verifying reader (the store's
//! [`strata_store::LayerReader`]) checks the blob digest and the diffID.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use strata_overlay::in_root::normalize;
use strata_overlay::{Limits, TarKind, TarReader};
use strata_store::Hasher;

use super::paths::{Entry, Item, PathBytes};

/// What one layer holds.
#[derive(Debug, Default)]
pub(crate) struct LayerScan {
    /// Its entries in stream order (AUFS bookkeeping and the root's own entry left out).
    pub entries: Vec<Entry>,
    /// The uncompressed tar's length.
    pub tar_bytes: u64,
}

/// Why a layer could not be read.
pub(crate) type ScanError = Box<dyn std::error::Error + Send + Sync + 'static>;

struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

struct HashSink(Hasher);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn bad(name: &[u8], index: u64, reason: &str) -> ScanError {
    strata_overlay::Error::Entry {
        index,
        entry: String::from_utf8_lossy(name).into_owned(),
        reason: reason.to_string(),
    }
    .into()
}

fn normalized(name: &[u8], index: u64) -> Result<PathBytes, ScanError> {
    let path = normalize(Path::new(OsStr::from_bytes(name)))
        .map_err(|e| bad(name, index, &e.to_string()))?;
    Ok(path.as_os_str().as_bytes().into())
}

/// Read a whole layer tar from `reader`.
pub(crate) fn scan(reader: impl Read, limits: Limits) -> Result<LayerScan, ScanError> {
    let mut counting = Counting {
        inner: reader,
        count: 0,
    };
    let mut entries = Vec::new();
    {
        let mut tar = TarReader::new(&mut counting, limits);
        while let Some(head) = tar.next_entry()? {
            let path = normalized(&head.name, head.index)?;
            if path.is_empty() {
                continue; // `./`: the root's own entry
            }
            let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&path[..0], &path[..]),
            };
            if let Some(rest) = name.strip_prefix(b".wh.") {
                if rest == b".wh..opq" {
                    entries.push(Entry {
                        path: parent.into(),
                        item: Item::Opaque,
                    });
                } else if rest.starts_with(b".wh.") {
                    if !parent.is_empty() {
                        return Err(bad(
                            &head.name,
                            head.index,
                            "unknown `.wh..wh.` entry outside the root",
                        ));
                    }
                    // AUFS bookkeeping (`.wh..wh.plnk` ...) at the root: not part of the tree.
                } else if rest.is_empty() || rest == b"." || rest == b".." {
                    return Err(bad(&head.name, head.index, "invalid whiteout entry"));
                } else {
                    let mut victim = parent.to_vec();
                    if !victim.is_empty() {
                        victim.push(b'/');
                    }
                    victim.extend_from_slice(rest);
                    entries.push(Entry {
                        path: victim.into(),
                        item: Item::Whiteout,
                    });
                }
                continue;
            }
            let item = match head.kind {
                TarKind::File => {
                    let mut sink = HashSink(Hasher::new());
                    let size = tar.copy_data(&mut sink, &head)?;
                    Item::File {
                        size,
                        digest: sink.0.finish(),
                    }
                }
                TarKind::HardLink => Item::HardLink {
                    target: normalized(&head.link, head.index)?,
                },
                TarKind::Symlink => Item::Symlink,
                TarKind::Dir => Item::Dir,
                TarKind::Char | TarKind::Block | TarKind::Fifo | TarKind::Other(_) => Item::Other,
            };
            entries.push(Entry { path, item });
        }
    }
    // Read to the end: trailing zero blocks, and the verification a store reader does at EOF.
    io::copy(&mut counting, &mut io::sink())?;
    Ok(LayerScan {
        entries,
        tar_bytes: counting.count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::Digest;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_kinds_whiteouts_and_hashes() {
        use tar::EntryType as T;
        let bytes = tar_of(&[
            ("./", T::Directory, b"", ""),
            ("./etc/", T::Directory, b"", ""),
            ("etc/passwd", T::Regular, b"root:x:0:0\n", ""),
            ("etc/pw", T::Link, b"", "etc/passwd"),
            ("etc/sym", T::Symlink, b"", "passwd"),
            ("etc/.wh.old", T::Regular, b"", ""),
            ("var/.wh..wh..opq", T::Regular, b"", ""),
            (".wh..wh.plnk", T::Regular, b"", ""),
            ("dev/null", T::Char, b"", ""),
        ]);
        let scan = scan(&bytes[..], Limits::default()).unwrap();
        assert_eq!(scan.tar_bytes, bytes.len() as u64);
        let got: Vec<(String, Item)> = scan
            .entries
            .into_iter()
            .map(|e| (String::from_utf8(e.path.into()).unwrap(), e.item))
            .collect();
        assert_eq!(
            got,
            [
                ("etc".to_string(), Item::Dir),
                (
                    "etc/passwd".into(),
                    Item::File {
                        size: 11,
                        digest: Digest::of(b"root:x:0:0\n")
                    }
                ),
                (
                    "etc/pw".into(),
                    Item::HardLink {
                        target: b"etc/passwd".as_slice().into()
                    }
                ),
                ("etc/sym".into(), Item::Symlink),
                ("etc/old".into(), Item::Whiteout),
                ("var".into(), Item::Opaque),
                ("dev/null".into(), Item::Other),
            ]
        );
    }

    #[test]
    fn refuses_escapes_and_bad_whiteouts_and_truncation() {
        use tar::EntryType as T;
        let mut raw = tar_of(&[("a/.wh.", T::Regular, b"", "")]);
        assert!(scan(&raw[..], Limits::default())
            .unwrap_err()
            .to_string()
            .contains("invalid whiteout"));
        raw = tar_of(&[("a/.wh..wh.aufs", T::Regular, b"", "")]);
        assert!(scan(&raw[..], Limits::default()).is_err());
        // The tar crate refuses to write `..`; set the raw name field by hand.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_entry_type(T::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        raw = h.as_bytes().to_vec();
        raw.extend([0u8; 1024]);
        let err = scan(&raw[..], Limits::default()).unwrap_err().to_string();
        assert!(err.contains("leaves the root"), "{err}");
        raw = tar_of(&[("big", T::Regular, &[1u8; 4000], "")]);
        raw.truncate(1024);
        assert!(scan(&raw[..], Limits::default())
            .unwrap_err()
            .to_string()
            .contains("truncated"));
    }
}
