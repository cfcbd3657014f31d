//! Parser directives: `# syntax=`, `# escape=` and `# check=` at the top of the file.

use crate::error::ParseError;

/// The parser directives found at the top of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// The escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// The `syntax` directive's value (a frontend image reference), if present.
    pub syntax: Option<String>,
    /// The `check` directive, parsed.
    pub check: CheckDirective,
    /// Every directive as written, in file order.
    pub all: Vec<Directive>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: CheckDirective::default(),
            all: Vec::new(),
        }
    }
}

/// One parser directive line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The directive name, lower-cased (`escape`, `syntax`, `check`).
    pub name: String,
    /// Its value, trimmed.
    pub value: String,
    /// The line it sits on (1-based).
    pub line: usize,
}

/// The `# check=` directive: which lint rules to skip and whether lints fail the build.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckDirective {
    /// `skip=all`: no rule runs.
    pub skip_all: bool,
    /// `skip=RuleA,RuleB`: these rules do not run.
    pub skip: Vec<String>,
    /// `error=true`: any lint makes the build fail.
    pub error: bool,
    /// `experimental=all`: experimental rules run too.
    pub experimental_all: bool,
    /// `experimental=RuleA,...`: these experimental rules run.
    pub experimental: Vec<String>,
}

impl CheckDirective {
    /// Whether `rule` is switched off by this directive.
    pub fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.iter().any(|r| r == rule)
    }

    /// Parse a `check` value such as `skip=JSONArgsRecommended,StageNameCasing;error=true`.
    pub(crate) fn parse(value: &str) -> Result<CheckDirective, String> {
        let value = value.trim();
        let mut out = CheckDirective::default();
        if value.is_empty() {
            return Ok(out);
        }
        // BuildKit splits into at most three options.
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!(
                    "invalid check option `{part}`, expected `skip=<rules>|all`, `error=<bool>` or `experimental=<rules>|all`"
                ));
            };
            let v = v.trim();
            match k.trim() {
                "skip" => {
                    if v == "all" {
                        out.skip_all = true;
                    } else {
                        out.skip = v.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "experimental" => {
                    if v == "all" {
                        out.experimental_all = true;
                    } else {
                        out.experimental = v.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "error" => {
                    out.error = parse_go_bool(v).ok_or_else(|| {
                        format!(
                            "invalid value `{v}` for check option `error`, expected true or false"
                        )
                    })?;
                }
                other => {
                    return Err(format!(
                        "invalid check option `{other}`, expected `skip`, `error` or `experimental`"
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Tracks the directive block at the top of the file while lines are read.
pub(crate) struct DirectiveScanner {
    pub(crate) directives: Directives,
    done: bool,
}

impl DirectiveScanner {
    pub(crate) fn new() -> Self {
        DirectiveScanner {
            directives: Directives::default(),
            done: false,
        }
    }

    /// Look at one line (already stripped of its line ending and, for the first line of
    /// an instruction, of leading whitespace). The first line that is not a known
    /// directive ends the block for good.
    pub(crate) fn line(
        &mut self,
        text: &str,
        line: usize,
        column: usize,
    ) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = match_directive(text) else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        let err = |message: String| ParseError::Directive {
            line,
            column,
            text: text.to_string(),
            message,
        };
        if self.directives.all.iter().any(|d| d.name == name) {
            return Err(err(format!(
                "only one {name} parser directive can be used, expected it once at the top of the file"
            )));
        }
        match name.as_str() {
            "escape" => match value {
                "\\" => self.directives.escape = '\\',
                "`" => self.directives.escape = '`',
                _ => {
                    return Err(err(format!(
                        "invalid escape token `{value}`, expected ` or \\"
                    )))
                }
            },
            "syntax" => self.directives.syntax = Some(value.to_string()),
            _ => self.directives.check = CheckDirective::parse(value).map_err(err)?,
        }
        self.directives.all.push(Directive {
            name,
            value: value.to_string(),
            line,
        });
        Ok(())
    }
}

/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` with Go's `\s` (`[\t\n\f\r ]`).
fn match_directive(text: &str) -> Option<(&str, &str)> {
    let is_s = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let rest = text.strip_prefix('#')?.trim_start_matches(is_s);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(is_s).strip_prefix('=')?;
    let value = rest.trim_matches(is_s);
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_regex() {
        assert_eq!(match_directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(match_directive("#ESCAPE = \\ "), Some(("ESCAPE", "\\")));
        assert_eq!(
            match_directive("# syntax=docker/dockerfile:1"),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("# key1=value"), Some(("key1", "value")));
        assert_eq!(match_directive("# 1key=value"), None);
        assert_eq!(match_directive("# escape="), None);
        assert_eq!(match_directive("# escape"), None);
        assert_eq!(match_directive("# just a comment"), None);
        assert_eq!(match_directive("FROM x"), None);
    }

    #[test]
    fn check_values() {
        let c =
            CheckDirective::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, vec!["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(c.skips("StageNameCasing"));
        assert!(!c.skips("UndefinedVar"));
        assert!(CheckDirective::parse("skip=all").unwrap().skip_all);
        assert!(CheckDirective::parse("error=maybe").is_err());
        assert!(CheckDirective::parse("frobnicate=1").is_err());
        assert!(CheckDirective::parse("skip").is_err());
    }

    #[test]
    fn scanner_rules() {
        let mut s = DirectiveScanner::new();
        s.line("# syntax=docker/dockerfile:1", 1, 1).unwrap();
        s.line("# escape=`", 2, 1).unwrap();
        assert!(s.line("# escape=\\", 3, 1).is_err());
        let mut s = DirectiveScanner::new();
        s.line("# hello", 1, 1).unwrap();
        s.line("# escape=`", 2, 1).unwrap();
        assert_eq!(s.directives.escape, '\\');
        let mut s = DirectiveScanner::new();
        assert!(s.line("# escape=x", 1, 1).is_err());
    }
}
