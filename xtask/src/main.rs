//! Project automation for strata, run as `cargo xtask <command>`.
//!
//! - `test`: the whole gate (formatting, clippy, unit and doc tests, conformance runs, and the
//!   integration suites that need root and overlayfs).
//! - `bench`: benchmarks, reported as ratios against yardsticks measured in the same run.
//! - `demo`: the main job, a demo build of real images on the embedded default store.
//! - `man`: strata's man pages, into `target/man` or a given folder.
//! - `tty-check`: the live progress views of `build`, `save` and `load` in a tmux pane.

mod bench_analyze;
mod bench_build;
mod bench_fs;
mod bench_overlay;
mod bench_parser;
mod bench_peers;
mod bench_registry;
mod bench_store;
mod busybox;
mod demo;
mod deps;
mod man;
mod shared;
mod strata_bin;
mod test;
mod tidy;
mod tty_check;

use clap::{Parser, Subcommand};

/// strata's project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every check CI runs: fmt, clippy, unit/doc tests, conformance, integration suites.
    Test(test::TestArgs),
    /// Run a benchmark and report ratios against yardsticks measured in the same run.
    #[command(subcommand)]
    Bench(Bench),
    /// The layering story on the embedded store: build the seed images, show what they share,
    /// save and load them (needs root).
    Demo,
    /// Write strata's man pages (one per command) into target/man or DIR.
    Man(man::ManArgs),
    /// Check the live progress of build, save and load in a 100x30 tmux pane (needs root).
    TtyCheck(tty_check::TtyCheckArgs),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Parse the real-world Dockerfile corpus repeatedly on one core and report MB/s.
    Parser(bench_parser::ParserBenchArgs),
    /// Diff+commit against image size, unpack against `tar -x`, mount+unmount by depth.
    Overlay,
    /// The store: ingest (plain, zstd), save and load, peak memory.
    Store(bench_store::StoreBenchArgs),
    /// `strata build`: cold, cached and touched builds of three Dockerfiles (vs BuildKit).
    Build(bench_build::BuildBenchArgs),
    /// Push and pull against `skopeo copy` with a local docker-registry; no-op push time.
    Registry(bench_registry::RegistryBenchArgs),
    /// `strata analyze` of a 1 GiB, 30-layer image against `zstd -dc` of its layers.
    Analyze(bench_analyze::AnalyzeBenchArgs),
    /// strata vs BuildKit and buildah: five scenarios, cold/warm/one file changed, written
    /// to BENCHMARKS.md and bench/peers.json.
    Peers(bench_peers::PeersBenchArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Test(t) => test::run(&t),
        Command::Bench(Bench::Parser(b)) => bench_parser::run(&b),
        Command::Bench(Bench::Overlay) => bench_overlay::run(),
        Command::Bench(Bench::Store(b)) => bench_store::run(&b),
        Command::Bench(Bench::Build(b)) => bench_build::run(&b),
        Command::Bench(Bench::Analyze(b)) => bench_analyze::run(&b),
        Command::Demo => demo::run(),
        Command::Man(m) => man::run(&m),
        Command::TtyCheck(t) => tty_check::run(&t),
        Command::Bench(Bench::Registry(b)) => bench_registry::run(&b),
        Command::Bench(Bench::Peers(b)) => bench_peers::run(&b),
    }
}
