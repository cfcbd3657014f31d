//! Reusing the files of the previous layer of the same `COPY` step.
//!
//! Rebuilding `COPY . /app` after one file of a big context changed would copy every file
//! again: on this machine creating 20,000 inodes through overlayfs is most of the step's
//! time. Instead, a regular file whose content digest and written metadata (mode, owner,
//! size, mtime) are those of the same path in the previous layer of the step is hard-linked
//! from that layer's committed `diff/` folder into the new snapshot's upper folder.
//!
//! Why that is sound:
//! - committed `diff/` folders are immutable: they are only ever overlay lowers (overlay
//!   copies a lower file up into a new inode before changing it) and are removed by
//!   unlinking, which leaves the shared inode to the other name;
//! - a link is only made into a directory this copy created (so it is new in the upper
//!   folder, no lower entry shows through it and overlay has never looked the name up);
//! - before linking, the previous file is checked with `lstat` to be a regular file with
//!   exactly the mode, owner, size and mtime the copy would write, and its content digest
//!   (remembered when the previous layer was written) must be the new source's;
//! - the layer tar writer only makes hard-link entries for two names of one inode inside
//!   the same layer, so a link shared with an older layer is written as a plain file: the
//!   layer is byte for byte the one a full copy gives.
//!
//! `COPY --from` links the same way from the source itself: a file whose written metadata
//! is exactly the source file's is hard-linked from the committed layer folder that holds
//! it ([`Reuse::source`], found with overlay's merge rules by
//! [`strata_overlay::layers::Layers`]), when it is the very inode the mounted source
//! showed when hashed and carries no extended attribute at all (a file a RUN copied up
//! carries overlay's own, and is copied). Not with the vfs driver.
//!
//! What the previous layer holds is kept in `<builder dir>/copy-layers/<slot>`, where the
//! slot is the step's cache key without its sources (same parent, instruction, destination,
//! flags): one line per regular file the copy wrote into a directory it created. It is only
//! a hint: a missing, stale or unreadable file just means "copy everything".

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType};

/// First line of a kept file list (its format version).
const HEADER: &str = "strata-copy-layer 1";

/// What a copied regular file is, as far as the layer tar can tell: the source entry's
/// digest and the metadata written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    /// The source entry's digest (header and content).
    pub digest: [u8; 32],
    /// Permission bits written.
    pub mode: u32,
    /// Owner written.
    pub uid: u32,
    /// Group written.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time written (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

impl FileId {
    /// Whether `st` (an `lstat` of a file in a committed layer) is a regular file with
    /// exactly this metadata.
    // The casts are needed where `stat`'s fields are narrower than 64 bits.
    #[allow(clippy::unnecessary_cast)]
    pub fn matches(&self, st: &rustix::fs::Stat) -> bool {
        FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_mode & 0o7777 == self.mode & 0o7777
            && st.st_uid == self.uid
            && st.st_gid == self.gid
            && st.st_size as u64 == self.size
            && (st.st_mtime as i64, st.st_mtime_nsec as i64) == self.mtime
    }
}

/// The regular files one copy wrote into directories it created, by path in the upper
/// folder (what [`super::CopyPlan::apply_reusing`] returns, kept for the next build).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopiedFiles {
    pub(crate) files: Vec<(String, FileId)>,
}

impl CopiedFiles {
    /// How many files are listed.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is listed.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Keeps the list at `path` as the files of the committed snapshot `snapshot`
    /// (atomically: a reader sees the old list or the new one).
    pub fn save(&self, path: &Path, snapshot: &str) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut out = Vec::with_capacity(self.files.len() * 128);
        writeln!(out, "{HEADER}")?;
        writeln!(out, "{snapshot}")?;
        for (p, id) in &self.files {
            writeln!(
                out,
                "{} {:o} {} {} {} {} {} {p}",
                hex(&id.digest),
                id.mode,
                id.uid,
                id.gid,
                id.size,
                id.mtime.0,
                id.mtime.1
            )?;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&out)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The previous layer of a copy step: its committed `diff/` folder and what the copy wrote
/// there.
#[derive(Debug, Clone)]
pub struct PreviousLayer {
    pub(crate) diff: PathBuf,
    pub(crate) files: HashMap<String, FileId>,
}

impl PreviousLayer {
    /// Reads the list kept at `path`; `diff_of` gives the `diff/` folder of the committed
    /// snapshot it names (`None` when that snapshot is gone). `None` when there is no usable
    /// list.
    pub fn load(path: &Path, diff_of: impl FnOnce(&str) -> Option<PathBuf>) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let diff = diff_of(lines.next()?)?;
        let mut files = HashMap::new();
        for line in lines {
            let (p, id) = parse_line(line)?;
            files.insert(p, id);
        }
        Some(PreviousLayer { diff, files })
    }

    /// How many files the previous layer lists.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it lists no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The committed snapshot a kept list at `path` describes (its second line), reading no
/// further; `None` when the file cannot be read or is not such a list.
pub fn listed_snapshot(path: &Path) -> Option<String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    let mut lines = std::io::BufReader::new(file).lines();
    if lines.next()?.ok()? != HEADER {
        return None;
    }
    lines.next()?.ok().filter(|s| !s.is_empty())
}

fn parse_line(line: &str) -> Option<(String, FileId)> {
    let mut f = line.splitn(8, ' ');
    let digest = parse_hex(f.next()?)?;
    let mode = u32::from_str_radix(f.next()?, 8).ok()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let size = f.next()?.parse().ok()?;
    let secs = f.next()?.parse().ok()?;
    let nanos = f.next()?.parse().ok()?;
    let path = f.next()?.to_string();
    Some((
        path,
        FileId {
            digest,
            mode,
            uid,
            gid,
            size,
            mtime: (secs, nanos),
        },
    ))
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What a copy may reuse, for [`super::CopyPlan::apply_reusing`].
pub struct Reuse<'a> {
    /// The step's upper folder (the snapshot's own `diff/`), where links are made.
    pub upper: &'a Path,
    /// The previous layer of the step, when there is one.
    pub previous: Option<&'a PreviousLayer>,
    /// For `COPY --from`: the layer folders of the source's committed snapshot (whose
    /// mounted view the plan reads), to link a file from the folder that holds it when the
    /// copy would write it with exactly its metadata. Overlay only, same filesystem as
    /// `upper`.
    pub source: Option<&'a strata_overlay::layers::Layers>,
}

/// Links `name` of the previous layer's `prev_dir` into `upper_dir` when it is `id`;
/// `false` when it is not (or cannot be linked): then the caller copies.
pub(crate) fn link_if_same(
    prev_dir: &std::os::fd::OwnedFd,
    upper_dir: &std::os::fd::OwnedFd,
    name: &str,
    id: &FileId,
) -> bool {
    match rustix::fs::statat(prev_dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if id.matches(&st) => {}
        _ => return false,
    }
    rustix::fs::linkat(prev_dir, name, upper_dir, name, AtFlags::empty()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> FileId {
        FileId {
            digest: [n; 32],
            mode: 0o4755,
            uid: 1000,
            gid: 7,
            size: 10_000,
            mtime: (1_700_000_000, 123_456_789),
        }
    }

    #[test]
    fn kept_list_round_trips_with_spaces_in_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy-layers/slot");
        let copied = CopiedFiles {
            files: vec![("app/a b".into(), id(1)), ("app/d00/f00000".into(), id(2))],
        };
        copied.save(&path, "snap-name").unwrap();
        let mut asked = String::new();
        let prev = PreviousLayer::load(&path, |s| {
            asked = s.to_string();
            Some(PathBuf::from("/diff"))
        })
        .unwrap();
        assert_eq!(asked, "snap-name");
        assert_eq!(prev.diff, PathBuf::from("/diff"));
        assert_eq!(prev.len(), 2);
        assert_eq!(prev.files["app/a b"], id(1));
        assert_eq!(prev.files["app/d00/f00000"], id(2));
    }

    #[test]
    fn the_listed_snapshot_is_read_from_the_second_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot");
        CopiedFiles::default().save(&path, "snap-1").unwrap();
        assert_eq!(listed_snapshot(&path).as_deref(), Some("snap-1"));
        std::fs::write(&path, "not a list\nsnap-1\n").unwrap();
        assert_eq!(listed_snapshot(&path), None);
        assert_eq!(listed_snapshot(&dir.path().join("missing")), None);
    }

    #[test]
    fn a_gone_snapshot_or_a_damaged_list_is_no_previous_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot");
        CopiedFiles {
            files: vec![("a".into(), id(1))],
        }
        .save(&path, "s")
        .unwrap();
        assert!(PreviousLayer::load(&path, |_| None).is_none());
        std::fs::write(&path, format!("{HEADER}\ns\nnot a line\n")).unwrap();
        assert!(PreviousLayer::load(&path, |_| Some(PathBuf::new())).is_none());
        std::fs::write(&path, "strata-copy-layer 0\ns\n").unwrap();
        assert!(PreviousLayer::load(&path, |_| Some(PathBuf::new())).is_none());
        assert!(
            PreviousLayer::load(&dir.path().join("missing"), |_| Some(PathBuf::new())).is_none()
        );
    }

    #[test]
    fn only_the_exact_metadata_matches() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, vec![0u8; 10]).unwrap();
        let st = rustix::fs::lstat(&f).unwrap();
        let exact = FileId {
            digest: [0; 32],
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: 10,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
        };
        assert!(exact.matches(&st));
        assert!(!FileId {
            mode: exact.mode ^ 0o1,
            ..exact
        }
        .matches(&st));
        assert!(!FileId {
            uid: exact.uid + 1,
            ..exact
        }
        .matches(&st));
        assert!(!FileId {
            gid: exact.gid + 1,
            ..exact
        }
        .matches(&st));
        assert!(!FileId { size: 11, ..exact }.matches(&st));
        assert!(!FileId {
            mtime: (exact.mtime.0, exact.mtime.1 ^ 1),
            ..exact
        }
        .matches(&st));
        let d = rustix::fs::lstat(dir.path()).unwrap();
        assert!(!exact.matches(&d));
    }
}
