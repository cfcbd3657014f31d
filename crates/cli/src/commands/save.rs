//! `strata save`: write images to a tar archive.
//!
//! When standard error is a terminal, a progress bar there shows the bytes written against
//! the size of the layers going into the archive.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use strata_store::{ArchiveFormat, Compression, SaveOptions, Store};

use crate::global::GlobalArgs;
use crate::ui::progress;

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
    let bar = std::io::stderr().is_terminal().then(|| {
        progress::bytes_bar(
            "Writing",
            archive_estimate(&store, &names, options.layer_compression()),
        )
    });
    let result = write(
        &store,
        &names,
        args.output.as_deref(),
        &options,
        bar.as_ref(),
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the archive to `output` (standard output when `None`), counting bytes on `bar`.
fn write(
    store: &Store,
    names: &[&str],
    output: Option<&Path>,
    options: &SaveOptions,
    bar: Option<&ProgressBar>,
) -> anyhow::Result<()> {
    match (output, bar) {
        (None, _) => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect");
            }
            let lock = stdout.lock();
            let mut out: Box<dyn Write> = match bar {
                Some(bar) => Box::new(bar.wrap_write(lock)),
                None => Box::new(lock),
            };
            store.save(names, &mut out, options)?;
            out.flush()?;
        }
        (Some(path), None) => store.save_to_file(names, path, options)?,
        (Some(path), Some(bar)) => {
            store.save_to_file_observed(names, path, options, &mut |n| bar.inc(n))?
        }
    }
    Ok(())
}

/// About how many bytes the archive will hold: the distinct layers in the archive's
/// compression (when the store has them that way or uncompressed). `None` when unknown.
fn archive_estimate(store: &Store, names: &[&str], compression: Compression) -> Option<u64> {
    let mut diff_ids = BTreeSet::new();
    for name in names {
        diff_ids.extend(store.resolve(name).ok()?.diff_ids);
    }
    let mut total = 0;
    for d in &diff_ids {
        let blobs = store.layer_blobs(d).ok()?;
        total += match compression {
            Compression::None => blobs.first()?.uncompressed_size,
            c => blobs.iter().find(|b| b.compression() == c)?.size,
        };
    }
    Some(total)
}
