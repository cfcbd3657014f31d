//! Plain throughput harness for `cargo xtask bench parser`: parse every file under a
//! folder over and over on one thread and report MB/s.
//!
//! Usage: `parse_bench <dir> [seconds per measurement] [only]` (`only` = `parse`, `raw`,
//! `lint` or `lines` runs one measurement, for profiling). Prints one `key=value` line
//! per measurement so xtask can read it: MB/s by thread CPU time, then by wall clock.
//! Measured: the full two-level parse, the raw level alone, parse plus lints, and a
//! yardstick (counting lines with `str::lines`) in the same run.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// CPU time this thread has used, from `/proc/thread-self/stat` (utime + stime, in
/// clock ticks of 1/100 s). On a shared machine this is fairer than wall time: time the
/// thread spent waiting for a core is not counted.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// MB/s by thread CPU time (when available) and by wall clock.
struct Speed {
    cpu: Option<f64>,
    wall: f64,
    rounds: u64,
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} wall_mb_s={:.1} rounds={}",
            self.cpu.unwrap_or(self.wall),
            self.wall,
            self.rounds
        )
    }
}

/// Run `f` over the whole corpus until `budget` has passed.
fn measure(
    corpus: &[String],
    bytes: usize,
    budget: Duration,
    mut f: impl FnMut(&str) -> usize,
) -> Speed {
    // Warm-up pass.
    for t in corpus {
        black_box(f(black_box(t)));
    }
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < budget {
        for t in corpus {
            black_box(f(black_box(t)));
        }
        rounds += 1;
    }
    let wall = start.elapsed().as_secs_f64();
    let total = bytes as f64 * rounds as f64 / 1e6;
    let cpu = match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) if b > a => Some(total / (b - a).as_secs_f64()),
        _ => None,
    };
    Speed {
        cpu,
        wall: total / wall,
        rounds,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: parse_bench <dir> [seconds] [only]")?,
    );
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3.0);
    let only = args.next();
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let budget = Duration::from_secs_f64(secs);
    let mut paths = Vec::new();
    files(&dir, &mut paths)?;
    paths.sort();
    let corpus: Vec<String> = paths
        .iter()
        .map(std::fs::read_to_string)
        .collect::<Result<_, _>>()?;
    let bytes: usize = corpus.iter().map(String::len).sum();
    for t in &corpus {
        strata_parser::parse(t).map_err(|e| format!("corpus file does not parse: {e}"))?;
    }
    println!("files={} bytes={bytes}", corpus.len());
    if run("parse") {
        let speed = measure(&corpus, bytes, budget, |t| {
            strata_parser::parse(t).map(|d| d.stages.len()).unwrap_or(0)
        });
        println!("parse_mb_s={speed}");
    }
    if run("raw") {
        let speed = measure(&corpus, bytes, budget, |t| {
            strata_parser::ast::parse(t)
                .map(|a| a.nodes.len())
                .unwrap_or(0)
        });
        println!("raw_parse_mb_s={speed}");
    }
    if run("lint") {
        let speed = measure(&corpus, bytes, budget, |t| {
            strata_parser::lint::lint_source(t)
                .map(|l| l.len())
                .unwrap_or(0)
        });
        println!("parse_and_lint_mb_s={speed}");
    }
    if run("lines") {
        let speed = measure(&corpus, bytes, budget, |t| t.lines().count());
        println!("yardstick_lines_mb_s={speed}");
    }
    Ok(())
}
