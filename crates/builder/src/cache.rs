//! The build cache on disk: one record per step result, and the inputs of the last build of
//! every stage (to say why a step missed).
//!
//! **Step records.** A step that makes (or could make) a layer — RUN, COPY, ADD, WORKDIR —
//! is keyed by [`crate::cachekey::KeyInputs::key`]. Its result is a store record (a
//! `cache/<key hex>` ref pointing at a [`strata_store::Record`]) that references the layer
//! blob and lists the whole diffID chain, so GC keeps both the blob and the unpacked
//! snapshots until the cache is pruned. The record's data ([`StepRecord`]) holds what a hit
//! needs to reproduce the step without running it: the layer (or none, for a step that
//! changed nothing), the history entry and when the step ran, plus the [`KeyInputs`] for
//! explanations, and the stage that made it (for `system df -v`).
//!
//! **Last use.** A record's ref is dated when a hit uses it ([`mark_used`]: its file's
//! modification time is set, nothing is rewritten), so the ref's modification time is when
//! the record was last used, to within [`USE_RESOLUTION`] (a record used again within that
//! time keeps its date: a rebuild loop does not write an inode per step per build):
//! [`records`] lists them with it, for `system df -v` and `prune --keep-storage` (least
//! recently used first).
//!
//! **Last builds.** To explain a miss we compare the step's inputs with those of the same
//! step the last time this stage was built. A stage is identified by the build context and
//! the Dockerfile's path (or "stdin") plus the stage's name (or index); its record, a JSON
//! file under `<root>/builder/last/`, lists the inputs of its layer steps in order. A step is
//! matched to its previous build by the same instruction text (the nearest one), else by its
//! position among the stage's steps.
//!
//! **Per-file lists.** A `COPY` of many files has a per-file record of each (to name the
//! file that changed), megabytes for a large tree. Step records and last builds keep only
//! the files' combined digest (which is all the key uses), so a cached build reads small
//! records; the lists are kept once per digest under `<root>/builder/last/files/` and read
//! only to explain a miss. Metadata instructions have no key (they change only the
//! config), so they are never HIT or MISS themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use strata_store::{Descriptor, Digest, LayerInfo, Record, RefKind, Store};

use crate::cachekey::{CacheKey, FileInput, KeyInputs, SourcesInput};
use crate::Error;

/// The kind tag of step records, versioned with the record layout.
/// (v2: the inputs without the copied files' per-file records, which [`LastBuilds`] keeps
/// apart; a v1 record misses once and is written again.)
const RECORD_KIND: &str = "strata.build-step.v2";

/// What a cache hit reuses: a step's result and how it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The record layout's kind tag (`strata.build-step.v2`).
    pub kind: String,
    /// The step's cache key.
    pub key: CacheKey,
    /// The layer it made; `None` when it changed nothing.
    pub layer: Option<LayerInfo>,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// When the step ran (RFC 3339); the history entry's `created`.
    pub created: Option<String>,
    /// The inputs of the key, without the copied files' per-file records (a hit reads
    /// only this small record; [`LastBuilds::load_files`] has the lists).
    pub inputs: KeyInputs,
    /// The stage that made it (its name, or `stage-N`); absent in records of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

/// What a hit reuses of a step record: the step's result. The record's inputs are not
/// read (they are the step's own: the key is their digest), so a hit decodes a few fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepHit {
    /// The step's cache key.
    pub key: CacheKey,
    /// The layer it made; `None` when it changed nothing.
    pub layer: Option<LayerInfo>,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// When the step ran (RFC 3339); the history entry's `created`.
    pub created: Option<String>,
    /// When the record was last used (its ref's modification time), when known.
    pub last_used: Option<SystemTime>,
}

impl StepHit {
    /// The hit of a step whose record was not read from the local store (a step that just
    /// ran, a record from a remote cache): there is no last use to keep up to date.
    pub fn undated(
        key: CacheKey,
        layer: Option<LayerInfo>,
        created_by: String,
        created: Option<String>,
    ) -> StepHit {
        StepHit {
            key,
            layer,
            created_by,
            created,
            last_used: None,
        }
    }
}

/// How precisely last use is kept: [`mark_used`] leaves a record used less than this long
/// ago as it is. Eviction by age (`prune --keep-storage`) needs minutes, not microseconds.
pub const USE_RESOLUTION: Duration = Duration::from_secs(60);

/// A step's result to record with [`store_record`].
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// The step's cache key.
    pub key: &'a CacheKey,
    /// The layer it made; `None` when it changed nothing.
    pub layer: Option<&'a LayerInfo>,
    /// The diffID stack after it (base first), which GC keeps unpacked.
    pub chain: &'a [Digest],
    /// The history entry's `created_by`.
    pub created_by: &'a str,
    /// The inputs of the key.
    pub inputs: &'a KeyInputs,
    /// The stage that made it.
    pub stage: &'a str,
}

/// Looks up the record of `key`. A record that is missing, unreadable, of another layout or
/// whose layer blob is gone is a miss.
pub fn lookup(store: &Store, key: &CacheKey) -> Result<Option<StepHit>, Error> {
    /// The fields of a [`StepRecord`] a hit needs (the others are skipped, not decoded).
    #[derive(Deserialize)]
    struct Stored {
        kind: String,
        key: CacheKey,
        layer: Option<LayerInfo>,
        created_by: String,
        created: Option<String>,
    }
    let Some((target, modified)) = store.get_ref_dated(RefKind::Cache, &key.hex())? else {
        return Ok(None);
    };
    let Ok(stored) = store.read_record_data::<Stored>(&target.digest) else {
        return Ok(None);
    };
    if stored.kind != RECORD_KIND || stored.key != *key {
        return Ok(None);
    }
    if let Some(layer) = &stored.layer {
        if !store.has_blob(&layer.digest) {
            return Ok(None);
        }
    }
    Ok(Some(StepHit {
        last_used: Some(modified),
        ..StepHit::undated(stored.key, stored.layer, stored.created_by, stored.created)
    }))
}

/// Dates the record of `hit` as used now ([`touch`]) unless it was used less than
/// [`USE_RESOLUTION`] ago.
pub fn mark_used(store: &Store, hit: &StepHit) -> Result<(), Error> {
    let recent = hit
        .last_used
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < USE_RESOLUTION);
    if recent {
        return Ok(());
    }
    touch(store, &hit.key)
}

/// Stores the record of a step that ran, made at `created` (RFC 3339; the history entry's
/// `created`).
pub fn store_record(
    store: &Store,
    new: &NewRecord<'_>,
    created: Option<String>,
) -> Result<StepRecord, Error> {
    let step = StepRecord {
        kind: RECORD_KIND.to_string(),
        key: *new.key,
        layer: new.layer.cloned(),
        created_by: new.created_by.to_string(),
        created,
        inputs: new.inputs.without_files(),
        stage: Some(new.stage.to_string()),
    };
    let data = serde_json::to_value(&step).map_err(|source| Error::CacheRecord { source })?;
    let references: Vec<Descriptor> = new.layer.iter().map(|l| l.descriptor()).collect();
    let descriptor = store.write_record(&Record {
        references,
        chain: new.chain.to_vec(),
        data,
    })?;
    store.set_ref(RefKind::Cache, &new.key.hex(), &descriptor)?;
    Ok(step)
}

/// Marks the record of `key` as used now (its ref's modification time is set, without
/// rewriting it or syncing: last use is advisory), so that `prune --keep-storage` evicts the
/// least recently used records first.
pub fn touch(store: &Store, key: &CacheKey) -> Result<(), Error> {
    store.touch_ref(RefKind::Cache, &key.hex())?;
    Ok(())
}

/// One cache record as [`records`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The ref's name (the key in hex).
    pub name: String,
    /// The record blob.
    pub target: Descriptor,
    /// When it was last used (made or hit), in seconds since the epoch.
    pub last_used: Option<i64>,
    /// The stage that made it, when the record says.
    pub stage: Option<String>,
    /// The instruction, as history shows it.
    pub created_by: Option<String>,
}

/// Every cache record, least recently used first (then by name). A record that cannot be
/// read is listed with what its ref says (it still takes space and can be pruned).
pub fn records(store: &Store) -> Result<Vec<CacheEntry>, Error> {
    let mut out = Vec::new();
    for r in store.list_refs(RefKind::Cache)? {
        let last_used = store
            .ref_modified(RefKind::Cache, &r.name)?
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        let step = store
            .read_record(&r.target.digest)
            .ok()
            .and_then(|rec| serde_json::from_value::<StepRecord>(rec.data).ok());
        out.push(CacheEntry {
            name: r.name,
            target: r.target,
            last_used,
            stage: step.as_ref().and_then(|s| s.stage.clone()),
            created_by: step.map(|s| s.created_by),
        });
    }
    out.sort_by(|a, b| (a.last_used, &a.name).cmp(&(b.last_used, &b.name)));
    Ok(out)
}

/// The records of the last builds, under `<root>/builder/last/`.
#[derive(Debug, Clone)]
pub struct LastBuilds {
    dir: PathBuf,
    identity: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct StageRecord {
    identity: String,
    stage: String,
    steps: Vec<KeyInputs>,
}

impl LastBuilds {
    /// The records for builds of `dockerfile` (`None`: standard input) in `context`.
    pub fn new(builder_dir: &Path, context: &Path, dockerfile: Option<&Path>) -> Self {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let identity = format!(
            "context={}\ndockerfile={}",
            canon(context).display(),
            dockerfile.map_or_else(|| "-".to_string(), |d| canon(d).display().to_string())
        );
        LastBuilds {
            dir: builder_dir.join("last"),
            identity,
        }
    }

    fn file(&self, stage: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(format!("{}\nstage={stage}", self.identity)));
        self.dir.join(format!("{name}.json"))
    }

    fn files_file(&self, digest: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(digest.as_bytes()));
        self.dir.join("files").join(format!("{name}.json"))
    }

    /// Keeps the per-file records of `sources` (by their combined digest) for later
    /// explanations, unless they are kept already. Call it only with the full list (an
    /// empty list is kept too: a selection can be empty). Best effort: a list that cannot be written
    /// only makes a later explanation less precise.
    pub fn save_files(&self, sources: &SourcesInput) {
        self.save_files_with(&sources.digest, || sources.files.clone());
    }

    /// [`LastBuilds::save_files`] for the sources of combined digest `digest`, making
    /// their records with `files` only when they are not kept yet (a cached build of a
    /// large context then makes none).
    pub fn save_files_with(
        &self,
        digest: &str,
        files: impl FnOnce() -> BTreeMap<String, FileInput>,
    ) {
        let path = self.files_file(digest);
        if path.exists() {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(&files()) else {
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.prune_files();
    }

    /// Removes the per-file lists that no last build names any more (each edit of a large
    /// context makes a new one). A list younger than an hour is spared: a stage that is
    /// still building has kept it but not yet recorded its build.
    fn prune_files(&self) {
        const SPARE: std::time::Duration = std::time::Duration::from_secs(3600);
        let Ok(records) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut named = std::collections::BTreeSet::new();
        for entry in records.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<StageRecord>(&bytes) else {
                continue;
            };
            for step in &record.steps {
                if let Some(s) = &step.sources {
                    named.insert(self.files_file(&s.digest));
                }
            }
        }
        let Ok(lists) = std::fs::read_dir(self.dir.join("files")) else {
            return;
        };
        for entry in lists.flatten() {
            let path = entry.path();
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < SPARE);
            if !young && !named.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// The per-file records of the sources whose combined digest is `digest`, when kept.
    pub fn load_files(&self, digest: &str) -> Option<BTreeMap<String, FileInput>> {
        let bytes = std::fs::read(self.files_file(digest)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The inputs of `stage`'s layer steps the last time it was built (empty if never).
    pub fn load(&self, stage: &str) -> Vec<KeyInputs> {
        let Ok(bytes) = std::fs::read(self.file(stage)) else {
            return Vec::new();
        };
        match serde_json::from_slice::<StageRecord>(&bytes) {
            Ok(r) if r.identity == self.identity && r.stage == stage => r.steps,
            _ => Vec::new(),
        }
    }

    /// Records the inputs of `stage`'s layer steps of a successful build. A record that
    /// would not change is not written again (for a large `COPY` it is megabytes).
    pub fn save(&self, stage: &str, steps: &[KeyInputs]) -> Result<(), Error> {
        /// A [`StageRecord`] written from borrowed parts (the same JSON).
        #[derive(Serialize)]
        struct Borrowed<'a> {
            identity: &'a str,
            stage: &'a str,
            steps: &'a [KeyInputs],
        }
        let has_files = |s: &KeyInputs| s.sources.as_ref().is_some_and(|f| !f.files.is_empty());
        // The build passes steps already without their files: nothing to copy then.
        let stripped: Vec<KeyInputs>;
        let steps = if steps.iter().any(has_files) {
            stripped = steps.iter().map(KeyInputs::without_files).collect();
            &stripped
        } else {
            steps
        };
        let record = Borrowed {
            identity: &self.identity,
            stage,
            steps,
        };
        let bytes = serde_json::to_vec(&record).map_err(|source| Error::CacheRecord { source })?;
        let path = self.file(stage);
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
    }
}

/// The last build of a stage, read on first use (a fully cached build never needs it).
#[derive(Debug)]
pub struct LazyPrevious<'a> {
    last: &'a LastBuilds,
    stage: &'a str,
    steps: std::sync::OnceLock<Vec<KeyInputs>>,
}

impl<'a> LazyPrevious<'a> {
    /// The record of `stage` in `last`, not read yet.
    pub fn new(last: &'a LastBuilds, stage: &'a str) -> Self {
        LazyPrevious {
            last,
            stage,
            steps: std::sync::OnceLock::new(),
        }
    }

    /// The inputs of the stage's layer steps the last time it was built.
    pub fn get(&self) -> &[KeyInputs] {
        self.steps.get_or_init(|| self.last.load(self.stage))
    }
}

/// Why the step at `position` (among its stage's keyed steps) with inputs `new` missed,
/// compared with the steps of the stage's last build (`previous`). `current` lists the
/// instruction texts of this build's keyed steps in the stage, so that a step that was
/// inserted is not mistaken for an edit of the step that used to be at its place.
/// `files` gives the per-file records of copied sources by their combined digest (records
/// keep only the digest), to name the files that changed.
pub fn miss_reason(
    previous: &[KeyInputs],
    current: &[String],
    position: usize,
    new: &KeyInputs,
    files: &dyn Fn(&str) -> Option<BTreeMap<String, FileInput>>,
) -> String {
    const NEW_STEP: &str = "no earlier build of this step";
    let same_text = previous
        .iter()
        .enumerate()
        .filter(|(_, p)| p.op == new.op && p.instruction == new.instruction)
        .min_by_key(|(i, _)| i.abs_diff(position))
        .map(|(_, p)| p);
    let old = match same_text {
        Some(old) => old,
        None => match previous.get(position) {
            // The step that was here is still in the Dockerfile: this one is new.
            Some(p) if current.contains(&p.instruction) => return NEW_STEP.to_string(),
            Some(p) if p.op == new.op => p,
            _ => return NEW_STEP.to_string(),
        },
    };
    let (old, new) = with_files(old, new, files);
    match explain_difference(&old, &new) {
        Some(reason) => reason,
        None => "the same inputs as the last build, but their cache entry is gone (pruned, or that build did not finish)".to_string(),
    }
}

/// `old` and `new` with the per-file records of their sources filled in from `files` when
/// the sources differ (and left out of both when they are the same: one side may lack them).
/// When either list cannot be had, both are left without one, so the difference is told as
/// "the set of copied sources changed" rather than as every file added or removed.
fn with_files(
    old: &KeyInputs,
    new: &KeyInputs,
    files: &dyn Fn(&str) -> Option<BTreeMap<String, FileInput>>,
) -> (KeyInputs, KeyInputs) {
    let (mut old, mut new) = (old.clone(), new.clone());
    if let (Some(o), Some(n)) = (old.sources.as_mut(), new.sources.as_mut()) {
        if o.digest == n.digest {
            o.files.clear();
            n.files.clear();
        } else {
            let mut known = true;
            for s in [&mut *o, &mut *n] {
                if s.files.is_empty() {
                    match files(&s.digest) {
                        Some(list) => s.files = list,
                        None => known = false,
                    }
                }
            }
            if !known {
                o.files.clear();
                n.files.clear();
            }
        }
    }
    (old, new)
}

/// [`crate::cachekey::diff`] worded for a person: a changed previous step is named last when
/// the step has a difference of its own (the earlier miss already explains the parent), and
/// echoes of one change are dropped (a build arg is also in the environment; an edited RUN
/// also has a new argv).
fn explain_difference(old: &KeyInputs, new: &KeyInputs) -> Option<String> {
    use crate::cachekey::{diff, Change};
    let mut changes = diff(old, new);
    let args: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Arg { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let instruction_changed = changes
        .iter()
        .any(|c| matches!(c, Change::Instruction { .. }));
    changes.retain(|c| match c {
        Change::Env { name, .. } => !args.contains(name),
        Change::Setting { name, .. } => !(instruction_changed && name == "argv"),
        _ => true,
    });
    if changes.len() > 1 && matches!(changes[0], Change::Parent { .. }) {
        let parent = changes.remove(0);
        changes.push(parent);
    }
    let first = changes.first()?;
    Some(match changes.len() - 1 {
        0 => first.to_string(),
        1 => format!("{first} (and 1 more difference)"),
        n => format!("{first} (and {n} more differences)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cachekey::{OpKind, Parent};

    fn run(text: &str, parent: u8) -> KeyInputs {
        KeyInputs::new(
            OpKind::Run,
            "linux/amd64",
            Parent::Step {
                key: CacheKey::parse(&format!("{parent:02x}").repeat(32)).unwrap(),
            },
            text,
        )
    }

    fn miss_reason_(previous: &[KeyInputs], now: &[String], pos: usize, new: &KeyInputs) -> String {
        miss_reason(previous, now, pos, new, &|_| None)
    }

    fn texts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn steps_match_by_text_then_position() {
        let previous = vec![run("RUN a", 1), run("RUN b", 2), run("RUN c", 3)];
        // Edited text: compared with the step at the same position.
        let now = texts(&["RUN a", "RUN B", "RUN c"]);
        assert_eq!(
            miss_reason_(&previous, &now, 1, &run("RUN B", 2)),
            "the instruction changed from `RUN b` to `RUN B`"
        );
        // Inserted: the step that was at its place is still there, so it is new; the
        // moved step's own inputs are the same but its parent changed.
        let now = texts(&["RUN a", "RUN new", "RUN b", "RUN c"]);
        assert_eq!(
            miss_reason_(&previous, &now, 1, &run("RUN new", 5)),
            "no earlier build of this step"
        );
        let r = miss_reason_(&previous, &now, 2, &run("RUN b", 9));
        assert!(r.starts_with("the previous step changed"), "{r}");
        assert_eq!(
            miss_reason_(&previous, &now, 4, &run("RUN d", 4)),
            "no earlier build of this step"
        );
        assert!(miss_reason_(&previous, &now, 0, &run("RUN a", 1)).contains("cache entry is gone"));
        assert_eq!(
            miss_reason_(&[], &now, 0, &run("RUN a", 1)),
            "no earlier build of this step"
        );
    }

    #[test]
    fn a_steps_own_change_comes_before_its_parents_and_echoes_are_dropped() {
        let mut old = run("RUN a", 1);
        old.args.insert("V".into(), "1".into());
        old.env.push(("V".into(), "1".into()));
        old.settings.insert("argv".into(), "[a]".into());
        let mut new = run("RUN a", 2);
        new.args.insert("V".into(), "2".into());
        new.env.push(("V".into(), "2".into()));
        new.settings.insert("argv".into(), "[a]".into());
        assert_eq!(
            explain_difference(&old, &new).unwrap(),
            "build arg V changed from \"1\" to \"2\" (and 1 more difference)"
        );
        let mut edited = old.clone();
        edited.instruction = "RUN b".into();
        edited.settings.insert("argv".into(), "[b]".into());
        assert_eq!(
            explain_difference(&old, &edited).unwrap(),
            "the instruction changed from `RUN a` to `RUN b`"
        );
    }

    fn copy(digest: &str, files: &[(&str, &str)]) -> KeyInputs {
        let mut k = KeyInputs::new(OpKind::Copy, "linux/amd64", Parent::None, "COPY . /app");
        k.sources = Some(SourcesInput {
            digest: digest.to_string(),
            files: files
                .iter()
                .map(|(path, d)| {
                    let file = FileInput {
                        kind: "file".into(),
                        mode: 0o644,
                        size: 1,
                        digest: d.to_string(),
                    };
                    (path.to_string(), file)
                })
                .collect(),
        });
        k
    }

    #[test]
    fn per_file_lists_are_kept_apart_and_read_to_explain_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let last = LastBuilds::new(dir.path(), Path::new("/ctx"), None);
        let old = copy("sha256:old", &[("a", "1"), ("b", "2")]);
        let new = copy("sha256:new", &[("a", "1"), ("b", "3")]);
        last.save("build", std::slice::from_ref(&old)).unwrap();
        // What is kept has no per-file list, and the key is the same without it.
        let kept = last.load("build");
        assert_eq!(kept, vec![old.without_files()]);
        assert_eq!(kept[0].key(), old.key());
        assert!(kept[0].sources.as_ref().unwrap().files.is_empty());
        let now = texts(&["COPY . /app"]);
        let lists = |d: &str| last.load_files(d);
        // Without the old list, the change is told without naming files.
        assert_eq!(
            miss_reason(&kept, &now, 0, &new.without_files(), &lists),
            "the set of copied sources changed"
        );
        last.save_files(old.sources.as_ref().unwrap());
        last.save_files(new.sources.as_ref().unwrap());
        // With both lists, the changed file is named, however the new inputs came.
        for n in [&new, &new.without_files()] {
            assert_eq!(
                miss_reason(&kept, &now, 0, n, &lists),
                miss_reason_(std::slice::from_ref(&old), &now, 0, &new)
            );
            assert!(miss_reason(&kept, &now, 0, n, &lists).contains("b"));
        }
        // An empty selection is a list too.
        let empty = copy("sha256:empty", &[]);
        last.save_files(empty.sources.as_ref().unwrap());
        assert_eq!(last.load_files("sha256:empty"), Some(BTreeMap::new()));
        let r = miss_reason(&kept, &now, 0, &empty, &lists);
        assert!(r.starts_with("file a was removed"), "{r}");
    }

    #[test]
    fn last_builds_round_trip_per_stage_and_identity() {
        let dir = tempfile::tempdir().unwrap();
        let a = LastBuilds::new(
            dir.path(),
            Path::new("/ctx"),
            Some(Path::new("/ctx/Dockerfile")),
        );
        let b = LastBuilds::new(dir.path(), Path::new("/ctx"), None);
        assert!(a.load("build").is_empty());
        a.save("build", &[run("RUN a", 1)]).unwrap();
        assert_eq!(a.load("build"), vec![run("RUN a", 1)]);
        assert!(a.load("test").is_empty());
        assert!(b.load("build").is_empty());
    }

    #[test]
    fn a_hit_dates_its_record_unless_it_was_used_within_the_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let inputs = run("RUN a", 1);
        let key = inputs.key();
        store_record(
            &store,
            &NewRecord {
                key: &key,
                layer: None,
                chain: &[],
                created_by: "RUN a # buildkit",
                inputs: &inputs,
                stage: "build",
            },
            None,
        )
        .unwrap();
        let ref_file = store.root().join("refs").join("cache").join(key.hex());
        let set = |t: SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(&ref_file)
                .unwrap()
                .set_modified(t)
                .unwrap()
        };
        let modified = || std::fs::metadata(&ref_file).unwrap().modified().unwrap();
        // Used long ago: the hit dates it now.
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        set(long_ago);
        let hit = lookup(&store, &key).unwrap().unwrap();
        assert_eq!(hit.last_used, Some(long_ago));
        mark_used(&store, &hit).unwrap();
        assert!(modified() > long_ago + Duration::from_secs(3000));
        // Used a moment ago: left as it is.
        let moment_ago = SystemTime::now() - Duration::from_secs(5);
        set(moment_ago);
        let hit = lookup(&store, &key).unwrap().unwrap();
        mark_used(&store, &hit).unwrap();
        assert_eq!(modified(), moment_ago);
        // A hit that does not know when its record was used dates it.
        let unknown = StepHit {
            last_used: None,
            ..hit
        };
        mark_used(&store, &unknown).unwrap();
        assert!(modified() > moment_ago);
    }

    #[test]
    fn records_round_trip_through_the_store_and_need_their_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let inputs = run("RUN a", 1);
        let key = inputs.key();
        assert_eq!(lookup(&store, &key).unwrap(), None);
        let mut w = store.layer_writer(strata_store::Compression::None).unwrap();
        std::io::Write::write_all(&mut w, &[0u8; 1024]).unwrap();
        let layer = w.finish().unwrap();
        let stored = store_record(
            &store,
            &NewRecord {
                key: &key,
                layer: Some(&layer),
                chain: &[layer.diff_id],
                created_by: "RUN a # buildkit",
                inputs: &inputs,
                stage: "build",
            },
            Some("2024-01-01T00:00:00Z".into()),
        )
        .unwrap();
        let hit = lookup(&store, &key).unwrap().unwrap();
        assert_eq!(
            (hit.key, &hit.layer, &hit.created_by, &hit.created),
            (
                stored.key,
                &stored.layer,
                &stored.created_by,
                &stored.created
            )
        );
        assert!(hit.last_used.is_some());
        // A hit dates the record, which orders `records` (least recently used first).
        let other_inputs = run("RUN b", 1);
        let other = other_inputs.key();
        store_record(
            &store,
            &NewRecord {
                key: &other,
                layer: None,
                chain: &[],
                created_by: "RUN b # buildkit",
                inputs: &other_inputs,
                stage: "build",
            },
            None,
        )
        .unwrap();
        let refs = store.root().join("refs").join("cache");
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for (k, secs) in [(&key, 0), (&other, 10)] {
            std::fs::File::options()
                .write(true)
                .open(refs.join(k.hex()))
                .unwrap()
                .set_modified(long_ago + std::time::Duration::from_secs(secs))
                .unwrap();
        }
        let order = |store: &Store| -> Vec<String> {
            records(store)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert_eq!(order(&store), vec![key.hex(), other.hex()]);
        touch(&store, &key).unwrap();
        assert_eq!(order(&store), vec![other.hex(), key.hex()]);
        // Touching a key without a record is no error and makes none.
        let none = run("RUN c", 1).key();
        touch(&store, &none).unwrap();
        assert_eq!(lookup(&store, &none).unwrap(), None);
        // The record keeps its layer and chain alive.
        let reachable = store.reachable().unwrap();
        assert!(reachable.blobs.contains(&layer.digest));
        assert!(reachable.chain_ids.contains(&layer.diff_id));
    }
}
