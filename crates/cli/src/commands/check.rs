//! `strata build --check`: the builder's checks without building, printed as `strata lint`
//! prints lints (`file:line:col: severity[rule]: message` and a `fix:` line; a JSON array
//! with `--progress=json`), the counts on standard error, exit 1 when any is an error.

use std::process::ExitCode;

use strata_builder::check::{check, errors, Finding, Level};
use strata_builder::BuildOptions;

use crate::global::GlobalArgs;
use crate::ui::out::{out, outln};

/// Runs the checks of the build `opts` describes and prints them.
pub fn run(global: &GlobalArgs, opts: &BuildOptions, json: bool) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let findings = check(&store, opts)?;
    let name = opts
        .dockerfile_path
        .as_ref()
        .map_or_else(|| "-".to_string(), |p| p.display().to_string());
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&to_json(&name, &findings))?
        )?;
    } else {
        out!("{}", render(&name, &findings))?;
        eprintln!("{}", counts(&name, &findings));
    }
    Ok(if errors(&findings) > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The text lines: one per finding, then its fix.
pub fn render(name: &str, findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        match f.span {
            Some(s) => out.push_str(&format!(
                "{name}:{}:{}: {}[{}]: {}\n",
                s.start_line, s.start_col, f.level, f.rule, f.message
            )),
            None => out.push_str(&format!("{name}: {}[{}]: {}\n", f.level, f.rule, f.message)),
        }
        out.push_str(&format!("  fix: {}\n", f.fix));
    }
    out
}

/// `Dockerfile: 1 error(s), 2 warning(s), 1 info`.
fn counts(name: &str, findings: &[Finding]) -> String {
    let n = |level| findings.iter().filter(|f| f.level == level).count();
    format!(
        "{name}: {} error(s), {} warning(s), {} info",
        n(Level::Error),
        n(Level::Warning),
        n(Level::Info)
    )
}

/// The same keys as `strata lint --format json`; `line` and `column` are null for findings
/// about the build rather than a line.
fn to_json(name: &str, findings: &[Finding]) -> Vec<serde_json::Value> {
    findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "file": name,
                "rule": f.rule,
                "severity": f.level.to_string(),
                "line": f.span.map(|s| s.start_line),
                "column": f.span.map(|s| s.start_col),
                "end_line": f.span.map(|s| s.end_line),
                "end_column": f.span.map(|s| s.end_col),
                "message": f.message,
                "fix": f.fix,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use strata_parser::Span;

    use super::*;

    #[test]
    fn findings_print_like_lints() {
        let findings = [
            Finding {
                rule: "UnusedBuildArg",
                level: Level::Warning,
                span: None,
                message: "build arg(s) X are not declared".into(),
                fix: "drop it".into(),
            },
            Finding {
                rule: "UnreachableStage",
                level: Level::Info,
                span: Some(Span {
                    start_line: 3,
                    start_col: 1,
                    end_line: 3,
                    end_col: 12,
                }),
                message: "stage test is not needed".into(),
                fix: "build it with `--target test`".into(),
            },
        ];
        insta::assert_snapshot!(render("ctx/Dockerfile", &findings), @r###"
        ctx/Dockerfile: warning[UnusedBuildArg]: build arg(s) X are not declared
          fix: drop it
        ctx/Dockerfile:3:1: info[UnreachableStage]: stage test is not needed
          fix: build it with `--target test`
        "###);
        assert_eq!(
            counts("Dockerfile", &findings),
            "Dockerfile: 0 error(s), 1 warning(s), 1 info"
        );
        let json = to_json("Dockerfile", &findings);
        assert_eq!(json[0]["line"], serde_json::Value::Null);
        assert_eq!(json[1]["line"], 3);
        assert_eq!(json[1]["severity"], "info");
    }
}
