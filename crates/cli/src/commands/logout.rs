//! `strata logout`: forget the credentials of a registry.

use std::process::ExitCode;

use clap::Args;
use strata_store::registry::{registry_host, AuthFile};

use super::registry::RegistryArgs;
use crate::ui::out::outln;

const EXAMPLES: &str = "\
Examples:
  strata logout reg.example                    forget the stored credentials";

/// Options of `strata logout`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub).
    server: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: &LogoutArgs) -> anyhow::Result<ExitCode> {
    let host = registry_host(args.server.as_deref().unwrap_or("docker.io"));
    let path = args.registry.authfile_path()?;
    let mut file = AuthFile::load(&path)?;
    if file.remove(&host) {
        file.save()?;
        outln!("Removing login credentials for {host}")?;
    } else {
        outln!("Not logged in to {host}")?;
    }
    Ok(ExitCode::SUCCESS)
}
