//! Build engine for strata.
//!
//! This crate composes the parser, the store and the snapshotter: it plans a build graph
//! from a parsed Dockerfile, keys every step with a stable, versioned cache key, runs RUN steps
//! isolated in namespaces on copy-on-write snapshots, copies build-context files for COPY/ADD,
//! and builds independent stages in parallel. It reports progress through a caller-supplied
//! sink and never prints.
//!
//! The modules here are the parts that stand on their own:
//! - [`exec`]: the one place that forks, unshares, mounts, pivots and execs a step's process;
//! - [`user`]: `USER` and `--chown` resolution from an image's `/etc/passwd` and `/etc/group`;
//! - [`context`]: the build context: `.dockerignore`, walking, content hashing, wildcards;
//! - [`copy`]: `COPY` and `ADD`: sources to a cache digest, then into a root, in-root safe;
//! - [`cachekey`]: cache keys and the explanation of cache misses;
//! - [`progress`]: build events and the [`progress::Reporter`] trait;
//! - [`platform`]: the host platform and the automatic platform build args;
//! - [`analyze`]: layer insight: per-layer changes, wasted bytes, efficiency, findings.

pub mod analyze;
pub mod cachekey;
pub mod context;
pub mod copy;
mod error;
pub mod exec;
mod inroot;
pub mod platform;
pub mod progress;
pub mod user;

pub use error::Error;
