//! Small filesystem helpers: durable renames and directory syncs.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::{Error, Result};

/// fsync a directory so that a rename or unlink inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// Create a directory (and its parents) private to the owner: store folders must not be
/// traversable by other users (CVE-2021-41091).
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Write `bytes` to `dest` atomically: a temp file in `tmp_dir` (same filesystem), fsync,
/// rename over `dest`, fsync the destination folder. Readers see the old or the new content,
/// never a mix.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix("atomic-")
        .tempfile_in(tmp_dir)
        .map_err(|e| Error::io("create temp file in", tmp_dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("write", tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| Error::io("rename into", dest, e.error))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Read a file, refusing anything over `max` bytes (store metadata is small; a huge file
/// there is damage, not data).
pub(crate) fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    read_capped_file(file, path, max)
}

/// Bytes [`read_capped_file`] reads before it asks the file's size: store metadata (refs,
/// records, manifests) is mostly smaller, and is then read without a `stat`.
const FIRST_READ: usize = 8 * 1024;

/// [`read_capped`] of an open file: the first [`FIRST_READ`] bytes without asking the size
/// (one read and one that finds the end, for the small files the store keeps); a larger
/// file is then read in one read of the size it has, rather than reads of growing sizes.
pub(crate) fn read_capped_file(file: File, path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let too_large = || {
        Error::content(
            path.display().to_string(),
            format!("larger than {max} bytes"),
        )
    };
    let mut file = file.take(max + 1);
    let first = usize::try_from(max + 1).map_or(FIRST_READ, |m| m.min(FIRST_READ));
    // Read into the stack first: the result is then allocated at its size, not as a fresh
    // zeroed buffer per file (a cached build reads hundreds of these).
    let mut buf = [0u8; FIRST_READ];
    let buf = &mut buf[..first];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => return Ok(buf[..filled].to_vec()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    let mut out = buf.to_vec();
    // Full: the rest in one read of the size the file has, plus one byte to see its end.
    let known = file.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
    if known > max {
        return Err(too_large());
    }
    out.reserve(usize::try_from(known).unwrap_or(0).saturating_sub(filled) + 1);
    file.read_to_end(&mut out)
        .map_err(|e| Error::io("read", path, e))?;
    if out.len() as u64 > max {
        return Err(too_large());
    }
    Ok(out)
}

/// The files of `dir`, each read whole (up to `max` bytes), in no particular order. A missing
/// folder has none; a file that cannot be read (half-written, foreign, too large) is skipped,
/// since the folders read this way hold records their readers check anyway.
pub(crate) fn read_dir_files(dir: &Path, max: u64) -> Result<Vec<Vec<u8>>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if let Ok(bytes) = read_capped(&entry.path(), max) {
            out.push(bytes);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_reads_return_whole_files_and_refuse_larger_ones() {
        let dir = tempfile::tempdir().unwrap();
        let max = 3 * FIRST_READ as u64;
        for len in [
            0,
            10,
            FIRST_READ - 1,
            FIRST_READ,
            FIRST_READ + 1,
            max as usize,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            assert_eq!(read_capped(&path, max).unwrap(), data, "{len} bytes");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![1u8; max as usize + 1]).unwrap();
        assert!(read_capped(&big, max).is_err());
        // A cap under the first read's size.
        let small = dir.path().join("small");
        std::fs::write(&small, [2u8; 101]).unwrap();
        assert!(read_capped(&small, 100).is_err());
        assert_eq!(read_capped(&small, 101).unwrap(), [2u8; 101]);
    }
}
