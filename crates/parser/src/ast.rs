//! The first level: the raw node tree, as BuildKit's `parser` package builds it.
//!
//! Lines are read, directives recognised, continuations joined, comments dropped,
//! heredoc bodies collected, and each logical line becomes a [`Node`]: its keyword, its
//! leading `--flags`, and its arguments split the way the keyword's line parser splits
//! them (JSON array, whitespace words, quote-aware words, key/value triples, one string).
//! Nothing is validated beyond what BuildKit's parser validates; [`Ast::dump`] prints the
//! tree in the exact format of BuildKit's parser test `result` files.

use std::borrow::Cow;
use std::ops::Range;

use crate::directives::{DirectiveScanner, Directives};
use crate::error::ParseError;
use crate::heredoc::{heredocs_from_line, Heredoc};
use crate::json::{parse_json_array, JsonArray};
use crate::quote::go_quote_into;
use crate::span::Span;
use crate::words::{extract_flags, parse_words, split_keyword, split_ws, split_ws_once};

/// BuildKit's scanner refuses physical lines that do not fit 64 KiB.
pub const MAX_LINE_LEN: usize = 65535;

/// ONBUILD nests instructions; deeper chains than this are refused rather than recursed.
const MAX_NESTING: usize = 32;

/// The raw parse of a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// The instructions in file order.
    pub nodes: Vec<Node>,
    /// The parser directives at the top of the file.
    pub directives: Directives,
    /// Parse warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub span: Span,
    /// The lint rule it corresponds to (`NoEmptyContinuation`).
    pub rule: &'static str,
    /// What.
    pub message: String,
}

/// One instruction as the line parser saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword exactly as written (`RUN`, `run`, `Run`).
    pub keyword: String,
    /// The leading `--flags`, quotes removed (`--mount=type=cache,target=/x`).
    pub flags: Vec<String>,
    /// The arguments, split the way this keyword splits them. For ENV and LABEL a flat
    /// list of `key, value, separator` triples; for an unknown keyword one empty string.
    pub args: Vec<String>,
    /// ONBUILD's nested instruction.
    pub child: Option<Box<Node>>,
    /// Whether the arguments were a JSON array (exec form).
    pub json: bool,
    /// Heredoc bodies that follow the instruction line (RUN, COPY, ADD).
    pub heredocs: Vec<Heredoc>,
    /// The logical line: continuations joined, comments dropped, trimmed.
    pub original: String,
    /// Lines and columns, heredoc bodies and blank/comment lines inside a continuation
    /// included.
    pub span: Span,
    /// Byte range of the instruction's physical lines in the source.
    pub source_range: Range<usize>,
    /// The comment lines directly above the instruction (no blank line in between),
    /// without their `#`, trimmed.
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword lower-cased, which is how instructions are matched.
    pub fn keyword_lower(&self) -> String {
        lower(&self.keyword)
    }

    /// This node in the dump format (one line, without the surrounding parentheses of
    /// the root's children).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        self.dump_into(&mut out);
        out
    }

    fn dump_into(&self, out: &mut String) {
        let start = out.len();
        out.push_str(&lower(&self.keyword));
        if !self.flags.is_empty() {
            out.push_str(" [");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_quote_into(out, f);
            }
            out.push(']');
        }
        if let Some(child) = &self.child {
            out.push_str(" (");
            child.dump_into(out);
            out.push(')');
        }
        for a in &self.args {
            out.push(' ');
            go_quote_into(out, a);
        }
        // Upstream trims the assembled text (only matters for an empty keyword).
        let trimmed_len = out[start..].trim_start().len();
        let lead = out.len() - start - trimmed_len;
        if lead > 0 {
            out.drain(start..start + lead);
        }
    }

    /// Whether the keyword is `word` (ASCII, lower-case), ignoring case as BuildKit does.
    pub(crate) fn is(&self, word: &str) -> bool {
        keyword_is(&self.keyword, word)
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match &self.child {
            Some(child) if self.is("onbuild") => child.as_ref(),
            _ => self,
        };
        (node.is("add") || node.is("copy") || node.is("run")) && !node.json
    }
}

impl Ast {
    /// The whole tree in BuildKit's dump format: one line per instruction, no trailing
    /// newline (the upstream test compares `dump + "\n"` with its `result` file).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push('(');
            n.dump_into(&mut out);
            out.push(')');
        }
        out
    }
}

/// Case-insensitive keyword match without allocating (Unicode case folding only for the
/// rare non-ASCII keyword).
pub(crate) fn keyword_is(keyword: &str, word: &str) -> bool {
    if keyword.is_ascii() {
        keyword.eq_ignore_ascii_case(word)
    } else {
        keyword.to_lowercase() == word
    }
}

fn lower(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Parse the text of a Dockerfile into the raw node tree.
pub fn parse(src: &str) -> Result<Ast, ParseError> {
    let mut lines = Lines::new(src);
    let mut dirs = DirectiveScanner::new();
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();

    while let Some(first) = lines.next()? {
        let content = first.content;
        let trimmed = content.trim_start();
        let lead = content.len() - trimmed.len();
        let start_col = content[..lead].chars().count() + 1;
        dirs.line(trimmed, first.no, start_col)?;
        let escape = dirs.directives.escape;
        if let Some(comment) = trimmed.strip_prefix('#') {
            comments.push(comment.trim().to_string());
            continue;
        }
        if trimmed.is_empty() {
            comments.clear();
            continue;
        }
        let (piece, mut at_end) = trim_continuation(trimmed, escape);
        // Most instructions are one physical line: borrow it instead of copying.
        let mut line: Cow<'_, str> = Cow::Borrowed(piece);
        let mut end = (first.no, content, first.range.end);
        let mut empty_continuation = false;
        while !at_end {
            let Some(next) = lines.next()? else { break };
            end = (next.no, next.content, next.range.end);
            let t = next.content.trim_start();
            if t.starts_with('#') {
                continue;
            }
            if t.is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, e) = trim_continuation(next.content, escape);
            line.to_mut().push_str(piece);
            at_end = e;
        }

        let located = |r: RawError, end_line: usize| -> ParseError {
            let (l, c) =
                locate(src, first.range.start, end_line, &r.found).unwrap_or((first.no, start_col));
            r.into_error(l, c)
        };
        let mut node = parse_line(&line, escape, 0).map_err(|r| located(r, end.2))?;

        if node.can_contain_heredoc() && line.contains("<<") {
            let mut docs = heredocs_from_line(&line).map_err(|message| {
                located(
                    RawError {
                        keyword: node.keyword.clone(),
                        problem: message,
                        found: line.to_string(),
                        expected: "a heredoc marker such as <<EOF".into(),
                    },
                    end.2,
                )
            })?;
            for doc in &mut docs {
                let mut body = String::new();
                let mut terminated = false;
                while let Some(b) = lines.next()? {
                    end = (b.no, b.content, b.range.end);
                    let mut candidate = b.raw.trim_end_matches(['\r', '\n']);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    body.push_str(b.raw);
                }
                if !terminated {
                    return Err(ParseError::UnterminatedHeredoc {
                        line: first.no,
                        column: start_col,
                        name: doc.name.clone(),
                    });
                }
                doc.content = body;
            }
            node.heredocs = docs;
        }

        let span = Span {
            start_line: first.no,
            start_col,
            end_line: end.0,
            end_col: end.1.chars().count() + 1,
        };
        if empty_continuation {
            warnings.push(Warning {
                span,
                rule: "NoEmptyContinuation",
                message: format!("Empty continuation line found in: {}", line.trim()),
            });
        }
        node.set_position(
            span,
            first.range.start..end.2,
            std::mem::take(&mut comments),
        );
        nodes.push(node);
    }

    if nodes.is_empty() {
        return Err(ParseError::NoInstructions);
    }
    Ok(Ast {
        nodes,
        directives: dirs.directives,
        warnings,
    })
}

impl Node {
    fn set_position(&mut self, span: Span, range: Range<usize>, comments: Vec<String>) {
        self.span = span;
        self.source_range = range.clone();
        self.comments = comments;
        if let Some(child) = &mut self.child {
            child.set_position(span, range, Vec::new());
        }
    }
}

/// Strip a trailing continuation escape (and the blanks after it). Returns the text and
/// whether the logical line ends here. An escape preceded by another escape does not
/// continue (so `foo \\\` does not continue either, as upstream admits).
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let Some(before) = t.strip_suffix(escape) else {
        return (line, true);
    };
    if before.is_empty() {
        return ("", false);
    }
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// What a line parser can complain about, located later.
pub(crate) struct RawError {
    keyword: String,
    problem: String,
    found: String,
    expected: String,
}

impl RawError {
    fn into_error(self, line: usize, column: usize) -> ParseError {
        ParseError::Invalid {
            line,
            column,
            instruction: self.keyword.to_uppercase(),
            problem: self.problem,
            found: self.found,
            expected: self.expected,
        }
    }
}

/// Find `needle` in the source between `start` and `end` and return its line and column.
pub(crate) fn locate(src: &str, start: usize, end: usize, needle: &str) -> Option<(usize, usize)> {
    if needle.is_empty() {
        return None;
    }
    let hay = src.get(start..end)?;
    let at = start + hay.find(needle)?;
    let before = &src[..at];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let mut col = src[line_start..at].chars().count() + 1;
    if line == 1 && src.starts_with('\u{feff}') {
        col -= 1;
    }
    Some((line, col))
}

/// Split one logical line into a node.
fn parse_line(line: &str, escape: char, depth: usize) -> Result<Node, RawError> {
    let (keyword, rest) = split_keyword(line);
    let (flags, rest) = if rest.is_empty() {
        (Vec::new(), "")
    } else {
        extract_flags(rest)
    };
    let rest = rest.trim();
    let mut node = Node {
        keyword: keyword.to_string(),
        flags,
        args: Vec::new(),
        child: None,
        json: false,
        heredocs: Vec::new(),
        original: line.trim().to_string(),
        span: Span::default(),
        source_range: 0..0,
        comments: Vec::new(),
    };
    let err = |problem: &str, found: &str, expected: &str| RawError {
        keyword: keyword.to_string(),
        problem: problem.to_string(),
        found: found.to_string(),
        expected: expected.to_string(),
    };
    let not_strings = || {
        err(
            "when using JSON array syntax, arrays must be comprised of strings only",
            rest,
            "a JSON array of strings such as [\"executable\", \"arg\"]",
        )
    };
    let kw = KeywordBuf::new(keyword);
    match kw.as_str() {
        "add" | "copy" | "volume" => match parse_json_array(rest) {
            JsonArray::Strings(v) => {
                node.args = v;
                node.json = true;
            }
            JsonArray::NotAllStrings => return Err(not_strings()),
            JsonArray::NotJson => node.args = split_ws(rest),
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            if !rest.is_empty() {
                match parse_json_array(rest) {
                    JsonArray::Strings(v) => {
                        node.args = v;
                        node.json = true;
                    }
                    JsonArray::NotAllStrings => return Err(not_strings()),
                    JsonArray::NotJson => node.args = vec![rest.to_string()],
                }
            }
        }
        "arg" => {
            node.args = parse_words(rest, escape)
                .into_iter()
                .map(str::to_string)
                .collect()
        }
        "env" | "label" => {
            let words = parse_words(rest, escape);
            if let Some(first) = words.first() {
                if !first.contains('=') {
                    let Some((k, v)) = split_ws_once(rest) else {
                        return Err(err(
                            &format!("{} must have two arguments", keyword.to_uppercase()),
                            rest,
                            &format!("`{} <key>=<value>`", keyword.to_uppercase()),
                        ));
                    };
                    node.args = vec![k.to_string(), v.to_string(), String::new()];
                } else {
                    node.args.reserve(words.len() * 3);
                    for w in words {
                        let Some((k, v)) = w.split_once('=') else {
                            return Err(err(
                                "syntax error - can't find = in word",
                                w,
                                "every word to be of the form name=value",
                            ));
                        };
                        node.args.push(k.to_string());
                        node.args.push(v.to_string());
                        node.args.push("=".to_string());
                    }
                }
            }
        }
        "expose" | "from" => node.args = split_ws(rest),
        "healthcheck" => {
            if !rest.is_empty() {
                let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let typ = &rest[..sep];
                let cmd = rest[sep..].trim_start();
                node.args.push(typ.to_string());
                if !cmd.is_empty() {
                    match parse_json_array(cmd) {
                        JsonArray::Strings(v) => {
                            node.args.extend(v);
                            node.json = true;
                        }
                        JsonArray::NotAllStrings => return Err(not_strings()),
                        JsonArray::NotJson => node.args.push(cmd.to_string()),
                    }
                }
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args.push(rest.to_string());
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                if depth >= MAX_NESTING {
                    return Err(err(
                        "too many nested ONBUILD instructions",
                        rest,
                        "a single ONBUILD around an ordinary instruction",
                    ));
                }
                node.child = Some(Box::new(parse_line(rest, escape, depth + 1)?));
            }
        }
        // Unknown instructions pass the first level untouched; the second level names them.
        _ => node.args.push(String::new()),
    }
    Ok(node)
}

/// A lower-cased keyword, on the stack when short (no allocation per instruction).
pub(crate) enum KeywordBuf {
    Inline([u8; 16], usize),
    Heap(String),
}

impl KeywordBuf {
    pub(crate) fn new(keyword: &str) -> KeywordBuf {
        if keyword.is_ascii() && keyword.len() <= 16 {
            let mut buf = [0u8; 16];
            buf[..keyword.len()].copy_from_slice(keyword.as_bytes());
            buf[..keyword.len()].make_ascii_lowercase();
            KeywordBuf::Inline(buf, keyword.len())
        } else {
            KeywordBuf::Heap(lower(keyword))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            KeywordBuf::Inline(b, n) => std::str::from_utf8(&b[..*n]).unwrap_or(""),
            KeywordBuf::Heap(s) => s,
        }
    }
}

/// One physical line.
struct Line<'a> {
    /// 1-based line number.
    no: usize,
    /// The line including its `\n`.
    raw: &'a str,
    /// The line without trailing CR/LF characters (and without a leading BOM on line 1).
    content: &'a str,
    /// Byte range of `raw` in the source.
    range: Range<usize>,
}

struct Lines<'a> {
    src: &'a str,
    pos: usize,
    no: usize,
}

impl<'a> Lines<'a> {
    fn new(src: &'a str) -> Self {
        Lines { src, pos: 0, no: 0 }
    }

    fn next(&mut self) -> Result<Option<Line<'a>>, ParseError> {
        if self.pos >= self.src.len() {
            return Ok(None);
        }
        let rest = &self.src[self.pos..];
        let len = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
        let raw = &rest[..len];
        let start = self.pos;
        self.pos += len;
        self.no += 1;
        let without_nl = raw.strip_suffix('\n').unwrap_or(raw);
        if without_nl.len() > MAX_LINE_LEN {
            return Err(ParseError::LineTooLong {
                line: self.no,
                len: without_nl.len(),
            });
        }
        let mut end = raw.len();
        while end > 0 && matches!(raw.as_bytes()[end - 1], b'\r' | b'\n') {
            end -= 1;
        }
        let mut content = &raw[..end];
        if self.no == 1 {
            content = content.strip_prefix('\u{feff}').unwrap_or(content);
        }
        Ok(Some(Line {
            no: self.no,
            raw,
            content,
            range: start..self.pos,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(src: &str) -> String {
        parse(src).unwrap().dump()
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\  \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("  \\", '\\'), ("  ", false));
        assert_eq!(trim_continuation("a \\\\", '\\'), ("a \\\\", true));
        assert_eq!(trim_continuation("a \\\\\\", '\\'), ("a \\\\\\", true));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }

    #[test]
    fn small_cases() {
        assert_eq!(
            dump("FROM x\nRUN a \\\n  b"),
            "(from \"x\")\n(run \"a   b\")"
        );
        assert_eq!(dump("FOO bar baz"), "(foo \"\")");
        assert_eq!(
            dump("onbuild onbuild run x"),
            "(onbuild (onbuild (run \"x\")))"
        );
        assert_eq!(dump("ENV\nONBUILD\nCMD []"), "(env)\n(onbuild)\n(cmd)");
        assert_eq!(dump("\u{feff}FROM x"), "(from \"x\")");
        assert_eq!(dump("FROM x\r\nRUN y\r\n"), "(from \"x\")\n(run \"y\")");
        // Upstream's inline expectations: legacy LABEL gives the `key value ""` triple,
        // legacy ENV without a value fails, a bare ENV has no arguments.
        assert_eq!(dump("LABEL foo bar"), "(label \"foo\" \"bar\" \"\")");
        assert!(parse("ENV foo").is_err());
        assert_eq!(dump("ENV"), "(env)");
        assert_eq!(
            dump("ONBUILD --x COPY --from=a b c"),
            "(onbuild [\"--x\"] (copy [\"--from=a\"] \"b\" \"c\"))"
        );
        assert!(matches!(parse(""), Err(ParseError::NoInstructions)));
        assert!(matches!(parse("# c\n\n"), Err(ParseError::NoInstructions)));
    }

    #[test]
    fn heredoc_bodies_from_upstream_test() {
        let src = "\nFROM alpine:3.6\n\nENV NAME=me\n\nRUN ls\n\nUSER <<INVALID\nINVALID\n\nRUN <<EMPTY\nEMPTY\n\nRUN 3<<EMPTY2\nEMPTY2\n\nRUN \"<<NOHEREDOC\"\n\nRUN <<INDENT\n\tfoo\n\tbar\nINDENT\n\nRUN <<-UNINDENT\n\tbaz\n\tquux\nUNINDENT\n\nRUN <<-UNINDENT2\n\tbaz\n\tquux\n\tUNINDENT2\n\nRUN <<-EXPAND\n\texpand $NAME\nEXPAND\n\nRUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\n\nRUN <<COPY\necho hello world\necho foo bar\nCOPY\n\nRUN <<COMMENT\n# internal comment\necho hello world\necho foo bar # trailing comment\nCOMMENT\n\nRUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n\nCOPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n\nCOPY <<X <<Y /dest\nY\nX\nX\nY\n\t";
        let ast = parse(src).unwrap();
        type Doc = (String, String, bool, bool, Option<u64>);
        let docs: Vec<Vec<Doc>> = ast.nodes[1..]
            .iter()
            .map(|n| {
                n.heredocs
                    .iter()
                    .map(|h| (h.name.clone(), h.content.clone(), h.expand, h.chomp, h.fd))
                    .collect()
            })
            .collect();
        let h = |n: &str, c: &str, e: bool, ch: bool| (n.to_string(), c.to_string(), e, ch, None);
        let expected = vec![
            vec![],
            vec![],
            vec![],
            vec![],
            vec![h("EMPTY", "", true, false)],
            vec![("EMPTY2".to_string(), String::new(), true, false, Some(3))],
            vec![],
            vec![h("INDENT", "\tfoo\n\tbar\n", true, false)],
            vec![h("UNINDENT", "\tbaz\n\tquux\n", true, true)],
            vec![h("UNINDENT2", "\tbaz\n\tquux\n", true, true)],
            vec![h("EXPAND", "\texpand $NAME\n", true, true)],
            vec![h("NOEXPAND", "\tdon't expand $NAME\n", false, true)],
            vec![h("COPY", "echo hello world\necho foo bar\n", true, false)],
            vec![h(
                "COMMENT",
                "# internal comment\necho hello world\necho foo bar # trailing comment\n",
                true,
                false,
            )],
            vec![h("MOUNT", "echo hello\n", true, false)],
            vec![
                h("FILE1", "content 1\n", true, false),
                h("FILE2", "content 2\n", true, false),
            ],
            vec![h("X", "Y\n", true, false), h("Y", "X\n", true, false)],
        ];
        assert_eq!(docs, expected);
    }

    #[test]
    fn json_heredocs_are_not_heredocs() {
        let ast =
            parse("FROM alpine:3.6\n\nRUN [\"whoami\"]\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\n\t")
                .unwrap();
        assert!(ast.nodes.iter().all(|n| n.heredocs.is_empty()));
    }

    #[test]
    fn unterminated_heredoc() {
        let e = parse("FROM x\nRUN <<EOF\necho\n").unwrap_err();
        assert!(
            matches!(e, ParseError::UnterminatedHeredoc { line: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn empty_continuation_warnings() {
        let ast = parse("FROM x\nRUN something \\\n\n    following \\\n\n    more\nRUN another \\\n\n    thing\nRUN non-indented \\\n# comment\ngoodbye\n").unwrap();
        assert_eq!(ast.warnings.len(), 2);
        assert!(ast.warnings[0]
            .message
            .contains("RUN something     following     more"));
        assert!(ast.warnings[1].message.contains("RUN another     thing"));
    }

    #[test]
    fn long_lines() {
        let ok = format!("FROM x\nRUN {}", "a".repeat(MAX_LINE_LEN - 4));
        assert!(parse(&ok).is_ok());
        let long = format!("FROM x\nRUN {}", "a".repeat(MAX_LINE_LEN));
        let e = parse(&long).unwrap_err();
        assert!(e.to_string().contains("max allowed size of 65535"), "{e}");
    }

    #[test]
    fn spans() {
        let ast = parse("# escape=\\\n\n  FROM x\nRUN a \\\n\n  b\n").unwrap();
        assert_eq!(
            ast.nodes[0].span,
            Span {
                start_line: 3,
                start_col: 3,
                end_line: 3,
                end_col: 9
            }
        );
        assert_eq!(
            ast.nodes[1].span,
            Span {
                start_line: 4,
                start_col: 1,
                end_line: 6,
                end_col: 4
            }
        );
    }
}
