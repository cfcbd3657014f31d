//! `strata save`: write images to a tar archive.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};
use strata_store::{ArchiveFormat, Compression, SaveOptions};

use crate::global::GlobalArgs;

/// Archive shapes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// `docker save` shape (Docker 25+: OCI layout + manifest.json + repositories).
    Docker,
    /// A plain OCI image layout.
    Oci,
}

/// Layer compressions.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LayerCompression {
    /// Plain tar (what `docker save` writes).
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Options of `strata save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive shape.
    #[arg(long, value_enum, default_value = "docker")]
    format: Format,
    /// Layer compression inside the archive.
    #[arg(long, value_enum, default_value = "none")]
    compression: LayerCompression,
    /// Images to save (references or image IDs).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: &SaveArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let options = SaveOptions {
        format: match args.format {
            Format::Docker => ArchiveFormat::Docker,
            Format::Oci => ArchiveFormat::Oci,
        },
        compression: Some(match args.compression {
            LayerCompression::None => Compression::None,
            LayerCompression::Gzip => Compression::Gzip,
            LayerCompression::Zstd => Compression::Zstd,
        }),
    };
    let names: Vec<&str> = args.images.iter().map(String::as_str).collect();
    match &args.output {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect");
            }
            let mut lock = stdout.lock();
            store.save(&names, &mut lock, &options)?;
            lock.flush()?;
        }
        Some(path) => store.save_to_file(&names, path, &options)?,
    }
    Ok(ExitCode::SUCCESS)
}
