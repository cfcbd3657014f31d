//! Go's `fmt` spellings that BuildKit's history entries are made of.
//!
//! BuildKit writes `created_by` with `fmt.Sprintf`: `CMD %q` of a string slice gives
//! `CMD ["cat" "/opt/env"]`, `SHELL %v` gives `SHELL [/bin/bash -c]`, `EXPOSE %v` of a port
//! set gives `EXPOSE map[80/tcp:{}]`, and `HEALTHCHECK %q` of the health-check struct gives
//! `HEALTHCHECK &{["CMD-SHELL" "true"] "30s" "0s" "0s" "0s" '\x03'}`. Tools and people read
//! these strings (`docker history`), so we write them the same way.

use std::fmt::Write as _;

/// Go's `strconv.Quote`: a double-quoted string with Go escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        escape_char(c, '"', &mut out);
    }
    out.push('"');
    out
}

/// Go's `strconv.QuoteRune` of a number, which `%q` prints for an integer (`'\x03'`).
pub fn quote_rune(value: i64) -> String {
    let c = u32::try_from(value)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}');
    let mut out = String::from("'");
    escape_char(c, '\'', &mut out);
    out.push('\'');
    out
}

fn escape_char(c: char, quote: char, out: &mut String) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c == '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_printable(c) => out.push(c),
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of Go's `unicode.IsPrint` that agrees on everything a Dockerfile
/// plausibly holds: controls and the format/separator code points are not printable.
fn is_printable(c: char) -> bool {
    let format_or_separator =
        matches!(c as u32, 0x80..=0x9f | 0xad | 0x2028 | 0x2029 | 0x200b..=0x200f | 0xfeff);
    let odd_space = c.is_whitespace() && c != ' ';
    !(c.is_control() || format_or_separator || odd_space)
}

/// `%q` of a string slice: `["a" "b"]`.
pub fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// `%v` of a string slice: `[a b]`.
pub fn list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// `%v` of a Go `map[string]struct{}`: `map[443/tcp:{} 80/tcp:{}]` (keys sorted bytewise,
/// as Go's `fmt` sorts them).
pub fn set(keys: &[String]) -> String {
    let mut keys: Vec<&String> = keys.iter().collect();
    keys.sort();
    keys.dedup();
    let parts: Vec<String> = keys.iter().map(|k| format!("{k}:{{}}")).collect();
    format!("map[{}]", parts.join(" "))
}

/// Go's `time.Duration.String` of a count of nanoseconds (Go durations are `int64`
/// nanoseconds): `0s`, `1.5s`, `1m30s`, `2h0m0s`, `500ms`, `1.5µs`, `100ns`.
pub fn duration_nanos(nanos: i128) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        // Below a second: one unit with a fraction.
        let (unit, scale) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&fraction(u, scale));
        out.push_str(unit);
    } else {
        let secs_total = u / 1_000_000_000;
        let frac = u % 1_000_000_000;
        let hours = secs_total / 3600;
        let minutes = (secs_total % 3600) / 60;
        let seconds = secs_total % 60;
        if hours > 0 {
            let _ = write!(out, "{hours}h");
        }
        if hours > 0 || minutes > 0 {
            let _ = write!(out, "{minutes}m");
        }
        out.push_str(&fraction(seconds * 1_000_000_000 + frac, 1_000_000_000));
        out.push('s');
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// `value / scale` with the fraction's trailing zeros removed (`1500, 1000` -> `1.5`).
fn fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let rest = value % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let digits = scale.to_string().len() - 1;
    let frac = format!("{rest:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote("cat"), "\"cat\"");
        assert_eq!(quote("a \"b\"\\c\n\t"), "\"a \\\"b\\\"\\\\c\\n\\t\"");
        assert_eq!(quote("\x01é\u{7f}"), "\"\\x01é\\x7f\"");
        assert_eq!(
            quote_list(&["cat".into(), "/opt/env".into()]),
            "[\"cat\" \"/opt/env\"]"
        );
        assert_eq!(quote_list(&[]), "[]");
        assert_eq!(quote_rune(3), "'\\x03'");
        assert_eq!(quote_rune(0), "'\\x00'");
        assert_eq!(quote_rune(65), "'A'");
        assert_eq!(quote_rune(10), "'\\n'");
        assert_eq!(quote_rune(39), "'\\''");
    }

    #[test]
    fn lists_and_sets_like_go() {
        assert_eq!(list(&["/bin/bash".into(), "-c".into()]), "[/bin/bash -c]");
        assert_eq!(
            set(&["80/tcp".into(), "443/tcp".into(), "80/tcp".into()]),
            "map[443/tcp:{} 80/tcp:{}]"
        );
    }

    #[test]
    fn durations_like_go() {
        let cases: [(i128, &str); 9] = [
            (0, "0s"),
            (100, "100ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (1_500_000_000, "1.5s"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (7_200_000_000_000, "2h0m0s"),
            (3_723_000_000_000, "1h2m3s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(duration_nanos(nanos), want, "{nanos}");
        }
        assert_eq!(duration_nanos(-1_500_000_000), "-1.5s");
    }
}
