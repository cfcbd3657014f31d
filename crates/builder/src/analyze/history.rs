//! Which instruction made which layer: the image config's history, read as Docker does.
//!
//! History entries without `"empty_layer": true` made the layers, in order. Their
//! `created_by` is what the builder recorded: BuildKit's `RUN |1 A=1 /bin/sh -c make #
//! buildkit`, `COPY app /app # buildkit`, the classic builder's `/bin/sh -c make` and
//! `/bin/sh -c #(nop)  COPY file:ab12 in /app`. [`Instruction::parse`] reduces each to the
//! keyword and the text a person wrote (`RUN make`).

use serde::Serialize;

/// One entry of an image config's `history`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// When it was made (RFC 3339, as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, as the builder recorded it.
    pub created_by: String,
    /// Free text (`buildkit.dockerfile.v0`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Whether it made no layer.
    pub empty_layer: bool,
}

/// Read the history of a config (its exact bytes); a missing or malformed history is empty.
pub fn read_history(config: &[u8]) -> Vec<HistoryEntry> {
    serde_json::from_slice::<serde_json::Value>(config)
        .map(|value| history_of(&value))
        .unwrap_or_default()
}

/// The history of a config already parsed as JSON; a missing or malformed history is empty.
pub fn history_of(value: &serde_json::Value) -> Vec<HistoryEntry> {
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    value
        .get("history")
        .and_then(|h| h.as_array())
        .map(|items| {
            items
                .iter()
                .map(|h| HistoryEntry {
                    created: h.get("created").and_then(|c| c.as_str()).map(String::from),
                    created_by: text(h, "created_by"),
                    comment: text(h, "comment"),
                    empty_layer: h
                        .get("empty_layer")
                        .and_then(|e| e.as_bool())
                        .unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// For each of `layers` layers, the index of the history entry that made it: entries that
/// are not `empty_layer`, matched in order. Layers past the end of the history get `None`.
pub fn layer_entries(history: &[HistoryEntry], layers: usize) -> Vec<Option<usize>> {
    let mut made = history
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.empty_layer)
        .map(|(i, _)| i);
    (0..layers).map(|_| made.next()).collect()
}

/// An instruction as a person wrote it, recovered from a history `created_by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// The upper-case keyword (`RUN`, `COPY`), or empty when the text names none.
    pub keyword: String,
    /// The rest: the command of a RUN without the shell and build-arg prefix, the sources
    /// and destination of a COPY.
    pub text: String,
}

const KEYWORDS: [&str; 18] = strata_parser::INSTRUCTION_NAMES;

impl Instruction {
    /// Reduce a `created_by` to keyword and text.
    pub fn parse(created_by: &str) -> Instruction {
        let mut s = created_by.trim();
        if let Some(rest) = s.strip_suffix("# buildkit") {
            s = rest.trim_end();
        }
        // The classic builder: `/bin/sh -c #(nop) CMD ["sh"]` for metadata and COPY/ADD,
        // `/bin/sh -c make` for RUN.
        if let Some(rest) = s.strip_prefix("/bin/sh -c #(nop)") {
            s = rest.trim();
        } else if let Some(rest) = s.strip_prefix("/bin/sh -c ") {
            return Instruction {
                keyword: "RUN".into(),
                text: rest.trim().to_string(),
            };
        }
        let (first, rest) = match s.split_once(char::is_whitespace) {
            Some((first, rest)) => (first, rest.trim_start()),
            None => (s, ""),
        };
        let upper = first.to_ascii_uppercase();
        if first != upper || !KEYWORDS.contains(&upper.as_str()) {
            return Instruction {
                keyword: String::new(),
                text: s.to_string(),
            };
        }
        let text = if upper == "RUN" {
            strip_shell(strip_build_args(rest))
        } else {
            rest
        };
        Instruction {
            keyword: upper,
            text: text.trim().to_string(),
        }
    }

    /// `RUN make`, or the text alone when there is no keyword; on one line, each run of
    /// whitespace (the tabs and newlines of continuation lines and heredocs) one space, so
    /// tables and messages stay aligned.
    pub fn display(&self) -> String {
        let text = self.text.split_whitespace().collect::<Vec<_>>().join(" ");
        match (self.keyword.is_empty(), text.is_empty()) {
            (true, _) => text,
            (false, true) => self.keyword.clone(),
            (false, false) => format!("{} {text}", self.keyword),
        }
    }

    /// Whether the instruction copies files in from outside the image (COPY or ADD).
    pub fn is_copy(&self) -> bool {
        self.keyword == "COPY" || self.keyword == "ADD"
    }
}

/// BuildKit writes the build args a RUN sees as `|2 A=1 B=2 ` before the command.
fn strip_build_args(s: &str) -> &str {
    let Some(rest) = s.strip_prefix('|') else {
        return s;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Ok(n) = rest[..digits].parse::<usize>() else {
        return s;
    };
    let mut rest = rest[digits..].trim_start();
    for _ in 0..n {
        rest = match rest.split_once(char::is_whitespace) {
            Some((_, after)) => after.trim_start(),
            None => "",
        };
    }
    rest
}

/// `/bin/sh -c cmd`, `/bin/bash -o pipefail -c cmd`: the command without the shell.
fn strip_shell(s: &str) -> &str {
    let first = s.split_whitespace().next().unwrap_or("");
    let base = first.rsplit('/').next().unwrap_or(first);
    if !first.starts_with('/') || !base.ends_with("sh") {
        return s;
    }
    match s.find(" -c ") {
        Some(i) => &s[i + 4..],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(created_by: &str) -> String {
        Instruction::parse(created_by).display()
    }

    #[test]
    fn created_by_texts_reduce_to_what_was_written() {
        assert_eq!(
            text("RUN /bin/sh -c apt-get update # buildkit"),
            "RUN apt-get update"
        );
        assert_eq!(
            text("RUN |2 A=1 B=two /bin/sh -c echo $A$B # buildkit"),
            "RUN echo $A$B"
        );
        assert_eq!(
            text("RUN /bin/bash -o pipefail -c make -C src # buildkit"),
            "RUN make -C src"
        );
        assert_eq!(text("COPY app /app # buildkit"), "COPY app /app");
        assert_eq!(text("/bin/sh -c make"), "RUN make");
        assert_eq!(
            text("/bin/sh -c #(nop) ADD file:abc123 in / "),
            "ADD file:abc123 in /"
        );
        assert_eq!(text("WORKDIR /app"), "WORKDIR /app");
        assert_eq!(text("RUN [\"make\" \"all\"]"), "RUN [\"make\" \"all\"]");
        assert_eq!(text("made by hand"), "made by hand");
        assert_eq!(text(""), "");
        assert_eq!(text("|x"), "|x");
        assert!(Instruction::parse("ADD x /y").is_copy());
    }

    #[test]
    fn layers_match_entries_that_made_layers_in_order() {
        let h = |empty: bool| HistoryEntry {
            empty_layer: empty,
            ..HistoryEntry::default()
        };
        let history = [h(false), h(true), h(false), h(true)];
        assert_eq!(layer_entries(&history, 2), [Some(0), Some(2)]);
        assert_eq!(layer_entries(&history, 3), [Some(0), Some(2), None]);
        assert_eq!(layer_entries(&[], 1), [None]);
    }

    #[test]
    fn history_is_read_leniently() {
        let config = br#"{"history":[{"created_by":"RUN /bin/sh -c make # buildkit","comment":"buildkit.dockerfile.v0"},{"created_by":"CMD [\"sh\"]","empty_layer":true},{"author":"x"}]}"#;
        let h = read_history(config);
        assert_eq!(h.len(), 3);
        assert!(h[1].empty_layer && !h[0].empty_layer);
        assert_eq!(h[2].created_by, "");
        assert!(read_history(b"not json").is_empty());
        assert!(read_history(b"{}").is_empty());
    }

    #[test]
    fn display_is_one_line() {
        let i = Instruction {
            keyword: "RUN".into(),
            text: "set -eux; \tcd /src;\n\tmake  all".into(),
        };
        assert_eq!(i.display(), "RUN set -eux; cd /src; make all");
    }
}
