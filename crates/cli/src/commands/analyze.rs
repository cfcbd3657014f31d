//! `strata analyze IMAGE`: why an image is as big as it is. Per layer the instruction that
//! made it, its size, the files it added, modified and removed and the bytes it wastes; the
//! image's efficiency; the largest wasted files; findings with their fix. `--layer N` lists
//! one layer's changes as a tree (dive's layer view, in plain text).
//!
//! The work is [`strata_builder::analyze`]; this module parses options and renders.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;
use strata_builder::analyze::{
    analyze, Analysis, AnalyzeOptions, Change, ChangeKind, DockerfileSource, LayerReport, NodeKind,
};

use super::read_input;
use crate::global::GlobalArgs;
use crate::ui::color::Palette;
use crate::ui::error::{AtPlace, Failure};
use crate::ui::{human, json, table::Table};

const EXAMPLES: &str = "\
Examples:
  strata analyze app:1                          layers, efficiency, wasted files, findings
  strata analyze -f Dockerfile app:1            the same, naming the Dockerfile line of each layer
  strata analyze --layer 3 app:1                layer 3's changes as a tree (A/M/D, sizes)
  strata analyze --format json app:1            everything as one JSON document
  strata analyze --fail-under 90% app:1         exit 1 when the efficiency is below 90%";

/// Output formats of `strata analyze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and findings for people.
    Text,
    /// One JSON document (for CI).
    Json,
}

/// Options of `strata analyze`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct AnalyzeArgs {
    /// Exit 1 when the efficiency (useful / stored file bytes) is below this: a fraction
    /// (`0.9`) or a percentage (`90%`, `90`).
    #[arg(long, value_name = "EFFICIENCY", value_parser = parse_efficiency)]
    fail_under: Option<f64>,
    /// List the changes of layer N (1 = the base layer) as a tree instead.
    #[arg(long, value_name = "N")]
    layer: Option<usize>,
    /// The Dockerfile the image was built from: findings and layers name its lines.
    #[arg(short = 'f', long = "file", value_name = "DOCKERFILE")]
    file: Option<PathBuf>,
    /// The stage the image was built from (`--target` of the build); default: the last.
    #[arg(long, value_name = "STAGE", requires = "file")]
    target: Option<String>,
    /// How many of the largest wasted files to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Don't truncate instructions.
    #[arg(long)]
    no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The image (reference or ID).
    #[arg(value_name = "IMAGE")]
    image: String,
}

/// `0.9`, `90%` and `90` all mean 90%; values must lie in 0..=1 or 0%..=100%.
fn parse_efficiency(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, percent) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number (write 0.9 or 90%)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} is not between 0 and 1 (or 0% and 100%)"));
    }
    let fraction = if percent || value > 1.0 {
        value / 100.0
    } else {
        value
    };
    if fraction > 1.0 {
        return Err(format!("{text:?} is more than 100%"));
    }
    Ok(fraction)
}

/// `22.8%`.
fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

pub fn run(global: &GlobalArgs, args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let place = format!("image {}", args.image);
    let image = store.resolve(&args.image).at(&place)?;
    let dockerfile = match &args.file {
        Some(path) => {
            let (name, text) = read_input(path)?;
            let df = strata_parser::parse(&text).at(format!("file {name}"))?;
            Some((name, df))
        }
        None => None,
    };
    let source = match &dockerfile {
        Some((name, df)) => Some(
            DockerfileSource::new(name, df, args.target.as_deref())
                .map_err(|e| Failure::usage(e.to_string()).at(format!("file {name}")))?,
        ),
        None => None,
    };
    if let Some(n) = args.layer {
        if n == 0 || n > image.layers.len() {
            return Err(Failure::usage(format!(
                "--layer {n} is out of range: the image has {} layer{}",
                image.layers.len(),
                if image.layers.len() == 1 { "" } else { "s" }
            ))
            .at(&place)
            .hint("layers count from 1, the base layer; `strata analyze IMAGE` lists them")
            .into());
        }
    }
    let options = AnalyzeOptions {
        dockerfile: source,
        top: args.top,
        ..AnalyzeOptions::default()
    };
    let analysis = analyze(&store, &image, &options).at(&place)?;
    let mut out = std::io::stdout().lock();
    match (args.layer, args.format) {
        (Some(n), Format::Json) => {
            let layer = &analysis.layers[n - 1];
            json::write_pretty(
                &mut out,
                &LayerJson {
                    reference: &args.image,
                    layer,
                    changes: &layer.changes,
                },
            )?;
        }
        (Some(n), Format::Text) => {
            out.write_all(render_layer(&analysis, n - 1, args.no_trunc).as_bytes())?;
        }
        (None, Format::Json) => json::write_pretty(
            &mut out,
            &AnalysisJson {
                reference: &args.image,
                analysis: &analysis,
            },
        )?,
        (None, Format::Text) => {
            let text = render(&analysis, &args.image, args.no_trunc, Palette::stdout());
            out.write_all(text.as_bytes())?;
        }
    }
    out.flush()?;
    if let Some(min) = args.fail_under {
        if analysis.efficiency < min {
            return Err(Failure::new(format!(
                "efficiency {} is below --fail-under {}",
                percent(analysis.efficiency),
                percent(min)
            ))
            .at(&place)
            .into());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct AnalysisJson<'a> {
    reference: &'a str,
    #[serde(flatten)]
    analysis: &'a Analysis,
}

#[derive(Serialize)]
struct LayerJson<'a> {
    reference: &'a str,
    layer: &'a LayerReport,
    changes: &'a [Change],
}

fn instruction(l: &LayerReport, no_trunc: bool) -> String {
    let text = l
        .instruction
        .as_ref()
        .map(|i| i.display())
        .unwrap_or_default();
    if no_trunc {
        text
    } else {
        human::ellipsis(&text, 60)
    }
}

/// The whole report.
fn render(a: &Analysis, name: &str, no_trunc: bool, palette: Palette) -> String {
    let t = &a.totals;
    let mut s = String::new();
    let layers = a.layers.len();
    let _ = writeln!(
        s,
        "Image:       {name} ({})",
        human::short_id(&a.image.to_string())
    );
    let _ = writeln!(
        s,
        "Size:        {} in {layers} layer{} ({} of file contents)",
        human::size(t.size),
        if layers == 1 { "" } else { "s" },
        human::size(t.content_bytes)
    );
    let _ = writeln!(
        s,
        "Efficiency:  {} ({} useful, {} wasted: {} deleted, {} overwritten, {} duplicated)",
        percent(a.efficiency),
        human::size(t.useful_bytes),
        human::size(t.wasted_bytes),
        human::size(t.deleted_bytes),
        human::size(t.overwritten_bytes),
        human::size(t.duplicate_bytes),
    );
    s.push('\n');
    let with_lines = a.layers.iter().any(|l| l.source.is_some());
    let mut header = vec!["LAYER", "SIZE", "ADDED", "MODIFIED", "REMOVED", "WASTED"];
    if with_lines {
        header.push("LINE");
    }
    header.push("CREATED BY");
    let mut table = Table::new(&header);
    for l in &a.layers {
        let mut row = vec![
            l.index.to_string(),
            human::size(l.size),
            l.added.to_string(),
            l.modified.to_string(),
            l.removed.to_string(),
            human::size(l.wasted_bytes),
        ];
        if with_lines {
            row.push(
                l.source
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
        }
        row.push(instruction(l, no_trunc));
        table.row(row);
    }
    s.push_str(&table.render());
    if !a.wasted.is_empty() {
        let _ = writeln!(
            s,
            "\nLargest wasted files ({} of {}):",
            a.wasted.len(),
            a.wasted_count
        );
        let mut table = Table::new(&["WASTED", "LAYER", "BY LAYER", "HOW", "PATH"]);
        for w in &a.wasted {
            let mut path = w.path.clone();
            if let Some(orig) = &w.duplicate_of {
                path.push_str(&format!(" (= {orig})"));
            }
            table.row(vec![
                human::size(w.bytes),
                w.layer.to_string(),
                w.by_layer.to_string(),
                w.waste.name().to_string(),
                path,
            ]);
        }
        s.push_str(&table.render());
    }
    if a.findings.is_empty() {
        s.push_str("\nNo findings.\n");
    } else {
        let _ = writeln!(s, "\nFindings ({}):", a.findings.len());
        for f in &a.findings {
            let place = match &f.source {
                Some(src) => src.to_string(),
                None => format!("layer {}", f.layer),
            };
            let level = format!("{}[{}]", f.severity.name(), f.rule.id());
            let level = match f.severity {
                strata_builder::analyze::Severity::Warning => palette.warn(&level),
                strata_builder::analyze::Severity::Info => level,
            };
            let _ = writeln!(s, "{place}: {level}: {}", f.message);
            let _ = writeln!(s, "  {} {}", palette.hint("fix:"), f.fix);
        }
    }
    s
}

/// A directory tree of one layer's changes.
#[derive(Default)]
struct TreeNode {
    change: Option<(ChangeKind, NodeKind, u64)>,
    children: BTreeMap<String, TreeNode>,
}

impl TreeNode {
    fn insert(&mut self, c: &Change) {
        let mut node = self;
        for part in c.path.split('/').filter(|p| !p.is_empty()) {
            node = node.children.entry(part.to_string()).or_default();
        }
        node.change = Some((c.change, c.kind, c.size));
    }

    /// Bytes added or modified at and below this node.
    fn added(&self) -> u64 {
        let own = match self.change {
            Some((ChangeKind::Added | ChangeKind::Modified, _, size)) => size,
            _ => 0,
        };
        own + self.children.values().map(TreeNode::added).sum::<u64>()
    }

    fn is_dir(&self) -> bool {
        !self.children.is_empty() || matches!(self.change, Some((_, NodeKind::Dir, _)))
    }

    fn render(&self, name: &str, prefix: &str, last: bool, depth: usize, out: &mut String) {
        let (mark, size) = match self.change {
            Some((ChangeKind::Deleted, _, 0)) => ('D', human::size(0)),
            Some((ChangeKind::Deleted, _, size)) => ('D', format!("-{}", human::size(size))),
            Some((kind, _, _)) if self.is_dir() => (kind.letter(), human::size(self.added())),
            Some((kind, _, size)) => (kind.letter(), human::size(size)),
            None => (' ', human::size(self.added())),
        };
        let branch = match (depth, last) {
            (0, _) => "",
            (_, true) => "└── ",
            (_, false) => "├── ",
        };
        let slash = if self.is_dir() && depth > 0 { "/" } else { "" };
        let _ = writeln!(out, "{mark} {size:>8}  {prefix}{branch}{name}{slash}");
        let child_prefix = match depth {
            0 => String::new(),
            _ if last => format!("{prefix}    "),
            _ => format!("{prefix}│   "),
        };
        let n = self.children.len();
        for (i, (child, node)) in self.children.iter().enumerate() {
            node.render(child, &child_prefix, i + 1 == n, depth + 1, out);
        }
    }
}

/// One layer's header and change tree.
fn render_layer(a: &Analysis, i: usize, no_trunc: bool) -> String {
    let l = &a.layers[i];
    let mut s = String::new();
    let made = instruction(l, no_trunc);
    let _ = write!(s, "Layer {} of {}", l.index, a.layers.len());
    if !made.is_empty() {
        let _ = write!(s, ": {made}");
    }
    if let Some(src) = &l.source {
        let _ = write!(s, " ({src})");
    }
    s.push('\n');
    let hidden: u64 = l
        .changes
        .iter()
        .filter(|c| c.change == ChangeKind::Deleted)
        .map(|c| c.size)
        .sum();
    let hidden = if hidden > 0 {
        format!(
            " ({} of lower layers hidden, still stored there)",
            human::size(hidden)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "  {} ({} of file contents), {} added, {} modified, {} removed{hidden}, {} wasted",
        human::size(l.size),
        human::size(l.content_bytes),
        l.added,
        l.modified,
        l.removed,
        human::size(l.wasted_bytes)
    );
    let _ = writeln!(s, "  diffID {}", l.diff_id);
    s.push('\n');
    if l.changes.is_empty() {
        s.push_str("(no changes)\n");
        return s;
    }
    let mut root = TreeNode::default();
    for c in &l.changes {
        root.insert(c);
    }
    root.render("/", "", true, 0, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_thresholds_read_as_fractions_or_percentages() {
        assert_eq!(parse_efficiency("0.9"), Ok(0.9));
        assert_eq!(parse_efficiency("90%"), Ok(0.9));
        assert_eq!(parse_efficiency("90"), Ok(0.9));
        assert_eq!(parse_efficiency("1"), Ok(1.0));
        assert_eq!(parse_efficiency("100%"), Ok(1.0));
        assert_eq!(parse_efficiency("0.5 %"), Ok(0.005));
        assert!(parse_efficiency("101").is_err());
        assert!(parse_efficiency("-1").is_err());
        assert!(parse_efficiency("ninety").is_err());
        assert!(parse_efficiency("NaN").is_err());
    }

    #[test]
    fn change_trees_nest_sum_and_mark() {
        let c = |path: &str, change, kind, size| Change {
            path: path.into(),
            change,
            kind,
            size,
            files: 1,
        };
        let mut root = TreeNode::default();
        for ch in [
            c("/usr", ChangeKind::Modified, NodeKind::Dir, 0),
            c("/usr/bin/curl", ChangeKind::Added, NodeKind::File, 2500),
            c("/usr/bin/wget", ChangeKind::Modified, NodeKind::File, 500),
            c(
                "/var/lib/apt/lists",
                ChangeKind::Deleted,
                NodeKind::Dir,
                9000,
            ),
        ] {
            root.insert(&ch);
        }
        let mut out = String::new();
        root.render("/", "", true, 0, &mut out);
        let want = [
            "       3kB  /",
            "M      3kB  ├── usr/",
            "       3kB  │   └── bin/",
            "A    2.5kB  │       ├── curl",
            "M     500B  │       └── wget",
            "        0B  └── var/",
            "        0B      └── lib/",
            "        0B          └── apt/",
            "D     -9kB              └── lists/",
        ];
        assert_eq!(out, want.join("\n") + "\n");
    }
}
