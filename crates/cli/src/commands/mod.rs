//! One module per subcommand; this file lists them and dispatches.

mod analyze;
mod build;
mod check;
mod commit;
mod completion;
mod diff;
mod export;
mod fsck;
mod history;
mod images;
mod import;
mod inspect;
mod lint;
mod load;
mod login;
mod logout;
mod mount;
mod parse;
mod prune;
mod ps;
mod pull;
mod push;
mod registry;
mod rm;
mod rmi;
mod run;
mod save;
mod system;
mod tag;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::global::GlobalArgs;
use crate::ui::out::outln;

/// Every subcommand of `strata`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information.
    #[command(after_help = "Example:\n  strata version")]
    Version,
    /// Build an image from a Dockerfile and a context folder.
    #[command(
        after_help = "Examples:\n  strata build -t app:1 .\n  strata build --check .\n  strata build -f docker/Dockerfile --build-arg VERSION=2 --target runtime -t app:2 .\n  strata build -q --no-cache . > iid\n  strata build --cache-to type=registry,ref=reg.example/app:cache,mode=max --cache-from reg.example/app:cache -t app:3 .\n  strata build --pull --cache-from type=local,src=/var/cache/app -t app:4 ."
    )]
    Build(Box<build::BuildArgs>),
    /// Parse a Dockerfile and summarise its stages (or print BuildKit's dump format).
    #[command(
        after_help = "Examples:\n  strata parse Dockerfile\n  strata parse --dump - < Dockerfile"
    )]
    Parse(parse::ParseArgs),
    /// Check a Dockerfile for common mistakes; exit 1 on any error-level finding.
    #[command(
        after_help = "Examples:\n  strata lint Dockerfile\n  strata lint --format json Dockerfile"
    )]
    Lint(lint::LintArgs),
    /// List images in the store.
    Images(images::ImagesArgs),
    /// Show the history of an image, newest first.
    History(history::HistoryArgs),
    /// Print images as Docker's JSON (config, layers, GraphDriver folders).
    Inspect(inspect::InspectArgs),
    /// Show what each layer of an image adds, removes and wastes, with fixes.
    Analyze(analyze::AnalyzeArgs),
    /// Give an image another name.
    Tag(tag::TagArgs),
    /// Remove image tags, and images nothing else names.
    Rmi(rmi::RmiArgs),
    /// Save images to a tar archive (docker-compatible or OCI layout).
    #[command(
        after_help = "Examples:\n  strata save -o images.tar busybox app:1\n  strata save --format oci --compression zstd app:1 > app.tar"
    )]
    Save(save::SaveArgs),
    /// Load images from a tar archive (docker, OCI; plain, gzip or zstd).
    #[command(
        after_help = "Examples:\n  strata load -i images.tar\n  strata save busybox | strata --root /tmp/other load"
    )]
    Load(load::LoadArgs),
    /// Verify every blob and reference in the store.
    #[command(after_help = "Examples:\n  strata fsck\n  strata fsck --repair")]
    Fsck(fsck::FsckArgs),
    /// Remove blobs and layer folders that no tag, cache record or container references.
    #[command(
        after_help = "Examples:\n  strata prune --dry-run\n  strata prune --cache\n  strata prune --keep-storage 2GB --dry-run\n  strata prune --dry-run --format json"
    )]
    Prune(prune::PruneArgs),
    /// Manage the build cache.
    #[command(subcommand, after_help = "Example:\n  strata builder prune")]
    Builder(prune::BuilderCommand),
    /// Manage strata itself (disk usage).
    #[command(
        subcommand,
        after_help = "Examples:\n  strata system df\n  strata system df -v"
    )]
    System(system::SystemCommand),
    /// Print a shell completion script (bash, zsh or fish).
    Completion(completion::CompletionArgs),
    /// Write the man pages (used by `cargo xtask man`).
    #[command(name = "__man", hide = true)]
    Man(completion::ManArgs),
    /// Pull an image from a registry.
    Pull(pull::PullArgs),
    /// Push an image to a registry.
    Push(push::PushArgs),
    /// Log in to a registry (credentials stored in Docker's config.json).
    Login(login::LoginArgs),
    /// Log out from a registry.
    Logout(logout::LogoutArgs),
    /// Run a command in a new container (a writable layer over an image).
    Run(Box<run::RunArgs>),
    /// List containers.
    Ps(ps::PsArgs),
    /// Remove containers and their writable layers.
    Rm(rm::RmArgs),
    /// Show what a container changed (A added, C changed, D deleted).
    Diff(diff::DiffArgs),
    /// Make a new image from a container's changes.
    Commit(commit::CommitArgs),
    /// Mount a container's or an image's filesystem and print where.
    Mount(mount::MountArgs),
    /// Unmount what `strata mount` mounted.
    Umount(mount::UmountArgs),
    /// Write a container's whole filesystem as one tar archive.
    Export(export::ExportArgs),
    /// Make a one-layer image from a root filesystem tarball or folder.
    Import(import::ImportArgs),
}

/// Run one subcommand; the returned code becomes the process's exit code.
pub fn run(global: &GlobalArgs, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => {
            outln!("strata {}", env!("CARGO_PKG_VERSION"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => build::run(global, &args),
        Command::Parse(args) => parse::run(&args),
        Command::Lint(args) => lint::run(&args),
        Command::Images(args) => images::run(global, &args),
        Command::History(args) => history::run(global, &args),
        Command::Inspect(args) => inspect::run(global, &args),
        Command::Analyze(args) => analyze::run(global, &args),
        Command::Tag(args) => tag::run(global, &args),
        Command::Rmi(args) => rmi::run(global, &args),
        Command::Save(args) => save::run(global, &args),
        Command::Load(args) => load::run(global, &args),
        Command::Fsck(args) => fsck::run(global, &args),
        Command::Prune(args) => prune::run(global, &args),
        Command::Builder(command) => prune::run_builder(global, &command),
        Command::System(command) => system::run(global, &command),
        Command::Completion(args) => completion::run(&args),
        Command::Man(args) => completion::man(&args),
        Command::Pull(args) => pull::run(global, &args),
        Command::Push(args) => push::run(global, &args),
        Command::Login(args) => login::run(&args),
        Command::Logout(args) => logout::run(&args),
        Command::Run(args) => run::run(global, &args),
        Command::Ps(args) => ps::run(global, &args),
        Command::Rm(args) => rm::run(global, &args),
        Command::Diff(args) => diff::run(global, &args),
        Command::Commit(args) => commit::run(global, &args),
        Command::Mount(args) => mount::mount(global, &args),
        Command::Umount(args) => mount::umount(global, &args),
        Command::Export(args) => export::run(global, &args),
        Command::Import(args) => import::run(global, &args),
    }
}

/// Read a Dockerfile (`-` is standard input); returns the name to show and the text.
fn read_input(path: &Path) -> anyhow::Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(("-".into(), text));
    }
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    Ok((name, text))
}
