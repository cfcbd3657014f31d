//! `strata system df [-v]`: disk usage by kind, as `docker system df` prints it.
//!
//! Sizes are bytes on disk in the store: blobs as stored (layers compressed when the store
//! compresses them), configs and manifests, each shared blob counted once in the totals;
//! the unpacked layer folders have a row of their own.
//!
//! Rows and how they count (each from the store's refs, so nothing is estimated):
//! - Images: the tag and untagged refs. ACTIVE counts images that containers use;
//!   RECLAIMABLE is what removing every unused image would free (blobs that containers,
//!   cache records or used images still need stay).
//! - Containers: `containers/` refs; SIZE and RECLAIMABLE are the blobs only containers keep
//!   plus their writable (upper) layers, the active snapshots `container-<id>`. ACTIVE
//!   counts running containers, whose writable layers are not reclaimable.
//! - Build Cache: `cache/` refs; RECLAIMABLE leaves out blobs images or containers share.
//!   ACTIVE (records in use by a running build) is 0: builds hold no records between runs.
//! - Unpacked Layers: the snapshotter's folders (overlay2 `diff/` or vfs copies). ACTIVE
//!   counts those a ref still reaches (committed layers named by a reachable chainID, and
//!   every writable snapshot but the containers', counted above); RECLAIMABLE is the size
//!   of the others.
//!
//! The closing `Total` counts every blob once (shared layers, and blobs the rows share)
//! and every unpacked folder once. `-v` adds per image SIZE / SHARED SIZE / UNIQUE SIZE, per
//! layer the images that use it, containers with their upper layer, and the build cache by
//! stage with each record's last use.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use strata_builder::cache::{records, CacheEntry};
use strata_overlay::Snapshotter;
use strata_store::{Digest, Ref, RefKind, Store};

use super::images::{Catalog, Format};
use crate::global::GlobalArgs;
use crate::ui::error::AtPlace;
use crate::ui::{human, json, table::Table};

const EXAMPLES: &str = "\
Examples:
  strata system df              totals per kind
  strata system df -v           per image (SIZE, SHARED SIZE, UNIQUE SIZE), per layer,
                                containers, build cache by stage with last use
  strata system df --format json";

/// `strata system ...`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage: images, containers, build cache (with -v: per image and per layer).
    Df(DfArgs),
}

/// Options of `strata system df` (`-v`, the global verbose flag, adds the detail tables).
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct DfArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRow {
    /// `Images`, `Containers`, `Build Cache`.
    pub kind: &'static str,
    /// How many.
    pub total: usize,
    /// How many are in use.
    pub active: usize,
    /// Bytes, shared blobs once.
    pub size: u64,
    /// Bytes removing the unused ones would free.
    pub reclaimable: u64,
    /// Whether RECLAIMABLE shows a percentage (Docker shows none for the build cache).
    pub percent: bool,
}

/// One image in the verbose view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageRow {
    repository: String,
    tag: String,
    #[serde(rename = "ID")]
    id: String,
    #[serde(skip)]
    created: Option<i64>,
    size: u64,
    shared_size: u64,
    unique_size: u64,
    containers: usize,
}

/// One layer blob in the verbose view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct LayerRow {
    diff_id: String,
    digest: String,
    size: u64,
    images: Vec<String>,
}

/// One container in the verbose view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerRow {
    #[serde(rename = "ID")]
    id: String,
    image: String,
    /// Bytes of its writable (upper) layer; `None` when it has none on disk.
    size: Option<u64>,
    /// Bytes of blobs only this container keeps.
    blobs_size: u64,
}

/// One cache record in the verbose view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CacheRow {
    #[serde(rename = "ID")]
    id: String,
    stage: Option<String>,
    size: u64,
    shared: bool,
    last_used: Option<i64>,
    created_by: Option<String>,
}

/// The build cache of one stage name in the verbose view.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct StageRow {
    /// The stage's name (`stage-N` when it had none), `<unknown>` for older records.
    stage: String,
    records: usize,
    /// Bytes of the blobs its records reach, each once.
    size: u64,
    /// The most recent use of any of its records.
    last_used: Option<i64>,
}

/// The snapshot key of container `id`'s writable layer (the containers engine's naming).
fn container_snapshot_key(id: &str) -> String {
    format!("container-{id}")
}

/// Everything `system df` reports.
#[derive(Debug)]
pub struct Report {
    rows: Vec<TypeRow>,
    images: Vec<ImageRow>,
    layers: Vec<LayerRow>,
    containers: Vec<ContainerRow>,
    cache: Vec<CacheRow>,
    stages: Vec<StageRow>,
    /// Bytes of blobs nothing references (`strata prune` frees them).
    unreferenced: u64,
    /// Everything on disk, each blob and folder once.
    total: u64,
}

/// Blob sizes, looked up once each.
struct Sizes<'a> {
    store: &'a Store,
    known: BTreeMap<Digest, u64>,
}

impl Sizes<'_> {
    fn of(&mut self, d: &Digest) -> anyhow::Result<u64> {
        if let Some(s) = self.known.get(d) {
            return Ok(*s);
        }
        let s = self.store.blob_size(d)?.unwrap_or(0);
        self.known.insert(*d, s);
        Ok(s)
    }

    fn sum<'b>(&mut self, blobs: impl IntoIterator<Item = &'b Digest>) -> anyhow::Result<u64> {
        let mut total = 0;
        for d in blobs {
            total += self.of(d)?;
        }
        Ok(total)
    }
}

fn reach(store: &Store, refs: &[Ref]) -> anyhow::Result<BTreeSet<Digest>> {
    Ok(store.reachable_from(refs)?.blobs)
}

/// The images row: unused images are reclaimable, minus what anything else still needs.
fn images_row(
    images: usize,
    active: usize,
    all: &BTreeSet<Digest>,
    kept: &BTreeSet<Digest>,
    sizes: &mut Sizes<'_>,
) -> anyhow::Result<TypeRow> {
    Ok(TypeRow {
        kind: "Images",
        total: images,
        active,
        size: sizes.sum(all)?,
        reclaimable: sizes.sum(all.difference(kept))?,
        percent: true,
    })
}

/// The containers row: the blobs only container records keep plus each container's
/// writable layer; ACTIVE and not reclaimable are the running ones.
fn containers_row(
    refs: &[Ref],
    only_theirs: &BTreeSet<Digest>,
    uppers: &BTreeMap<String, u64>,
    sizes: &mut Sizes<'_>,
) -> anyhow::Result<TypeRow> {
    let mut size = sizes.sum(only_theirs)?;
    let mut running = 0;
    let mut running_size = 0;
    for r in refs {
        let upper = uppers.get(&r.name).copied().unwrap_or(0);
        size += upper;
        if strata_builder::container::is_running(sizes.store.root(), &r.name) {
            running += 1;
            running_size += upper;
        }
    }
    Ok(TypeRow {
        kind: "Containers",
        total: refs.len(),
        active: running,
        size,
        reclaimable: size - running_size,
        percent: true,
    })
}

/// The build cache row: every cache record, RECLAIMABLE without what images or containers
/// share with it.
fn build_cache_row(
    refs: &[Ref],
    theirs: &BTreeSet<Digest>,
    shared: &BTreeSet<Digest>,
    sizes: &mut Sizes<'_>,
) -> anyhow::Result<TypeRow> {
    Ok(TypeRow {
        kind: "Build Cache",
        total: refs.len(),
        active: 0,
        size: sizes.sum(theirs)?,
        reclaimable: sizes.sum(theirs.difference(shared))?,
        percent: false,
    })
}

/// The unpacked layers row: every snapshot's own files; committed layers no ref reaches
/// any more are reclaimable.
fn unpacked_layers_row(
    snapshotter: Option<&Snapshotter>,
    reachable_chains: &BTreeSet<String>,
    container_layers: &BTreeMap<String, u64>,
) -> anyhow::Result<TypeRow> {
    let mut row = TypeRow {
        kind: "Unpacked Layers",
        total: 0,
        active: 0,
        size: 0,
        reclaimable: 0,
        percent: true,
    };
    let Some(snap) = snapshotter else {
        return Ok(row);
    };
    for info in snap.walk()? {
        // Containers' writable layers are in the containers row (one whose container
        // record is gone stays here, like any writable snapshot: prune does not remove it).
        if is_container_layer(&info)
            && info
                .key
                .strip_prefix("container-")
                .is_some_and(|id| container_layers.contains_key(id))
        {
            continue;
        }
        let size = snap.usage(&info.key)?.size;
        let active =
            info.kind != strata_overlay::Kind::Committed || reachable_chains.contains(&info.key);
        row.total += 1;
        row.size += size;
        if active {
            row.active += 1;
        } else {
            row.reclaimable += size;
        }
    }
    Ok(row)
}

/// Whether a snapshot is a container's writable layer (counted with the containers).
fn is_container_layer(info: &strata_overlay::Info) -> bool {
    info.kind == strata_overlay::Kind::Active && info.key.starts_with("container-")
}

/// Bytes of every unpacked folder, each once.
fn unpacked_total(snapshotter: Option<&Snapshotter>) -> anyhow::Result<u64> {
    let Some(snap) = snapshotter else {
        return Ok(0);
    };
    let mut total = 0;
    for info in snap.walk()? {
        total += snap.usage(&info.key)?.size;
    }
    Ok(total)
}

/// The upper layer of each container that has one on disk, by container ref name.
fn upper_layers(
    snapshotter: Option<&Snapshotter>,
    refs: &[Ref],
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let Some(snap) = snapshotter else {
        return Ok(out);
    };
    let present: BTreeSet<String> = snap
        .walk()?
        .into_iter()
        .filter(is_container_layer)
        .map(|i| i.key)
        .collect();
    for r in refs {
        let key = container_snapshot_key(&r.name);
        if present.contains(&key) {
            out.insert(r.name.clone(), snap.usage(&key)?.size);
        }
    }
    Ok(out)
}

/// Gather the report.
pub fn report(store: &Store, snapshotter: Option<&Snapshotter>) -> anyhow::Result<Report> {
    let usage = store.disk_usage()?;
    let catalog = Catalog::load(store)?;
    let mut sizes = Sizes {
        store,
        known: BTreeMap::new(),
    };
    let mut image_refs = store.list_refs(RefKind::Tag)?;
    image_refs.extend(store.list_refs(RefKind::Untagged)?);
    let container_refs = store.list_refs(RefKind::Container)?;
    let cache_refs = store.list_refs(RefKind::Cache)?;

    let by_images = reach(store, &image_refs)?;
    let by_containers = reach(store, &container_refs)?;
    let by_cache = reach(store, &cache_refs)?;
    let used_manifests: BTreeSet<Digest> = catalog
        .entries()
        .filter(|e| !e.containers.is_empty())
        .flat_map(|e| e.tag_targets.iter().map(|(_, d)| d.digest))
        .collect();
    let used_refs: Vec<Ref> = image_refs
        .iter()
        .filter(|r| used_manifests.contains(&r.target.digest))
        .cloned()
        .collect();
    let by_used = reach(store, &used_refs)?;

    let kept: BTreeSet<Digest> = by_containers
        .iter()
        .chain(&by_cache)
        .chain(&by_used)
        .copied()
        .collect();
    let active = catalog
        .entries()
        .filter(|e| !e.containers.is_empty())
        .count();
    let not_containers: BTreeSet<Digest> = by_images.union(&by_cache).copied().collect();
    let only_containers: BTreeSet<Digest> =
        by_containers.difference(&not_containers).copied().collect();
    let not_cache: BTreeSet<Digest> = by_images.union(&by_containers).copied().collect();
    let chains: BTreeSet<String> = store
        .reachable()?
        .chain_ids
        .iter()
        .map(Digest::hex)
        .collect();
    let uppers = upper_layers(snapshotter, &container_refs)?;
    let rows = vec![
        images_row(usage.images.len(), active, &by_images, &kept, &mut sizes)?,
        containers_row(&container_refs, &only_containers, &uppers, &mut sizes)?,
        build_cache_row(&cache_refs, &by_cache, &not_cache, &mut sizes)?,
        unpacked_layers_row(snapshotter, &chains, &uppers)?,
    ];

    // Per image: one row per tag (untagged images once), sizes per manifest.
    let mut images = Vec::new();
    for u in &usage.images {
        let entry = catalog
            .entries()
            .find(|e| e.tag_targets.iter().any(|(_, d)| d.digest == u.manifest))
            .or_else(|| {
                catalog
                    .entries()
                    .find(|e| e.untagged && e.image.manifest.digest == u.manifest)
            });
        let Some(entry) = entry else { continue };
        let row = |repository: String, tag: String| ImageRow {
            repository,
            tag,
            id: entry.id().short(),
            created: entry.created,
            size: u.total,
            shared_size: u.total - u.unique,
            unique_size: u.unique,
            containers: entry.containers.len(),
        };
        let tags: Vec<_> = entry
            .tag_targets
            .iter()
            .filter(|(_, d)| d.digest == u.manifest)
            .collect();
        if tags.is_empty() {
            images.push(row("<none>".into(), "<none>".into()));
        }
        for (r, _) in tags {
            images.push(row(
                r.familiar_name(),
                r.tag().unwrap_or("<none>").to_string(),
            ));
        }
    }
    images.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)))
    });

    // Per layer blob: which images use it.
    let mut users: BTreeMap<(Digest, Digest), BTreeSet<String>> = BTreeMap::new();
    for e in catalog.entries() {
        for (blob, diff_id) in e.image.layers.iter().zip(&e.image.diff_ids) {
            users
                .entry((blob.digest, *diff_id))
                .or_default()
                .insert(e.label());
        }
    }
    let mut layers = Vec::new();
    for ((blob, diff_id), names) in users {
        layers.push(LayerRow {
            diff_id: diff_id.to_string(),
            digest: blob.to_string(),
            size: sizes.of(&blob)?,
            images: names.into_iter().collect(),
        });
    }
    layers.sort_by(|a, b| {
        b.images
            .len()
            .cmp(&a.images.len())
            .then_with(|| a.images.cmp(&b.images))
    });

    let mut containers = Vec::new();
    for r in &container_refs {
        let mine = reach(store, std::slice::from_ref(r))?;
        let image = catalog
            .entries()
            .find(|e| e.containers.contains(&r.name))
            .map_or_else(|| "-".to_string(), |e| e.label());
        containers.push(ContainerRow {
            id: human::short_id(&r.name),
            image,
            size: uppers.get(&r.name).copied(),
            blobs_size: sizes.sum(mine.intersection(&only_containers))?,
        });
    }

    // Per cache record, then per stage (blobs once within a stage).
    let mut cache = Vec::new();
    let mut by_stage: BTreeMap<String, (usize, BTreeSet<Digest>, Option<i64>)> = BTreeMap::new();
    for entry in records(store)? {
        let CacheEntry {
            name,
            target,
            last_used,
            stage,
            created_by,
        } = entry;
        let r = Ref {
            kind: RefKind::Cache,
            name,
            target,
        };
        let mine = reach(store, std::slice::from_ref(&r))?;
        let slot = by_stage
            .entry(stage.clone().unwrap_or_else(|| "<unknown>".into()))
            .or_default();
        slot.0 += 1;
        slot.1.extend(mine.iter().copied());
        slot.2 = slot.2.max(last_used);
        cache.push(CacheRow {
            id: human::short_id(&r.name),
            stage,
            size: sizes.sum(&mine)?,
            shared: mine.iter().any(|d| not_cache.contains(d)),
            last_used,
            created_by,
        });
    }
    // By stage, the most recently used first.
    cache.sort_by(|a, b| (&a.stage, b.last_used, &a.id).cmp(&(&b.stage, a.last_used, &b.id)));
    let mut stages = Vec::new();
    for (stage, (records, blobs, last_used)) in by_stage {
        stages.push(StageRow {
            stage,
            records,
            size: sizes.sum(&blobs)?,
            last_used,
        });
    }
    Ok(Report {
        rows,
        images,
        layers,
        containers,
        cache,
        stages,
        unreferenced: usage.reclaimable,
        total: usage.total + unpacked_total(snapshotter)?,
    })
}

fn reclaimable_text(r: &TypeRow) -> String {
    let size = human::size4(r.reclaimable);
    if r.percent && r.size > 0 {
        format!("{size} ({}%)", r.reclaimable * 100 / r.size)
    } else {
        size
    }
}

/// The text `system df` prints.
pub fn render(report: &Report, verbose: bool, now: i64) -> String {
    let mut out = String::new();
    let summary = |out: &mut String| {
        let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
        for r in &report.rows {
            t.row(vec![
                r.kind.to_string(),
                r.total.to_string(),
                r.active.to_string(),
                human::size4(r.size),
                reclaimable_text(r),
            ]);
        }
        out.push_str(&t.render());
    };
    if !verbose {
        summary(&mut out);
    } else {
        out.push_str("Images space usage:\n\n");
        let mut t = Table::new(&[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ]);
        for i in &report.images {
            t.row(vec![
                i.repository.clone(),
                i.tag.clone(),
                i.id.clone(),
                human::since(i.created, now),
                human::size(i.size),
                human::size4(i.shared_size),
                human::size4(i.unique_size),
                i.containers.to_string(),
            ]);
        }
        out.push_str(&t.render());
        out.push_str("\nLayers space usage:\n\n");
        let mut t = Table::new(&["LAYER", "SIZE", "IMAGES"]);
        for l in &report.layers {
            t.row(vec![
                human::short_id(&l.diff_id),
                human::size(l.size),
                l.images.join(", "),
            ]);
        }
        out.push_str(&t.render());
        out.push_str("\nContainers space usage:\n\n");
        let mut t = Table::new(&["CONTAINER ID", "IMAGE", "SIZE", "BLOBS"]);
        for c in &report.containers {
            t.row(vec![
                c.id.clone(),
                c.image.clone(),
                c.size.map_or_else(|| "-".into(), human::size),
                human::size(c.blobs_size),
            ]);
        }
        out.push_str(&t.render());
        let cache_size = report
            .rows
            .iter()
            .find(|r| r.kind == "Build Cache")
            .map_or(0, |r| r.size);
        out.push_str(&format!(
            "\nBuild cache usage: {}\n\n",
            human::size4(cache_size)
        ));
        let mut t = Table::new(&["STAGE", "RECORDS", "SIZE", "LAST USED"]);
        for st in &report.stages {
            t.row(vec![
                st.stage.clone(),
                st.records.to_string(),
                human::size(st.size),
                human::since(st.last_used, now),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
        let mut t = Table::new(&[
            "CACHE ID",
            "STAGE",
            "SIZE",
            "SHARED",
            "CREATED BY",
            "LAST USED",
        ]);
        for c in &report.cache {
            t.row(vec![
                c.id.clone(),
                c.stage.clone().unwrap_or_else(|| "<unknown>".into()),
                human::size(c.size),
                c.shared.to_string(),
                human::ellipsis(c.created_by.as_deref().unwrap_or("-"), 45),
                human::since(c.last_used, now),
            ]);
        }
        out.push_str(&t.render());
    }
    if report.unreferenced > 0 {
        out.push_str(&format!(
            "\nUnreferenced blobs: {} (`strata prune` frees them)\n",
            human::size4(report.unreferenced)
        ));
    }
    out.push_str(&format!(
        "\nTotal: {} (every blob and unpacked folder once)\n",
        human::size4(report.total)
    ));
    out
}

/// `docker system df --format json`'s keys, one object per kind.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonTypeRow {
    active: String,
    reclaimable: String,
    size: String,
    total_count: String,
    #[serde(rename = "Type")]
    kind: String,
}

/// The verbose JSON document.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonVerbose<'a> {
    images: &'a [ImageRow],
    layers: &'a [LayerRow],
    containers: &'a [ContainerRow],
    build_cache: &'a [CacheRow],
    build_cache_stages: &'a [StageRow],
    unreferenced_size: u64,
    total_size: u64,
}

pub fn run(global: &GlobalArgs, command: &SystemCommand) -> anyhow::Result<ExitCode> {
    let SystemCommand::Df(args) = command;
    let root = global.store_root()?;
    let store = global.open_store()?;
    let snapshotter = global.existing_snapshotter(&root)?;
    let report = report(&store, snapshotter.as_ref()).at(format!("store {}", root.display()))?;
    let verbose = global.verbose > 0;
    let mut out = std::io::stdout().lock();
    match (args.format, verbose) {
        (Format::Table, _) => out.write_all(render(&report, verbose, human::now()).as_bytes())?,
        (Format::Json, false) => {
            let rows: Vec<JsonTypeRow> = report
                .rows
                .iter()
                .map(|r| JsonTypeRow {
                    active: r.active.to_string(),
                    reclaimable: reclaimable_text(r),
                    size: human::size4(r.size),
                    total_count: r.total.to_string(),
                    kind: r.kind.to_string(),
                })
                .collect();
            json::write_lines(&mut out, &rows)?;
        }
        (Format::Json, true) => json::write_pretty(
            &mut out,
            &JsonVerbose {
                images: &report.images,
                layers: &report.layers,
                containers: &report.containers,
                build_cache: &report.cache,
                build_cache_stages: &report.stages,
                unreferenced_size: report.unreferenced,
                total_size: report.total,
            },
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
