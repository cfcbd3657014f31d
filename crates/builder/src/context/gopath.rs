//! Go's `path/filepath.Clean` and `filepath.Match`, restated, because Docker's `.dockerignore`
//! and `COPY` wildcards are defined by them and gitignore-style crates differ in the corners
//! (a `*` never crosses `/`, a class may, `\` escapes, malformed classes are errors...).

/// Go's `filepath.Clean` on a `/`-separated path: repeated slashes, `.` and `name/..`
/// removed lexically, `..` kept at the start of a relative path and dropped at the root;
/// `""` becomes `"."`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A pattern that `filepath.Match` rejects (`ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

/// Decodes one UTF-8 character like Go's `utf8.DecodeRune`: an invalid byte is U+FFFD of
/// width 1.
fn decode(bytes: &[u8]) -> (char, usize) {
    let width = match bytes.first() {
        None => return (char::REPLACEMENT_CHARACTER, 0),
        Some(0x00..=0x7f) => 1,
        Some(0xc2..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf4) => 4,
        Some(_) => return (char::REPLACEMENT_CHARACTER, 1),
    };
    match bytes.get(..width).and_then(|b| std::str::from_utf8(b).ok()) {
        Some(s) => (
            s.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER),
            width,
        ),
        None => (char::REPLACEMENT_CHARACTER, 1),
    }
}

/// Go's `filepath.Match(pattern, name)` on Unix: `*` matches any run of non-`/` bytes, `?`
/// one non-`/` character, `[...]` a character class (`^` negates, `a-z` ranges, `\`
/// escapes; a class can match `/`), `\c` the character `c`. The whole name must match.
/// A malformed pattern is an error even when the name would not match.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'outer: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest of the name unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        // Try the chunk at the current position.
        let (t, ok, err) = match_chunk(chunk, name);
        // The last chunk must use up the whole name (or a later star may still match).
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if let Some(e) = err {
            return Err(e);
        }
        if star {
            // Skip ahead, one byte at a time, never over a `/`.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (t, ok, err) = match_chunk(chunk, &name[i + 1..]);
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'outer;
                }
                if let Some(e) = err {
                    return Err(e);
                }
                i += 1;
            }
        }
        // No match: still check that the rest of the pattern is well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            if let (_, _, Some(e)) = match_chunk(chunk, b"") {
                return Err(e);
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the leading stars and the next chunk (up to the next star outside a class).
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let Some((b'*', rest)) = pattern.split_first() {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // A trailing backslash is reported by match_chunk.
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches `chunk` (no stars) against the start of `s`: (rest of `s`, matched, error).
/// After a mismatch the chunk is still parsed to the end, to report malformed syntax.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> (&'a [u8], bool, Option<BadPattern>) {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let (ch, n) = decode(s);
                    r = ch;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = match get_esc(chunk) {
                        Ok(v) => v,
                        Err(e) => return (b"", false, Some(e)),
                    };
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        match get_esc(&chunk[1..]) {
                            Ok((h, rest)) => {
                                hi = h;
                                chunk = rest;
                            }
                            Err(e) => return (b"", false, Some(e)),
                        }
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if c == b'\\' {
                    chunk = &chunk[1..];
                    match chunk.first() {
                        Some(&l) => l,
                        None => return (b"", false, Some(BadPattern)),
                    }
                } else {
                    c
                };
                if !failed {
                    if literal != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        (b"", false, None)
    } else {
        (s, true, None)
    }
}

/// One possibly escaped character of a class; `-`, `]` or the end of the pattern where a
/// character is expected are errors, and so is a class left open.
fn get_esc(mut chunk: &[u8]) -> Result<(char, &[u8]), BadPattern> {
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern);
            }
        }
        Some(_) => {}
    }
    let (r, n) = decode(chunk);
    if r == char::REPLACEMENT_CHARACTER && n == 1 {
        return Err(BadPattern);
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, rest))
}

/// Whether a path component contains an unescaped `*`, `?` or `[` (BuildKit's
/// `containsWildcards`).
pub fn has_wildcards(component: &str) -> bool {
    let bytes = component.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_lexical() {
        let cases = [
            ("", "."),
            (".", "."),
            ("a/b/../c", "a/c"),
            ("a//b/./c/", "a/b/c"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("//a", "/a"),
            ("./!x", "!x"),
            ("!a/../b", "b"),
            ("a/..", "."),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    /// Go's own Match table (path/filepath/match_test.go), restated.
    #[test]
    fn match_agrees_with_go() {
        let ok = |p: &str, s: &str, want: bool| {
            assert_eq!(go_match(p, s), Ok(want), "Match({p:?}, {s:?})");
        };
        let bad = |p: &str, s: &str| {
            assert_eq!(go_match(p, s), Err(BadPattern), "Match({p:?}, {s:?})");
        };
        ok("abc", "abc", true);
        ok("*", "abc", true);
        ok("*c", "abc", true);
        ok("a*", "a", true);
        ok("a*", "abc", true);
        ok("a*", "ab/c", false);
        ok("a*/b", "abc/b", true);
        ok("a*/b", "a/c/b", false);
        ok("a*b*c*d*e*/f", "axbxcxdxe/f", true);
        ok("a*b*c*d*e*/f", "axbxcxdxexxx/f", true);
        ok("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false);
        ok("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false);
        ok("a*b?c*x", "abxbbxdbxebxczzx", true);
        ok("a*b?c*x", "abxbbxdbxebxczzy", false);
        ok("ab[c]", "abc", true);
        ok("ab[b-d]", "abc", true);
        ok("ab[e-g]", "abc", false);
        ok("ab[^c]", "abc", false);
        ok("ab[^b-d]", "abc", false);
        ok("ab[^e-g]", "abc", true);
        ok("a\\*b", "a*b", true);
        ok("a\\*b", "ab", false);
        ok("a?b", "a☺b", true);
        ok("a[^a]b", "a☺b", true);
        ok("a???b", "a☺b", false);
        ok("a[^a][^a][^a]b", "a☺b", false);
        ok("[a-ζ]*", "α", true);
        ok("*[a-ζ]", "A", false);
        ok("a?b", "a/b", false);
        ok("a*b", "a/b", false);
        ok("[\\]a]", "]", true);
        ok("[\\-]", "-", true);
        ok("[x\\-]", "x", true);
        ok("[x\\-]", "-", true);
        ok("[x\\-]", "z", false);
        ok("[\\-x]", "x", true);
        ok("[\\-x]", "-", true);
        ok("[\\-x]", "a", false);
        bad("[]a]", "]");
        bad("[-]", "-");
        bad("[x-]", "x");
        bad("[x-]", "-");
        bad("[x-]", "z");
        bad("[-x]", "x");
        bad("[-x]", "-");
        bad("[-x]", "a");
        bad("\\", "a");
        bad("[a-b-c]", "a");
        bad("[", "a");
        bad("[^", "a");
        bad("[^bc", "a");
        bad("a[", "a");
        bad("a[", "ab");
        bad("a[", "x");
        bad("a/b[", "x");
        bad("*x[", "a");
        ok("*x", "xxx", true);
        // A class is the one thing that can match a slash.
        ok("a[^x]b", "a/b", true);
    }

    #[test]
    fn wildcards_are_detected_unless_escaped() {
        assert!(has_wildcards("*.txt"));
        assert!(has_wildcards("file?"));
        assert!(has_wildcards("[ab]"));
        assert!(!has_wildcards("plain.txt"));
        assert!(!has_wildcards("a\\*b"));
        assert!(!has_wildcards("a\\[b"));
    }
}
