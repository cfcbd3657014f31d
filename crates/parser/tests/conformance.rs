//! Conformance against BuildKit's own parser and shell-lexer test data, read from the
//! shared reference folder (`$STRATA_SHARED` or `<workspace>/../shared`). When the folder
//! is absent every test here says SKIPPED and passes.
//!
//! Each test prints a line `conformance: <suite>: <passed>/<total> passed` that
//! `cargo xtask test` collects.

use std::fs;
use std::path::{Path, PathBuf};

use strata_parser::shell::{expand_word, expand_words};

fn shared() -> Option<PathBuf> {
    let dir = match std::env::var_os("STRATA_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    dir.join("conformance").is_dir().then_some(dir)
}

macro_rules! shared_or_skip {
    ($suite:expr) => {
        match shared() {
            Some(d) => d,
            None => {
                println!(
                    "conformance: {}: SKIPPED (no ../shared; set STRATA_SHARED)",
                    $suite
                );
                return;
            }
        }
    };
}

fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn report(suite: &str, passed: usize, failures: &[String]) {
    let total = passed + failures.len();
    println!("conformance: {suite}: {passed}/{total} passed");
    assert!(
        failures.is_empty(),
        "{suite}: {} of {total} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn buildkit_parser_positive_dumps() {
    let shared = shared_or_skip!("buildkit-parser positive");
    let mut passed = 0;
    let mut failures = Vec::new();
    for case in case_dirs(&shared.join("conformance/buildkit-parser/testfiles")) {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let src = fs::read(case.join("Dockerfile")).expect("Dockerfile");
        let expected = fs::read_to_string(case.join("result")).expect("result");
        let src = String::from_utf8(src).expect("utf-8 input");
        match strata_parser::ast::parse(&src) {
            Ok(ast) => {
                let got = ast.dump() + "\n";
                if got == expected {
                    passed += 1;
                } else {
                    failures.push(format!(
                        "{name}: dump differs\n--- expected\n{expected}--- got\n{got}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: unexpected error: {e}")),
        }
    }
    assert_eq!(
        passed + failures.len(),
        33,
        "the corpus has 33 positive cases"
    );
    report("buildkit-parser positive", passed, &failures);
}

#[test]
fn buildkit_parser_negative_cases_fail() {
    let shared = shared_or_skip!("buildkit-parser negative");
    let mut passed = 0;
    let mut failures = Vec::new();
    for case in case_dirs(&shared.join("conformance/buildkit-parser/testfiles-negative")) {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let src = fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        match strata_parser::ast::parse(&src) {
            Err(_) => passed += 1,
            Ok(ast) => failures.push(format!("{name}: parsed, but must fail:\n{}", ast.dump())),
        }
    }
    assert_eq!(
        passed + failures.len(),
        4,
        "the corpus has 4 negative cases"
    );
    report("buildkit-parser negative", passed, &failures);
}

#[test]
fn buildkit_parser_line_numbers() {
    let shared = shared_or_skip!("buildkit-parser testfile-line");
    let src =
        fs::read_to_string(shared.join("conformance/buildkit-parser/testfile-line/Dockerfile"))
            .expect("testfile-line");
    let ast = strata_parser::ast::parse(&src).expect("testfile-line parses");
    let spans: Vec<(usize, usize)> = ast
        .nodes
        .iter()
        .map(|n| (n.span.start_line, n.span.end_line))
        .collect();
    let root = (
        spans.first().map(|s| s.0).unwrap_or(0),
        spans.last().map(|s| s.1).unwrap_or(0),
    );
    let mut failures = Vec::new();
    let mut passed = 0;
    let checks = [
        ("root", root, (5, 31)),
        ("FROM", spans.first().copied().unwrap_or_default(), (5, 5)),
        ("ENV", spans.get(1).copied().unwrap_or_default(), (11, 12)),
        ("RUN", spans.get(2).copied().unwrap_or_default(), (17, 31)),
    ];
    for (what, got, want) in checks {
        if got == want {
            passed += 1;
        } else {
            failures.push(format!("{what}: lines {got:?}, expected {want:?}"));
        }
    }
    if spans.len() != 3 {
        failures.push(format!("expected 3 instructions, got {}", spans.len()));
    }
    report("buildkit-parser testfile-line", passed, &failures);
}

/// `envVarTest`: `TAG|INPUT|EXPECTED`, expanded as one word in a fixed environment.
#[test]
fn buildkit_shell_env_var_test() {
    let shared = shared_or_skip!("buildkit-shell envVarTest");
    let text = fs::read_to_string(shared.join("conformance/buildkit-shell/envVarTest"))
        .expect("envVarTest");
    let env = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ];
    let mut passed = 0;
    let mut skipped_windows = 0;
    let mut failures = Vec::new();
    for (no, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        let [tag, input, expected] = fields.as_slice() else {
            failures.push(format!("line {}: malformed: {line}", no + 1));
            continue;
        };
        match *tag {
            "A" | "U" => {}
            "W" => {
                skipped_windows += 1;
                continue;
            }
            other => {
                failures.push(format!("line {}: unknown tag {other}", no + 1));
                continue;
            }
        }
        let got = expand_word(input, &env, '\\');
        let ok = match (&got, *expected) {
            (Err(_), "error") => true,
            (Ok(e), exp) => exp != "error" && e.value == exp,
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                no + 1
            ));
        }
    }
    println!(
        "conformance: buildkit-shell envVarTest: {skipped_windows} Windows-only (W) lines not run"
    );
    report("buildkit-shell envVarTest", passed, &failures);
}

/// `wordsTest`: `INPUT|WORD1,WORD2,...` with `ENV KEY=VALUE` lines accumulating.
#[test]
fn buildkit_shell_words_test() {
    let shared = shared_or_skip!("buildkit-shell wordsTest");
    let text =
        fs::read_to_string(shared.join("conformance/buildkit-shell/wordsTest")).expect("wordsTest");
    let mut env: Vec<(String, String)> = Vec::new();
    let mut passed = 0;
    let mut failures = Vec::new();
    for (no, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start_matches(' ');
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            failures.push(format!("line {}: malformed: {line:?}", no + 1));
            continue;
        };
        let input = input.trim();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let got = expand_words(input, &env, '\\');
        let ok = match (&got, expected.as_slice()) {
            (Err(_), ["error"]) => true,
            (Ok(e), exp) => e.words == exp,
            _ => false,
        };
        if ok {
            passed += 1;
        } else {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                no + 1
            ));
        }
    }
    report("buildkit-shell wordsTest", passed, &failures);
}
