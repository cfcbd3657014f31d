//! Options every subcommand accepts.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use strata_overlay::Driver;

/// Global options, accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Store root (default: /var/lib/strata as root, $XDG_DATA_HOME/strata otherwise).
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// More detail: commands with a verbose view show it (`system df -v`); `-vv` also logs
    /// info to stderr, `-vvv` debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Diagnostics written to stderr (default: warn; overrides `-v`).
    #[arg(
        long,
        global = true,
        env = "STRATA_LOG_LEVEL",
        value_enum,
        value_name = "LEVEL"
    )]
    pub log_level: Option<LogLevel>,

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

/// Levels of `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings (the default).
    Warn,
    /// Also what the command is doing (which store, which driver).
    Info,
    /// Also details for debugging strata itself.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
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
        log::info!("store: {}", root.display());
        strata_store::Store::open(&root)
            .with_context(|| format!("cannot open the store at {}", root.display()))
    }
}

impl GlobalArgs {
    /// The snapshotter of the store at `root` for reading (inspect, accounting), or `None`
    /// when nothing was ever unpacked there with the driver in use: then nothing is created.
    pub fn existing_snapshotter(
        &self,
        root: &std::path::Path,
    ) -> anyhow::Result<Option<strata_overlay::Snapshotter>> {
        let has = |d: Driver| root.join(d.name()).join("l").is_dir();
        let driver = match self.storage_driver {
            Some(d) if has(d) => Some(d),
            Some(_) => return Ok(None),
            None if has(Driver::Overlay) => None,
            None if has(Driver::Vfs) => Some(Driver::Vfs),
            None => return Ok(None),
        };
        let snapshotter = strata_overlay::Snapshotter::open(root, driver)
            .with_context(|| format!("cannot open the layer folders of {}", root.display()))?;
        log::info!("storage driver: {}", snapshotter.driver());
        Ok(Some(snapshotter))
    }
}

impl GlobalArgs {
    /// The store and its snapshotter: what builds and prunes work on. The snapshotter is
    /// opened when first used (a fully cached build never needs it).
    pub fn open_engine(&self) -> anyhow::Result<strata_builder::Engine> {
        let store = self.open_store()?;
        Ok(strata_builder::Engine::with_driver(
            store,
            self.storage_driver,
        ))
    }
}
