//! Locating the workspace and the read-only `../shared` folder next to it.

use std::path::{Path, PathBuf};

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The shared reference folder: `$STRATA_SHARED` if set, else `<workspace>/../shared`.
/// Returns `None` when it does not exist, so callers can say plainly what they skipped.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("STRATA_SHARED") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("..").join("shared"),
    };
    dir.is_dir().then(|| dir.canonicalize().unwrap_or(dir))
}
