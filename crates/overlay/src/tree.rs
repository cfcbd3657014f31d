//! Read-only views of trees the differ compares: a plain folder, and the merged view of a stack
//! of overlay layer folders computed in userspace (no mount needed).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::meta::{is_opaque, Meta};

/// One entry of a view: its metadata, where it lives on the host, and for merged directories
/// the layers (indices, top first) that contribute to it.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub meta: Meta,
    pub host: PathBuf,
    pub layers: Vec<usize>,
}

/// A tree the generic differ can walk.
pub(crate) trait View {
    /// The root directory node.
    fn root(&self) -> Result<Node>;
    /// The children of a directory node, sorted by name.
    fn children(&self, dir: &Node) -> Result<BTreeMap<OsString, Node>>;
}

fn lstat_opt(path: &Path) -> Result<Option<Meta>> {
    match rustix::fs::statat(rustix::fs::CWD, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Meta::from_stat(&st))),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(Error::io("lstat", path, e)),
    }
}

pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("read dir", dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("read dir", dir, e))?;
    names.sort();
    Ok(names)
}

/// A plain folder. With `hide_whiteouts`, overlay whiteouts read as absent (an upper dir seen
/// on its own).
pub(crate) struct PlainDir {
    pub root: PathBuf,
    pub hide_whiteouts: bool,
}

impl View for PlainDir {
    fn root(&self) -> Result<Node> {
        Ok(Node {
            meta: Meta::lstat(&self.root)?,
            host: self.root.clone(),
            layers: Vec::new(),
        })
    }

    fn children(&self, dir: &Node) -> Result<BTreeMap<OsString, Node>> {
        let mut out = BTreeMap::new();
        for name in read_dir_sorted(&dir.host)? {
            let host = dir.host.join(&name);
            let Some(meta) = lstat_opt(&host)? else {
                continue;
            };
            if self.hide_whiteouts && meta.is_whiteout() {
                continue;
            }
            out.insert(
                name,
                Node {
                    meta,
                    host,
                    layers: Vec::new(),
                },
            );
        }
        Ok(out)
    }
}

/// The merged view of overlay layer folders, top layer first, with overlayfs's rules: a
/// whiteout hides lower entries, an opaque directory hides lower directories of the same name,
/// a non-directory ends the search, directories merge.
#[derive(Debug, Clone)]
pub(crate) struct LayerStack {
    pub layers: Vec<PathBuf>,
}

impl LayerStack {
    pub fn new(layers: Vec<PathBuf>) -> LayerStack {
        LayerStack { layers }
    }

    fn root_node(&self) -> Result<Option<Node>> {
        let Some(top) = self.layers.first() else {
            return Ok(None);
        };
        Ok(Some(Node {
            meta: Meta::lstat(top)?,
            host: top.clone(),
            layers: (0..self.layers.len()).collect(),
        }))
    }

    /// Look up one child of a merged directory.
    pub fn lookup_child(
        &self,
        dir: &Node,
        rel_dir: &Path,
        name: &std::ffi::OsStr,
    ) -> Result<Option<Node>> {
        for (pos, &i) in dir.layers.iter().enumerate() {
            let host = self.layers[i].join(rel_dir).join(name);
            let Some(meta) = lstat_opt(&host)? else {
                continue;
            };
            if meta.is_whiteout() {
                return Ok(None);
            }
            if !meta.is_dir() {
                return Ok(Some(Node {
                    meta,
                    host,
                    layers: Vec::new(),
                }));
            }
            let mut layers = vec![i];
            if !is_opaque(&host)? {
                for &j in &dir.layers[pos + 1..] {
                    let below = self.layers[j].join(rel_dir).join(name);
                    match lstat_opt(&below)? {
                        None => continue,
                        Some(m) if m.is_dir() => {
                            layers.push(j);
                            if is_opaque(&below)? {
                                break;
                            }
                        }
                        Some(_) => break,
                    }
                }
            }
            return Ok(Some(Node { meta, host, layers }));
        }
        Ok(None)
    }

    /// Look up a normalised relative path (`""` is the root).
    pub fn lookup(&self, rel: &Path) -> Result<Option<Node>> {
        let Some(mut node) = self.root_node()? else {
            return Ok(None);
        };
        let mut dir = PathBuf::new();
        for comp in rel.iter() {
            if !node.meta.is_dir() {
                return Ok(None);
            }
            match self.lookup_child(&node, &dir, comp)? {
                Some(n) => node = n,
                None => return Ok(None),
            }
            dir.push(comp);
        }
        Ok(Some(node))
    }

    /// The path of `node` relative to its layer root.
    fn rel_of<'a>(&self, node: &'a Node) -> &'a Path {
        node.layers
            .first()
            .and_then(|&i| node.host.strip_prefix(&self.layers[i]).ok())
            .unwrap_or(Path::new(""))
    }
}

impl View for LayerStack {
    fn root(&self) -> Result<Node> {
        self.root_node()?.ok_or_else(|| Error::Metadata {
            path: PathBuf::new(),
            reason: "empty layer stack".into(),
        })
    }

    fn children(&self, dir: &Node) -> Result<BTreeMap<OsString, Node>> {
        let rel = self.rel_of(dir).to_path_buf();
        let mut seen: BTreeMap<OsString, Option<Node>> = BTreeMap::new();
        for &i in &dir.layers {
            let host_dir = self.layers[i].join(&rel);
            for name in read_dir_sorted(&host_dir)? {
                if seen.contains_key(&name) {
                    continue;
                }
                let node = self.lookup_child(dir, &rel, &name)?;
                seen.insert(name, node);
            }
        }
        Ok(seen
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }
}
