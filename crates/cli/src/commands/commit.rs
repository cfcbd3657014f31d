//! `strata commit CONTAINER [NAME:TAG]`: a new image from a container: the image's layers,
//! the container's writable layer on top, its config, and a history entry.

use std::process::ExitCode;

use clap::Args;
use strata_builder::container::CommitOptions;

use crate::global::GlobalArgs;
use crate::ui::error::{new_image_name, AtPlace};
use crate::ui::out::outln;

const EXAMPLES: &str = "\
Examples:
  strata commit web app:patched
  strata commit -m 'add tools' -c 'CMD [\"sh\"]' web app:2
  echo 'FROM app:2' | strata build -t app:3 -f - .";

/// Options of `strata commit`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct CommitArgs {
    /// The history entry's comment.
    #[arg(short, long)]
    message: Option<String>,
    /// The image's author.
    #[arg(short, long)]
    author: Option<String>,
    /// A Dockerfile instruction applied to the config (`CMD ["sh"]`, `ENV A=1`); repeatable.
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// The container (name, ID or unique ID prefix).
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// Tag for the new image (untagged when absent).
    #[arg(value_name = "NAME[:TAG]")]
    reference: Option<String>,
}

pub fn run(global: &GlobalArgs, args: &CommitArgs) -> anyhow::Result<ExitCode> {
    let reference = args
        .reference
        .as_deref()
        .map(|r| new_image_name(r, "the NAME[:TAG] argument"))
        .transpose()?;
    let engine = global.open_engine()?;
    let committed = engine
        .containers()
        .commit(
            &args.container,
            &CommitOptions {
                reference,
                message: args.message.clone(),
                author: args.author.clone(),
                changes: args.change.clone(),
                ..CommitOptions::default()
            },
        )
        .at(format!("container {}", args.container))?;
    outln!("{}", committed.image.id())?;
    Ok(ExitCode::SUCCESS)
}
