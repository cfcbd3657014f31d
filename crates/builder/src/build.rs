//! A build, from Dockerfile text and a context folder to a tagged image.
//!
//! [`Engine::build`] parses the Dockerfile, reports its lint findings (fatal only under
//! `# check=error=true`, as in BuildKit), plans the stages the target needs (see
//! [`crate::plan`]), and builds them: each stage on its own thread (CPU-parallel work inside
//! goes to rayon's pool), a stage starting as soon as the stages it needs are done, so independent stages run at the
//! same time and a stage used by several is built once. Inside a stage the instructions run
//! in order:
//!
//! - metadata instructions change the config ([`crate::imageconfig`]) and add a history entry
//!   with `empty_layer: true`;
//! - RUN, COPY, ADD and WORKDIR (when it creates a folder) are steps with a cache key. A hit
//!   reuses the recorded layer and history entry; a miss prepares a writable snapshot on the
//!   stage's layers, mounts it, runs the step, diffs the upper dir straight into the store's
//!   layer writer (one pass: diffID, compression, digest) and commits the snapshot under the
//!   new chainID. A step that changes nothing makes no layer (`empty_layer: true`, as
//!   BuildKit). A failing step commits nothing and the build stops; Ctrl-C (the
//!   [`CancelToken`]) kills the step's processes, unmounts and removes its snapshot.
//!
//! The image (config + manifest) is written when every stage is done; tags last, so a failed
//! build tags nothing. An untagged result is kept under an `untagged/<id>` ref, like Docker's
//! dangling images.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use strata_overlay::TarOptions;
use strata_parser::lint::Severity;
use strata_parser::scope::{global_scope, StageScope};
use strata_parser::shell::{expand_word, Env, Lookup};
use strata_parser::{ArgCommand, ArgDef, Dockerfile, Instruction, InstructionKind, MountType};
use strata_store::{Compression, Digest, Image, ImageConfig, RefKind, Reference};

use crate::cache::{self, LastBuilds, StepHit};
use crate::cachekey::{KeyInputs, OpKind, Parent};
use crate::context::{read_ignore_file, ContextIndex, HashCache, PatternMatcher};
use crate::engine::{chain_name, Engine, LayerRef};
use crate::exec::{CancelToken, NetworkMode};
use crate::imageconfig::{
    apply_instruction, edit_exec_config, ensure_default_path, env_pairs, exec_config,
    history_entry, normalize_created, push_history, ApplyState,
};
use crate::logs::{BuildLogs, StepSink};
use crate::plan::{plan, resolve_from, Base, FromRef, Plan, StagePlan};
use crate::platform::{is_proxy_arg, platform_args, Platform};
use crate::progress::{
    BuildSummary, CacheMissSummary, CacheSummary, Event, Reporter, StepId, StepInfo,
};
use crate::pull::{PullPolicy, Puller};
use crate::remote_cache::{self, CacheExport, CacheImport, CacheRecord, CopyHash, RemoteCache};
use crate::runstep::{self, BindFrom, RunContext, RunEnv, SecretSource};
use crate::timefmt::{now_secs, rfc3339};
use crate::user::resolve_chown_in;
use crate::Error;

/// A secret a build may mount into RUN steps (`--secret id=...,src=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The id RUN mounts ask for.
    pub id: String,
    /// Where the value comes from.
    pub source: SecretSource,
}

impl SecretSpec {
    /// Parses Docker's `--secret` syntax: `id=NAME,src=FILE` (or `source=`), `id=NAME,env=VAR`,
    /// with an optional `type=file|env`; `id=NAME` alone reads the environment variable NAME
    /// when it is set, else the file NAME.
    pub fn parse(spec: &str) -> Result<SecretSpec, Error> {
        let bad = |reason: &str| Error::InvalidOption {
            option: "--secret",
            value: spec.to_string(),
            reason: reason.to_string(),
        };
        let (mut id, mut src, mut env, mut typ) = (None, None, None, None);
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad("fields are key=value"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => typ = Some(v.to_ascii_lowercase()),
                other => return Err(bad(&format!("unknown field {other:?}"))),
            }
        }
        let id = id
            .or_else(|| {
                src.as_deref()
                    .and_then(|s| s.rsplit('/').next())
                    .map(str::to_string)
            })
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad("id= is missing"))?;
        let source = match (typ.as_deref(), src, env) {
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some("env"), _, Some(var)) | (None, None, Some(var)) => SecretSource::Env(var),
            (Some("env"), Some(var), None) => SecretSource::Env(var),
            (Some("file") | None, Some(path), None) => SecretSource::File(PathBuf::from(path)),
            (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
            (None, None, None) => {
                if std::env::var_os(&id).is_some() {
                    SecretSource::Env(id.clone())
                } else {
                    SecretSource::File(PathBuf::from(&id))
                }
            }
            (Some(t), _, _) if t != "env" && t != "file" => {
                return Err(bad("type must be file or env"))
            }
            _ => return Err(bad("give either src= or env=, not both")),
        };
        if let SecretSource::File(path) = &source {
            if !path.is_file() {
                return Err(bad(&format!("{} is not a readable file", path.display())));
            }
        }
        Ok(SecretSpec { id, source })
    }
}

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Where the Dockerfile was read from (`None`: standard input). Used to find
    /// `<Dockerfile>.dockerignore` and to recognise later builds of the same file.
    pub dockerfile_path: Option<PathBuf>,
    /// The build context folder.
    pub context: PathBuf,
    /// `--build-arg` values, in order (later ones win).
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    /// `-t`: tags for the result, applied once everything is stored.
    pub tags: Vec<String>,
    /// `--label`: labels added to the result's config.
    pub labels: Vec<(String, String)>,
    /// `--no-cache`: run every step (results are still recorded).
    pub no_cache: bool,
    /// `--no-cache-filter`: run every step of these stages (names or indexes).
    pub no_cache_filter: Vec<String>,
    /// Network of RUN steps that do not say (`--network`).
    pub network: NetworkMode,
    /// `--secret`s.
    pub secrets: Vec<SecretSpec>,
    /// `--source-date-epoch` (or `SOURCE_DATE_EPOCH`): clamps new layers' file times and sets
    /// the config and history dates, for reproducible images.
    pub source_date_epoch: Option<i64>,
    /// Compression of new layers.
    pub compression: Compression,
    /// When images named by `FROM` and `--from` are pulled (`--pull`: always check).
    pub pull: PullPolicy,
    /// How registries are reached, for pulls and the shared cache.
    pub registry: strata_store::registry::ClientOptions,
    /// `--cache-from`: shared caches to read records from, in order of preference.
    pub cache_from: Vec<CacheImport>,
    /// `--cache-to`: where to write this build's records once it succeeded.
    pub cache_to: Vec<CacheExport>,
    /// Stages built at the same time at most (`--jobs`); `None`: every stage whose
    /// dependencies are done. Stages mostly wait for processes and disks, so more stages than
    /// cores still overlap well; `Some(1)` builds one stage after the other.
    pub max_stages: Option<usize>,
}

impl BuildOptions {
    /// Options to build `dockerfile` in `context` with the defaults.
    pub fn new(dockerfile: impl Into<String>, context: impl Into<PathBuf>) -> Self {
        BuildOptions {
            dockerfile: dockerfile.into(),
            dockerfile_path: None,
            context: context.into(),
            build_args: Vec::new(),
            target: None,
            tags: Vec::new(),
            labels: Vec::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            network: NetworkMode::Host,
            secrets: Vec::new(),
            source_date_epoch: None,
            compression: Compression::Zstd,
            pull: PullPolicy::default(),
            registry: strata_store::registry::ClientOptions::default(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            max_stages: None,
        }
    }
}

/// How one step went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// The step.
    pub id: StepId,
    /// As progress shows it: `[build 2/5] RUN make`.
    pub label: String,
    /// Answered from the cache.
    pub cached: bool,
    /// For a miss: why.
    pub reason: Option<String>,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image (its ID is `image.id()`).
    pub image: Image,
    /// The tags it got.
    pub tags: Vec<Reference>,
    /// The numbers.
    pub summary: BuildSummary,
    /// Every step with its cache outcome, in step order.
    pub steps: Vec<StepOutcome>,
    /// Where the steps' full logs are.
    pub log_dir: PathBuf,
    /// Warnings reported (lints, unused build args).
    pub warnings: Vec<String>,
}

/// A random 16-hex-digit name part (process id, time and a counter, hashed).
pub fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!(
        "{}-{nanos}-{}-{:?}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::thread::current().id()
    );
    hex::encode(&Sha256::digest(seed.as_bytes())[..8])
}

/// The state of a stage as its instructions run; a finished stage's state is what stages
/// built on it start from.
#[derive(Debug, Clone)]
struct StageState {
    config: ImageConfig,
    layers: Vec<LayerRef>,
    /// What the next layer step builds on (cache-key chaining).
    parent: Parent,
    scope: StageScope,
    apply: ApplyState,
    /// The records of the steps whose layers make up this stage (for `--cache-to`).
    records: Vec<CacheRecord>,
}

/// One running build.
struct Build<'a> {
    engine: &'a Engine,
    opts: &'a BuildOptions,
    df: Dockerfile,
    plan: Plan,
    reporter: &'a dyn Reporter,
    cancel: CancelToken,
    platform: String,
    context: Option<ContextIndex>,
    context_filtered: bool,
    logs: BuildLogs,
    last: LastBuilds,
    epoch: Option<i64>,
    build_args: Vec<(String, String)>,
    secrets: BTreeMap<String, SecretSource>,
    scratch: PathBuf,
    consumed: Mutex<BTreeSet<String>>,
    results: Mutex<Vec<Option<Arc<StageState>>>>,
    outcomes: Mutex<BTreeMap<StepId, StepOutcome>>,
    /// What the `--cache-from`s offer.
    remote: Arc<RemoteCache>,
    /// Steps answered from `remote`, to record locally once their layers are here.
    remote_hits: Mutex<Vec<(CacheRecord, String)>>,
    /// What `COPY --from` sources hashed to in this build (for `--cache-to`).
    copy_hashes: Mutex<Vec<CopyHash>>,
    /// Layer blobs seen in the store during this build (a local cache hit checks its
    /// layer's; a step that ran wrote its own). The build's lease keeps GC from removing
    /// them, so the final image need not look for them again.
    present: Mutex<BTreeSet<Digest>>,
}

impl Engine {
    /// Builds `opts.dockerfile` in `opts.context`, reporting progress to `reporter`.
    ///
    /// Stages run in parallel, each on its own thread; their CPU-parallel work (hashing,
    /// copying, unpacking) runs on rayon's global pool (the caller sizes it: `--jobs`).
    /// When a step fails, `cancel` is cancelled so that steps running in parallel stages stop
    /// too; Ctrl-C handlers cancel it from outside. Nothing is tagged unless the whole build
    /// succeeds.
    pub fn build(
        &self,
        opts: &BuildOptions,
        reporter: &dyn Reporter,
        cancel: &CancelToken,
    ) -> Result<BuildResult, Error> {
        let started = Instant::now();
        let result = self.build_inner(opts, reporter, cancel, started);
        match &result {
            Ok(r) => reporter.report(&Event::BuildFinished(r.summary.clone())),
            Err(e) => reporter.report(&Event::BuildFailed {
                message: error_text(e),
                duration: started.elapsed(),
            }),
        }
        result
    }

    fn build_inner(
        &self,
        opts: &BuildOptions,
        reporter: &dyn Reporter,
        cancel: &CancelToken,
        started: Instant,
    ) -> Result<BuildResult, Error> {
        let tags: Vec<Reference> = opts
            .tags
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<_, _>>()?;
        let df = strata_parser::parse(&opts.dockerfile)?;
        let mut warnings = Vec::new();
        let lints = strata_parser::lint::lint(&df);
        for l in &lints {
            let text = format!("{}: {} (line {})", l.rule, l.message, l.span.start_line);
            reporter.report(&Event::Warning {
                step: None,
                message: text.clone(),
            });
            warnings.push(text);
        }

        // Build args: later values win; SOURCE_DATE_EPOCH is one of them.
        let mut build_args: Vec<(String, String)> = Vec::new();
        for (k, v) in &opts.build_args {
            build_args.retain(|(name, _)| name != k);
            build_args.push((k.clone(), v.clone()));
        }
        let epoch = match opts.source_date_epoch {
            Some(e) => Some(e),
            None => match build_args.lookup("SOURCE_DATE_EPOCH") {
                Some(v) => Some(v.trim().parse::<i64>().map_err(|_| Error::InvalidOption {
                    option: "--build-arg",
                    value: format!("SOURCE_DATE_EPOCH={v}"),
                    reason: "not a number of seconds".into(),
                })?),
                None => None,
            },
        };
        if let Some(e) = epoch {
            if build_args.lookup("SOURCE_DATE_EPOCH").is_none() {
                build_args.push(("SOURCE_DATE_EPOCH".into(), e.to_string()));
            }
        }
        let host = Platform::host();
        let builtins = platform_args(&host, &host);
        let globals = global_scope(&df, &build_args, &builtins)?;
        let store = self.store();
        let client = Arc::new(strata_store::registry::Client::new(opts.registry.clone()));
        let puller = Puller::new(store, &client, opts.pull, reporter);
        let resolve = |name: &str| puller.resolve(name);
        let plan = plan(&df, globals, opts.target.as_deref(), &host, &resolve)?;
        // As BuildKit: lint findings fail the build only under `# check=error=true` (which
        // makes every finding an error). What cannot be built anyway is refused on its own:
        // a repeated stage name by the parser, more than 128 layers by the plan.
        let lint_errors: BTreeSet<&str> = lints
            .iter()
            .filter(|l| df.directives.check.error && l.severity == Severity::Error)
            .map(|l| l.rule)
            .collect();
        if !lint_errors.is_empty() {
            return Err(Error::Lint {
                rules: lint_errors.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        reporter.report(&Event::BuildStarted {
            stages: plan.order.len(),
            steps: plan.steps,
        });

        // The context is read once, with .dockerignore applied, if anything uses it.
        let needs_context = plan
            .order
            .iter()
            .filter_map(|i| plan.stage(*i))
            .flat_map(|s| &s.instructions)
            .any(uses_context);
        let (context, context_filtered) = if needs_context {
            let ignore = read_ignore_file(&opts.context, opts.dockerfile_path.as_deref())?;
            let patterns = ignore.map(|i| i.patterns).unwrap_or_default();
            let matcher = PatternMatcher::new(&patterns)?;
            let filtered = !patterns.is_empty();
            // The memo loads (and checks its sum) while the context is walked, on a thread of
            // its own: a small context then never starts rayon's pool (whose idle workers
            // spin a while), a large one is walked on it.
            let builder_dir = self.builder_dir();
            let open_memo = || HashCache::open(&builder_dir, &opts.context);
            let (index, memo) = std::thread::scope(|s| {
                let memo = std::thread::Builder::new()
                    .name("strata-memo".into())
                    .spawn_scoped(s, open_memo);
                let index = ContextIndex::walk(&opts.context, filtered.then_some(&matcher));
                let memo = match memo {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    // No thread to be had: loaded after the walk instead.
                    Err(_) => open_memo(),
                };
                (index, memo)
            });
            let mut index = index?;
            index.set_hash_cache(Arc::new(memo));
            (Some(index), filtered)
        } else {
            (None, false)
        };

        let build_id = format!("{}-{}", now_secs(), random_hex());
        let builder_dir = self.builder_dir();
        // Both folders are made when first written to: a build whose steps are all cached
        // writes neither.
        let logs = BuildLogs::new(&builder_dir, &build_id);
        let scratch = builder_dir.join("tmp").join(&build_id);
        let secrets = opts
            .secrets
            .iter()
            .map(|s| (s.id.clone(), s.source.clone()))
            .collect();
        let (remote, import_warnings) = RemoteCache::import(&opts.cache_from, &client, reporter);
        warnings.extend(import_warnings);
        let n_stages = df.stages.len();
        let build = Build {
            engine: self,
            opts,
            last: LastBuilds::new(&builder_dir, &opts.context, opts.dockerfile_path.as_deref()),
            df,
            plan,
            reporter,
            cancel: cancel.clone(),
            platform: host.to_string(),
            context,
            context_filtered,
            logs,
            epoch,
            build_args,
            secrets,
            scratch: scratch.clone(),
            consumed: Mutex::new(BTreeSet::new()),
            results: Mutex::new(vec![None; n_stages]),
            outcomes: Mutex::new(BTreeMap::new()),
            remote: Arc::new(remote),
            remote_hits: Mutex::new(Vec::new()),
            copy_hashes: Mutex::new(Vec::new()),
            present: Mutex::new(BTreeSet::new()),
        };
        // GC waits while we hold this, so nothing we write disappears before it is tagged.
        let lease = self.store().lease()?;
        let ran = build.run_stages();
        let _ = std::fs::remove_dir_all(&scratch);
        // What was hashed stays true whether the build succeeded or not.
        if let Some(index) = &build.context {
            if let Some(memo) = index.hash_cache() {
                memo.save_in_order(index.entries().iter().map(|e| e.path.as_str()));
            }
        }
        ran?;
        let image = build.write_image()?;
        if tags.is_empty() {
            self.store()
                .set_ref(RefKind::Untagged, &image.id().hex(), &image.manifest)?;
        } else {
            let refs: Vec<(Reference, strata_store::Descriptor)> = tags
                .iter()
                .map(|t| (t.clone(), image.manifest.clone()))
                .collect();
            self.store().tag_all(&refs)?;
        }
        build.record_remote_hits();
        drop(lease);
        for spec in &opts.cache_to {
            if let Some(w) = build.export_cache(spec) {
                warnings.push(w);
            }
        }

        if let Some(unused) = build.unused_build_args() {
            reporter.report(&Event::Warning {
                step: None,
                message: unused.clone(),
            });
            warnings.push(unused);
        }
        let steps: Vec<StepOutcome> = lock(&build.outcomes).values().cloned().collect();
        let summary = BuildSummary {
            image_id: Some(image.id().to_string()),
            steps: build.plan.steps,
            cached: steps.iter().filter(|s| s.cached).count(),
            warnings: warnings.len(),
            cache: build.cache_summary(&steps),
            duration: started.elapsed(),
        };
        Ok(BuildResult {
            image,
            tags,
            summary,
            steps,
            log_dir: build.logs.dir().to_path_buf(),
            warnings,
        })
    }
}

/// Locks a mutex, shrugging off poisoning (a panicking stage task must not wedge the rest).
/// A counting semaphore: how many stages may build at the same time.
struct Slots {
    free: Mutex<Option<usize>>,
    freed: std::sync::Condvar,
}

/// A taken slot, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    /// `None`: no limit.
    fn new(max: Option<usize>) -> Slots {
        Slots {
            free: Mutex::new(max.map(|m| m.max(1))),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits for a free slot and takes it.
    fn take(&self) -> Slot<'_> {
        let mut free = lock(&self.free);
        while *free == Some(0) {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(n) = free.as_mut() {
            *n -= 1;
        }
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.0.free).as_mut() {
            *n += 1;
        }
        self.0.freed.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The error with its causes, as one line.
pub fn error_text(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Whether an instruction reads the build context (COPY/ADD without --from, RUN binds of
/// the context).
fn uses_context(i: &Instruction) -> bool {
    match &i.kind {
        InstructionKind::Copy(c) => c.from.is_none(),
        InstructionKind::Add(_) => true,
        InstructionKind::Run(r) => r
            .mounts
            .iter()
            .any(|m| m.kind == MountType::Bind && m.from.is_none()),
        _ => false,
    }
}

impl Build<'_> {
    /// Builds the planned stages, each on its own thread as soon as the stages it needs are
    /// done.
    ///
    /// A stage spends most of its time waiting for processes (RUN) and disks, so stages do
    /// not take turns on the rayon pool's threads: with one worker per core, a third ready
    /// stage would wait until one of the first two finished, and the build would take the
    /// sum of two stages instead of their CPU time shared over the cores. Their CPU-parallel
    /// work (hashing, copying, unpacking) still goes to rayon's pool.
    fn run_stages(&self) -> Result<(), Error> {
        let pending: Mutex<BTreeMap<usize, usize>> = Mutex::new(
            self.plan
                .order
                .iter()
                .filter_map(|i| self.plan.stage(*i).map(|s| (*i, s.deps.len())))
                .collect(),
        );
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let slots = Slots::new(self.opts.max_stages);
        std::thread::scope(|s| {
            let ready: Vec<usize> = lock(&pending)
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(i, _)| *i)
                .collect();
            for i in ready {
                self.spawn_stage(s, i, &pending, &failure, &slots);
            }
        });
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn spawn_stage<'s, 'e>(
        &'s self,
        s: &'s std::thread::Scope<'s, 'e>,
        index: usize,
        pending: &'s Mutex<BTreeMap<usize, usize>>,
        failure: &'s Mutex<Option<Error>>,
        slots: &'s Slots,
    ) {
        let body = move || {
            let slot = slots.take();
            if lock(failure).is_some() {
                return;
            }
            let outcome = self.run_stage(index);
            drop(slot);
            match outcome {
                Ok(state) => {
                    lock(&self.results)[index] = Some(Arc::new(state));
                    let ready: Vec<usize> = {
                        let mut p = lock(pending);
                        self.plan
                            .dependents(index)
                            .into_iter()
                            .filter(|d| match p.get_mut(d) {
                                Some(n) => {
                                    *n = n.saturating_sub(1);
                                    *n == 0
                                }
                                None => false,
                            })
                            .collect()
                    };
                    for d in ready {
                        self.spawn_stage(s, d, pending, failure, slots);
                    }
                }
                Err(e) => self.fail(failure, e),
            }
        };
        let spawned = std::thread::Builder::new()
            .name(format!("strata-stage-{index}"))
            .spawn_scoped(s, body);
        if let Err(e) = spawned {
            self.fail(
                failure,
                Error::io(
                    "start a thread for",
                    Path::new(&format!("stage {index}")),
                    e,
                ),
            );
        }
    }

    /// Keeps the first real failure (a cancellation caused by it is not the story) and stops
    /// the steps running in other stages.
    fn fail(&self, failure: &Mutex<Option<Error>>, e: Error) {
        let mut slot = lock(failure);
        let replace = match &*slot {
            None => true,
            Some(old) => is_cancel(old) && !is_cancel(&e),
        };
        if replace {
            *slot = Some(e);
        }
        drop(slot);
        self.cancel.cancel();
    }

    fn stage_info(&self, sp: &StagePlan, id: StepId, k: usize, text: String) -> StepInfo {
        StepInfo {
            id,
            stage: sp.label.clone(),
            index: k,
            total: sp.total,
            instruction: text,
        }
    }

    fn label(info: &StepInfo) -> String {
        if info.stage.is_empty() {
            format!("[{}/{}] {}", info.index, info.total, info.instruction)
        } else {
            format!(
                "[{} {}/{}] {}",
                info.stage, info.index, info.total, info.instruction
            )
        }
    }

    fn record_outcome(&self, info: &StepInfo, cached: bool, reason: Option<String>) {
        lock(&self.outcomes).insert(
            info.id,
            StepOutcome {
                id: info.id,
                label: Self::label(info),
                cached,
                reason,
            },
        );
    }

    /// What `--explain` summarises: the keyed steps' outcomes and the first miss.
    fn cache_summary(&self, steps: &[StepOutcome]) -> CacheSummary {
        let from_steps: BTreeSet<StepId> = self
            .plan
            .order
            .iter()
            .filter_map(|i| self.plan.stage(*i))
            .map(|s| s.from_step)
            .collect();
        let keyed = steps.iter().filter(|s| !from_steps.contains(&s.id));
        let mut summary = CacheSummary::default();
        for s in keyed {
            if s.cached {
                summary.cached += 1;
                continue;
            }
            summary.run += 1;
            if summary.first_miss.is_none() {
                summary.first_miss = Some(CacheMissSummary {
                    step: s.id,
                    label: s.label.clone(),
                    reason: s
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no reason recorded".into()),
                });
            }
        }
        summary
    }

    fn stage_no_cache(&self, sp: &StagePlan) -> bool {
        let stage = &self.df.stages[sp.index];
        self.opts.no_cache
            || self.opts.no_cache_filter.iter().any(|f| {
                f == &sp.index.to_string()
                    || stage
                        .name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(f))
            })
    }

    /// The created time of entries a step adds: the epoch when reproducible, else `now`.
    fn created_now(&self) -> String {
        rfc3339(self.epoch.unwrap_or_else(now_secs))
    }

    fn run_stage(&self, index: usize) -> Result<StageState, Error> {
        let sp = self.plan.stage(index).ok_or_else(|| Error::InvalidSpec {
            reason: format!("stage {index} is not planned"),
        })?;
        let no_cache = self.stage_no_cache(sp);

        // FROM.
        let started = Instant::now();
        let from_text = match &sp.base {
            Base::Image { name, .. } => Reference::parse(name)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| name.clone()),
            _ => sp.from_text.clone(),
        };
        let from_info = self.stage_info(sp, sp.from_step, 1, format!("FROM {from_text}"));
        self.reporter.report(&Event::StepStarted(from_info.clone()));
        let mut st = match &sp.base {
            Base::Scratch => {
                let mut config = ImageConfig::default();
                let host = Platform::host();
                config
                    .oci
                    .set_architecture(host.architecture.as_str().into());
                config.oci.set_os(host.os.as_str().into());
                config.oci.set_variant(host.variant.clone());
                StageState {
                    config,
                    layers: Vec::new(),
                    parent: Parent::None,
                    scope: StageScope::default(),
                    apply: ApplyState::default(),
                    records: Vec::new(),
                }
            }
            Base::Image { name, image } => {
                let mut config = image.config_parsed.clone();
                config.oci.set_created(None);
                StageState {
                    config,
                    layers: LayerRef::of_image(image),
                    parent: Parent::Image {
                        name: name.clone(),
                        id: image.id().to_string(),
                    },
                    scope: StageScope::default(),
                    apply: ApplyState::default(),
                    records: Vec::new(),
                }
            }
            Base::Stage(p) => {
                let parent = lock(&self.results)[*p]
                    .clone()
                    .ok_or_else(|| Error::InvalidSpec {
                        reason: format!("stage {p} was not built before stage {index}"),
                    })?;
                let mut s = (*parent).clone();
                s.apply = ApplyState::default();
                s
            }
        };
        // Triggers run now and are not inherited further; the default PATH is added.
        st.config.docker.on_build = None;
        ensure_default_path(&mut st.config);
        if !matches!(sp.base, Base::Stage(_)) {
            st.scope = StageScope::from_image(Env::from_kv_strings(
                env_pairs(&st.config)
                    .iter()
                    .map(|(k, v)| format!("{k}={v}")),
            ));
        }
        match &sp.base {
            Base::Image { image, .. } => self.reporter.report(&Event::Cached {
                step: sp.from_step,
                key: image.id().to_string(),
            }),
            Base::Stage(_) => self.reporter.report(&Event::Cached {
                step: sp.from_step,
                key: match &st.parent {
                    Parent::Step { key } => key.to_string(),
                    Parent::Image { id, .. } => id.clone(),
                    Parent::None => "scratch".into(),
                },
            }),
            Base::Scratch => {}
        }
        self.record_outcome(&from_info, !matches!(sp.base, Base::Scratch), None);
        self.reporter.report(&Event::StepDone {
            step: sp.from_step,
            duration: started.elapsed(),
        });

        // Read only when a step misses and its reason is wanted.
        let previous = cache::LazyPrevious::new(&self.last, &sp.display);
        let mut inputs_this_build: Vec<KeyInputs> = Vec::new();
        let mut k = 1;
        for (pos, instr) in sp.instructions.iter().enumerate() {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let step = sp.step_ids.get(pos).copied().flatten();
            let info = step.map(|id| {
                k += 1;
                self.stage_info(sp, id, k, instr.original.clone())
            });
            let started = Instant::now();
            if let Some(info) = &info {
                self.reporter.report(&Event::StepStarted(info.clone()));
            }
            let result = self.instruction(
                &mut st,
                instr,
                info.as_ref(),
                no_cache,
                &previous,
                &mut inputs_this_build,
            );
            match (result, &info) {
                (Ok(()), Some(info)) => self.reporter.report(&Event::StepDone {
                    step: info.id,
                    duration: started.elapsed(),
                }),
                (Ok(()), None) => {}
                (Err(e), Some(info)) => {
                    self.reporter.report(&Event::StepFailed {
                        step: info.id,
                        message: error_text(&e),
                        duration: started.elapsed(),
                    });
                    return Err(match e {
                        e @ (Error::RunFailed { .. } | Error::Cancelled) => e,
                        e => Error::Step {
                            step: Self::label(info),
                            source: Box::new(e),
                        },
                    });
                }
                (Err(e), None) => {
                    return Err(Error::Step {
                        step: format!(
                            "[{}] {} (line {})",
                            sp.display, instr.original, instr.span.start_line
                        ),
                        source: Box::new(e),
                    })
                }
            }
        }
        if let Err(e) = self.last.save(&sp.display, &inputs_this_build) {
            self.reporter.report(&Event::Warning {
                step: None,
                message: format!(
                    "could not record this build for later explanations: {}",
                    error_text(&e)
                ),
            });
        }
        Ok(st)
    }

    #[allow(clippy::too_many_arguments)]
    fn instruction(
        &self,
        st: &mut StageState,
        instr: &Instruction,
        info: Option<&StepInfo>,
        no_cache: bool,
        previous: &cache::LazyPrevious<'_>,
        inputs: &mut Vec<KeyInputs>,
    ) -> Result<(), Error> {
        let escape = self.df.escape();
        match &instr.kind {
            InstructionKind::Arg(a) => {
                let mut resolved = Vec::with_capacity(a.args.len());
                for def in &a.args {
                    let value = match self.build_args.lookup(&def.name) {
                        Some(v) => Some(v.to_string()),
                        None => match &def.default {
                            Some(d) => Some(expand_word(d, st.scope.env(), escape)?.value),
                            None => self.plan.globals.lookup(&def.name).map(str::to_string),
                        },
                    };
                    st.scope
                        .declare_arg(def, &self.build_args, &self.plan.globals, escape)?;
                    lock(&self.consumed).insert(def.name.clone());
                    resolved.push(ArgDef {
                        name: def.name.clone(),
                        default: value,
                    });
                }
                let shown = Instruction {
                    kind: InstructionKind::Arg(ArgCommand { args: resolved }),
                    ..instr.clone()
                };
                self.metadata(st, &shown)
            }
            InstructionKind::Env(_) => {
                let expanded = instr.expand(st.scope.env(), escape)?.value;
                self.metadata(st, &expanded)?;
                st.scope
                    .apply(instr, &self.build_args, &self.plan.globals, escape)?;
                Ok(())
            }
            InstructionKind::Run(_) => {
                let info = info.ok_or_else(|| Error::InvalidSpec {
                    reason: "a RUN without a step number".into(),
                })?;
                let expanded = instr.expand(st.scope.env(), escape)?.value;
                let InstructionKind::Run(run) = &expanded.kind else {
                    return Ok(());
                };
                self.run(st, instr, run, info, no_cache, previous, inputs)
            }
            InstructionKind::Workdir(_) => {
                let expanded = instr.expand(st.scope.env(), escape)?.value;
                let created_by = apply_instruction(&mut st.config, &expanded, &mut st.apply)?;
                let wd = exec_config(&st.config)
                    .working_dir()
                    .clone()
                    .unwrap_or_else(|| "/".into());
                let Some(info) = info else {
                    return Ok(());
                };
                if wd == "/" {
                    push_history(
                        &mut st.config,
                        history_entry(&created_by, true, self.epoch.map(rfc3339)),
                    );
                    self.record_outcome(info, true, None);
                    return Ok(());
                }
                self.workdir(st, &wd, &created_by, info, no_cache, previous, inputs)
            }
            InstructionKind::Copy(_) | InstructionKind::Add(_) => {
                let info = info.ok_or_else(|| Error::InvalidSpec {
                    reason: "a COPY without a step number".into(),
                })?;
                let expanded = instr.expand(st.scope.env(), escape)?.value;
                self.copy(st, instr, &expanded, info, no_cache, previous, inputs)
            }
            _ => {
                let expanded = instr.expand(st.scope.env(), escape)?.value;
                self.metadata(st, &expanded)
            }
        }
    }

    /// A metadata instruction: config change and a history entry without a layer.
    fn metadata(&self, st: &mut StageState, expanded: &Instruction) -> Result<(), Error> {
        let created_by = apply_instruction(&mut st.config, expanded, &mut st.apply)?;
        push_history(
            &mut st.config,
            history_entry(&created_by, true, self.epoch.map(rfc3339)),
        );
        Ok(())
    }

    fn key_inputs(&self, st: &StageState, op: OpKind, instruction: &str) -> KeyInputs {
        let mut k = KeyInputs::new(op, &self.platform, st.parent.clone(), instruction);
        if let Some(e) = self.epoch {
            k.settings.insert("source_date_epoch".into(), e.to_string());
        }
        k
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        st: &mut StageState,
        raw: &Instruction,
        run: &strata_parser::RunCommand,
        info: &StepInfo,
        no_cache: bool,
        previous: &cache::LazyPrevious<'_>,
        inputs: &mut Vec<KeyInputs>,
    ) -> Result<(), Error> {
        let resolve = |from: &str| -> Result<BindFrom, Error> { self.bind_from(from) };
        let env: Vec<(String, String)> = st.scope.env().vars().to_vec();
        let cx = RunContext {
            config: &st.config,
            env: &env,
            declared_args: st.scope.declared_args(),
            build_args: &self.build_args,
            default_network: self.opts.network,
            resolve_from: &resolve,
        };
        let line = raw.span.start_line;
        let plan = runstep::plan_run(&cx, run, raw, line)?;
        let mut key = self.key_inputs(st, OpKind::Run, &raw.original);
        key.args = plan.args.clone();
        key.env = plan.env.clone();
        key.settings.insert(
            "argv".into(),
            serde_json::to_string(&plan.argv).unwrap_or_default(),
        );
        key.settings.insert("cwd".into(), plan.cwd.clone());
        key.settings.insert("user".into(), plan.user.clone());
        key.settings.insert(
            "network".into(),
            match plan.network {
                NetworkMode::Host => "host",
                NetworkMode::None => "none",
            }
            .into(),
        );
        key.settings
            .insert("shell".into(), runstep::shell_setting(&st.config));
        let (mounts, sources) = runstep::mount_inputs(&plan, self.context.as_ref())?;
        key.mounts = mounts;
        if let Some(s) = &sources {
            self.last.save_files(s);
        }
        key.sources = sources;
        let step_scratch = self.scratch.join(format!("step-{}", info.id.0));
        let cache_mounts = self.engine.builder_dir().join("cache-mounts");
        let created_by = plan.created_by.clone();
        let mut scratch_made = false;
        let result = self.layer_step(
            st,
            info,
            key,
            created_by,
            no_cache,
            previous,
            inputs,
            false,
            &mut |rootfs, _, sink| {
                // Binds of stages or images built from shared-cache hits need their layers.
                for m in &plan.mounts {
                    if let runstep::MountPlan::Bind {
                        from: BindFrom::Layers { layers, .. },
                        ..
                    } = m
                    {
                        self.local_layers(layers)?;
                    }
                }
                scratch_made = true;
                std::fs::create_dir_all(&step_scratch)
                    .map_err(|e| Error::io("create", &step_scratch, e))?;
                let env = RunEnv {
                    engine: self.engine,
                    context: self.context.as_ref(),
                    context_filtered: self.context_filtered,
                    secrets: &self.secrets,
                    scratch: &step_scratch,
                    cache_mounts: &cache_mounts,
                    cancel: &self.cancel,
                    line,
                };
                runstep::execute(&plan, rootfs, &env, sink)
            },
        );
        if scratch_made {
            let _ = std::fs::remove_dir_all(&step_scratch);
        }
        result
    }

    /// COPY and ADD: resolve and hash the sources (the copy module), key the step on their
    /// content, and on a miss write them into the stage's snapshot. `--link` (without
    /// `--chmod`, as BuildKit) copies into an empty snapshot whose layer is keyed without
    /// the stage's parent, so its cache survives changes below it.
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        st: &mut StageState,
        raw: &Instruction,
        expanded: &Instruction,
        info: &StepInfo,
        no_cache: bool,
        previous: &cache::LazyPrevious<'_>,
        inputs: &mut Vec<KeyInputs>,
    ) -> Result<(), Error> {
        use crate::copy::{self, AddOptions, CopyRequest, InlineFile, SourceRoot};
        use strata_parser::Source;
        struct Fields {
            sources: Vec<Source>,
            dest: String,
            chown: Option<String>,
            chmod: Option<String>,
            link: bool,
            parents: bool,
            excludes: Vec<String>,
            add: Option<AddOptions>,
        }
        let f = match &expanded.kind {
            InstructionKind::Copy(c) => Fields {
                sources: c.sources.clone(),
                dest: c.dest.clone(),
                chown: c.chown.clone(),
                chmod: c.chmod.clone(),
                link: c.link,
                parents: c.parents,
                excludes: c.excludes.clone(),
                add: None,
            },
            InstructionKind::Add(a) => Fields {
                sources: a.sources.clone(),
                dest: a.dest.clone(),
                chown: a.chown.clone(),
                chmod: a.chmod.clone(),
                link: a.link,
                parents: false,
                excludes: a.excludes.clone(),
                add: Some(AddOptions {
                    checksum: a.checksum.clone(),
                    keep_git_dir: a.keep_git_dir,
                    unpack: a.unpack,
                }),
            },
            _ => return Ok(()),
        };
        let raw_from = match &raw.kind {
            InstructionKind::Copy(c) => c.from.clone(),
            _ => None,
        };
        let mut paths = Vec::new();
        let mut inline = Vec::new();
        for s in &f.sources {
            match s {
                Source::Path(p) => paths.push(p.clone()),
                Source::Inline(i) => inline.push(InlineFile {
                    name: i.name.clone(),
                    content: i.content.clone(),
                }),
            }
        }
        let workdir = exec_config(&st.config)
            .working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        // Made by the views that need it (an empty stack's view is a folder in it).
        let step_scratch = self.scratch.join(format!("step-{}", info.id.0));
        // A stage's or image's files are read from a mounted view, for hashing and copying;
        // it is mounted only when needed (a remembered hash spares it on a cache hit).
        let mut source_chain = None;
        let mut source_layers = None;
        if let Some(from) = &raw_from {
            let BindFrom::Layers { layers, .. } = self.bind_from(from)? else {
                return Err(Error::InvalidSpec {
                    reason: "COPY --from resolved to the context".into(),
                });
            };
            let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
            source_chain = Some(chain_name(&diff_ids).unwrap_or_else(|| "empty".into()));
            source_layers = Some(layers);
        }
        let source_view = std::cell::OnceCell::new();
        let source_root = || match &source_layers {
            Some(layers) => {
                if source_view.get().is_none() {
                    self.local_layers(layers)?;
                    let view = self.engine.view(layers, &step_scratch)?;
                    let _ = source_view.set(view);
                }
                let root = source_view
                    .get()
                    .map(|v: &crate::engine::View<'_>| v.path())
                    .ok_or_else(|| Error::InvalidSpec {
                        reason: "the COPY --from view is not mounted".into(),
                    })?;
                Ok::<_, Error>(SourceRoot::Rootfs { root })
            }
            None => {
                let index = self.context.as_ref().ok_or_else(|| Error::SourceNotFound {
                    path: paths.first().cloned().unwrap_or_default(),
                })?;
                Ok(SourceRoot::Context {
                    dir: index.root(),
                    index,
                })
            }
        };
        let request = |from| CopyRequest {
            sources: paths.clone(),
            inline: inline.clone(),
            dest: f.dest.clone(),
            workdir: workdir.clone(),
            from,
            chown: f.chown.clone(),
            chmod: f.chmod.clone(),
            link: f.link,
            parents: f.parents,
            excludes: f.excludes.clone(),
            add: f.add.clone(),
        };
        // The files of a stage or image are immutable (named by their chainID): what a copy
        // from them hashes to is remembered (here, or by the build that filled a shared
        // cache), so a cached build does not read them again. The memo's key leaves the
        // source root out, so an empty root stands in for it.
        let memo = source_chain.as_deref().map(|chain| {
            let req = request(SourceRoot::Rootfs {
                root: Path::new(""),
            });
            HashMemo::new(&self.engine.builder_dir(), chain, &req)
        });
        let remembered = memo.as_ref().and_then(|m| {
            m.load().or_else(|| {
                let shared = self.remote.copy_hash(&m.key)?;
                m.save(&shared.sources, &shared.dest);
                Some((shared.sources, shared.dest))
            })
        });
        let mut prepared = None;
        let (sources_input, dest) = match remembered {
            Some(r) => r,
            None => {
                let plan = copy::prepare(&request(source_root()?))?;
                let found = (plan.sources_key(), plan.dest().to_string());
                self.last
                    .save_files_with(&found.0.digest, || plan.sources_files());
                if let Some(m) = &memo {
                    m.save(&found.0, &found.1);
                }
                prepared = Some(plan);
                found
            }
        };
        if let Some(m) = &memo {
            lock(&self.copy_hashes).push(CopyHash {
                memo: m.key.clone(),
                dest: dest.clone(),
                sources: crate::cachekey::SourcesInput {
                    digest: sources_input.digest.clone(),
                    files: Default::default(),
                },
            });
        }
        let linked = f.link && f.chmod.is_none();
        let op = if f.add.is_some() {
            OpKind::Add
        } else {
            OpKind::Copy
        };
        let mut key = self.key_inputs(st, op, &raw.original);
        if linked {
            key.parent = Parent::None;
        }
        key.settings.insert("dest".into(), dest);
        if let Some(c) = &f.chown {
            key.settings.insert("chown".into(), c.clone());
        }
        if let Some(c) = &f.chmod {
            key.settings.insert("chmod".into(), c.clone());
        }
        if let Some(from) = &raw_from {
            key.settings.insert("from".into(), from.clone());
        }
        key.sources = Some(sources_input);
        // BuildKit's history text: flags it records, the sources as written, the dest.
        let mut created_by = if f.add.is_some() { "ADD" } else { "COPY" }.to_string();
        if f.parents {
            created_by.push_str(" --parents");
        }
        if let Some(c) = &f.chown {
            created_by.push_str(&format!(" --chown={c}"));
        }
        if let Some(c) = &f.chmod {
            created_by.push_str(&format!(" --chmod={c}"));
        }
        for p in &paths {
            created_by.push(' ');
            created_by.push_str(p);
        }
        for i in &inline {
            created_by.push_str(&format!(" <<{}", i.name));
        }
        created_by.push_str(&format!(" {} # buildkit", f.dest));
        // `--link --chown=name` resolves the name in the stage's filesystem.
        let users_view = match (linked, &f.chown) {
            (true, Some(_)) => {
                self.local_layers(&st.layers)?;
                Some(self.engine.view(&st.layers, &step_scratch)?)
            }
            _ => None,
        };
        let users_root = users_view.as_ref().map(|v| v.path().to_path_buf());
        let mut scratch_used = users_view.is_some();
        let parent_before = st.parent.clone();
        // Where the files of this step's last layer are listed, so that a rebuild links
        // the unchanged ones instead of copying them (overlay only: committed folders are
        // lowers there; a --link layer is not kept as a folder).
        // The snapshotter is only asked (in the action) when the step runs: a cache hit must
        // not open it (opening probes overlayfs).
        let reuse_slot = (!linked).then(|| {
            let mut slot = key.clone();
            slot.sources = None;
            self.engine
                .builder_dir()
                .join("copy-layers")
                .join(slot.key().hex())
        });
        let mut copied = None;
        let layers_before = st.layers.len();
        let result = self.layer_step(
            st,
            info,
            key,
            created_by,
            no_cache,
            previous,
            inputs,
            linked,
            &mut |rootfs, active, _| {
                let plan = match prepared.take() {
                    Some(p) => p,
                    None => {
                        // Remembered without its per-file list (kept apart, or shared by
                        // another machine): keep the list for later explanations.
                        let plan = copy::prepare(&request(source_root()?))?;
                        self.last.save_files(&plan.sources_input());
                        plan
                    }
                };
                let snap = self.engine.snapshotter()?;
                let slot = match &reuse_slot {
                    Some(slot) if snap.driver() == strata_overlay::Driver::Overlay => slot,
                    _ => return plan.apply_with(rootfs, users_root.as_deref()).map(|_| ()),
                };
                let previous = copy::PreviousLayer::load(slot, |name| {
                    let info = snap.stat(name).ok()?;
                    (info.kind == strata_overlay::Kind::Committed).then_some(())?;
                    snap.graph_driver_data(name).ok().map(|g| g.upper_dir)
                });
                let upper = snap.graph_driver_data(active)?.upper_dir;
                // COPY --from links unchanged files from the source's layer folders (the
                // chain is in place: the plan was made from its mounted view). Best effort:
                // without them every file is copied.
                let source_layers = source_chain
                    .as_deref()
                    .and_then(|chain| snap.layer_dirs(chain).ok())
                    .and_then(|dirs| strata_overlay::layers::Layers::open(&dirs).ok());
                let reuse = copy::Reuse {
                    upper: &upper,
                    previous: previous.as_ref(),
                    source: source_layers.as_ref(),
                };
                let (_, files) = plan.apply_reusing(rootfs, users_root.as_deref(), &reuse)?;
                copied = Some(files);
                Ok(())
            },
        );
        scratch_used |= source_view.get().is_some();
        drop(users_view);
        drop(source_view);
        if scratch_used {
            let _ = std::fs::remove_dir_all(&step_scratch);
        }
        result?;
        // Best effort: a list not kept only costs the next build a full copy.
        if let (Some(slot), Some(files)) = (&reuse_slot, copied.filter(|f| !f.is_empty())) {
            if st.layers.len() == layers_before + 1 {
                let diff_ids: Vec<Digest> = st.layers.iter().map(|l| l.diff_id).collect();
                if let Some(name) = chain_name(&diff_ids) {
                    let _ = files.save(slot, &name);
                }
            }
        }
        if linked {
            // What follows depends on both the layers below and the linked layer.
            if let Parent::Step { key: link_key } = st.parent.clone() {
                let mut merged =
                    KeyInputs::new(OpKind::Copy, &self.platform, parent_before, "merge --link");
                merged.settings.insert("layer".into(), link_key.to_string());
                st.parent = Parent::Step { key: merged.key() };
            }
        }
        Ok(())
    }

    /// The source of a RUN bind's `from=` (as written).
    fn bind_from(&self, raw: &str) -> Result<BindFrom, Error> {
        match resolve_from(&self.df, &self.plan.globals, raw)? {
            FromRef::Stage(i) => {
                let state = lock(&self.results)[i]
                    .clone()
                    .ok_or_else(|| Error::InvalidSpec {
                        reason: format!("stage {i} is used before it was built"),
                    })?;
                Ok(BindFrom::Layers {
                    what: format!("stage {}", self.df.stages[i].display_name()),
                    layers: state.layers.clone(),
                })
            }
            FromRef::Image(name) => {
                let image = self
                    .plan
                    .images
                    .get(&name)
                    .ok_or_else(|| Error::ImageNotFound {
                        what: "RUN --mount from",
                        name: name.clone(),
                        line: 0,
                    })?;
                Ok(BindFrom::Layers {
                    what: format!("image {name}@{}", image.id()),
                    layers: LayerRef::of_image(image),
                })
            }
        }
    }

    /// WORKDIR: create the folder (owned by the stage's USER); a layer only if it was missing.
    #[allow(clippy::too_many_arguments)]
    fn workdir(
        &self,
        st: &mut StageState,
        wd: &str,
        created_by: &str,
        info: &StepInfo,
        no_cache: bool,
        previous: &cache::LazyPrevious<'_>,
        inputs: &mut Vec<KeyInputs>,
    ) -> Result<(), Error> {
        let user = exec_config(&st.config).user().clone().unwrap_or_default();
        let mut key = self.key_inputs(st, OpKind::Workdir, &info.instruction);
        key.settings.insert("path".into(), wd.to_string());
        key.settings.insert("user".into(), user.clone());
        let wd = wd.to_string();
        self.layer_step(
            st,
            info,
            key,
            created_by.to_string(),
            no_cache,
            previous,
            inputs,
            false,
            &mut |rootfs, _, _| make_workdir(rootfs, &wd, &user),
        )
    }

    /// The common part of every step with a cache key: look up, or run `action` in a
    /// writable snapshot of the stage's layers and store what it changed.
    #[allow(clippy::too_many_arguments)]
    fn layer_step(
        &self,
        st: &mut StageState,
        info: &StepInfo,
        inputs: KeyInputs,
        created_by: String,
        no_cache: bool,
        previous: &cache::LazyPrevious<'_>,
        seen: &mut Vec<KeyInputs>,
        link: bool,
        action: &mut dyn FnMut(&Path, &str, &mut StepSink<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let store = self.engine.store();
        let key = inputs.key();
        let position = seen.len();
        // Per-file lists stay out of what is kept (the lists are kept apart by digest).
        seen.push(inputs.without_files());
        if !no_cache {
            let hit = match cache::lookup(store, &key)? {
                Some(hit) => {
                    cache::mark_used(store, &hit)?;
                    // `lookup` checked that the layer's blob is there.
                    if let Some(l) = &hit.layer {
                        lock(&self.present).insert(l.digest);
                    }
                    Some(hit)
                }
                None if self.remote.is_empty() => None,
                None => {
                    let below: Vec<Digest> = st.layers.iter().map(|l| l.diff_id).collect();
                    self.remote.lookup(&key, &below).map(|r| {
                        let stage = self.stage_name(info);
                        lock(&self.remote_hits).push((r.clone(), stage));
                        StepHit::undated(r.key, r.layer, r.created_by, r.created)
                    })
                }
            };
            if let Some(hit) = hit {
                self.apply_step(st, &hit, &seen[position]);
                self.reporter.report(&Event::Cached {
                    step: info.id,
                    key: key.to_string(),
                });
                self.record_outcome(info, true, None);
                return Ok(());
            }
        }
        let reason = if no_cache {
            "the cache is off for this stage (--no-cache or --no-cache-filter)".to_string()
        } else {
            cache::miss_reason(
                previous.get(),
                &self.step_texts(info),
                position,
                &inputs,
                &|digest| self.last.load_files(digest),
            )
        };
        self.reporter.report(&Event::CacheMiss {
            step: info.id,
            key: key.to_string(),
            reason: Some(reason.clone()),
        });
        self.record_outcome(info, false, Some(reason));

        let snap = self.engine.snapshotter()?;
        // A --link step starts from nothing: its layer must not depend on what is below.
        let parent = if link {
            None
        } else {
            self.local_layers(&st.layers)?;
            self.engine.ensure_chain(&st.layers)?
        };
        let active = format!("build-{}", random_hex());
        snap.prepare(&active, parent.as_deref())?;
        let ran = (|| -> Result<Option<strata_store::LayerInfo>, Error> {
            let rootfs = snap.mount(&active)?;
            let mut sink = StepSink::new(self.reporter, info.id, &self.logs);
            action(&rootfs, &active, &mut sink)?;
            sink.finish();
            snap.unmount(&active)?;
            // The fastest level: a step's blob is written on the build's critical path.
            let mut writer = store.layer_writer_fast(self.opts.compression)?;
            let stats = snap.write_layer(
                &active,
                &mut writer,
                &TarOptions {
                    clamp_mtime: self.epoch,
                },
            )?;
            if stats.entries == 0 {
                // Nothing changed: no layer, as BuildKit.
                drop(writer);
                return Ok(None);
            }
            Ok(Some(writer.finish()?))
        })();
        let layer = match ran {
            Ok(layer) => layer,
            Err(e) => {
                let _ = snap.unmount(&active);
                let _ = snap.remove(&active);
                return Err(e);
            }
        };
        let mut chain: Vec<Digest> = st.layers.iter().map(|l| l.diff_id).collect();
        match &layer {
            None => snap.remove(&active)?,
            Some(l) if link => {
                // Its folder does not sit on the stage's layers: the chain is unpacked from
                // the blob when a later step needs it.
                chain.push(l.diff_id);
                snap.remove(&active)?;
            }
            Some(l) => {
                chain.push(l.diff_id);
                let name = chain_name(&chain).unwrap_or_default();
                match snap.commit(&active, &name) {
                    Ok(_) => {}
                    // Another build made the same layer meanwhile: use theirs.
                    Err(strata_overlay::Error::AlreadyExists { .. }) => snap.remove(&active)?,
                    Err(e) => {
                        let _ = snap.remove(&active);
                        return Err(e.into());
                    }
                }
            }
        }
        let created = match &layer {
            Some(_) => Some(self.created_now()),
            None => self.epoch.map(rfc3339),
        };
        let record = cache::store_record(
            store,
            &cache::NewRecord {
                key: &key,
                layer: layer.as_ref(),
                chain: &chain,
                created_by: &created_by,
                inputs: &inputs,
                stage: &self.stage_name(info),
            },
            created,
        )?;
        if let Some(l) = &layer {
            lock(&self.present).insert(l.digest);
        }
        let hit = StepHit::undated(record.key, record.layer, record.created_by, record.created);
        self.apply_step(st, &hit, &record.inputs);
        Ok(())
    }

    /// The name of the stage `info` belongs to (`stage-N` when it has none), for its cache
    /// records.
    fn stage_name(&self, info: &StepInfo) -> String {
        self.plan
            .order
            .iter()
            .filter_map(|i| self.plan.stage(*i))
            .find(|s| s.step_ids.iter().flatten().any(|id| *id == info.id))
            .map(|s| {
                self.df.stages[s.index]
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("stage-{}", s.index))
            })
            .unwrap_or_default()
    }

    /// Makes sure the stack `layers` can be unpacked: fetches the layers of shared-cache hits
    /// that are needed and not here yet.
    fn local_layers(&self, layers: &[LayerRef]) -> Result<(), Error> {
        if !self.remote.is_empty() {
            self.remote
                .ensure_local(self.engine, layers, false, self.reporter)?;
        }
        Ok(())
    }

    /// Records locally the shared-cache hits whose layers are here now, so the next build
    /// hits without the source. Best effort: a record that cannot be written costs a fetch.
    fn record_remote_hits(&self) {
        let store = self.engine.store();
        for (r, stage) in lock(&self.remote_hits).iter() {
            let layer = match &r.layer {
                None => None,
                Some(l) if store.has_blob(&l.digest) => Some(l.clone()),
                Some(l) => match store
                    .layer_blobs(&l.diff_id)
                    .ok()
                    .and_then(|b| b.into_iter().next())
                {
                    Some(local) => Some(local),
                    None => continue,
                },
            };
            let _ = cache::store_record(
                store,
                &cache::NewRecord {
                    key: &r.key,
                    layer: layer.as_ref(),
                    chain: &r.chain,
                    created_by: &r.created_by,
                    inputs: &r.inputs,
                    stage,
                },
                r.created.clone(),
            );
        }
    }

    /// Writes this build's records to one `--cache-to`; a failure is a warning (returned).
    fn export_cache(&self, spec: &CacheExport) -> Option<String> {
        let started = Instant::now();
        let mut content = remote_cache::CacheContent::default();
        let results = lock(&self.results).clone();
        let stages: Vec<Arc<StageState>> = match spec.mode {
            remote_cache::ExportMode::Min => results[self.plan.target].iter().cloned().collect(),
            remote_cache::ExportMode::Max => self
                .plan
                .order
                .iter()
                .filter_map(|i| results.get(*i).cloned().flatten())
                .collect(),
        };
        for st in &stages {
            for r in &st.records {
                content.add_record(r);
            }
        }
        for h in lock(&self.copy_hashes).iter() {
            content.add_copy_hash(h);
        }
        match remote_cache::export(
            self.engine.store(),
            &content,
            spec,
            &self.opts.registry,
            &self.remote,
        ) {
            Ok(report) => {
                self.reporter.report(&Event::CacheExported {
                    target: report.target,
                    records: report.records,
                    layers: report.layers,
                    sent: report.sent,
                    bytes: report.bytes,
                    duration: started.elapsed(),
                });
                None
            }
            Err(e) => {
                let message = format!(
                    "the build cache was not exported to {}: {}",
                    spec.location,
                    error_text(&e)
                );
                self.reporter.report(&Event::Warning {
                    step: None,
                    message: message.clone(),
                });
                Some(message)
            }
        }
    }

    /// The instruction texts of the keyed steps of the stage `info` belongs to.
    fn step_texts(&self, info: &StepInfo) -> Vec<String> {
        self.plan
            .order
            .iter()
            .filter_map(|i| self.plan.stage(*i))
            .find(|s| s.step_ids.iter().flatten().any(|id| *id == info.id))
            .map(|s| {
                s.instructions
                    .iter()
                    .zip(&s.step_ids)
                    .filter(|(_, id)| id.is_some())
                    .map(|(i, _)| i.original.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds a step's result (fresh or from the cache) to the stage.
    fn apply_step(&self, st: &mut StageState, record: &StepHit, inputs: &KeyInputs) {
        // Kept only for `--cache-to`, the one reader of a stage's records.
        if !self.opts.cache_to.is_empty() {
            let mut chain: Vec<Digest> = st.layers.iter().map(|l| l.diff_id).collect();
            chain.extend(record.layer.iter().map(|l| l.diff_id));
            st.records.push(CacheRecord {
                key: record.key,
                layer: record.layer.clone(),
                chain,
                created_by: record.created_by.clone(),
                created: record.created.clone(),
                inputs: inputs.clone(),
            });
        }
        if let Some(l) = &record.layer {
            st.layers.push(LayerRef {
                blob: l.descriptor(),
                diff_id: l.diff_id,
            });
        }
        push_history(
            &mut st.config,
            history_entry(
                &record.created_by,
                record.layer.is_none(),
                record.created.clone(),
            ),
        );
        st.parent = Parent::Step { key: record.key };
    }

    /// The result image of the target stage.
    fn write_image(&self) -> Result<Image, Error> {
        let st = lock(&self.results)[self.plan.target]
            .clone()
            .ok_or_else(|| Error::InvalidSpec {
                reason: "the target stage was not built".into(),
            })?;
        let mut config = st.config.clone();
        if !self.opts.labels.is_empty() {
            edit_exec_config(&mut config, |c| {
                let mut labels = c.labels().clone().unwrap_or_default();
                for (k, v) in &self.opts.labels {
                    labels.insert(k.clone(), v.clone());
                }
                c.set_labels(Some(labels));
            });
        }
        let diff_ids: Vec<Digest> = st.layers.iter().map(|l| l.diff_id).collect();
        config.set_diff_ids(&diff_ids);
        normalize_created(&mut config);
        if let Some(e) = self.epoch {
            config.oci.set_created(Some(rfc3339(e)));
        }
        // The image in the store is complete: layers of shared-cache hits are fetched now.
        // When every blob was seen during the build (the base image's are looked for now),
        // nothing is fetched or looked for again.
        let store = self.engine.store();
        let present = {
            let mut present = lock(&self.present);
            for l in &st.layers {
                if !present.contains(&l.blob.digest) && store.has_blob(&l.blob.digest) {
                    present.insert(l.blob.digest);
                }
            }
            present.clone()
        };
        let layers = if st.layers.iter().all(|l| present.contains(&l.blob.digest)) {
            st.layers.clone()
        } else {
            self.remote
                .ensure_local(self.engine, &st.layers, true, self.reporter)?
        };
        let blobs: Vec<strata_store::Descriptor> = layers.iter().map(|l| l.blob.clone()).collect();
        Ok(store.write_image_known(&config.to_bytes(), &blobs, &|d| present.contains(d))?)
    }

    /// Docker's warning for `--build-arg`s no stage declared.
    fn unused_build_args(&self) -> Option<String> {
        let consumed = lock(&self.consumed);
        let meta: BTreeSet<&str> = self.df.meta_arg_defs().map(|d| d.name.as_str()).collect();
        let unused: Vec<&str> = self
            .opts
            .build_args
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| {
                !consumed.contains(*k)
                    && !meta.contains(k)
                    && !is_proxy_arg(k)
                    && *k != "SOURCE_DATE_EPOCH"
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        (!unused.is_empty()).then(|| {
            format!(
                "one or more build-args [{}] were not consumed",
                unused.join(" ")
            )
        })
    }
}

/// What a `COPY --from` of an immutable layer stack hashed to, remembered under
/// `<root>/builder/hash-memo/` by the stack's chainID and the request.
struct HashMemo {
    path: PathBuf,
    /// The memo's key (hex), shared through `--cache-to`.
    key: String,
}

/// A memo keeps only the sources' combined digest (all the cache key needs), so a cached
/// build reads a few bytes; the per-file list is kept apart ([`LastBuilds::save_files`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct MemoRecord {
    dest: String,
    digest: String,
}

impl HashMemo {
    fn new(builder_dir: &Path, chain: &str, req: &crate::copy::CopyRequest<'_>) -> HashMemo {
        let mut e = crate::cachekey::Encoder::new();
        e.str("strata-copy-memo-v1").str(chain);
        e.list(req.sources.len());
        for s in &req.sources {
            e.str(s);
        }
        e.list(req.inline.len());
        for i in &req.inline {
            e.str(&i.name).str(&i.content);
        }
        e.str(&req.dest).str(&req.workdir);
        e.opt_str(req.chown.as_deref())
            .opt_str(req.chmod.as_deref());
        e.bool(req.link).bool(req.parents);
        e.list(req.excludes.len());
        for x in &req.excludes {
            e.str(x);
        }
        e.bool(req.add.is_some());
        let key = e.finish().hex();
        HashMemo {
            path: builder_dir.join("hash-memo").join(format!("{key}.json")),
            key,
        }
    }

    fn load(&self) -> Option<(crate::cachekey::SourcesInput, String)> {
        let bytes = std::fs::read(&self.path).ok()?;
        let r: MemoRecord = serde_json::from_slice(&bytes).ok()?;
        let sources = crate::cachekey::SourcesInput {
            digest: r.digest,
            files: Default::default(),
        };
        Some((sources, r.dest))
    }

    /// Best effort: a memo that cannot be written only costs a re-hash next time.
    fn save(&self, sources: &crate::cachekey::SourcesInput, dest: &str) {
        let record = MemoRecord {
            dest: dest.to_string(),
            digest: sources.digest.clone(),
        };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return;
        };
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = self.path.with_extension(format!("tmp-{}", random_hex()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &self.path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn is_cancel(e: &Error) -> bool {
    matches!(e, Error::Cancelled)
}

/// Creates `wd` and its missing parents (0755) inside `rootfs`, owned by `user` (BuildKit's
/// `WORKDIR` mkdir with `WithUser`); existing folders are left as they are.
fn make_workdir(rootfs: &Path, wd: &str, user: &str) -> Result<(), Error> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    use strata_overlay::in_root::{Follow, Root};
    let root = Root::open(rootfs)?;
    let owner = if user.is_empty() {
        None
    } else {
        resolve_chown_in(rootfs, user)?
    };
    let mut created = Vec::new();
    let mut prefix = PathBuf::new();
    for comp in Path::new(wd)
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
    {
        prefix.push(comp);
        if root.open_dir(&prefix, Follow::InRoot).is_err() {
            created.push(prefix.clone());
        }
    }
    root.create_dir_all(Path::new(wd), 0o755, Follow::InRoot)?;
    if let Some(owner) = owner {
        for p in created {
            let fd = root.open_at(
                &p,
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
                Follow::InRoot,
            )?;
            rustix::fs::chownat(
                &fd,
                "",
                Some(rustix::fs::Uid::from_raw(owner.uid)),
                Some(rustix::fs::Gid::from_raw(owner.gid)),
                AtFlags::EMPTY_PATH,
            )
            .map_err(|e| Error::io("chown", rootfs.join(&p), e.into()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs_follow_docker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cr3t").unwrap();
        let f = file.display().to_string();
        let s = SecretSpec::parse(&format!("id=tok,src={f}")).unwrap();
        assert_eq!(s.id, "tok");
        assert_eq!(s.source, SecretSource::File(file.clone()));
        let s = SecretSpec::parse(&format!("source={f}")).unwrap();
        assert_eq!(s.id, "token");
        let s = SecretSpec::parse("id=tok,env=MY_TOKEN").unwrap();
        assert_eq!(s.source, SecretSource::Env("MY_TOKEN".into()));
        let s = SecretSpec::parse("id=tok,type=env").unwrap();
        assert_eq!(s.source, SecretSource::Env("tok".into()));
        for bad in [
            "",
            "id=x,src=/nonexistent/file",
            "id=x,bogus=1",
            "noequals",
            "src=,env=",
        ] {
            assert!(SecretSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_read_as_one_line_with_their_causes() {
        let e = Error::Step {
            step: "[2/3] RUN make".into(),
            source: Box::new(Error::Unsupported {
                what: "x".into(),
                hint: String::new(),
            }),
        };
        assert_eq!(error_text(&e), "[2/3] RUN make: x is not supported");
    }
}
