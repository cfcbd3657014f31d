//! `strata ps [-a] [-q] [--format json]`: the containers of the store, newest first.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use strata_builder::container::{Container, Status};

use super::images::Format;
use crate::global::GlobalArgs;
use crate::ui::error::AtPlace;
use crate::ui::table::Table;
use crate::ui::{human, json};

const EXAMPLES: &str = "\
Examples:
  strata ps                    running containers
  strata ps -a                 every container, also exited ones
  strata ps -aq | xargs strata rm    remove them all
  strata ps -a --format json   one JSON object per container";

/// Options of `strata ps`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct PsArgs {
    /// Show every container (default: only running ones).
    #[arg(short, long)]
    all: bool,
    /// Only show container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output (full IDs and commands).
    #[arg(long)]
    no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// `docker ps --format json`'s keys.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonRow {
    command: String,
    created_at: String,
    #[serde(rename = "ID")]
    id: String,
    image: String,
    labels: String,
    local_volumes: String,
    mounts: String,
    names: String,
    networks: String,
    ports: String,
    running_for: String,
    size: String,
    state: String,
    status: String,
}

/// Docker's `STATUS` column: `Up 5 minutes`, `Exited (0) 2 hours ago`, `Created`.
pub fn status_text(c: &Container, now: i64) -> String {
    let secs = |t: &Option<String>| t.as_deref().and_then(human::parse_rfc3339);
    match c.state.status {
        Status::Created => "Created".into(),
        Status::Running => match secs(&c.state.started_at) {
            Some(t) => format!("Up {}", human::duration(now - t)),
            None => "Up".into(),
        },
        Status::Exited => format!(
            "Exited ({}) {}",
            c.state.exit_code.unwrap_or(0),
            human::since(secs(&c.state.finished_at), now)
        ),
    }
}

pub fn run(global: &GlobalArgs, args: &PsArgs) -> anyhow::Result<ExitCode> {
    let root = global.store_root()?;
    let engine = global.open_engine()?;
    let all = engine
        .containers()
        .list()
        .at(format!("store {}", root.display()))?;
    let shown: Vec<&Container> = all
        .iter()
        .filter(|c| args.all || c.state.status == Status::Running)
        .collect();
    let id = |c: &Container| match args.no_trunc {
        true => c.id.clone(),
        false => c.short_id().to_string(),
    };
    let command = |c: &Container| match args.no_trunc {
        true => format!("\"{}\"", c.command()),
        false => format!("\"{}\"", human::ellipsis(&c.command(), 20)),
    };
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for c in &shown {
            writeln!(out, "{}", id(c))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = human::now();
    match args.format {
        Format::Json => {
            let rows: Vec<JsonRow> = shown
                .iter()
                .map(|c| JsonRow {
                    command: command(c),
                    created_at: c.created_secs().map(human::go_time).unwrap_or_default(),
                    id: id(c),
                    image: c.image.clone(),
                    labels: String::new(),
                    local_volumes: "0".into(),
                    mounts: String::new(),
                    names: c.name.clone(),
                    networks: c.config.network.name().into(),
                    ports: String::new(),
                    running_for: human::since(c.created_secs(), now),
                    size: "0B".into(),
                    state: c.state.status.name().into(),
                    status: status_text(c, now),
                })
                .collect();
            json::write_lines(&mut out, &rows)?;
        }
        Format::Table => {
            let mut t = Table::new(&[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ]);
            for c in &shown {
                t.row(vec![
                    id(c),
                    c.image.clone(),
                    command(c),
                    human::since(c.created_secs(), now),
                    status_text(c, now),
                    String::new(),
                    c.name.clone(),
                ]);
            }
            out.write_all(t.render().as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
