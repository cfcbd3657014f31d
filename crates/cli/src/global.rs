//! Options every subcommand accepts.

use std::path::PathBuf;

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
