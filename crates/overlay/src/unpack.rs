//! Applying untrusted layer tars: into an empty overlay `diff/` (whiteouts become overlay
//! whiteouts and opaque xattrs) or onto a full tree (vfs: deletions are applied).
//!
//! Safety rules (reference notes §8.2), all enforced here:
//! - names are cleaned lexically; anything climbing above the root is refused;
//! - every operation is relative to a directory descriptor reached from the root one component
//!   at a time with `O_NOFOLLOW`; a symlink or file met where a directory is needed is refused
//!   when this layer made it (the "replace a dir by a symlink, then write through it" attack),
//!   and replaced by a directory when a lower layer has it (as overlayfs itself would show it);
//! - files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` after removing what was there, never
//!   opened through an existing name; hardlinks may only point at entries of this layer;
//! - `trusted.*` and `user.overlay.*` xattrs are refused (they would forge overlay state);
//! - device nodes need `CAP_MKNOD`; a 0/0 character device (overlay's whiteout) is refused;
//! - setuid/setgid bits are kept exactly where the tar says, never on devices.
//!
//! The `tar` crate's `Archive::unpack`/`unpack_in` are deliberately not used (RUSTSEC-2018-0002,
//! RUSTSEC-2021-0080, GHSA-j4xf-2g29-59ph).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dev, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::in_root::{normalize, split_parent, Root};
use crate::meta::{carried_xattr, carried_xattrs};
use crate::tar_read::{EntryHead, Limits, TarKind, TarReader};
use crate::tree::{LayerStack, View};

/// Options for unpacking a layer.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Caps on entries, bytes and header sizes.
    pub limits: Limits,
    /// When not root, ownership that cannot be set becomes a warning instead of an error.
    pub ignore_chown_errors: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            limits: Limits::default(),
            ignore_chown_errors: !rustix::process::geteuid().is_root(),
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries processed.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Things skipped that the caller may want to report (unsupported xattrs, ownership that
    /// could not be set when unprivileged).
    pub warnings: Vec<String>,
}

/// Where entries go.
pub(crate) enum Target {
    /// An overlay layer folder; whiteouts become 0/0 devices, opaque markers the given xattr.
    Overlay { opaque_xattr: &'static str },
    /// A full tree (vfs): whiteouts delete.
    Full,
}

enum Deferred {
    Whiteout(PathBuf),
    Opaque(PathBuf),
}

/// One layer being applied. For overlay targets this is phase one (independent of the lower
/// layers, so many layers can run in parallel); [`Applier::finish_overlay`] is phase two.
pub(crate) struct Applier {
    root: Root,
    target: Target,
    opts: UnpackOptions,
    explicit: HashSet<PathBuf>,
    touched: HashSet<PathBuf>,
    dir_times: HashMap<PathBuf, i64>,
    implied: Vec<(PathBuf, bool)>,
    deferred: Vec<(u64, String, Deferred)>,
    whiteouted: HashSet<PathBuf>,
    opaqued: HashSet<PathBuf>,
    pub stats: UnpackStats,
}

/// Apply a layer tar onto the full tree at `dir` (deletions included), as the vfs driver and
/// `ADD` of a local archive need. Nothing is written outside `dir`.
pub fn apply_to_tree(reader: impl Read, dir: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let mut a = Applier::new(dir, Target::Full, opts.clone())?;
    a.run(reader)?;
    a.finish_full()
}

fn ts(secs: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn kind_word(st: &rustix::fs::Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => "symlink",
        FileType::Directory => "directory",
        FileType::RegularFile => "file",
        _ => "special file",
    }
}

/// `rm -rf` of `name` inside `dir`, never following a symlink.
pub(crate) fn remove_all_at(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_names(&fd)? {
        remove_all_at(&fd, &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

fn list_names(fd: &OwnedFd) -> rustix::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

impl Applier {
    pub fn new(dir: &Path, target: Target, opts: UnpackOptions) -> Result<Applier> {
        Ok(Applier {
            root: Root::open(dir)?,
            target,
            opts,
            explicit: HashSet::new(),
            touched: HashSet::new(),
            dir_times: HashMap::new(),
            implied: Vec::new(),
            deferred: Vec::new(),
            whiteouted: HashSet::new(),
            opaqued: HashSet::new(),
            stats: UnpackStats::default(),
        })
    }

    fn overlay(&self) -> bool {
        matches!(self.target, Target::Overlay { .. })
    }

    fn io(&self, head: &EntryHead, what: &str, e: Errno) -> Error {
        Error::Entry {
            index: head.index,
            entry: head.shown(),
            reason: format!("{what}: {}", std::io::Error::from(e)),
        }
    }

    fn refuse(head: &EntryHead, reason: impl Into<String>) -> Error {
        Error::Entry {
            index: head.index,
            entry: head.shown(),
            reason: reason.into(),
        }
    }

    fn dup_root(&self, head: &EntryHead) -> Result<OwnedFd> {
        rustix::io::fcntl_dupfd_cloexec(self.root.fd(), 0).map_err(|e| self.io(head, "dup", e))
    }

    fn is_hidden(&self, p: &Path) -> bool {
        p.ancestors().any(|a| self.whiteouted.contains(a))
            || p.ancestors().skip(1).any(|a| self.opaqued.contains(a))
    }

    /// Remember a directory's mtime before this layer changes something inside it.
    fn touch(&mut self, rel: &Path, fd: &OwnedFd) {
        if rel.as_os_str().is_empty() || self.dir_times.contains_key(rel) {
            return;
        }
        if let Ok(st) = rustix::fs::fstat(fd) {
            self.dir_times.insert(rel.to_path_buf(), st.st_mtime);
        }
    }

    /// Walk to directory `dir` (relative, normalised), one component at a time, never following
    /// a symlink. With `create`, missing or lower-layer non-directories become directories.
    fn dir_fd(&mut self, head: &EntryHead, dir: &Path, create: bool) -> Result<Option<OwnedFd>> {
        let mut cur = self.dup_root(head)?;
        let mut prefix = PathBuf::new();
        for comp in dir.iter() {
            let parent_rel = prefix.clone();
            prefix.push(comp);
            match rustix::fs::statat(&cur, comp, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                Ok(st) => {
                    if self.explicit.contains(&prefix) {
                        return Err(Self::refuse(
                            head,
                            format!(
                                "`{}` is a {} made earlier in this layer; entries may not be written through it",
                                prefix.display(),
                                kind_word(&st)
                            ),
                        ));
                    }
                    if !create {
                        return Ok(None);
                    }
                    self.touch(&parent_rel, &cur);
                    remove_all_at(&cur, comp).map_err(|e| self.io(head, "remove", e))?;
                    self.make_implied(head, &cur, comp, &prefix)?;
                }
                Err(Errno::NOENT) => {
                    if !create {
                        return Ok(None);
                    }
                    self.touch(&parent_rel, &cur);
                    self.make_implied(head, &cur, comp, &prefix)?;
                }
                Err(e) => return Err(self.io(head, "lstat", e)),
            }
            cur = rustix::fs::openat(
                &cur,
                comp,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.io(head, "open directory", e))?;
        }
        Ok(Some(cur))
    }

    fn make_implied(
        &mut self,
        head: &EntryHead,
        parent: &OwnedFd,
        name: &OsStr,
        rel: &Path,
    ) -> Result<()> {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755))
            .map_err(|e| self.io(head, "create parent directory", e))?;
        self.dir_times.insert(rel.to_path_buf(), 0);
        if self.overlay() {
            let hidden = self.is_hidden(rel);
            self.implied.push((rel.to_path_buf(), hidden));
        }
        Ok(())
    }

    fn forget_below(&mut self, p: &Path) {
        self.explicit.retain(|e| !e.starts_with(p));
        self.touched.retain(|e| !e.starts_with(p));
    }

    fn mark_explicit(&mut self, p: &Path) {
        for a in p.ancestors().skip(1) {
            if a.as_os_str().is_empty() {
                break;
            }
            self.touched.insert(a.to_path_buf());
        }
        self.explicit.insert(p.to_path_buf());
    }

    /// Process the whole stream.
    pub fn run(&mut self, reader: impl Read) -> Result<()> {
        let mut tar = TarReader::new(reader, self.opts.limits);
        while let Some(head) = tar.next_entry()? {
            self.stats.entries += 1;
            self.entry(&mut tar, &head)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, tar: &mut TarReader<R>, head: &EntryHead) -> Result<()> {
        let path = normalize(Path::new(OsStr::from_bytes(&head.name)))
            .map_err(|e| Self::refuse(head, e.to_string()))?;
        let Some((parent, name)) = split_parent(&path) else {
            if head.kind == TarKind::Dir {
                return Ok(()); // `./`: the root's own attributes are not taken from layers
            }
            return Err(Self::refuse(head, "the layer root can only be a directory"));
        };
        let parent = parent.to_path_buf();
        let name = name.to_os_string();
        let nb = name.as_bytes();
        if let Some(rest) = nb.strip_prefix(b".wh.") {
            if !matches!(head.kind, TarKind::File | TarKind::HardLink) {
                return Err(Self::refuse(head, "a whiteout must be a plain empty file"));
            }
            if rest == b".wh..opq" {
                return self.opaque(head, parent);
            }
            if rest.starts_with(b".wh.") {
                if parent.as_os_str().is_empty() {
                    return Ok(()); // AUFS bookkeeping (`.wh..wh.plnk` ...) at the root: skipped
                }
                return Err(Self::refuse(
                    head,
                    "unknown `.wh..wh.` entry outside the root",
                ));
            }
            if rest.is_empty() || rest == b"." || rest == b".." {
                return Err(Self::refuse(head, "invalid whiteout entry"));
            }
            let victim = parent.join(OsStr::from_bytes(rest));
            return self.whiteout(head, victim);
        }
        self.validate_xattrs(head)?;
        if head.kind == TarKind::Char && head.dev_major == 0 && head.dev_minor == 0 {
            return Err(Self::refuse(
                head,
                "a 0/0 character device is overlay's whiteout; layers must use `.wh.` files",
            ));
        }
        let pfd = self
            .dir_fd(head, &parent, true)?
            .ok_or_else(|| Self::refuse(head, "parent directory could not be created"))?;
        let existing = match rustix::fs::statat(&pfd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(self.io(head, "lstat", e)),
        };
        let existing_dir = existing
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            .unwrap_or(false);
        // A hardlink's target is checked before anything is removed.
        let link_target = if head.kind == TarKind::HardLink {
            let t = normalize(Path::new(OsStr::from_bytes(&head.link)))
                .map_err(|e| Self::refuse(head, format!("hardlink target: {e}")))?;
            if t == path {
                return Err(Self::refuse(head, "hardlink to itself"));
            }
            if !self.explicit.contains(&t) {
                return Err(Self::refuse(
                    head,
                    format!(
                        "hardlink target `{}` is not an earlier entry of this layer",
                        t.display()
                    ),
                ));
            }
            Some(t)
        } else {
            None
        };
        self.touch(&parent, &pfd);
        if existing.is_some() && !(existing_dir && head.kind == TarKind::Dir) {
            remove_all_at(&pfd, &name).map_err(|e| self.io(head, "replace", e))?;
            self.forget_below(&path);
        }
        match head.kind {
            TarKind::Dir => {
                if !existing_dir {
                    rustix::fs::mkdirat(&pfd, &name, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.io(head, "mkdir", e))?;
                }
                let fd = rustix::fs::openat(
                    &pfd,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io(head, "open", e))?;
                self.set_owner_fd(head, &fd)?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(head.mode))
                    .map_err(|e| self.io(head, "chmod", e))?;
                self.set_xattrs(head, &fd)?;
                self.dir_times.insert(path.clone(), head.mtime);
            }
            TarKind::File | TarKind::Other(b'7') => {
                let fd = rustix::fs::openat(
                    &pfd,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.io(head, "create", e))?;
                let mut file = std::fs::File::from(fd);
                self.stats.bytes += tar.copy_data(&mut file, head)?;
                let fd = OwnedFd::from(file);
                self.set_owner_fd(head, &fd)?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(head.mode))
                    .map_err(|e| self.io(head, "chmod", e))?;
                self.set_xattrs(head, &fd)?;
                rustix::fs::futimens(&fd, &ts(head.mtime))
                    .map_err(|e| self.io(head, "set times", e))?;
            }
            TarKind::HardLink => {
                let t = link_target.unwrap_or_default();
                let (tp, tn) =
                    split_parent(&t).ok_or_else(|| Self::refuse(head, "hardlink to the root"))?;
                let tfd = self
                    .dir_fd(head, tp, false)?
                    .ok_or_else(|| Self::refuse(head, "hardlink target vanished"))?;
                let st = rustix::fs::statat(&tfd, tn, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.io(head, "hardlink target", e))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(Self::refuse(head, "hardlink to a directory"));
                }
                rustix::fs::linkat(&tfd, tn, &pfd, &name, AtFlags::empty())
                    .map_err(|e| self.io(head, "link", e))?;
            }
            TarKind::Symlink => {
                if head.link.is_empty() {
                    return Err(Self::refuse(head, "symlink with an empty target"));
                }
                rustix::fs::symlinkat(OsStr::from_bytes(&head.link), &pfd, &name)
                    .map_err(|e| self.io(head, "symlink", e))?;
                self.set_owner_at(head, &pfd, &name)?;
                rustix::fs::utimensat(&pfd, &name, &ts(head.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.io(head, "set times", e))?;
            }
            TarKind::Fifo | TarKind::Char | TarKind::Block => {
                let (ft, mode) = match head.kind {
                    TarKind::Fifo => (FileType::Fifo, head.mode),
                    TarKind::Char => (FileType::CharacterDevice, head.mode & 0o777),
                    _ => (FileType::BlockDevice, head.mode & 0o777),
                };
                let dev: Dev = rustix::fs::makedev(head.dev_major, head.dev_minor);
                match rustix::fs::mknodat(&pfd, &name, ft, Mode::from_raw_mode(0o600), dev) {
                    Ok(()) => {}
                    Err(Errno::PERM) if ft != FileType::Fifo => return Err(Self::refuse(
                        head,
                        "device nodes need CAP_MKNOD in the initial user namespace (not root here)",
                    )),
                    Err(e) => return Err(self.io(head, "mknod", e)),
                }
                self.set_owner_at(head, &pfd, &name)?;
                rustix::fs::chmodat(&pfd, &name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| self.io(head, "chmod", e))?;
                rustix::fs::utimensat(&pfd, &name, &ts(head.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.io(head, "set times", e))?;
            }
            TarKind::Other(t) => {
                return Err(Self::refuse(
                    head,
                    format!("unsupported entry type `{}`", t.escape_ascii()),
                ));
            }
        }
        self.mark_explicit(&path);
        Ok(())
    }

    fn validate_xattrs(&self, head: &EntryHead) -> Result<()> {
        for (k, _) in &head.xattrs {
            if k.starts_with("trusted.") || k.starts_with("user.overlay.") {
                return Err(Self::refuse(
                    head,
                    format!("refusing xattr `{k}`: layers may not set trusted or overlay xattrs"),
                ));
            }
        }
        Ok(())
    }

    fn set_xattrs(&mut self, head: &EntryHead, fd: &OwnedFd) -> Result<()> {
        for (k, v) in &head.xattrs {
            if !carried_xattr(k) {
                self.stats
                    .warnings
                    .push(format!("{}: skipped xattr `{k}`", head.shown()));
                continue;
            }
            match rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e @ (Errno::NOTSUP | Errno::PERM)) => self.stats.warnings.push(format!(
                    "{}: xattr `{k}` not set: {}",
                    head.shown(),
                    std::io::Error::from(e)
                )),
                Err(e) => return Err(self.io(head, "set xattr", e)),
            }
        }
        Ok(())
    }

    fn ids(head: &EntryHead) -> Result<(rustix::fs::Uid, rustix::fs::Gid)> {
        let uid = u32::try_from(head.uid).map_err(|_| Self::refuse(head, "uid out of range"))?;
        let gid = u32::try_from(head.gid).map_err(|_| Self::refuse(head, "gid out of range"))?;
        Ok((
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        ))
    }

    fn owner_result(&mut self, head: &EntryHead, r: rustix::io::Result<()>) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(Errno::PERM | Errno::INVAL) if self.opts.ignore_chown_errors => {
                self.stats.warnings.push(format!(
                    "{}: owner {}:{} not set (unprivileged)",
                    head.shown(),
                    head.uid,
                    head.gid
                ));
                Ok(())
            }
            Err(e) => Err(self.io(head, "chown", e)),
        }
    }

    fn set_owner_fd(&mut self, head: &EntryHead, fd: &OwnedFd) -> Result<()> {
        let (u, g) = Self::ids(head)?;
        let r = rustix::fs::fchown(fd, Some(u), Some(g));
        self.owner_result(head, r)
    }

    fn set_owner_at(&mut self, head: &EntryHead, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        let (u, g) = Self::ids(head)?;
        let r = rustix::fs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW);
        self.owner_result(head, r)
    }

    fn whiteout(&mut self, head: &EntryHead, victim: PathBuf) -> Result<()> {
        if self.overlay() {
            // Checked against this layer's parents now (write-through refusal) and against the
            // lower layers in phase two.
            let parent = victim.parent().unwrap_or(Path::new("")).to_path_buf();
            self.dir_fd(head, &parent, false)?;
            self.whiteouted.insert(victim.clone());
            self.deferred
                .push((head.index, head.shown(), Deferred::Whiteout(victim)));
            return Ok(());
        }
        self.full_whiteout(head, &victim)
    }

    fn opaque(&mut self, head: &EntryHead, dir: PathBuf) -> Result<()> {
        if self.overlay() {
            self.dir_fd(head, &dir, false)?;
            self.opaqued.insert(dir.clone());
            self.deferred
                .push((head.index, head.shown(), Deferred::Opaque(dir)));
            return Ok(());
        }
        if let Some(fd) = self.dir_fd(head, &dir, false)? {
            let fd = reopen_dir(&fd).map_err(|e| self.io(head, "open", e))?;
            self.clear(head, &fd, &dir)?;
        }
        Ok(())
    }

    fn full_whiteout(&mut self, head: &EntryHead, victim: &Path) -> Result<()> {
        let (parent, name) =
            split_parent(victim).ok_or_else(|| Self::refuse(head, "whiteout of the root"))?;
        let parent = parent.to_path_buf();
        let name = name.to_os_string();
        if self.explicit.contains(victim) || self.touched.contains(victim) {
            // Entries of this layer are never hidden by its own whiteouts: the whiteout then
            // only clears what lower layers had below a directory.
            if let Some(fd) = self.dir_fd(head, victim, false)? {
                let fd = reopen_dir(&fd).map_err(|e| self.io(head, "open", e))?;
                self.clear(head, &fd, victim)?;
            }
            return Ok(());
        }
        let Some(pfd) = self.dir_fd(head, &parent, false)? else {
            return Ok(());
        };
        if rustix::fs::statat(&pfd, &name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            self.touch(&parent, &pfd);
            remove_all_at(&pfd, &name).map_err(|e| self.io(head, "delete", e))?;
        }
        Ok(())
    }

    /// Remove everything below `dir` that this layer did not create (full-tree opaque).
    fn clear(&mut self, head: &EntryHead, fd: &OwnedFd, dir: &Path) -> Result<()> {
        for name in list_names(fd).map_err(|e| self.io(head, "read dir", e))? {
            let p = dir.join(&name);
            if self.explicit.contains(&p) || self.touched.contains(&p) {
                let st = rustix::fs::statat(fd, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.io(head, "lstat", e))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    let child = rustix::fs::openat(
                        fd,
                        &name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.io(head, "open", e))?;
                    self.clear(head, &child, &p)?;
                }
            } else {
                self.touch(dir, fd);
                remove_all_at(fd, &name).map_err(|e| self.io(head, "delete", e))?;
            }
        }
        Ok(())
    }

    /// Finish a full-tree apply: directory times.
    pub fn finish_full(mut self) -> Result<UnpackStats> {
        self.apply_dir_times()?;
        Ok(self.stats)
    }

    /// Phase two for overlay targets, once the lower layers (top first) are complete:
    /// whiteouts and opaque markers that hide something, and attributes of implied parents.
    pub fn finish_overlay(mut self, lowers: &LayerStack) -> Result<UnpackStats> {
        let opaque_xattr = match self.target {
            Target::Overlay { opaque_xattr } => opaque_xattr,
            Target::Full => return self.finish_full(),
        };
        let mut with_diff = vec![self.root.path().to_path_buf()];
        with_diff.extend(lowers.layers.iter().cloned());
        let merged = LayerStack::new(with_diff);
        let deferred = std::mem::take(&mut self.deferred);
        for (index, entry, op) in deferred {
            let head = EntryHead {
                index,
                name: entry.into_bytes(),
                kind: TarKind::File,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: 0,
                link: Vec::new(),
                dev_major: 0,
                dev_minor: 0,
                xattrs: Vec::new(),
            };
            match op {
                Deferred::Whiteout(victim) => {
                    if self.explicit.contains(&victim) || self.touched.contains(&victim) {
                        self.set_opaque_if_dir(&head, &victim, opaque_xattr)?;
                        continue;
                    }
                    self.overlay_whiteout(&head, &victim, &merged)?;
                }
                Deferred::Opaque(dir) => {
                    if dir.as_os_str().is_empty() {
                        // The root of a layer cannot carry the xattr: whiteout each lower child.
                        if lowers.layers.is_empty() {
                            continue;
                        }
                        let root = lowers.root()?;
                        for name in lowers.children(&root)?.into_keys() {
                            let p = PathBuf::from(&name);
                            if !self.explicit.contains(&p) && !self.touched.contains(&p) {
                                self.overlay_whiteout(&head, &p, &merged)?;
                            }
                        }
                        continue;
                    }
                    if !(self.explicit.contains(&dir) || self.touched.contains(&dir)) {
                        match merged.lookup(&dir)? {
                            Some(n) if n.meta.is_dir() => {}
                            _ => continue,
                        }
                        self.dir_fd(&head, &dir, true)?;
                    }
                    self.set_opaque_if_dir(&head, &dir, opaque_xattr)?;
                }
            }
        }
        let implied = std::mem::take(&mut self.implied);
        for (p, hidden) in implied {
            if hidden || self.explicit.contains(&p) {
                continue;
            }
            let Some(low) = lowers.lookup(&p)? else {
                continue;
            };
            if !low.meta.is_dir() {
                continue;
            }
            let head = EntryHead {
                index: 0,
                name: p.as_os_str().as_bytes().to_vec(),
                kind: TarKind::Dir,
                mode: low.meta.mode,
                uid: u64::from(low.meta.uid),
                gid: u64::from(low.meta.gid),
                mtime: low.meta.mtime,
                link: Vec::new(),
                dev_major: 0,
                dev_minor: 0,
                xattrs: carried_xattrs(&low.host)?,
            };
            let Some(fd) = self.dir_fd(&head, &p, false)? else {
                continue;
            };
            let fd = reopen_dir(&fd).map_err(|e| self.io(&head, "open", e))?;
            self.set_owner_fd(&head, &fd)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(head.mode))
                .map_err(|e| self.io(&head, "chmod", e))?;
            self.set_xattrs(&head, &fd)?;
            self.dir_times.insert(p, low.meta.mtime);
        }
        self.apply_dir_times()?;
        Ok(self.stats)
    }

    fn set_opaque_if_dir(&mut self, head: &EntryHead, dir: &Path, xattr: &str) -> Result<()> {
        if let Some(fd) = self.dir_fd(head, dir, false)? {
            let fd = reopen_dir(&fd).map_err(|e| self.io(head, "open", e))?;
            rustix::fs::fsetxattr(&fd, xattr, b"y", XattrFlags::empty())
                .map_err(|e| self.io(head, "set opaque xattr", e))?;
        }
        Ok(())
    }

    fn overlay_whiteout(
        &mut self,
        head: &EntryHead,
        victim: &Path,
        merged: &LayerStack,
    ) -> Result<()> {
        if merged.lookup(victim)?.is_none() {
            return Ok(()); // nothing below to hide: no whiteout, no implied parents
        }
        let (parent, name) =
            split_parent(victim).ok_or_else(|| Self::refuse(head, "whiteout of the root"))?;
        let parent = parent.to_path_buf();
        let name = name.to_os_string();
        let pfd = self
            .dir_fd(head, &parent, true)?
            .ok_or_else(|| Self::refuse(head, "parent directory could not be created"))?;
        self.touch(&parent, &pfd);
        remove_all_at(&pfd, &name).map_err(|e| self.io(head, "replace", e))?;
        rustix::fs::mknodat(&pfd, &name, FileType::CharacterDevice, Mode::empty(), 0)
            .map_err(|e| self.io(head, "create whiteout", e))?;
        Ok(())
    }

    fn apply_dir_times(&mut self) -> Result<()> {
        let times: Vec<(PathBuf, i64)> = self.dir_times.drain().collect();
        for (p, secs) in times {
            let Some((parent, name)) = split_parent(&p) else {
                continue;
            };
            let head = EntryHead {
                index: 0,
                name: p.as_os_str().as_bytes().to_vec(),
                kind: TarKind::Dir,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: secs,
                link: Vec::new(),
                dev_major: 0,
                dev_minor: 0,
                xattrs: Vec::new(),
            };
            let parent = parent.to_path_buf();
            let name = name.to_os_string();
            if let Ok(Some(pfd)) = self.dir_fd(&head, &parent, false) {
                match rustix::fs::statat(&pfd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        rustix::fs::utimensat(&pfd, &name, &ts(secs), AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| self.io(&head, "set times", e))?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn reopen_dir(fd: &OwnedFd) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
