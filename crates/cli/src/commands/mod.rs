//! One module per subcommand; this file lists them and dispatches.

mod fsck;
mod images;
mod lint;
mod load;
mod login;
mod logout;
mod parse;
mod prune;
mod pull;
mod push;
mod registry;
mod save;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::global::GlobalArgs;

/// Every subcommand of `strata`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information.
    Version,
    /// Parse a Dockerfile and summarise its stages (or print BuildKit's dump format).
    Parse(parse::ParseArgs),
    /// Check a Dockerfile for common mistakes; exit 1 on any error-level finding.
    Lint(lint::LintArgs),
    /// List images in the store.
    Images(images::ImagesArgs),
    /// Save images to a tar archive (docker-compatible or OCI layout).
    Save(save::SaveArgs),
    /// Load images from a tar archive (docker, OCI; plain, gzip or zstd).
    Load(load::LoadArgs),
    /// Verify every blob and reference in the store.
    Fsck(fsck::FsckArgs),
    /// Remove blobs that no tag, cache record or container references.
    Prune(prune::PruneArgs),
    /// Pull an image from a registry.
    Pull(pull::PullArgs),
    /// Push an image to a registry.
    Push(push::PushArgs),
    /// Log in to a registry (credentials stored in Docker's config.json).
    Login(login::LoginArgs),
    /// Log out from a registry.
    Logout(logout::LogoutArgs),
}

/// Run one subcommand; the returned code becomes the process's exit code.
pub fn run(global: &GlobalArgs, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Parse(args) => parse::run(&args),
        Command::Lint(args) => lint::run(&args),
        Command::Images(args) => images::run(global, &args),
        Command::Save(args) => save::run(global, &args),
        Command::Load(args) => load::run(global, &args),
        Command::Fsck(args) => fsck::run(global, &args),
        Command::Prune(args) => prune::run(global, &args),
        Command::Pull(args) => pull::run(global, &args),
        Command::Push(args) => push::run(global, &args),
        Command::Login(args) => login::run(&args),
        Command::Logout(args) => logout::run(&args),
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
