//! Content hashing of selected context paths, BuildKit `contenthash` style.
//!
//! Every entry gets its own digest: sha256 over a header (type, permission bits, owner,
//! size, link target, device numbers, selected extended attributes; never the mtime and
//! never the name) followed, for regular files, by the content. Names enter through the
//! directory digests: a directory's digest covers its own header and, in name order, each
//! child's name and digest (recursively). The digest of a selection covers each selected
//! path and its digest. So renaming, `chmod`, editing or adding a file changes the digest;
//! `touch` does not. For a build context the owner is recorded as 0:0 (BuildKit resets it on
//! the client), so checking out the same tree as another user hits the same cache.
//!
//! Files are read once, in parallel on the current rayon pool. Besides the digest the
//! result lists every file with its own digest, so a later miss can name the file that
//! changed ([`crate::cachekey::diff`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::gopath::clean;
use super::walk::{ContextIndex, Entry, FileKind};
use crate::cachekey::{Encoder, FileInput, SourcesInput};
use crate::Error;

/// Options for [`hash_selection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashOptions {
    /// Record the files' real owner (for copies from another stage or image); when false,
    /// uid and gid are recorded as 0 (the build context).
    pub keep_owner: bool,
}

impl HashOptions {
    /// Options for the build context: owners recorded as 0:0.
    pub fn context() -> Self {
        HashOptions { keep_owner: false }
    }
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; 128 * 1024]);
}

/// Whether an extended attribute enters a digest: everything but `system.*` (POSIX ACLs)
/// and `security.*` other than `security.capability`, as BuildKit selects them.
fn selected_xattr(name: &str) -> bool {
    !name.starts_with("system.")
        && (!name.starts_with("security.") || name == "security.capability")
}

/// The selected extended attributes, sorted, read through `list` and `get` (by path for
/// links and directories, by descriptor for open regular files).
fn xattrs(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&str, &mut [u8]) -> rustix::io::Result<usize>,
) -> Vec<(String, Vec<u8>)> {
    let mut names = [0u8; 4096];
    let Ok(len) = list(&mut names[..]) else {
        return Vec::new();
    };
    if len == 0 {
        return Vec::new();
    }
    let mut out: Vec<(String, Vec<u8>)> = names[..len]
        .split(|b| *b == 0)
        .filter_map(|n| std::str::from_utf8(n).ok())
        .filter(|n| !n.is_empty() && selected_xattr(n))
        .filter_map(|n| {
            let mut value = vec![0u8; 64 * 1024];
            let len = get(n, &mut value[..]).ok()?;
            value.truncate(len);
            Some((n.to_string(), value))
        })
        .collect();
    out.sort();
    out
}

/// The header part of an entry's digest.
fn header(
    e: &Entry,
    size: u64,
    mode: u32,
    opts: &HashOptions,
    xattrs: &[(String, Vec<u8>)],
) -> Encoder {
    let mut enc = Encoder::new();
    enc.str("strata-file-v1");
    enc.field("kind").str(e.kind.name());
    enc.field("mode").u64(u64::from(mode));
    let (uid, gid) = if opts.keep_owner {
        (e.uid, e.gid)
    } else {
        (0, 0)
    };
    enc.field("uid").u64(u64::from(uid));
    enc.field("gid").u64(u64::from(gid));
    enc.field("size").u64(size);
    enc.field("link").opt_str(e.link_target.as_deref());
    let (major, minor) = match e.kind {
        FileKind::CharDevice | FileKind::BlockDevice => {
            (nix::sys::stat::major(e.rdev), nix::sys::stat::minor(e.rdev))
        }
        _ => (0, 0),
    };
    enc.field("devmajor").u64(major);
    enc.field("devminor").u64(minor);
    enc.field("xattrs").list(xattrs.len());
    for (name, value) in xattrs {
        enc.str(name).bytes(value);
    }
    enc
}

/// An entry's own digest (header + content) and its record.
fn entry_digest(index: &ContextIndex, e: &Entry, opts: &HashOptions) -> Result<[u8; 32], Error> {
    let path = index.root().join(&e.path);
    if e.kind != FileKind::File {
        let attrs = xattrs(
            |buf| rustix::fs::llistxattr(&path, buf),
            |name, buf| rustix::fs::lgetxattr(&path, name, buf),
        );
        let enc = header(e, 0, e.mode, opts, &attrs);
        return Ok(Sha256::digest(enc.as_bytes()).into());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|err| Error::io("open", &path, err))?;
    let meta = file
        .metadata()
        .map_err(|err| Error::io("stat", &path, err))?;
    if !meta.is_file() {
        return Err(Error::ChangedWhileHashing { path });
    }
    let size = meta.size();
    let attrs = xattrs(
        |buf| rustix::fs::flistxattr(&file, buf),
        |name, buf| rustix::fs::fgetxattr(&file, name, buf),
    );
    let mut hasher = Sha256::new();
    hasher.update(header(e, size, meta.mode() & 0o7777, opts, &attrs).as_bytes());
    let mut read_total = 0u64;
    BUFFER.with(|buf| -> Result<(), Error> {
        let mut buf = buf.borrow_mut();
        let mut file = &file;
        loop {
            let n = match file.read(&mut buf[..]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(Error::io("read", &path, err)),
            };
            hasher.update(&buf[..n]);
            read_total += n as u64;
        }
    })?;
    if read_total != size {
        return Err(Error::ChangedWhileHashing { path });
    }
    Ok(hasher.finalize().into())
}

fn hex_digest(d: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(d))
}

/// Digest of the directory at `pos`: its own header digest, then each child's name and
/// (for directories, recursive) digest, in walk order, which is name order.
fn tree_digest(index: &ContextIndex, pos: usize, own: &[Option<[u8; 32]>]) -> [u8; 32] {
    let entries = index.entries();
    let range = index.subtree_range(pos);
    let depth = entries[pos].depth();
    let mut enc = Encoder::new();
    enc.str("strata-dir-v1");
    enc.bytes(&own[pos].unwrap_or_default());
    let mut q = range.start + 1;
    while q < range.end {
        let child = &entries[q];
        let child_range = index.subtree_range(q);
        if child.depth() == depth + 1 {
            let digest = if child.kind == FileKind::Dir {
                tree_digest(index, q, own)
            } else {
                own[q].unwrap_or_default()
            };
            enc.str(child.name()).bytes(&digest);
        }
        q = child_range.end.max(q + 1);
    }
    Sha256::digest(enc.as_bytes()).into()
}

/// Hashes the `selection` (paths relative to the context root; `.` or `""` is the whole
/// context), each a file or a directory taken with everything below it. Every selected path
/// must be in the index (it may be ignored by `.dockerignore`: then it is not found).
pub fn hash_selection<S: AsRef<str>>(
    index: &ContextIndex,
    selection: &[S],
    opts: &HashOptions,
) -> Result<SourcesInput, Error> {
    let entries = index.entries();
    let mut roots = Vec::with_capacity(selection.len());
    let mut wanted = vec![false; entries.len()];
    for sel in selection {
        let cleaned = clean(sel.as_ref().trim_start_matches('/'));
        let path = if cleaned == "." {
            String::new()
        } else {
            cleaned
        };
        let pos = index.position(&path).ok_or_else(|| Error::SourceNotFound {
            path: sel.as_ref().to_string(),
        })?;
        for w in &mut wanted[index.subtree_range(pos)] {
            *w = true;
        }
        roots.push((path, pos));
    }
    let todo: Vec<usize> = (0..entries.len()).filter(|i| wanted[*i]).collect();
    let digests: Vec<(usize, Result<[u8; 32], Error>)> = todo
        .par_iter()
        .map(|&i| (i, entry_digest(index, &entries[i], opts)))
        .collect();
    let mut own: Vec<Option<[u8; 32]>> = vec![None; entries.len()];
    let mut files = BTreeMap::new();
    for (i, digest) in digests {
        let digest = digest?;
        own[i] = Some(digest);
        let e = &entries[i];
        let key = if e.path.is_empty() {
            ".".to_string()
        } else {
            e.path.clone()
        };
        files.insert(
            key,
            FileInput {
                kind: e.kind.name().to_string(),
                mode: e.mode,
                size: e.size,
                digest: hex_digest(&digest),
            },
        );
    }
    let mut enc = Encoder::new();
    enc.str("strata-selection-v1");
    enc.list(roots.len());
    for (path, pos) in &roots {
        let digest = if entries[*pos].kind == FileKind::Dir {
            tree_digest(index, *pos, &own)
        } else {
            own[*pos].unwrap_or_default()
        };
        enc.str(path).bytes(&digest);
    }
    Ok(SourcesInput {
        digest: hex_digest(&Sha256::digest(enc.as_bytes()).into()),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::walk::tests::make_tree;
    use std::os::unix::fs::PermissionsExt;

    fn digest_of(dir: &std::path::Path, sel: &[&str]) -> SourcesInput {
        let index = ContextIndex::walk(dir, None).unwrap();
        hash_selection(&index, sel, &HashOptions::context()).unwrap()
    }

    #[test]
    fn content_mode_names_and_additions_change_the_digest_mtime_does_not() {
        let dir = make_tree(&["app/main.rs", "app/lib.rs", "app/sub/x", "other"]);
        let base = digest_of(dir.path(), &["app"]);
        assert_eq!(base.files.len(), 5, "{:?}", base.files.keys());
        assert!(base.files.contains_key("app/sub/x"));

        // mtime only: same digest.
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join("app/main.rs"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(digest_of(dir.path(), &["app"]).digest, base.digest);

        // A file outside the selection: same digest.
        std::fs::write(dir.path().join("other"), "changed").unwrap();
        assert_eq!(digest_of(dir.path(), &["app"]).digest, base.digest);

        let mut seen = vec![base.digest.clone()];
        let mut check = |what: &str| {
            let d = digest_of(dir.path(), &["app"]).digest;
            assert!(!seen.contains(&d), "{what} did not change the digest");
            seen.push(d);
        };
        std::fs::write(dir.path().join("app/main.rs"), "fn main() {}").unwrap();
        check("content");
        std::fs::set_permissions(
            dir.path().join("app/lib.rs"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        check("mode");
        std::fs::rename(dir.path().join("app/sub/x"), dir.path().join("app/sub/y")).unwrap();
        check("rename");
        std::fs::write(dir.path().join("app/new"), "").unwrap();
        check("new empty file");
        std::os::unix::fs::symlink("main.rs", dir.path().join("app/link")).unwrap();
        check("symlink");
        std::fs::remove_file(dir.path().join("app/link")).unwrap();
        std::os::unix::fs::symlink("lib.rs", dir.path().join("app/link")).unwrap();
        check("symlink target");
        std::fs::set_permissions(
            dir.path().join("app/sub"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        check("directory mode");
    }

    #[test]
    fn user_xattrs_count_acls_do_not() {
        assert!(selected_xattr("user.origin"));
        assert!(selected_xattr("trusted.x"));
        assert!(selected_xattr("security.capability"));
        assert!(!selected_xattr("security.selinux"));
        assert!(!selected_xattr("system.posix_acl_access"));
        let dir = make_tree(&["f"]);
        let before = digest_of(dir.path(), &["f"]).digest;
        let path = dir.path().join("f");
        if rustix::fs::setxattr(&path, "user.origin", b"ci", rustix::fs::XattrFlags::empty())
            .is_err()
        {
            return; // the temp filesystem has no user xattrs; the selection is tested above
        }
        assert_ne!(digest_of(dir.path(), &["f"]).digest, before);
    }

    #[test]
    fn per_file_records_name_the_changed_file() {
        let dir = make_tree(&["a", "b/c"]);
        let before = digest_of(dir.path(), &["."]);
        std::fs::write(dir.path().join("b/c"), "new content").unwrap();
        let after = digest_of(dir.path(), &["."]);
        let changed: Vec<&String> = after
            .files
            .iter()
            .filter(|(k, v)| before.files.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(changed, ["b/c"]);
    }

    #[test]
    fn identical_trees_hash_alike_wherever_they_are() {
        let one = make_tree(&["x/a", "x/b/c"]);
        let two = make_tree(&["x/a", "x/b/c"]);
        assert_eq!(
            digest_of(one.path(), &["x"]).digest,
            digest_of(two.path(), &["x"]).digest
        );
        // The selected path is part of the digest.
        assert_ne!(
            digest_of(one.path(), &["x"]).digest,
            digest_of(one.path(), &["x/b"]).digest
        );
    }

    #[test]
    fn owner_counts_only_when_asked() {
        let entry = |uid| Entry {
            path: "f".into(),
            kind: FileKind::File,
            mode: 0o644,
            size: 1,
            uid,
            gid: uid,
            rdev: 0,
            link_target: None,
        };
        let h = |e: &Entry, keep_owner| {
            header(e, 1, 0o644, &HashOptions { keep_owner }, &[])
                .as_bytes()
                .to_vec()
        };
        assert_eq!(h(&entry(0), false), h(&entry(1234), false));
        assert_ne!(h(&entry(0), true), h(&entry(1234), true));
        assert_eq!(h(&entry(0), false), h(&entry(0), true));
    }

    #[test]
    fn missing_selection_is_an_error() {
        let dir = make_tree(&["f"]);
        let index = ContextIndex::walk(dir.path(), None).unwrap();
        let err = hash_selection(&index, &["nope"], &HashOptions::context()).unwrap_err();
        assert_eq!(err.to_string(), "nope not found in the build context");
    }
}
