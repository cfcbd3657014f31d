//! Changeset -> uncompressed layer tar, byte for byte reproducible.
//!
//! Format: USTAR headers, with a PAX extended header in front of an entry only when USTAR cannot
//! say something (long or non-ASCII names, big sizes or ids, out-of-range times, xattrs). No
//! user or group names, no atime/ctime, mtime in whole seconds (optionally clamped to
//! `SOURCE_DATE_EPOCH`), entries in canonical order, parents before children, whiteouts before
//! their siblings, hardlinks inside the layer as links to the first name, 1,024 zero bytes at the
//! end. Equal changes therefore give equal bytes on any machine and with either driver.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::changes::{whiteout_path, ChangeKind, Changeset};
use crate::error::{Error, IoContext, Result};
use crate::in_root::{Follow, Root};
use crate::meta::{carried_xattrs, Kind, Meta, CAPABILITY};

const BLOCK: usize = 512;
const MAX_OCTAL_8: u64 = 0o7777777; // 7 digits: uid, gid, mode
const MAX_OCTAL_12: u64 = 0o77777777777; // 11 digits: size, mtime

/// Options of the tar writer.
#[derive(Debug, Clone, Default)]
pub struct TarOptions {
    /// Clamp every mtime later than this (seconds since the epoch) to it: the
    /// `SOURCE_DATE_EPOCH` rule of reproducible builds.
    pub clamp_mtime: Option<i64>,
}

/// What the writer produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Entries written (PAX headers not counted).
    pub entries: u64,
    /// Bytes written, trailer included.
    pub bytes: u64,
    /// Sockets met and skipped (layers cannot carry them).
    pub skipped_sockets: u64,
}

/// Tar entry types we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `0`
    File,
    /// `1`
    HardLink,
    /// `2`
    Symlink,
    /// `3`
    Char,
    /// `4`
    Block,
    /// `5`
    Dir,
    /// `6`
    Fifo,
}

impl EntryKind {
    fn flag(self) -> u8 {
        match self {
            EntryKind::File => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::Char => b'3',
            EntryKind::Block => b'4',
            EntryKind::Dir => b'5',
            EntryKind::Fifo => b'6',
        }
    }
}

/// Everything that goes into one entry's header(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec {
    /// Archive path (directories end with `/`).
    pub path: Vec<u8>,
    /// Entry type.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Data size (regular files only).
    pub size: u64,
    /// Modification time in seconds.
    pub mtime: i64,
    /// Link target (symlinks and hardlinks).
    pub link: Vec<u8>,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes, written as `SCHILY.xattr.<name>` PAX records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// One PAX record, `"<len> <key>=<value>\n"` where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// Split a path into USTAR prefix and name, if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    if path.len() > 256 {
        return None;
    }
    // The name part must be non-empty and <= 100; the prefix <= 155.
    let body = path.strip_suffix(b"/").unwrap_or(path);
    let start = body.len().saturating_sub(101);
    for i in start..body.len().min(156) {
        if body[i] == b'/' && path.len() - i - 1 <= 100 && i > 0 {
            return Some((&path[..i], &path[i + 1..]));
        }
    }
    None
}

fn put(field: &mut [u8], value: &[u8]) {
    field[..value.len()].copy_from_slice(value);
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    put(field, s.as_bytes());
    field[digits] = 0;
}

/// Build the header block(s) for one entry: an optional PAX `x` header with its data, then the
/// USTAR header. Pure and deterministic.
pub fn build_header(spec: &HeaderSpec) -> Vec<u8> {
    let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let ascii = |b: &[u8]| b.iter().all(|c| c.is_ascii() && *c != 0);
    let split = if ascii(&spec.path) {
        ustar_split(&spec.path)
    } else {
        None
    };
    if split.is_none() {
        pax.insert("path".into(), spec.path.clone());
    }
    if spec.link.len() > 100 || !ascii(&spec.link) {
        pax.insert("linkpath".into(), spec.link.clone());
    }
    if spec.size > MAX_OCTAL_12 {
        pax.insert("size".into(), spec.size.to_string().into_bytes());
    }
    if spec.uid > MAX_OCTAL_8 {
        pax.insert("uid".into(), spec.uid.to_string().into_bytes());
    }
    if spec.gid > MAX_OCTAL_8 {
        pax.insert("gid".into(), spec.gid.to_string().into_bytes());
    }
    if spec.mtime < 0 || spec.mtime as u64 > MAX_OCTAL_12 {
        pax.insert("mtime".into(), spec.mtime.to_string().into_bytes());
    }
    for (k, v) in &spec.xattrs {
        pax.insert(format!("SCHILY.xattr.{k}"), v.clone());
    }

    let mut out = Vec::with_capacity(BLOCK * 3);
    if !pax.is_empty() {
        let data: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        // `<dir>/PaxHeaders.0/<base>`, ASCII only, cut to 100 bytes, as Go writes it.
        let trimmed = spec.path.strip_suffix(b"/").unwrap_or(&spec.path);
        let (dir, base) = match trimmed.iter().rposition(|c| *c == b'/') {
            Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        let mut name: Vec<u8> = dir.to_vec();
        name.extend_from_slice(b"PaxHeaders.0/");
        name.extend_from_slice(base);
        name.retain(|c| c.is_ascii() && *c != 0);
        name.truncate(100);
        let mut h = ustar_block(&name, &[], b'x', 0, 0, 0, data.len() as u64, 0, &[], 0, 0);
        finish_checksum(&mut h);
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    let (prefix, name) = split.unwrap_or((&[], &[]));
    let name: Vec<u8> = if split.is_some() {
        name.to_vec()
    } else {
        ascii_cut(&spec.path, 100)
    };
    let link = if pax.contains_key("linkpath") {
        ascii_cut(&spec.link, 100)
    } else {
        spec.link.clone()
    };
    let mut h = ustar_block(
        &name,
        prefix,
        spec.kind.flag(),
        u64::from(spec.mode & 0o7777),
        if spec.uid > MAX_OCTAL_8 { 0 } else { spec.uid },
        if spec.gid > MAX_OCTAL_8 { 0 } else { spec.gid },
        if spec.size > MAX_OCTAL_12 {
            0
        } else {
            spec.size
        },
        if pax.contains_key("mtime") {
            0
        } else {
            spec.mtime as u64
        },
        &link,
        spec.dev_major,
        spec.dev_minor,
    );
    finish_checksum(&mut h);
    out.extend_from_slice(&h);
    out
}

fn ascii_cut(b: &[u8], n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = b
        .iter()
        .copied()
        .filter(|c| c.is_ascii() && *c != 0)
        .collect();
    v.truncate(n);
    v
}

#[allow(clippy::too_many_arguments)]
fn ustar_block(
    name: &[u8],
    prefix: &[u8],
    flag: u8,
    mode: u64,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &[u8],
    major: u32,
    minor: u32,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put(&mut h[0..100], name);
    put_octal(&mut h[100..108], mode);
    put_octal(&mut h[108..116], uid);
    put_octal(&mut h[116..124], gid);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], mtime);
    h[156] = flag;
    put(&mut h[157..257], link);
    put(&mut h[257..263], b"ustar\0");
    put(&mut h[263..265], b"00");
    put_octal(&mut h[329..337], u64::from(major));
    put_octal(&mut h[337..345], u64::from(minor));
    put(&mut h[345..500], prefix);
    h
}

fn finish_checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// Rewrite a version-3 file capability (bound to a namespace's root uid) as version 2, as
/// Docker does: the namespaced root id means nothing on another machine.
pub fn capability_v3_to_v2(value: &[u8]) -> Vec<u8> {
    const REVISION_MASK: u32 = 0xFF00_0000;
    const REVISION_2: u32 = 0x0200_0000;
    const REVISION_3: u32 = 0x0300_0000;
    if value.len() == 24 {
        let magic = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if magic & REVISION_MASK == REVISION_3 {
            let mut v = value[..20].to_vec();
            let m = REVISION_2 | (magic & !REVISION_MASK);
            v[..4].copy_from_slice(&m.to_le_bytes());
            return v;
        }
    }
    value.to_vec()
}

struct Counter<'a, W: Write> {
    inner: &'a mut W,
    bytes: u64,
}

impl<W: Write> Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)?;
        self.bytes += buf.len() as u64;
        Ok(())
    }
}

fn archive_name(rel: &Path, dir: bool) -> Vec<u8> {
    let mut v = rel.as_os_str().as_bytes().to_vec();
    if dir {
        v.push(b'/');
    }
    v
}

/// Write `set` as an uncompressed layer tar into `out`.
pub fn write_tar<W: Write>(set: &Changeset, out: &mut W, opts: &TarOptions) -> Result<TarStats> {
    let root = Root::open(&set.source)?;
    let mut w = Counter {
        inner: out,
        bytes: 0,
    };
    let mut stats = TarStats::default();
    let mut emitted_dirs: HashSet<PathBuf> = HashSet::new();
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let clamp = |t: i64| match opts.clamp_mtime {
        Some(e) if t > e => e,
        _ => t,
    };
    let werr = |e: std::io::Error| Error::io("write layer tar", PathBuf::from("<output>"), e);

    for change in &set.changes {
        // Parents first, with their current metadata (containerd's includeParents).
        let mut ancestors: Vec<&Path> = change.path.ancestors().skip(1).collect();
        ancestors.pop(); // the root itself
        for dir in ancestors.into_iter().rev() {
            if emitted_dirs.contains(dir) {
                continue;
            }
            let host = set.source.join(dir);
            let meta = Meta::lstat(&host)?;
            if !meta.is_dir() {
                return Err(Error::Metadata {
                    path: host,
                    reason: "parent of a change is not a directory".into(),
                });
            }
            let spec = spec_for(dir, &meta, &host, Vec::new(), &clamp)?;
            w.write(&build_header(&spec)).map_err(werr)?;
            stats.entries += 1;
            emitted_dirs.insert(dir.to_path_buf());
        }
        if change.kind == ChangeKind::Delete {
            let spec = HeaderSpec {
                path: archive_name(&whiteout_path(&change.path), false),
                kind: EntryKind::File,
                mode: 0,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 0,
                link: Vec::new(),
                dev_major: 0,
                dev_minor: 0,
                xattrs: Vec::new(),
            };
            w.write(&build_header(&spec)).map_err(werr)?;
            stats.entries += 1;
            continue;
        }
        let host = set.source.join(&change.path);
        let meta = Meta::lstat(&host)?;
        match meta.kind {
            Kind::Socket => {
                stats.skipped_sockets += 1;
                continue;
            }
            Kind::Char if meta.rdev == 0 => {
                return Err(Error::Metadata {
                    path: host,
                    reason: "a 0/0 character device is overlay's whiteout and cannot be carried in a layer".into(),
                });
            }
            _ => {}
        }
        if meta.is_dir() {
            if emitted_dirs.contains(&change.path) {
                continue;
            }
            emitted_dirs.insert(change.path.clone());
        } else if meta.nlink > 1 {
            let key = (meta.dev, meta.ino);
            if let Some(first) = links.get(&key) {
                let mut spec = spec_for(&change.path, &meta, &host, Vec::new(), &clamp)?;
                spec.kind = EntryKind::HardLink;
                spec.size = 0;
                spec.link = first.clone();
                spec.xattrs.clear();
                w.write(&build_header(&spec)).map_err(werr)?;
                stats.entries += 1;
                continue;
            }
            links.insert(key, archive_name(&change.path, false));
        }
        let link = if meta.kind == Kind::Symlink {
            std::fs::read_link(&host)
                .ctx("readlink", &host)?
                .into_os_string()
                .into_vec()
        } else {
            Vec::new()
        };
        let spec = spec_for(&change.path, &meta, &host, link, &clamp)?;
        if meta.kind == Kind::File {
            // Open without following anything, and check it is the file we just looked at.
            let fd = root.open_at(
                &change.path,
                OFlags::RDONLY | OFlags::NOFOLLOW,
                Mode::empty(),
                Follow::Never,
            )?;
            let st = rustix::fs::fstat(&fd).ctx("stat", &host)?;
            if st.st_ino != meta.ino || st.st_dev != meta.dev {
                return Err(Error::Metadata {
                    path: host,
                    reason: "file changed while the layer was being written".into(),
                });
            }
            w.write(&build_header(&spec)).map_err(werr)?;
            let mut file = std::fs::File::from(fd).take(meta.size);
            let copied = std::io::copy(&mut file, &mut WriteCounter(&mut w))
                .map_err(|e| Error::io("read", &host, e))?;
            if copied != meta.size {
                return Err(Error::Metadata {
                    path: host,
                    reason: format!(
                        "file shrank while being written ({copied} of {} bytes)",
                        meta.size
                    ),
                });
            }
            let pad = (BLOCK - (meta.size as usize % BLOCK)) % BLOCK;
            w.write(&[0u8; BLOCK][..pad]).map_err(werr)?;
        } else {
            w.write(&build_header(&spec)).map_err(werr)?;
        }
        stats.entries += 1;
    }
    w.write(&[0u8; BLOCK * 2]).map_err(werr)?;
    w.inner.flush().map_err(werr)?;
    stats.bytes = w.bytes;
    Ok(stats)
}

use std::os::unix::ffi::OsStringExt;

struct WriteCounter<'a, 'b, W: Write>(&'a mut Counter<'b, W>);

impl<W: Write> Write for WriteCounter<'_, '_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn spec_for(
    rel: &Path,
    meta: &Meta,
    host: &Path,
    link: Vec<u8>,
    clamp: &dyn Fn(i64) -> i64,
) -> Result<HeaderSpec> {
    let kind = match meta.kind {
        Kind::File | Kind::Socket => EntryKind::File,
        Kind::Dir => EntryKind::Dir,
        Kind::Symlink => EntryKind::Symlink,
        Kind::Fifo => EntryKind::Fifo,
        Kind::Char => EntryKind::Char,
        Kind::Block => EntryKind::Block,
    };
    let xattrs = if meta.kind == Kind::Symlink {
        Vec::new()
    } else {
        carried_xattrs(host)?
            .into_iter()
            .map(|(k, v)| {
                let v = if k == CAPABILITY {
                    capability_v3_to_v2(&v)
                } else {
                    v
                };
                (k, v)
            })
            .collect()
    };
    let dev = matches!(meta.kind, Kind::Char | Kind::Block);
    Ok(HeaderSpec {
        path: archive_name(rel, meta.is_dir()),
        kind,
        mode: meta.mode,
        uid: u64::from(meta.uid),
        gid: u64::from(meta.gid),
        size: if meta.kind == Kind::File {
            meta.size
        } else {
            0
        },
        mtime: clamp(meta.mtime),
        link,
        dev_major: if dev { meta.major() } else { 0 },
        dev_minor: if dev { meta.minor() } else { 0 },
        xattrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str) -> HeaderSpec {
        HeaderSpec {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            size: 5,
            mtime: 1_700_000_000,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }

    fn parse(block: &[u8]) -> &tar::Header {
        tar::Header::from_byte_slice(&block[..512])
    }

    #[test]
    fn short_entry_is_one_ustar_block() {
        let b = build_header(&spec("usr/bin/x"));
        assert_eq!(b.len(), 512);
        let h = parse(&b);
        assert_eq!(&*h.path_bytes(), b"usr/bin/x");
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.uid().unwrap(), 1000);
        assert_eq!(h.size().unwrap(), 5);
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.cksum().unwrap(), {
            let mut c = b.clone();
            c[148..156].fill(b' ');
            c.iter().map(|&x| u32::from(x)).sum::<u32>()
        });
        assert!(h.as_ustar().is_some());
    }

    #[test]
    fn medium_path_uses_the_ustar_prefix() {
        let p = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let b = build_header(&spec(&p));
        assert_eq!(b.len(), 512);
        assert_eq!(&*parse(&b).path_bytes(), p.as_bytes());
    }

    #[test]
    fn long_and_unicode_names_and_big_values_use_pax() {
        let long = "x/".repeat(200) + "file";
        let mut s = spec(&long);
        s.size = 1 << 40;
        s.uid = 1 << 30;
        s.mtime = -5;
        s.xattrs = vec![("security.capability".into(), vec![1, 0, 0, 2])];
        let b = build_header(&s);
        let pax = parse(&b);
        assert_eq!(pax.entry_type(), tar::EntryType::XHeader);
        let n = pax.size().unwrap() as usize;
        let data = &b[512..512 + n];
        let recs: Vec<(String, Vec<u8>)> = tar::PaxExtensions::new(data)
            .map(|e| {
                let e = e.unwrap();
                (e.key().unwrap().to_string(), e.value_bytes().to_vec())
            })
            .collect();
        let keys: Vec<&str> = recs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "SCHILY.xattr.security.capability",
                "mtime",
                "path",
                "size",
                "uid"
            ]
        );
        assert_eq!(recs[2].1, long.as_bytes());
        assert_eq!(recs[3].1, b"1099511627776");
        let main = parse(&b[b.len() - 512..]);
        assert_eq!(main.size().unwrap(), 0);
        assert_eq!(main.uid().unwrap(), 0);
        let u = build_header(&spec("caf\u{e9}"));
        assert_eq!(parse(&u).entry_type(), tar::EntryType::XHeader);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        let r = pax_record("k", &[b'v'; 94]);
        assert_eq!(&r[..4], b"101 ");
        assert_eq!(r.len(), 101);
    }

    #[test]
    fn capability_v3_becomes_v2() {
        let mut v3 = vec![0u8; 24];
        v3[..4].copy_from_slice(&0x0300_0001u32.to_le_bytes());
        v3[4] = 0xff;
        v3[20] = 7; // rootid
        let v2 = capability_v3_to_v2(&v3);
        assert_eq!(v2.len(), 20);
        assert_eq!(
            u32::from_le_bytes([v2[0], v2[1], v2[2], v2[3]]),
            0x0200_0001
        );
        assert_eq!(v2[4], 0xff);
        let already = vec![0u8; 20];
        assert_eq!(capability_v3_to_v2(&already), already);
    }

    /// A file with other names outside the layer (hard-linked from another layer folder) is
    /// written with its content; two names inside the layer make one hard-link entry.
    #[test]
    fn hard_links_pair_only_names_inside_the_layer() {
        let t = tempfile::tempdir().unwrap();
        let (other, layer) = (t.path().join("other"), t.path().join("layer"));
        std::fs::create_dir_all(&other).unwrap();
        std::fs::create_dir_all(layer.join("d")).unwrap();
        std::fs::write(other.join("f"), "shared\n").unwrap();
        std::fs::hard_link(other.join("f"), layer.join("d/f")).unwrap();
        std::fs::write(layer.join("g"), "twice\n").unwrap();
        std::fs::hard_link(layer.join("g"), layer.join("h")).unwrap();
        let empty = t.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let set = crate::diff::diff_dirs(&empty, &layer).unwrap();
        let mut out = Vec::new();
        write_tar(&set, &mut out, &TarOptions::default()).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let kind = entry.header().entry_type();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
            seen.push((path, kind, body));
        }
        let find = |p: &str| seen.iter().find(|(q, _, _)| q == p).unwrap().clone();
        let (_, kind, body) = find("d/f");
        assert_eq!(kind, tar::EntryType::Regular);
        assert_eq!(body, "shared\n");
        let (_, g, _) = find("g");
        let (_, h, _) = find("h");
        assert_eq!(g, tar::EntryType::Regular);
        assert_eq!(h, tar::EntryType::Link);
    }
}
