//! `cargo xtask tty-check`: the live progress views, drawn on a real terminal and read back.
//!
//! In a detached tmux pane of a fixed size (100x30), a script runs `strata build` of a
//! three-stage Dockerfile (two stages in parallel, printing for a few seconds), then
//! `strata save` and `strata load` of a ~600 MB archive. The pane is captured
//! (`tmux capture-pane -p`) every 50 ms while it runs, and once at the end. The check asserts:
//!
//! - mid-build, the live view shows its header, running steps with timers and their latest
//!   output lines (`=> => # ...`), with no line reaching the last column;
//! - mid-save and mid-load, a progress bar;
//! - at the end, every line on the screen is one that belongs there (the echoed commands, the
//!   final view with one line per step, the load's lines, the exit codes): no output line, bar
//!   or partial frame was left behind.
//!
//! The final capture is printed so it can be quoted. Needs root (builds mount overlayfs) and
//! tmux; run by `cargo xtask test`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Args;
use regex::Regex;
use strata_store::Store;

use crate::shared::workspace_root;

/// Options of `cargo xtask tty-check`.
#[derive(Debug, Args)]
pub struct TtyCheckArgs {
    /// Keep the work folder (under target/tty-check) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// Pane size.
const COLUMNS: usize = 100;
const ROWS: usize = 30;
/// Size of the big layer that `save` and `load` move.
const BIG: u64 = 600 << 20;

const DOCKERFILE: &str = r#"FROM busybox AS a
RUN for i in $(seq 1 30); do echo "a line $i"; sleep 0.1; done

FROM busybox AS b
RUN for i in $(seq 1 20); do echo "b line $i"; sleep 0.15; done

FROM busybox
COPY --from=a /etc/passwd /a
COPY --from=b /etc/passwd /b
RUN echo "final stage"; sleep 1; echo done
"#;

/// The steps the final view must list, one line each.
const STEPS: &[&str] = &[
    "[a 1/2] FROM docker.io/library/busybox:latest",
    "[a 2/2] RUN for i in $(seq 1 30)",
    "[b 1/2] FROM docker.io/library/busybox:latest",
    "[b 2/2] RUN for i in $(seq 1 20)",
    "COPY --from=a /etc/passwd /a",
    "COPY --from=b /etc/passwd /b",
    "RUN echo \"final stage\"",
];

/// A tar holding one file of `size` random bytes (incompressible, so the archive is big).
fn big_tar(path: &Path, size: u64) -> anyhow::Result<()> {
    let out = std::io::BufWriter::new(fs::File::create(path)?);
    let mut tar = tar::Builder::new(out);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    let random = fs::File::open("/dev/urandom")?;
    tar.append_data(&mut header, "big.bin", std::io::Read::take(random, size))?;
    tar.into_inner()?.flush()?;
    Ok(())
}

/// A tmux server on a private socket, killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn capture(&self) -> anyhow::Result<String> {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "check"])
            .output()
            .context("running tmux capture-pane")?;
        if !out.status.success() {
            bail!(
                "tmux capture-pane failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// What was seen while the script ran.
#[derive(Default)]
struct Seen {
    build: Option<String>,
    save: Option<String>,
    load: Option<String>,
    frames: usize,
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Runs the check; `Err` says which expectation failed and shows the capture.
pub fn run(args: &TtyCheckArgs) -> anyhow::Result<()> {
    crate::deps::ensure_packages(&["tmux", "busybox-static"])?;
    let strata = crate::strata_bin::build()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let work = workspace_root().join(format!("target/tty-check/run-{stamp}"));
    fs::create_dir_all(&work)?;
    let result = check(&strata, &work);
    if args.keep {
        eprintln!("==> tty check: work folder kept at {}", work.display());
    } else {
        // The build left overlay folders owned by root; a failed removal is not the check's
        // failure.
        let _ = fs::remove_dir_all(&work);
    }
    result
}

fn check(strata: &Path, work: &Path) -> anyhow::Result<()> {
    eprintln!(
        "==> tty check: preparing stores and a {} MB archive",
        BIG >> 20
    );
    let store_dir = work.join("store");
    let other_dir = work.join("other");
    let store = Store::open(&store_dir)?;
    let busybox_tar = work.join("busybox.tar");
    crate::busybox::rootfs_tar(work, &busybox_tar)?;
    crate::busybox::import(&store, &busybox_tar, "busybox:latest", "sh")?;
    let big = work.join("big-layer.tar");
    big_tar(&big, BIG)?;
    crate::busybox::import(&store, &big, "big:latest", "true")?;
    fs::remove_file(&big)?;
    drop(store);
    let ctx = work.join("context");
    fs::create_dir_all(&ctx)?;
    fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
    let archive = work.join("big.tar");

    let (s, r, o, c, a) = (
        shell_quote(strata),
        shell_quote(&store_dir),
        shell_quote(&other_dir),
        shell_quote(&ctx),
        shell_quote(&archive),
    );
    let script = format!(
        "#!/bin/sh\n\
         cd {w}\n\
         echo '$ strata build -t tty-check:latest context'\n\
         {s} --root {r} build -t tty-check:latest {c}; echo \"BUILD-EXIT=$?\"\n\
         echo '$ strata save -o big.tar big:latest'\n\
         {s} --root {r} save -o {a} big:latest; echo \"SAVE-EXIT=$?\"\n\
         echo '$ strata --root other load -i big.tar'\n\
         {s} --root {o} load -i {a}; echo \"LOAD-EXIT=$?\"\n\
         echo TTY-CHECK-DONE\n\
         exec sleep 600\n",
        w = shell_quote(work),
    );
    let script_path = work.join("check.sh");
    fs::write(&script_path, script)?;

    let tmux = Tmux {
        socket: work.join("tmux.sock"),
    };
    let status = tmux
        .command()
        .args(["-f", "/dev/null", "new-session", "-d", "-s", "check"])
        .args(["-x", &COLUMNS.to_string(), "-y", &ROWS.to_string()])
        .args(["unshare", "--mount", "--propagation", "private", "sh"])
        .arg(&script_path)
        .env_remove("NO_COLOR")
        .env_remove("STRATA_ROOT")
        .env_remove("STRATA_STORAGE_DRIVER")
        .env("TERM", "xterm-256color")
        .status()
        .context("starting tmux")?;
    ensure!(status.success(), "tmux new-session failed ({status})");
    let size = tmux
        .command()
        .args([
            "display-message",
            "-p",
            "-t",
            "check",
            "#{pane_width}x#{pane_height}",
        ])
        .output()?;
    let size = String::from_utf8_lossy(&size.stdout).trim().to_string();
    ensure!(
        size == format!("{COLUMNS}x{ROWS}"),
        "the pane is {size}, not {COLUMNS}x{ROWS}"
    );
    eprintln!("==> tty check: running in a {size} tmux pane");

    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(600);
    let last = loop {
        let screen = tmux.capture()?;
        seen.frames += 1;
        if screen.contains("TTY-CHECK-DONE") {
            break screen;
        }
        if Instant::now() > deadline {
            bail!("the tty check did not finish within 10 minutes; screen:\n{screen}");
        }
        note_midway(&mut seen, &screen);
        std::thread::sleep(Duration::from_millis(50));
    };
    // One more capture after a pause: nothing may change once the commands are done.
    std::thread::sleep(Duration::from_millis(300));
    let settled = tmux.capture()?;
    ensure!(
        settled == last,
        "the screen changed after the commands ended:\n{last}\n---\n{settled}"
    );

    eprintln!(
        "==> tty check: {} captures; the final screen ({COLUMNS}x{ROWS}):",
        seen.frames
    );
    print_screen(&last);
    let build = seen
        .build
        .as_deref()
        .context("no capture caught the live build view with output lines")?;
    eprintln!("==> tty check: a capture in the middle of the build:");
    print_screen(build);
    check_midway_build(build)?;
    let save = seen
        .save
        .as_deref()
        .context("no capture caught the save progress bar")?;
    let load = seen
        .load
        .as_deref()
        .context("no capture caught the load progress bar")?;
    eprintln!("==> tty check: captures in the middle of the save and of the load:");
    print_screen(&bar_lines(save));
    print_screen(&bar_lines(load));
    check_final(&last)?;
    eprintln!("==> tty check: passed");
    Ok(())
}

/// Keeps the best mid-way captures: the build view showing the most output lines of the two
/// parallel stages, and each bar nearest half-way.
fn note_midway(seen: &mut Seen, screen: &str) {
    let logs = |s: &str| s.lines().filter(|l| l.starts_with(" => => # ")).count();
    let building = screen.contains("[+] Building")
        && !screen.contains("FINISHED")
        && screen.contains("=> => # a line")
        && screen.contains("=> => # b line");
    if building
        && seen
            .build
            .as_deref()
            .is_none_or(|b| logs(screen) >= logs(b))
    {
        seen.build = Some(screen.to_string());
    }
    // How far from half-way the bar starting with `prefix` is (None: no bar on screen).
    let off_half = |s: &str, prefix: &str| -> Option<f64> {
        let line = s.lines().find(|l| l.starts_with(prefix))?;
        let inner = line.split_once('[')?.1.split_once(']')?.0;
        let filled = inner.chars().filter(|&c| c == '=' || c == '>').count();
        Some((filled as f64 / inner.chars().count().max(1) as f64 - 0.5).abs())
    };
    for (prefix, done, slot) in [
        ("Writing", "SAVE-EXIT", &mut seen.save),
        ("Reading", "LOAD-EXIT", &mut seen.load),
    ] {
        if screen.contains(done) {
            continue;
        }
        if let Some(d) = off_half(screen, prefix) {
            if slot
                .as_deref()
                .and_then(|old| off_half(old, prefix))
                .is_none_or(|old| d < old)
            {
                *slot = Some(screen.to_string());
            }
        }
    }
}

fn bar_lines(screen: &str) -> String {
    screen
        .lines()
        .filter(|l| l.starts_with("Writing") || l.starts_with("Reading"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn print_screen(screen: &str) {
    let rule = "-".repeat(COLUMNS);
    println!("+{rule}+");
    for line in screen.trim_end_matches('\n').lines() {
        let pad = COLUMNS.saturating_sub(line.chars().count());
        println!("|{line}{}|", " ".repeat(pad));
    }
    println!("+{rule}+");
}

fn check_midway_build(screen: &str) -> anyhow::Result<()> {
    let header = Regex::new(r"^\[\+\] Building \d+\.\ds \(\d+/\d+\)$")?;
    let running = Regex::new(r"^ => \[(a|b) 2/2\] RUN .* \d+\.\ds$")?;
    ensure!(
        screen.lines().any(|l| header.is_match(l)),
        "no live header line mid-build"
    );
    ensure!(
        screen.lines().filter(|l| running.is_match(l)).count() == 2,
        "the two parallel RUN steps are not both shown running with a timer"
    );
    for l in screen.lines() {
        ensure!(
            l.chars().count() < COLUMNS,
            "a line reaches the last column: {l:?}"
        );
    }
    Ok(())
}

fn check_final(screen: &str) -> anyhow::Result<()> {
    let allowed = [
        r"^\$ strata .*$",
        r"^\[\+\] Building \d+\.\ds \((\d+)/(\d+)\) FINISHED$",
        r"^ => (CACHED )?\[[^\]]+\] .* \d+\.\ds$",
        r"^ => writing image sha256:[0-9a-f]+…? +done$",
        r"^(BUILD|SAVE|LOAD)-EXIT=0$",
        r"^Loading layer [0-9a-f]{12}: done \(\d+(\.\d+)?[kMG]?B\)$",
        r"^Loaded image: big:latest$",
        r"^TTY-CHECK-DONE$",
    ];
    let allowed: Vec<Regex> = allowed
        .iter()
        .map(|r| Regex::new(r))
        .collect::<Result<_, _>>()?;
    for line in screen.lines().filter(|l| !l.trim().is_empty()) {
        ensure!(
            allowed.iter().any(|r| r.is_match(line)),
            "unexpected line on the final screen (left over from a frame or a bar?): {line:?}"
        );
    }
    let header = Regex::new(r"\[\+\] Building \d+\.\ds \((\d+)/(\d+)\) FINISHED")?;
    let caps = header
        .captures(screen)
        .context("no final `[+] Building ... FINISHED` line")?;
    ensure!(
        caps[1] == caps[2],
        "the final view counts {} of {} steps done",
        &caps[1],
        &caps[2]
    );
    for step in STEPS {
        let n = screen.lines().filter(|l| l.contains(step)).count();
        ensure!(n == 1, "step {step:?} is on the final screen {n} times");
    }
    for expected in [
        "BUILD-EXIT=0",
        "SAVE-EXIT=0",
        "LOAD-EXIT=0",
        "Loaded image: big:latest",
    ] {
        ensure!(screen.contains(expected), "{expected:?} is missing");
    }
    ensure!(
        screen
            .lines()
            .filter(|l| l.starts_with("Loading layer"))
            .count()
            == 1,
        "load should print one `Loading layer` line"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINAL: &str = "\
$ strata build -t tty-check:latest context
[+] Building 4.1s (9/9) FINISHED
 => [a 1/2] FROM docker.io/library/busybox:latest                                              0.0s
 => [b 1/2] FROM docker.io/library/busybox:latest                                              0.0s
 => [a 2/2] RUN for i in $(seq 1 30); do echo \"a line $i\"; sleep 0.1; done                     3.2s
 => [b 2/2] RUN for i in $(seq 1 20); do echo \"b line $i\"; sleep 0.15; done                    3.1s
 => [stage-2 1/4] FROM docker.io/library/busybox:latest                                        0.0s
 => [stage-2 2/4] COPY --from=a /etc/passwd /a                                                 0.0s
 => [stage-2 3/4] COPY --from=b /etc/passwd /b                                                 0.0s
 => [stage-2 4/4] RUN echo \"final stage\"; sleep 1; echo done                                   1.0s
 => writing image sha256:9c3c43dc1d4b3dfd1e6fb1a8f1b8b0a6a1c2f3e4d5c6b7a8f9e0d1c2b3a4f5…    done
BUILD-EXIT=0
$ strata save -o big.tar big:latest
SAVE-EXIT=0
$ strata --root other load -i big.tar
Loading layer 0123456789ab: done (629.1MB)
Loaded image: big:latest
LOAD-EXIT=0
TTY-CHECK-DONE
";

    #[test]
    fn a_clean_final_screen_passes() {
        check_final(FINAL).unwrap();
    }

    #[test]
    fn leftovers_fail_the_check() {
        for bad in [
            " => => # a line 30",
            "Reading [=====>      ] 100MB/600MB",
            " => [a 2/2] RUN for i in $(seq 1 30); do echo \"a line $i\"; sl",
        ] {
            let screen = FINAL.replace("BUILD-EXIT=0\n", &format!("BUILD-EXIT=0\n{bad}\n"));
            assert!(check_final(&screen).is_err(), "{bad:?} passed");
        }
        let twice = FINAL.replace(
            "BUILD-EXIT=0\n",
            "BUILD-EXIT=0\n => [stage-2 2/4] COPY --from=a /etc/passwd /a   0.0s\n",
        );
        assert!(check_final(&twice).is_err());
    }
}
