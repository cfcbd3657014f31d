//! Heredocs (`<<EOF`, `<<-EOF`, `<<'EOF'`, `3<<EOF`) attached to RUN, COPY and ADD.

use crate::shell::{Lexer, NoEnv};

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, quotes removed (`EOF` for `<<'EOF'`).
    pub name: String,
    /// The body exactly as written: every line with its line ending, leading tabs kept
    /// even for `<<-` (see [`Heredoc::chomped`]).
    pub content: String,
    /// Whether variables in the body are expanded (false when any part of the
    /// terminator word was quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines (and from the terminator line).
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), if any.
    pub fd: Option<u64>,
}

impl Heredoc {
    /// The body with leading tabs removed from every line when `chomp` is set (what the
    /// consumer uses), or the body as is.
    pub fn chomped(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        chomp_tabs(&self.content)
    }
}

/// Remove the leading tabs of every line.
pub(crate) fn chomp_tabs(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// Recognise one word as a heredoc marker: optional digits, `<<`, optional `-`,
/// optional blanks, then a terminator that is one shell word. Returns `Ok(None)` for
/// words that are not markers and an error for a marker with unbalanced quotes.
pub(crate) fn parse_heredoc_word(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = if digits == 0 {
        None
    } else {
        Some(word[..digits].parse::<u64>().unwrap_or(u64::MAX))
    };
    // Lex the terminator with and without quote removal: if quote characters disappear,
    // some part of it was quoted, which turns expansion of the body off.
    let plain = Lexer {
        skip_unset: true,
        ..Lexer::new('\\')
    };
    let words = plain
        .expand_words(rest, &NoEnv)
        .map_err(|e| e.to_string())?
        .words;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Lexer {
        raw_quotes: true,
        ..plain
    };
    let raw_words = raw
        .expand_words(rest, &NoEnv)
        .map_err(|e| e.to_string())?
        .words;
    if raw_words.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = quotes(&words[0]) == quotes(&raw_words[0]);
    Ok(Some(Heredoc {
        name: words.into_iter().next().unwrap_or_default(),
        content: String::new(),
        expand,
        chomp,
        fd,
    }))
}

/// Every heredoc marker on a logical line, in order. The line is split into shell words
/// keeping quotes, escapes and variables raw; a line that does not split (unbalanced
/// quotes) has no heredocs, as upstream.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let lex = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset: true,
        ..Lexer::new('\\')
    };
    let Ok(split) = lex.expand_words(line, &NoEnv) else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    for word in &split.words {
        if let Some(doc) = parse_heredoc_word(word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<(String, bool, bool, Option<u64>)> {
        heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|h| (h.name, h.expand, h.chomp, h.fd))
            .collect()
    }

    fn one(name: &str, expand: bool, chomp: bool) -> Vec<(String, bool, bool, Option<u64>)> {
        vec![(name.to_string(), expand, chomp, None)]
    }

    /// Upstream's marker helper table (parser FORMAT.md, "Heredocs").
    #[test]
    fn marker_helper_table() {
        for w in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
        ] {
            assert_eq!(parse_heredoc_word(w).unwrap().unwrap().name, "EOF", "{w}");
        }
        for w in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc_word(w).is_err(), "{w}");
        }
        for w in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF"] {
            assert_eq!(parse_heredoc_word(w).unwrap(), None, "{w}");
        }
    }

    /// Upstream's heredocs-from-line table and the name/expand/chomp/fd expectations.
    #[test]
    fn line_table() {
        assert_eq!(names("RUN <<EOF"), one("EOF", true, false));
        assert_eq!(names("RUN <<-EOF"), one("EOF", true, true));
        assert_eq!(names("RUN <<'EOF'"), one("EOF", false, false));
        assert_eq!(
            names("RUN 4<<EOF"),
            vec![("EOF".into(), true, false, Some(4))]
        );
        assert_eq!(
            names("RUN <<EOF <<EOF2"),
            vec![
                ("EOF".into(), true, false, None),
                ("EOF2".into(), true, false, None)
            ]
        );
        assert!(names("RUN '<<EOF'").is_empty());
        assert!(names("RUN \"<<EOF\"").is_empty());
        assert!(names("RUN \"<<NOHEREDOC\"").is_empty());
        assert_eq!(names("RUN <<eo'f'"), one("eof", false, false));
        assert_eq!(names("RUN <<eo\\'f"), one("eo'f", true, false));
        assert_eq!(names("RUN <<'e'o\\'f"), one("eo'f", false, false));
        assert_eq!(names("RUN <<'one two'"), one("one two", false, false));
        assert_eq!(names("RUN <<$EOF"), one("$EOF", true, false));
        assert_eq!(names("RUN <<  EOF"), one("EOF", true, false));
        assert_eq!(names("RUN <<  EOF  > foo"), one("EOF", true, false));
        assert_eq!(names("RUN << -EOF"), one("-EOF", true, false));
        assert_eq!(names("RUN <<COMPLEX python3"), one("COMPLEX", true, false));
        assert_eq!(names("COPY <<file.txt /dest"), one("file.txt", true, false));
        assert_eq!(
            names("RUN --mount=type=cache,target=/foo <<MOUNT"),
            one("MOUNT", true, false)
        );
        assert_eq!(
            names("RUN 3<<EMPTY2"),
            vec![("EMPTY2".into(), true, false, Some(3))]
        );
        assert_eq!(names("RUN <<-'NOEXPAND'"), one("NOEXPAND", false, true));
        // Unbalanced quotes on the line: no heredoc at all.
        assert!(names("RUN <<'EOF").is_empty());
    }

    #[test]
    fn chomp() {
        let h = Heredoc {
            name: "X".into(),
            content: "\thello\n\t\tworld\n".into(),
            expand: true,
            chomp: true,
            fd: None,
        };
        assert_eq!(h.chomped(), "hello\nworld\n");
    }
}
