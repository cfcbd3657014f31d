//! `strata completion SHELL` (a completion script, from the clap definition) and the hidden
//! `strata __man DIR` that `cargo xtask man` runs to write one man page per command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::ui::out::outln;
use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

const EXAMPLES: &str = "\
Examples:
  strata completion bash > /etc/bash_completion.d/strata
  strata completion zsh > \"${fpath[1]}/_strata\"
  strata completion fish > ~/.config/fish/completions/strata.fish";

/// Options of `strata completion`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: CompletionShell,
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    /// GNU bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Options of `strata __man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write the pages (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(args: &CompletionArgs) -> anyhow::Result<ExitCode> {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = crate::Cli::command();
    // clap_complete panics on a failed write: render first, then write with `?`.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "strata", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// Write `strata.1` and `strata-<command>.1` (nested: `strata-system-df.1`) for every
/// visible command; returns the file names written, sorted.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let mut written = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("strata") && name.ends_with(".1") {
            written.push(name);
        }
    }
    written.sort();
    Ok(written)
}

pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    for file in write_man_pages(&args.dir)? {
        outln!("{}", args.dir.join(file).display())?;
    }
    Ok(ExitCode::SUCCESS)
}
