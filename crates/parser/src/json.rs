//! The JSON ("exec") form of instruction arguments.
//!
//! BuildKit hands the argument text to Go's `encoding/json` and decodes it into `[]any`.
//! Three outcomes matter: a valid array of strings (exec form), a valid array with a
//! non-string element (an error), and anything else, including JSON that only looks like
//! an array, which silently falls back to the shell form. This module reproduces that
//! decision without a JSON library: it validates the whole document iteratively (no
//! recursion, so deeply nested input cannot overflow the stack) and decodes only the
//! top-level strings.

/// How an argument text reads as a JSON array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// Not a JSON array (or not valid JSON): use the shell form.
    NotJson,
    /// A valid JSON array whose elements are all strings, decoded.
    Strings(Vec<String>),
    /// A valid JSON array with at least one element that is not a string.
    NotAllStrings,
}

/// Go's JSON decoder refuses nesting deeper than this.
const MAX_DEPTH: usize = 10_000;

/// Classify `text` (leading Unicode whitespace allowed) the way BuildKit's `parseJSON` does.
pub(crate) fn parse_json_array(text: &str) -> JsonArray {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut p = JsonParser {
        s: text.as_bytes(),
        src: text,
        pos: 0,
    };
    match p.document() {
        Some(outcome) => outcome,
        None => JsonArray::NotJson,
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Array,
    Object,
}

impl<'a> JsonParser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Parse the whole document; `None` on any syntax error (shell-form fallback).
    fn document(&mut self) -> Option<JsonArray> {
        // The top level is known to start with '['.
        self.pos += 1;
        let mut strings = Vec::new();
        let mut all_strings = true;
        // A number that overflows float64 makes Go's Unmarshal fail with a type error,
        // which BuildKit treats like invalid JSON.
        let mut overflow = false;
        let mut stack: Vec<Container> = vec![Container::Array];
        // State: expecting a value (possibly the first of a container, which may be empty).
        let mut first = true;
        loop {
            self.ws();
            let depth = stack.len();
            let top = *stack.last()?;
            if first {
                let close = if top == Container::Array { b']' } else { b'}' };
                if self.eat(close) {
                    stack.pop();
                    if stack.is_empty() {
                        break;
                    }
                    first = false;
                    if !self.after_value(&mut stack)? {
                        break;
                    }
                    continue;
                }
            }
            if top == Container::Object {
                // key
                if self.peek() != Some(b'"') {
                    return None;
                }
                self.string()?;
                self.ws();
                if !self.eat(b':') {
                    return None;
                }
                self.ws();
            }
            // value
            let at_top = depth == 1;
            match self.peek()? {
                b'[' | b'{' => {
                    if at_top {
                        all_strings = false;
                    }
                    if stack.len() >= MAX_DEPTH {
                        return None;
                    }
                    let c = if self.peek() == Some(b'[') {
                        Container::Array
                    } else {
                        Container::Object
                    };
                    self.pos += 1;
                    stack.push(c);
                    first = true;
                    continue;
                }
                b'"' => {
                    let s = self.string()?;
                    if at_top {
                        strings.push(s);
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => {
                    if !self.number()? {
                        overflow = true;
                    }
                }
                _ => return None,
            }
            if at_top && !matches!(self.s.get(self.pos.wrapping_sub(1)), Some(b'"')) {
                all_strings = false;
            }
            first = false;
            if !self.after_value(&mut stack)? {
                break;
            }
        }
        self.ws();
        if self.pos != self.s.len() {
            return None;
        }
        if overflow {
            return Some(JsonArray::NotJson);
        }
        Some(if all_strings {
            JsonArray::Strings(strings)
        } else {
            JsonArray::NotAllStrings
        })
    }

    /// After a value: a comma (more values follow) or the closing bracket(s).
    /// Returns Some(false) when the top-level array closed.
    fn after_value(&mut self, stack: &mut Vec<Container>) -> Option<bool> {
        loop {
            self.ws();
            let top = *stack.last()?;
            if self.eat(b',') {
                return Some(true);
            }
            let close = if top == Container::Array { b']' } else { b'}' };
            if !self.eat(close) {
                return None;
            }
            stack.pop();
            if stack.is_empty() {
                return Some(false);
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    /// A JSON number; returns whether it fits a float64 (Go reports overflow as an error).
    fn number(&mut self) -> Option<bool> {
        let start = self.pos;
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        if self.eat(b'.') {
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        let text = &self.src[start..self.pos];
        Some(text.parse::<f64>().map(f64::is_finite).unwrap_or(false))
    }

    /// A JSON string starting at the opening quote, decoded like Go does (invalid
    /// surrogates become U+FFFD).
    fn string(&mut self) -> Option<String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            let b = self.peek()?;
            match b {
                b'"' => {
                    out.push_str(&self.src[run_start..self.pos]);
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(&self.src[run_start..self.pos]);
                    self.pos += 1;
                    let e = self.peek()?;
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi) {
                                // A high surrogate wants a low one right after it.
                                let save = self.pos;
                                if self.s.get(self.pos) == Some(&b'\\')
                                    && self.s.get(self.pos + 1) == Some(&b'u')
                                {
                                    self.pos += 2;
                                    let lo = self.hex4()?;
                                    if (0xDC00..0xE000).contains(&lo) {
                                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                        out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                                    } else {
                                        out.push('\u{fffd}');
                                        self.pos = save;
                                    }
                                } else {
                                    out.push('\u{fffd}');
                                }
                            } else {
                                out.push(char::from_u32(hi).unwrap_or('\u{fffd}'));
                            }
                        }
                        _ => return None,
                    }
                    run_start = self.pos;
                }
                0..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.pos..self.pos + 4)?;
        let mut v = 0u32;
        for d in digits {
            v = v * 16 + (*d as char).to_digit(16)?;
        }
        self.pos += 4;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArray {
        JsonArray::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn valid_arrays_from_upstream_table() {
        assert_eq!(parse_json_array("[]"), strings(&[]));
        assert_eq!(parse_json_array("[\"\"]"), strings(&[""]));
        assert_eq!(parse_json_array("[ \"a\", \"b\" ]"), strings(&["a", "b"]));
        assert_eq!(
            parse_json_array("[\t\"a\",\t\"b\"\t]"),
            strings(&["a", "b"])
        );
        assert_eq!(parse_json_array("\t[\"a\"]\t"), strings(&["a"]));
        assert_eq!(
            parse_json_array(r#"["\" \\ \/ \b \f \n \r \t \u0000", "\u2665"]"#),
            strings(&["\" \\ / \u{8} \u{c} \n \r \t \0", "♥"])
        );
    }

    #[test]
    fn non_string_elements_are_the_must_be_strings_error() {
        for s in [
            "[1]",
            "[1.5]",
            "[{}]",
            "[[]]",
            "[true]",
            "[false]",
            "[null]",
            r#"[ "echo", [ "nested json" ] ]"#,
            r#"["a", {"k": [1, "x"]}]"#,
        ] {
            assert_eq!(parse_json_array(s), JsonArray::NotAllStrings, "{s}");
        }
    }

    #[test]
    fn invalid_json_falls_back() {
        for s in [
            "['a']",
            "[\"a\"",
            "[\"a]",
            "[\"a\"] x",
            "[\"a\",]",
            "[\u{b}\"a\"]",
            "[\"a\nb\"]",
            "[1e400]",
            "[01]",
            "echo [\"a\"]",
            "",
            "[",
        ] {
            assert_eq!(parse_json_array(s), JsonArray::NotJson, "{s:?}");
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let deep = "[".repeat(100_000);
        assert_eq!(parse_json_array(&deep), JsonArray::NotJson);
        let ok = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(parse_json_array(&ok), JsonArray::NotAllStrings);
    }

    #[test]
    fn surrogates() {
        assert_eq!(parse_json_array(r#"["\ud83d\ude00"]"#), strings(&["😀"]));
        assert_eq!(parse_json_array(r#"["\ud83d"]"#), strings(&["\u{fffd}"]));
        assert_eq!(parse_json_array(r#"["\ud83dx"]"#), strings(&["\u{fffd}x"]));
    }
}
