//! Tying history entries back to Dockerfile lines.
//!
//! Image histories keep the instruction text but not where it came from, so given the
//! Dockerfile an image was built from, entries are matched to the instructions of the target
//! stage and the stages it is built `FROM`, walking both backwards from the end (the last
//! history entries are the target stage's; entries of a base image match nothing). An entry
//! matches the nearest instruction above with the same keyword and the same text, where a
//! `$VAR`/`${VAR}` in the Dockerfile matches any text (history may hold expanded values);
//! when the text differs (heredocs, exec form) but the next instruction has the same keyword,
//! that one is taken, in order.

use serde::Serialize;
use strata_parser::{
    CommandLine, Dockerfile, Instruction as DfInstruction, InstructionKind, Source,
};

use super::history::{HistoryEntry, Instruction};

/// Where an instruction is in the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLine {
    /// The Dockerfile's name as the caller gave it.
    pub file: String,
    /// First line (1-based).
    pub line: usize,
    /// Last line (1-based, inclusive; continuations and heredocs included).
    pub end_line: usize,
}

impl std::fmt::Display for SourceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.end_line > self.line {
            write!(f, "{}:{}-{}", self.file, self.line, self.end_line)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// The Dockerfile an image was built from, to name lines in the analysis.
#[derive(Debug, Clone, Copy)]
pub struct DockerfileSource<'a> {
    /// How to name the file in messages (`Dockerfile`, `docker/app.Dockerfile`).
    pub name: &'a str,
    /// The parsed file.
    pub dockerfile: &'a Dockerfile,
    /// The index of the stage that was built.
    pub stage: usize,
}

impl<'a> DockerfileSource<'a> {
    /// The file `name` whose stage `target` (`--target`; the last stage when `None`) was built.
    /// Errors when there is no such stage.
    pub fn new(
        name: &'a str,
        dockerfile: &'a Dockerfile,
        target: Option<&str>,
    ) -> Result<DockerfileSource<'a>, strata_parser::ParseError> {
        let stage = dockerfile.target(target)?.index;
        Ok(DockerfileSource {
            name,
            dockerfile,
            stage,
        })
    }
}

/// Keywords whose history entries can stand for a filesystem change.
const LAYER_KEYWORDS: [&str; 4] = ["RUN", "COPY", "ADD", "WORKDIR"];

/// The text a history entry would carry for this instruction (unexpanded).
fn written_text(i: &DfInstruction) -> Option<String> {
    let paths = |sources: &[Source], dest: &str| {
        let mut parts: Vec<&str> = sources
            .iter()
            .map(|s| match s {
                Source::Path(p) => p.as_str(),
                Source::Inline(f) => f.name.as_str(),
            })
            .collect();
        parts.push(dest);
        parts.join(" ")
    };
    match &i.kind {
        InstructionKind::Run(r) => Some(match &r.command {
            CommandLine::Shell(s) => s.clone(),
            CommandLine::Exec(v) => v.join(" "),
        }),
        InstructionKind::Copy(c) => Some(paths(&c.sources, &c.dest)),
        InstructionKind::Add(a) => Some(paths(&a.sources, &a.dest)),
        InstructionKind::Workdir(w) => Some(w.path.clone()),
        _ => None,
    }
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `text` matches `pattern`, where each variable reference in `pattern` matches any
/// text (a glob whose only wildcard is `$NAME`/`${...}`).
fn matches_with_vars(pattern: &str, text: &str) -> bool {
    let mut parts: Vec<String> = vec![String::new()];
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('$', Some('{')) => {
                let mut depth = 0;
                for d in chars.by_ref() {
                    match d {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                parts.push(String::new());
            }
            ('$', Some(n)) if n.is_ascii_alphabetic() || *n == '_' => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '_')
                {
                    chars.next();
                }
                parts.push(String::new());
            }
            _ => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, rest) = parts.split_first().expect("at least one part");
    let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    let (last, middle) = rest.split_last().expect("a variable makes two parts");
    for part in middle {
        match remaining.find(part.as_str()) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last.as_str())
}

/// For each history entry, the Dockerfile line it came from (`None` for base-image entries
/// and entries that match nothing).
pub fn map_history(
    source: &DockerfileSource<'_>,
    history: &[HistoryEntry],
) -> Vec<Option<SourceLine>> {
    let df = source.dockerfile;
    let mut out = vec![None; history.len()];
    let Some(target) = df.stages.get(source.stage) else {
        return out;
    };
    // The chain of stages the target is built on, base first.
    let mut chain = vec![target];
    let mut seen = std::collections::BTreeSet::from([target.index]);
    while let Some(i) = chain
        .last()
        .and_then(|s| df.stage_before(&s.from.image, s.index))
    {
        if !seen.insert(i) {
            break;
        }
        chain.push(&df.stages[i]);
    }
    chain.reverse();
    let candidates: Vec<(&'static str, String, &DfInstruction)> = chain
        .iter()
        .flat_map(|s| s.instructions.iter())
        .filter_map(|i| {
            let keyword = i.kind.name();
            LAYER_KEYWORDS
                .contains(&keyword)
                .then(|| (keyword, squash(&written_text(i).unwrap_or_default()), i))
        })
        .collect();
    // Candidates at positions < next are still unmatched.
    let mut next = candidates.len();
    for (h, slot) in history.iter().zip(out.iter_mut()).rev() {
        if next == 0 {
            break;
        }
        let ins = Instruction::parse(&h.created_by);
        if !LAYER_KEYWORDS.contains(&ins.keyword.as_str()) {
            continue;
        }
        let text = squash(&ins.text);
        let found = (0..next)
            .rev()
            .find(|&k| candidates[k].0 == ins.keyword && matches_with_vars(&candidates[k].1, &text))
            .or_else(|| (candidates[next - 1].0 == ins.keyword).then_some(next - 1));
        if let Some(k) = found {
            let span = candidates[k].2.span;
            *slot = Some(SourceLine {
                file: source.name.to_string(),
                line: span.start_line,
                end_line: span.end_line,
            });
            next = k;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(by: &str) -> HistoryEntry {
        HistoryEntry {
            created_by: by.to_string(),
            ..HistoryEntry::default()
        }
    }

    #[test]
    fn variables_match_any_text() {
        assert!(matches_with_vars("app/$VERSION /opt", "app/1.2 /opt"));
        assert!(matches_with_vars("${A:-x}-$B", "1-2"));
        assert!(matches_with_vars("a $X b $Y", "a 1 b 2"));
        assert!(!matches_with_vars("a $X b", "a 1 c"));
        assert!(matches_with_vars("plain", "plain"));
        assert!(!matches_with_vars("plain", "plainer"));
        assert!(!matches_with_vars("x$A", "y1"));
        assert!(matches_with_vars("$A", ""));
        assert!(!matches_with_vars("ab${X}ba", "aba"));
        assert!(matches_with_vars("ab$Xba", "aba"), "`$Xba` is one name");
    }

    #[test]
    fn history_of_a_multi_stage_build_maps_to_the_final_stage_chain() {
        let text = "\
FROM busybox AS build
RUN make all
FROM build AS test
ARG V=1
RUN apt-get update && \\
    apt-get install -y curl
COPY app/$V /app
WORKDIR /srv
RUN rm -rf /var/lib/apt/lists/*
CMD [\"/app\"]
";
        let df = strata_parser::parse(text).unwrap();
        let source = DockerfileSource::new("Dockerfile", &df, None).unwrap();
        let history = [
            entry("ADD rootfs.tar / # buildkit"),
            entry("CMD [\"sh\"]"),
            entry("RUN /bin/sh -c make all # buildkit"),
            entry("ARG V=1"),
            entry("RUN |1 V=1 /bin/sh -c apt-get update &&     apt-get install -y curl # buildkit"),
            entry("COPY app/1 /app # buildkit"),
            entry("WORKDIR /srv"),
            entry("RUN /bin/sh -c rm -rf /var/lib/apt/lists/* # buildkit"),
            entry("CMD [\"/app\"]"),
        ];
        let lines: Vec<Option<String>> = map_history(&source, &history)
            .into_iter()
            .map(|l| l.map(|l| l.to_string()))
            .collect();
        assert_eq!(
            lines,
            [
                None,
                None,
                Some("Dockerfile:2".into()),
                None,
                Some("Dockerfile:5-6".into()),
                Some("Dockerfile:7".into()),
                Some("Dockerfile:8".into()),
                Some("Dockerfile:9".into()),
                None
            ]
        );
        assert!(DockerfileSource::new("Dockerfile", &df, Some("nothere")).is_err());
        // Built with --target build: only the first stage's line.
        let build = DockerfileSource::new("Dockerfile", &df, Some("build")).unwrap();
        let lines: Vec<Option<usize>> = map_history(&build, &history[..3])
            .into_iter()
            .map(|l| l.map(|l| l.line))
            .collect();
        assert_eq!(lines, [None, None, Some(2)]);
    }

    #[test]
    fn a_changed_text_falls_back_to_the_next_instruction_of_the_same_keyword() {
        let df = strata_parser::parse("FROM x\nRUN <<EOF\necho hi\nEOF\nCOPY a /a\n").unwrap();
        let source = DockerfileSource::new("D", &df, None).unwrap();
        let history = [
            entry("RUN /bin/sh -c base # buildkit"),
            entry("RUN /bin/sh -c echo hi # buildkit"),
            entry("COPY a /a # buildkit"),
        ];
        let lines: Vec<Option<usize>> = map_history(&source, &history)
            .into_iter()
            .map(|l| l.map(|l| l.line))
            .collect();
        assert_eq!(lines, [None, Some(2), Some(5)]);
    }
}
