//! One module per subcommand; this file lists them and dispatches.

mod fsck;
mod images;
mod load;
mod prune;
mod save;

use std::process::ExitCode;

use clap::Subcommand;

use crate::global::GlobalArgs;

/// Every subcommand of `strata`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print version information.
    Version,
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
}

/// Run one subcommand; the returned code becomes the process's exit code.
pub fn run(global: &GlobalArgs, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => {
            println!("strata {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Images(args) => images::run(global, &args),
        Command::Save(args) => save::run(global, &args),
        Command::Load(args) => load::run(global, &args),
        Command::Fsck(args) => fsck::run(global, &args),
        Command::Prune(args) => prune::run(global, &args),
    }
}
