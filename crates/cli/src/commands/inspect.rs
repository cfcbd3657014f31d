//! `strata inspect IMAGE...`: Docker's image JSON (an array), including `RootFS.Layers` and
//! `GraphDriver` with the overlay2 folders of the image's top layer.
//!
//! The unpacked layers of an image are the snapshots named by the hex of its chainIDs; the
//! top one's `GraphDriver.Data` lists its own `diff/` and the lower `diff/` folders it stacks
//! on. An image whose layers were never unpacked has `"Data": null`: the engine unpacks it
//! the first time it is used.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;
use strata_overlay::Snapshotter;
use strata_store::{RefKind, Store};

use super::images::{Catalog, Entry};
use crate::global::GlobalArgs;
use crate::ui::color::Palette;
use crate::ui::{error, human, json};

const EXAMPLES: &str = "\
Examples:
  strata inspect busybox                       the image as Docker's JSON
  strata inspect app:1 app:2                   several images, one array
  strata inspect app:1 | jq '.[0].GraphDriver' where its layers are unpacked";

/// Output formats of `strata inspect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    /// An indented JSON array, as `docker inspect` prints.
    Json,
}

/// Options of `strata inspect`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct InspectArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: InspectFormat,
    /// The images (references or IDs).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// Docker's image inspect document, fields in Docker's order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect {
    #[serde(rename = "Id")]
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_version: Option<String>,
    author: String,
    config: DockerConfig,
    architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    os_version: Option<String>,
    size: u64,
    graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    root_fs: RootFs,
    metadata: Metadata,
}

/// The image's run configuration, with Docker's field names and order; absent and empty
/// fields are left out, as Docker leaves them out.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args_escaped: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_build: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<Value>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Healthcheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_period: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_interval: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GraphDriver {
    data: Option<BTreeMap<&'static str, String>>,
    name: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFs {
    #[serde(rename = "Type")]
    kind: String,
    layers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    last_tag_time: String,
}

/// A JSON value unless it is null or empty (Go's `omitempty`).
fn non_empty(v: Option<&Value>) -> Option<Value> {
    let v = v?;
    let empty = match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    };
    (!empty).then(|| v.clone())
}

fn docker_config(config: &Value) -> DockerConfig {
    let Some(c) = config.get("config") else {
        return DockerConfig::default();
    };
    let f = |k: &str| non_empty(c.get(k));
    DockerConfig {
        user: f("User"),
        exposed_ports: f("ExposedPorts"),
        env: f("Env"),
        entrypoint: f("Entrypoint"),
        cmd: f("Cmd"),
        volumes: f("Volumes"),
        working_dir: f("WorkingDir"),
        labels: f("Labels"),
        stop_signal: f("StopSignal"),
        args_escaped: f("ArgsEscaped"),
        healthcheck: c.get("Healthcheck").filter(|h| h.is_object()).map(|h| {
            let g = |k: &str| non_empty(h.get(k));
            Healthcheck {
                test: g("Test"),
                interval: g("Interval"),
                timeout: g("Timeout"),
                start_period: g("StartPeriod"),
                start_interval: g("StartInterval"),
                retries: g("Retries"),
            }
        }),
        on_build: f("OnBuild"),
        shell: f("Shell"),
    }
}

/// `GraphDriver` for an image: `Data` from the snapshot of its top chainID, or null when
/// that chain is not unpacked (or the image has no layers).
fn graph_driver(
    entry: &Entry,
    snapshotter: Option<&Snapshotter>,
    default_name: &'static str,
) -> anyhow::Result<GraphDriver> {
    let Some(snap) = snapshotter else {
        return Ok(GraphDriver {
            data: None,
            name: default_name,
        });
    };
    let name = match snap.driver() {
        strata_overlay::Driver::Overlay => "overlay2",
        strata_overlay::Driver::Vfs => "vfs",
    };
    let Some(top) = entry.image.chain_ids().last().copied() else {
        return Ok(GraphDriver { data: None, name });
    };
    let data = match snap.graph_driver_data(&top.hex()) {
        Ok(d) => {
            let mut m = BTreeMap::new();
            if let Some(lower) = d.lower_dir {
                m.insert("LowerDir", lower);
            }
            m.insert("MergedDir", d.merged_dir.display().to_string());
            m.insert("UpperDir", d.upper_dir.display().to_string());
            if let Some(work) = d.work_dir {
                m.insert("WorkDir", work.display().to_string());
            }
            Some(m)
        }
        Err(strata_overlay::Error::NotFound { .. }) => {
            log::info!(
                "{} is not unpacked yet: the engine unpacks it on first use",
                entry.id().short()
            );
            None
        }
        Err(e) => return Err(e.into()),
    };
    Ok(GraphDriver { data, name })
}

fn last_tag_time(store: &Store, entry: &Entry) -> anyhow::Result<String> {
    let mut latest = None;
    for t in &entry.tags {
        if let Some(when) = store.ref_modified(RefKind::Tag, &t.to_string())? {
            latest = latest.max(Some(when));
        }
    }
    Ok(match latest {
        Some(when) => {
            let secs = when
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            human::rfc3339(secs)
        }
        // Go's zero time, which Docker prints for an image never tagged here.
        None => "0001-01-01T00:00:00Z".into(),
    })
}

/// The inspect document of one image.
pub fn inspect(
    store: &Store,
    catalog: &Catalog,
    entry: &Entry,
    snapshotter: Option<&Snapshotter>,
    default_driver: &'static str,
) -> anyhow::Result<Inspect> {
    let c = &entry.config;
    let text = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let opt = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Ok(Inspect {
        id: entry.id().to_string(),
        repo_tags: entry.familiar_tags(),
        repo_digests: entry.repo_digests(),
        parent: catalog
            .parent_of(entry)
            .map(|p| p.id().to_string())
            .unwrap_or_default(),
        comment: text("comment"),
        created: opt("created"),
        docker_version: opt("docker_version"),
        author: text("author"),
        config: docker_config(c),
        architecture: text("architecture"),
        variant: opt("variant"),
        os: text("os"),
        os_version: opt("os.version"),
        size: entry.size(),
        graph_driver: graph_driver(entry, snapshotter, default_driver)?,
        root_fs: RootFs {
            kind: "layers".into(),
            layers: entry.image.diff_ids.iter().map(|d| d.to_string()).collect(),
        },
        metadata: Metadata {
            last_tag_time: last_tag_time(store, entry)?,
        },
    })
}

pub fn run(global: &GlobalArgs, args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let root = global.store_root()?;
    let store = global.open_store()?;
    let catalog = Catalog::load(&store)?;
    let snapshotter = global.existing_snapshotter(&root)?;
    let default_driver = match global.storage_driver {
        Some(strata_overlay::Driver::Vfs) => "vfs",
        _ => "overlay2",
    };
    let mut docs = Vec::new();
    let mut failed = false;
    let palette = Palette::stderr();
    let place = format!("store {}", root.display());
    for name in &args.images {
        let found = catalog.find(&store, name).and_then(|entry| {
            inspect(
                &store,
                &catalog,
                entry,
                snapshotter.as_ref(),
                default_driver,
            )
        });
        match found {
            Ok(doc) => docs.push(doc),
            Err(e) => {
                // Like Docker: print what was found, report each miss, exit 1.
                failed = true;
                eprint!("{}", error::render(&e, Some(&place), palette));
            }
        }
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        InspectFormat::Json => json::write_pretty(&mut out, &docs)?,
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::from(error::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
