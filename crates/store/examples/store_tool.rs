//! A small driver for benchmarks and manual checks (`cargo xtask bench store` builds it in
//! release mode):
//!
//! ```text
//! store_tool ingest ROOT FILE none|gzip|zstd          ingest FILE as a layer; prints JSON
//! store_tool import ROOT FILE TAG none|gzip|zstd [BASE]  make an image (FILE as a layer on
//!                                                       top of BASE's layers) and tag it
//! ```

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use strata_store::{Compression, ImageConfig, Reference, Store};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store_tool: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize| -> Result<&str, String> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| "usage: store_tool ingest|import ROOT FILE ...".to_string())
    };
    let store = Store::open(Path::new(arg(1)?))?;
    let file = BufReader::with_capacity(1 << 20, File::open(arg(2)?)?);
    match arg(0)? {
        "ingest" => {
            let compression: Compression = arg(3)?.parse()?;
            let start = Instant::now();
            let mut w = store.layer_writer(compression)?;
            let mut file = file;
            io::copy(&mut file, &mut w)?;
            let info = w.finish()?;
            println!(
                "{}",
                serde_json::json!({
                    "seconds": start.elapsed().as_secs_f64(),
                    "diff_id": info.diff_id.to_string(),
                    "digest": info.digest.to_string(),
                    "size": info.size,
                    "uncompressed_size": info.uncompressed_size,
                })
            );
        }
        "import" => {
            let tag = Reference::parse(arg(3)?)?;
            let compression: Compression = arg(4)?.parse()?;
            let config = ImageConfig::parse(
                br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
            )?;
            let mut layers = Vec::new();
            if let Some(base) = args.get(5) {
                let base = store.resolve(base)?;
                for d in &base.diff_ids {
                    layers.push(
                        store
                            .layer_blobs(d)?
                            .into_iter()
                            .next()
                            .ok_or("base layer has no record")?,
                    );
                }
            }
            let mut w = store.layer_writer(compression)?;
            let mut file = file;
            io::copy(&mut file, &mut w)?;
            layers.push(w.finish()?);
            let image = store.write_image(&config, &layers)?;
            store.tag(&tag, &image)?;
            println!("{}", image.id());
        }
        other => return Err(format!("unknown command {other:?}").into()),
    }
    Ok(())
}
