//! Variable expansion and word splitting with the semantics of BuildKit's shell lexer.
//!
//! This is not a shell: there is no command substitution, globbing or arithmetic. It
//! removes quotes, applies the escape character and substitutes `$VAR`, `${VAR}` and the
//! `${VAR<modifier>...}` forms (`:-` `-` `:+` `+` `:?` `?` `#` `##` `%` `%%` `/` `//`),
//! optionally splitting the result into words. Expansion is a pure function of the text,
//! the escape character and the variable environment handed in; unset variables expand
//! to the empty string. Every call reports which names were referenced and which of
//! those were unset (for lints and for explaining cache misses).

use std::collections::HashMap;

use crate::error::ParseError;

/// A read-only variable environment.
pub trait Lookup {
    /// The value of `name`, if set (an empty value is set).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Lookup for [(String, String)] {
    /// The last pair with that key wins, like BuildKit's environment list.
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Lookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl Lookup for [(&str, &str)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

impl<const N: usize> Lookup for [(&str, &str); N] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl Lookup for [String] {
    /// `KEY=value` strings, as an image config's `Env` lists them; the last one wins.
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then_some(v)
        })
    }
}

impl Lookup for Vec<String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl Lookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<T: Lookup + ?Sized> Lookup for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// An empty environment: every variable is unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Lookup for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// An ordered `KEY=value` environment, as a stage accumulates it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    /// An empty environment.
    pub fn new() -> Env {
        Env::default()
    }

    /// Build from `KEY=value` strings (an entry without `=` sets an empty value), as an
    /// image config's `Env` lists them.
    pub fn from_kv_strings<I, S>(items: I) -> Env
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut env = Env::new();
        for item in items {
            let item = item.as_ref();
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            env.set(k, v);
        }
        env
    }

    /// Set `key` to `value`, replacing an existing entry in place.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.vars.push((key.to_string(), value.to_string())),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lookup(key)
    }

    /// Whether `key` is set.
    pub fn contains(&self, key: &str) -> bool {
        self.vars.iter().any(|(k, _)| k == key)
    }

    /// The entries in order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// The variable names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(k, _)| k.as_str())
    }

    /// `KEY=value` strings in order (the form of an image config's `Env`).
    pub fn to_kv_strings(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

impl Lookup for Env {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The result of expanding one piece of text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The expanded text as one word (quotes removed, escapes applied, spaces kept).
    pub value: String,
    /// The expanded text split into words (only filled by the word-splitting calls).
    pub words: Vec<String>,
    /// Every variable name the text referenced, in order of first use.
    pub referenced: Vec<String>,
    /// The referenced names that were unset, in order of first use.
    pub unset: Vec<String>,
}

/// Expand `text` as one word with the escape character `escape` (`\` or `` ` ``).
pub fn expand_word(text: &str, env: &dyn Lookup, escape: char) -> Result<Expansion, ParseError> {
    Lexer::new(escape).expand(text, env)
}

/// Expand `text` and split the result into words (on unquoted whitespace, including
/// whitespace that came out of an unquoted variable).
pub fn expand_words(text: &str, env: &dyn Lookup, escape: char) -> Result<Expansion, ParseError> {
    Lexer::new(escape).expand_words(text, env)
}

/// A configurable expander; the defaults are what BuildKit uses for instruction
/// arguments. The other switches exist because the parser itself needs them (heredoc
/// detection keeps quotes, escapes and unset variables raw) and because heredoc bodies
/// are expanded without quote processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character.
    pub escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding them to "".
    pub skip_unset: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_quotes: bool,
}

impl Lexer {
    /// The default configuration with escape character `escape`.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// Expand `text` as one word.
    pub fn expand(&self, text: &str, env: &dyn Lookup) -> Result<Expansion, ParseError> {
        self.run(text, env, false)
    }

    /// Expand `text` and split it into words.
    pub fn expand_words(&self, text: &str, env: &dyn Lookup) -> Result<Expansion, ParseError> {
        self.run(text, env, true)
    }

    fn run(&self, text: &str, env: &dyn Lookup, split: bool) -> Result<Expansion, ParseError> {
        // Fast path: nothing to interpret.
        let special = |c: char| matches!(c, '$' | '\'' | '"' | '<') || c == self.escape;
        if !text.contains(special) {
            let words = if split {
                text.split(char::is_whitespace)
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            };
            return Ok(Expansion {
                value: text.to_string(),
                words,
                referenced: Vec::new(),
                unset: Vec::new(),
            });
        }
        let mut sw = ShellWord {
            src: text,
            pos: 0,
            depth: 0,
            env,
            lex: self,
            raw_escapes: self.raw_escapes,
            referenced: Vec::new(),
            unset: Vec::new(),
        };
        let mut words = Words::default();
        let value = sw
            .process_stop_on(
                None,
                self.raw_escapes,
                if split { Some(&mut words) } else { None },
            )
            .map_err(|message| ParseError::Expansion {
                line: None,
                column: None,
                text: text.to_string(),
                message,
            })?;
        Ok(Expansion {
            value,
            words: words.finish(),
            referenced: sw.referenced,
            unset: sw.unset,
        })
    }
}

/// Word accumulation while expanding.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
            }
        } else {
            self.buf.push(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
    }

    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

/// `${a:-${b:-...}}` nests; deeper than this is refused rather than recursed (BuildKit's
/// goroutine stacks grow, ours do not).
const MAX_NESTING: usize = 64;

struct ShellWord<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    env: &'a dyn Lookup,
    lex: &'a Lexer,
    raw_escapes: bool,
    referenced: Vec<String>,
    unset: Vec<String>,
}

type Res<T> = Result<T, String>;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Process until `stop` (consumed) or the end of the text.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        mut words: Option<&mut Words>,
    ) -> Res<String> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop, &mut words);
        self.raw_escapes = saved;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
        words: &mut Option<&mut Words>,
    ) -> Res<String> {
        let mut result = String::new();
        let escape = self.lex.escape;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok(result);
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    if let Some(w) = words.as_deref_mut() {
                        w.add_string(&tmp);
                    }
                    result.push_str(&tmp);
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    if let Some(w) = words.as_deref_mut() {
                        w.add_raw_string(&tmp);
                    }
                    result.push_str(&tmp);
                }
                '\'' | '"' if !self.lex.skip_quotes => {
                    let tmp = if ch == '\'' {
                        self.process_single_quote()?
                    } else {
                        self.process_double_quote()?
                    };
                    if let Some(w) = words.as_deref_mut() {
                        w.add_raw_string(&tmp);
                    }
                    result.push_str(&tmp);
                }
                _ => {
                    self.next();
                    if ch == escape {
                        if self.raw_escapes {
                            if let Some(w) = words.as_deref_mut() {
                                w.add_raw_char(ch);
                            }
                            result.push(ch);
                        }
                        // The escape character makes the next one literal; at the very
                        // end of the text it is dropped.
                        let Some(n) = self.next() else { break };
                        if let Some(w) = words.as_deref_mut() {
                            w.add_raw_char(n);
                        }
                        result.push(n);
                    } else {
                        if let Some(w) = words.as_deref_mut() {
                            w.add_char(ch);
                        }
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(s) => Err(format!(
                "unexpected end of statement while looking for matching {s}"
            )),
            None => Ok(result),
        }
    }

    fn process_single_quote(&mut self) -> Res<String> {
        let mut result = String::new();
        let q = self.next();
        if self.lex.raw_quotes {
            result.extend(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Res<String> {
        let mut result = String::new();
        let q = self.next();
        if self.lex.raw_quotes {
            result.extend(q);
        }
        let escape = self.lex.escape;
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // A trailing escape is dropped (the missing quote errors next).
                            None => continue,
                            // Inside double quotes only `"`, `$` and the escape itself
                            // can be escaped; before anything else it stays literal.
                            Some(n) if n == '"' || n == '$' || n == escape => {
                                ch = n;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// `<` is special only to keep `<<` and the blanks after it in one word, so that
    /// `RUN <<  EOF` still names a heredoc.
    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut out = String::from("<<");
        while let Some(c @ (' ' | '\t' | '\r' | '\n')) = self.peek() {
            out.push(c);
            self.next();
        }
        out
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        if !self.referenced.iter().any(|n| n == name) {
            self.referenced.push(name.to_string());
        }
        match self.env.lookup(name) {
            Some(v) => Some(v.to_string()),
            None => {
                if !self.unset.iter().any(|n| n == name) {
                    self.unset.push(name.to_string());
                }
                None
            }
        }
    }

    fn process_dollar(&mut self) -> Res<String> {
        if self.depth >= MAX_NESTING {
            return Err(format!("substitutions nested more than {MAX_NESTING} deep"));
        }
        self.depth += 1;
        let r = self.process_dollar_inner();
        self.depth -= 1;
        r
    }

    fn process_dollar_inner(&mut self) -> Res<String> {
        self.next(); // the '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // the '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let ch = self.next();
        let mut chs: String = ch.map(String::from).unwrap_or_default();
        match ch {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let null_is_unset = ch == Some(':');
                let modifier = if null_is_unset {
                    let m = self.next();
                    chs.extend(m);
                    m
                } else {
                    ch
                };
                let raw = matches!(modifier, Some('#' | '%'));
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = match self.process_stop_on(Some('}'), raw, None) {
                    Ok(w) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty = value.as_deref().is_none_or(str::is_empty);
                let unset_or_null = value.is_none() || (null_is_unset && empty);
                match modifier {
                    Some('-') => Ok(if unset_or_null {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if unset_or_null { String::new() } else { word }),
                    Some('?') => {
                        if value.is_none() {
                            let m = if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            };
                            return Err(format!("{name}: {m}"));
                        }
                        if null_is_unset && empty {
                            let m = if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            };
                            return Err(format!("{name}: {m}"));
                        }
                        Ok(value.unwrap_or_default())
                    }
                    Some(m @ ('#' | '%')) => {
                        let (pattern, greedy) = match word.strip_prefix(m) {
                            Some(p) => (p, true),
                            None => (word.as_str(), false),
                        };
                        let value = value.unwrap_or_default();
                        let toks = compile_pattern(pattern).map_err(|e| {
                            format!("invalid pattern ({pattern}) in substitution: {e}")
                        })?;
                        if m == '#' {
                            trim_prefix(&toks, &value, greedy)
                        } else {
                            trim_suffix(&toks, &value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true, None) {
                    Ok(p) => p,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".into());
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true, None) {
                    Ok(p) => p,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let toks = compile_pattern(&pattern)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                substitute(&toks, &value, &replacement, replace_all)
            }
            None => Err("syntax error: missing '}'".into()),
            Some(_) => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    /// A variable name: letters, digits and `_`; or all the digits of a positional
    /// parameter; or one special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|c| is_digit(*c)) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphabetic() || is_digit(ch) || ch == '_') {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

/// Go's `unicode.IsDigit` (decimal digits of any script), approximated by the numeric
/// characters Rust knows.
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// One element of a `${VAR#pattern}` style pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`: one character.
    Any,
    /// `*`: any run of characters.
    Star,
}

/// Compile a shell pattern: `*`, `?`, and `\` escaping `*`, `?` or `\` (a `\` before `}`
/// or `/` is dropped). Bracket expressions are not supported, as upstream.
fn compile_pattern(pattern: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => match chars.peek() {
                Some('}' | '/') => {}
                Some(&n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(Tok::Lit(n));
                }
                Some(&n) => return Err(format!("invalid escape '\\{n}'")),
                None => return Err("invalid escape '\\' at end of pattern".into()),
            },
            c => out.push(Tok::Lit(c)),
        }
    }
    Ok(out)
}

/// The pattern matcher gives up after this many steps (a pathological pattern against a
/// long value); the expansion then fails instead of hanging.
const MATCH_BUDGET: usize = 5_000_000;

/// The memo and step budget shared by the searches of one expansion.
struct Matcher {
    /// `(star token, value index)` states known to fail.
    failed: std::collections::HashSet<(usize, usize)>,
    steps: usize,
}

impl Matcher {
    fn new() -> Self {
        Matcher {
            failed: std::collections::HashSet::new(),
            steps: 0,
        }
    }

    /// Match `toks` anchored at `start`, choosing among alternatives in the order a
    /// backtracking regex engine would (lazy `*` tries the shortest run first, greedy the
    /// longest), and return where the first successful match ends.
    ///
    /// Like Go's `.`, neither `?` nor `*` matches a newline. The search is iterative with
    /// a memo of failed `*` positions, so it neither recurses nor explodes on many stars.
    fn match_at(
        &mut self,
        toks: &[Tok],
        v: &[char],
        start: usize,
        greedy: bool,
    ) -> Result<Option<usize>, String> {
        let n = v.len();
        // A frame: the star token index, the value index where it starts, how many
        // choices were tried, and the longest run it may take.
        let mut stack: Vec<(usize, usize, usize, usize)> = Vec::new();
        let (mut ti, mut vi) = (0usize, start);
        loop {
            // Run the deterministic part until a star, the end, or a mismatch.
            loop {
                self.steps += 1;
                if self.steps > MATCH_BUDGET {
                    return Err("pattern too complex to match".into());
                }
                if ti == toks.len() {
                    return Ok(Some(vi));
                }
                match toks[ti] {
                    Tok::Lit(c) if vi < n && v[vi] == c => {
                        ti += 1;
                        vi += 1;
                    }
                    Tok::Any if vi < n && v[vi] != '\n' => {
                        ti += 1;
                        vi += 1;
                    }
                    Tok::Star => {
                        if !self.failed.contains(&(ti, vi)) {
                            let max = v[vi..].iter().take_while(|c| **c != '\n').count();
                            stack.push((ti, vi, 0, max));
                        }
                        break;
                    }
                    _ => break,
                }
            }
            // Take the next alternative of the innermost star.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(None);
                };
                let (sti, svi, tried, max) = *top;
                if tried > max {
                    self.failed.insert((sti, svi));
                    stack.pop();
                    continue;
                }
                top.2 += 1;
                let k = if greedy { max - tried } else { tried };
                ti = sti + 1;
                vi = svi + k;
                break;
            }
        }
    }
}

fn trim_prefix(toks: &[Tok], value: &str, greedy: bool) -> Result<String, String> {
    let v: Vec<char> = value.chars().collect();
    Ok(match Matcher::new().match_at(toks, &v, 0, greedy)? {
        Some(end) => v[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// Suffix removal = prefix removal on the reversed pattern and value.
fn trim_suffix(toks: &[Tok], value: &str, greedy: bool) -> Result<String, String> {
    let rt: Vec<Tok> = toks.iter().rev().copied().collect();
    let rv: Vec<char> = value.chars().rev().collect();
    Ok(match Matcher::new().match_at(&rt, &rv, 0, greedy)? {
        Some(end) => rv[end..].iter().rev().collect(),
        None => value.to_string(),
    })
}

/// `${VAR/pattern/replacement}` and `${VAR//pattern/replacement}`: leftmost matches with
/// greedy stars, replaced left to right like Go's `ReplaceAllString` (an empty match
/// right after a previous match is skipped).
fn substitute(toks: &[Tok], value: &str, replacement: &str, all: bool) -> Result<String, String> {
    let v: Vec<char> = value.chars().collect();
    let n = v.len();
    let mut m = Matcher::new();
    let mut out = String::with_capacity(value.len());
    let mut last = 0usize;
    let mut pos = 0usize;
    let mut prev_end: Option<usize> = None;
    'search: while pos <= n {
        let mut found = None;
        for s in pos..=n {
            if let Some(e) = m.match_at(toks, &v, s, true)? {
                found = Some((s, e));
                break;
            }
        }
        let Some((a, b)) = found else { break 'search };
        let mut accept = true;
        if b == pos {
            if Some(a) == prev_end {
                accept = false;
            }
            pos += 1;
        } else {
            pos = b;
        }
        prev_end = Some(b);
        if accept {
            out.extend(&v[last..a]);
            out.push_str(replacement);
            last = b;
            if !all {
                break;
            }
        }
    }
    out.extend(&v[last.min(n)..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, env: &[(&str, &str)]) -> Result<String, ParseError> {
        expand_word(text, &env, '\\').map(|e| e.value)
    }

    /// Upstream's inline table of single-string expansions (restated in
    /// conformance/buildkit-shell/FORMAT.md).
    #[test]
    fn upstream_inline_table() {
        let e1 = [("FOO", "xxx"), ("BAR", "")];
        assert_eq!(
            ex("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", &e1).unwrap(),
            "xxx  ccc"
        );
        assert_eq!(
            ex("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", &e1).unwrap(),
            "xxx bbb ccc"
        );
        assert_eq!(
            ex("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", &e1).unwrap(),
            "aaa bbb "
        );
        assert_eq!(
            ex("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", &e1).unwrap(),
            "aaa  "
        );
        assert_eq!(ex("${BAR?bbb}", &[("BAR", "")]).unwrap(), "");
        assert!(ex("${BAR:?bbb}", &[("BAR", "")]).is_err());
        assert_eq!(ex("${FOO#*x*y}", &[("FOO", "xxyy")]).unwrap(), "y");
        assert_eq!(ex("${FOO##*x}", &[("FOO", "xxyy")]).unwrap(), "yy");
        assert_eq!(ex("${FOO%%\\**}", &[("FOO", "xx**")]).unwrap(), "xx");
        assert_eq!(
            ex(
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")]
            )
            .unwrap(),
            "/foo.*/*.txt - /foo..*.txt"
        );
        assert_eq!(
            ex("${FOO//\\//\\/}", &[("FOO", "/tmp/foo.txt")]).unwrap(),
            "\\/tmp\\/foo.txt"
        );
        assert!(ex("${FOO=aaa}", &[("FOO", "x")]).is_err());
        assert!(ex("${FOO=aaa}", &[]).is_err());
        let input = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
        assert_eq!(
            ex(
                input,
                &[
                    ("VERSION", "v1.2.3"),
                    ("TARGETOS", "linux"),
                    ("TARGETARCH", "arm"),
                    ("TARGETVARIANT", "v7")
                ]
            )
            .unwrap(),
            "something-v1.2.3.linux-arm-v7.tar.gz"
        );
        for variant in [Some(""), None] {
            let mut env = vec![
                ("VERSION", "v1.2.3"),
                ("TARGETOS", "linux"),
                ("TARGETARCH", "arm64"),
            ];
            if let Some(v) = variant {
                env.push(("TARGETVARIANT", v));
            }
            assert_eq!(
                ex(input, &env).unwrap(),
                "something-v1.2.3.linux-arm64.tar.gz"
            );
        }
    }

    #[test]
    fn pattern_removal_and_substitution() {
        let env = [("P", "/usr/local/bin/tool.tar.gz")];
        assert_eq!(ex("${P#*/}", &env).unwrap(), "usr/local/bin/tool.tar.gz");
        assert_eq!(ex("${P##*/}", &env).unwrap(), "tool.tar.gz");
        assert_eq!(ex("${P%/*}", &env).unwrap(), "/usr/local/bin");
        assert_eq!(ex("${P%%.*}", &env).unwrap(), "/usr/local/bin/tool");
        assert_eq!(ex("${P%.*}", &env).unwrap(), "/usr/local/bin/tool.tar");
        assert_eq!(
            ex("${P/local/opt}", &env).unwrap(),
            "/usr/opt/bin/tool.tar.gz"
        );
        assert_eq!(
            ex("${P//\\//_}", &env).unwrap(),
            "_usr_local_bin_tool.tar.gz"
        );
        assert_eq!(
            ex("${P#nomatch}", &env).unwrap(),
            "/usr/local/bin/tool.tar.gz"
        );
        assert_eq!(ex("${P#???}", &env).unwrap(), "r/local/bin/tool.tar.gz");
        assert!(ex("${P:#x}", &env).is_err());
        assert!(ex("${P#\\x}", &env).is_err());
        // A newline stops wildcards, as Go's `.` does.
        assert_eq!(ex("${N#*b}", &[("N", "a\nb")]).unwrap(), "a\nb");
        assert!(ex("${X//}", &[("X", "abc")]).is_err());
        assert_eq!(ex("${X/b/}", &[("X", "abc")]).unwrap(), "ac");
        assert_eq!(ex("${X//*/-}", &[]).unwrap(), "-");
        assert_eq!(ex("${X//*/-}", &[("X", "abc")]).unwrap(), "-");
    }

    #[test]
    fn references_and_unset_are_reported() {
        let r = expand_word("$A ${B:-$C} ${A}", &[("A", "1")], '\\').unwrap();
        assert_eq!(r.value, "1  1");
        assert_eq!(r.referenced, vec!["A", "C", "B"]);
        assert_eq!(r.unset, vec!["C", "B"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}x{}", "${a:-".repeat(50_000), "}".repeat(50_000));
        assert!(expand_word(&deep, &NoEnv, '\\').is_err());
        let ok = format!("{}x{}", "${a:-".repeat(60), "}".repeat(60));
        assert_eq!(expand_word(&ok, &NoEnv, '\\').unwrap().value, "x");
        let line = format!("RUN <<EOF {}", "${a:-".repeat(10_000));
        assert!(crate::ast::parse(&format!("FROM x\n{line}\n")).is_ok());
    }

    #[test]
    fn pathological_patterns_fail_instead_of_hanging() {
        let value = "a".repeat(1000);
        let pattern = "*a".repeat(300) + "b";
        let env = [("V", value.as_str())];
        let text = format!("${{V#{pattern}}}");
        assert!(expand_word(&text, &env, '\\').is_err());
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(expand_word("a`$b", &NoEnv, '`').unwrap().value, "a$b");
        assert_eq!(expand_word("C:\\go", &NoEnv, '`').unwrap().value, "C:\\go");
    }

    #[test]
    fn raw_modes_used_for_heredoc_detection() {
        let lex = Lexer {
            raw_quotes: true,
            raw_escapes: true,
            skip_unset: true,
            ..Lexer::new('\\')
        };
        let w = lex
            .expand_words("RUN <<  EOF 'a b' \\x $X ${Y:-z}", &NoEnv)
            .unwrap();
        assert_eq!(
            w.words,
            vec!["RUN", "<<  EOF", "'a b'", "\\x", "$X", "${Y:-z}"]
        );
    }

    #[test]
    fn words_split_after_expansion() {
        let env = [("space", "abc  def")];
        let w = expand_words("x${space:-q}y \"${space}\"", &env, '\\').unwrap();
        assert_eq!(w.words, vec!["xabc", "defy", "abc  def"]);
    }
}
