//! `strata images --tree`: the images as a tree of the layer chains they share.
//!
//! Each line is one layer (its diffID, short, and its uncompressed size) under the layer it
//! was stacked on; an image is named at its top layer. A base layer shared by ten images is
//! drawn once, with the ten images below it: the picture of what sharing saves.

use serde::Serialize;
use strata_store::Digest;

use super::Entry;
use crate::ui::color::Palette;
use crate::ui::human;

/// One layer in the tree.
#[derive(Debug)]
struct Node<'a> {
    diff_id: Digest,
    size: u64,
    /// Images whose top layer this is.
    images: Vec<&'a Entry>,
    children: Vec<Node<'a>>,
}

/// Every image's layer chain, merged where chains start the same.
#[derive(Debug)]
pub struct Forest<'a> {
    roots: Vec<Node<'a>>,
    /// Images without layers.
    empty: Vec<&'a Entry>,
    images: usize,
    /// What the images would take if each had its own copy of its layers.
    unshared: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonImage {
    #[serde(rename = "ID")]
    id: String,
    tags: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonNode {
    layer: String,
    size: u64,
    images: Vec<JsonImage>,
    children: Vec<JsonNode>,
}

/// `--tree --format json`: the layer forest plus the images without layers.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JsonForest {
    layers: Vec<JsonNode>,
    images_without_layers: Vec<JsonImage>,
    distinct_layer_size: u64,
    unshared_size: u64,
}

fn insert<'a>(level: &mut Vec<Node<'a>>, path: &[(Digest, u64)], e: &'a Entry) {
    let Some(((diff_id, size), rest)) = path.split_first() else {
        return;
    };
    let at = match level.iter().position(|n| n.diff_id == *diff_id) {
        Some(i) => i,
        None => {
            level.push(Node {
                diff_id: *diff_id,
                size: *size,
                images: Vec::new(),
                children: Vec::new(),
            });
            level.len() - 1
        }
    };
    if rest.is_empty() {
        level[at].images.push(e);
    } else {
        insert(&mut level[at].children, rest, e);
    }
}

/// The smallest image label in a subtree: siblings are ordered by it, so the tree reads
/// alphabetically and the same store always draws the same tree.
fn first_label(n: &Node<'_>) -> String {
    let own = n.images.iter().map(|e| e.label()).min();
    let below = n.children.iter().map(first_label).min();
    match (own, below) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or_default(),
    }
}

fn sort(level: &mut [Node<'_>]) {
    for n in level.iter_mut() {
        n.images.sort_by_key(|e| e.label());
        sort(&mut n.children);
    }
    level.sort_by_cached_key(|n| (first_label(n), n.diff_id));
}

fn distinct_size(level: &[Node<'_>]) -> u64 {
    level
        .iter()
        .map(|n| n.size + distinct_size(&n.children))
        .sum()
}

fn count(level: &[Node<'_>]) -> usize {
    level.iter().map(|n| 1 + count(&n.children)).sum()
}

fn json_image(e: &Entry) -> JsonImage {
    JsonImage {
        id: e.id().to_string(),
        tags: e.familiar_tags(),
    }
}

fn json_nodes(level: &[Node<'_>]) -> Vec<JsonNode> {
    level
        .iter()
        .map(|n| JsonNode {
            layer: n.diff_id.to_string(),
            size: n.size,
            images: n.images.iter().map(|e| json_image(e)).collect(),
            children: json_nodes(&n.children),
        })
        .collect()
}

impl<'a> Forest<'a> {
    /// Merge the images' chains.
    pub fn build(entries: &[&'a Entry]) -> Forest<'a> {
        let mut forest = Forest {
            roots: Vec::new(),
            empty: Vec::new(),
            images: entries.len(),
            unshared: entries.iter().map(|e| e.size()).sum(),
        };
        for e in entries {
            let path: Vec<(Digest, u64)> = e
                .image
                .diff_ids
                .iter()
                .copied()
                .zip(e.layer_sizes.iter().copied())
                .collect();
            if path.is_empty() {
                forest.empty.push(e);
            } else {
                insert(&mut forest.roots, &path, e);
            }
        }
        sort(&mut forest.roots);
        forest.empty.sort_by_key(|e| e.label());
        forest
    }

    /// The JSON form.
    pub fn to_json(&self) -> JsonForest {
        JsonForest {
            layers: json_nodes(&self.roots),
            images_without_layers: self.empty.iter().map(|e| json_image(e)).collect(),
            distinct_layer_size: distinct_size(&self.roots),
            unshared_size: self.unshared,
        }
    }

    /// The drawing, with a closing line on what sharing saves.
    pub fn render(&self, palette: Palette) -> String {
        let mut out = String::new();
        for (i, n) in self.roots.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            draw(&mut out, n, "", None, palette);
        }
        if !self.roots.is_empty() && !self.empty.is_empty() {
            out.push('\n');
        }
        for e in &self.empty {
            out.push_str(&format!(
                "{}  {}  {}\n",
                palette.dim("(no layers)"),
                human::size(0),
                names(e, palette)
            ));
        }
        if self.images == 0 {
            out.push_str("no images\n");
            return out;
        }
        let layers = count(&self.roots);
        out.push_str(&format!(
            "\n{} image{}, {} distinct layer{}: {} stored once ({} if every image had its own copy)\n",
            self.images,
            if self.images == 1 { "" } else { "s" },
            layers,
            if layers == 1 { "" } else { "s" },
            human::size(distinct_size(&self.roots)),
            human::size(self.unshared),
        ));
        out
    }
}

fn names(e: &Entry, palette: Palette) -> String {
    let tags = if e.tags.is_empty() {
        "<none>".to_string()
    } else {
        e.familiar_tags().join(", ")
    };
    format!(
        "{} {}",
        palette.name(&tags),
        palette.dim(&format!("[image {}]", e.id().short()))
    )
}

/// One layer line and, below it, its children. `last` is `None` for a root, else whether
/// this node is its parent's last child.
fn draw(out: &mut String, n: &Node<'_>, prefix: &str, last: Option<bool>, palette: Palette) {
    let (branch, child_prefix) = match last {
        None => (String::new(), String::new()),
        Some(true) => (format!("{prefix}└── "), format!("{prefix}    ")),
        Some(false) => (format!("{prefix}├── "), format!("{prefix}│   ")),
    };
    out.push_str(&palette.dim(&branch));
    out.push_str(&format!("{}  {}", n.diff_id.short(), human::size(n.size)));
    for e in &n.images {
        out.push_str("  ");
        out.push_str(&names(e, palette));
    }
    out.push('\n');
    for (i, c) in n.children.iter().enumerate() {
        draw(
            out,
            c,
            &child_prefix,
            Some(i + 1 == n.children.len()),
            palette,
        );
    }
}
