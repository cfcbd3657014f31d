//! The `strata parse` and `strata lint` commands, run as a user would run them, on the
//! small Dockerfiles in `tests/fixtures`.

use std::path::Path;
use std::process::Command;

/// Run `strata` in the fixtures folder; return exit code, stdout and stderr as one text.
fn strata(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
        .output()
        .expect("run strata");
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn parse_summarises_stages() {
    insta::assert_snapshot!(strata(&["parse", "app.Dockerfile"]));
}

#[test]
fn parse_dump_prints_buildkit_format() {
    insta::assert_snapshot!(strata(&["parse", "--dump", "app.Dockerfile"]));
}

#[test]
fn parse_error_goes_to_stderr_with_exit_1() {
    insta::assert_snapshot!(strata(&["parse", "broken.Dockerfile"]));
}

#[test]
fn dump_error_goes_to_stderr_with_exit_1() {
    let out = strata(&["parse", "--dump", "missing.Dockerfile"]);
    assert!(out.starts_with("exit: 1\n"), "{out}");
    assert!(out.contains("Error: reading missing.Dockerfile"), "{out}");
}

#[test]
fn lint_warnings_exit_0() {
    insta::assert_snapshot!(strata(&["lint", "warnings.Dockerfile"]));
}

#[test]
fn lint_errors_exit_1() {
    insta::assert_snapshot!(strata(&["lint", "errors.Dockerfile"]));
}

#[test]
fn lint_json() {
    insta::assert_snapshot!(strata(&["lint", "--format", "json", "warnings.Dockerfile"]));
}

#[test]
fn lint_clean_file() {
    insta::assert_snapshot!(strata(&["lint", "app.Dockerfile"]));
}
