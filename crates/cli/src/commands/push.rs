//! `strata push`: send an image from the store to a registry.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_store::registry::{Client, PushOptions};
use strata_store::{Compression, Reference};

use super::registry::{explain, Progress, RegistryArgs};
use crate::global::GlobalArgs;
use crate::ui::out::outln;

const EXAMPLES: &str = "\
Examples:
  strata push 127.0.0.1:5000/team/app:1.2      push under the image's own name
  strata push --compression gzip reg.example/app:1   gzip layers for older clients (Docker 20.10)";

/// Options of `strata push`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct PushArgs {
    /// The image, by the name it has in the store and will have in the registry:
    /// NAME[:TAG] (`127.0.0.1:5000/team/app:1`).
    image: String,
    /// Push every layer with this compression (converting those stored otherwise, once):
    /// `gzip` for clients that do not read zstd layers (Docker before 23). Default: as stored.
    #[arg(long, value_name = "gzip|zstd|none")]
    compression: Option<Compression>,
    /// Only print the pushed manifest digest.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(global: &GlobalArgs, args: &PushArgs) -> anyhow::Result<ExitCode> {
    let reference = Reference::parse(&args.image)?;
    let store = global.open_store()?;
    let image = store
        .resolve(&args.image)
        .with_context(|| format!("cannot push {}", args.image))?;
    let client = Client::new(args.registry.client_options());
    let progress = Progress::new(args.quiet, false);
    progress.line(&format!(
        "The push refers to repository [{}]",
        reference.familiar_name()
    ));
    let options = PushOptions {
        compression: args.compression,
    };
    let report = client
        .push(&store, &image, &reference, &options, &progress)
        .map_err(explain)
        .with_context(|| format!("cannot push {}", reference.familiar()))?;
    if report.up_to_date {
        progress.line("Image is up to date: the registry has this manifest under this tag");
    }
    let tag = reference.tag().unwrap_or("latest");
    if args.quiet {
        outln!("{}", report.manifest.digest)?;
    } else {
        progress.line(&format!(
            "{tag}: digest: {} size: {}",
            report.manifest.digest, report.manifest.size
        ));
    }
    Ok(ExitCode::SUCCESS)
}
