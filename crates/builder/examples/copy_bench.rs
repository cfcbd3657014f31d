//! Times `COPY . /dest` against `cp -a` of the same tree: `cargo run --release -p
//! strata-builder --example copy_bench -- [DIR] [ROUNDS]`. Without DIR it makes a temp
//! context of 20,000 files of 10 KiB (200 MB) in 200 directories, like the builder issue's
//! benchmark. Rounds alternate between the two (default 3) so that load on a shared
//! machine hits both alike; every copy goes to a new folder on the same filesystem, and
//! nothing is deleted until the end (a delete slows later file creation on ext4 with
//! `discard`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_builder::context::ContextIndex;
use strata_builder::copy::{prepare, CopyRequest, SourceRoot};

fn make_context(dir: &Path) {
    let body = vec![b'x'; 10 * 1024];
    for d in 0..200 {
        let sub = dir.join(format!("dir{d:03}"));
        std::fs::create_dir(&sub).expect("mkdir");
        for f in 0..100 {
            let mut content = body.clone();
            content.extend_from_slice(format!("{d}/{f}").as_bytes());
            std::fs::write(sub.join(format!("file{f:03}")), content).expect("write");
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args().skip(1);
    let made;
    let src: PathBuf = match args.next().filter(|a| a != "-") {
        Some(d) => PathBuf::from(d),
        None => {
            made = tempfile::tempdir().expect("temp dir");
            make_context(made.path());
            made.path().to_path_buf()
        }
    };
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(3);
    let out = tempfile::tempdir_in(src.parent().unwrap_or(Path::new("/tmp"))).expect("out dir");

    let index = ContextIndex::walk(&src, None).expect("walk");
    let bytes: u64 = index.entries().iter().map(|e| e.size).sum();
    let (mut cp, mut prep, mut apply) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let cp_dest = out.path().join(format!("cp{round}"));
        let start = Instant::now();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&cp_dest)
            .status()
            .expect("run cp");
        assert!(status.success(), "cp -a failed");
        cp.push(start.elapsed());

        let ours = out.path().join(format!("strata{round}"));
        std::fs::create_dir(&ours).expect("mkdir");
        let req = CopyRequest {
            sources: vec![".".into()],
            inline: Vec::new(),
            dest: "/app/".into(),
            workdir: "/".into(),
            from: SourceRoot::Context {
                dir: &src,
                index: &index,
            },
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            excludes: Vec::new(),
            add: None,
        };
        let start = Instant::now();
        let plan = prepare(&req).expect("prepare");
        prep.push(start.elapsed());
        let start = Instant::now();
        let stats = plan.apply(&ours).expect("apply");
        apply.push(start.elapsed());
        assert_eq!(stats.bytes, bytes);
    }
    let (cp, prep, apply) = (median(cp), median(prep), median(apply));
    println!(
        "{} entries, {:.1} MB, {} rounds, {} threads (medians):",
        index.entries().len(),
        bytes as f64 / 1e6,
        rounds,
        rayon::current_num_threads()
    );
    println!("  cp -a            {:7.0} ms", ms(cp));
    println!(
        "  strata apply     {:7.0} ms  ({:.2}x cp -a)",
        ms(apply),
        apply.as_secs_f64() / cp.as_secs_f64()
    );
    println!(
        "  strata prepare   {:7.0} ms  (hashing for the cache key)",
        ms(prep)
    );
    println!(
        "  prepare + apply  {:7.0} ms  ({:.2}x cp -a)",
        ms(prep + apply),
        (prep + apply).as_secs_f64() / cp.as_secs_f64()
    );
}
