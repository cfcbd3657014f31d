//! The small splitters BuildKit's line parsers use: keyword/rest, leading `--flags`,
//! whitespace-delimited words, and quote-aware words.

/// BuildKit's `[\t\v\f\r ]` (the separator between keyword and arguments, and between
/// whitespace-delimited arguments).
pub(crate) fn is_sep(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Split a logical line into its keyword and the rest (the rest keeps inner whitespace;
/// the separator run after the keyword is dropped). The line is trimmed first.
pub(crate) fn split_keyword(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.find(is_sep) {
        Some(i) => {
            let rest = line[i..].trim_start_matches(is_sep);
            (&line[..i], rest)
        }
        None => (line, ""),
    }
}

/// Collect the leading `--flag` words of `line` the way BuildKit's
/// `extractBuilderFlags` does and return them with the remaining text.
///
/// Collection stops at the first word that does not start with `--`; a bare `--` ends
/// collection and is dropped. Inside a flag word, quotes are removed and a backslash
/// keeps the next character literally (upstream always uses `\` here, even under
/// `# escape=``).
pub(crate) fn extract_flags(line: &str) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut rest = line;
    loop {
        let trimmed = rest.trim_start();
        if !trimmed.starts_with("--") {
            return (flags, trimmed);
        }
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        let mut chars = trimmed.char_indices().peekable();
        let mut end = trimmed.len();
        while let Some((i, c)) = chars.next() {
            match quote {
                None => {
                    if c.is_whitespace() {
                        end = i;
                        break;
                    }
                    if c == '\'' || c == '"' {
                        quote = Some(c);
                        blank_ok = true;
                        continue;
                    }
                    if c == '\\' {
                        match chars.next() {
                            Some((_, n)) => word.push(n),
                            None => continue,
                        }
                        continue;
                    }
                    word.push(c);
                }
                Some(q) => {
                    if c == q {
                        quote = None;
                        continue;
                    }
                    if c == '\\' {
                        match chars.next() {
                            Some((_, n)) => word.push(n),
                            None => {
                                quote = None;
                                continue;
                            }
                        }
                        continue;
                    }
                    word.push(c);
                }
            }
        }
        rest = &trimmed[end..];
        if word == "--" {
            return (flags, rest.trim_start());
        }
        if blank_ok || !word.is_empty() {
            flags.push(word);
        }
    }
}

/// Split on runs of `[\t\v\f\r ]` (no quote handling). `text` is expected trimmed.
pub(crate) fn split_ws(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(is_sep)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Cut `text` once at its first run of `[\t\v\f\r ]`: the legacy `ENV key value` form.
pub(crate) fn split_ws_once(text: &str) -> Option<(&str, &str)> {
    let i = text.find(is_sep)?;
    let value = text[i..].trim_start_matches(is_sep);
    Some((&text[..i], value))
}

/// BuildKit's `parseWords`: words separated by whitespace outside quotes; quote
/// characters and escapes stay in the word (they are removed later by expansion).
///
/// Because nothing inside a word is rewritten (an escape at the very end of the text is
/// the only character ever dropped, and it ends the last word), every word is a slice of
/// `rest`.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<&str> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    // Byte range of the current word.
    let mut start = 0usize;
    let mut end = 0usize;
    let mut chars = rest.char_indices().peekable();
    loop {
        let Some((i, ch)) = chars.next() else {
            if phase != Phase::Spaces && (blank_ok || end > start) {
                words.push(&rest[start..end]);
            }
            break;
        };
        let next_end = i + ch.len_utf8();
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
            start = i;
            end = i;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || end > start {
                    words.push(&rest[start..end]);
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                match chars.next() {
                    // An escape at the very end of the text is dropped.
                    None => continue,
                    Some((j, n)) => {
                        end = j + n.len_utf8();
                        continue;
                    }
                }
            }
            end = next_end;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            match chars.next() {
                None => {
                    phase = Phase::Word;
                    continue;
                }
                Some((j, n)) => {
                    end = j + n.len_utf8();
                    continue;
                }
            }
        }
        end = next_end;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_split() {
        assert_eq!(split_keyword("  RUN\t\techo  hi  "), ("RUN", "echo  hi"));
        assert_eq!(split_keyword("CMD"), ("CMD", ""));
        assert_eq!(split_keyword(""), ("", ""));
    }

    #[test]
    fn flags_like_upstream() {
        assert_eq!(extract_flags("foo /tmp/"), (vec![], "foo /tmp/"));
        assert_eq!(
            extract_flags("--user=me --doit=true foo /tmp/"),
            (
                vec!["--user=me".to_string(), "--doit=true".to_string()],
                "foo /tmp/"
            )
        );
        assert_eq!(
            extract_flags("--doit=true -- foo /tmp/"),
            (vec!["--doit=true".to_string()], "foo /tmp/")
        );
        assert_eq!(extract_flags("-- foo /tmp/"), (vec![], "foo /tmp/"));
        assert_eq!(
            extract_flags("--doit [ \"a\", \"b\" ]"),
            (vec!["--doit".to_string()], "[ \"a\", \"b\" ]")
        );
        assert_eq!(
            extract_flags("--chown=\"a b\" x y"),
            (vec!["--chown=a b".to_string()], "x y")
        );
        assert_eq!(
            extract_flags("--a=\\\"x y"),
            (vec!["--a=\"x".to_string()], "y")
        );
        assert_eq!(extract_flags("--x="), (vec!["--x=".to_string()], ""));
        assert_eq!(extract_flags("--"), (vec![], ""));
        assert_eq!(extract_flags("-x y"), (vec![], "-x y"));
    }

    #[test]
    fn words_like_upstream() {
        assert_eq!(
            parse_words("foo bar 'abc xyz'", '\\'),
            vec!["foo", "bar", "'abc xyz'"]
        );
        assert_eq!(parse_words("foo\\ bar", '\\'), vec!["foo\\ bar"]);
        assert_eq!(parse_words("한국어 ♥", '\\'), vec!["한국어", "♥"]);
        assert_eq!(
            parse_words("abc=\"123 456\" def", '\\'),
            vec!["abc=\"123 456\"", "def"]
        );
        assert_eq!(parse_words("a\\", '\\'), vec!["a"]);
        assert_eq!(parse_words("\"\"", '\\'), vec!["\"\""]);
        assert_eq!(parse_words("'unclosed word", '\\'), vec!["'unclosed word"]);
        assert_eq!(parse_words("name='a\\'b''", '\\'), vec!["name='a\\'b''"]);
    }

    #[test]
    fn whitespace_split() {
        assert_eq!(split_ws("9000 5000\t6000"), vec!["9000", "5000", "6000"]);
        assert!(split_ws("").is_empty());
        assert_eq!(
            split_ws_once("name value  more"),
            Some(("name", "value  more"))
        );
        assert_eq!(split_ws_once("name"), None);
    }
}
