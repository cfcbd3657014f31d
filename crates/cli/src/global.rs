//! Options every subcommand accepts.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use strata_overlay::Driver;

/// Global options, accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Store root (default: /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise).
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// More output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Storage driver for unpacked layers: `overlay` (the default where overlayfs works) or
    /// `vfs` (a full copy per layer, for filesystems or sandboxes without overlayfs).
    #[arg(
        long,
        global = true,
        env = "STRATA_STORAGE_DRIVER",
        value_name = "DRIVER"
    )]
    pub storage_driver: Option<Driver>,
}

impl GlobalArgs {
    /// The store root: `--root`/`STRATA_ROOT`, else `/var/lib/strata` for root, else
    /// `$XDG_DATA_HOME/strata` (`~/.local/share/strata` when unset).
    pub fn store_root(&self) -> anyhow::Result<PathBuf> {
        if let Some(root) = &self.root {
            return Ok(root.clone());
        }
        if rustix::process::geteuid().is_root() {
            return Ok(PathBuf::from("/var/lib/strata"));
        }
        let data = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => {
                let home = std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .context("neither --root, STRATA_ROOT, XDG_DATA_HOME nor HOME is set")?;
                PathBuf::from(home).join(".local").join("share")
            }
        };
        Ok(data.join("strata"))
    }

    /// Open (creating if needed) the store.
    pub fn open_store(&self) -> anyhow::Result<strata_store::Store> {
        let root = self.store_root()?;
        strata_store::Store::open(&root)
            .with_context(|| format!("cannot open the store at {}", root.display()))
    }
}
