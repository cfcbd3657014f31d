//! RUN: from the instruction to the argv, environment, mounts and cache-key inputs, and the
//! execution in a mounted snapshot.
//!
//! What enters the key (BuildKit's ExecOp, reference notes §5.2): the instruction, the argv
//! after shell wrapping (heredoc bodies included), the environment (image `Env`, `ENV` and the
//! ARGs in scope with a value; undeclared proxy args are passed to the process but kept out),
//! the declared build args, the working directory, user, network mode, and every mount with
//! its options; for binds of the build context the content of the bound files (so the
//! explanation can name the file that changed), for binds of a stage or image the chainID of
//! its filesystem. Never: cache-mount contents, secret values, HOME.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_parser::{
    CacheSharing, CommandLine, Heredoc, Instruction, Mount as ParsedMount, MountType, NetworkMode,
    RunCommand, SecurityMode,
};
use strata_store::Digest;

use crate::cachekey::{FileInput, MountInput, SourcesInput};
use crate::context::{hash_selection, ContextIndex, FileKind, HashOptions};
use crate::engine::{chain_name, Engine, LayerRef};
use crate::exec::{self, CancelToken, MountKind, ProcessSpec, DEFAULT_SECRET_MODE};
use crate::imageconfig::{shell, with_shell};
use crate::logs::StepSink;
use crate::platform::is_proxy_arg;
use crate::user::resolve_run_user;
use crate::Error;

/// Where the files of a bind mount come from.
#[derive(Debug, Clone)]
pub enum BindFrom {
    /// The build context.
    Context,
    /// A stage's or image's filesystem.
    Layers {
        /// How the key names it (`stage build`, `image busybox`).
        what: String,
        /// Its layers, base first.
        layers: Vec<LayerRef>,
    },
}

/// One RUN mount, resolved (but not yet made).
#[derive(Debug, Clone)]
pub enum MountPlan {
    /// A bind of part of the context, a stage or an image.
    Bind {
        /// Where it appears.
        target: String,
        /// The path inside the source (clean, relative).
        source: String,
        /// Its source.
        from: BindFrom,
        /// Read-only (the default); writes to a read-write bind are thrown away.
        readonly: bool,
    },
    /// A persistent cache folder.
    Cache {
        /// Where it appears.
        target: String,
        /// Its id (default: the target).
        id: String,
        /// How concurrent steps share it.
        sharing: CacheSharing,
        /// Read-only.
        readonly: bool,
        /// Mode of the folder when created.
        mode: u32,
        /// Owner of the folder when created.
        uid: u32,
        /// Group of the folder when created.
        gid: u32,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// Where it appears.
        target: String,
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A secret.
    Secret {
        /// Where the file appears, if it is mounted as a file.
        target: Option<String>,
        /// The secret's id.
        id: String,
        /// Fail when the secret was not given.
        required: bool,
        /// File mode.
        mode: u32,
        /// File owner.
        uid: u32,
        /// File group.
        gid: u32,
        /// Also (or only) expose the value as this environment variable.
        env: Option<String>,
    },
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the host.
    File(PathBuf),
    /// An environment variable of the build's caller.
    Env(String),
}

/// Everything a RUN step needs, computed before its cache key.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// The command as written, for messages (`RUN <this> returned exit code 1`).
    pub command_text: String,
    /// The history entry's `created_by`.
    pub created_by: String,
    /// The environment the key sees.
    pub env: Vec<(String, String)>,
    /// Proxy args passed to the process but kept out of the key.
    pub proxy_env: Vec<(String, String)>,
    /// Declared ARGs with a value.
    pub args: BTreeMap<String, String>,
    /// The working directory.
    pub cwd: String,
    /// The user spec (`USER`).
    pub user: String,
    /// Network isolation.
    pub network: exec::NetworkMode,
    /// The mounts.
    pub mounts: Vec<MountPlan>,
    /// A heredoc script to place at `HEREDOC_DIR/<name>` and run.
    pub script: Option<(String, String)>,
}

/// Where a RUN heredoc with a `#!` line is mounted (BuildKit uses `/dev/pipes`, which our
/// executor keeps for its own `/dev`).
pub const HEREDOC_DIR: &str = "/run/strata-heredoc";

/// What RUN needs to know about the stage and the build.
pub struct RunContext<'a> {
    /// The image config so far.
    pub config: &'a strata_store::ImageConfig,
    /// The stage's variables (image env, ENV, ARGs).
    pub env: &'a [(String, String)],
    /// The ARG names declared in the stage so far.
    pub declared_args: &'a [String],
    /// The build args given (for undeclared proxy args).
    pub build_args: &'a [(String, String)],
    /// The network mode of RUN steps that do not say.
    pub default_network: exec::NetworkMode,
    /// Resolves a mount's `from=` (as written) to its source.
    pub resolve_from: &'a dyn Fn(&str) -> Result<BindFrom, Error>,
}

/// The argv of a RUN (BuildKit's `dispatchRun`): exec form as is; shell form through the
/// shell; a lone heredoc runs its body through the shell, or as a script when it starts with
/// `#!`; other heredocs are appended to the command for the shell to read.
fn argv_of(
    config: &strata_store::ImageConfig,
    run: &RunCommand,
) -> (Vec<String>, Option<(String, String)>) {
    match &run.command {
        CommandLine::Exec(v) => (v.clone(), None),
        CommandLine::Shell(text) if run.heredocs.is_empty() => {
            (with_shell(config, std::slice::from_ref(text)), None)
        }
        CommandLine::Shell(text) => {
            if let [only] = run.heredocs.as_slice() {
                if is_lone_heredoc(text, only) {
                    let data = only.chomped();
                    if data.starts_with("#!") {
                        let path = format!("{HEREDOC_DIR}/{}", only.name);
                        return (vec![path], Some((only.name.clone(), data)));
                    }
                    return (with_shell(config, &[data]), None);
                }
            }
            let mut full = text.clone();
            for h in &run.heredocs {
                full.push('\n');
                full.push_str(&h.content);
                full.push_str(&h.name);
            }
            (with_shell(config, &[full]), None)
        }
    }
}

/// Whether the whole command is just the heredoc marker (`<<EOF`, `<<-'EOF'`, `3<<EOF`).
fn is_lone_heredoc(text: &str, h: &Heredoc) -> bool {
    let t = text.trim();
    let t = t.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = t.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim_start();
    let unquoted: String = rest.chars().filter(|c| *c != '"' && *c != '\'').collect();
    unquoted == h.name
}

/// The command as written, for messages.
fn command_text(run: &RunCommand) -> String {
    match &run.command {
        CommandLine::Shell(s) => s.clone(),
        CommandLine::Exec(v) => {
            let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", quoted.join(", "))
        }
    }
}

/// BuildKit's `runCommandString`: `|N K=V ... argv` when ARGs were declared in the stage.
fn run_command_string(argv: &[String], declared: &[String], env: &[(String, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for name in declared {
        let value = env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        parts.push(format!("{name}={value}"));
    }
    if !parts.is_empty() {
        parts.insert(0, format!("|{}", parts.len()));
    }
    parts.extend(argv.iter().cloned());
    parts.join(" ")
}

fn clean_target(target: &str, cwd: &str) -> String {
    crate::imageconfig::normalize_workdir(Some(cwd), target)
}

/// Plans a RUN whose fields were expanded; `raw` is the instruction as written (its mount
/// `from=` values are resolved the way the build plan resolved them).
pub fn plan_run(
    cx: &RunContext<'_>,
    run: &RunCommand,
    raw: &Instruction,
    line: usize,
) -> Result<RunPlan, Error> {
    if run.security == Some(SecurityMode::Insecure) {
        return Err(Error::Unsupported {
            what: format!("RUN --security=insecure (line {line})"),
            hint: ": strata runs every step in its sandbox".into(),
        });
    }
    let exec_config = crate::imageconfig::exec_config(cx.config);
    let cwd = exec_config
        .working_dir()
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let (argv, script) = argv_of(cx.config, run);
    let env: Vec<(String, String)> = cx.env.to_vec();
    let created_by = format!(
        "RUN {} # buildkit",
        run_command_string(&argv, cx.declared_args, &env)
    );
    let args: BTreeMap<String, String> = cx
        .declared_args
        .iter()
        .filter_map(|a| {
            env.iter()
                .rev()
                .find(|(k, _)| k == a)
                .map(|(k, v)| (k.clone(), v.clone()))
        })
        .collect();
    let proxy_env: Vec<(String, String)> = cx
        .build_args
        .iter()
        .filter(|(k, _)| is_proxy_arg(k) && !cx.declared_args.contains(k))
        .cloned()
        .collect();
    let network = match run.network {
        None | Some(NetworkMode::Default) => cx.default_network,
        Some(NetworkMode::Host) => exec::NetworkMode::Host,
        Some(NetworkMode::None) => exec::NetworkMode::None,
    };
    let raw_mounts: &[ParsedMount] = match &raw.kind {
        strata_parser::InstructionKind::Run(r) => &r.mounts,
        _ => &[],
    };
    let mut mounts = Vec::new();
    for (i, m) in run.mounts.iter().enumerate() {
        let raw_from = raw_mounts.get(i).and_then(|r| r.from.clone());
        mounts.push(plan_mount(cx, m, raw_from.as_deref(), &cwd, line)?);
    }
    Ok(RunPlan {
        argv,
        command_text: command_text(run),
        created_by,
        env,
        proxy_env,
        args,
        cwd,
        user: exec_config.user().clone().unwrap_or_default(),
        network,
        mounts,
        script,
    })
}

fn plan_mount(
    cx: &RunContext<'_>,
    m: &ParsedMount,
    raw_from: Option<&str>,
    cwd: &str,
    line: usize,
) -> Result<MountPlan, Error> {
    let target = m.target.as_deref().map(|t| clean_target(t, cwd));
    let need_target = |kind: &str| {
        target.clone().ok_or_else(|| Error::InvalidInstruction {
            line,
            instruction: "RUN",
            problem: format!("a {kind} mount needs target="),
        })
    };
    Ok(match m.kind {
        MountType::Bind => {
            let from = match raw_from {
                Some(f) => (cx.resolve_from)(f)?,
                None => BindFrom::Context,
            };
            MountPlan::Bind {
                target: need_target("bind")?,
                source: clean_source(m.source.as_deref().unwrap_or("")),
                from,
                readonly: m.readonly,
            }
        }
        MountType::Cache => {
            if raw_from.is_some() {
                return Err(Error::Unsupported {
                    what: format!("a cache mount with from= (line {line})"),
                    hint: ": cache mounts start empty".into(),
                });
            }
            let target = need_target("cache")?;
            MountPlan::Cache {
                id: m
                    .id
                    .clone()
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| target.clone()),
                target,
                sharing: m.sharing.unwrap_or(CacheSharing::Shared),
                readonly: m.readonly,
                mode: m.mode.unwrap_or(0o755),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            }
        }
        MountType::Tmpfs => MountPlan::Tmpfs {
            target: need_target("tmpfs")?,
            size: m.size,
        },
        MountType::Secret => {
            let id =
                m.id.clone()
                    .filter(|i| !i.is_empty())
                    .or_else(|| {
                        target
                            .as_deref()
                            .and_then(|t| t.rsplit('/').next())
                            .map(str::to_string)
                    })
                    .ok_or_else(|| Error::InvalidInstruction {
                        line,
                        instruction: "RUN",
                        problem: "a secret mount needs id= or target=".into(),
                    })?;
            let file_target = match (&target, &m.env) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{id}")),
            };
            MountPlan::Secret {
                target: file_target,
                id,
                required: m.required,
                mode: m.mode.unwrap_or(DEFAULT_SECRET_MODE),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
                env: m.env.clone(),
            }
        }
        MountType::Ssh => {
            return Err(Error::Unsupported {
                what: format!("RUN --mount=type=ssh (line {line})"),
                hint: String::new(),
            })
        }
    })
}

/// A mount `source=` as a clean path relative to its root (`..` cannot leave it).
fn clean_source(source: &str) -> String {
    let abs = crate::imageconfig::normalize_workdir(Some("/"), source);
    abs.trim_start_matches('/').to_string()
}

/// The key's view of the mounts: options by mount, plus the content of context binds
/// (`sources`, per file under the mount's target).
pub fn mount_inputs(
    plan: &RunPlan,
    context: Option<&ContextIndex>,
) -> Result<(Vec<MountInput>, Option<SourcesInput>), Error> {
    let mut inputs = Vec::new();
    let mut files = BTreeMap::new();
    let mut digests = Vec::new();
    for m in &plan.mounts {
        let mut options: BTreeMap<String, String> = BTreeMap::new();
        let mut opt = |k: &str, v: String| {
            options.insert(k.to_string(), v);
        };
        let target = match m {
            MountPlan::Bind {
                target,
                source,
                from,
                readonly,
            } => {
                opt("type", "bind".into());
                opt("source", format!("/{source}"));
                opt("readonly", readonly.to_string());
                match from {
                    BindFrom::Context => {
                        opt("from", "context".into());
                        let index = context.ok_or_else(|| Error::SourceNotFound {
                            path: source.clone(),
                        })?;
                        let sel = if source.is_empty() {
                            "."
                        } else {
                            source.as_str()
                        };
                        let hashed = hash_selection(index, &[sel], &HashOptions::context())?;
                        digests.push(format!("{target}={}", hashed.digest));
                        for (path, file) in hashed.files {
                            let rel = path
                                .strip_prefix(source.as_str())
                                .unwrap_or(&path)
                                .trim_start_matches('/')
                                .to_string();
                            let shown = if rel.is_empty() || rel == "." {
                                target.clone()
                            } else {
                                format!("{}/{rel}", target.trim_end_matches('/'))
                            };
                            files.insert(shown, file);
                        }
                    }
                    BindFrom::Layers { what, layers } => {
                        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
                        let chain = chain_name(&diff_ids).unwrap_or_else(|| "empty".into());
                        opt("from", format!("{what}@{chain}"));
                    }
                }
                target
            }
            MountPlan::Cache {
                target,
                id,
                sharing,
                readonly,
                mode,
                uid,
                gid,
            } => {
                opt("type", "cache".into());
                opt("id", id.clone());
                opt(
                    "sharing",
                    match sharing {
                        CacheSharing::Shared => "shared",
                        CacheSharing::Private => "private",
                        CacheSharing::Locked => "locked",
                    }
                    .into(),
                );
                opt("readonly", readonly.to_string());
                opt("mode", format!("{mode:o}"));
                opt("uid", uid.to_string());
                opt("gid", gid.to_string());
                target
            }
            MountPlan::Tmpfs { target, size } => {
                opt("type", "tmpfs".into());
                opt("size", size.map(|s| s.to_string()).unwrap_or_default());
                target
            }
            MountPlan::Secret {
                target,
                id,
                required,
                mode,
                uid,
                gid,
                env,
            } => {
                opt("type", "secret".into());
                opt("id", id.clone());
                opt("required", required.to_string());
                opt("mode", format!("{mode:o}"));
                opt("uid", uid.to_string());
                opt("gid", gid.to_string());
                opt("env", env.clone().unwrap_or_default());
                match target {
                    Some(t) => t,
                    None => {
                        inputs.push(MountInput {
                            target: format!("env:{}", env.clone().unwrap_or_default()),
                            options,
                        });
                        continue;
                    }
                }
            }
        };
        inputs.push(MountInput {
            target: target.clone(),
            options,
        });
    }
    let sources = (!digests.is_empty()).then(|| SourcesInput {
        digest: format!(
            "sha256:{}",
            hex::encode(Sha256::digest(digests.join("\n").as_bytes()))
        ),
        files: files.into_iter().collect::<BTreeMap<String, FileInput>>(),
    });
    Ok((inputs, sources))
}

/// What a RUN needs from the build while it runs.
pub struct RunEnv<'a> {
    /// Store and snapshotter (for binds of stages and images).
    pub engine: &'a Engine,
    /// The build context and its index.
    pub context: Option<&'a ContextIndex>,
    /// Whether a `.dockerignore` filters the context (then binds show a filtered copy).
    pub context_filtered: bool,
    /// The given secrets.
    pub secrets: &'a BTreeMap<String, SecretSource>,
    /// A private scratch folder for this step (removed by the caller).
    pub scratch: &'a Path,
    /// `<root>/builder/cache-mounts`.
    pub cache_mounts: &'a Path,
    /// Cancellation.
    pub cancel: &'a CancelToken,
    /// The RUN's line (for messages).
    pub line: usize,
}

/// Mounts made for one run, undone on drop: views of other stages' snapshots, cache-mount
/// locks.
struct Made<'a> {
    engine: &'a Engine,
    views: Vec<String>,
    locks: Vec<std::fs::File>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if let Ok(snapshotter) = self.engine.snapshotter() {
            for v in self.views.drain(..) {
                let _ = snapshotter.unmount(&v);
                let _ = snapshotter.remove(&v);
            }
        }
        // Closing the files releases the flocks.
        self.locks.clear();
    }
}

/// Runs the planned RUN in the mounted root filesystem `rootfs`.
pub fn execute(
    plan: &RunPlan,
    rootfs: &Path,
    env: &RunEnv<'_>,
    sink: &mut StepSink<'_>,
) -> Result<(), Error> {
    let mut made = Made {
        engine: env.engine,
        views: Vec::new(),
        locks: Vec::new(),
    };
    let user = resolve_run_user(rootfs, &plan.user)?;
    let mut process_env = plan.env.clone();
    process_env.extend(plan.proxy_env.iter().cloned());
    if !process_env.iter().any(|(k, _)| k == "HOME") {
        process_env.push(("HOME".to_string(), user.home.clone()));
    }
    let mut mounts = Vec::new();
    if let Some((name, data)) = &plan.script {
        let dir = env.scratch.join("heredoc");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let file = dir.join(name);
        std::fs::write(&file, data).map_err(|e| Error::io("write", &file, e))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &file, e))?;
        mounts.push(exec::Mount {
            target: HEREDOC_DIR.to_string(),
            kind: MountKind::Bind {
                source: dir,
                readonly: true,
            },
        });
    }
    for (i, m) in plan.mounts.iter().enumerate() {
        match m {
            MountPlan::Bind {
                target,
                source,
                from,
                readonly,
            } => {
                let host = bind_source(env, &mut made, from, source, *readonly, i)?;
                mounts.push(exec::Mount {
                    target: target.clone(),
                    kind: MountKind::Bind {
                        source: host,
                        readonly: *readonly,
                    },
                });
            }
            MountPlan::Cache {
                target,
                id,
                sharing,
                readonly,
                mode,
                uid,
                gid,
            } => {
                let dir = cache_dir(env, &mut made, id, *sharing, *mode, *uid, *gid, i)?;
                mounts.push(exec::Mount {
                    target: target.clone(),
                    kind: MountKind::Cache {
                        source: dir,
                        readonly: *readonly,
                    },
                });
            }
            MountPlan::Tmpfs { target, size } => mounts.push(exec::Mount {
                target: target.clone(),
                kind: MountKind::Tmpfs { size: *size },
            }),
            MountPlan::Secret {
                target,
                id,
                required,
                mode,
                uid,
                gid,
                env: env_name,
            } => {
                let Some(source) = env.secrets.get(id) else {
                    if *required {
                        return Err(Error::SecretNotFound {
                            id: id.clone(),
                            line: env.line,
                        });
                    }
                    continue;
                };
                let file = secret_file(env, source, id, i)?;
                if let Some(name) = env_name {
                    let value = std::fs::read(&file).map_err(|e| Error::io("read", &file, e))?;
                    process_env.push((name.clone(), String::from_utf8_lossy(&value).into_owned()));
                }
                if let Some(t) = target {
                    mounts.push(exec::Mount {
                        target: t.clone(),
                        kind: MountKind::Secret {
                            source: file,
                            uid: *uid,
                            gid: *gid,
                            mode: *mode,
                        },
                    });
                }
            }
        }
    }
    let mut spec = ProcessSpec::new(rootfs, &[]);
    spec.argv = plan.argv.clone();
    spec.env = process_env;
    spec.cwd = plan.cwd.clone();
    spec.uid = user.uid;
    spec.gid = user.gid;
    spec.groups = user.supplementary_gids.clone();
    spec.network = plan.network;
    spec.mounts = mounts;
    let outcome = exec::run(&spec, sink, env.cancel)?;
    drop(made);
    if !outcome.status.success() {
        return Err(Error::RunFailed {
            command: plan.command_text.clone(),
            code: outcome.status.code(),
        });
    }
    Ok(())
}

/// The host path to bind for a bind mount.
fn bind_source(
    env: &RunEnv<'_>,
    made: &mut Made<'_>,
    from: &BindFrom,
    source: &str,
    readonly: bool,
    index: usize,
) -> Result<PathBuf, Error> {
    let rel = if source.is_empty() { "." } else { source };
    match from {
        BindFrom::Context => {
            let index_ctx = env.context.ok_or_else(|| Error::SourceNotFound {
                path: source.to_string(),
            })?;
            let pos_path = if source.is_empty() { "" } else { source };
            if index_ctx.position(pos_path).is_none() {
                return Err(Error::SourceNotFound {
                    path: source.to_string(),
                });
            }
            if readonly && !env.context_filtered {
                // The context as is: symlinks in it resolve inside the container's root.
                let root = strata_overlay::in_root::Root::open(index_ctx.root())?;
                let resolved = root.resolved(Path::new(rel))?;
                let inside = resolved.strip_prefix("/").unwrap_or(&resolved);
                return Ok(index_ctx.root().join(inside));
            }
            // A copy that holds only what .dockerignore lets through (and that a
            // read-write mount may change without touching the context).
            let dest = env.scratch.join(format!("bind-{index}"));
            materialize(index_ctx, pos_path, &dest, !readonly)?;
            Ok(dest)
        }
        BindFrom::Layers { layers, .. } => {
            let Some(top) = env.engine.ensure_chain(layers)? else {
                // An empty filesystem (scratch): only `/` exists.
                let dest = env.scratch.join(format!("bind-{index}"));
                std::fs::create_dir_all(&dest).map_err(|e| Error::io("create", &dest, e))?;
                if !source.is_empty() {
                    return Err(Error::SourceNotFound {
                        path: source.to_string(),
                    });
                }
                return Ok(dest);
            };
            let key = format!("build-view-{}", crate::build::random_hex());
            env.engine.snapshotter()?.view(&key, Some(&top))?;
            made.views.push(key.clone());
            let merged = env.engine.snapshotter()?.mount(&key)?;
            let root = strata_overlay::in_root::Root::open(&merged)?;
            let resolved = root
                .resolved(Path::new(rel))
                .map_err(|_| Error::SourceNotFound {
                    path: source.to_string(),
                })?;
            let inside = resolved.strip_prefix("/").unwrap_or(&resolved);
            if readonly {
                return Ok(merged.join(inside));
            }
            let dest = env.scratch.join(format!("bind-{index}"));
            copy_tree(&merged.join(inside), &dest)?;
            Ok(dest)
        }
    }
}

/// A copy of the context entries at `sel` (and below) in `dest`: hard links for read-only
/// use, real copies when the step may write.
fn materialize(index: &ContextIndex, sel: &str, dest: &Path, copy: bool) -> Result<(), Error> {
    let Some(pos) = index.position(sel) else {
        return Err(Error::SourceNotFound {
            path: sel.to_string(),
        });
    };
    let entries = index.entries();
    for e in &entries[index.subtree_range(pos)] {
        let rel = if sel.is_empty() {
            e.path.as_str()
        } else {
            e.path
                .strip_prefix(sel)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or("")
        };
        let to = if rel.is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(rel)
        };
        let from = index.root().join(&e.path);
        match e.kind {
            FileKind::Dir => {
                std::fs::create_dir_all(&to).map_err(|err| Error::io("create", &to, err))?;
                let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(e.mode));
            }
            FileKind::File => {
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|err| Error::io("create", parent, err))?;
                }
                let linked = !copy && std::fs::hard_link(&from, &to).is_ok();
                if !linked {
                    std::fs::copy(&from, &to).map_err(|err| Error::io("copy", &from, err))?;
                }
            }
            FileKind::Symlink => {
                if let Some(target) = &e.link_target {
                    std::os::unix::fs::symlink(target, &to)
                        .map_err(|err| Error::io("symlink", &to, err))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A plain recursive copy (for read-write binds of a stage, whose writes are thrown away).
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(from).map_err(|e| Error::io("stat", from, e))?;
    if meta.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| Error::io("create", to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| Error::io("list", from, e))? {
            let entry = entry.map_err(|e| Error::io("list", from, e))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        let _ = std::fs::set_permissions(to, meta.permissions());
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from).map_err(|e| Error::io("readlink", from, e))?;
        std::os::unix::fs::symlink(target, to).map_err(|e| Error::io("symlink", to, e))?;
    } else if meta.is_file() {
        std::fs::copy(from, to).map_err(|e| Error::io("copy", from, e))?;
    }
    Ok(())
}

/// The folder of cache mount `id`, created with its mode and owner the first time, and
/// locked as `sharing` asks (the lock lives in `made`).
#[allow(clippy::too_many_arguments)]
fn cache_dir(
    env: &RunEnv<'_>,
    made: &mut Made<'_>,
    id: &str,
    sharing: CacheSharing,
    mode: u32,
    uid: u32,
    gid: u32,
    index: usize,
) -> Result<PathBuf, Error> {
    use rustix::fs::{flock, FlockOperation};
    let name = hex::encode(Sha256::digest(id.as_bytes()));
    let home = env.cache_mounts.join(&name);
    let data = home.join("data");
    std::fs::create_dir_all(&home).map_err(|e| Error::io("create", &home, e))?;
    if std::fs::symlink_metadata(&data).is_err() {
        // Made aside and renamed, so a half-made folder never appears.
        let tmp = home.join(format!(".new-{}", crate::build::random_hex()));
        std::fs::create_dir(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
            .map_err(|e| Error::io("chown", &tmp, e))?;
        if std::fs::rename(&tmp, &data).is_err() {
            let _ = std::fs::remove_dir(&tmp);
        }
        let _ = std::fs::write(home.join("id"), id);
    }
    let lock_path = home.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("open", &lock_path, e))?;
    match sharing {
        CacheSharing::Shared => {
            flock(&lock, FlockOperation::LockShared)
                .map_err(|e| Error::io("lock", &lock_path, e.into()))?;
        }
        CacheSharing::Locked => {
            flock(&lock, FlockOperation::LockExclusive)
                .map_err(|e| Error::io("lock", &lock_path, e.into()))?;
        }
        CacheSharing::Private => {
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                // In use: this step gets a fresh folder of its own, thrown away after.
                let dir = env.scratch.join(format!("cache-{index}"));
                std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| Error::io("chmod", &dir, e))?;
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                    .map_err(|e| Error::io("chown", &dir, e))?;
                return Ok(dir);
            }
        }
    }
    made.locks.push(lock);
    Ok(data)
}

/// The host file holding secret `id`.
fn secret_file(
    env: &RunEnv<'_>,
    source: &SecretSource,
    id: &str,
    index: usize,
) -> Result<PathBuf, Error> {
    match source {
        SecretSource::File(path) => Ok(path.clone()),
        SecretSource::Env(var) => {
            let value = std::env::var_os(var).ok_or_else(|| Error::InvalidOption {
                option: "--secret",
                value: format!("id={id},env={var}"),
                reason: format!("the environment variable {var} is not set"),
            })?;
            let file = env.scratch.join(format!("secret-{index}"));
            std::fs::write(
                &file,
                std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str()),
            )
            .map_err(|e| Error::io("write", &file, e))?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io("chmod", &file, e))?;
            Ok(file)
        }
    }
}

/// The shell the key records (for "the shell changed" explanations).
pub fn shell_setting(config: &strata_store::ImageConfig) -> String {
    shell(config).join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::ImageConfig;

    fn run_of(src: &str) -> (RunCommand, Instruction) {
        let df = strata_parser::parse(&format!("FROM scratch\n{src}")).unwrap();
        let i = df.stages[0].instructions[0].clone();
        match &i.kind {
            strata_parser::InstructionKind::Run(r) => (r.clone(), i),
            _ => panic!("not a RUN"),
        }
    }

    fn argv(src: &str) -> (Vec<String>, Option<(String, String)>) {
        argv_of(&ImageConfig::default(), &run_of(src).0)
    }

    #[test]
    fn argv_follows_dispatch_run() {
        assert_eq!(argv("RUN echo hi").0, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(argv("RUN [\"echo\", \"hi\"]").0, ["echo", "hi"]);
        assert_eq!(
            argv("RUN <<EOF\necho a\necho b\nEOF\n").0,
            ["/bin/sh", "-c", "echo a\necho b\n"]
        );
        let (a, script) = argv("RUN <<EOF\n#!/bin/sh\necho s\nEOF\n");
        assert_eq!(a, [format!("{HEREDOC_DIR}/EOF")]);
        assert_eq!(script, Some(("EOF".into(), "#!/bin/sh\necho s\n".into())));
        assert_eq!(
            argv("RUN cat <<EOF > /f\nx\nEOF\n").0,
            ["/bin/sh", "-c", "cat <<EOF > /f\nx\nEOF"]
        );
        let mut c = ImageConfig::default();
        c.docker.shell = Some(vec![
            "/bin/bash".into(),
            "-eo".into(),
            "pipefail".into(),
            "-c".into(),
        ]);
        assert_eq!(
            argv_of(&c, &run_of("RUN make").0),
            (
                vec![
                    "/bin/bash".into(),
                    "-eo".into(),
                    "pipefail".into(),
                    "-c".into(),
                    "make".into()
                ],
                None
            )
        );
    }

    #[test]
    fn created_by_lists_declared_args_like_buildkit() {
        let argv = vec!["/bin/sh".to_string(), "-c".into(), "make".into()];
        assert_eq!(run_command_string(&argv, &[], &[]), "/bin/sh -c make");
        let env = vec![("A".to_string(), "1".to_string()), ("B".into(), "2".into())];
        assert_eq!(
            run_command_string(&argv, &["A".into(), "B".into(), "C".into()], &env),
            "|3 A=1 B=2 C= /bin/sh -c make"
        );
    }

    fn cx_plan(src: &str, env: &[(String, String)], declared: &[String]) -> Result<RunPlan, Error> {
        let (run, raw) = run_of(src);
        let config = ImageConfig::default();
        let resolve = |f: &str| -> Result<BindFrom, Error> {
            Ok(BindFrom::Layers {
                what: format!("stage {f}"),
                layers: Vec::new(),
            })
        };
        let cx = RunContext {
            config: &config,
            env,
            declared_args: declared,
            build_args: &[
                ("http_proxy".into(), "http://p".into()),
                ("A".into(), "1".into()),
            ],
            default_network: exec::NetworkMode::Host,
            resolve_from: &resolve,
        };
        plan_run(&cx, &run, &raw, 2)
    }

    #[test]
    fn mounts_are_planned_with_docker_defaults() {
        let p = cx_plan(
            "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok \
             --mount=type=bind,from=build,source=/out/../bin,target=bin \
             --mount=type=tmpfs,target=/t,size=1048576 --network=none true",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(p.network, exec::NetworkMode::None);
        assert_eq!(
            p.proxy_env,
            [("http_proxy".to_string(), "http://p".to_string())]
        );
        assert!(
            matches!(&p.mounts[0], MountPlan::Cache { id, sharing: CacheSharing::Shared, mode: 0o755, .. } if id == "/root/.cache")
        );
        assert!(
            matches!(&p.mounts[1], MountPlan::Secret { target: Some(t), mode: 0o400, required: false, .. } if t == "/run/secrets/tok")
        );
        assert!(
            matches!(&p.mounts[2], MountPlan::Bind { target, source, readonly: true, from: BindFrom::Layers { .. } } if target == "/bin" && source == "bin")
        );
        assert!(matches!(
            &p.mounts[3],
            MountPlan::Tmpfs {
                size: Some(1_048_576),
                ..
            }
        ));
        let (inputs, sources) = mount_inputs(&p, None).unwrap();
        assert!(sources.is_none());
        assert_eq!(inputs[1].options["id"], "tok");
        assert!(!inputs
            .iter()
            .any(|m| m.options.values().any(|v| v.contains("http://p"))));
        let err = cx_plan("RUN --mount=type=ssh true", &[], &[]).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        let err = cx_plan("RUN --mount=type=cache true", &[], &[]).unwrap_err();
        assert!(err.to_string().contains("needs target="), "{err}");
    }

    #[test]
    fn declared_args_enter_the_key_and_history() {
        let env = vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("A".into(), "1".into()),
        ];
        let p = cx_plan("RUN echo $A", &env, &["A".into()]).unwrap();
        assert_eq!(p.created_by, "RUN |1 A=1 /bin/sh -c echo $A # buildkit");
        assert_eq!(p.args.get("A").map(String::as_str), Some("1"));
        // A declared proxy arg is a normal arg, not an extra.
        let p = cx_plan("RUN true", &env, &["http_proxy".into()]).unwrap();
        assert!(p.proxy_env.is_empty());
    }

    #[test]
    fn context_binds_key_on_file_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.c"), "int main;").unwrap();
        let index = ContextIndex::walk(dir.path(), None).unwrap();
        let p = cx_plan("RUN --mount=source=src,target=/work make", &[], &[]).unwrap();
        let (_, sources) = mount_inputs(&p, Some(&index)).unwrap();
        let sources = sources.unwrap();
        assert!(
            sources.files.contains_key("/work/main.c"),
            "{:?}",
            sources.files
        );
        std::fs::write(dir.path().join("src/main.c"), "int main();").unwrap();
        let index2 = ContextIndex::walk(dir.path(), None).unwrap();
        let (_, again) = mount_inputs(&p, Some(&index2)).unwrap();
        assert_ne!(again.unwrap().digest, sources.digest);
    }

    #[test]
    fn materialized_binds_hold_only_indexed_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/keep"), "k").unwrap();
        std::fs::write(dir.path().join("src/secret.key"), "s").unwrap();
        std::os::unix::fs::symlink("keep", dir.path().join("src/link")).unwrap();
        let ignore = crate::context::PatternMatcher::new(&["**/*.key"]).unwrap();
        let index = ContextIndex::walk(dir.path(), Some(&ignore)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("b");
        materialize(&index, "src", &dest, false).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["keep", "link"]);
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("keep")
        );
    }
}
