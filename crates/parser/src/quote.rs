//! Go's `strconv.Quote`, which BuildKit's dump format uses for every string.

use std::fmt::Write;

/// Append `s` to `out` wrapped in double quotes and escaped the way Go's `strconv.Quote`
/// escapes it: printable characters stay as they are, `"` and `\` are backslashed, the
/// usual C escapes are used for BEL/BS/FF/LF/CR/TAB/VT, other control bytes become `\xNN`
/// and other non-printable characters `\uNNNN` / `\UNNNNNNNN`.
pub(crate) fn go_quote_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII
/// space. Without the Unicode category tables this approximates the non-printable set by
/// controls, separators other than U+0020, format characters, private use and
/// non-characters; unassigned code points count as printable.
fn is_go_printable(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_or_private = matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xD800..=0xF8FF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xF0000..=0x10FFFF
    );
    let non_character = (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE;
    !format_or_private && !non_character
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> String {
        let mut out = String::new();
        go_quote_into(&mut out, s);
        out
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(q("a b"), r#""a b""#);
        assert_eq!(
            q("\" \\ / \u{8} \u{c} \n \r \t \0"),
            r#""\" \\ / \b \f \n \r \t \x00""#
        );
        assert_eq!(q("♥ ☃ 한"), "\"♥ ☃ 한\"");
        assert_eq!(q("\u{7f}\u{a0}\u{200b}"), r#""\x7f\u00a0\u200b""#);
        assert_eq!(q("\u{f0000}"), r#""\U000f0000""#);
        assert_eq!(q("\u{7}\u{b}\u{1}"), r#""\a\v\x01""#);
    }
}
