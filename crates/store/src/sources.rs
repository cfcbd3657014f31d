//! Blob sources: which registry repositories are known to hold a blob (it was pulled from
//! there or pushed there), so a push to another repository of the same registry can ask for a
//! cross-repository mount instead of uploading the bytes again.
//!
//! One empty-bodied file per (blob, repository): `sources/<blob hex>/<encoded repository>`
//! holding the repository name. Adding a source never rewrites a shared file, so concurrent
//! pulls and pushes cannot lose each other's entries. A source is a hint: a registry may have
//! deleted the blob since, and the push then falls back to an upload. GC drops the sources of
//! the blobs it removes.

use std::fs;
use std::io;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsutil::{create_private_dir, read_dir_files, write_atomic};
use crate::refs::encode_name;
use crate::store::Store;

/// The longest repository name kept (registry host + path, as Docker limits names).
const MAX_SOURCE: usize = 512;

impl Store {
    /// Remember that `repository` (`registry/path`, e.g. `127.0.0.1:5000/team/app`) holds the
    /// blob `digest`.
    pub fn record_blob_source(&self, digest: &Digest, repository: &str) -> Result<()> {
        if repository.is_empty()
            || repository.len() > MAX_SOURCE
            || repository.chars().any(char::is_control)
        {
            return Err(Error::InvalidRefName {
                kind: "sources",
                name: repository.chars().take(200).collect(),
                reason: "a blob source is a registry/repository name",
            });
        }
        let dir = self.paths.sources.join(digest.hex());
        let path = dir.join(encode_name(repository));
        if path.exists() {
            return Ok(());
        }
        create_private_dir(&dir)?;
        write_atomic(&self.paths.ingest, &path, repository.as_bytes())
    }

    /// The repositories known to hold `digest`, sorted.
    pub fn blob_sources(&self, digest: &Digest) -> Result<Vec<String>> {
        let dir = self.paths.sources.join(digest.hex());
        let mut out: Vec<String> = read_dir_files(&dir, MAX_SOURCE as u64)?
            .into_iter()
            .filter_map(|bytes| String::from_utf8(bytes).ok())
            .filter(|name| !name.is_empty())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Forget every source of a blob (GC, after removing it).
    pub(crate) fn remove_blob_sources(&self, digest: &Digest) -> Result<()> {
        let dir = self.paths.sources.join(digest.hex());
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_accumulate_and_go_with_their_blob() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let blob = s.write_blob(b"layer").unwrap();
        assert!(s.blob_sources(&blob.digest).unwrap().is_empty());
        s.record_blob_source(&blob.digest, "127.0.0.1:5000/b/app")
            .unwrap();
        s.record_blob_source(&blob.digest, "127.0.0.1:5000/a/base")
            .unwrap();
        s.record_blob_source(&blob.digest, "127.0.0.1:5000/a/base")
            .unwrap();
        assert_eq!(
            s.blob_sources(&blob.digest).unwrap(),
            vec!["127.0.0.1:5000/a/base", "127.0.0.1:5000/b/app"]
        );
        assert!(s.record_blob_source(&blob.digest, "").is_err());
        assert!(s.record_blob_source(&blob.digest, "a\nb").is_err());
        // Unreferenced: GC removes the blob and its sources.
        s.gc(crate::GcOptions::default()).unwrap();
        assert!(!s.has_blob(&blob.digest));
        assert!(s.blob_sources(&blob.digest).unwrap().is_empty());
        assert!(!s.root().join("sources").join(blob.digest.hex()).exists());
    }
}
