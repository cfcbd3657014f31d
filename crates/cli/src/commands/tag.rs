//! `strata tag SOURCE TARGET`: give an image another name, as `docker tag` does.
//!
//! A tag that pointed elsewhere moves; the image it pointed at, if that was its last name,
//! stays in the store as an untagged image (`<none>` in `strata images`), as Docker keeps
//! it, until `strata rmi` removes it.

use std::process::ExitCode;

use clap::Args;
use strata_store::RefKind;

use super::images::Catalog;
use crate::global::GlobalArgs;
use crate::ui::error::{new_image_name, Failure};

const EXAMPLES: &str = "\
Examples:
  strata tag busybox:latest me/busybox:1       another name for the same image
  strata tag 0123456789ab app:release          tag an image by its ID
  strata tag app:1 registry.example:5000/app:1 a name with a registry";

/// Options of `strata tag`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TagArgs {
    /// The image to tag (reference or ID).
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    source: String,
    /// The new name (`:latest` when no tag is given).
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    target: String,
}

pub fn run(global: &GlobalArgs, args: &TagArgs) -> anyhow::Result<ExitCode> {
    let store = global.open_store()?;
    let image = store.resolve(&args.source)?;
    let target = new_image_name(&args.target, "TARGET_IMAGE")?;
    if target.digest().is_some() {
        return Err(Failure::usage(format!(
            "refusing to create a tag with a digest reference: {}",
            args.target
        ))
        .at("TARGET_IMAGE")
        .hint("a tag names an image by `name:tag`; a digest already pins one")
        .into());
    }
    let catalog = Catalog::load(&store)?;
    let previous = store.get_ref(RefKind::Tag, &target.to_string())?;
    store.tag(&target, &image)?;
    log::info!("tagged {} as {}", image.id().short(), target.familiar());
    // The image the tag pointed at keeps existing, untagged, when this was its last name.
    if let Some(prev) = previous.filter(|p| p.digest != image.manifest.digest) {
        let displaced = catalog
            .entries()
            .find(|e| e.tag_targets.iter().any(|(r, _)| *r == target));
        if let Some(e) = displaced {
            if e.tags.len() == 1 && !e.untagged && e.id() != image.id() {
                store.set_ref(RefKind::Untagged, &e.id().hex(), &prev)?;
                log::info!("{} is now untagged", e.id().short());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
