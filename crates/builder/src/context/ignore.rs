//! `.dockerignore`: reading the file and matching paths exactly as moby/patternmatcher does.
//!
//! Reading (`ignorefile.ReadAll`): a UTF-8 BOM on the first line is dropped; lines starting
//! with `#` are comments; lines are trimmed; empty ones skipped; a leading `!` marks an
//! exception (trimmed again); the rest is `filepath.Clean`ed and one leading `/` removed.
//!
//! Matching (`PatternMatcher`): each pattern is Go's `filepath.Match` syntax plus `**`
//! (any number of path segments, including none; `**/` is the same as `**`); a pattern that
//! matches a parent directory of a path matches the path; patterns apply in order and the
//! last one that matches decides, `!` patterns re-including. Upstream compiles patterns to
//! Go regular expressions; we interpret the same expressions directly (see [`Pattern`]).

use std::path::{Path, PathBuf};

use super::gopath::{clean, go_match};
use crate::Error;

/// Parses `.dockerignore` content into patterns (exceptions keep their leading `!`).
pub fn parse_ignore_file(content: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in content.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = if i == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// An ignore file that was found, with its patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its patterns, as [`parse_ignore_file`] returns them.
    pub patterns: Vec<String>,
}

/// Finds and reads the ignore file for a build: `<Dockerfile>.dockerignore` next to the
/// Dockerfile when it exists (BuildKit's precedence), else `<context>/.dockerignore`.
/// `None` when neither exists.
pub fn read_ignore_file(
    context: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<IgnoreFile>, Error> {
    let mut candidates = Vec::new();
    if let Some(df) = dockerfile {
        let mut name = df.as_os_str().to_owned();
        name.push(".dockerignore");
        candidates.push(PathBuf::from(name));
    }
    candidates.push(context.join(".dockerignore"));
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let patterns = parse_ignore_file(&text);
                return Ok(Some(IgnoreFile { path, patterns }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(None)
}

/// One element of a pattern's regular expression, as upstream would build it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A literal character.
    Lit(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` at the end after other wildcards: `.*`.
    Rest,
    /// `**` followed by more: `(.*/)?`, nothing or anything ending in `/`.
    Dirs,
    /// `[...]`: a character class (it can match `/`, as in upstream).
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `\d`, `\s`, `\w` and their negations, which the regular expression gives `\d` etc.
    Perl { class: char, negated: bool },
    /// A `^` outside a class: a start anchor in the regular expression.
    Caret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The path equals the pattern.
    Exact,
    /// `dir/**`: the path starts with `dir/`.
    Prefix,
    /// `**` first: the path ends with the rest (or, for `**/x`, is `x`).
    Suffix,
    /// Anything else.
    Tokens(Vec<Tok>),
}

/// One compiled `.dockerignore` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    exclusion: bool,
    kind: Result<Kind, &'static str>,
}

impl Pattern {
    /// The cleaned pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is an exception (`!pattern`).
    pub fn is_exception(&self) -> bool {
        self.exclusion
    }

    /// Whether the pattern matches `path` (a clean, `/`-separated relative path) itself,
    /// without looking at parents.
    pub fn matches(&self, path: &str) -> Result<bool, Error> {
        let kind = self.kind.as_ref().map_err(|reason| Error::BadPattern {
            pattern: self.text.clone(),
            reason,
        })?;
        Ok(match kind {
            Kind::Exact => path == self.text,
            Kind::Prefix => path.starts_with(&self.text[..self.text.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.text[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Tokens(tokens) => run(tokens, path),
        })
    }
}

/// Builds upstream's expression for `pattern` and classifies it the way `compile` does.
fn compile(pattern: &str) -> Result<Kind, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut kind = Kind::Exact;
    let mut i = 0;
    let regexp = |k: &mut Kind| *k = Kind::Tokens(Vec::new());
    while i < chars.len() {
        let first = i == 0;
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        tokens.push(Tok::Rest);
                        regexp(&mut kind);
                    }
                } else {
                    tokens.push(Tok::Dirs);
                    regexp(&mut kind);
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                tokens.push(Tok::Star);
                regexp(&mut kind);
            }
            '?' => {
                tokens.push(Tok::One);
                regexp(&mut kind);
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    tokens.push(escape(next)?);
                    regexp(&mut kind);
                }
                None => tokens.push(Tok::Lit('\\')),
            },
            '[' => {
                let (class, used) = parse_class(&chars[i..])?;
                tokens.push(class);
                i += used;
                regexp(&mut kind);
            }
            ']' => {
                tokens.push(Tok::Lit(']'));
                regexp(&mut kind);
            }
            '^' => tokens.push(Tok::Caret),
            other => tokens.push(Tok::Lit(other)),
        }
    }
    Ok(match kind {
        Kind::Tokens(_) => Kind::Tokens(tokens),
        other => other,
    })
}

/// What `\c` means in a Go regular expression.
fn escape(c: char) -> Result<Tok, &'static str> {
    Ok(match c {
        'd' | 's' | 'w' => Tok::Perl {
            class: c,
            negated: false,
        },
        'D' | 'S' | 'W' => Tok::Perl {
            class: c.to_ascii_lowercase(),
            negated: true,
        },
        't' => Tok::Lit('\t'),
        'n' => Tok::Lit('\n'),
        'r' => Tok::Lit('\r'),
        'f' => Tok::Lit('\u{c}'),
        'v' => Tok::Lit('\u{b}'),
        'a' => Tok::Lit('\u{7}'),
        c if c.is_ascii_punctuation() => Tok::Lit(c),
        _ => return Err("invalid escape sequence"),
    })
}

/// Parses a class after its `[` (the pattern was already checked by `filepath.Match`, so
/// this is its grammar); returns the class and how many characters it used.
fn parse_class(chars: &[char]) -> Result<(Tok, usize), &'static str> {
    let mut i = 0;
    let negated = chars.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let elem = |i: &mut usize| -> Result<char, &'static str> {
        let c = *chars.get(*i).ok_or("unterminated character class")?;
        *i += 1;
        if c == '\\' {
            let e = *chars.get(*i).ok_or("unterminated character class")?;
            *i += 1;
            return Ok(e);
        }
        Ok(c)
    };
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            i += 1;
            break;
        }
        let lo = elem(&mut i)?;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1) != Some(&']') {
            i += 1;
            hi = elem(&mut i)?;
        }
        ranges.push((lo, hi));
    }
    Ok((Tok::Class { negated, ranges }, i))
}

fn perl(class: char, c: char) -> bool {
    match class {
        'd' => c.is_ascii_digit(),
        's' => matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r'),
        _ => c.is_ascii_alphanumeric() || c == '_',
    }
}

/// Runs the token program over `path` (an NFA simulation: linear in the path's length, no
/// backtracking blow-up on `**/**/**`). State `2k` is "before token k", `2k+1` is "inside the
/// `(.*/)?` group of token k".
fn run(tokens: &[Tok], path: &str) -> bool {
    let n = tokens.len();
    let mut current = vec![false; 2 * n + 2];
    let mut next = vec![false; 2 * n + 2];
    current[0] = true;
    closure(tokens, &mut current, true);
    for c in path.chars() {
        next.iter_mut().for_each(|s| *s = false);
        for k in 0..n {
            let before = current[2 * k];
            let inside = current[2 * k + 1];
            if !before && !inside {
                continue;
            }
            match &tokens[k] {
                Tok::Lit(l) if before && *l == c => next[2 * k + 2] = true,
                Tok::One if before && c != '/' => next[2 * k + 2] = true,
                Tok::Star if before && c != '/' => next[2 * k] = true,
                Tok::Rest if before && c != '\n' => next[2 * k] = true,
                Tok::Dirs if c != '\n' => {
                    next[2 * k + 1] = true;
                    if c == '/' {
                        next[2 * k + 2] = true;
                    }
                }
                Tok::Class { negated, ranges } if before => {
                    let inside_class = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                    if inside_class != *negated {
                        next[2 * k + 2] = true;
                    }
                }
                Tok::Perl { class, negated } if before && perl(*class, c) != *negated => {
                    next[2 * k + 2] = true;
                }
                _ => {}
            }
        }
        std::mem::swap(&mut current, &mut next);
        closure(tokens, &mut current, false);
        if !current.iter().any(|s| *s) {
            return false;
        }
    }
    current[2 * n]
}

/// Follows the moves that consume nothing: skipping `*`, `.*`, `(.*/)?`, and `^` at the
/// start.
fn closure(tokens: &[Tok], states: &mut [bool], at_start: bool) {
    for k in 0..tokens.len() {
        if !states[2 * k] {
            continue;
        }
        match tokens[k] {
            Tok::Star | Tok::Rest | Tok::Dirs => states[2 * k + 2] = true,
            Tok::Caret if at_start => states[2 * k + 2] = true,
            _ => {}
        }
    }
}

/// Per-pattern match results of a directory, handed to its children during a walk
/// (upstream's `MatchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentMatches(Vec<bool>);

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exceptions: bool,
}

impl PatternMatcher {
    /// Compiles patterns (as returned by [`parse_ignore_file`]). Empty ones are skipped; a
    /// lone `!` and patterns `filepath.Match` rejects are errors.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, Error> {
        let mut out = PatternMatcher::default();
        for raw in patterns {
            let trimmed = raw.as_ref().trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut text = clean(trimmed);
            let exclusion = text.starts_with('!');
            if exclusion {
                if text.len() == 1 {
                    return Err(Error::BadPattern {
                        pattern: raw.as_ref().to_string(),
                        reason: "illegal exclusion pattern: \"!\"",
                    });
                }
                text.remove(0);
                out.exceptions = true;
            }
            if go_match(&text, ".").is_err() {
                return Err(Error::BadPattern {
                    pattern: text,
                    reason: "syntax error in pattern",
                });
            }
            let kind = compile(&text);
            out.patterns.push(Pattern {
                text,
                exclusion,
                kind,
            });
        }
        Ok(out)
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is an exception.
    pub fn has_exceptions(&self) -> bool {
        self.exceptions
    }

    /// Whether `path` (relative, `/`-separated) is excluded: the last pattern matching the
    /// path or one of its parent directories decides (upstream `MatchesOrParentMatches`).
    pub fn is_excluded(&self, path: &str) -> Result<bool, Error> {
        let path = clean(path);
        if path == "." {
            return Ok(false);
        }
        let parent_dirs: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(&path)?;
            if !hit {
                for i in 1..=parent_dirs.len() {
                    if pattern.matches(&parent_dirs[..i].join("/"))? {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// [`PatternMatcher::is_excluded`] for a walk: `parent` holds the results of the
    /// directory containing `path` (empty for top-level entries), and the returned results
    /// are for `path`'s own children (upstream `MatchesUsingParentResults`, which BuildKit's
    /// context walker uses). In rare cases (an exception that only matched a parent) it
    /// differs from [`PatternMatcher::is_excluded`], exactly as upstream's two functions do.
    pub fn is_excluded_in_walk(
        &self,
        path: &str,
        parent: &ParentMatches,
    ) -> Result<(bool, ParentMatches), Error> {
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = parent.0.get(i).copied().unwrap_or(false);
            if !hit {
                if pattern.exclusion != matched {
                    continue;
                }
                hit = pattern.matches(path)?;
            }
            info[i] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, ParentMatches(info)))
    }

    /// Whether a walk may skip an excluded directory entirely: only when no exception
    /// pattern begins with the directory's path (so `!dir/keep` can still apply below it).
    /// A pattern like `!*/keep` does not count, exactly as upstream.
    pub fn can_prune(&self, dir: &str) -> bool {
        if !self.exceptions {
            return true;
        }
        let prefix = format!("{dir}/");
        !self
            .patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_follows_ignorefile_readall() {
        let content = "\u{feff}test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n\
                       ! /inverted/abs/path\n!\n! \n  spaced  \r\n#not a comment?\n a/../b/./c//\n";
        assert_eq!(
            parse_ignore_file(content),
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!",
                "spaced",
                "b/c"
            ]
        );
        // A comment must start in column 1.
        assert_eq!(parse_ignore_file(" # x"), ["# x"]);
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let ctx = tempfile::tempdir().unwrap();
        assert_eq!(read_ignore_file(ctx.path(), None).unwrap(), None);
        std::fs::write(ctx.path().join(".dockerignore"), "general\n").unwrap();
        let df = ctx.path().join("build/app.Dockerfile");
        let found = read_ignore_file(ctx.path(), Some(&df)).unwrap().unwrap();
        assert_eq!(found.patterns, ["general"]);
        std::fs::create_dir(ctx.path().join("build")).unwrap();
        std::fs::write(
            ctx.path().join("build/app.Dockerfile.dockerignore"),
            "specific\n",
        )
        .unwrap();
        let found = read_ignore_file(ctx.path(), Some(&df)).unwrap().unwrap();
        assert_eq!(found.patterns, ["specific"]);
        assert_eq!(
            found.path,
            ctx.path().join("build/app.Dockerfile.dockerignore")
        );
    }

    fn single(pattern: &str, path: &str) -> (bool, bool) {
        let m = PatternMatcher::new(&[pattern]).unwrap();
        let exact = m.patterns()[0].matches(path).unwrap();
        (exact, m.is_excluded(path).unwrap())
    }

    /// upstream's TestMatches table in our words: (pattern, path, matches the path itself,
    /// matches the path or a parent).
    #[test]
    fn single_pattern_table() {
        let table: &[(&str, &str, bool, bool)] = &[
            ("**", "file", true, true),
            ("**", "file/", true, true),
            ("**/", "file", true, true),
            ("**/", "file/", true, true),
            ("**", "/", true, true),
            ("**/", "/", true, true),
            ("**", "dir/file", true, true),
            ("**/", "dir/file", true, true),
            ("**", "dir/file/", true, true),
            ("**/", "dir/file/", true, true),
            ("**/**", "dir/file", true, true),
            ("**/**", "dir/file/", true, true),
            ("dir/**", "dir/file", true, true),
            ("dir/**", "dir/file/", true, true),
            ("dir/**", "dir/dir2/file", true, true),
            ("dir/**", "dir/dir2/file/", true, true),
            ("**/dir", "dir", true, true),
            ("**/dir", "dir/file", false, true),
            ("**/dir2/*", "dir/dir2/file", true, true),
            ("**/dir2/*", "dir/dir2/file/", false, true),
            ("**/dir2/**", "dir/dir2/dir3/file", true, true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true, true),
            ("**file", "file", true, true),
            ("**file", "dir/file", true, true),
            ("**/file", "dir/file", true, true),
            ("**file", "dir/dir/file", true, true),
            ("**/file", "dir/dir/file", true, true),
            ("**/file*", "dir/dir/file", true, true),
            ("**/file*", "dir/dir/file.txt", true, true),
            ("**/file*txt", "dir/dir/file.txt", true, true),
            ("**/file*.txt", "dir/dir/file.txt", true, true),
            ("**/file*.txt*", "dir/dir/file.txt", true, true),
            ("**/**/*.txt", "dir/dir/file.txt", true, true),
            ("**/**/*.txt2", "dir/dir/file.txt", false, false),
            ("**/*.txt", "file.txt", true, true),
            ("**/**/*.txt", "file.txt", true, true),
            ("a**/*.txt", "a/file.txt", true, true),
            ("a**/*.txt", "a/dir/file.txt", true, true),
            ("a**/*.txt", "a/dir/dir/file.txt", true, true),
            ("a/*.txt", "a/dir/file.txt", false, false),
            ("a/*.txt", "a/file.txt", true, true),
            ("a/*.txt**", "a/file.txt", true, true),
            ("a[b-d]e", "ae", false, false),
            ("a[b-d]e", "ace", true, true),
            ("a[b-d]e", "aae", false, false),
            ("a[^b-d]e", "aze", true, true),
            (".*", ".foo", true, true),
            (".*", "foo", false, false),
            ("abc.def", "abcdef", false, false),
            ("abc.def", "abc.def", true, true),
            ("abc.def", "abcZdef", false, false),
            ("abc?def", "abcZdef", true, true),
            ("abc?def", "abcdef", false, false),
            ("**/foo/bar", "foo/bar", true, true),
            ("**/foo/bar", "dir/foo/bar", true, true),
            ("**/foo/bar", "dir/dir2/foo/bar", true, true),
            ("abc/**", "abc", false, false),
            ("abc/**", "abc/def", true, true),
            ("abc/**", "abc/def/ghi", true, true),
            ("**/.foo", ".foo", true, true),
            ("**/.foo", "bar.foo", false, false),
            ("a(b)c/def", "a(b)c/def", true, true),
            ("a(b)c/def", "a(b)c/xyz", false, false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true, true),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
                true,
            ),
            ("a\\\\", "a\\", true, true),
            ("a\\*b", "a*b", true, true),
            // Our own additions: a directory pattern covers everything below it, a `*`
            // never crosses `/`, a class can.
            ("docs", "docs/deep/file.md", false, true),
            ("*.go", "pkg/main.go", false, false),
            ("*/*.go", "pkg/main.go", true, true),
            ("a[^x]b", "a/b", true, true),
            ("a\\db", "a7b", true, true),
            (".", "anything", false, false),
        ];
        for (pattern, path, exact, or_parent) in table {
            assert_eq!(
                single(pattern, path),
                (*exact, *or_parent),
                "pattern {pattern:?} path {path:?}"
            );
        }
    }

    fn excluded(patterns: &[&str], path: &str) -> bool {
        PatternMatcher::new(patterns)
            .unwrap()
            .is_excluded(path)
            .unwrap()
    }

    #[test]
    fn last_matching_pattern_wins() {
        assert!(excluded(&["*.go"], "fileutils.go"));
        assert!(excluded(&["!fileutils.go", "*.go"], "fileutils.go"));
        assert!(!excluded(&["*.go", "!fileutils.go"], "fileutils.go"));
        assert!(!excluded(&["docs", "!docs/README.md"], "docs/README.md"));
        assert!(!excluded(&["docs/", "!docs/README.md"], "docs/README.md"));
        assert!(!excluded(&["docs/*", "!docs/README.md"], "docs/README.md"));
        assert!(excluded(&["docs", "!docs/README.md"], "docs/other.md"));
        assert!(!excluded(
            &["**", "!util/docker/web"],
            "util/docker/web/foo"
        ));
        assert!(excluded(
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo"
        ));
        assert!(!excluded(
            &["**", "!dist/*.whl"],
            "dist/a-1.0+x-py3-none-any.whl"
        ));
        assert!(
            !excluded(&["*.go"], "."),
            "the root itself is never excluded"
        );
        assert!(!excluded(&[], "any/path"));
    }

    #[test]
    fn malformed_patterns_are_errors() {
        let err = PatternMatcher::new(&["["]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad pattern \"[\": syntax error in pattern"
        );
        let err = PatternMatcher::new(&["docs", "!"]).unwrap_err();
        assert!(err.to_string().contains("illegal exclusion pattern"));
        // Accepted by filepath.Match but not a valid Go regular expression.
        let m = PatternMatcher::new(&["a\\qb"]).unwrap();
        assert!(m.is_excluded("aqb").is_err());
        // Empty and blank patterns are skipped.
        assert!(PatternMatcher::new(&["", "  "])
            .unwrap()
            .patterns()
            .is_empty());
    }

    #[test]
    fn pruning_only_when_no_exception_starts_below() {
        let m = PatternMatcher::new(&["build", "!build/keep", "node_modules"]).unwrap();
        assert!(!m.can_prune("build"));
        assert!(m.can_prune("node_modules"));
        // Upstream's quirk: a wildcard exception does not stop pruning.
        let m = PatternMatcher::new(&["*", "!*/keep"]).unwrap();
        assert!(m.can_prune("src"));
        assert!(PatternMatcher::new(&["x"]).unwrap().can_prune("x"));
    }

    /// Upstream's two matching functions differ in a corner: an exception that matched only
    /// a parent directory is not carried down by the walk (`MatchesUsingParentResults`,
    /// which BuildKit's context walker uses) but is re-checked by `MatchesOrParentMatches`.
    /// We keep both behaviours; the walk is what decides what a build sees.
    #[test]
    fn walk_and_parent_matching_differ_where_upstream_does() {
        let m = PatternMatcher::new(&["*/*", "!*"]).unwrap();
        let (_, top) = m
            .is_excluded_in_walk("a", &ParentMatches::default())
            .unwrap();
        assert!(m.is_excluded_in_walk("a/a", &top).unwrap().0);
        assert!(!m.is_excluded("a/a").unwrap());
    }

    #[test]
    fn walk_results_agree_with_parent_matching() {
        let sets: &[&[&str]] = &[
            &["a", "!a/b", "a/b/c"],
            &["**", "!util/docker/web", "util/docker/web/foo"],
            &["*/*.log", "!keep/*.log", "**/tmp"],
            &["docs", "!docs/README.md", "docs/*/x"],
            &["a/**", "!a/b/**", "a/b/c/**"],
        ];
        let paths = [
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/d",
            "a/x",
            "util",
            "util/docker",
            "util/docker/web",
            "util/docker/web/foo",
            "util/docker/web/foo/bar",
            "keep",
            "keep/a.log",
            "src",
            "src/a.log",
            "src/tmp",
            "src/tmp/x",
            "docs",
            "docs/README.md",
            "docs/y",
            "docs/y/x",
        ];
        for patterns in sets {
            let m = PatternMatcher::new(patterns).unwrap();
            for path in paths {
                let parts: Vec<&str> = path.split('/').collect();
                let mut info = ParentMatches::default();
                let mut result = false;
                for i in 1..=parts.len() {
                    let (r, next) = m.is_excluded_in_walk(&parts[..i].join("/"), &info).unwrap();
                    result = r;
                    info = next;
                }
                assert_eq!(
                    result,
                    m.is_excluded(path).unwrap(),
                    "patterns {patterns:?} path {path:?}"
                );
            }
        }
    }

    /// Upstream's `compile`, transcribed to build the same regular expression text, so our
    /// interpreter can be checked against a real regex engine (Go's RE2 syntax and the
    /// `regex` crate agree on everything this emits).
    fn upstream(pattern: &str, path: &str) -> Result<bool, ()> {
        #[derive(PartialEq)]
        enum K {
            Exact,
            Prefix,
            Suffix,
            Re,
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut re = String::from("^");
        let mut kind = K::Exact;
        let (mut i, mut iteration) = (0, 0);
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            if ch == '*' {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        if kind == K::Exact {
                            kind = K::Prefix;
                        } else {
                            re.push_str(".*");
                            kind = K::Re;
                        }
                    } else {
                        re.push_str("(.*/)?");
                        kind = K::Re;
                    }
                    if iteration == 0 {
                        kind = K::Suffix;
                    }
                } else {
                    re.push_str("[^/]*");
                    kind = K::Re;
                }
            } else if ch == '?' {
                re.push_str("[^/]");
                kind = K::Re;
            } else if ".+()|{}$".contains(ch) {
                re.push('\\');
                re.push(ch);
            } else if ch == '\\' {
                if let Some(&next) = chars.get(i) {
                    i += 1;
                    re.push('\\');
                    re.push(next);
                    kind = K::Re;
                } else {
                    re.push('\\');
                }
            } else if ch == '[' || ch == ']' {
                re.push(ch);
                kind = K::Re;
            } else {
                re.push(ch);
            }
            iteration += 1;
        }
        Ok(match kind {
            K::Exact => path == pattern,
            K::Prefix => path.starts_with(&pattern[..pattern.len() - 2]),
            K::Suffix => {
                let suffix = &pattern[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|r| path == r)
            }
            K::Re => {
                re.push('$');
                regex::Regex::new(&re).map_err(|_| ())?.is_match(path)
            }
        })
    }

    fn pieces(
        alphabet: &'static [&'static str],
    ) -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(alphabet), 1..7).prop_map(|v| v.concat())
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn interpreter_agrees_with_upstreams_regex(
            raw in pieces(&["a", "b", "/", "*", "**", "?", ".", "[ab]", "[^a]", "[a-c]",
                            "\\*", "\\.", "\\d", "^", "x", "(", "+"]),
            path in pieces(&["a", "b", "/", ".", "ab", "x", "^", "*", "7", "(", "+"]),
        ) {
            let text = clean(raw.trim());
            prop_assume!(!text.starts_with('!') && go_match(&text, ".").is_ok());
            let m = PatternMatcher::new(&[raw.as_str()]).unwrap();
            let ours = m.patterns()[0].matches(&path).map_err(|_| ());
            prop_assert_eq!(ours, upstream(&text, &path), "pattern {:?} path {:?}", text, path);
        }
    }
}
