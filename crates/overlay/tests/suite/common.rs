//! Helpers shared by the integration suites.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use strata_overlay::tar_write::{build_header, EntryKind, HeaderSpec};
use strata_overlay::{Driver, Snapshotter};

/// A fresh store in a temp dir.
pub fn store(driver: Driver) -> (tempfile::TempDir, Snapshotter) {
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(&t.path().join("store"), Some(driver)).unwrap();
    assert_eq!(s.driver(), driver);
    (t, s)
}

/// Builds tar streams entry by entry, with any name (hostile ones included).
#[derive(Default)]
pub struct TarBuilder {
    pub bytes: Vec<u8>,
}

pub fn spec(path: &str, kind: EntryKind) -> HeaderSpec {
    HeaderSpec {
        path: path.as_bytes().to_vec(),
        kind,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 1_500_000_000,
        link: Vec::new(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: Vec::new(),
    }
}

impl TarBuilder {
    pub fn raw(&mut self, spec: HeaderSpec, data: &[u8]) -> &mut Self {
        let mut spec = spec;
        spec.size = data.len() as u64;
        self.bytes.extend_from_slice(&build_header(&spec));
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.raw(spec(path, EntryKind::Dir), b"")
    }
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.raw(spec(path, EntryKind::File), data)
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut s = spec(path, EntryKind::Symlink);
        s.link = target.as_bytes().to_vec();
        self.raw(s, b"")
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut s = spec(path, EntryKind::HardLink);
        s.link = target.as_bytes().to_vec();
        self.raw(s, b"")
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.bytes);
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

/// One entry of a tree, as the comparisons see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Vec<u8>,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// First path (in sorted order) of the hardlink group this entry belongs to.
    pub link_group: Option<PathBuf>,
}

/// Everything below `root`, keyed by relative path.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    fn walk(
        root: &Path,
        rel: &Path,
        out: &mut BTreeMap<PathBuf, Entry>,
        inodes: &mut HashMap<(u64, u64), Vec<PathBuf>>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            use std::os::unix::fs::FileTypeExt;
            let (kind, content) = if ft.is_dir() {
                ("dir", Vec::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_file() {
                ("file", std::fs::read(&p).unwrap())
            } else if ft.is_fifo() {
                ("fifo", Vec::new())
            } else if ft.is_char_device() {
                ("char", Vec::new())
            } else if ft.is_block_device() {
                ("block", Vec::new())
            } else {
                ("socket", Vec::new())
            };
            if !ft.is_dir() && m.nlink() > 1 {
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_default()
                    .push(r.clone());
            }
            let xattrs = if ft.is_symlink() {
                Vec::new()
            } else {
                strata_overlay::meta::carried_xattrs(&p).unwrap()
            };
            out.insert(
                r.clone(),
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    content,
                    rdev: m.rdev(),
                    xattrs,
                    link_group: None,
                },
            );
            if ft.is_dir() {
                walk(root, &r, out, inodes);
            }
        }
    }
    walk(root, Path::new(""), &mut out, &mut inodes);
    for (_, mut paths) in inodes {
        if paths.len() < 2 {
            continue;
        }
        paths.sort();
        let first = paths[0].clone();
        for p in paths {
            if let Some(e) = out.get_mut(&p) {
                e.link_group = Some(first.clone());
            }
        }
    }
    out
}

/// Assert two trees are equal, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (tree(a), tree(b));
    for (p, ea) in &ta {
        match tb.get(p) {
            None => panic!(
                "{} is in {} but not in {}",
                p.display(),
                a.display(),
                b.display()
            ),
            Some(eb) => assert_eq!(ea, eb, "entry {} differs", p.display()),
        }
    }
    for p in tb.keys() {
        assert!(
            ta.contains_key(p),
            "{} is in {} but not in {}",
            p.display(),
            b.display(),
            a.display()
        );
    }
}

/// Run a shell command in `dir`, failing the test on error.
pub fn sh(dir: &Path, script: &str) {
    let st = std::process::Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "`{script}` failed in {}", dir.display());
}
