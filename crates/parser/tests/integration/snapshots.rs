//! Snapshots of our own test Dockerfiles (`testdata/`): the dump and typed AST of each
//! file in `testdata/ast`, the lint output of each file in `testdata/lint`, and the error
//! message for a table of invalid inputs.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use strata_parser::shell::NoEnv;

fn testdata(dir: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(&p).expect("testdata file");
            (name, text)
        })
        .collect()
}

#[test]
fn typed_ast_of_representative_files() {
    let files = testdata("ast");
    assert!(files.len() >= 12, "a dozen representative files");
    for (name, text) in files {
        let dump = strata_parser::dump(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let df = strata_parser::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let snapshot = format!(
            "---- source ----\n{text}\n---- dump ----\n{dump}\n\n---- typed ----\n{df:#?}\n"
        );
        insta::assert_snapshot!(
            format!("ast__{}", name.trim_end_matches(".Dockerfile")),
            snapshot
        );
    }
}

fn lint_text(name: &str, text: &str) -> String {
    let mut out = String::new();
    match strata_parser::lint::lint_source(text) {
        Ok(lints) => {
            for l in lints {
                let _ = writeln!(
                    out,
                    "{name}:{}:{}: {}[{}]: {}\n  fix: {}",
                    l.span.start_line, l.span.start_col, l.severity, l.rule, l.message, l.fix
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "{name}: parse error: {e}");
        }
    }
    out
}

#[test]
fn lint_output() {
    for (name, text) in testdata("lint") {
        let snapshot = format!(
            "---- source ----\n{text}\n---- lints ----\n{}",
            lint_text(&name, &text)
        );
        insta::assert_snapshot!(
            format!("lint__{}", name.trim_end_matches(".Dockerfile")),
            snapshot
        );
    }
}

#[test]
fn lint_layer_limits() {
    // 90 layers in a base stage, 40 more on top: layer 101 warns, layer 129 fails.
    let mut src = String::from("FROM scratch AS base\n");
    for i in 0..90 {
        src.push_str(&format!("COPY part{i} /parts/\n"));
    }
    src.push_str("FROM base AS app\n");
    for i in 0..40 {
        src.push_str(&format!("RUN --mount=type=cache,target=/c step{i}\n"));
    }
    let lints = strata_parser::lint::lint_source(&src).expect("parses");
    let layer_lints: Vec<String> = lints
        .iter()
        .filter(|l| l.rule == "TooManyLayers")
        .map(|l| {
            format!(
                "{}:{}: {}[{}]: {}",
                l.span.start_line, l.span.start_col, l.severity, l.rule, l.message
            )
        })
        .collect();
    insta::assert_snapshot!("lint__too_many_layers", layer_lints.join("\n"));
}

/// Inputs that must fail, each with the message it gets.
const BAD: &[(&str, &str)] = &[
    (
        "unknown instruction, close to one",
        "FROM alpine\nFORM scratch\n",
    ),
    ("unknown instruction", "FROM alpine\nBANANA split\n"),
    ("FROM arity", "FROM alpine extra\n"),
    ("invalid stage name", "FROM alpine AS 1st\n"),
    (
        "duplicate stage name",
        "FROM alpine AS base\nFROM debian AS Base\n",
    ),
    (
        "unknown flag, close to one",
        "FROM alpine\nCOPY --form=build /a /b\n",
    ),
    (
        "flag on an instruction without flags",
        "FROM alpine\nWORKDIR --parents /a\n",
    ),
    ("bad boolean flag", "FROM alpine\nCOPY --link=maybe /a /b\n"),
    (
        "string flag without value",
        "FROM alpine\nCOPY --chown /a /b\n",
    ),
    (
        "duplicate flag",
        "FROM alpine\nCOPY --chown=a --chown=b /a /b\n",
    ),
    ("SHELL not JSON", "FROM alpine\nSHELL /bin/bash -c\n"),
    ("JSON with a number", "FROM alpine\nCMD [\"echo\", 1]\n"),
    ("ENV without value", "FROM alpine\nENV PATH\n"),
    ("ENV pair without =", "FROM alpine\nENV a=1 b\n"),
    ("ENV blank name", "FROM alpine\nENV =x\n"),
    ("COPY without destination", "FROM alpine\nCOPY onlyone\n"),
    (
        "heredoc as destination",
        "FROM alpine\nCOPY a <<EOF\nbody\nEOF\n",
    ),
    (
        "unterminated heredoc",
        "FROM alpine\nRUN <<EOF\necho never ends\n",
    ),
    (
        "unknown mount type",
        "FROM alpine\nRUN --mount=type=cahce,target=/x true\n",
    ),
    (
        "unknown mount key",
        "FROM alpine\nRUN --mount=type=cache,traget=/x true\n",
    ),
    (
        "variable in mount from",
        "FROM alpine\nRUN --mount=from=$STAGE,target=/x true\n",
    ),
    (
        "secret mount without id",
        "FROM alpine\nRUN --mount=type=secret true\n",
    ),
    ("bad network", "FROM alpine\nRUN --network=bridge true\n"),
    (
        "duration without unit",
        "FROM alpine\nHEALTHCHECK --interval=5 CMD true\n",
    ),
    (
        "duration below 1ms",
        "FROM alpine\nHEALTHCHECK --timeout=10us CMD true\n",
    ),
    (
        "negative retries",
        "FROM alpine\nHEALTHCHECK --retries=-1 CMD true\n",
    ),
    (
        "unknown healthcheck type",
        "FROM alpine\nHEALTHCHECK CONNECT tcp 80\n",
    ),
    (
        "HEALTHCHECK CMD without command",
        "FROM alpine\nHEALTHCHECK CMD\n",
    ),
    (
        "HEALTHCHECK NONE with arguments",
        "FROM alpine\nHEALTHCHECK NONE please\n",
    ),
    ("bad port", "FROM alpine\nEXPOSE 80 http\n"),
    ("bad port range", "FROM alpine\nEXPOSE 9000-8000\n"),
    ("bad signal", "FROM alpine\nSTOPSIGNAL SIGNOPE\n"),
    ("USER without argument", "FROM alpine\nUSER\n"),
    ("empty volume", "FROM alpine\nVOLUME [\"\"]\n"),
    ("ARG blank name", "FROM alpine\nARG =value\n"),
    ("ONBUILD ONBUILD", "FROM alpine\nONBUILD ONBUILD RUN true\n"),
    ("ONBUILD FROM", "FROM alpine\nONBUILD FROM debian\n"),
    ("instruction before FROM", "RUN true\nFROM alpine\n"),
    ("only global ARGs", "ARG VERSION=1\n"),
    ("empty file", ""),
    ("only comments", "# nothing\n\n# here\n"),
    ("bad escape directive", "# escape=x\nFROM alpine\n"),
    (
        "repeated directive",
        "# escape=`\n# escape=\\\nFROM alpine\n",
    ),
    ("bad check directive", "# check=skip\nFROM alpine\n"),
    (
        "continued error line",
        "FROM alpine\nRUN echo \\\n  ok\nCOPY --chmod=755 \\\n     --frm=x a b\n",
    ),
];

#[test]
fn error_messages() {
    let mut out = String::new();
    for (what, src) in BAD {
        let err = strata_parser::parse(src).expect_err(what);
        let _ = writeln!(out, "{what}:\n  {err}");
    }
    let long = format!("FROM alpine\nRUN echo {}\n", "x".repeat(70_000));
    let _ = writeln!(
        out,
        "line too long:\n  {}",
        strata_parser::parse(&long).expect_err("too long")
    );
    // Errors that need more than the file.
    let df = strata_parser::parse("FROM alpine AS build\nFROM build AS test\n").expect("parses");
    let _ = writeln!(
        out,
        "unknown target:\n  {}",
        df.target(Some("tset")).expect_err("no such stage")
    );
    let df = strata_parser::parse("FROM alpine\nWORKDIR ${APP_DIR:?must be set}\nSTOPSIGNAL $SIG\nCOPY ${SRC:-\x27unterminated} /dst\n").expect("parses");
    for i in &df.stages[0].instructions {
        let err = i.expand(&NoEnv, '\\').expect_err("expansion fails");
        let _ = writeln!(out, "expansion of `{}`:\n  {err}", i.original);
    }
    insta::assert_snapshot!("error_messages", out);
}

#[test]
fn every_error_names_a_position() {
    for (what, src) in BAD {
        let err = strata_parser::parse(src).expect_err(what);
        let positionless = matches!(
            err,
            strata_parser::ParseError::NoInstructions | strata_parser::ParseError::NoStages
        );
        assert!(positionless || err.line().is_some(), "{what}: {err}");
        assert!(positionless || err.column().is_some(), "{what}: {err}");
    }
}
