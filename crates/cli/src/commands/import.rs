//! `strata import [-c 'CMD ...']... TARBALL|DIR|- [NAME:TAG]`: a root filesystem becomes a
//! one-layer image, like `docker import`. Prints the new image's ID.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use strata_builder::import::{import, ImportOptions, ImportSource};
use strata_builder::platform::Platform;

use crate::global::GlobalArgs;
use crate::ui::error::{new_image_name, AtPlace, Failure};
use crate::ui::out::outln;

const EXAMPLES: &str = "\
Examples:
  strata import rootfs.tar.gz base:1
  strata import -c 'CMD [\"/bin/sh\"]' -c 'ENV LANG=C.UTF-8' ./rootfs base:2
  tar -C rootfs -c . | strata import - base:3";

/// Options of `strata import`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ImportArgs {
    /// A Dockerfile instruction applied to the config (`CMD ["sh"]`, `ENV A=1`); repeatable.
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// The history entry's comment (default `Imported from SOURCE`).
    #[arg(short, long)]
    message: Option<String>,
    /// The platform written in the config (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// A tar archive (plain, gzip, bzip2, xz or zstd), a folder, or `-` for standard input.
    #[arg(value_name = "TARBALL|DIR|-")]
    source: String,
    /// Tag for the new image (untagged when absent).
    #[arg(value_name = "NAME[:TAG]")]
    reference: Option<String>,
}

pub fn run(global: &GlobalArgs, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let reference = args
        .reference
        .as_deref()
        .map(|r| new_image_name(r, "the NAME[:TAG] argument"))
        .transpose()?;
    let platform = args
        .platform
        .as_deref()
        .map(|p| {
            Platform::parse(p).map_err(|e| {
                Failure::usage(e.to_string())
                    .at("--platform")
                    .hint("a platform reads `linux/amd64` or `linux/arm64/v8`")
            })
        })
        .transpose()?;
    if args.source.starts_with("http://") || args.source.starts_with("https://") {
        return Err(Failure::usage("importing from a URL is not supported")
            .at(&args.source)
            .hint("download it first, or pipe it: `curl -fsSL URL | strata import - NAME:TAG`")
            .into());
    }
    let source = if args.source == "-" {
        ImportSource::Tar {
            reader: Box::new(std::io::stdin().lock()),
            name: "-".into(),
        }
    } else {
        let path = Path::new(&args.source);
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", args.source))
            .map_err(|e| {
                Failure::new(format!("{e:#}"))
                    .at(&args.source)
                    .hint("give a tar archive, a folder, or `-` for standard input")
            })?;
        if meta.is_dir() {
            ImportSource::Dir(path.to_path_buf())
        } else {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", args.source))?;
            ImportSource::Tar {
                reader: Box::new(file),
                name: args.source.clone(),
            }
        }
    };
    let store = global.open_store()?;
    let image = import(
        &store,
        source,
        &ImportOptions {
            reference,
            changes: args.change.clone(),
            message: args.message.clone(),
            platform,
            ..ImportOptions::default()
        },
    )
    .at(&args.source)?;
    outln!("{}", image.id())?;
    Ok(ExitCode::SUCCESS)
}
