//! A small driver for benchmarks and manual checks (`cargo xtask bench store` builds it in
//! release mode):
//!
//! ```text
//! store_tool gen FILE MIB [SEED]                       write a MIB-mebibyte layer tar of mixed
//!                                                       content (text, random, sparse)
//! store_tool hash FILE                                 sha256 with the store's hasher; JSON
//! store_tool ingest ROOT FILE none|gzip|zstd          ingest FILE as a layer; prints JSON
//! store_tool import ROOT FILE TAG none|gzip|zstd [BASE]  make an image (FILE as a layer on
//!                                                       top of BASE's layers) and tag it
//! store_tool tag ROOT IMAGE TAG                        tag an image under another name
//! ```

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
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
    if arg(0)? == "hash" {
        let start = Instant::now();
        let mut r = strata_store::HashingReader::new(BufReader::with_capacity(
            1 << 20,
            File::open(arg(1)?)?,
        ));
        io::copy(&mut r, &mut io::sink())?;
        let (digest, size, _) = r.finish();
        println!(
            "{}",
            serde_json::json!({
                "seconds": start.elapsed().as_secs_f64(),
                "digest": digest.to_string(),
                "size": size,
            })
        );
        return Ok(());
    }
    if arg(0)? == "gen" {
        let mib: u64 = arg(2)?.parse()?;
        let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
        return generate(Path::new(arg(1)?), mib, seed);
    }
    if arg(0)? == "tag" {
        let store = Store::open(Path::new(arg(1)?))?;
        let image = store.resolve(arg(2)?)?;
        store.tag(&Reference::parse(arg(3)?)?, &image)?;
        return Ok(());
    }
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

/// A deterministic layer tar of `mib` MiB: 4 MiB files cycling through text-like, random and
/// sparse content, so compressors see something like a real root filesystem.
fn generate(path: &Path, mib: u64, seed: u64) -> Result<(), Box<dyn std::error::Error>> {
    const FILE: usize = 4 << 20;
    const WORDS: [&str; 16] = [
        "lib", "usr", "share", "config", "error", "value", "return", "static", "const", "function",
        "0x00", "mov", "eax", "call", "the", "data",
    ];
    let mut out = tar::Builder::new(BufWriter::with_capacity(1 << 20, File::create(path)?));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut buf = vec![0u8; FILE];
    let files = (mib << 20) / FILE as u64;
    for i in 0..files {
        match i % 3 {
            0 => {
                let mut at = 0;
                while at < FILE {
                    let w = WORDS[(next() % 16) as usize].as_bytes();
                    let n = w.len().min(FILE - at);
                    buf[at..at + n].copy_from_slice(&w[..n]);
                    at += n;
                    if at < FILE {
                        buf[at] = if next() % 8 == 0 { b'\n' } else { b' ' };
                        at += 1;
                    }
                }
            }
            1 => {
                for chunk in buf.chunks_mut(8) {
                    let v = next().to_le_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
            }
            _ => {
                buf.fill(0);
                for _ in 0..FILE / 64 {
                    let at = (next() % FILE as u64) as usize;
                    buf[at] = next() as u8;
                }
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(FILE as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        out.append_data(&mut h, format!("usr/share/bench/file-{i:05}"), &buf[..])?;
    }
    out.into_inner()?.flush()?;
    Ok(())
}
