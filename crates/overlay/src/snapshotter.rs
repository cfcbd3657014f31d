//! The snapshotter: containerd's API over Docker's overlay2 layout, with two drivers.

use std::collections::HashSet;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::changes::{Change, Changeset};
use crate::copy::{copy_tree, CopyMode};
use crate::diff::{diff_upper, UpperDiff};
use crate::error::{Error, IoContext, Result};
use crate::layout::{
    format_lower, id_for, new_link_id, parse_lower, random_hex, valid_link, write_atomic, Folder,
    MAX_LOWERS,
};
use crate::mount::{overlay_options, unmount, Mount};
use crate::probe::{forget_kept, probe_overlay_kept, OverlayCaps};
use crate::tar_write::{write_tar, TarOptions, TarStats};
use crate::tree::LayerStack;
use crate::unpack::{Applier, Target, UnpackOptions, UnpackStats};

/// A storage driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// overlayfs: layers stacked by the kernel, upper dirs read as diffs.
    Overlay,
    /// A full copy per layer: works on any filesystem and without privileges, slower.
    Vfs,
}

impl Driver {
    /// The driver's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Vfs => "vfs",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Driver, String> {
        match s {
            "overlay" | "overlay2" => Ok(Driver::Overlay),
            "vfs" => Ok(Driver::Vfs),
            other => Err(format!(
                "unknown storage driver `{other}` (expected `overlay` or `vfs`)"
            )),
        }
    }
}

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable (from `prepare`).
    Active,
    /// Read-only view (from `view`).
    View,
    /// Immutable layer (from `commit` or unpacking).
    Committed,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "a view",
            Kind::Committed => "committed",
        }
    }
}

/// The metadata record of one snapshot (`snapshot.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The key (active, view) or name (committed).
    pub key: String,
    /// What it is.
    pub kind: Kind,
    /// The committed snapshot it sits on.
    pub parent: Option<String>,
    /// Seconds since the epoch when it was made.
    pub created: i64,
    /// Its folder name under the driver's home.
    #[serde(skip)]
    pub id: String,
}

/// Disk use of one snapshot's own files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of file data (hard links counted once).
    pub size: u64,
    /// Entries.
    pub inodes: u64,
}

/// The data behind `docker inspect`'s `GraphDriver` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphDriverData {
    /// `overlay2` or `vfs`, as Docker names them.
    pub name: &'static str,
    /// Colon-separated lower `diff/` folders, nearest first (overlay with a parent).
    pub lower_dir: Option<String>,
    /// The snapshot's own `diff/`.
    pub upper_dir: PathBuf,
    /// Where it is (or would be) mounted.
    pub merged_dir: PathBuf,
    /// overlay's work dir.
    pub work_dir: Option<PathBuf>,
}

/// One layer to unpack in [`Snapshotter::unpack_chain`].
pub struct LayerSource {
    /// The committed name to give it (the builder passes chainID hex).
    pub name: String,
    /// The uncompressed layer tar.
    pub reader: Box<dyn Read + Send>,
}

/// The snapshotter of one store.
///
/// Every process that opens it leaves a mark in `<home>/.users/` and removes it when it is
/// done and left nothing behind (no mount of its own, no folder it failed to remove). A mark
/// found by the next process to have the store to itself means a process died (or gave up)
/// mid-way: only then does that process run crash recovery, which reads every snapshot.
#[derive(Debug)]
pub struct Snapshotter {
    home: PathBuf,
    driver: Driver,
    caps: OverlayCaps,
    /// This process's mark in `.users/` (`None`: it could not be made, so recovery runs next).
    mark: Option<PathBuf>,
    /// Mount points this process mounted and has not unmounted (kept mounts excepted).
    mounted: Mutex<HashSet<PathBuf>>,
    /// Something was left behind that crash recovery should clean up.
    dirty: AtomicBool,
    _lock: std::fs::File,
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        let clean = !self.dirty.load(Ordering::Relaxed)
            && !std::thread::panicking()
            && self.mounted.lock().map(|m| m.is_empty()).unwrap_or(false);
        if clean {
            if let Some(mark) = &self.mark {
                let _ = std::fs::remove_file(mark);
            }
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    match rustix::fs::mkdir(path, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(Error::io("mkdir", path, e)),
    }
    rustix::fs::chmod(path, Mode::from_raw_mode(mode)).ctx("chmod", path)
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn syncfs(path: &Path) -> Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open", path)?;
    rustix::fs::syncfs(&fd).ctx("syncfs", path)
}

impl Snapshotter {
    /// Open (creating if needed) the snapshotter of the store at `store_root`.
    ///
    /// `driver: None` picks `overlay` when a probe mount works here, `vfs` otherwise. When no
    /// other process uses the store, leftovers of a crashed one are cleaned up: stale mounts,
    /// half-made folders, `work/` contents, dangling or missing `l/` links.
    pub fn open(store_root: &Path, driver: Option<Driver>) -> Result<Snapshotter> {
        let s = store_root.as_os_str().to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(Error::DriverUnavailable {
                driver: "overlay",
                reason: format!("the store path {s} contains `:` or `,`, which overlay mount options cannot carry"),
            });
        }
        std::fs::create_dir_all(store_root).ctx("create", store_root)?;
        let store_root = store_root.canonicalize().ctx("resolve", store_root)?;
        let overlay_home = store_root.join("overlay");
        let (driver, caps) = match driver {
            Some(Driver::Vfs) => (Driver::Vfs, OverlayCaps::default()),
            Some(Driver::Overlay) => {
                mkdir_mode(&overlay_home, 0o710)?;
                let caps = probe_overlay_kept(&overlay_home).map_err(|reason| {
                    Error::DriverUnavailable {
                        driver: "overlay",
                        reason,
                    }
                })?;
                (Driver::Overlay, caps)
            }
            None => {
                mkdir_mode(&overlay_home, 0o710)?;
                match probe_overlay_kept(&overlay_home) {
                    Ok(caps) => (Driver::Overlay, caps),
                    Err(_) => (Driver::Vfs, OverlayCaps::default()),
                }
            }
        };
        let home = store_root.join(driver.name());
        if driver == Driver::Vfs {
            mkdir_mode(&home, 0o710)?;
        }
        mkdir_mode(&home.join("l"), 0o700)?;
        mkdir_mode(&home.join(".trash"), 0o700)?;
        mkdir_mode(&home.join(".empty"), 0o700)?;
        let lock_path = home.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx("open", &lock_path)?;
        let mut snap = Snapshotter {
            home,
            driver,
            caps,
            mark: None,
            mounted: Mutex::new(HashSet::new()),
            dirty: AtomicBool::new(false),
            _lock: lock,
        };
        let users = snap.home.join(".users");
        if rustix::fs::flock(snap._lock.as_fd(), FlockOperation::NonBlockingLockExclusive).is_ok() {
            // Alone with the store: recover if a process before us did not end cleanly (or
            // the store predates the marks: no `.users/` yet); else only empty the trash.
            let left: Vec<PathBuf> = match std::fs::read_dir(&users) {
                Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    mkdir_mode(&users, 0o700)?;
                    vec![users.clone()]
                }
                Err(e) => return Err(Error::io("read dir", &users, e)),
            };
            if left.is_empty() {
                snap.empty_trash()?;
            } else {
                snap.recover()?;
                for m in left.iter().filter(|m| **m != users) {
                    let _ = std::fs::remove_file(m);
                }
            }
        }
        rustix::fs::flock(snap._lock.as_fd(), FlockOperation::LockShared)
            .ctx("lock", &lock_path)?;
        // Best effort: without a mark (a full disk), a crash of this process goes unnoticed
        // and what it leaves behind stays until a later recovery.
        let mark = users.join(format!("{}-{}", std::process::id(), random_hex()?));
        if std::fs::File::create(&mark).is_ok() {
            snap.mark = Some(mark);
        }
        Ok(snap)
    }

    /// Removes a folder this process made aside; when that fails, recovery cleans it later.
    fn discard(&self, path: &Path) {
        if remove_tree(path).is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// The driver in use.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// `<store root>/overlay` or `<store root>/vfs`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The overlay mount options chosen for this kernel (empty for vfs).
    pub fn mount_features(&self) -> &[String] {
        &self.caps.features
    }

    fn folder(&self, id: &str) -> Folder {
        Folder {
            dir: self.home.join(id),
        }
    }

    fn read_info(&self, id: &str) -> Result<Option<Info>> {
        let f = self.folder(id);
        let bytes = match std::fs::read(f.record()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", f.record(), e)),
        };
        let mut info: Info = serde_json::from_slice(&bytes).map_err(|e| Error::Metadata {
            path: f.record(),
            reason: e.to_string(),
        })?;
        info.id = id.to_string();
        Ok(Some(info))
    }

    /// The record of `key`.
    pub fn stat(&self, key: &str) -> Result<Info> {
        let id = id_for(key)?;
        match self.read_info(&id)? {
            Some(i) if i.key == key => Ok(i),
            _ => Err(Error::NotFound { key: key.into() }),
        }
    }

    fn link_of(&self, id: &str) -> Result<String> {
        let f = self.folder(id).link_file();
        let s = std::fs::read_to_string(&f).ctx("read", &f)?;
        let s = s.trim().to_string();
        if !valid_link(&s) {
            return Err(Error::Metadata {
                path: f,
                reason: "bad link name".into(),
            });
        }
        Ok(s)
    }

    fn lowers_of(&self, id: &str) -> Result<Vec<String>> {
        let f = self.folder(id).lower_file();
        match std::fs::read_to_string(&f) {
            Ok(s) => parse_lower(&s, &f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("read", f, e)),
        }
    }

    /// The record of `key`, which `op` needs to be a committed snapshot.
    fn stat_committed(&self, key: &str, op: &'static str) -> Result<Info> {
        let info = self.stat(key)?;
        if info.kind != Kind::Committed {
            return Err(Error::WrongKind {
                key: key.into(),
                op,
                expected: "committed",
                actual: info.kind.word(),
            });
        }
        Ok(info)
    }

    /// Link names of the chain starting at committed `parent` (nearest first).
    fn chain_links(&self, parent: Option<&str>) -> Result<Vec<String>> {
        let Some(p) = parent else {
            return Ok(Vec::new());
        };
        let info = self.stat_committed(p, "being a parent")?;
        let mut links = vec![self.link_of(&info.id)?];
        links.extend(self.lowers_of(&info.id)?);
        Ok(links)
    }

    /// Host `diff/` folders of a chain (via the `l/` links, resolved), nearest first.
    fn chain_dirs(&self, links: &[String]) -> Vec<PathBuf> {
        links.iter().map(|l| self.home.join("l").join(l)).collect()
    }

    fn check_depth(links: &[String]) -> Result<()> {
        if links.len() > MAX_LOWERS {
            return Err(Error::TooManyLayers {
                count: links.len(),
                max: MAX_LOWERS,
            });
        }
        Ok(())
    }

    /// Make a folder aside and rename it into place as `id`.
    fn create(
        &self,
        key: &str,
        kind: Kind,
        parent: Option<&str>,
        fill: impl FnOnce(&Folder) -> Result<()>,
    ) -> Result<Info> {
        let id = id_for(key)?;
        if self.home.join(&id).exists() {
            return Err(Error::AlreadyExists { key: key.into() });
        }
        let links = self.chain_links(parent)?;
        Self::check_depth(&links)?;
        let tmp = Folder {
            dir: self.home.join(format!(".tmp-{}", random_hex()?)),
        };
        let filled = (|| {
            mkdir_mode(&tmp.dir, 0o710)?;
            mkdir_mode(&tmp.diff(), 0o755)?;
            if kind != Kind::Committed {
                mkdir_mode(&tmp.work(), 0o700)?;
                mkdir_mode(&tmp.merged(), 0o700)?;
            }
            fill(&tmp)
        })();
        if let Err(e) = filled {
            self.discard(&tmp.dir);
            return Err(e);
        }
        self.install(&tmp, key, kind, parent, &links)
    }

    /// Write `link`, `lower` and the record into a finished folder aside, rename it into place
    /// and point its short link at it. The folder is removed on failure.
    fn install(
        &self,
        tmp: &Folder,
        key: &str,
        kind: Kind,
        parent: Option<&str>,
        links: &[String],
    ) -> Result<Info> {
        let id = id_for(key)?;
        let result = (|| {
            let link = new_link_id()?;
            write_atomic(&tmp.link_file(), link.as_bytes())?;
            if !links.is_empty() {
                write_atomic(&tmp.lower_file(), format_lower(links).as_bytes())?;
            }
            let info = Info {
                key: key.into(),
                kind,
                parent: parent.map(str::to_string),
                created: now(),
                id: id.clone(),
            };
            let json = serde_json::to_vec(&info).map_err(|e| Error::Metadata {
                path: tmp.record(),
                reason: e.to_string(),
            })?;
            write_atomic(&tmp.record(), &json)?;
            Ok((info, link))
        })();
        let (info, link) = match result {
            Ok(v) => v,
            Err(e) => {
                self.discard(&tmp.dir);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&tmp.dir, self.home.join(&id)) {
            self.discard(&tmp.dir);
            let code = e.raw_os_error();
            if code == Some(rustix::io::Errno::EXIST.raw_os_error())
                || code == Some(rustix::io::Errno::NOTEMPTY.raw_os_error())
            {
                return Err(Error::AlreadyExists { key: key.into() });
            }
            return Err(Error::io("rename", self.home.join(&id), e));
        }
        self.set_link(&link, &id)?;
        Ok(info)
    }

    /// Point `l/<link>` at `../<id>/diff` (atomically replacing an old target).
    fn set_link(&self, link: &str, id: &str) -> Result<()> {
        let l = self.home.join("l").join(link);
        let tmp = self
            .home
            .join("l")
            .join(format!(".{link}.{}", random_hex()?));
        std::os::unix::fs::symlink(format!("../{id}/diff"), &tmp).ctx("symlink", &tmp)?;
        std::fs::rename(&tmp, &l).ctx("rename", &l)
    }

    /// Make a writable snapshot `key` on committed `parent`; returns the mounts to perform.
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let parent_diff = match (self.driver, parent) {
            (Driver::Vfs, Some(p)) => Some(self.folder(&self.stat(p)?.id).diff()),
            _ => None,
        };
        self.create(key, Kind::Active, parent, |f| match &parent_diff {
            Some(src) => copy_tree(src, &f.diff(), CopyMode::Data),
            None => Ok(()),
        })?;
        self.mounts(key)
    }

    /// Make a read-only view `key` of committed `parent`; returns the mounts to perform.
    pub fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, Kind::View, parent, |_| Ok(()))?;
        self.mounts(key)
    }

    /// The mounts of an active snapshot or view.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let info = self.stat(key)?;
        let f = self.folder(&info.id);
        let links = self.lowers_of(&info.id)?;
        let lowers = self.chain_dirs(&links);
        let bind = |src: PathBuf, ro: bool| Mount {
            fs_type: "bind".into(),
            source: src,
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        Ok(match (self.driver, info.kind) {
            (_, Kind::Committed) => vec![bind(f.diff(), true)],
            (Driver::Vfs, Kind::Active) => vec![bind(f.diff(), false)],
            (Driver::Vfs, Kind::View) => match info.parent.as_deref() {
                Some(p) => vec![bind(self.folder(&self.stat(p)?.id).diff(), true)],
                None => vec![bind(f.diff(), true)],
            },
            (Driver::Overlay, Kind::Active) if lowers.is_empty() => vec![bind(f.diff(), false)],
            (Driver::Overlay, Kind::Active) => vec![Mount {
                fs_type: "overlay".into(),
                source: "overlay".into(),
                options: {
                    let mut o = vec!["rw".to_string()];
                    o.extend(overlay_options(
                        Some((&f.diff(), &f.work())),
                        &self.caps.features,
                        &lowers,
                    ));
                    o
                },
            }],
            (Driver::Overlay, Kind::View) if lowers.len() <= 1 => {
                vec![bind(
                    lowers.first().cloned().unwrap_or_else(|| f.diff()),
                    true,
                )]
            }
            (Driver::Overlay, Kind::View) => vec![Mount {
                fs_type: "overlay".into(),
                source: "overlay".into(),
                options: {
                    let mut o = vec!["ro".to_string()];
                    o.extend(overlay_options(None, &self.caps.features, &lowers));
                    o
                },
            }],
        })
    }

    /// Mount `key` at its `merged/` folder and return that path.
    pub fn mount(&self, key: &str) -> Result<PathBuf> {
        let info = self.stat(key)?;
        let target = self.folder(&info.id).merged();
        mkdir_mode(&target, 0o700)?;
        for m in self.mounts(key)? {
            if let Err(e) = m.mount(&target) {
                if self.driver == Driver::Overlay {
                    // Probe again next time: the kept probe result may be what is wrong.
                    forget_kept(&self.home);
                }
                return Err(e);
            }
            if let Ok(mut mounted) = self.mounted.lock() {
                mounted.insert(target.clone());
            }
        }
        Ok(target)
    }

    /// Unmount `key`'s `merged/` folder if mounted (detached when busy); a kept mount (see
    /// [`Snapshotter::mount_kept`]) stops being kept.
    pub fn unmount(&self, key: &str) -> Result<()> {
        let info = self.stat(key)?;
        let folder = self.folder(&info.id);
        let target = folder.merged();
        while crate::mount::is_mounted(&target)? {
            if let Err(e) = unmount(&target) {
                self.dirty.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        if let Ok(mut mounted) = self.mounted.lock() {
            mounted.remove(&target);
        }
        match std::fs::remove_file(folder.kept_mark()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", folder.kept_mark(), e)),
        }
    }

    /// Where `key` is mounted (its `merged/` folder), if it is.
    pub fn mounted_at(&self, key: &str) -> Result<Option<PathBuf>> {
        let info = self.stat(key)?;
        let target = self.folder(&info.id).merged();
        Ok(crate::mount::is_mounted(&target)?.then_some(target))
    }

    /// Mount `key` at its `merged/` folder unless it is mounted already, and keep it mounted
    /// after this process ends: crash recovery in a later process leaves a kept mount alone
    /// (it unmounts every other one). [`Snapshotter::unmount`] ends it.
    pub fn mount_kept(&self, key: &str) -> Result<PathBuf> {
        let info = self.stat(key)?;
        let folder = self.folder(&info.id);
        let path = match self.mounted_at(key)? {
            Some(p) => p,
            None => self.mount(key)?,
        };
        write_atomic(&folder.kept_mark(), b"")?;
        // Kept on purpose: not something this process left behind.
        if let Ok(mut mounted) = self.mounted.lock() {
            mounted.remove(&path);
        }
        Ok(path)
    }

    /// Whether `key` is mounted and kept so (see [`Snapshotter::mount_kept`]).
    pub fn is_kept(&self, key: &str) -> Result<bool> {
        let info = self.stat(key)?;
        let folder = self.folder(&info.id);
        Ok(folder.kept_mark().exists() && crate::mount::is_mounted(&folder.merged())?)
    }

    /// Turn active `key` into the committed snapshot `name` (unmounting it first).
    pub fn commit(&self, key: &str, name: &str) -> Result<Info> {
        let info = self.stat(key)?;
        if info.kind != Kind::Active {
            return Err(Error::WrongKind {
                key: key.into(),
                op: "commit",
                expected: "active",
                actual: info.kind.word(),
            });
        }
        let new_id = id_for(name)?;
        if self.home.join(&new_id).exists() {
            return Err(Error::AlreadyExists { key: name.into() });
        }
        self.unmount(key)?;
        let f = self.folder(&info.id);
        syncfs(&f.diff())?;
        remove_tree(&f.work())?;
        let _ = std::fs::remove_dir(f.merged());
        let committed = Info {
            key: name.into(),
            kind: Kind::Committed,
            parent: info.parent.clone(),
            created: now(),
            id: new_id.clone(),
        };
        write_atomic(
            &f.record(),
            &serde_json::to_vec(&committed).unwrap_or_default(),
        )?;
        let link = self.link_of(&info.id)?;
        std::fs::rename(&f.dir, self.home.join(&new_id)).ctx("rename", self.home.join(&new_id))?;
        self.set_link(&link, &new_id)?;
        Ok(committed)
    }

    /// Remove a snapshot (a committed one only when nothing is built on it). Its folder is
    /// moved aside at once and deleted by [`Snapshotter::empty_trash`] (or the next open):
    /// on this machine creating files right after a big delete is slow (reference notes §11).
    pub fn remove(&self, key: &str) -> Result<()> {
        let info = self.stat(key)?;
        if info.kind == Kind::Committed {
            let children: Vec<Info> = self
                .walk()?
                .into_iter()
                .filter(|i| i.parent.as_deref() == Some(key))
                .collect();
            if let Some(first) = children.first() {
                return Err(Error::HasChildren {
                    key: key.into(),
                    count: children.len(),
                    first: first.key.clone(),
                });
            }
        } else {
            self.unmount(key)?;
        }
        let link = self.link_of(&info.id).ok();
        let trash = self
            .home
            .join(".trash")
            .join(format!("{}-{}", info.id, random_hex()?));
        std::fs::rename(self.home.join(&info.id), &trash).ctx("rename", &trash)?;
        if let Some(l) = link {
            let _ = std::fs::remove_file(self.home.join("l").join(l));
        }
        Ok(())
    }

    /// Delete folders of removed snapshots; returns how many.
    pub fn empty_trash(&self) -> Result<usize> {
        let trash = self.home.join(".trash");
        let mut n = 0;
        for e in std::fs::read_dir(&trash).ctx("read dir", &trash)? {
            let e = e.ctx("read dir", &trash)?;
            remove_tree(&e.path())?;
            n += 1;
        }
        Ok(n)
    }

    /// Every snapshot, sorted by key.
    pub fn walk(&self) -> Result<Vec<Info>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.home).ctx("read dir", &self.home)? {
            let e = e.ctx("read dir", &self.home)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "l" {
                continue;
            }
            if let Some(i) = self.read_info(&name)? {
                out.push(i);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Disk use of `key`'s own files.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let info = self.stat(key)?;
        let mut u = Usage::default();
        let mut seen = HashSet::new();
        fn walk(dir: &Path, u: &mut Usage, seen: &mut HashSet<(u64, u64)>) -> Result<()> {
            for name in crate::tree::read_dir_sorted(dir)? {
                let p = dir.join(&name);
                let m = crate::meta::Meta::lstat(&p)?;
                if m.nlink > 1 && !m.is_dir() && !seen.insert((m.dev, m.ino)) {
                    continue;
                }
                u.inodes += 1;
                if m.kind == crate::meta::Kind::File {
                    u.size += m.size;
                }
                if m.is_dir() {
                    walk(&p, u, seen)?;
                }
            }
            Ok(())
        }
        walk(&self.folder(&info.id).diff(), &mut u, &mut seen)?;
        Ok(u)
    }

    /// `docker inspect`'s `GraphDriver.Data` for `key`.
    pub fn graph_driver_data(&self, key: &str) -> Result<GraphDriverData> {
        let info = self.stat(key)?;
        let f = self.folder(&info.id);
        match self.driver {
            Driver::Vfs => Ok(GraphDriverData {
                name: "vfs",
                lower_dir: None,
                upper_dir: f.diff(),
                merged_dir: f.diff(),
                work_dir: None,
            }),
            Driver::Overlay => {
                let links = self.lowers_of(&info.id)?;
                let mut lower = Vec::new();
                for l in &links {
                    let target = std::fs::read_link(self.home.join("l").join(l))
                        .ctx("readlink", self.home.join("l").join(l))?;
                    lower.push(
                        self.home
                            .join("l")
                            .join(target)
                            .components()
                            .collect::<PathBuf>(),
                    );
                }
                let lower: Vec<String> = lower
                    .iter()
                    .map(|p| normalize_dots(p).display().to_string())
                    .collect();
                Ok(GraphDriverData {
                    name: "overlay2",
                    lower_dir: (!lower.is_empty()).then(|| lower.join(":")),
                    upper_dir: f.diff(),
                    merged_dir: f.merged(),
                    work_dir: Some(f.work()),
                })
            }
        }
    }

    /// The folders whose merge is committed snapshot `key`'s tree, top first: its own
    /// `diff/` and (overlay) the `diff/` folders of the layers below it; with vfs the one
    /// full folder. Open them with [`crate::layers::Layers::open`] to find which folder
    /// holds a path. Committed folders are never changed in place.
    pub fn layer_dirs(&self, key: &str) -> Result<Vec<PathBuf>> {
        let info = self.stat_committed(key, "listing layer folders")?;
        let mut dirs = vec![self.folder(&info.id).diff()];
        if self.driver == Driver::Overlay {
            dirs.extend(self.chain_dirs(&self.lowers_of(&info.id)?));
        }
        Ok(dirs)
    }

    fn lower_stack(&self, id: &str) -> Result<LayerStack> {
        let links = self.lowers_of(id)?;
        Ok(LayerStack::new(self.chain_dirs(&links)))
    }

    /// The changes of active `key` against its parent.
    pub fn diff(&self, key: &str) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        self.with_changes(key, |set| {
            out = set.changes.clone();
            Ok(())
        })?;
        Ok(out)
    }

    /// Write active `key`'s changes as an uncompressed layer tar into `out`.
    pub fn write_layer<W: Write>(
        &self,
        key: &str,
        out: &mut W,
        opts: &TarOptions,
    ) -> Result<TarStats> {
        let mut stats = TarStats::default();
        self.with_changes(key, |set| {
            stats = write_tar(set, out, opts)?;
            Ok(())
        })?;
        Ok(stats)
    }

    fn with_changes(&self, key: &str, f: impl FnOnce(&Changeset) -> Result<()>) -> Result<()> {
        let info = self.stat(key)?;
        if info.kind != Kind::Active {
            return Err(Error::WrongKind {
                key: key.into(),
                op: "diff",
                expected: "active",
                actual: info.kind.word(),
            });
        }
        let folder = self.folder(&info.id);
        let upper = folder.diff();
        match self.driver {
            Driver::Vfs => {
                let old = match info.parent.as_deref() {
                    Some(p) => self.folder(&self.stat(p)?.id).diff(),
                    None => self.home.join(".empty"),
                };
                f(&crate::diff::diff_dirs(&old, &upper)?)
            }
            Driver::Overlay => {
                let lowers = self.lower_stack(&info.id)?;
                match diff_upper(&upper, &lowers)? {
                    UpperDiff::Done(changes) if self.caps.native_diff => {
                        f(&Changeset::new(upper, changes))
                    }
                    _ => self.naive_diff(&info.id, &lowers, f),
                }
            }
        }
    }

    /// The fallback: compare mounted views of the lowers and of lowers + upper, so the kernel
    /// interprets redirects and metacopy.
    fn naive_diff(
        &self,
        id: &str,
        lowers: &LayerStack,
        f: impl FnOnce(&Changeset) -> Result<()>,
    ) -> Result<()> {
        let tmp = self.home.join(format!(".tmp-naive-{}", random_hex()?));
        let (low_mnt, new_mnt) = (tmp.join("lower"), tmp.join("merged"));
        mkdir_mode(&tmp, 0o700)?;
        mkdir_mode(&low_mnt, 0o700)?;
        mkdir_mode(&new_mnt, 0o700)?;
        let upper = self.folder(id).diff();
        let mut features: Vec<String> = self
            .caps
            .features
            .iter()
            .filter(|o| !o.starts_with("redirect_dir") && !o.starts_with("metacopy"))
            .cloned()
            .collect();
        if !self.caps.userxattr {
            features.push("redirect_dir=follow".into());
            features.push("metacopy=on".into());
        }
        let view = |dirs: Vec<PathBuf>| -> Mount {
            if dirs.len() == 1 {
                Mount {
                    fs_type: "bind".into(),
                    source: dirs[0].clone(),
                    options: vec!["ro".into(), "rbind".into()],
                }
            } else {
                let mut o = vec!["ro".to_string()];
                o.extend(overlay_options(None, &features, &dirs));
                Mount {
                    fs_type: "overlay".into(),
                    source: "overlay".into(),
                    options: o,
                }
            }
        };
        let mut all = vec![upper];
        all.extend(lowers.layers.iter().cloned());
        let result = (|| {
            let old_root = if lowers.layers.is_empty() {
                self.home.join(".empty")
            } else {
                view(lowers.layers.clone()).mount(&low_mnt)?;
                low_mnt.clone()
            };
            view(all).mount(&new_mnt)?;
            let set = crate::diff::diff_dirs(&old_root, &new_mnt)?;
            f(&set)
        })();
        for m in [&new_mnt, &low_mnt] {
            while crate::mount::is_mounted(m).unwrap_or(false) {
                if unmount(m).is_err() {
                    break;
                }
            }
        }
        self.discard(&tmp);
        result
    }

    /// Unpack an uncompressed layer tar as the committed snapshot `name` on `parent`,
    /// atomically: built aside, renamed into place when whole.
    pub fn unpack(
        &self,
        name: &str,
        parent: Option<&str>,
        reader: impl Read,
        opts: &UnpackOptions,
    ) -> Result<UnpackStats> {
        let mut stats = UnpackStats::default();
        match self.driver {
            Driver::Vfs => {
                let parent_diff = match parent {
                    Some(p) => Some(self.folder(&self.stat(p)?.id).diff()),
                    None => None,
                };
                self.create(name, Kind::Committed, parent, |f| {
                    if let Some(src) = &parent_diff {
                        copy_tree(src, &f.diff(), CopyMode::Link)?;
                    }
                    let mut a = Applier::new(&f.diff(), Target::Full, opts.clone())?;
                    a.run(reader)?;
                    stats = a.finish_full()?;
                    syncfs(&f.diff())
                })?;
            }
            Driver::Overlay => {
                let lowers = LayerStack::new(self.chain_dirs(&self.chain_links(parent)?));
                let xattr = self.caps.opaque_xattr;
                self.create(name, Kind::Committed, parent, |f| {
                    let mut a = Applier::new(
                        &f.diff(),
                        Target::Overlay {
                            opaque_xattr: xattr,
                        },
                        opts.clone(),
                    )?;
                    a.run(reader)?;
                    stats = a.finish_overlay(&lowers)?;
                    syncfs(&f.diff())
                })?;
            }
        }
        Ok(stats)
    }

    /// Unpack a chain of layers (bottom first) on `base`, skipping those already present.
    /// With overlay, the layers are read and written in parallel on the current rayon pool;
    /// the small part that needs the lower layers (whiteouts, attributes of implied parent
    /// folders) then runs in chain order, and each layer is renamed into place when whole.
    pub fn unpack_chain(
        &self,
        base: Option<&str>,
        layers: Vec<LayerSource>,
        opts: &UnpackOptions,
    ) -> Result<Vec<UnpackStats>> {
        let mut todo = Vec::new();
        let mut first_parent = base.map(str::to_string);
        for l in layers {
            if todo.is_empty() && self.stat(&l.name).is_ok() {
                first_parent = Some(l.name.clone());
                continue;
            }
            todo.push(l);
        }
        if self.driver == Driver::Vfs || todo.len() < 2 {
            let mut out = Vec::new();
            let mut p = first_parent;
            for l in todo {
                out.push(self.unpack(&l.name, p.as_deref(), l.reader, opts)?);
                p = Some(l.name);
            }
            return Ok(out);
        }
        let xattr = self.caps.opaque_xattr;
        let base_links = self.chain_links(first_parent.as_deref())?;
        Self::check_depth(&base_links)?;
        if base_links.len() + todo.len() - 1 > MAX_LOWERS {
            return Err(Error::TooManyLayers {
                count: base_links.len() + todo.len() - 1,
                max: MAX_LOWERS,
            });
        }
        let names: Vec<String> = todo.iter().map(|l| l.name.clone()).collect();
        // Phase one, in parallel: each layer into its own folder aside.
        let staged: Vec<Result<(PathBuf, Applier)>> = todo
            .into_par_iter()
            .map(|l| {
                let tmp = self.home.join(format!(".tmp-{}", random_hex()?));
                mkdir_mode(&tmp, 0o710)?;
                let diff = tmp.join("diff");
                mkdir_mode(&diff, 0o755)?;
                let mut a = Applier::new(
                    &diff,
                    Target::Overlay {
                        opaque_xattr: xattr,
                    },
                    opts.clone(),
                )?;
                let r = a.run(l.reader);
                match r {
                    Ok(()) => Ok((tmp, a)),
                    Err(e) => {
                        self.discard(&tmp);
                        Err(e)
                    }
                }
            })
            .collect();
        let mut staged_ok = Vec::new();
        let mut first_err = None;
        for s in staged {
            match s {
                Ok(v) => staged_ok.push(v),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            for (tmp, _) in &staged_ok {
                self.discard(tmp);
            }
            return Err(e);
        }
        // Phase two, in chain order: each layer's lowers are in place when it finishes.
        let mut out = Vec::new();
        let mut parent = first_parent;
        let mut rest = names.into_iter().zip(staged_ok).peekable();
        while let Some((name, (tmp, applier))) = rest.next() {
            let done = (|| {
                let links = self.chain_links(parent.as_deref())?;
                let lowers = LayerStack::new(self.chain_dirs(&links));
                let stats = applier.finish_overlay(&lowers)?;
                syncfs(&tmp.join("diff"))?;
                match self.install(
                    &Folder { dir: tmp.clone() },
                    &name,
                    Kind::Committed,
                    parent.as_deref(),
                    &links,
                ) {
                    Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(stats),
                    Err(e) => Err(e),
                }
            })();
            match done {
                Ok(stats) => out.push(stats),
                Err(e) => {
                    self.discard(&tmp);
                    for (_, (t, _)) in rest {
                        self.discard(&t);
                    }
                    return Err(e);
                }
            }
            parent = Some(name);
        }
        Ok(out)
    }

    /// Crash recovery, run when no other process holds the store.
    fn recover(&self) -> Result<()> {
        let mut kept = HashSet::new();
        for m in crate::mount::mounts_under(&self.home)? {
            let mark = m.parent().map(|dir| {
                Folder {
                    dir: dir.to_path_buf(),
                }
                .kept_mark()
            });
            if m.file_name() == Some("merged".as_ref()) && mark.is_some_and(|f| f.exists()) {
                kept.insert(m);
                continue;
            }
            let _ = unmount(&m);
        }
        let trash = self.home.join(".trash");
        for e in std::fs::read_dir(&self.home).ctx("read dir", &self.home)? {
            let e = e.ctx("read dir", &self.home)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".probe-") {
                remove_tree(&e.path())?;
                continue;
            }
            if name.starts_with('.') || name == "l" {
                continue;
            }
            match self.read_info(&name) {
                Ok(Some(info)) => {
                    let want = id_for(&info.key)?;
                    if want != name {
                        // A commit interrupted between record and rename.
                        let dst = self.home.join(&want);
                        if dst.exists() {
                            std::fs::rename(
                                e.path(),
                                trash.join(format!("{name}-{}", random_hex()?)),
                            )
                            .ctx("rename", e.path())?;
                            continue;
                        }
                        std::fs::rename(e.path(), &dst).ctx("rename", &dst)?;
                    }
                    let f = self.folder(&want);
                    if kept.contains(&f.merged()) {
                        // Mounted on purpose (`strata mount`): its work dir is in use.
                    } else if info.kind != Kind::Committed {
                        let _ = std::fs::remove_file(f.kept_mark());
                        remove_tree(&f.work())?;
                        mkdir_mode(&f.work(), 0o700)?;
                        mkdir_mode(&f.merged(), 0o700)?;
                    }
                    if let Ok(link) = self.link_of(&want) {
                        let l = self.home.join("l").join(&link);
                        let good = std::fs::read_link(&l)
                            .map(|t| t == Path::new(&format!("../{want}/diff")))
                            .unwrap_or(false);
                        if !good {
                            self.set_link(&link, &want)?;
                        }
                    }
                }
                _ => {
                    std::fs::rename(e.path(), trash.join(format!("{name}-{}", random_hex()?)))
                        .ctx("rename", e.path())?;
                }
            }
        }
        // Dangling short links.
        let ldir = self.home.join("l");
        for e in std::fs::read_dir(&ldir).ctx("read dir", &ldir)? {
            let e = e.ctx("read dir", &ldir)?;
            if !e.path().exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        self.empty_trash()?;
        Ok(())
    }
}

fn normalize_dots(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl Snapshotter {
    /// Compare two arbitrary folders (for `strata diff` of trees): the same changeset type as
    /// snapshot diffs.
    pub fn diff_trees(old: &Path, new: &Path) -> Result<Changeset> {
        crate::diff::diff_dirs(old, new)
    }
}
