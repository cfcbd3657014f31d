//! `strata pull`: fetch an image from a registry into the store.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_store::registry::{Client, Platform, PullOptions};
use strata_store::Reference;

use super::registry::{explain, Progress, RegistryArgs};
use crate::global::GlobalArgs;
use crate::ui::out::outln;

const EXAMPLES: &str = "\
Examples:
  strata pull busybox                          docker.io/library/busybox:latest
  strata pull 127.0.0.1:5000/team/app:1.2      a local registry (plain HTTP on 127.0.0.0/8)
  strata pull app@sha256:<64 hex>              an exact manifest
  strata pull --platform linux/arm64 app:1     another platform from an index";

/// Options of `strata pull`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct PullArgs {
    /// The image: NAME[:TAG|@DIGEST] (`busybox`, `127.0.0.1:5000/team/app:1`).
    image: String,
    /// The platform to pick from a multi-platform image (`linux/arm64`; default: this host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Only print the image reference at the end.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(global: &GlobalArgs, args: &PullArgs) -> anyhow::Result<ExitCode> {
    let reference = Reference::parse(&args.image)?;
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;
    let store = global.open_store()?;
    let client = Client::new(args.registry.client_options());
    let progress = Progress::new(args.quiet, true);
    let what = reference
        .tag()
        .map(str::to_string)
        .or_else(|| reference.digest().map(|d| d.to_string()))
        .unwrap_or_default();
    progress.line(&format!(
        "{what}: Pulling from {}",
        reference.familiar_name()
    ));
    let report = client
        .pull(&store, &reference, &PullOptions { platform }, &progress)
        .map_err(explain)
        .with_context(|| format!("cannot pull {}", reference.familiar()))?;
    progress.line(&format!("Digest: {}", report.remote_manifest.digest));
    let status = if report.downloaded == 0 {
        format!("Image is up to date for {}", reference.familiar())
    } else {
        format!("Downloaded newer image for {}", reference.familiar())
    };
    progress.line(&format!("Status: {status}"));
    outln!("{reference}")?;
    Ok(ExitCode::SUCCESS)
}
