//! `strata build`: build an image from a Dockerfile and a context folder.
//!
//! The command reads the Dockerfile (`-f`, default `CONTEXT/Dockerfile`; `-` for standard
//! input) and the context (a folder; `-` reads either a Dockerfile or a tar of the context
//! from standard input), builds (independent stages at the same time, at most `--jobs`;
//! CPU-parallel work on `--jobs` threads, default: the number of cores) with Ctrl-C cancelling the running steps, renders progress on standard error, and
//! at the end writes `--iidfile` and `--output` archives. `-q` prints only the image ID.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use clap::Args;
use strata_builder::exec::{CancelToken, NetworkMode};
use strata_builder::remote_cache::{CacheExport, CacheImport};
use strata_builder::{BuildOptions, BuildResult, PullPolicy, SecretSpec};
use strata_store::{ArchiveFormat, SaveOptions};

use super::registry::RegistryArgs;

/// `--pull[=WHEN]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PullArg {
    /// Check every tag against its registry.
    Always,
    /// Pull only images missing from the store.
    Missing,
    /// Never pull: a missing image is an error.
    Never,
}
use crate::global::GlobalArgs;
use crate::render::{self, emit, plain, Progress};
use crate::ui::error::Failure;
use crate::ui::out::outln;

/// Options of `strata build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name the result (repeatable): `name:tag`, `registry/name:tag`.
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    tags: Vec<String>,

    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,

    /// A build arg `K=V`, or `K` alone to take the value of the environment variable K.
    #[arg(long = "build-arg", value_name = "K=V")]
    build_args: Vec<String>,

    /// Build this stage (default: the last one); stages it does not need are skipped.
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,

    /// Run every step, ignoring the cache (results are still recorded).
    #[arg(long)]
    no_cache: bool,

    /// Ignore the cache for these stages only (repeatable or comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    no_cache_filter: Vec<String>,

    /// Say why each step missed the cache, and summarise at the end (steps cached and run,
    /// the first miss and its cause).
    #[arg(long)]
    explain: bool,

    /// Check without building: the lints and the checks that need the store (images, build
    /// args, layer counts, unused stages); exit 1 on errors.
    #[arg(long)]
    check: bool,

    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    progress: Progress,

    /// Print only the image ID (`sha256:<hex>`), like `docker build -q`.
    #[arg(short, long)]
    quiet: bool,

    /// Stages built at the same time at most, and threads for CPU-parallel work (hashing,
    /// copying). Default: every independent stage at once (they mostly wait for processes
    /// and disks), CPU work on one thread per core.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,

    /// Network of RUN steps that do not set `--network`: `host` (default) or `none`.
    #[arg(long, value_name = "MODE", default_value = "host")]
    network: String,

    /// A secret RUN steps may mount: `id=NAME,src=FILE` or `id=NAME,env=VAR` (repeatable).
    #[arg(long = "secret", value_name = "SPEC")]
    secrets: Vec<String>,

    /// A label for the image, `K=V` (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,

    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,

    /// Also write the image as an archive: `type=docker|oci,dest=FILE`.
    #[arg(short = 'o', long, value_name = "SPEC")]
    output: Option<String>,

    /// Clamp new files' times and set the image's dates to this time (seconds since the
    /// epoch), for reproducible images.
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    source_date_epoch: Option<i64>,

    /// Read build cache records from here (repeatable; the first that has a step wins):
    /// `type=registry,ref=REGISTRY/REPO:TAG`, a bare `REGISTRY/REPO:TAG`, or
    /// `type=local,src=DIR[,tag=TAG]`. Only the layers the build needs are fetched.
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,

    /// Write this build's cache records there (repeatable):
    /// `type=registry,ref=REGISTRY/REPO:TAG` or `type=local,dest=DIR[,tag=TAG]`, with
    /// `mode=min` (default: the result's steps) or `mode=max` (every stage's), and
    /// `timeout=DURATION` (default 10m). A failed export is a warning, never a failed build.
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<String>,

    /// When to pull the images the Dockerfile names: `--pull` (= `always`) checks every
    /// tag against its registry and pulls it when it moved; `missing` (the default without
    /// the flag) pulls only images the store lacks; `never` builds offline.
    #[arg(
        long,
        value_name = "WHEN",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "always"
    )]
    pull: Option<PullArg>,

    #[command(flatten)]
    registry: RegistryArgs,

    /// The build context: a folder, or `-` for standard input (a Dockerfile, or a tar of the
    /// context).
    #[arg(value_name = "CONTEXT")]
    context: PathBuf,
}

/// Where `--output` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OutputSpec {
    format: ArchiveFormat,
    dest: PathBuf,
}

fn parse_output(spec: &str) -> anyhow::Result<OutputSpec> {
    let mut format = None;
    let mut dest = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", "docker")) => format = Some(ArchiveFormat::Docker),
            Some(("type", "oci")) => format = Some(ArchiveFormat::Oci),
            Some(("type", other)) => {
                return Err(
                    Failure::usage(format!("--output type={other} is not supported"))
                        .hint("strata writes `type=docker` or `type=oci` archives")
                        .into(),
                )
            }
            Some(("dest", d)) if !d.is_empty() => dest = Some(PathBuf::from(d)),
            _ => {
                return Err(Failure::usage(format!("invalid --output {spec:?}"))
                    .hint("write it as type=docker,dest=FILE or type=oci,dest=FILE")
                    .into())
            }
        }
    }
    match (format, dest) {
        (Some(format), Some(dest)) => Ok(OutputSpec { format, dest }),
        _ => Err(Failure::usage(format!("invalid --output {spec:?}"))
            .hint("write it as type=docker,dest=FILE or type=oci,dest=FILE")
            .into()),
    }
}

/// `K=V`, or `K` alone from the environment (skipped when unset, as Docker does).
fn parse_build_args(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some(("", _)) => {
                return Err(Failure::usage(format!("invalid --build-arg {a:?}: empty name")).into())
            }
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.push((a.clone(), v));
                }
            }
        }
    }
    Ok(out)
}

fn parse_labels(labels: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Failure::usage(format!("invalid --label {l:?}"))
                .hint("write it as KEY=VALUE")
                .into()),
        })
        .collect()
}

/// The cancellation token Ctrl-C (SIGINT) and SIGTERM trigger.
static CANCEL: OnceLock<CancelToken> = OnceLock::new();

extern "C" fn on_signal(signal: nix::libc::c_int) {
    if let Some(token) = CANCEL.get() {
        // An atomic store and a write(2): safe in a signal handler.
        token.cancel();
    }
    // A second Ctrl-C ends the process at once.
    if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
        let default = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::SigDfl,
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: restoring the default disposition is async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &default) };
    }
}

pub(super) fn install_cancel_handler() -> anyhow::Result<CancelToken> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let token = CANCEL
        .get_or_init(|| CancelToken::new().expect("an eventfd for cancellation"))
        .clone();
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an initialised OnceLock and async-signal-safe
        // calls (see `on_signal`).
        unsafe { sigaction(sig, &action) }.context("installing the Ctrl-C handler")?;
    }
    Ok(token)
}

/// The Dockerfile's text and path, and the context folder (a temp dir when read from
/// standard input, kept alive by the returned guard).
fn read_sources(
    args: &BuildArgs,
) -> anyhow::Result<(String, Option<PathBuf>, PathBuf, Option<tempfile::TempDir>)> {
    if args.context == Path::new("-") {
        if args.file.as_deref() == Some(Path::new("-")) {
            return Err(Failure::usage(
                "the context and the Dockerfile cannot both come from standard input",
            )
            .into());
        }
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .context("reading standard input")?;
        let dir = tempfile::tempdir().context("creating a folder for the context")?;
        let is_tar = input.len() >= 262 && &input[257..262] == b"ustar";
        if is_tar {
            strata_overlay::apply_to_tree(&input[..], dir.path(), &Default::default())
                .context("unpacking the context tar from standard input")?;
            let (text, path) = match &args.file {
                Some(f) => (
                    std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                    f.clone(),
                ),
                None => {
                    let p = dir.path().join("Dockerfile");
                    (
                        std::fs::read_to_string(&p).context("the context tar has no Dockerfile")?,
                        p,
                    )
                }
            };
            let ctx = dir.path().to_path_buf();
            return Ok((text, Some(path), ctx, Some(dir)));
        }
        let text = String::from_utf8(input)
            .context("standard input is neither a tar nor a UTF-8 Dockerfile")?;
        let ctx = dir.path().to_path_buf();
        return Ok((text, None, ctx, Some(dir)));
    }
    let context = args.context.clone();
    if !context.is_dir() {
        return Err(Failure::new(format!(
            "the build context {} is not a folder",
            context.display()
        ))
        .hint(
            "pass the folder holding the files to build (often `.`), or `-` to read standard input",
        )
        .into());
    }
    match &args.file {
        Some(f) if f == Path::new("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the Dockerfile from standard input")?;
            Ok((text, None, context, None))
        }
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            Ok((text, Some(f.clone()), context, None))
        }
        None => {
            let f = context.join("Dockerfile");
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            Ok((text, Some(f), context, None))
        }
    }
}

pub fn run(global: &GlobalArgs, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let network = match args.network.as_str() {
        "host" | "default" => NetworkMode::Host,
        "none" => NetworkMode::None,
        other => {
            return Err(
                Failure::usage(format!("--network {other} is not supported"))
                    .hint("RUN steps use `host` (the default) or `none`")
                    .into(),
            )
        }
    };
    let output = args.output.as_deref().map(parse_output).transpose()?;
    let (dockerfile, dockerfile_path, context, _stdin_context) = read_sources(args)?;
    let mut opts = BuildOptions::new(dockerfile, context);
    opts.dockerfile_path = dockerfile_path;
    opts.build_args = parse_build_args(&args.build_args)?;
    opts.target = args.target.clone();
    opts.tags = args.tags.clone();
    opts.labels = parse_labels(&args.labels)?;
    opts.no_cache = args.no_cache;
    opts.no_cache_filter = args.no_cache_filter.clone();
    opts.network = network;
    opts.source_date_epoch = args.source_date_epoch;
    opts.pull = match args.pull {
        Some(PullArg::Always) => PullPolicy::Always,
        Some(PullArg::Missing) | None => PullPolicy::Missing,
        Some(PullArg::Never) => PullPolicy::Never,
    };
    opts.registry = args.registry.client_options();
    opts.cache_from = args
        .cache_from
        .iter()
        .map(|s| CacheImport::parse(s))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::usage(e.to_string()))?;
    opts.cache_to = args
        .cache_to
        .iter()
        .map(|s| CacheExport::parse(s))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::usage(e.to_string()))?;
    opts.secrets = args
        .secrets
        .iter()
        .map(|s| SecretSpec::parse(s))
        .collect::<Result<_, _>>()?;

    if args.check {
        let json = args.progress == Progress::Json;
        return super::check::run(global, &opts, json);
    }

    let mode = if args.quiet {
        Progress::Quiet
    } else {
        args.progress
    };
    let out = render::stderr();
    let (reporter, mode) = render::reporter(mode, out.clone(), std::io::stderr().is_terminal());
    opts.max_stages = args.jobs;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        bail!(Failure::usage("--jobs must be at least 1"));
    }
    // Stages run on threads of their own; their CPU-parallel work goes to rayon's global
    // pool, sized here (a binary may build it; the libraries only use it). It can only be
    // built once per process: a second build in the same process keeps the first pool.
    // Without --jobs the pool rayon makes on first use has the same size (one thread per
    // CPU); leaving it to rayon spares a build that never uses it (all cached, no context)
    // starting threads that spin for work on the cores the build itself needs.
    if args.jobs.is_some() {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .thread_name(|i| format!("strata-build-{i}"))
            .build_global();
    }
    let engine = global.open_engine()?;
    let cancel = install_cancel_handler()?;
    let result = engine.build(&opts, reporter.as_ref(), &cancel);
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            if args.explain {
                // What ran before the failure still explains itself in the progress.
                emit(&out, "\n");
            }
            return Err(anyhow::Error::new(e).context("build failed"));
        }
    };
    if mode == Progress::Plain {
        emit(&out, &export_lines(&result));
    }
    if args.explain && mode != Progress::Json {
        // JSON progress carries the same summary in its build_finished event.
        emit(&out, &plain::explain_lines(&result.summary, &result.steps));
    }
    let id = result.image.id().to_string();
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(o) = &output {
        let names: Vec<String> = if result.tags.is_empty() {
            vec![id.clone()]
        } else {
            result.tags.iter().map(|t| t.to_string()).collect()
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        engine
            .store()
            .save_to_file(
                &names,
                &o.dest,
                &SaveOptions {
                    format: o.format,
                    compression: None,
                },
            )
            .with_context(|| format!("writing the image to {}", o.dest.display()))?;
        if mode == Progress::Plain {
            emit(&out, &format!("wrote {}\n", o.dest.display()));
        }
    }
    if mode == Progress::Quiet {
        outln!("{id}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// BuildKit's closing lines: `exporting to image`, `writing image`, `naming to`.
fn export_lines(result: &BuildResult) -> String {
    let n = result.summary.steps + 1;
    let mut s = format!(
        "\n#{n} exporting to image\n#{n} writing image {} done\n",
        result.image.id()
    );
    for t in &result.tags {
        s.push_str(&format!("#{n} naming to {t} done\n"));
    }
    s.push_str(&format!("#{n} DONE 0.0s\n"));
    for w in &result.warnings {
        if w.contains("build-args") {
            s.push_str(&format!("WARN: {w}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs() {
        assert_eq!(
            parse_output("type=oci,dest=out.tar").unwrap(),
            OutputSpec {
                format: ArchiveFormat::Oci,
                dest: "out.tar".into()
            }
        );
        assert_eq!(
            parse_output("dest=a.tar,type=docker").unwrap().format,
            ArchiveFormat::Docker
        );
        for bad in ["out.tar", "type=local,dest=x", "type=oci", "type=oci,dest="] {
            assert!(parse_output(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn build_args_take_the_environment_for_bare_names() {
        std::env::set_var("STRATA_TEST_BUILD_ARG", "from-env");
        let got = parse_build_args(&[
            "A=1".into(),
            "B=".into(),
            "STRATA_TEST_BUILD_ARG".into(),
            "STRATA_TEST_UNSET_ARG".into(),
        ])
        .unwrap();
        assert_eq!(
            got,
            [
                ("A".to_string(), "1".to_string()),
                ("B".into(), "".into()),
                ("STRATA_TEST_BUILD_ARG".into(), "from-env".into())
            ]
        );
        assert!(parse_build_args(&["=x".into()]).is_err());
        assert!(parse_labels(&["novalue".into()]).is_err());
    }
}
