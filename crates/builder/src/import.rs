//! `strata import`: a root filesystem (a tarball, possibly compressed, or a folder) becomes
//! a one-layer image, as `docker import` makes it.
//!
//! A tarball is stored as it is (after decompression: gzip, bzip2, xz or zstd, chosen by
//! its magic bytes), so its diffID is the digest of the tar the user gave, as Docker's.
//! It is read through the overlay crate's [`TarReader`] on the way in, so something that
//! is not a tar, or a truncated or malformed one, is refused and no layer appears. A
//! folder is written as a tar by the overlay crate's writer (canonical order, owners and
//! modes kept). The config gets the host platform, the creation time and one history entry
//! whose comment is `Imported from <source>`; `--change` instructions edit the config only.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::History;
use strata_overlay::{diff_dirs, write_tar, Limits, TarOptions, TarReader};
use strata_store::{Compression, Image, ImageConfig, RefKind, Reference, Store};

use crate::copy::archive::decompress;
use crate::imageconfig::{apply_changes, push_history};
use crate::platform::Platform;
use crate::timefmt::{now_secs, rfc3339};
use crate::Error;

/// What to import.
pub enum ImportSource<'a> {
    /// A tar stream (a file or standard input), compressed or not.
    Tar {
        /// The stream.
        reader: Box<dyn Read + 'a>,
        /// How the user named it (`rootfs.tar`, `-`), for messages and the history comment.
        name: String,
    },
    /// A folder whose contents become the image's root.
    Dir(PathBuf),
}

impl std::fmt::Debug for ImportSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportSource::Tar { name, .. } => f.debug_struct("Tar").field("name", name).finish(),
            ImportSource::Dir(p) => f.debug_tuple("Dir").field(p).finish(),
        }
    }
}

impl ImportSource<'_> {
    /// The source as the history comment names it.
    pub fn name(&self) -> String {
        match self {
            ImportSource::Tar { name, .. } => name.clone(),
            ImportSource::Dir(p) => p.display().to_string(),
        }
    }
}

/// Options of [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Tag for the new image (kept untagged when `None`, like Docker's).
    pub reference: Option<Reference>,
    /// `--change` instructions (`CMD ["sh"]`, `ENV A=1`), applied in order.
    pub changes: Vec<String>,
    /// `-m`: the history comment (default `Imported from <source>`).
    pub message: Option<String>,
    /// The platform recorded in the config (default: the host's).
    pub platform: Option<Platform>,
    /// How the layer is stored.
    pub compression: Compression,
}

/// Imports `source` into `store` as a one-layer image (see the module docs).
pub fn import(
    store: &Store,
    source: ImportSource<'_>,
    opts: &ImportOptions,
) -> Result<Image, Error> {
    let source_name = source.name();
    // The config first: a bad `--change` must fail before anything is read.
    let mut config = ImageConfig::default();
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    config
        .oci
        .set_architecture(platform.architecture.as_str().into());
    config.oci.set_os(platform.os.as_str().into());
    config.oci.set_variant(platform.variant.clone());
    let changes: Vec<&str> = opts.changes.iter().map(String::as_str).collect();
    apply_changes(&mut config, &changes)?;
    // `docker import` writes one history entry; the changes edit the config only.
    config.oci.set_history(None);

    let _lease = store.lease()?;
    let mut writer = store.layer_writer(opts.compression)?;
    match source {
        ImportSource::Tar { reader, name } => copy_checked(reader, &mut writer, &name)?,
        ImportSource::Dir(dir) => write_dir(&dir, &mut writer)?,
    }
    let layer = writer.finish()?;

    let created = rfc3339(now_secs());
    let comment = opts
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("Imported from {source_name}"));
    let mut entry = History::default();
    entry.set_created(Some(created.clone()));
    entry.set_comment(Some(comment));
    push_history(&mut config, entry);
    config.oci.set_created(Some(created));
    let image = store.write_image(&config, &[layer])?;
    match &opts.reference {
        Some(r) => store.tag(r, &image)?,
        None => store.set_ref(RefKind::Untagged, &image.id().hex(), &image.manifest)?,
    }
    Ok(image)
}

/// Copies the decompressed tar in `reader` into `out`, checking every header on the way.
fn copy_checked(reader: Box<dyn Read + '_>, out: &mut dyn Write, name: &str) -> Result<(), Error> {
    let not_a_tar = |reason: String| Error::NotATar {
        source_name: name.to_string(),
        reason,
    };
    let stream = decompress(reader).map_err(|e| not_a_tar(e.to_string()))?;
    let mut tee = Tee {
        inner: stream,
        out,
        failed: None,
    };
    let mut tar = TarReader::new(&mut tee, Limits::default());
    let mut entries = 0u64;
    loop {
        match tar.next_entry() {
            Ok(Some(head)) => {
                entries += 1;
                tar.copy_data(&mut io::sink(), &head)
                    .map_err(|e| not_a_tar(e.to_string()))?;
            }
            Ok(None) => break,
            Err(e) => {
                let reason = match entries {
                    0 => format!("no tar header at the start ({e})"),
                    _ => e.to_string(),
                };
                return Err(not_a_tar(reason));
            }
        }
    }
    if entries == 0 {
        return Err(not_a_tar("it holds no entries".into()));
    }
    // The end-of-archive blocks and any padding after them belong to the layer too.
    io::copy(&mut tee, &mut io::sink()).map_err(|e| not_a_tar(e.to_string()))?;
    if let Some(e) = tee.failed {
        return Err(Error::io("write", "the layer", e));
    }
    Ok(())
}

/// Writes the folder `dir` as a layer tar (every entry added) into `out`.
fn write_dir(dir: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("read", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "read",
            dir,
            io::Error::new(io::ErrorKind::InvalidInput, "not a folder"),
        ));
    }
    let empty = tempfile::tempdir().map_err(|e| Error::io("create", "a temp dir", e))?;
    let set = diff_dirs(empty.path(), dir)?;
    let mut out = out;
    write_tar(&set, &mut out, &TarOptions::default())?;
    Ok(())
}

/// A reader that writes what it reads into `out` (a write failure ends the stream and is
/// kept to be reported as such, not as a malformed tar).
struct Tee<'o, R: Read> {
    inner: R,
    out: &'o mut dyn Write,
    failed: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            self.failed = Some(e);
            return Err(io::Error::new(kind, "the layer could not be written"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn tar_source(data: Vec<u8>) -> ImportSource<'static> {
        ImportSource::Tar {
            reader: Box::new(io::Cursor::new(data)),
            name: "rootfs.tar".into(),
        }
    }

    #[test]
    fn a_gzipped_tar_becomes_one_layer_whose_diff_id_is_the_plain_tars_digest() {
        let (_d, store) = store();
        let plain = tar_of(&[("bin/hello", b"hi\n"), ("etc/motd", b"welcome\n")]);
        let opts = ImportOptions {
            reference: Some(Reference::parse("imported:v1").unwrap()),
            changes: vec![
                "CMD [\"/bin/hello\"]".into(),
                "ENV A=1".into(),
                "ENV B=$A".into(),
            ],
            ..ImportOptions::default()
        };
        let image = import(&store, tar_source(gzip(&plain)), &opts).unwrap();
        assert_eq!(image.diff_ids, [strata_store::Digest::of(&plain)]);
        let c = crate::imageconfig::exec_config(&image.config_parsed);
        assert_eq!(c.cmd().clone().unwrap(), ["/bin/hello"]);
        assert_eq!(c.env().clone().unwrap(), ["A=1", "B=1"]);
        let history = image
            .config_parsed
            .oci
            .history()
            .clone()
            .unwrap_or_default();
        assert_eq!(history.len(), 1);
        assert_eq!(
            history[0].comment().as_deref(),
            Some("Imported from rootfs.tar")
        );
        assert_eq!(history[0].empty_layer(), None);
        assert_eq!(store.resolve("imported:v1").unwrap().id(), image.id());
    }

    #[test]
    fn what_is_not_a_tar_is_refused_and_leaves_no_image() {
        let (_d, store) = store();
        for bad in [
            b"just some text, long enough to fill nothing".to_vec(),
            gzip(b"compressed text"),
            Vec::new(),
            vec![0u8; 1024],
        ] {
            let e = import(&store, tar_source(bad), &ImportOptions::default()).unwrap_err();
            assert!(matches!(e, Error::NotATar { .. }), "{e}");
            assert!(
                e.to_string()
                    .starts_with("rootfs.tar is not a tar archive: "),
                "{e}"
            );
        }
        // A tar cut in the middle of a file.
        let mut cut = tar_of(&[("big", &[7u8; 4096])]);
        cut.truncate(1500);
        let e = import(&store, tar_source(cut), &ImportOptions::default()).unwrap_err();
        assert!(matches!(e, Error::NotATar { .. }), "{e}");
        assert!(store.images().unwrap().is_empty());
    }

    #[test]
    fn a_bad_change_fails_before_anything_is_read() {
        let (_d, store) = store();
        let opts = ImportOptions {
            changes: vec!["FROM busybox".into()],
            ..ImportOptions::default()
        };
        let e = import(&store, tar_source(Vec::new()), &opts).unwrap_err();
        assert!(matches!(e, Error::InvalidChange { .. }), "{e}");
    }
}
