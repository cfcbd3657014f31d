//! A streaming reader of layer tars with caps on everything an attacker controls.
//!
//! Header fields are parsed with the `tar` crate; PAX and GNU long-name records are handled
//! here so that their sizes are checked before anything is read into memory. The `tar` crate's
//! `unpack` is never used (see the advisories in the crate docs of [`crate::unpack`]).
//!
//! It is public so that other readers of layers (the builder's image analysis) walk tars with
//! the same caps and the same PAX/GNU handling instead of a second walker: [`TarReader`]
//! yields one [`EntryHead`] per entry; the caller copies the entry's data with
//! [`TarReader::copy_data`] or lets the next [`TarReader::next_entry`] skip it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use crate::error::{Error, Result};

const BLOCK: u64 = 512;

/// Caps on what one layer may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in one layer.
    pub max_entries: u64,
    /// Most bytes of file data in one layer.
    pub max_bytes: u64,
    /// Largest PAX or GNU long-name record.
    pub max_header: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 5_000_000,
            max_bytes: 1 << 40,
            max_header: 1 << 20,
        }
    }
}

/// The kind of a tar entry, as far as layers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    /// A regular file (type `0`, NUL or `7`).
    File,
    /// A hard link to an earlier entry of the same archive (type `1`).
    HardLink,
    /// A symbolic link (type `2`).
    Symlink,
    /// A character device (type `3`).
    Char,
    /// A block device (type `4`).
    Block,
    /// A directory (type `5`).
    Dir,
    /// A FIFO (type `6`).
    Fifo,
    /// Any other type flag; its data (if any) is skipped like a file's.
    Other(u8),
}

/// One entry's header after PAX and GNU records were folded in.
#[derive(Debug, Clone)]
pub struct EntryHead {
    /// Zero-based position of the entry in the stream (extension records not counted).
    pub index: u64,
    /// The name as written (PAX `path` or GNU long name when present), not normalised.
    pub name: Vec<u8>,
    /// What the entry is.
    pub kind: TarKind,
    /// Permission bits with setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
    /// Link target of a symlink or hard link (empty otherwise).
    pub link: Vec<u8>,
    /// Device major number (devices only).
    pub dev_major: u32,
    /// Device minor number (devices only).
    pub dev_minor: u32,
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryHead {
    /// The name for messages (lossily decoded).
    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A streaming reader of layer tar entries with [`Limits`] on what the stream may claim.
pub struct TarReader<R: Read> {
    r: R,
    index: u64,
    remaining: u64,
    padding: u64,
    total: u64,
    limits: Limits,
    done: bool,
}

fn entry_err(index: u64, name: &[u8], reason: impl Into<String>) -> Error {
    Error::Entry {
        index,
        entry: String::from_utf8_lossy(name).into_owned(),
        reason: reason.into(),
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

impl<R: Read> TarReader<R> {
    /// Read entries from `r` (an uncompressed tar), refusing what exceeds `limits`.
    pub fn new(r: R, limits: Limits) -> Self {
        TarReader {
            r,
            index: 0,
            remaining: 0,
            padding: 0,
            total: 0,
            limits,
            done: false,
        }
    }

    fn io_err(&self, e: io::Error) -> Error {
        Error::Entry {
            index: self.index,
            entry: "<stream>".into(),
            reason: format!("reading the layer failed: {e}"),
        }
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        let got =
            io::copy(&mut (&mut self.r).take(n), &mut io::sink()).map_err(|e| self.io_err(e))?;
        if got != n {
            return Err(Error::Entry {
                index: self.index,
                entry: "<stream>".into(),
                reason: "the layer ends in the middle of an entry (truncated)".into(),
            });
        }
        Ok(())
    }

    fn read_exact_or_eof(&mut self, buf: &mut [u8; 512]) -> Result<bool> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) if n == 0 => return Ok(false),
                Ok(0) => {
                    return Err(Error::Entry {
                        index: self.index,
                        entry: "<stream>".into(),
                        reason: "the layer ends in the middle of a header (truncated)".into(),
                    })
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        Ok(true)
    }

    fn read_record(&mut self, size: u64, name: &[u8]) -> Result<Vec<u8>> {
        if size > self.limits.max_header {
            return Err(entry_err(
                self.index,
                name,
                format!(
                    "extended header of {size} bytes is larger than the {} allowed",
                    self.limits.max_header
                ),
            ));
        }
        let mut v = Vec::with_capacity(size as usize);
        let got = (&mut self.r)
            .take(size)
            .read_to_end(&mut v)
            .map_err(|e| self.io_err(e))?;
        if got as u64 != size {
            return Err(entry_err(self.index, name, "truncated extended header"));
        }
        self.skip((BLOCK - size % BLOCK) % BLOCK)?;
        Ok(v)
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<EntryHead>> {
        if self.done {
            return Ok(None);
        }
        let rest = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(rest)?;
        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut gnu_name: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        loop {
            let mut block = [0u8; 512];
            if !self.read_exact_or_eof(&mut block)? || block.iter().all(|b| *b == 0) {
                self.done = true;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let raw_name = header.path_bytes().into_owned();
            let want = header.cksum().map_err(|_| {
                entry_err(
                    self.index,
                    &raw_name,
                    "header checksum field is not a number",
                )
            })?;
            let unsigned: u32 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(b)
                    }
                })
                .sum();
            let signed: i64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        i64::from(b as i8)
                    }
                })
                .sum();
            if want != unsigned && i64::from(want) != signed {
                return Err(entry_err(
                    self.index,
                    &raw_name,
                    "header checksum mismatch (not a tar, or corrupt)",
                ));
            }
            let size = header
                .size()
                .map_err(|_| entry_err(self.index, &raw_name, "size field is not a number"))?;
            let flag = header.entry_type().as_byte();
            match flag {
                b'x' => {
                    let data = self.read_record(size, &raw_name)?;
                    for rec in tar::PaxExtensions::new(&data) {
                        let rec = rec.map_err(|_| {
                            entry_err(self.index, &raw_name, "malformed PAX record")
                        })?;
                        let key = rec.key().map_err(|_| {
                            entry_err(self.index, &raw_name, "PAX key is not UTF-8")
                        })?;
                        pax.insert(key.to_string(), rec.value_bytes().to_vec());
                    }
                    continue;
                }
                b'g' => {
                    // Global headers only carry defaults we do not use; read them to skip.
                    self.read_record(size, &raw_name)?;
                    continue;
                }
                b'L' => {
                    gnu_name = Some(trim_nul(self.read_record(size, &raw_name)?));
                    continue;
                }
                b'K' => {
                    gnu_link = Some(trim_nul(self.read_record(size, &raw_name)?));
                    continue;
                }
                _ => {}
            }
            let name = pax.remove("path").or(gnu_name).unwrap_or(raw_name);
            let index = self.index;
            let bad = |reason: &str| entry_err(index, &name, reason);
            if pax.keys().any(|k| k.starts_with("GNU.sparse")) || flag == b'S' {
                return Err(bad("sparse files are not supported in layers"));
            }
            let num = |key: &str, hv: io::Result<u64>| -> Result<u64> {
                match pax.get(key) {
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| bad(&format!("PAX {key} is not a number"))),
                    None => hv.map_err(|_| bad(&format!("{key} field is not a number"))),
                }
            };
            let size = num("size", Ok(size))?;
            let old = header.as_old();
            let uid = num("uid", or_zero(&old.uid, || header.uid()))?;
            let gid = num("gid", or_zero(&old.gid, || header.gid()))?;
            let mtime = match pax.get("mtime") {
                Some(v) => {
                    let s = std::str::from_utf8(v).map_err(|_| bad("PAX mtime is not UTF-8"))?;
                    let secs = s.split('.').next().unwrap_or("");
                    secs.parse::<i64>()
                        .map_err(|_| bad("PAX mtime is not a number"))?
                }
                None => or_zero(&old.mtime, || header.mtime())
                    .map_err(|_| bad("mtime field is not a number"))?
                    as i64,
            };
            let mode = or_zero(&old.mode, || header.mode().map(u64::from))
                .map_err(|_| bad("mode field is not a number"))? as u32
                & 0o7777;
            let link = pax
                .remove("linkpath")
                .or(gnu_link)
                .or_else(|| header.link_name_bytes().map(|c| c.into_owned()))
                .unwrap_or_default();
            let kind = match flag {
                b'0' | 0 | b'7' => TarKind::File,
                b'1' => TarKind::HardLink,
                b'2' => TarKind::Symlink,
                b'3' => TarKind::Char,
                b'4' => TarKind::Block,
                b'5' => TarKind::Dir,
                b'6' => TarKind::Fifo,
                other => TarKind::Other(other),
            };
            let (dev_major, dev_minor) = if matches!(kind, TarKind::Char | TarKind::Block) {
                (
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                )
            } else {
                (0, 0)
            };
            let mut xattrs = Vec::new();
            for (k, v) in &pax {
                if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((x.to_string(), v.clone()));
                }
            }
            let has_data = matches!(kind, TarKind::File | TarKind::Other(_));
            let data = if has_data { size } else { 0 };
            if index + 1 > self.limits.max_entries {
                return Err(bad(&format!(
                    "more than {} entries in one layer",
                    self.limits.max_entries
                )));
            }
            self.total = self.total.saturating_add(data);
            if self.total > self.limits.max_bytes {
                return Err(bad(&format!(
                    "layer holds more than {} bytes of data",
                    self.limits.max_bytes
                )));
            }
            self.index += 1;
            self.remaining = data;
            self.padding = (BLOCK - data % BLOCK) % BLOCK;
            return Ok(Some(EntryHead {
                index: self.index - 1,
                name,
                kind,
                mode,
                uid,
                gid,
                mtime,
                link,
                dev_major,
                dev_minor,
                xattrs,
            }));
        }
    }

    /// Copy the current entry's data into `out` (call it at most once per entry, before the
    /// next [`TarReader::next_entry`]).
    pub fn copy_data(&mut self, out: &mut dyn Write, head: &EntryHead) -> Result<u64> {
        let want = self.remaining;
        let got = io::copy(&mut (&mut self.r).take(want), out).map_err(|e| Error::Entry {
            index: head.index,
            entry: head.shown(),
            reason: format!("writing the file failed: {e}"),
        })?;
        self.remaining = 0;
        if got != want {
            return Err(Error::Entry {
                index: head.index,
                entry: head.shown(),
                reason: "the layer ends in the middle of this file (truncated)".into(),
            });
        }
        Ok(got)
    }
}

/// A numeric header field, where a field left empty (all NULs or spaces, as some writers
/// leave uid, gid, mode or mtime) reads as 0, as Go's archive/tar and GNU tar read it.
fn or_zero<T: Into<u64>>(raw: &[u8], parse: impl FnOnce() -> io::Result<T>) -> io::Result<u64> {
    if raw.iter().all(|b| *b == 0 || *b == b' ') {
        return Ok(0);
    }
    parse().map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header whose uid, gid, mode and mtime fields were left empty (all NULs), as
    /// `tar::Header::new_ustar()` and some other writers leave them.
    fn tar_with_empty_fields() -> Vec<u8> {
        let mut out = Vec::new();
        let mut header = tar::Header::new_ustar();
        header.set_path("etc/hostname").expect("short path");
        header.set_size(3);
        header.set_entry_type(tar::EntryType::Regular);
        let old = header.as_old_mut();
        for field in [
            &mut old.uid[..],
            &mut old.gid[..],
            &mut old.mode[..],
            &mut old.mtime[..],
        ] {
            field.fill(0);
        }
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        let mut data = b"box".to_vec();
        data.resize(512, 0);
        out.extend_from_slice(&data);
        out.extend_from_slice(&[0; 1024]);
        out
    }

    #[test]
    fn empty_numeric_fields_read_as_zero() {
        let tar = tar_with_empty_fields();
        let mut reader = TarReader::new(&tar[..], Limits::default());
        let head = reader.next_entry().expect("readable").expect("one entry");
        assert_eq!(
            (head.uid, head.gid, head.mode, head.mtime),
            (0, 0, 0, 0),
            "{head:?}"
        );
        let mut body = Vec::new();
        reader.copy_data(&mut body, &head).expect("data");
        assert_eq!(body, b"box");
    }

    #[test]
    fn a_garbled_numeric_field_is_still_refused() {
        let mut tar = tar_with_empty_fields();
        // uid is at offset 108 in the header.
        tar[108..115].copy_from_slice(b"zzzzzzz");
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&tar[..512]);
        header.set_cksum();
        tar[..512].copy_from_slice(header.as_bytes());
        let err = TarReader::new(&tar[..], Limits::default())
            .next_entry()
            .expect_err("garbled uid");
        assert!(
            err.to_string().contains("uid field is not a number"),
            "{err}"
        );
    }
}
