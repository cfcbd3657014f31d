//! `strata mount IMAGE|CONTAINER` and `strata umount IMAGE|CONTAINER`: the merged
//! filesystem, mounted until `umount` (a container's is writable, an image's read-only),
//! for looking around. The path is printed on standard output.

use std::process::ExitCode;

use clap::Args;
use strata_builder::{Engine, Error as BuildError};
use strata_store::Digest;

use crate::global::GlobalArgs;
use crate::ui::error::{AtPlace, Failure};
use crate::ui::out::outln;

const MOUNT_EXAMPLES: &str = "\
Examples:
  ls $(strata mount web)/etc          a container's files (writable)
  cd $(strata mount busybox)          an image's files (read-only)
  strata umount busybox";

const UMOUNT_EXAMPLES: &str = "\
Examples:
  strata umount web
  strata umount busybox";

/// Options of `strata mount`.
#[derive(Debug, Args)]
#[command(after_help = MOUNT_EXAMPLES)]
pub struct MountArgs {
    /// A container (name or ID), else an image (reference or ID).
    #[arg(value_name = "IMAGE|CONTAINER")]
    name: String,
}

/// Options of `strata umount`.
#[derive(Debug, Args)]
#[command(after_help = UMOUNT_EXAMPLES)]
pub struct UmountArgs {
    /// What `strata mount` was given.
    #[arg(value_name = "IMAGE|CONTAINER")]
    name: String,
}

/// Whether `name` names a container (containers win over images, as in podman).
fn is_container(engine: &Engine, name: &str) -> anyhow::Result<bool> {
    match engine.containers().get(name) {
        Ok(_) => Ok(true),
        Err(BuildError::ContainerNotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The ID of the one mounted image view whose image ID starts with `prefix` (hex, with or
/// without `sha256:`).
fn mounted_image_id(engine: &Engine, prefix: &str) -> anyhow::Result<Option<Digest>> {
    let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
    if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut found = Vec::new();
    for info in engine.snapshotter()?.walk()? {
        if let Some(id) = info.key.strip_prefix("image-mount-") {
            if id.starts_with(hex) {
                found.push(Digest::from_hex(id)?);
            }
        }
    }
    Ok(match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    })
}

pub fn mount(global: &GlobalArgs, args: &MountArgs) -> anyhow::Result<ExitCode> {
    let engine = global.open_engine()?;
    let path = if is_container(&engine, &args.name)? {
        engine
            .containers()
            .mount(&args.name)
            .at(format!("container {}", args.name))?
    } else {
        let image = engine.store().resolve(&args.name).map_err(|e| {
            Failure::new(format!("{e}: no container or image by that name"))
                .at(format!("store {}", engine.store().root().display()))
                .hint("`strata ps -a` lists containers, `strata images` lists images")
        })?;
        engine
            .containers()
            .mount_image(&image)
            .at(format!("image {}", args.name))?
    };
    outln!("{}", path.display())?;
    Ok(ExitCode::SUCCESS)
}

pub fn umount(global: &GlobalArgs, args: &UmountArgs) -> anyhow::Result<ExitCode> {
    let engine = global.open_engine()?;
    if is_container(&engine, &args.name)? {
        engine
            .containers()
            .unmount(&args.name)
            .at(format!("container {}", args.name))?;
    } else {
        let id = match engine.store().resolve(&args.name) {
            Ok(image) => image.id(),
            // An image removed while mounted is still unmounted by its ID.
            Err(e) => mounted_image_id(&engine, &args.name)?
                .ok_or(e)
                .at(format!("store {}", engine.store().root().display()))?,
        };
        let was = engine
            .containers()
            .unmount_image(&id)
            .at(format!("image {}", args.name))?;
        if !was {
            return Err(Failure::new(format!("image {} is not mounted", args.name))
                .hint("`strata mount IMAGE` mounts it")
                .into());
        }
    }
    outln!("{}", args.name)?;
    Ok(ExitCode::SUCCESS)
}
