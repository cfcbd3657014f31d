//! Layer insight: why an image is as big as it is, which instruction made it so, and the
//! one-line change that makes it smaller (`strata analyze`).
//!
//! [`analyze`] reads every layer of an image from the store once, streaming, in parallel on
//! the current rayon pool: tar headers through the snapshotter's capped reader, file contents
//! hashed (sha256) as they stream past and never kept, each layer's blob digest and diffID
//! verified at its end. The layers are then replayed in order over a map of paths (the merged
//! filesystem, with whiteouts and opaque directories applied as the OCI spec says), which
//! yields per layer the paths it added, modified and removed, and for every stored file
//! whether it is still visible at the end and, if not, which layer hid it. Memory grows with
//! the number of paths, never with their sizes.
//!
//! # Efficiency
//!
//! Only file contents count (tar headers, directories and links store no file bytes):
//! - **total bytes**: the sizes of every regular file in every layer, as stored;
//! - **wasted bytes**: the bytes of every stored file that is not visible in the final image
//!   (a later layer deleted it, put something else at its path, or rewrote it with the same
//!   bytes), plus the bytes of every visible file whose exact contents (sha256) a visible file
//!   of an *earlier* layer already holds (a duplicate across layers);
//! - **useful bytes** = total - wasted; **efficiency** = useful / total (1 for an image with
//!   no file bytes at all).
//!
//! A file stored once and visible at the end is fully useful; deleting it later makes all
//! of its bytes waste, because the layer that stored it still ships them.
//!
//! dive computes, per path, the smallest size seen divided by the sum of the sizes seen
//! across layers, counting a deletion as weighing what it deletes. Like dive this weighs by
//! file size, ignores metadata, and counts a path stored in several layers against the image.
//! Unlike dive the denominator is what the layers really store (a whiteout stores nothing),
//! a file that is deleted later counts as entirely wasted (dive: half), the copy that stays
//! visible is never waste (dive's "wasted space" includes it), and byte-identical copies at
//! different paths count too.

mod findings;
mod history;
mod paths;
mod scan;
mod source;
#[cfg(test)]
mod store_tests;

use rayon::prelude::*;
use serde::Serialize;
use strata_overlay::Limits;
use strata_store::{Digest, Image, Store};

use crate::error::Error;

pub use findings::{Finding, Rule, Severity};
pub use history::{history_of, layer_entries, read_history, HistoryEntry, Instruction};
pub use paths::{Change, ChangeKind, How, NodeKind};
pub use source::{map_history, DockerfileSource, SourceLine};

/// What [`analyze`] should do besides the accounting.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions<'a> {
    /// The Dockerfile the image was built from, to name the line of each layer.
    pub dockerfile: Option<DockerfileSource<'a>>,
    /// How many of the largest wasted files [`Analysis::wasted`] lists.
    pub top: usize,
    /// From this many bytes, copied-then-removed, rewritten and duplicated files are a
    /// warning rather than an info.
    pub large_bytes: u64,
    /// Caps on each layer tar (entries, bytes, header sizes).
    pub limits: Limits,
}

impl Default for AnalyzeOptions<'_> {
    fn default() -> Self {
        AnalyzeOptions {
            dockerfile: None,
            top: 10,
            large_bytes: 1 << 20,
            limits: Limits::default(),
        }
    }
}

/// One layer: what made it, what it changed, what it wastes.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// 1-based position, base layer first.
    pub index: usize,
    /// The uncompressed tar's digest.
    pub diff_id: Digest,
    /// The stored blob's digest.
    pub digest: Digest,
    /// The uncompressed tar's size.
    pub size: u64,
    /// Bytes of regular-file contents it stores.
    pub content_bytes: u64,
    /// The history entry that made it, if the config has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryEntry>,
    /// That entry's instruction as written (`RUN apt-get update`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<Instruction>,
    /// Its Dockerfile line, when a Dockerfile was given and the instruction found in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceLine>,
    /// Non-directory paths it added.
    pub added: u64,
    /// Non-directory paths it replaced.
    pub modified: u64,
    /// Non-directory paths of lower layers it removed.
    pub removed: u64,
    /// Bytes it stores that are waste (the sum of the three below).
    pub wasted_bytes: u64,
    /// ... because a later layer deleted them.
    pub deleted_bytes: u64,
    /// ... because a later layer replaced or rewrote them.
    pub overwritten_bytes: u64,
    /// ... because an earlier layer holds the same bytes.
    pub duplicate_bytes: u64,
    /// Every path it changed, in stream order (not serialised with the report; see
    /// `strata analyze --layer`).
    #[serde(skip)]
    pub changes: Vec<Change>,
}

/// Why a file's bytes are waste.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Waste {
    /// A later layer deleted it.
    Deleted,
    /// A later layer put something else at its path.
    Overwritten,
    /// A later layer stored the same bytes at the same path again.
    Rewritten,
    /// An earlier layer holds the same bytes at another path.
    Duplicate,
}

impl Waste {
    /// `deleted`, `overwritten`, `rewritten` or `duplicate`.
    pub fn name(self) -> &'static str {
        match self {
            Waste::Deleted => "deleted",
            Waste::Overwritten => "overwritten",
            Waste::Rewritten => "rewritten",
            Waste::Duplicate => "duplicate",
        }
    }
}

impl From<How> for Waste {
    fn from(h: How) -> Waste {
        match h {
            How::Deleted => Waste::Deleted,
            How::Overwritten => Waste::Overwritten,
            How::Rewritten => Waste::Rewritten,
        }
    }
}

/// One stored file whose bytes are waste.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WastedPath {
    /// Its absolute path.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// The layer (1-based) that stored it.
    pub layer: usize,
    /// Why it is waste.
    pub waste: Waste,
    /// The layer that deleted, replaced or rewrote it; for a duplicate, the layer holding the
    /// original.
    pub by_layer: usize,
    /// For a duplicate: the original's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
}

/// Image-wide sums (file contents only; see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Uncompressed size of all layer tars.
    pub size: u64,
    /// Bytes of file contents all layers store.
    pub content_bytes: u64,
    /// `content_bytes - wasted_bytes`.
    pub useful_bytes: u64,
    /// Deleted + overwritten + duplicate bytes.
    pub wasted_bytes: u64,
    /// Bytes a later layer deleted.
    pub deleted_bytes: u64,
    /// Bytes a later layer replaced or rewrote.
    pub overwritten_bytes: u64,
    /// Bytes an earlier layer already held.
    pub duplicate_bytes: u64,
    /// Regular files visible in the final image.
    pub files: u64,
}

/// What [`analyze`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// The image ID.
    pub image: Digest,
    /// The layers, base first.
    pub layers: Vec<LayerReport>,
    /// Image-wide sums.
    pub totals: Totals,
    /// `useful_bytes / content_bytes` (1 when there are no file bytes).
    pub efficiency: f64,
    /// The largest wasted files, largest first (at most [`AnalyzeOptions::top`]).
    pub wasted: Vec<WastedPath>,
    /// How many wasted files there are in all.
    pub wasted_count: usize,
    /// Findings, most important first.
    pub findings: Vec<Finding>,
}

/// Analyse `image`, whose layers must be in `store`.
pub fn analyze(
    store: &Store,
    image: &Image,
    options: &AnalyzeOptions<'_>,
) -> Result<Analysis, Error> {
    let scans: Vec<Result<scan::LayerScan, Error>> = image
        .layers
        .par_iter()
        .zip(image.diff_ids.par_iter())
        .enumerate()
        .map(|(i, (blob, diff_id))| {
            let fail = |source: scan::ScanError| Error::AnalyzeLayer {
                layer: i + 1,
                diff_id: *diff_id,
                source,
            };
            let reader = store
                .open_layer(&blob.digest, diff_id)
                .map_err(|e| fail(Box::new(e)))?;
            scan::scan(reader, options.limits).map_err(fail)
        })
        .collect();
    let mut layer_scans = Vec::with_capacity(scans.len());
    for s in scans {
        layer_scans.push(s?);
    }
    let history = read_history(&image.config_bytes);
    let inputs: Vec<LayerInput> = image
        .layers
        .iter()
        .zip(&image.diff_ids)
        .zip(&layer_scans)
        .map(|((blob, diff_id), s)| LayerInput {
            diff_id: *diff_id,
            digest: blob.digest,
            size: s.tar_bytes,
        })
        .collect();
    let entries = layer_scans.into_iter().map(|s| s.entries);
    Ok(account(image.id(), &history, inputs, entries, options))
}

/// What the accounting needs to know of a layer besides its entries.
#[derive(Debug, Clone, Copy)]
struct LayerInput {
    diff_id: Digest,
    digest: Digest,
    size: u64,
}

/// The pure part of [`analyze`]: replay the layers' entries and report.
fn account(
    image: Digest,
    history: &[HistoryEntry],
    inputs: Vec<LayerInput>,
    entries: impl Iterator<Item = Vec<paths::Entry>>,
    options: &AnalyzeOptions<'_>,
) -> Analysis {
    let mut map = paths::PathMap::new();
    for e in entries {
        map.apply(e);
    }
    let made = layer_entries(history, inputs.len());
    let lines = match &options.dockerfile {
        Some(src) => map_history(src, history),
        None => vec![None; history.len()],
    };
    let mut layers: Vec<LayerReport> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let entry = made[i].and_then(|h| history.get(h));
            let changes = std::mem::take(&mut map.layers[i]);
            LayerReport {
                index: i + 1,
                diff_id: input.diff_id,
                digest: input.digest,
                size: input.size,
                content_bytes: 0,
                history: entry.cloned(),
                instruction: entry.map(|h| Instruction::parse(&h.created_by)),
                source: made[i].and_then(|h| lines.get(h).cloned().flatten()),
                added: changes.added,
                modified: changes.modified,
                removed: changes.removed,
                wasted_bytes: 0,
                deleted_bytes: 0,
                overwritten_bytes: 0,
                duplicate_bytes: 0,
                changes: changes.changes,
            }
        })
        .collect();
    let mut totals = Totals {
        size: inputs.iter().map(|l| l.size).sum(),
        ..Totals::default()
    };
    let mut wasted: Vec<WastedPath> = Vec::new();
    for o in &map.objects {
        let l = &mut layers[o.layer];
        l.content_bytes += o.size;
        totals.content_bytes += o.size;
        match o.fate {
            None => totals.files += 1,
            Some(f) => {
                match f.how {
                    How::Deleted => l.deleted_bytes += o.size,
                    How::Overwritten | How::Rewritten => l.overwritten_bytes += o.size,
                }
                if o.size > 0 {
                    wasted.push(WastedPath {
                        path: paths::shown(&o.path),
                        bytes: o.size,
                        layer: o.layer + 1,
                        waste: f.how.into(),
                        by_layer: f.by + 1,
                        duplicate_of: None,
                    });
                }
            }
        }
    }
    let duplicates = map.duplicates();
    for &(dup, orig) in &duplicates {
        let (d, o) = (&map.objects[dup], &map.objects[orig]);
        layers[d.layer].duplicate_bytes += d.size;
        wasted.push(WastedPath {
            path: paths::shown(&d.path),
            bytes: d.size,
            layer: d.layer + 1,
            waste: Waste::Duplicate,
            by_layer: o.layer + 1,
            duplicate_of: Some(paths::shown(&o.path)),
        });
    }
    for l in &mut layers {
        l.wasted_bytes = l.deleted_bytes + l.overwritten_bytes + l.duplicate_bytes;
        totals.deleted_bytes += l.deleted_bytes;
        totals.overwritten_bytes += l.overwritten_bytes;
        totals.duplicate_bytes += l.duplicate_bytes;
    }
    totals.wasted_bytes = totals.deleted_bytes + totals.overwritten_bytes + totals.duplicate_bytes;
    totals.useful_bytes = totals.content_bytes - totals.wasted_bytes;
    let efficiency = if totals.content_bytes == 0 {
        1.0
    } else {
        totals.useful_bytes as f64 / totals.content_bytes as f64
    };
    let findings = findings::findings(&findings::Context {
        map: &map,
        layers: &layers,
        duplicates: &duplicates,
        options,
    });
    let wasted_count = wasted.len();
    wasted.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.path.cmp(&b.path))
            .then(a.layer.cmp(&b.layer))
    });
    wasted.truncate(options.top);
    Analysis {
        image,
        layers,
        totals,
        efficiency,
        wasted,
        wasted_count,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::paths::{Entry, Item};
    use super::*;

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.as_bytes().into(),
            item: Item::File {
                size: data.len() as u64,
                digest: Digest::of(data),
            },
        }
    }

    fn gone(path: &str) -> Entry {
        Entry {
            path: path.as_bytes().into(),
            item: Item::Whiteout,
        }
    }

    fn run(layers: Vec<Vec<Entry>>, history: &[&str]) -> Analysis {
        let history: Vec<HistoryEntry> = history
            .iter()
            .map(|h| HistoryEntry {
                created_by: h.to_string(),
                ..HistoryEntry::default()
            })
            .collect();
        let inputs = layers
            .iter()
            .enumerate()
            .map(|(i, _)| LayerInput {
                diff_id: Digest::of(&[i as u8]),
                digest: Digest::of(&[i as u8]),
                size: 0,
            })
            .collect();
        account(
            Digest::of(b"image"),
            &history,
            inputs,
            layers.into_iter(),
            &AnalyzeOptions::default(),
        )
    }

    #[test]
    fn waste_and_efficiency_by_hand() {
        let a = run(
            vec![
                vec![file("bin/sh", &[1; 1000]), file("etc/conf", &[2; 100])],
                vec![file("etc/conf", &[3; 150]), file("opt/big", &[4; 400])],
                vec![gone("opt/big"), file("srv/copy", &[1; 1000])],
            ],
            &[
                "ADD rootfs.tar / # buildkit",
                "RUN /bin/sh -c make # buildkit",
                "RUN /bin/sh -c rm /opt/big && cp /bin/sh /srv/copy # buildkit",
            ],
        );
        // Stored: 1000 + 100 + 150 + 400 + 1000 = 2650.
        // Waste: /etc/conf@1 overwritten (100), /opt/big deleted (400), /srv/copy a duplicate
        // of /bin/sh (1000) = 1500. Useful: 2650 - 1500 = 1150; efficiency 1150/2650.
        assert_eq!(a.totals.content_bytes, 2650);
        assert_eq!(
            (
                a.totals.overwritten_bytes,
                a.totals.deleted_bytes,
                a.totals.duplicate_bytes
            ),
            (100, 400, 1000)
        );
        assert_eq!(a.totals.useful_bytes, 1150);
        assert!((a.efficiency - 1150.0 / 2650.0).abs() < 1e-12);
        assert_eq!(
            a.layers.iter().map(|l| l.wasted_bytes).collect::<Vec<_>>(),
            [100, 400, 1000]
        );
        assert_eq!(a.layers[2].removed, 1);
        assert_eq!(
            a.wasted
                .iter()
                .map(|w| (w.path.as_str(), w.bytes, w.layer, w.waste, w.by_layer))
                .collect::<Vec<_>>(),
            [
                ("/srv/copy", 1000, 3, Waste::Duplicate, 1),
                ("/opt/big", 400, 2, Waste::Deleted, 3),
                ("/etc/conf", 100, 1, Waste::Overwritten, 2),
            ]
        );
        assert_eq!(
            a.layers[1]
                .instruction
                .as_ref()
                .map(Instruction::display)
                .as_deref(),
            Some("RUN make")
        );
    }

    #[test]
    fn an_image_without_file_bytes_is_fully_efficient() {
        let a = run(vec![vec![], vec![file("empty", b"")]], &[]);
        assert_eq!(a.efficiency, 1.0);
        assert!(a.findings.is_empty() && a.wasted.is_empty());
        assert!(a.layers.iter().all(|l| l.instruction.is_none()));
    }
}
