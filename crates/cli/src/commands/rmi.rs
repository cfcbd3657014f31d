//! `strata rmi [-f] IMAGE...`: untag and delete images with Docker's rules.
//!
//! - By tag: the tag is removed (`Untagged: ...`); when it was the image's last name the
//!   image is deleted too (`Deleted: sha256:...`), unless images are built on it: then it
//!   stays, untagged, as Docker keeps it.
//! - By ID: an image with several tags needs `-f` (which removes every tag); the image is
//!   then deleted.
//! - An image that containers use, or that other images are built on, is deleted only
//!   with `-f`. Deleting removes the image's refs; its blobs stay while anything else
//!   references them and are freed by `strata prune`.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use strata_store::{RefKind, Reference, Store};

use super::images::{Catalog, Entry};
use crate::global::GlobalArgs;
use crate::ui::color::Palette;
use crate::ui::error::{self, Failure};

const EXAMPLES: &str = "\
Examples:
  strata rmi app:1                  remove a tag (and the image, if it was its last name)
  strata rmi 0123456789ab           delete an image by ID
  strata rmi -f 0123456789ab        delete it even with several tags, children or containers
  strata rmi app:1 app:2 && strata prune   then free the layers nothing uses";

/// Options of `strata rmi`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RmiArgs {
    /// Delete even an image with several tags, images built on it, or containers using it.
    #[arg(short, long)]
    force: bool,
    /// The images (references or IDs).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// What removing one name did, line by line (`Untagged: ...`, `Deleted: ...`).
pub fn remove(store: &Store, name: &str, force: bool) -> anyhow::Result<Vec<String>> {
    let catalog = Catalog::load(store)?;
    let entry = catalog.find(store, name)?;
    let short = entry.id().short();
    let by_tag = Reference::parse(name)
        .ok()
        .filter(|r| entry.tags.contains(r));
    let children = catalog.children_of(entry);
    let mut lines = Vec::new();
    let conflict = |why: String, hint: &str| -> anyhow::Error {
        Failure::new(why).hint(hint.to_string()).into()
    };
    match by_tag {
        Some(tag) if entry.tags.len() > 1 => {
            store.untag(&tag)?;
            lines.push(format!("Untagged: {}", tag.familiar()));
            return Ok(lines);
        }
        Some(tag) => {
            if let (Some(c), false) = (entry.containers.first(), force) {
                let c = c.get(..12).unwrap_or(c);
                return Err(conflict(
                    format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - container {c} is using its referenced image {short}"
                    ),
                    "remove the container first, or use -f (the container keeps the layers it needs)",
                ));
            }
            if !children.is_empty() && !force {
                // Docker keeps a parent image, untagged, for the images built on it.
                let (_, manifest) = entry
                    .tag_targets
                    .iter()
                    .find(|(r, _)| *r == tag)
                    .cloned()
                    .unwrap_or_else(|| (tag.clone(), entry.image.manifest.clone()));
                store.set_ref(RefKind::Untagged, &entry.id().hex(), &manifest)?;
                store.untag(&tag)?;
                lines.push(format!("Untagged: {}", tag.familiar()));
                return Ok(lines);
            }
        }
        None => {
            if !force {
                if entry.tags.len() > 1 {
                    return Err(conflict(
                        format!("conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"),
                        "remove its tags one by one (`strata rmi NAME:TAG`), or use -f to remove them all",
                    ));
                }
                if let Some(c) = entry.containers.first() {
                    let c = c.get(..12).unwrap_or(c);
                    return Err(conflict(
                        format!("conflict: unable to delete {short} (must be forced) - image is being used by container {c}"),
                        "remove the container first, or use -f (the container keeps the layers it needs)",
                    ));
                }
                if let Some(child) = children.first() {
                    return Err(conflict(
                        format!(
                            "conflict: unable to delete {short} (must be forced) - image has dependent child images ({})",
                            child.label()
                        ),
                        "use -f to delete it anyway: images built on it keep the layers they share with it",
                    ));
                }
            }
        }
    }
    delete(store, entry, &mut lines)?;
    Ok(lines)
}

/// Remove every tag and the untagged ref of an image.
fn delete(store: &Store, entry: &Entry, lines: &mut Vec<String>) -> anyhow::Result<()> {
    for tag in &entry.tags {
        if store.untag(tag)? {
            lines.push(format!("Untagged: {}", tag.familiar()));
        }
    }
    store.remove_ref(RefKind::Untagged, &entry.id().hex())?;
    lines.push(format!("Deleted: {}", entry.id()));
    Ok(())
}

pub fn run(global: &GlobalArgs, args: &RmiArgs) -> anyhow::Result<ExitCode> {
    let root = global.store_root()?;
    let store = global.open_store()?;
    let place = format!("store {}", root.display());
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for name in &args.images {
        match remove(&store, name, args.force) {
            Ok(lines) => {
                for l in lines {
                    writeln!(out, "{l}")?;
                }
            }
            Err(e) => {
                // Like Docker: report this one and go on with the others.
                failed = true;
                out.flush()?;
                eprint!("{}", error::render(&e, Some(&place), Palette::stderr()));
            }
        }
    }
    Ok(if failed {
        ExitCode::from(error::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
