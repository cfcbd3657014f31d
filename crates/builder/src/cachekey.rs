//! Stable, versioned cache keys and the explanation of cache misses.
//!
//! A step's cache key is sha256 over a canonical encoding of everything that can change its
//! result (reference notes §5.6): the scheme version, the kind of step, the platform, what it
//! builds on (the previous step, a base image, or nothing for `COPY --link`), the instruction
//! after expansion, the build args and environment it sees, its settings (working directory,
//! user, network, shell, `--chown`...), its mounts and the content digest of the files it
//! copies. The encoding is ours and never `std::hash`: every value carries a type tag and a
//! length, every field its name, maps are sorted, so two different inputs cannot encode alike
//! and the same inputs encode alike on every machine and in every release until
//! [`CACHE_KEY_VERSION`] changes.
//!
//! The inputs are kept as a [`KeyInputs`] record (stored as JSON next to a cache entry), so a
//! later miss can be explained by comparing the new record with the one of the last build of
//! the same step: [`diff`] lists what differs, in a fixed order of importance, and [`explain`]
//! words the first difference for the user ("build arg VERSION changed from "1" to "2"").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// Version of the key scheme. Bump it whenever the encoding or the meaning of an input
/// changes: every key changes with it, so no stale entry can be mistaken for a fresh one.
pub const CACHE_KEY_VERSION: u32 = 1;

/// A cache key: sha256 of a canonical encoding, shown as `sha256:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lower-case hex characters, without the algorithm prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<64 hex>` (or the bare hex).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
        let invalid = || Error::InvalidCacheKey {
            value: text.to_string(),
        };
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut out).map_err(|_| invalid())?;
        Ok(CacheKey(out))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

impl Serialize for CacheKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CacheKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        CacheKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Type tags of the canonical encoding. Each value starts with one, so a string can never be
/// read as a number or a list boundary.
mod tag {
    pub const FIELD: u8 = b'F';
    pub const STR: u8 = b's';
    pub const BYTES: u8 = b'b';
    pub const U64: u8 = b'u';
    pub const BOOL: u8 = b'?';
    pub const NONE: u8 = b'0';
    pub const SOME: u8 = b'1';
    pub const LIST: u8 = b'L';
    pub const MAP: u8 = b'M';
    pub const VARIANT: u8 = b'V';
}

/// Writes the canonical encoding of a key's inputs.
///
/// Every value is a one-byte type tag followed by its length (u64, big-endian) where it has
/// one and its bytes; lists and maps are prefixed with their element count, and maps are
/// written in sorted key order. Field names are encoded too, so adding or renaming a field
/// changes every key (which is what a version bump announces).
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    /// An empty encoding.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the encoding, keeping its buffer (to encode again without allocating).
    pub fn clear(&mut self) {
        self.out.clear();
    }

    fn len(&mut self, n: usize) {
        self.out.extend_from_slice(&(n as u64).to_be_bytes());
    }

    /// Names the value that follows.
    pub fn field(&mut self, name: &str) -> &mut Self {
        self.out.push(tag::FIELD);
        self.len(name.len());
        self.out.extend_from_slice(name.as_bytes());
        self
    }

    /// A string.
    pub fn str(&mut self, value: &str) -> &mut Self {
        self.out.push(tag::STR);
        self.len(value.len());
        self.out.extend_from_slice(value.as_bytes());
        self
    }

    /// Raw bytes.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.out.push(tag::BYTES);
        self.len(value.len());
        self.out.extend_from_slice(value);
        self
    }

    /// An unsigned number.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.out.push(tag::U64);
        self.out.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// A boolean.
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.out.push(tag::BOOL);
        self.out.push(u8::from(value));
        self
    }

    /// The name of an enum variant; its payload (if any) follows.
    pub fn variant(&mut self, name: &str) -> &mut Self {
        self.out.push(tag::VARIANT);
        self.len(name.len());
        self.out.extend_from_slice(name.as_bytes());
        self
    }

    /// An optional string.
    pub fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.out.push(tag::NONE),
            Some(v) => {
                self.out.push(tag::SOME);
                self.str(v);
            }
        }
        self
    }

    /// Starts a list of `count` elements; the elements follow.
    pub fn list(&mut self, count: usize) -> &mut Self {
        self.out.push(tag::LIST);
        self.len(count);
        self
    }

    /// A string-to-string map, written in sorted key order.
    pub fn map(&mut self, map: &BTreeMap<String, String>) -> &mut Self {
        self.out.push(tag::MAP);
        self.len(map.len());
        for (k, v) in map {
            self.str(k);
            self.str(v);
        }
        self
    }

    /// The encoding so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    /// The key: sha256 of the encoding.
    pub fn finish(&self) -> CacheKey {
        CacheKey(Sha256::digest(&self.out).into())
    }
}

/// The kind of step a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A `RUN` step.
    Run,
    /// A `COPY` step.
    Copy,
    /// An `ADD` step.
    Add,
    /// A `WORKDIR` that creates its directory.
    Workdir,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Run => "RUN",
            OpKind::Copy => "COPY",
            OpKind::Add => "ADD",
            OpKind::Workdir => "WORKDIR",
        }
    }
}

/// What a step builds on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Parent {
    /// Nothing: the step's result does not depend on an earlier filesystem (`FROM scratch`
    /// first step, or `COPY --link`, whose layer is independent of the layers below).
    None,
    /// A base image, as named in `FROM` and identified by its image ID.
    Image {
        /// The name written in `FROM` (after expansion).
        name: String,
        /// The image's ID (`sha256:<hex>` of its config).
        id: String,
    },
    /// The previous step, by its cache key.
    Step {
        /// The previous step's key.
        key: CacheKey,
    },
}

/// One `RUN --mount` (or other mount) as it enters the key: its target and its options
/// (type, id, readonly, sharing, source, from-key, content digest of read-only binds, secret
/// id...). Secret values and cache contents never appear here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInput {
    /// Where the mount appears in the container.
    pub target: String,
    /// Its options, by name.
    pub options: BTreeMap<String, String>,
}

/// What the key records of one copied file (for explanations; the key itself uses only the
/// digest over all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInput {
    /// `file`, `dir`, `symlink`, `fifo`, `char` or `block`.
    pub kind: String,
    /// Permission bits with setuid/setgid/sticky (the type bits left out).
    pub mode: u32,
    /// Size in bytes (regular files; 0 otherwise).
    pub size: u64,
    /// The file's content-hash digest (header + content, see `context::hash`).
    pub digest: String,
}

/// The files a `COPY`/`ADD` reads: their combined digest, which enters the key, and the
/// per-file records that explain a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesInput {
    /// Digest over all selected sources (names, metadata and content).
    pub digest: String,
    /// Each file under the selection, by its path relative to the source root.
    pub files: BTreeMap<String, FileInput>,
}

/// Everything a step's cache key is made of, kept as JSON next to the cache entry so that a
/// later miss can be explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    /// The key scheme version ([`CACHE_KEY_VERSION`] when created).
    pub version: u32,
    /// Which kind of step.
    pub op: OpKind,
    /// The platform the step builds for (`linux/amd64`).
    pub platform: String,
    /// What the step builds on.
    pub parent: Parent,
    /// The instruction after expansion, as the user would recognise it.
    pub instruction: String,
    /// Build args in scope with a value (declared with `ARG`), by name.
    pub args: BTreeMap<String, String>,
    /// The environment from the image and `ENV`, in order.
    pub env: Vec<(String, String)>,
    /// Step settings by name: `cwd`, `user`, `network`, `shell`, `chown`, `chmod`, ...
    pub settings: BTreeMap<String, String>,
    /// Mounts, in the order they are made.
    pub mounts: Vec<MountInput>,
    /// The copied files, for `COPY`/`ADD`.
    pub sources: Option<SourcesInput>,
}

impl KeyInputs {
    /// Inputs of a step of kind `op` on `platform` building on `parent`, with nothing else
    /// set yet; fill in the remaining fields before computing the key.
    pub fn new(op: OpKind, platform: &str, parent: Parent, instruction: &str) -> Self {
        KeyInputs {
            version: CACHE_KEY_VERSION,
            op,
            platform: platform.to_string(),
            parent,
            instruction: instruction.to_string(),
            args: BTreeMap::new(),
            env: Vec::new(),
            settings: BTreeMap::new(),
            mounts: Vec::new(),
            sources: None,
        }
    }

    /// The canonical encoding of these inputs. Per-file records of the sources are left out:
    /// their combined digest stands for them.
    pub fn encode(&self) -> Encoder {
        let mut e = Encoder::new();
        e.str("strata-cache-key");
        e.field("version").u64(u64::from(self.version));
        e.field("op").variant(self.op.name());
        e.field("platform").str(&self.platform);
        e.field("parent");
        match &self.parent {
            Parent::None => e.variant("none"),
            Parent::Image { name, id } => e.variant("image").str(name).str(id),
            Parent::Step { key } => e.variant("step").bytes(key.as_bytes()),
        };
        e.field("instruction").str(&self.instruction);
        e.field("args").map(&self.args);
        e.field("env").list(self.env.len());
        for (k, v) in &self.env {
            e.str(k).str(v);
        }
        e.field("settings").map(&self.settings);
        e.field("mounts").list(self.mounts.len());
        for m in &self.mounts {
            e.str(&m.target).map(&m.options);
        }
        e.field("sources")
            .opt_str(self.sources.as_ref().map(|s| s.digest.as_str()));
        e
    }

    /// A copy without the copied files' per-file records (their digest stays, so the key is
    /// the same): what cache records and last builds keep, the per-file lists being stored
    /// on their own and read only to explain a miss.
    pub fn without_files(&self) -> KeyInputs {
        KeyInputs {
            version: self.version,
            op: self.op,
            platform: self.platform.clone(),
            parent: self.parent.clone(),
            instruction: self.instruction.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            settings: self.settings.clone(),
            mounts: self.mounts.clone(),
            sources: self.sources.as_ref().map(|s| SourcesInput {
                digest: s.digest.clone(),
                files: BTreeMap::new(),
            }),
        }
    }

    /// The cache key of these inputs.
    pub fn key(&self) -> CacheKey {
        self.encode().finish()
    }

    /// The record as JSON, to keep next to the cache entry.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads a record written by [`KeyInputs::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|source| Error::CacheRecord { source })
    }
}

/// How one copied file differs between two builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Only in the new build.
    Added,
    /// Only in the old build.
    Removed,
    /// It became another kind of file.
    Kind {
        /// Old kind.
        old: String,
        /// New kind.
        new: String,
    },
    /// Its permission bits changed.
    Mode {
        /// Old mode.
        old: u32,
        /// New mode.
        new: u32,
    },
    /// Its content (or link target, device numbers, extended attributes) changed.
    Content,
}

/// One input that differs between the last build of a step and this one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The key scheme itself changed.
    Version {
        /// Old version.
        old: u32,
        /// New version.
        new: u32,
    },
    /// The kind of step changed.
    Op {
        /// Old kind.
        old: OpKind,
        /// New kind.
        new: OpKind,
    },
    /// The target platform changed.
    Platform {
        /// Old platform.
        old: String,
        /// New platform.
        new: String,
    },
    /// What the step builds on changed.
    Parent {
        /// Old parent.
        old: Parent,
        /// New parent.
        new: Parent,
    },
    /// The instruction text changed.
    Instruction {
        /// Old text.
        old: String,
        /// New text.
        new: String,
    },
    /// A build arg was set, unset or changed value.
    Arg {
        /// The arg's name.
        name: String,
        /// Its old value, if it had one.
        old: Option<String>,
        /// Its new value, if it has one.
        new: Option<String>,
    },
    /// An environment variable was set, unset or changed value.
    Env {
        /// The variable's name.
        name: String,
        /// Its old value, if it had one.
        old: Option<String>,
        /// Its new value, if it has one.
        new: Option<String>,
    },
    /// The same environment variables, in another order.
    EnvOrder,
    /// A step setting (working directory, user, network, ...) changed.
    Setting {
        /// The setting's name.
        name: String,
        /// Its old value, if it had one.
        old: Option<String>,
        /// Its new value, if it has one.
        new: Option<String>,
    },
    /// A mount at `target` was added.
    MountAdded {
        /// Where it is mounted.
        target: String,
    },
    /// A mount at `target` was removed.
    MountRemoved {
        /// Where it was mounted.
        target: String,
    },
    /// An option of the mount at `target` changed.
    MountOption {
        /// Where it is mounted.
        target: String,
        /// The option's name.
        option: String,
        /// Its old value, if it had one.
        old: Option<String>,
        /// Its new value, if it has one.
        new: Option<String>,
    },
    /// The same mounts, in another order.
    MountOrder,
    /// A copied file changed.
    File {
        /// Its path relative to the source root.
        path: String,
        /// How it changed.
        change: FileChange,
    },
    /// The copied sources differ although no single file does (the selection changed).
    Sources,
}

/// Lists what differs between the inputs of the last build of a step (`old`) and this build
/// (`new`), most telling first: scheme version, kind, platform, parent, instruction, build
/// args, environment, settings, mounts, then files in path order.
pub fn diff(old: &KeyInputs, new: &KeyInputs) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.version != new.version {
        changes.push(Change::Version {
            old: old.version,
            new: new.version,
        });
    }
    if old.op != new.op {
        changes.push(Change::Op {
            old: old.op,
            new: new.op,
        });
    }
    if old.platform != new.platform {
        changes.push(Change::Platform {
            old: old.platform.clone(),
            new: new.platform.clone(),
        });
    }
    if old.parent != new.parent {
        changes.push(Change::Parent {
            old: old.parent.clone(),
            new: new.parent.clone(),
        });
    }
    if old.instruction != new.instruction {
        changes.push(Change::Instruction {
            old: old.instruction.clone(),
            new: new.instruction.clone(),
        });
    }
    for (name, old_v, new_v) in map_diff(&old.args, &new.args) {
        changes.push(Change::Arg {
            name,
            old: old_v,
            new: new_v,
        });
    }
    diff_env(&old.env, &new.env, &mut changes);
    for (name, old_v, new_v) in map_diff(&old.settings, &new.settings) {
        changes.push(Change::Setting {
            name,
            old: old_v,
            new: new_v,
        });
    }
    diff_mounts(&old.mounts, &new.mounts, &mut changes);
    diff_sources(old.sources.as_ref(), new.sources.as_ref(), &mut changes);
    changes
}

/// Words why a step missed the cache: the first difference from [`diff`], followed by how
/// many more there are. `None` when the inputs are the same.
pub fn explain(old: &KeyInputs, new: &KeyInputs) -> Option<String> {
    let changes = diff(old, new);
    let first = changes.first()?;
    let more = changes.len() - 1;
    Some(match more {
        0 => first.to_string(),
        1 => format!("{first} (and 1 more difference)"),
        n => format!("{first} (and {n} more differences)"),
    })
}

/// Entries that differ between two maps, in key order: (name, old, new).
fn map_diff(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (o, n) = (old.get(name), new.get(name));
            (o != n).then(|| (name.clone(), o.cloned(), n.cloned()))
        })
        .collect()
}

fn diff_env(old: &[(String, String)], new: &[(String, String)], out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    // Later entries win, as they do when the environment is built.
    let as_map =
        |env: &[(String, String)]| -> BTreeMap<String, String> { env.iter().cloned().collect() };
    let (old_map, new_map) = (as_map(old), as_map(new));
    let before = out.len();
    // Report in the order the new environment lists its names, then names that went away.
    let mut seen = BTreeSet::new();
    for (name, _) in new.iter().chain(old.iter()) {
        if !seen.insert(name.clone()) {
            continue;
        }
        let (o, n) = (old_map.get(name), new_map.get(name));
        if o != n {
            out.push(Change::Env {
                name: name.clone(),
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    }
    if out.len() == before {
        out.push(Change::EnvOrder);
    }
}

fn diff_mounts(old: &[MountInput], new: &[MountInput], out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    let before = out.len();
    let find = |list: &[MountInput], target: &str| -> Option<MountInput> {
        list.iter().find(|m| m.target == target).cloned()
    };
    let mut seen = BTreeSet::new();
    for m in new.iter().chain(old.iter()) {
        if !seen.insert(m.target.clone()) {
            continue;
        }
        match (find(old, &m.target), find(new, &m.target)) {
            (None, Some(_)) => out.push(Change::MountAdded {
                target: m.target.clone(),
            }),
            (Some(_), None) => out.push(Change::MountRemoved {
                target: m.target.clone(),
            }),
            (Some(o), Some(n)) => {
                for (option, old_v, new_v) in map_diff(&o.options, &n.options) {
                    out.push(Change::MountOption {
                        target: m.target.clone(),
                        option,
                        old: old_v,
                        new: new_v,
                    });
                }
            }
            (None, None) => {}
        }
    }
    if out.len() == before {
        out.push(Change::MountOrder);
    }
}

fn diff_sources(old: Option<&SourcesInput>, new: Option<&SourcesInput>, out: &mut Vec<Change>) {
    let empty = BTreeMap::new();
    let (old_files, new_files) = (
        old.map_or(&empty, |s| &s.files),
        new.map_or(&empty, |s| &s.files),
    );
    if old.map(|s| &s.digest) == new.map(|s| &s.digest) && old_files == new_files {
        return;
    }
    let before = out.len();
    let paths: BTreeSet<&String> = old_files.keys().chain(new_files.keys()).collect();
    for path in paths {
        let change = match (old_files.get(path), new_files.get(path)) {
            (None, Some(_)) => FileChange::Added,
            (Some(_), None) => FileChange::Removed,
            (Some(o), Some(n)) if o.kind != n.kind => FileChange::Kind {
                old: o.kind.clone(),
                new: n.kind.clone(),
            },
            (Some(o), Some(n)) if o.mode != n.mode => FileChange::Mode {
                old: o.mode,
                new: n.mode,
            },
            (Some(o), Some(n)) if o.digest != n.digest || o.size != n.size => FileChange::Content,
            _ => continue,
        };
        out.push(Change::File {
            path: path.clone(),
            change,
        });
    }
    if out.len() == before {
        out.push(Change::Sources);
    }
}

/// `sha256:0123456789ab…` for long digests, the text itself otherwise.
fn short(digest: &str) -> String {
    let (prefix, hex_part) = match digest.split_once(':') {
        Some((p, h)) => (format!("{p}:"), h),
        None => (String::new(), digest),
    };
    if hex_part.len() > 12 {
        format!("{prefix}{}…", &hex_part[..12])
    } else {
        digest.to_string()
    }
}

fn describe_parent(parent: &Parent) -> String {
    match parent {
        Parent::None => "nothing (scratch or --link)".to_string(),
        Parent::Image { name, id } => format!("image {name} ({})", short(id)),
        Parent::Step { key } => format!("the step with key {}", short(&key.to_string())),
    }
}

fn kind_phrase(kind: &str) -> String {
    match kind {
        "file" => "a file".to_string(),
        "dir" => "a directory".to_string(),
        "symlink" => "a symbolic link".to_string(),
        "fifo" => "a named pipe".to_string(),
        "char" => "a character device".to_string(),
        "block" => "a block device".to_string(),
        other => format!("a {other}"),
    }
}

fn setting_label(name: &str) -> String {
    match name {
        "cwd" => "the working directory".to_string(),
        "user" => "the user".to_string(),
        "network" => "the network mode".to_string(),
        "shell" => "the shell".to_string(),
        "chown" => "--chown".to_string(),
        "chmod" => "--chmod".to_string(),
        other => format!("setting {other}"),
    }
}

/// `from "a" to "b"`, `was set to "b"`, `was unset (it was "a")`.
fn value_change(
    f: &mut fmt::Formatter<'_>,
    subject: &str,
    old: &Option<String>,
    new: &Option<String>,
) -> fmt::Result {
    match (old, new) {
        (Some(o), Some(n)) => write!(f, "{subject} changed from {o:?} to {n:?}"),
        (None, Some(n)) => write!(f, "{subject} was set to {n:?} (it was not set before)"),
        (Some(o), None) => write!(f, "{subject} is no longer set (it was {o:?})"),
        (None, None) => write!(f, "{subject} changed"),
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Version { old, new } => {
                write!(f, "the cache key scheme changed (version {old} -> {new})")
            }
            Change::Op { old, new } => write!(
                f,
                "the instruction kind changed from {} to {}",
                old.name(),
                new.name()
            ),
            Change::Platform { old, new } => {
                write!(f, "the platform changed from {old} to {new}")
            }
            Change::Parent { old, new } => match (old, new) {
                (Parent::Step { key: o }, Parent::Step { key: n }) => write!(
                    f,
                    "the previous step changed (its key was {}, now {})",
                    short(&o.to_string()),
                    short(&n.to_string())
                ),
                (Parent::Image { name: on, id: oid }, Parent::Image { name: nn, id: nid })
                    if on == nn =>
                {
                    write!(
                        f,
                        "the base image {nn} changed (was {}, now {})",
                        short(oid),
                        short(nid)
                    )
                }
                _ => write!(
                    f,
                    "the step now builds on {} instead of {}",
                    describe_parent(new),
                    describe_parent(old)
                ),
            },
            Change::Instruction { old, new } => {
                write!(f, "the instruction changed from `{old}` to `{new}`")
            }
            Change::Arg { name, old, new } => {
                value_change(f, &format!("build arg {name}"), old, new)
            }
            Change::Env { name, old, new } => {
                value_change(f, &format!("environment variable {name}"), old, new)
            }
            Change::EnvOrder => write!(f, "the order of the environment variables changed"),
            Change::Setting { name, old, new } => value_change(f, &setting_label(name), old, new),
            Change::MountAdded { target } => write!(f, "a mount at {target} was added"),
            Change::MountRemoved { target } => write!(f, "the mount at {target} was removed"),
            Change::MountOption {
                target,
                option,
                old,
                new,
            } => value_change(
                f,
                &format!("option {option} of the mount at {target}"),
                old,
                new,
            ),
            Change::MountOrder => write!(f, "the order of the mounts changed"),
            Change::File { path, change } => match change {
                FileChange::Added => write!(f, "file {path} was added"),
                FileChange::Removed => write!(f, "file {path} was removed"),
                FileChange::Kind { old, new } => write!(
                    f,
                    "{path} changed from {} to {}",
                    kind_phrase(old),
                    kind_phrase(new)
                ),
                FileChange::Mode { old, new } => {
                    write!(f, "file {path} changed mode from {old:04o} to {new:04o}")
                }
                FileChange::Content => write!(f, "file {path} changed"),
            },
            Change::Sources => write!(f, "the set of copied sources changed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_inputs() -> KeyInputs {
        let mut k = KeyInputs::new(
            OpKind::Run,
            "linux/amd64",
            Parent::Image {
                name: "busybox".into(),
                id: format!("sha256:{}", "ab".repeat(32)),
            },
            "RUN make -j2",
        );
        k.args.insert("VERSION".into(), "1.0".into());
        k.env.push(("PATH".into(), "/usr/bin:/bin".into()));
        k.env.push(("LANG".into(), "C.UTF-8".into()));
        k.settings.insert("cwd".into(), "/src".into());
        k.settings.insert("user".into(), "root".into());
        k.settings.insert("network".into(), "host".into());
        k.mounts.push(MountInput {
            target: "/root/.cache".into(),
            options: [("type", "cache"), ("id", "go"), ("sharing", "shared")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        });
        k
    }

    fn copy_inputs() -> KeyInputs {
        let mut k = KeyInputs::new(
            OpKind::Copy,
            "linux/amd64",
            Parent::Step {
                key: CacheKey([7; 32]),
            },
            "COPY src/ /app/",
        );
        let file = |mode: u32, size: u64, d: &str| FileInput {
            kind: "file".into(),
            mode,
            size,
            digest: format!("sha256:{}", d.repeat(64)),
        };
        k.sources = Some(SourcesInput {
            digest: format!("sha256:{}", "1".repeat(64)),
            files: [
                ("main.rs".to_string(), file(0o644, 10, "a")),
                ("lib.rs".to_string(), file(0o644, 20, "b")),
                ("run.sh".to_string(), file(0o755, 30, "c")),
            ]
            .into_iter()
            .collect(),
        });
        k
    }

    /// The key of a fixed record. If this changes, every cache entry ever written changes
    /// meaning: bump CACHE_KEY_VERSION instead of editing the value.
    #[test]
    fn golden_key_does_not_change() {
        assert_eq!(
            run_inputs().key().to_string(),
            "sha256:376ff4fc5857501b57eb4cba28fe428729e22726ab88079284a5534679e0f234"
        );
        assert_eq!(
            copy_inputs().key().to_string(),
            "sha256:4cda4bf99356116ca0703f4142d4b8b10466afdf29a57324fe7c45751eceabda"
        );
    }

    #[test]
    fn encoding_is_tag_length_value() {
        let mut e = Encoder::new();
        e.field("n").u64(258).str("ab").bool(true).opt_str(None);
        let mut want = vec![b'F'];
        want.extend_from_slice(&1u64.to_be_bytes());
        want.push(b'n');
        want.push(b'u');
        want.extend_from_slice(&258u64.to_be_bytes());
        want.push(b's');
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(b"ab");
        want.extend_from_slice(&[b'?', 1, b'0']);
        assert_eq!(e.as_bytes(), want.as_slice());
    }

    #[test]
    fn encoder_tags_and_lengths_keep_values_apart() {
        // Moving a byte from one string to the next must change the key.
        let a = Encoder::new().str("ab").str("c").finish();
        let b = Encoder::new().str("a").str("bc").finish();
        assert_ne!(a, b);
        // A number is not the string of its bytes.
        let n = Encoder::new().u64(0x6162).finish();
        let s = Encoder::new().str("ab").finish();
        assert_ne!(n, s);
        // An absent value is not an empty one.
        let none = Encoder::new().opt_str(None).finish();
        let empty = Encoder::new().opt_str(Some("")).finish();
        assert_ne!(none, empty);
    }

    #[test]
    fn maps_encode_in_sorted_order_whatever_the_insertion_order() {
        let mut one = BTreeMap::new();
        one.insert("b".to_string(), "2".to_string());
        one.insert("a".to_string(), "1".to_string());
        let mut two = BTreeMap::new();
        two.insert("a".to_string(), "1".to_string());
        two.insert("b".to_string(), "2".to_string());
        assert_eq!(
            Encoder::new().map(&one).as_bytes(),
            Encoder::new().map(&two).as_bytes()
        );
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = run_inputs();
        let key = base.key();
        let mut variants: Vec<KeyInputs> = Vec::new();
        let mut v = base.clone();
        v.version += 1;
        variants.push(v);
        let mut v = base.clone();
        v.op = OpKind::Copy;
        variants.push(v);
        let mut v = base.clone();
        v.platform = "linux/arm64".into();
        variants.push(v);
        let mut v = base.clone();
        v.parent = Parent::None;
        variants.push(v);
        let mut v = base.clone();
        v.instruction.push(' ');
        variants.push(v);
        let mut v = base.clone();
        v.args.insert("VERSION".into(), "1.1".into());
        variants.push(v);
        let mut v = base.clone();
        v.env.swap(0, 1);
        variants.push(v);
        let mut v = base.clone();
        v.settings.insert("network".into(), "none".into());
        variants.push(v);
        let mut v = base.clone();
        v.mounts[0]
            .options
            .insert("sharing".into(), "locked".into());
        variants.push(v);
        let mut v = base.clone();
        v.sources = Some(SourcesInput {
            digest: "sha256:00".into(),
            files: BTreeMap::new(),
        });
        variants.push(v);
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v.key(), key, "variant {i} kept the key");
        }
    }

    #[test]
    fn per_file_records_do_not_enter_the_key() {
        let base = copy_inputs();
        let mut other = base.clone();
        if let Some(s) = other.sources.as_mut() {
            s.files.clear();
        }
        assert_eq!(base.key(), other.key());
    }

    #[test]
    fn records_round_trip_through_json() {
        for inputs in [run_inputs(), copy_inputs()] {
            let json = inputs.to_json();
            let back = KeyInputs::from_json(&json).unwrap();
            assert_eq!(back, inputs);
            assert_eq!(back.key(), inputs.key());
        }
        let err = KeyInputs::from_json(b"{\"version\": 1}").unwrap_err();
        assert!(err.to_string().starts_with("invalid cache record"), "{err}");
    }

    #[test]
    fn cache_keys_parse_and_print() {
        let key = run_inputs().key();
        assert_eq!(CacheKey::parse(&key.to_string()).unwrap(), key);
        assert_eq!(CacheKey::parse(&key.hex()).unwrap(), key);
        assert!(CacheKey::parse("sha256:abc").is_err());
        assert!(CacheKey::parse(&format!("sha256:{}", "g".repeat(64))).is_err());
    }

    #[test]
    fn identical_inputs_explain_nothing() {
        assert_eq!(explain(&run_inputs(), &run_inputs()), None);
    }

    /// Every wording, one line per kind of change.
    #[test]
    fn explanation_texts() {
        let mut lines = Vec::new();
        let mut push = |what: &str, old: &KeyInputs, new: &KeyInputs| {
            lines.push(format!(
                "{what}: {}",
                explain(old, new).unwrap_or_else(|| "<none>".into())
            ));
        };
        let run = run_inputs();
        let copy = copy_inputs();

        let mut v = run.clone();
        v.version = 2;
        push("version", &run, &v);

        let mut v = run.clone();
        v.platform = "linux/arm64".into();
        push("platform", &run, &v);

        let mut v = run.clone();
        v.parent = Parent::Image {
            name: "busybox".into(),
            id: format!("sha256:{}", "cd".repeat(32)),
        };
        push("base image", &run, &v);

        let mut v = copy.clone();
        v.parent = Parent::Step {
            key: CacheKey([8; 32]),
        };
        push("previous step", &copy, &v);

        let mut v = copy.clone();
        v.parent = Parent::None;
        push("link", &copy, &v);

        let mut v = run.clone();
        v.instruction = "RUN make -j4".into();
        push("instruction", &run, &v);

        let mut v = run.clone();
        v.args.insert("VERSION".into(), "1.1".into());
        push("arg changed", &run, &v);

        let mut v = run.clone();
        v.args.insert("DEBUG".into(), "1".into());
        push("arg added", &run, &v);

        let mut v = run.clone();
        v.args.clear();
        push("arg removed", &run, &v);

        let mut v = run.clone();
        v.env[0].1 = "/opt/bin:/usr/bin:/bin".into();
        push("env changed", &run, &v);

        let mut v = run.clone();
        v.env.push(("CC".into(), "clang".into()));
        push("env added", &run, &v);

        let mut v = run.clone();
        v.env.remove(1);
        push("env removed", &run, &v);

        let mut v = run.clone();
        v.env.swap(0, 1);
        push("env order", &run, &v);

        let mut v = run.clone();
        v.settings.insert("cwd".into(), "/build".into());
        push("cwd", &run, &v);

        let mut v = run.clone();
        v.settings.insert("network".into(), "none".into());
        push("network", &run, &v);

        let mut v = run.clone();
        v.mounts[0]
            .options
            .insert("sharing".into(), "locked".into());
        push("mount option", &run, &v);

        let mut v = run.clone();
        v.mounts.push(MountInput {
            target: "/run/secrets/token".into(),
            options: [("type".to_string(), "secret".to_string())].into(),
        });
        push("mount added", &run, &v);

        let mut v = run.clone();
        v.mounts.clear();
        push("mount removed", &run, &v);

        let with_files = |edit: &dyn Fn(&mut BTreeMap<String, FileInput>)| {
            let mut v = copy.clone();
            if let Some(s) = v.sources.as_mut() {
                edit(&mut s.files);
                s.digest = format!("sha256:{}", "2".repeat(64));
            }
            v
        };
        let v = with_files(&|files| {
            if let Some(f) = files.get_mut("main.rs") {
                f.digest = format!("sha256:{}", "d".repeat(64));
            }
        });
        push("file content", &copy, &v);
        let v = with_files(&|files| {
            if let Some(f) = files.get_mut("run.sh") {
                f.mode = 0o644;
                f.digest = format!("sha256:{}", "e".repeat(64));
            }
        });
        push("file mode", &copy, &v);
        let v = with_files(&|files| {
            files.insert(
                "new.rs".into(),
                FileInput {
                    kind: "file".into(),
                    mode: 0o644,
                    size: 1,
                    digest: "sha256:ff".into(),
                },
            );
        });
        push("file added", &copy, &v);
        let v = with_files(&|files| {
            files.remove("lib.rs");
        });
        push("file removed", &copy, &v);
        let v = with_files(&|files| {
            if let Some(f) = files.get_mut("lib.rs") {
                f.kind = "dir".into();
            }
        });
        push("file kind", &copy, &v);
        let v = with_files(&|_| {});
        push("selection", &copy, &v);

        let mut v = run.clone();
        v.instruction = "RUN make -j4".into();
        v.args.insert("VERSION".into(), "2.0".into());
        v.settings.insert("user".into(), "builder".into());
        push("several", &run, &v);

        insta::assert_snapshot!(lines.join("\n"));
    }
}
