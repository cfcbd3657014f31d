//! `strata history IMAGE`: the image's history, newest first, as `docker history` prints it.
//!
//! Each config history entry is a row; entries that made a layer are matched, in order, with
//! the image's diffIDs and show that layer's uncompressed size; metadata-only entries
//! (`empty_layer`) show `0B`. The top row carries the image ID, the others `<missing>`:
//! strata images record no parent chain, as BuildKit's don't.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::images::{Catalog, Entry, Format};
use crate::global::GlobalArgs;
use crate::ui::error::{AtPlace, Failure};
use crate::ui::{human, json, table::Table};

const EXAMPLES: &str = "\
Examples:
  strata history busybox                 one row per history entry, newest first
  strata history --no-trunc app:1        full image ID and full CREATED BY
  strata history -H=false app:1          RFC 3339 times and sizes in bytes
  strata history --format json app:1     one JSON object per entry";

/// Options of `strata history`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct HistoryArgs {
    /// Print sizes and dates in human-readable form (`-H=false` for bytes and RFC 3339).
    #[arg(
        short = 'H',
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    human: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The image (reference or ID).
    #[arg(value_name = "IMAGE")]
    image: String,
}

/// One row, before formatting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The image ID on the top row, `<missing>` below.
    pub id: String,
    /// Seconds since the epoch.
    pub created: Option<i64>,
    /// The instruction.
    pub created_by: String,
    /// Layer size in bytes (0 for metadata-only entries).
    pub size: u64,
    /// The entry's comment.
    pub comment: String,
}

/// `docker history --format json`'s keys.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonRow {
    comment: String,
    created_at: String,
    created_by: String,
    created_since: String,
    #[serde(rename = "ID")]
    id: String,
    size: String,
}

/// The rows of an image's history, newest first.
pub fn rows(entry: &Entry) -> anyhow::Result<Vec<Row>> {
    let mut layer = 0;
    let mut rows = Vec::new();
    for h in entry.history() {
        let size = if h.empty_layer {
            0
        } else {
            let Some(size) = entry.layer_sizes.get(layer) else {
                return Err(Failure::new(format!(
                    "the config's history lists more layers than its {} diffIDs",
                    entry.layer_sizes.len()
                ))
                .hint("the image config is inconsistent; rebuild or re-import the image")
                .into());
            };
            layer += 1;
            *size
        };
        rows.push(Row {
            id: "<missing>".into(),
            created: h.created.as_deref().and_then(human::parse_rfc3339),
            created_by: h.created_by.replace('\t', " "),
            size,
            comment: h.comment,
        });
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top.id = entry.id().to_string();
    }
    Ok(rows)
}

pub fn run(global: &GlobalArgs, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let catalog = Catalog::load(&store)?;
    let entry = catalog.find(&store, &args.image)?;
    let rows = rows(entry).at(format!("image {}", args.image))?;
    let now = human::now();
    let id = |r: &Row| {
        if args.no_trunc {
            r.id.clone()
        } else {
            human::short_id(&r.id)
        }
    };
    let created = |r: &Row| match (args.human, r.created) {
        (true, t) => human::since(t, now),
        (false, Some(t)) => human::rfc3339(t),
        (false, None) => String::new(),
    };
    let size = |r: &Row| {
        if args.human {
            human::size(r.size)
        } else {
            r.size.to_string()
        }
    };
    let created_by = |r: &Row| {
        if args.no_trunc {
            r.created_by.clone()
        } else {
            human::ellipsis(&r.created_by, 45)
        }
    };
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for r in &rows {
            writeln!(out, "{}", id(r))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        Format::Json => {
            let items: Vec<JsonRow> = rows
                .iter()
                .map(|r| JsonRow {
                    comment: r.comment.clone(),
                    created_at: r.created.map(human::rfc3339).unwrap_or_default(),
                    created_by: created_by(r),
                    created_since: created(r),
                    id: id(r),
                    size: size(r),
                })
                .collect();
            json::write_lines(&mut out, &items)?;
        }
        Format::Table => {
            let mut t = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
            for r in &rows {
                t.row(vec![
                    id(r),
                    created(r),
                    created_by(r),
                    size(r),
                    r.comment.clone(),
                ]);
            }
            out.write_all(t.render().as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
