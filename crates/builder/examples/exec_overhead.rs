//! Measures what isolation costs per step: runs `true` N times (default 100) through
//! `strata_builder::exec::run` in a busybox root, and for comparison as a plain fork+exec
//! and through util-linux `unshare -mpiuf --mount-proc chroot` (namespaces + chroot, the
//! reference figure in the reference notes). Two roots: one shaped like a real image (it
//! has `/proc`, `/dev`, `/sys`, `/etc/hosts`, `/etc/resolv.conf`) and a `scratch`-like one
//! where every mountpoint is a stub to create and remove.
//!
//! `cargo run --release -p strata-builder --example exec_overhead -- [N]` (as root; run it
//! under `unshare --mount --propagation private` to keep the host's mount table untouched).

use std::process::Command;
use std::time::{Duration, Instant};

use strata_builder::exec::{self, CancelToken, NetworkMode, OutputSink, ProcessSpec, Stream};

struct Discard;

impl OutputSink for Discard {
    fn line(&mut self, _: Stream, _: &[u8]) {}
}

fn busybox_root(image_like: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static installed");
    std::os::unix::fs::symlink("busybox", bin.join("true")).expect("symlink");
    if image_like {
        for d in ["proc", "dev", "sys", "etc"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        for f in ["etc/hosts", "etc/resolv.conf"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
    }
    dir
}

fn stats(label: &str, mut times: Vec<Duration>) -> f64 {
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() / times.len() as f64;
    let median = times[times.len() / 2].as_secs_f64();
    let p90 = times[times.len() * 9 / 10].as_secs_f64();
    println!(
        "{label:<28} mean {:6.2} ms  median {:6.2} ms  p90 {:6.2} ms",
        mean * 1e3,
        median * 1e3,
        p90 * 1e3
    );
    median
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let root = busybox_root(true);
    let scratch = busybox_root(false);
    let cancel = CancelToken::new().expect("eventfd");
    let image = ProcessSpec::new(root.path(), &["/bin/true"]);
    let mut none = image.clone();
    none.network = NetworkMode::None;
    let bare = ProcessSpec::new(scratch.path(), &["/bin/true"]);
    let timed = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed()
    };
    let run = |spec: &ProcessSpec| {
        let out = exec::run(spec, &mut Discard, &cancel).expect("run");
        assert!(out.status.success());
    };
    // Interleaved, so load changes on a shared machine hit every variant alike.
    let mut times: [Vec<Duration>; 5] = Default::default();
    for _ in 0..n {
        times[0].push(timed(&mut || {
            let status = Command::new(root.path().join("bin/true"))
                .status()
                .expect("spawn");
            assert!(status.success());
        }));
        times[1].push(timed(&mut || {
            let status = Command::new("unshare")
                .args(["-mpiuf", "--mount-proc", "chroot"])
                .arg(root.path())
                .arg("/bin/true")
                .status()
                .expect("util-linux unshare");
            assert!(status.success());
        }));
        times[2].push(timed(&mut || run(&image)));
        times[3].push(timed(&mut || run(&none)));
        times[4].push(timed(&mut || run(&bare)));
    }
    println!("{n} runs of `true` each, interleaved");
    let [plain, unshare, host, isolated, stubs] = times;
    let base = stats("fork+exec (std::process)", plain);
    let reference = stats("unshare -mpiuf + chroot", unshare);
    let host = stats("exec::run, image root", host);
    let isolated = stats("exec::run, image, net none", isolated);
    let stubs = stats("exec::run, scratch root", stubs);
    println!(
        "median ratios to unshare+chroot: image {:.2}x, net none {:.2}x, scratch {:.2}x \
         (fork+exec alone {:.2}x)",
        host / reference,
        isolated / reference,
        stubs / reference,
        base / reference
    );
}
