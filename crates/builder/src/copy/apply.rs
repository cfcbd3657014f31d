//! Writing a prepared copy into a destination root.
//!
//! Per run of consecutive non-archive tops: first every top's target is resolved in-root
//! (see [`super::dest`]); then, in one sequential pass, the directories are created (mode
//! 0700 while the copy runs, so nothing of the copy is visible half-made to other users);
//! then regular files, symlinks and special files are written in parallel on the current
//! rayon pool, grouped by directory; hard links among the copied files follow; last, the
//! directories get their metadata, deepest first, so that their mtimes are the final ones.
//! Archives are extracted one at a time, in their place in the order of the sources.
//!
//! Each source file is read once: data moves with `copy_file_range` (in the kernel; a
//! plain read/write loop where that is not possible), after checking with `fstat` that the
//! file still has the size and mtime it had when it was hashed. Ownership is set before
//! the mode (so setuid/setgid bits survive) and before `security.capability` (which a
//! `chown` clears).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use strata_overlay::in_root::Follow;
use strata_overlay::UnpackOptions;

use super::dest::{lstat_type, open_beneath, set_owner_mode, split_last, DestRoot};
use super::reuse::{self, CopiedFiles, FileId, Reuse};
use super::sources::{overlay_io, TopKind};
use super::{archive, ChownSpec, CopyPlan, CopyStats, Item, Origin, PlanTop};
use crate::context::FileKind;
use crate::user::{resolve_chown_in, Owner};
use crate::Error;
use strata_overlay::layers::{Layers, MergedDir};

/// Files handed to one parallel task.
const CHUNK: usize = 64;

/// The directories tops are copied into, each opened once.
#[derive(Default)]
struct Targets {
    dirs: Vec<OwnedFd>,
    shown: Vec<String>,
    by_inode: HashMap<(u64, u64), usize>,
    /// Whether this copy created the directory (then it is new in the upper folder).
    created: Vec<bool>,
    /// Existing directories whose times are put back once the copy is done.
    restore: Vec<(usize, Timestamps)>,
}

impl Targets {
    fn add(&mut self, fd: OwnedFd, shown: &str, created: bool) -> Result<usize, Error> {
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", shown, e.into()))?;
        if let Some(&i) = self.by_inode.get(&(st.st_dev, st.st_ino)) {
            return Ok(i);
        }
        self.dirs.push(fd);
        self.created.push(created);
        self.shown.push(shown.to_string());
        self.by_inode
            .insert((st.st_dev, st.st_ino), self.dirs.len() - 1);
        Ok(self.dirs.len() - 1)
    }

    fn remember_times(&mut self, dir: usize) -> Result<(), Error> {
        if self.restore.iter().any(|(d, _)| *d == dir) {
            return Ok(());
        }
        let st = rustix::fs::fstat(&self.dirs[dir])
            .map_err(|e| Error::io("stat", &self.shown[dir], e.into()))?;
        self.restore.push((
            dir,
            Timestamps {
                last_access: Timespec {
                    tv_sec: st.st_atime as _,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: Timespec {
                    tv_sec: st.st_mtime as _,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            },
        ));
        Ok(())
    }
}

/// Where a top goes: a directory, and for a single entry the name in it.
struct Target {
    dir: usize,
    name: String,
}

/// One non-directory entry to write.
#[derive(Clone)]
struct Job {
    top: usize,
    item: usize,
    dir: usize,
    parent: String,
    name: String,
}

struct Ctx<'a> {
    plan: &'a CopyPlan,
    chown: Option<Owner>,
    targets: &'a Targets,
    links: Option<LinkDirs<'a>>,
}

/// Where unchanged files are hard-linked from and to (see [`super::reuse`]), opened once.
struct LinkDirs<'a> {
    /// The step's upper folder.
    upper: OwnedFd,
    /// The previous layer's `diff/` folder and what the copy wrote there.
    previous: Option<(OwnedFd, &'a HashMap<String, FileId>)>,
    /// Each target directory's path in the upper folder (`None`: unknown, never linked).
    target_rel: Vec<Option<String>>,
    /// The layer folders of a `COPY --from` source.
    source: Option<&'a Layers>,
}

/// What one chunk wrote: its counts and the files it lists for the next build.
type ChunkResult = Result<(CopyStats, Vec<(String, FileId)>), Error>;

/// The directories of one chunk's destination when its files may be linked.
struct ChunkLinks<'a> {
    /// The destination directory's path in the upper folder.
    rel: String,
    /// The same directory in the upper folder.
    upper: OwnedFd,
    /// And in the previous layer, with the previous layer's files.
    previous: Option<(OwnedFd, &'a HashMap<String, FileId>)>,
    /// The chunk's source directory in the layer folders of a `COPY --from` source.
    source: Option<MergedDir>,
}

/// Where a file that could be linked came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linked {
    /// Nowhere: the caller copies it.
    No,
    /// The previous layer of the step.
    Previous,
    /// The layer folder of the `COPY --from` source that holds it.
    Source,
}

impl Ctx<'_> {
    /// The owner an entry is written with.
    fn owner_of(&self, item: &Item) -> Owner {
        if let Some(o) = self.chown {
            return o;
        }
        match item.origin {
            Origin::Tree(0) if self.plan.keep_owner => Owner {
                uid: item.uid,
                gid: item.gid,
            },
            _ => Owner { uid: 0, gid: 0 },
        }
    }

    /// The path in the destination root, for messages.
    fn shown(&self, dir: usize, parent: &str, name: &str) -> String {
        let base = self.targets.shown[dir].trim_end_matches('/');
        match (parent.is_empty(), name.is_empty()) {
            (true, true) => self.targets.shown[dir].clone(),
            (true, false) => format!("{base}/{name}"),
            (false, true) => format!("{base}/{parent}"),
            (false, false) => format!("{base}/{parent}/{name}"),
        }
    }
}

/// [`CopyPlan::apply_with`].
pub(crate) fn run(
    plan: &CopyPlan,
    dest_root: &Path,
    users_root: Option<&Path>,
    reuse: Option<&Reuse<'_>>,
) -> Result<(CopyStats, CopiedFiles), Error> {
    let dest = DestRoot::open(dest_root)?;
    let chown = match &plan.chown {
        None => None,
        Some(ChownSpec::Fixed(o)) => Some(*o),
        Some(ChownSpec::Named(spec)) => resolve_chown_in(users_root.unwrap_or(dest_root), spec)?,
    };
    let made_owner = chown.unwrap_or(Owner { uid: 0, gid: 0 });
    if plan.tops.len() > 1 && !plan.dest.dir && dest.existing_dir(&plan.dest.path)?.is_none() {
        return Err(Error::DestMustBeDir {
            command: plan.command,
        });
    }
    let mut targets = Targets::default();
    let mut resolved = Vec::with_capacity(plan.tops.len());
    for top in &plan.tops {
        resolved.push(target_of(plan, &dest, &mut targets, top, made_owner)?);
    }
    // Archives may look names up through the mount: no links next to them.
    let has_archive = plan.tops.iter().any(|t| t.kind == TopKind::Archive);
    let links = match reuse {
        Some(r) if !has_archive => link_dirs(r, dest_root, &targets),
        _ => None,
    };
    let ctx = Ctx {
        plan,
        chown,
        targets: &targets,
        links,
    };
    let mut stats = CopyStats::default();
    let mut copied = CopiedFiles::default();
    let mut batch = Vec::new();
    for (t, top) in plan.tops.iter().enumerate() {
        if top.kind == TopKind::Archive {
            copy_batch(&ctx, &batch, &resolved, &mut stats, &mut copied)?;
            batch.clear();
            extract(&ctx, top, &resolved[t], &mut stats)?;
        } else {
            batch.push(t);
        }
    }
    copy_batch(&ctx, &batch, &resolved, &mut stats, &mut copied)?;
    for (dir, times) in &targets.restore {
        let fd = open_beneath(&targets.dirs[*dir], "", OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| Error::io("open", &targets.shown[*dir], e.into()))?;
        rustix::fs::futimens(&fd, times)
            .map_err(|e| Error::io("set times", &targets.shown[*dir], e.into()))?;
    }
    Ok((stats, copied))
}

/// Opens what linking needs; `None` (copy everything) when something is not as expected.
fn link_dirs<'a>(reuse: &Reuse<'a>, dest_root: &Path, targets: &Targets) -> Option<LinkDirs<'a>> {
    let open = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    };
    let upper = open(reuse.upper)?;
    let previous = match reuse.previous {
        Some(p) => open(&p.diff).map(|fd| (fd, &p.files)),
        None => None,
    };
    let root = std::fs::canonicalize(dest_root).ok()?;
    // The kernel's name of each target directory, below the mounted root, is its path in
    // the upper folder.
    let target_rel = targets
        .dirs
        .iter()
        .map(|fd| {
            let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
            let rel = real.strip_prefix(&root).ok()?;
            Some(rel.to_str()?.to_string())
        })
        .collect();
    Some(LinkDirs {
        upper,
        previous,
        target_rel,
        source: reuse.source,
    })
}

/// Resolves where `top` goes (creating the destination directories it needs).
fn target_of(
    plan: &CopyPlan,
    dest: &DestRoot,
    targets: &mut Targets,
    top: &PlanTop,
    owner: Owner,
) -> Result<Target, Error> {
    let path = plan.dest.path.as_str();
    if top.kind != TopKind::Single {
        let handle = dest.ensure_dir(path, owner)?;
        let dir = targets.add(handle.fd, path, handle.created)?;
        // BuildKit puts back the times of an existing directory it copies contents into.
        if !handle.created && matches!(top.kind, TopKind::Contents | TopKind::Parents) {
            targets.remember_times(dir)?;
        }
        return Ok(Target {
            dir,
            name: String::new(),
        });
    }
    if plan.dest.dir {
        let handle = dest.ensure_dir(path, owner)?;
        return Ok(Target {
            dir: targets.add(handle.fd, path, handle.created)?,
            name: top.name.clone(),
        });
    }
    if let Some(fd) = dest.existing_dir(path)? {
        return Ok(Target {
            dir: targets.add(fd, path, false)?,
            name: top.name.clone(),
        });
    }
    let Some((parent, name)) = split_last(path) else {
        return Err(Error::DestNotDir { path: path.into() });
    };
    let handle = dest.ensure_dir(parent, owner)?;
    Ok(Target {
        dir: targets.add(handle.fd, parent, handle.created)?,
        name: name.to_string(),
    })
}

/// Splits a relative path into parent and name.
fn split_rel(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// Copies a run of non-archive tops.
fn copy_batch(
    ctx: &Ctx,
    batch: &[usize],
    resolved: &[Target],
    stats: &mut CopyStats,
    copied: &mut CopiedFiles,
) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let plan = ctx.plan;
    // Directories, in order; files become jobs.
    let mut dir_meta: Vec<(usize, String, usize)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    // Directories this copy created (target, path below it): new in the upper folder.
    let mut fresh: HashSet<(usize, String)> = HashSet::new();
    for &t in batch {
        let top = &plan.tops[t];
        let target = &resolved[t];
        match top.kind {
            TopKind::Single => {
                if ctx.targets.created[target.dir] {
                    fresh.insert((target.dir, String::new()));
                }
                jobs.push(Job {
                    top: t,
                    item: top.items.start,
                    dir: target.dir,
                    parent: String::new(),
                    name: target.name.clone(),
                })
            }
            TopKind::Contents | TopKind::Parents => make_dirs(
                ctx,
                t,
                target.dir,
                &mut dir_meta,
                &mut jobs,
                &mut fresh,
                stats,
            )?,
            TopKind::Archive => {}
        }
    }

    // A later write to the same path wins, as it would one copy after the other.
    let mut last: HashMap<(usize, &str, &str), usize> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        last.insert((j.dir, j.parent.as_str(), j.name.as_str()), i);
    }
    let kept: Vec<usize> = (0..jobs.len())
        .filter(|i| {
            let j = &jobs[*i];
            last.get(&(j.dir, j.parent.as_str(), j.name.as_str())) == Some(i)
        })
        .collect();

    // Hard links inside one top stay hard links.
    let mut leaders: HashMap<(usize, u64, u64), usize> = HashMap::new();
    let mut links: Vec<(usize, usize)> = Vec::new();
    let mut plain: Vec<usize> = Vec::new();
    for &i in &kept {
        let j = &jobs[i];
        let item = &plan.items[j.item];
        if item.kind == FileKind::File
            && item.hashed.nlink > 1
            && matches!(item.origin, Origin::Tree(_))
        {
            let key = (j.top, item.hashed.dev_ino.0, item.hashed.dev_ino.1);
            if let Some(&leader) = leaders.get(&key) {
                links.push((leader, i));
                continue;
            }
            leaders.insert(key, i);
        }
        plain.push(i);
    }

    // Group by destination and source directory; each chunk is one parallel task.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<(usize, &str, usize, &str), usize> = HashMap::new();
    for &i in &plain {
        let j = &jobs[i];
        let item = &plan.items[j.item];
        let (root, src_parent) = match item.origin {
            Origin::Tree(r) => (r, split_rel(&item.path).0),
            Origin::Inline(_) => (usize::MAX, ""),
        };
        let key = (j.dir, j.parent.as_str(), root, src_parent);
        let g = *group_of.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    let chunks: Vec<&[usize]> = groups.iter().flat_map(|g| g.chunks(CHUNK)).collect();
    let results: Vec<ChunkResult> = chunks
        .par_iter()
        .map(|chunk| run_chunk(ctx, &jobs, chunk, &fresh))
        .collect();
    for r in results {
        let (s, files) = r?;
        merge(stats, s);
        copied.files.extend(files);
    }

    for (leader, follower) in links {
        link_job(ctx, &jobs[leader], &jobs[follower])?;
        stats.hardlinks += 1;
    }

    for (dir, rel, idx) in dir_meta.iter().rev() {
        let item = &plan.items[*idx];
        let shown = ctx.shown(*dir, rel, "");
        let fd = open_beneath(
            &ctx.targets.dirs[*dir],
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
        )
        .map_err(|e| Error::io("open", &shown, e.into()))?;
        finish_meta(ctx, &fd, item, &shown, stats)?;
    }
    Ok(())
}

fn merge(into: &mut CopyStats, from: CopyStats) {
    into.files += from.files;
    into.dirs += from.dirs;
    into.symlinks += from.symlinks;
    into.hardlinks += from.hardlinks;
    into.reused += from.reused;
    into.linked += from.linked;
    into.specials += from.specials;
    into.bytes += from.bytes;
    into.archives += from.archives;
    into.archive_entries += from.archive_entries;
    into.warnings.extend(from.warnings);
}

/// Creates (or checks) the directories of a directory-like top, in walk order, and lists
/// its other entries as jobs.
fn make_dirs(
    ctx: &Ctx,
    t: usize,
    dir: usize,
    dir_meta: &mut Vec<(usize, String, usize)>,
    jobs: &mut Vec<Job>,
    fresh: &mut HashSet<(usize, String)>,
    stats: &mut CopyStats,
) -> Result<(), Error> {
    let plan = ctx.plan;
    let top = &plan.tops[t];
    if ctx.targets.created[dir] {
        fresh.insert((dir, String::new()));
    }
    let base = &ctx.targets.dirs[dir];
    // The directories from the target down to the current entry's parent.
    let mut stack: Vec<(String, OwnedFd)> = Vec::new();
    for idx in top.items.start + 1..top.items.end {
        let item = &plan.items[idx];
        let (parent, name) = split_rel(item.rel());
        if item.kind != FileKind::Dir {
            jobs.push(Job {
                top: t,
                item: idx,
                dir,
                parent: parent.to_string(),
                name: name.to_string(),
            });
            continue;
        }
        while stack.last().is_some_and(|(r, _)| r != parent) {
            stack.pop();
        }
        let shown = ctx.shown(dir, item.rel(), "");
        let reopened;
        let pfd =
            match stack.last() {
                Some((_, fd)) => fd,
                None if parent.is_empty() => base,
                None => {
                    reopened = open_beneath(base, parent, OFlags::PATH | OFlags::DIRECTORY)
                        .map_err(|_| Error::DestNotDir {
                            path: ctx.shown(dir, parent, ""),
                        })?;
                    &reopened
                }
            };
        let created = match lstat_type(pfd, OsStr::new(name)) {
            Ok(None) => {
                rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| Error::io("create directory", &shown, e.into()))?;
                true
            }
            Ok(Some(FileType::Directory)) => false,
            Ok(Some(_)) => return Err(Error::DestNotDir { path: shown }),
            Err(e) => return Err(Error::io("stat", &shown, e.into())),
        };
        let fd = rustix::fs::openat(
            pfd,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR | Errno::LOOP => Error::DestNotDir {
                path: shown.clone(),
            },
            e => Error::io("open", &shown, e.into()),
        })?;
        stack.push((item.rel().to_string(), fd));
        if created {
            fresh.insert((dir, item.rel().to_string()));
        }
        if created || item.overwrite_meta {
            dir_meta.push((dir, item.rel().to_string(), idx));
        }
        stats.dirs += 1;
    }
    Ok(())
}

/// Writes one chunk of jobs (all in the same destination and source directories).
fn run_chunk(
    ctx: &Ctx,
    jobs: &[Job],
    chunk: &[usize],
    fresh: &HashSet<(usize, String)>,
) -> ChunkResult {
    let mut stats = CopyStats::default();
    let mut copied = Vec::new();
    let Some(first) = chunk.first().map(|&i| &jobs[i]) else {
        return Ok((stats, copied));
    };
    let plan = ctx.plan;
    let ddir = open_dest_dir(ctx, first.dir, &first.parent)?;
    let first_item = &plan.items[first.item];
    let sdir = match first_item.origin {
        Origin::Tree(r) => {
            let parent = split_rel(&first_item.path).0;
            Some(
                plan.roots[r]
                    .open_dir(Path::new(parent), Follow::Never)
                    .map_err(|e| Error::io("open", shown_src(parent), overlay_io(e)))?,
            )
        }
        Origin::Inline(_) => None,
    };
    let links = chunk_links(ctx, first, fresh);
    for &i in chunk {
        let job = &jobs[i];
        let (listed, linked) = match links.as_ref() {
            Some(l) => linkable(ctx, job, l),
            None => (None, Linked::No),
        };
        match linked {
            Linked::No => write_entry(ctx, job, &ddir, sdir.as_ref(), &mut stats)?,
            Linked::Previous => {
                stats.files += 1;
                stats.reused += 1;
            }
            Linked::Source => {
                stats.files += 1;
                stats.linked += 1;
            }
        }
        copied.extend(listed);
    }
    Ok((stats, copied))
}

/// The upper and previous directories of a chunk's destination, when it is a directory
/// this copy created (so a file can be linked into the upper folder without overlay ever
/// having looked the name up).
fn chunk_links<'a>(
    ctx: &Ctx<'a>,
    first: &Job,
    fresh: &HashSet<(usize, String)>,
) -> Option<ChunkLinks<'a>> {
    let links = ctx.links.as_ref()?;
    if !fresh.contains(&(first.dir, first.parent.clone())) {
        return None;
    }
    let base = links.target_rel.get(first.dir)?.as_deref()?;
    let rel = match (base.is_empty(), first.parent.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => first.parent.clone(),
        (false, false) => format!("{base}/{}", first.parent),
    };
    let flags = OFlags::PATH | OFlags::DIRECTORY;
    let upper = open_beneath(&links.upper, &rel, flags).ok()?;
    let previous = links
        .previous
        .as_ref()
        .and_then(|(fd, files)| Some((open_beneath(fd, &rel, flags).ok()?, *files)));
    // The chunk's files share one source directory (see `copy_batch`).
    let item = &ctx.plan.items[first.item];
    let source = match (links.source, item.origin) {
        (Some(layers), Origin::Tree(0)) if ctx.plan.keep_owner => layers
            .dir(Path::new(split_rel(&item.path).0))
            .ok()
            .flatten(),
        _ => None,
    };
    Some(ChunkLinks {
        rel,
        upper,
        previous,
        source,
    })
}

/// Links a regular file when it can be, from the previous layer of the step or else from
/// the layer folder of the `COPY --from` source; returns its path in the upper folder and
/// what it is when the next build may reuse it (single-link files only), and where it was
/// linked from ([`Linked::No`]: the caller copies it).
fn linkable(ctx: &Ctx, job: &Job, links: &ChunkLinks) -> (Option<(String, FileId)>, Linked) {
    let item = &ctx.plan.items[job.item];
    if item.kind != FileKind::File
        || !matches!(item.origin, Origin::Tree(_))
        || !item.hashed.xattrs.is_empty()
        || job.name.contains('\n')
    {
        return (None, Linked::No);
    }
    let owner = ctx.owner_of(item);
    let id = FileId {
        digest: item.hashed.digest,
        mode: item.hashed.mode,
        uid: owner.uid,
        gid: owner.gid,
        size: item.hashed.size,
        mtime: item.hashed.mtime,
    };
    let path = if links.rel.is_empty() {
        job.name.clone()
    } else {
        format!("{}/{}", links.rel, job.name)
    };
    // A source file with other names is copied or linked, never listed: its hard links
    // among the copied files are made by `copy_batch` after this.
    let listed = item.hashed.nlink <= 1;
    if listed {
        if let Some((prev, files)) = &links.previous {
            if files.get(&path) == Some(&id)
                && reuse::link_if_same(prev, &links.upper, &job.name, &id)
            {
                return (Some((path, id)), Linked::Previous);
            }
        }
    }
    let linked = match &links.source {
        Some(dir) if link_from_source(dir, item, job, &links.upper, &id) => Linked::Source,
        _ => Linked::No,
    };
    (listed.then_some((path, id)), linked)
}

/// Links `job`'s source file from the layer folder that holds it into `upper` (the
/// destination directory in the upper folder) when the copy would write exactly that
/// file: a regular file with the metadata `id` describes, the very inode the mounted
/// source showed when it was hashed (all layer folders are on one filesystem, whose inode
/// numbers overlay shows), with no extended attribute at all. `false` when not linked.
fn link_from_source(dir: &MergedDir, item: &Item, job: &Job, upper: &OwnedFd, id: &FileId) -> bool {
    let name = OsStr::new(split_rel(&item.path).1);
    let Ok(Some(file)) = dir.entry(name) else {
        return false;
    };
    #[allow(clippy::unnecessary_cast)]
    let same_inode = file.stat.st_ino as u64 == item.hashed.dev_ino.1;
    same_inode
        && id.matches(&file.stat)
        && matches!(file.has_xattrs(), Ok(false))
        && file.link_into(upper, OsStr::new(&job.name)).is_ok()
}

fn shown_src(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

fn open_dest_dir(ctx: &Ctx, dir: usize, parent: &str) -> Result<OwnedFd, Error> {
    open_beneath(
        &ctx.targets.dirs[dir],
        parent,
        OFlags::PATH | OFlags::DIRECTORY,
    )
    .map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => Error::DestNotDir {
            path: ctx.shown(dir, parent, ""),
        },
        e => Error::io("open", ctx.shown(dir, parent, ""), e.into()),
    })
}

/// Removes what is at `name` in `dir` unless it is a directory (then: error).
fn make_room(dir: &OwnedFd, name: &str, shown: &str) -> Result<(), Error> {
    match lstat_type(dir, OsStr::new(name)) {
        Ok(None) => Ok(()),
        Ok(Some(FileType::Directory)) => Err(Error::DestIsDir {
            path: shown.to_string(),
        }),
        Ok(Some(_)) => rustix::fs::unlinkat(dir, name, AtFlags::empty())
            .map_err(|e| Error::io("replace", shown, e.into())),
        Err(e) => Err(Error::io("stat", shown, e.into())),
    }
}

fn times(mtime: (i64, i64)) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.0 as _,
        tv_nsec: mtime.1 as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Writes one non-directory entry into `ddir`.
fn write_entry(
    ctx: &Ctx,
    job: &Job,
    ddir: &OwnedFd,
    sdir: Option<&OwnedFd>,
    stats: &mut CopyStats,
) -> Result<(), Error> {
    let item = &ctx.plan.items[job.item];
    let shown = ctx.shown(job.dir, &job.parent, &job.name);
    make_room(ddir, &job.name, &shown)?;
    let owner = ctx.owner_of(item);
    let name = job.name.as_str();
    let (src_dir, src_name) = match (item.origin, sdir) {
        (Origin::Tree(_), Some(d)) => (d, split_rel(&item.path).1),
        (Origin::Inline(i), _) => {
            let content = ctx.plan.inline.get(i).map_or("", String::as_str);
            let fd = create_file(ddir, name, &shown)?;
            let mut file = std::fs::File::from(fd);
            file.write_all(content.as_bytes())
                .map_err(|e| Error::io("write", &shown, e))?;
            let fd = OwnedFd::from(file);
            set_owner_mode(&fd, owner, item.hashed.mode)
                .map_err(|e| Error::io("chown", &shown, e))?;
            stats.files += 1;
            stats.bytes += content.len() as u64;
            return Ok(());
        }
        (Origin::Tree(_), None) => return Ok(()),
    };
    match item.kind {
        FileKind::File => {
            let src = rustix::fs::openat(
                src_dir,
                src_name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NOCTTY
                    | OFlags::NONBLOCK
                    | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open", shown_src(&item.path), e.into()))?;
            let changed = || Error::ChangedSinceHashed {
                path: shown_src(&item.path).to_string(),
            };
            let st = rustix::fs::fstat(&src)
                .map_err(|e| Error::io("stat", shown_src(&item.path), e.into()))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
                || st.st_size as u64 != item.hashed.size
                || (st.st_mtime as i64, st.st_mtime_nsec as i64) != item.hashed.mtime
            {
                return Err(changed());
            }
            let dst = create_file(ddir, name, &shown)?;
            let copied = copy_data(&src, &dst, item.hashed.size)
                .map_err(|e| Error::io("copy", &shown, e))?;
            if copied != item.hashed.size {
                return Err(changed());
            }
            set_owner_mode(&dst, owner, item.hashed.mode)
                .map_err(|e| Error::io("chown", &shown, e))?;
            set_xattrs(&dst, item, &shown, stats)?;
            rustix::fs::futimens(&dst, &times(item.hashed.mtime))
                .map_err(|e| Error::io("set times", &shown, e.into()))?;
            stats.files += 1;
            stats.bytes += copied;
        }
        FileKind::Symlink => {
            let target = item.link.as_deref().unwrap_or_default();
            rustix::fs::symlinkat(target, ddir, name)
                .map_err(|e| Error::io("create symlink", &shown, e.into()))?;
            chown_at(ddir, name, owner).map_err(|e| Error::io("chown", &shown, e.into()))?;
            rustix::fs::utimensat(
                ddir,
                name,
                &times(item.hashed.mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::io("set times", &shown, e.into()))?;
            stats.symlinks += 1;
        }
        FileKind::Fifo | FileKind::CharDevice | FileKind::BlockDevice => {
            let ft = match item.kind {
                FileKind::Fifo => FileType::Fifo,
                FileKind::CharDevice => FileType::CharacterDevice,
                _ => FileType::BlockDevice,
            };
            rustix::fs::mknodat(ddir, name, ft, Mode::from_raw_mode(0o600), item.rdev)
                .map_err(|e| Error::io("create node", &shown, e.into()))?;
            chown_at(ddir, name, owner).map_err(|e| Error::io("chown", &shown, e.into()))?;
            rustix::fs::chmodat(
                ddir,
                name,
                Mode::from_raw_mode(item.hashed.mode),
                AtFlags::empty(),
            )
            .map_err(|e| Error::io("chmod", &shown, e.into()))?;
            rustix::fs::utimensat(
                ddir,
                name,
                &times(item.hashed.mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::io("set times", &shown, e.into()))?;
            stats.specials += 1;
        }
        FileKind::Socket => stats
            .warnings
            .push(format!("{}: sockets are not copied", shown_src(&item.path))),
        FileKind::Dir => {}
    }
    Ok(())
}

fn chown_at(dir: &OwnedFd, name: &str, owner: Owner) -> rustix::io::Result<()> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

fn create_file(dir: &OwnedFd, name: &str, shown: &str) -> Result<OwnedFd, Error> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| Error::io("create", shown, e.into()))
}

/// Copies up to `size` bytes from the start of `src` into `dst`; returns the bytes
/// copied (fewer when the file shrank).
fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64) -> std::io::Result<u64> {
    let mut done = 0u64;
    while done < size {
        let want = usize::try_from(size - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, None, dst, None, want) {
            Ok(0) => return Ok(done),
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                let mut from = std::fs::File::from(src.try_clone()?);
                let mut to = std::fs::File::from(dst.try_clone()?);
                let rest =
                    std::io::copy(&mut std::io::Read::take(&mut from, size - done), &mut to)?;
                return Ok(done + rest);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

fn set_xattrs(fd: &OwnedFd, item: &Item, shown: &str, stats: &mut CopyStats) -> Result<(), Error> {
    for (name, value) in &item.hashed.xattrs {
        match rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(e @ (Errno::NOTSUP | Errno::PERM)) => stats.warnings.push(format!(
                "{shown}: xattr {name} not set: {}",
                std::io::Error::from(e)
            )),
            Err(e) => return Err(Error::io("set xattr", shown, e.into())),
        }
    }
    Ok(())
}

/// Owner, mode, xattrs and times of a copied directory.
fn finish_meta(
    ctx: &Ctx,
    fd: &OwnedFd,
    item: &Item,
    shown: &str,
    stats: &mut CopyStats,
) -> Result<(), Error> {
    set_owner_mode(fd, ctx.owner_of(item), item.hashed.mode)
        .map_err(|e| Error::io("chown", shown, e))?;
    set_xattrs(fd, item, shown, stats)?;
    rustix::fs::futimens(fd, &times(item.hashed.mtime))
        .map_err(|e| Error::io("set times", shown, e.into()))
}

/// Makes `follower` a hard link to the already written `leader`.
fn link_job(ctx: &Ctx, leader: &Job, follower: &Job) -> Result<(), Error> {
    let ldir = open_dest_dir(ctx, leader.dir, &leader.parent)?;
    let fdir = open_dest_dir(ctx, follower.dir, &follower.parent)?;
    let shown = ctx.shown(follower.dir, &follower.parent, &follower.name);
    make_room(&fdir, &follower.name, &shown)?;
    rustix::fs::linkat(
        &ldir,
        leader.name.as_str(),
        &fdir,
        follower.name.as_str(),
        AtFlags::empty(),
    )
    .map_err(|e| Error::io("link", &shown, e.into()))
}

/// Extracts an archive top into its target directory.
fn extract(ctx: &Ctx, top: &PlanTop, target: &Target, stats: &mut CopyStats) -> Result<(), Error> {
    let plan = ctx.plan;
    let item = &plan.items[top.items.start];
    let Origin::Tree(r) = item.origin else {
        return Ok(());
    };
    let src = plan.roots[r]
        .open_at(
            Path::new(&item.path),
            OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            Follow::Never,
        )
        .map_err(|e| Error::io("open", &top.label, overlay_io(e)))?;
    let st = rustix::fs::fstat(&src).map_err(|e| Error::io("stat", &top.label, e.into()))?;
    if st.st_size as u64 != item.hashed.size
        || (st.st_mtime as i64, st.st_mtime_nsec as i64) != item.hashed.mtime
    {
        return Err(Error::ChangedSinceHashed {
            path: top.label.clone(),
        });
    }
    let dir = &ctx.targets.dirs[target.dir];
    let via = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let reader = archive::decompress(std::fs::File::from(src))
        .map_err(|e| Error::io("read", &top.label, e))?;
    let unpacked =
        strata_overlay::apply_to_tree(reader, Path::new(&via), &UnpackOptions::default()).map_err(
            |source| Error::Extract {
                path: top.label.clone(),
                source,
            },
        )?;
    stats.archives += 1;
    stats.archive_entries += unpacked.entries;
    stats.bytes += unpacked.bytes;
    stats.warnings.extend(unpacked.warnings);
    Ok(())
}
