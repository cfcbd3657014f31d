//! `strata images`: list images (REPOSITORY, TAG, IMAGE ID, CREATED, SIZE) like `docker
//! images`, or draw them as a tree of the layer chains they share (`--tree`).

mod catalog;
mod tree;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;

pub(crate) use catalog::{Catalog, Entry};

use crate::global::GlobalArgs;
use crate::ui::color::Palette;
use crate::ui::error::{AtPlace, Failure};
use crate::ui::{human, json, table::Table};

/// Output formats of listing commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line (Docker's `--format json`).
    Json,
}

const EXAMPLES: &str = "\
Examples:
  strata images                    every tag, newest first
  strata images busybox            only the busybox repository
  strata images --tree             the layers images share, base first, with sizes
  strata images -q                 only image IDs (for scripts)
  strata images --format json      one JSON object per image";

/// Options of `strata images`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show all images, also the untagged ones other images are built on.
    #[arg(short, long)]
    all: bool,
    /// Show the digest of the manifest each tag points at.
    #[arg(long)]
    digests: bool,
    /// Don't truncate output (full image IDs).
    #[arg(long)]
    no_trunc: bool,
    /// Draw the images as a tree of the layer chains they share, with each layer's size.
    #[arg(long, conflicts_with_all = ["quiet", "digests"])]
    tree: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Only show this repository, or this repository and tag (`busybox`, `me/app:1`).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    repository: Option<String>,
}

/// One line of the listing.
struct Row<'a> {
    entry: &'a Entry,
    reference: Option<&'a strata_store::Reference>,
    manifest: Option<strata_store::Digest>,
}

/// `docker images --format json`'s keys.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonRow {
    containers: String,
    created_at: String,
    created_since: String,
    digest: String,
    #[serde(rename = "ID")]
    id: String,
    repository: String,
    shared_size: String,
    size: String,
    tag: String,
    unique_size: String,
    virtual_size: String,
}

/// What the repository argument asks for.
struct RepoFilter {
    name: String,
    tag: Option<String>,
}

impl RepoFilter {
    fn parse(text: &str) -> anyhow::Result<RepoFilter> {
        let reference = strata_store::Reference::parse(text)?;
        let last = text.rsplit('/').next().unwrap_or(text);
        let tag = last
            .contains(':')
            .then(|| reference.tag().unwrap_or("").to_string());
        Ok(RepoFilter {
            name: reference.name(),
            tag,
        })
    }

    fn matches(&self, r: &strata_store::Reference) -> bool {
        r.name() == self.name && self.tag.as_deref().is_none_or(|t| r.tag() == Some(t))
    }
}

pub fn run(global: &GlobalArgs, args: &ImagesArgs) -> anyhow::Result<ExitCode> {
    let root = global.store_root()?;
    let store = global.open_store()?;
    let catalog = Catalog::load(&store).at(format!("store {}", root.display()))?;
    let filter = args
        .repository
        .as_deref()
        .map(RepoFilter::parse)
        .transpose()
        .map_err(|e| {
            Failure::usage(format!("{e:#}"))
                .at("the REPOSITORY argument")
                .hint(
                    "give a repository (`busybox`, `me/app`) or a repository and tag (`me/app:1`)",
                )
        })?;
    let mut out = std::io::stdout().lock();
    if args.tree {
        let entries: Vec<&Entry> = catalog
            .entries()
            .filter(|e| match &filter {
                Some(f) => e.tags.iter().any(|r| f.matches(r)),
                None => true,
            })
            .collect();
        let forest = tree::Forest::build(&entries);
        match args.format {
            Format::Json => json::write_pretty(&mut out, &forest.to_json())?,
            Format::Table => out.write_all(forest.render(Palette::stdout()).as_bytes())?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows = rows(&catalog, filter.as_ref(), args.all);
    let now = human::now();
    let id_text = |e: &Entry| {
        if args.no_trunc {
            e.id().to_string()
        } else {
            e.id().short()
        }
    };
    if args.quiet {
        for r in &rows {
            writeln!(out, "{}", id_text(r.entry))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        Format::Json => {
            let items: Vec<JsonRow> = rows
                .iter()
                .map(|r| JsonRow {
                    containers: r.entry.containers.len().to_string(),
                    created_at: r.entry.created.map(human::go_time).unwrap_or_default(),
                    created_since: human::since(r.entry.created, now),
                    digest: digest_text(r),
                    id: id_text(r.entry),
                    repository: repository(r),
                    shared_size: "N/A".into(),
                    size: human::size(r.entry.size()),
                    tag: tag(r),
                    unique_size: "N/A".into(),
                    virtual_size: human::size4(r.entry.size()),
                })
                .collect();
            json::write_lines(&mut out, &items)?;
        }
        Format::Table => {
            let mut header = vec!["REPOSITORY", "TAG"];
            if args.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let mut t = Table::new(&header);
            for r in &rows {
                let mut cells = vec![repository(r), tag(r)];
                if args.digests {
                    cells.push(digest_text(r));
                }
                cells.extend([
                    id_text(r.entry),
                    human::since(r.entry.created, now),
                    human::size(r.entry.size()),
                ]);
                t.row(cells);
            }
            out.write_all(t.render().as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rows to list: one per tag, one per untagged image (intermediate ones, those other
/// images are built on, only with `all`), newest first.
fn rows<'a>(catalog: &'a Catalog, filter: Option<&RepoFilter>, all: bool) -> Vec<Row<'a>> {
    let mut rows = Vec::new();
    for e in catalog.entries() {
        if e.tags.is_empty() {
            let intermediate = !catalog.children_of(e).is_empty();
            if filter.is_none() && (all || !intermediate) {
                rows.push(Row {
                    entry: e,
                    reference: None,
                    manifest: None,
                });
            }
            continue;
        }
        for (reference, target) in &e.tag_targets {
            if filter.is_none_or(|f| f.matches(reference)) {
                rows.push(Row {
                    entry: e,
                    reference: Some(reference),
                    manifest: Some(target.digest),
                });
            }
        }
    }
    rows.sort_by(|a, b| {
        b.entry
            .created
            .cmp(&a.entry.created)
            .then_with(|| a.reference.cmp(&b.reference))
            .then_with(|| a.entry.id().cmp(&b.entry.id()))
    });
    rows
}

fn repository(r: &Row<'_>) -> String {
    r.reference
        .map_or_else(|| "<none>".to_string(), |r| r.familiar_name())
}

fn tag(r: &Row<'_>) -> String {
    r.reference
        .and_then(|r| r.tag())
        .unwrap_or("<none>")
        .to_string()
}

fn digest_text(r: &Row<'_>) -> String {
    r.manifest
        .map_or_else(|| "<none>".to_string(), |d| d.to_string())
}
