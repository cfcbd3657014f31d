//! `strata build` end to end: progress modes, `-q`, `--iidfile`, `--output`, `--explain`,
//! failures and exit codes, `prune --cache` / `builder prune`, and the seed example's
//! `history`. Builds need root and overlayfs: every test is privileged.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::regex_escape;
use strata_overlay::{diff_dirs, write_tar, TarOptions};
use strata_store::{Compression, ImageConfig, Reference, Store};

/// A fresh store holding `busybox:latest`, made from Debian's busybox-static.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        let bin = rootfs.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        std::fs::create_dir_all(rootfs.path().join("etc")).unwrap();
        std::fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n",
        )
        .unwrap();
        let empty = tempfile::tempdir().unwrap();
        let mut tar = Vec::new();
        let set = diff_dirs(empty.path(), rootfs.path()).unwrap();
        write_tar(
            &set,
            &mut tar,
            &TarOptions {
                clamp_mtime: Some(1_700_000_000),
            },
        )
        .unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let mut config: ImageConfig = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","created":"2023-11-14T22:13:20Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]},"history":[{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) ADD file:busybox in / "},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true}]}"#,
        )
        .unwrap();
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        config.oci.set_architecture(arch.into());
        let image = store.import(&tar[..], &config, Compression::Zstd).unwrap();
        store
            .tag(&Reference::parse("busybox:latest").unwrap(), &image)
            .unwrap();
        Fixture { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Dates every build-cache record `seconds` in the past, standing in for time passing
    /// between builds: a record is marked used again only when its last use is older than
    /// the cache's use resolution (a minute).
    fn age_cache_records(&self, seconds: u64) {
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(seconds);
        for entry in std::fs::read_dir(self.root().join("refs/cache")).unwrap() {
            let file = std::fs::File::options()
                .write(true)
                .open(entry.unwrap().path())
                .unwrap();
            file.set_modified(then).unwrap();
        }
    }

    /// A context folder with a Dockerfile and files.
    fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.dir.path().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (p, c) in files {
            let p = ctx.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        ctx
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("STRATA_LOG_LEVEL")
            // Left as it is: `cargo xtask test` runs these tests again with `vfs`.
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .expect("strata runs")
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "strata {args:?} failed:\n{o}\n{e}");
        (o, e)
    }

    fn settings(&self) -> insta::Settings {
        let mut s = insta::Settings::clone_current();
        s.add_filter(
            &regex_escape(&self.dir.path().display().to_string()),
            "[TMP]",
        );
        s.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[ID]");
        s.add_filter(r"sha256:[0-9a-f]{12}…", "sha256:[KEY]");
        s.add_filter(r"(#\d+) \d+\.\d{3} ", "$1 [T] ");
        s.add_filter(r"(DONE|FAILED) \d+\.\ds", "$1 [D]s");
        s
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SEED_BASE: &str = "FROM busybox\nRUN mkdir /opt/ && echo \"base jdk env\" > /opt/env\nCMD [\"cat\",\"/opt/env\"]\n";

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn seed_example_with_plain_progress_and_history() {
    let f = Fixture::new();
    let base = f.context("base", SEED_BASE, &[]);
    let urm = f.context(
        "urm",
        "FROM layer-base:v1\nRUN echo \"urm service startup\" > /opt/startup\nCMD [\"cat\",\"/opt/startup\"]\n",
        &[],
    );
    let (_, first) = f.ok(&[
        "build",
        "--progress=plain",
        "-t",
        "layer-base:v1",
        path(&base),
    ]);
    f.ok(&["build", "-t", "layer-urm:v1", path(&urm)]);
    let (_, again) = f.ok(&[
        "build",
        "--progress=plain",
        "-t",
        "layer-base:v1",
        path(&base),
    ]);
    let (history, _) = f.ok(&["history", "layer-urm:v1"]);
    let mut s = f.settings();
    s.add_filter(
        r"(?:\d+ \w+|Less than a second|About an? \w+) ago +",
        "[AGO] ",
    );
    s.add_filter(r"\b[0-9a-f]{12}\b", "[IMAGE]");
    // The CREATED column is as wide as its longest value ("2 seconds ago" or "About a
    // minute ago" on a slow machine), so the header's padding varies with it.
    s.add_filter(r"CREATED +CREATED BY", "CREATED [PAD] CREATED BY");
    s.bind(|| {
        insta::assert_snapshot!("plain_first_build", first);
        insta::assert_snapshot!("plain_rebuild_all_cached", again);
        insta::assert_snapshot!("history_of_urm", history);
    });
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn quiet_iidfile_output_and_json() {
    let f = Fixture::new();
    let ctx = f.context("app", "FROM busybox\nRUN echo hi > /hi\n", &[]);
    let iid = f.dir.path().join("iid");
    let archive = f.dir.path().join("app-oci.tar");
    let (stdout, stderr) = f.ok(&[
        "build",
        "-q",
        "--iidfile",
        path(&iid),
        "--output",
        &format!("type=oci,dest={}", archive.display()),
        "-t",
        "app:1",
        path(&ctx),
    ]);
    let id = stdout.trim();
    assert!(
        id.len() == 71 && id.starts_with("sha256:") && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    assert_eq!(stderr, "", "quiet means quiet");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    // The archive loads into an empty store.
    let other = tempfile::tempdir().unwrap();
    let load = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--root", path(other.path()), "load", "-i", path(&archive)])
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert!(
        String::from_utf8_lossy(&load.stdout).contains(&id[7..19])
            || String::from_utf8_lossy(&load.stdout).contains("app:1")
    );

    // JSON progress: one event per line on stderr.
    let out = f.run(&["build", "--progress=json", "--no-cache", path(&ctx)]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["event"], "build_started");
    assert_eq!(lines.last().unwrap()["event"], "build_finished");
    assert!(lines.iter().any(|l| l["event"] == "cache_miss"));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn explain_failures_and_build_args() {
    let f = Fixture::new();
    let ctx = f.context(
        "explain",
        "FROM busybox\nARG V=1\nRUN echo $V > /v\nRUN cat /v\n",
        &[],
    );
    f.ok(&["build", "-q", path(&ctx)]);
    let (_, explained) = f.ok(&[
        "build",
        "--progress=quiet",
        "--explain",
        "--build-arg",
        "V=2",
        path(&ctx),
    ]);
    let failing = f.context(
        "failing",
        "FROM busybox\nRUN echo out && echo err >&2 && exit 7\n",
        &[],
    );
    let out = f.run(&["build", "--progress=plain", path(&failing)]);
    assert_eq!(out.status.code(), Some(1));
    let failed = String::from_utf8_lossy(&out.stderr).into_owned();
    let missing = f.context("missing", "FROM nothere:1\n", &[]);
    // Offline: a missing image is not pulled, and the error says how to get one.
    let out = f.run(&["build", "--pull=never", path(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    let missing_err = String::from_utf8_lossy(&out.stderr).into_owned();
    let out = f.run(&["build", "--output", "out.tar", path(&ctx)]);
    assert_eq!(out.status.code(), Some(125));
    let usage = String::from_utf8_lossy(&out.stderr).into_owned();
    f.settings().bind(|| {
        insta::assert_snapshot!("explain_summary", explained);
        insta::assert_snapshot!("failing_run", failed);
        insta::assert_snapshot!("missing_base", missing_err);
        insta::assert_snapshot!("bad_output_usage", usage);
    });
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn prune_cache_and_builder_prune() {
    let f = Fixture::new();
    let ctx = f.context("p", "FROM busybox\nRUN echo one > /one\n", &[]);
    f.ok(&["build", "-q", "-t", "p:1", path(&ctx)]);
    f.ok(&["rmi", "p:1"]);
    let (dry, _) = f.ok(&["builder", "prune", "--dry-run"]);
    assert!(
        dry.starts_with("would remove 1 build cache record(s)"),
        "{dry}"
    );
    assert!(
        dry.contains("would remove build cache record ")
            && dry.contains("RUN /bin/sh -c echo one > /one"),
        "each record is listed with its instruction:\n{dry}"
    );
    let (dry_cache, _) = f.ok(&["prune", "--cache", "--dry-run"]);
    let (pruned, _) = f.ok(&["prune", "--cache"]);
    assert!(
        pruned.contains("removed 1 build cache record(s)"),
        "{pruned}"
    );
    // The dry run said exactly what went and what it freed.
    let total = |s: &str| {
        s.lines()
            .last()
            .unwrap()
            .rsplit(": ")
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(total(&dry_cache), total(&pruned), "{dry_cache}\n{pruned}");
    assert_eq!(
        dry_cache.lines().count(),
        pruned.lines().count(),
        "{dry_cache}\n{pruned}"
    );
    assert!(pruned.contains("removed layer folder "), "{pruned}");
    let (again, _) = f.ok(&["builder", "prune"]);
    assert_eq!(again, "Total reclaimed space: 0B\n");
    // The base stays usable.
    f.ok(&["build", "-q", path(&ctx)]);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn dockerfile_and_context_from_standard_input() {
    use std::io::Write;
    use std::process::Stdio;
    let f = Fixture::new();
    let ctx = f.context(
        "stdin",
        "FROM busybox\nRUN false\n",
        &[("data.txt", "from the context\n")],
    );
    let run_with_stdin = |args: &[&str], input: &[u8]| -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--root")
            .arg(f.root())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    // -f -: the Dockerfile from stdin, the context from the folder.
    let df = b"FROM busybox\nRUN --mount=type=bind,target=/c cat /c/data.txt > /copied\n";
    let out = run_with_stdin(&["build", "-q", "-f", "-", "-t", "stdin:1", path(&ctx)], df);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `-`: a tar of the context (with its Dockerfile) from stdin.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY data.txt /d\n").unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&ctx)
        .args(["-cf", "-", "."])
        .output()
        .unwrap()
        .stdout;
    let out = run_with_stdin(&["build", "-q", "-"], &tar);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `-` with a plain Dockerfile: no context.
    let out = run_with_stdin(
        &["build", "-q", "-"],
        b"FROM busybox\nRUN echo no context\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_with_stdin(&["build", "-f", "-", "-"], b"");
    assert_eq!(out.status.code(), Some(125));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn ctrl_c_cancels_the_build() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let f = Fixture::new();
    let ctx = f.context("slow", "FROM busybox\nRUN echo started && sleep 60\n", &[]);
    let start = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(f.root())
        .args(["build", "--progress=plain", "-t", "slow:1"])
        .arg(&ctx)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains(" started") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("started"), "{seen}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen}{rest}");
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    assert!(rest.contains("the step was cancelled"), "{rest}");
    let (images, _) = f.ok(&["images", "-q", "slow:1"]);
    assert_eq!(images, "");
    let (fsck, _) = f.ok(&["fsck"]);
    assert!(!fsck.contains("error"), "{fsck}");
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn lint_warnings_at_build_start_and_build_check() {
    let f = Fixture::new();
    let linted = "FROM busybox as base\nMAINTAINER me\nENV GREETING=$NOPE\nRUN echo hi > /x\n";
    let ctx = f.context("lints", linted, &[]);
    let (_, built) = f.ok(&["build", "--progress=plain", path(&ctx)]);
    // The warnings come first, before the first step.
    let start: String = built
        .lines()
        .take_while(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(built.contains("#1 [1/2] FROM"), "{built}");

    // `--check` builds nothing; warnings alone exit 0.
    let checked = f.run(&["build", "--check", "--build-arg", "TYPO=1", path(&ctx)]);
    assert_eq!(checked.status.code(), Some(0));
    let (checked_out, checked_err) = (
        String::from_utf8_lossy(&checked.stdout).into_owned(),
        String::from_utf8_lossy(&checked.stderr).into_owned(),
    );
    let json = f.run(&["build", "--check", "--progress=json", path(&ctx)]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let rules: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        ["FromAsCasing", "MaintainerDeprecated", "UndefinedVar"],
        "{json}"
    );

    // `# check=error=true`: the same findings are fatal, for the build and for --check.
    let strict = f.context("strict", &format!("# check=error=true\n{linted}"), &[]);
    let out = f.run(&["build", "--progress=plain", path(&strict)]);
    assert_eq!(out.status.code(), Some(1));
    let fatal = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!fatal.contains("#1 "), "nothing was built:\n{fatal}");
    let out = f.run(&["build", "--check", path(&strict)]);
    assert_eq!(out.status.code(), Some(1));

    // `# check=skip=` and `# strata:ignore` silence rules, in the build and in --check.
    let quiet = f.context(
        "quiet",
        &format!(
            "# check=skip=MaintainerDeprecated,FromAsCasing\n{}",
            linted.replace("ENV ", "# strata:ignore UndefinedVar\nENV ")
        ),
        &[],
    );
    let (_, built_quiet) = f.ok(&["build", "--progress=plain", path(&quiet)]);
    assert!(!built_quiet.contains("WARN"), "{built_quiet}");
    let (none, _) = f.ok(&["build", "--check", path(&quiet)]);
    assert_eq!(none, "");
    // The check of a stage that needs an image the store lacks.
    let missing = f.context("missing", "FROM nothere:1\nRUN true\n", &[]);
    let (missing_out, _) = f.ok(&["build", "--check", path(&missing)]);

    f.settings().bind(|| {
        insta::assert_snapshot!("lint_warnings_at_build_start", start);
        insta::assert_snapshot!(
            "build_check",
            format!("{checked_out}--- stderr\n{checked_err}")
        );
        insta::assert_snapshot!("build_check_error_true", fatal);
        insta::assert_snapshot!("build_check_missing_base", missing_out);
    });
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn keep_storage_evicts_the_least_recently_used_cache() {
    let f = Fixture::new();
    let old = f.context(
        "old",
        "FROM busybox\nRUN head -c 300000 /dev/zero > /old\n",
        &[],
    );
    let new = f.context(
        "new",
        "FROM busybox\nRUN head -c 200000 /dev/zero > /new\n",
        &[],
    );
    f.ok(&["build", "-q", path(&old)]);
    f.age_cache_records(180);
    f.ok(&["build", "-q", path(&new)]);
    let (dry, _) = f.ok(&["builder", "prune", "--keep-storage", "1GB", "--dry-run"]);
    assert!(
        dry.starts_with("build cache would be "),
        "nothing to evict:\n{dry}"
    );
    // A limit of 1 byte evicts both, oldest first; 0 records are kept.
    let (both, _) = f.ok(&["prune", "--keep-storage", "1", "--dry-run"]);
    let order: Vec<&str> = both
        .lines()
        .filter(|l| l.starts_with("would remove build cache record "))
        .map(|l| l.rsplit(": ").next().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "RUN /bin/sh -c head -c 300000 /dev/zero > /old # buildkit",
            "RUN /bin/sh -c head -c 200000 /dev/zero > /new # buildkit"
        ],
        "{both}"
    );
    // Rebuilding the old one uses its record: now the new one is the least recently used.
    // Both are aged past the cache's use resolution first, as a later build would find them.
    f.age_cache_records(120);
    f.ok(&["build", "-q", path(&old)]);
    let (one, _) = f.ok(&["prune", "--keep-storage", "1", "--dry-run"]);
    assert!(
        one.find("> /new").unwrap() < one.find("> /old").unwrap(),
        "{one}"
    );
    let out = f.run(&["prune", "--keep-storage", "lots"]);
    assert_eq!(out.status.code(), Some(125));
    let out = f.run(&["prune", "--keep-storage", "1", "--cache"]);
    assert_eq!(out.status.code(), Some(125));
}

/// The example adapted from a real-world Dockerfile builds on the busybox base, and
/// `analyze` finds the one waste its README describes.
#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn the_redis_example_builds_and_analyze_names_its_waste() {
    let f = Fixture::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/redis-busybox")
        .canonicalize()
        .unwrap();
    let dockerfile = example.join("Dockerfile");
    f.ok(&["build", "-q", "-t", "redis-busybox:7.2", path(&example)]);
    let (report, _) = f.ok(&["analyze", "-f", path(&dockerfile), "redis-busybox:7.2"]);
    // Shown in full with --nocapture, for the record.
    println!("{report}");
    let (json, _) = f.ok(&[
        "analyze",
        "--format",
        "json",
        "-f",
        path(&dockerfile),
        "redis-busybox:7.2",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let findings = v["findings"].as_array().unwrap();
    let rules: Vec<&str> = findings
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["copied-then-removed"], "{report}");
    // `COPY src/` (line 17) brought the sources; the RUN of line 19 removed them.
    assert_eq!(findings[0]["source"]["line"], 17, "{report}");
    assert_eq!(findings[0]["related_source"]["line"], 19, "{report}");
    let (history, _) = f.ok(&["history", "--no-trunc", "redis-busybox:7.2"]);
    assert!(history.contains("CMD [\"redis-server\"]"), "{history}");
}
