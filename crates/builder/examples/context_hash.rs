//! Times walking and hashing a build context: `cargo run --release -p strata-builder
//! --example context_hash -- [DIR]`. Without DIR it makes a temp context of 20,000 files of
//! 10 KiB (200 MB) in 200 directories, like the builder issue's benchmark.

use std::time::Instant;

use strata_builder::context::{hash_selection, ContextIndex, HashOptions};

fn main() {
    let made;
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            made = tempfile::tempdir().expect("temp dir");
            let body = vec![b'x'; 10 * 1024];
            for d in 0..200 {
                let sub = made.path().join(format!("dir{d:03}"));
                std::fs::create_dir(&sub).expect("mkdir");
                for f in 0..100 {
                    let mut content = body.clone();
                    content.extend_from_slice(format!("{d}/{f}").as_bytes());
                    std::fs::write(sub.join(format!("file{f:03}")), content).expect("write");
                }
            }
            made.path().to_path_buf()
        }
    };
    let start = Instant::now();
    let index = ContextIndex::walk(&dir, None).expect("walk");
    let walked = start.elapsed();
    let hashed = hash_selection(&index, &["."], &HashOptions::context()).expect("hash");
    let total = start.elapsed();
    let bytes: u64 = index.entries().iter().map(|e| e.size).sum();
    println!(
        "{} entries, {:.1} MB: walk {:.0} ms, hash {:.0} ms ({:.0} MB/s on {} threads), digest {}",
        index.entries().len(),
        bytes as f64 / 1e6,
        walked.as_secs_f64() * 1e3,
        (total - walked).as_secs_f64() * 1e3,
        bytes as f64 / 1e6 / (total - walked).as_secs_f64(),
        rayon::current_num_threads(),
        hashed.digest
    );
}
