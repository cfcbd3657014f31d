//! Snapshotter for strata.
//!
//! This crate will own the filesystem side: overlay2-style layer folders (`diff/`, `link`,
//! `lower`, short links under `l/`), copy-on-write overlayfs mounts, changesets read from upper
//! dirs and streamed as layer tars, safe unpacking of layer tars, and a `vfs` fallback driver.
//! Snapshots are named by opaque keys: it knows nothing of digests, images or Dockerfiles.
