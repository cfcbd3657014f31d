//! Containers: a writable layer on top of an image's read-only layers, and a record of what
//! runs in it.
//!
//! A container is two things:
//! - an **active snapshot** `container-<id>` on the image's unpacked chain
//!   ([`Engine::ensure_unpacked`]): its upper dir is the container's writable layer;
//! - a `containers/<id>` ref in the store pointing at the image's manifest, so the image's
//!   blobs and unpacked layers are garbage-collection roots while the container exists (and
//!   `rmi` refuses the image without `-f`);
//! - a **record file** `<root>/builder/containers/<id>.json` beside the store, replaced
//!   atomically (write aside, rename) on every change: a [`Container`]: ID, name, image, the
//!   resolved [`ContainerConfig`] (Docker's ENTRYPOINT/CMD matrix, env, user, working
//!   directory, network, host name) and its [`State`]. Mutable state lives there and not in
//!   the content-addressed store, where every state change would leave a blob behind for
//!   `prune`. (Containers made before kept their data in a store [`Record`](strata_store::Record) behind the ref;
//!   they are still read, and move to the file on their next change.)
//!
//! [`Containers`] runs them ([`Containers::start`]: mount, resolve the user in the
//! container's own `/etc/passwd`, [`crate::exec::run`], unmount), lists, removes, commits
//! (the upper dir becomes a layer on the image's: [`Containers::commit`]), diffs (Docker's
//! `A`/`C`/`D` lines from the upper dir only), mounts for looking around, and exports the
//! merged view as one tar.
//!
//! **Running state.** A process that runs a container holds an exclusive `flock` on
//! `<root>/builder/containers/<id>.lock` for the whole run, so "running" never outlives the
//! process: a record that says running while nobody holds the lock belongs to a `strata
//! run` that died (its command was killed with it, by the executor's parent-death signal)
//! and reads as exited with 137. `rm -f` kills the command's namespace through the init's
//! pid in the record (checked against the process's start time) and waits for the lock.
//! Names are made unique under `<root>/builder/containers/names.lock`.
//!
//! **Order.** `create` writes the record file, then the ref; `remove` drops the ref, then the
//! file. The ref is what makes a container exist, so a crash in between leaves at worst an
//! unread `<id>.json`, never a container without its data.

mod changes;
mod config;
mod names;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::image::History;
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use strata_overlay::{
    diff_dirs, write_tar, Change, ChangeKind, Driver, TarOptions, TarStats, Usage,
};
use strata_store::{Compression, Descriptor, Digest, Image, RefKind, Reference};

pub use changes::{docker_changes, line as diff_line};
pub use config::{merge_env, ContainerConfig, CreateOptions, Network};
pub use names::{random_name, validate as validate_name};

use crate::exec::{self, CancelToken, ExitStatus, OutputSink, ProcessSpec, Stream};
use crate::imageconfig::{apply_changes, edit_exec_config, push_history};
use crate::timefmt::{now_secs, rfc3339};
use crate::user::resolve_run_user;
use crate::{Engine, Error};

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never run (or its command could not be started).
    #[default]
    Created,
    /// Its command is running.
    Running,
    /// Its command ended.
    Exited,
}

impl Status {
    /// `created`, `running` or `exited`, as Docker's `State.Status`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// Docker's `State`, the parts strata records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Created, running or exited.
    pub status: Status,
    /// The pid of the command's init (host PID namespace) while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The init's start time (clock ticks after boot, `/proc/<pid>/stat`), so a reused pid
    /// is never killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The exit code of the last run (126/127 when the command could not be started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the last run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the last run ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why the last start failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A container: what its record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Unique name (`--name`, or a random `adjective_surname`).
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's ID (config digest).
    pub image_id: Digest,
    /// The image's manifest.
    pub manifest: Descriptor,
    /// When it was made (RFC 3339 with nanoseconds).
    pub created: String,
    /// What it runs and how.
    pub config: ContainerConfig,
    /// Its state.
    pub state: State,
}

impl Container {
    /// The 12 hex digits Docker shows.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// The command line `ps` shows: entrypoint and command joined with spaces.
    pub fn command(&self) -> String {
        self.config.argv().join(" ")
    }

    /// When it was made, in seconds since the epoch.
    pub fn created_secs(&self) -> Option<i64> {
        crate::timefmt::parse_rfc3339(&self.created)
    }
}

/// Options of [`Containers::commit`].
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Tag for the new image (an untagged image when `None`, like Docker's).
    pub reference: Option<Reference>,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the image's author.
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config (`CMD ["sh"]`, `ENV A=1`).
    pub changes: Vec<String>,
    /// How the new layer is stored.
    pub compression: Compression,
}

/// What [`Containers::commit`] made.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The new image.
    pub image: Image,
    /// Whether a layer was added (false when the container changed nothing).
    pub new_layer: bool,
}

/// The snapshot key of container `id`'s writable layer.
pub fn snapshot_key(id: &str) -> String {
    format!("container-{id}")
}

/// The snapshot key of the read-only view `strata mount IMAGE` keeps for an image.
pub fn image_mount_key(image_id: &Digest) -> String {
    format!("image-mount-{}", image_id.hex())
}

/// Whether a process is running container `id` of the store at `store_root` (it holds
/// the container's lock).
pub fn is_running(store_root: &Path, id: &str) -> bool {
    let path = lock_dir(store_root).join(format!("{id}.lock"));
    let Ok(file) = File::open(&path) else {
        return false;
    };
    match rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockShared) {
        Ok(()) => false,
        Err(e) => e == rustix::io::Errno::WOULDBLOCK,
    }
}

/// The exit code `strata run` gives for a start that failed with `e`, as Docker's CLI:
/// 127 when the command does not exist, 126 when it cannot be executed, 137 when it was
/// killed by a cancellation, 125 for any other failure of strata itself.
pub fn exit_code_of(e: &Error) -> i32 {
    match e {
        Error::CommandNotFound { .. } => 127,
        Error::Cancelled => 137,
        Error::Setup { stage, source } if stage.starts_with("exec ") => {
            match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
                Some(libc::EACCES) | Some(libc::EISDIR) | Some(libc::ENOEXEC)
                | Some(libc::EPERM) => 126,
                _ => 125,
            }
        }
        _ => 125,
    }
}

fn lock_dir(store_root: &Path) -> PathBuf {
    store_root.join("builder").join("containers")
}

/// Replaces `path` with `bytes` at once: written and synced beside it, then renamed over it,
/// so a reader sees the old record or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".record-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename", path, e.error))?;
    Ok(())
}

/// RFC 3339 in UTC with nanoseconds, as Docker records container times.
fn now_nanos() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = rfc3339(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    format!("{}.{:09}Z", secs.trim_end_matches('Z'), now.subsec_nanos())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    use std::io::Read;
    let mut out = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
    Ok(out)
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `path` is a directory overlayfs marked opaque (deleted and made again).
fn is_opaque_dir(path: &Path) -> bool {
    let mut buf = [0u8; 2];
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(rustix::fs::lgetxattr(path, *name, &mut buf[..]), Ok(1) if buf[0] == b'y'))
}

/// Docker's view of directories deleted and made again in the upper dir (`opaque`): the
/// directory reads as deleted (`D`), what is in it now as added or changed, and the lower
/// entries it hides are not listed one by one.
fn opaque_as_deleted(changes: Vec<Change>, opaque: &[PathBuf]) -> Vec<Change> {
    let own: Vec<Change> = opaque
        .iter()
        .filter(|o| !changes.iter().any(|c| c.path == **o))
        .map(|o| Change {
            kind: ChangeKind::Delete,
            path: o.clone(),
        })
        .collect();
    own.into_iter()
        .chain(changes)
        .filter_map(|mut c| {
            if opaque.contains(&c.path) {
                c.kind = ChangeKind::Delete;
                return Some(c);
            }
            let hidden = c.kind == ChangeKind::Delete
                && opaque.iter().any(|o| c.path.starts_with(o) && c.path != *o);
            (!hidden).then_some(c)
        })
        .collect()
}

/// Passes output on and records the run as started once the init exists.
struct Tracking<'s, 'f> {
    inner: &'s mut dyn OutputSink,
    on_start: &'f mut dyn FnMut(u32),
}

impl OutputSink for Tracking<'_, '_> {
    fn line(&mut self, stream: Stream, line: &[u8]) {
        self.inner.line(stream, line);
    }
    fn piece(&mut self, stream: Stream, piece: &[u8]) {
        self.inner.piece(stream, piece);
    }
    fn raw(&self) -> bool {
        self.inner.raw()
    }
    fn bytes(&mut self, stream: Stream, data: &[u8]) {
        self.inner.bytes(stream, data);
    }
    fn started(&mut self, init_pid: u32) {
        (self.on_start)(init_pid);
        self.inner.started(init_pid);
    }
}

/// The containers of one store (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Containers<'a> {
    engine: &'a Engine,
}

impl Engine {
    /// The containers of this store.
    pub fn containers(&self) -> Containers<'_> {
        Containers { engine: self }
    }
}

/// A held container lock (released on drop).
#[derive(Debug)]
struct Held(#[allow(dead_code)] File);

/// How long a container lock that looks taken is tried again while the container's record
/// says nobody runs it (see `Containers::try_lock`).
const LOCK_SETTLE: Duration = Duration::from_secs(2);

impl<'a> Containers<'a> {
    fn dir(&self) -> Result<PathBuf, Error> {
        let dir = lock_dir(self.engine.store().root());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        Ok(dir)
    }

    fn open_lock(&self, name: &str) -> Result<File, Error> {
        let path = self.dir()?.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))
    }

    /// The lock of container `id` if nobody runs it.
    ///
    /// A lock is an open file description, and a process forked by another thread of this
    /// program holds a copy of it from fork until exec: for that moment the lock looks taken
    /// although the container's runner has let go. So while the container's record says it
    /// is not running, a taken lock is tried again for up to [`LOCK_SETTLE`].
    fn try_lock(&self, id: &str) -> Result<Option<Held>, Error> {
        let file = self.open_lock(&format!("{id}.lock"))?;
        let deadline = Instant::now() + LOCK_SETTLE;
        loop {
            match rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(Held(file))),
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let idle = self
                        .read(id)?
                        .is_some_and(|c| c.state.status != Status::Running);
                    if !idle || Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(Error::io(
                        "lock",
                        self.dir()?.join(format!("{id}.lock")),
                        e.into(),
                    ))
                }
            }
        }
    }

    fn lock_names(&self) -> Result<Held, Error> {
        let file = self.open_lock("names.lock")?;
        rustix::fs::flock(file.as_fd(), FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock", self.dir().unwrap_or_default(), e.into()))?;
        Ok(Held(file))
    }

    /// Where container `id`'s record file is.
    fn record_path(&self, id: &str) -> Result<PathBuf, Error> {
        Ok(self.dir()?.join(format!("{id}.json")))
    }

    /// Writes `container`'s record file (atomically), then points its ref at the image's
    /// manifest when it does not already, keeping the image (and its unpacked chain) alive.
    fn write(&self, container: &Container) -> Result<(), Error> {
        let path = self.record_path(&container.id)?;
        let bytes = serde_json::to_vec_pretty(container).map_err(|e| Error::InvalidSpec {
            reason: format!("container record: {e}"),
        })?;
        write_atomic(&path, &bytes)?;
        let store = self.engine.store();
        let target = store.get_ref(RefKind::Container, &container.id)?;
        if target.as_ref() != Some(&container.manifest) {
            let _lease = store.lease()?;
            store.set_ref(RefKind::Container, &container.id, &container.manifest)?;
        }
        Ok(())
    }

    /// Reads container `id`'s record.
    fn read(&self, id: &str) -> Result<Option<Container>, Error> {
        let store = self.engine.store();
        let Some(target) = store.get_ref(RefKind::Container, id)? else {
            return Ok(None);
        };
        let path = self.record_path(id)?;
        let mut container: Container = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::InvalidSpec {
                reason: format!("container record {}: {e}", path.display()),
            })?,
            // Made before record files: the data is in the store record the ref names.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && target.media_type == strata_store::media::STRATA_RECORD =>
            {
                let record = store.read_record(&target.digest)?;
                serde_json::from_value(record.data).map_err(|e| Error::InvalidSpec {
                    reason: format!("container record {id}: {e}"),
                })?
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        self.settle(&mut container);
        Ok(Some(container))
    }

    /// A record that says running while nobody runs it: its `strata run` died.
    fn settle(&self, c: &mut Container) {
        if c.state.status == Status::Running && !is_running(self.engine.store().root(), &c.id) {
            c.state.status = Status::Exited;
            c.state.exit_code = Some(137);
            c.state.pid = None;
            c.state.pid_start = None;
            c.state.error = Some("the process running the container ended first".into());
        }
    }

    /// Changes container `id`'s state.
    fn update(&self, id: &str, edit: impl FnOnce(&mut State)) -> Result<(), Error> {
        let mut container = self.read(id)?.ok_or_else(|| Error::ContainerNotFound {
            name: id.to_string(),
        })?;
        edit(&mut container.state);
        self.write(&container)
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>, Error> {
        let mut out = Vec::new();
        for r in self.engine.store().list_refs(RefKind::Container)? {
            if let Some(c) = self.read(&r.name)? {
                out.push(c);
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The container a user names: full ID, name, or a unique ID prefix (Docker's order).
    pub fn get(&self, name: &str) -> Result<Container, Error> {
        let wanted = name.strip_prefix('/').unwrap_or(name);
        if wanted.len() == 64 {
            if let Some(c) = self.read(wanted)? {
                return Ok(c);
            }
        }
        let all = self.list()?;
        if let Some(c) = all.iter().find(|c| c.name == wanted) {
            return Ok(c.clone());
        }
        let hex = !wanted.is_empty() && wanted.bytes().all(|b| b.is_ascii_hexdigit());
        let matches: Vec<&Container> = all
            .iter()
            .filter(|c| hex && c.id.starts_with(&wanted.to_ascii_lowercase()))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::ContainerNotFound {
                name: name.to_string(),
            }),
            many => Err(Error::AmbiguousContainer {
                prefix: name.to_string(),
                count: many.len(),
            }),
        }
    }

    /// Makes a container of `image_name` (a reference or image ID in the store): its
    /// record, then its writable snapshot on the image's unpacked layers.
    pub fn create(&self, image_name: &str, opts: &CreateOptions) -> Result<Container, Error> {
        let store = self.engine.store();
        let _lease = store.lease()?;
        let image = store.resolve(image_name)?;
        let id = hex::encode(random_bytes::<32>()?);
        let config = config::resolve(&image.config_parsed, image_name, opts, &id[..12])?;
        let given = opts.name.as_deref().map(validate_name).transpose()?;
        let names = self.lock_names()?;
        let existing = self.list()?;
        let taken = |n: &str| existing.iter().find(|c| c.name == n);
        let name = match given {
            Some(n) => {
                if let Some(other) = taken(&n) {
                    return Err(Error::ContainerNameInUse {
                        name: n,
                        id: other.id.clone(),
                    });
                }
                n
            }
            None => {
                let seed = random_bytes::<12>()?;
                (0..64)
                    .map(|attempt| random_name(&seed, attempt))
                    .find(|n| taken(n).is_none())
                    .unwrap_or_else(|| format!("container_{}", &id[..12]))
            }
        };
        let container = Container {
            id: id.clone(),
            name,
            image: image_name.to_string(),
            image_id: image.id(),
            manifest: image.manifest.clone(),
            created: now_nanos(),
            config,
            state: State::default(),
        };
        // The record first: a crash before the snapshot exists leaves a container that
        // `rm` removes (and `start` makes the snapshot it lacks).
        self.write(&container)?;
        drop(names);
        if let Err(e) = self.ensure_snapshot(&container, &image) {
            let _ = store.remove_ref(RefKind::Container, &id);
            let _ = std::fs::remove_file(self.record_path(&id)?);
            return Err(e);
        }
        Ok(container)
    }

    /// Makes the container's snapshot when it is missing.
    fn ensure_snapshot(&self, c: &Container, image: &Image) -> Result<(), Error> {
        let snap = self.engine.snapshotter()?;
        let key = snapshot_key(&c.id);
        if snap.stat(&key).is_ok() {
            return Ok(());
        }
        let top = self.engine.ensure_unpacked(image)?;
        match snap.prepare(&key, top.as_deref()) {
            Ok(_) | Err(strata_overlay::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn image_of(&self, c: &Container) -> Result<Image, Error> {
        Ok(self.engine.store().image(&c.manifest)?)
    }

    /// Runs container `name`'s command to completion, streaming its output to `sink`;
    /// returns how it ended. The state is recorded (running with the init's pid, then
    /// exited with the code); a start that fails (no such command, not executable, a user
    /// not in the image) leaves it created with the code [`exit_code_of`] gives.
    pub fn start(
        &self,
        name: &str,
        sink: &mut dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ExitStatus, Error> {
        let c = self.get(name)?;
        let Some(lock) = self.try_lock(&c.id)? else {
            return Err(Error::ContainerRunning {
                id: c.short_id().to_string(),
                action: "start",
            });
        };
        let result = self.run_locked(&c, sink, cancel);
        let finished = now_nanos();
        let recorded = self.update(&c.id, |state| {
            state.pid = None;
            state.pid_start = None;
            match &result {
                Ok(status) => {
                    state.status = Status::Exited;
                    state.exit_code = Some(status.code());
                    state.finished_at = Some(finished);
                    state.error = None;
                }
                Err(Error::Cancelled) => {
                    state.status = Status::Exited;
                    state.exit_code = Some(exit_code_of(&Error::Cancelled));
                    state.finished_at = Some(finished);
                    state.error = None;
                }
                Err(e) => {
                    state.status = Status::Created;
                    state.exit_code = Some(exit_code_of(e));
                    state.error = Some(crate::error_text(e));
                }
            }
        });
        drop(lock);
        let status = result?;
        recorded?;
        Ok(status)
    }

    fn run_locked(
        &self,
        c: &Container,
        sink: &mut dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ExitStatus, Error> {
        let image = self.image_of(c)?;
        self.ensure_snapshot(c, &image)?;
        let snap = self.engine.snapshotter()?;
        let key = snapshot_key(&c.id);
        let (rootfs, ours) = match snap.mounted_at(&key)? {
            Some(path) => (path, false),
            None => (snap.mount(&key)?, true),
        };
        let result = (|| {
            let user = resolve_run_user(&rootfs, &c.config.user)?;
            let mut spec = ProcessSpec::new(&rootfs, &[]);
            spec.argv = c.config.argv();
            spec.env = c.config.process_env(&user.home);
            spec.cwd = c.config.cwd().to_string();
            spec.uid = user.uid;
            spec.gid = user.gid;
            spec.groups = user.supplementary_gids;
            spec.network = c.config.network.mode();
            spec.hostname = c.config.hostname.clone();
            let mut on_start = |pid: u32| {
                let started = now_nanos();
                // The run goes on even if the state cannot be written; `rm -f` then
                // cannot find the pid, and the exit is recorded at the end.
                let _ = self.update(&c.id, |state| {
                    state.status = Status::Running;
                    state.pid = Some(pid);
                    state.pid_start = process_start(pid);
                    state.started_at = Some(started);
                    state.finished_at = None;
                    state.exit_code = None;
                    state.error = None;
                });
            };
            let mut tracking = Tracking {
                inner: sink,
                on_start: &mut on_start,
            };
            Ok(exec::run(&spec, &mut tracking, cancel)?.status)
        })();
        // Left mounted when someone mounted it on purpose meanwhile (`strata mount`). An
        // unmount that fails here is undone by the next crash recovery.
        if ours && !snap.is_kept(&key).unwrap_or(false) {
            let _ = snap.unmount(&key);
        }
        result
    }

    /// Removes container `name`: its writable layer and its record. A running container
    /// needs `force`: its command is killed first.
    pub fn remove(&self, name: &str, force: bool) -> Result<Container, Error> {
        let c = self.get(name)?;
        let lock = match self.try_lock(&c.id)? {
            Some(lock) => lock,
            None if !force => {
                return Err(Error::ContainerRunning {
                    id: c.short_id().to_string(),
                    action: "remove",
                })
            }
            None => self.kill_and_wait(&c.id)?,
        };
        let snap = self.engine.snapshotter()?;
        let key = snapshot_key(&c.id);
        if snap.stat(&key).is_ok() {
            snap.remove(&key)?;
        }
        self.engine.store().remove_ref(RefKind::Container, &c.id)?;
        let record = self.record_path(&c.id)?;
        std::fs::remove_file(&record)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| Error::io("remove", &record, e))?;
        let _ = std::fs::remove_file(self.dir()?.join(format!("{}.lock", c.id)));
        drop(lock);
        snap.empty_trash()?;
        Ok(c)
    }

    /// Kills the running command of `id` and waits for its runner to let go.
    fn kill_and_wait(&self, id: &str) -> Result<Held, Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.read(id)? {
                if let (Some(pid), Some(start)) = (c.state.pid, c.state.pid_start) {
                    if process_start(pid) == Some(start) {
                        if let Ok(pid) = i32::try_from(pid) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
            if let Some(lock) = self.try_lock(id)? {
                return Ok(lock);
            }
            if Instant::now() > deadline {
                return Err(Error::ContainerRunning {
                    id: id.get(..12).unwrap_or(id).to_string(),
                    action: "remove (it did not stop within 30 seconds)",
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The container's changes as `docker diff` lists them (read from its upper dir only).
    pub fn diff(&self, name: &str) -> Result<Vec<Change>, Error> {
        let c = self.get(name)?;
        let key = snapshot_key(&c.id);
        let snap = self.engine.snapshotter()?;
        if snap.stat(&key).is_err() {
            return Ok(Vec::new());
        }
        let changes = snap.diff(&key)?;
        let opaque: Vec<PathBuf> = match snap.driver() {
            Driver::Overlay => {
                let upper = snap.graph_driver_data(&key)?.upper_dir;
                // A recreated folder with the old metadata is no change of its own: look at
                // every folder above a change too.
                let mut folders = std::collections::BTreeSet::new();
                for c in &changes {
                    if c.kind == ChangeKind::Modify {
                        folders.insert(c.path.clone());
                    }
                    folders.extend(c.path.ancestors().skip(1).map(Path::to_path_buf));
                }
                folders
                    .into_iter()
                    .filter(|p| !p.as_os_str().is_empty() && is_opaque_dir(&upper.join(p)))
                    .collect()
            }
            Driver::Vfs => Vec::new(),
        };
        Ok(docker_changes(&opaque_as_deleted(changes, &opaque)))
    }

    /// Makes a new image of container `name`: the image's layers plus its writable layer
    /// (none when nothing changed), the container's config (command, env, working
    /// directory, user) with `opts.changes` applied, and a history entry as `docker commit`
    /// writes it. Tagged with `opts.reference`, else kept as an untagged image.
    pub fn commit(&self, name: &str, opts: &CommitOptions) -> Result<Committed, Error> {
        let c = self.get(name)?;
        let Some(_lock) = self.try_lock(&c.id)? else {
            return Err(Error::ContainerRunning {
                id: c.short_id().to_string(),
                action: "commit",
            });
        };
        let store = self.engine.store();
        let _lease = store.lease()?;
        let image = self.image_of(&c)?;
        let snap = self.engine.snapshotter()?;
        let key = snapshot_key(&c.id);
        let changed = snap.stat(&key).is_ok() && !snap.diff(&key)?.is_empty();
        let mut layers = image.layers.clone();
        let mut diff_ids = image.diff_ids.clone();
        if changed {
            let mut writer = store.layer_writer(opts.compression)?;
            snap.write_layer(&key, &mut writer, &TarOptions::default())?;
            let layer = writer.finish()?;
            layers.push(layer.descriptor());
            diff_ids.push(layer.diff_id);
        }
        let mut config = image.config_parsed.clone();
        let cc = &c.config;
        let nonempty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        edit_exec_config(&mut config, |x| {
            x.set_env(nonempty(&cc.env));
            x.set_cmd(nonempty(&cc.cmd));
            x.set_entrypoint(nonempty(&cc.entrypoint));
            x.set_working_dir((!cc.working_dir.is_empty()).then(|| cc.working_dir.clone()));
            x.set_user((!cc.user.is_empty()).then(|| cc.user.clone()));
        });
        // `docker commit --change` edits the config only: no history entry per change.
        let history = config.oci.history().clone();
        let refs: Vec<&str> = opts.changes.iter().map(String::as_str).collect();
        apply_changes(&mut config, &refs)?;
        config.oci.set_history(history);
        let created = rfc3339(now_secs());
        let mut entry = History::default();
        entry.set_created(Some(created.clone()));
        entry.set_created_by(Some(cc.cmd.join(" ")));
        entry.set_comment(opts.message.clone().filter(|m| !m.is_empty()));
        entry.set_author(opts.author.clone().filter(|a| !a.is_empty()));
        if !changed {
            entry.set_empty_layer(Some(true));
        }
        push_history(&mut config, entry);
        config.oci.set_created(Some(created));
        if let Some(author) = opts.author.clone().filter(|a| !a.is_empty()) {
            config.oci.set_author(Some(author));
        }
        config.set_diff_ids(&diff_ids);
        let new = store.write_image_raw(&config.to_bytes(), &layers)?;
        match &opts.reference {
            Some(r) => store.tag(r, &new)?,
            None => store.set_ref(RefKind::Untagged, &new.id().hex(), &new.manifest)?,
        }
        Ok(Committed {
            image: new,
            new_layer: changed,
        })
    }

    /// Mounts container `name`'s filesystem (image layers + writable layer) and keeps it
    /// mounted until [`Containers::unmount`]; returns where.
    pub fn mount(&self, name: &str) -> Result<PathBuf, Error> {
        let c = self.get(name)?;
        self.ensure_snapshot(&c, &self.image_of(&c)?)?;
        Ok(self
            .engine
            .snapshotter()?
            .mount_kept(&snapshot_key(&c.id))?)
    }

    /// Ends a [`Containers::mount`] (refused while the container runs: its runner
    /// unmounts it when the command ends).
    pub fn unmount(&self, name: &str) -> Result<(), Error> {
        let c = self.get(name)?;
        if is_running(self.engine.store().root(), &c.id) {
            return Err(Error::ContainerRunning {
                id: c.short_id().to_string(),
                action: "unmount",
            });
        }
        let key = snapshot_key(&c.id);
        let snap = self.engine.snapshotter()?;
        if snap.stat(&key).is_ok() {
            snap.unmount(&key)?;
        }
        Ok(())
    }

    /// Mounts a read-only view of `image` (unpacking it if needed), kept until
    /// [`Containers::unmount_image`]; returns where.
    pub fn mount_image(&self, image: &Image) -> Result<PathBuf, Error> {
        let snap = self.engine.snapshotter()?;
        let key = image_mount_key(&image.id());
        if snap.stat(&key).is_err() {
            let top = self.engine.ensure_unpacked(image)?;
            match snap.view(&key, top.as_deref()) {
                Ok(_) | Err(strata_overlay::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(snap.mount_kept(&key)?)
    }

    /// Ends [`Containers::mount_image`] of the image with this ID; false when it was not
    /// mounted.
    pub fn unmount_image(&self, image_id: &Digest) -> Result<bool, Error> {
        let snap = self.engine.snapshotter()?;
        let key = image_mount_key(image_id);
        if snap.stat(&key).is_err() {
            return Ok(false);
        }
        snap.unmount(&key)?;
        snap.remove(&key)?;
        Ok(true)
    }

    /// Writes container `name`'s whole filesystem (the merged view) as one tar into `out`,
    /// in the canonical order of the overlay crate's tar writer.
    pub fn export(&self, name: &str, out: &mut dyn Write) -> Result<TarStats, Error> {
        let c = self.get(name)?;
        self.ensure_snapshot(&c, &self.image_of(&c)?)?;
        let snap = self.engine.snapshotter()?;
        let key = snapshot_key(&c.id);
        let (merged, ours) = match snap.mounted_at(&key)? {
            Some(path) => (path, false),
            None => (snap.mount(&key)?, true),
        };
        let result = (|| {
            let empty = tempfile::tempdir().map_err(|e| Error::io("create", "a temp dir", e))?;
            let set = diff_dirs(empty.path(), &merged)?;
            let mut out = out;
            Ok(write_tar(&set, &mut out, &TarOptions::default())?)
        })();
        if ours && !snap.is_kept(&key).unwrap_or(false) {
            snap.unmount(&key)?;
        }
        result
    }

    /// Disk use of container `id`'s writable layer (`None` when it has none).
    pub fn usage(&self, id: &str) -> Option<Usage> {
        self.engine
            .snapshotter()
            .ok()?
            .usage(&snapshot_key(id))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(kind: ChangeKind, p: &str) -> Change {
        Change {
            kind,
            path: PathBuf::from(p),
        }
    }

    #[test]
    fn a_recreated_folder_reads_as_deleted_and_hides_its_old_entries() {
        use ChangeKind::*;
        let changes = vec![
            c(Delete, "opt/new/f"),
            c(Add, "opt/new/g"),
            c(Delete, "opt/other"),
            c(Modify, "srv"),
            c(Delete, "srv/x"),
        ];
        let opaque = [PathBuf::from("opt/new"), PathBuf::from("srv")];
        let lines: Vec<String> = docker_changes(&opaque_as_deleted(changes, &opaque))
            .iter()
            .map(diff_line)
            .collect();
        assert_eq!(
            lines,
            [
                "C /opt",
                "D /opt/new",
                "A /opt/new/g",
                "D /opt/other",
                "D /srv"
            ]
        );
    }
}
