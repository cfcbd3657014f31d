//! Build engine for strata.
//!
//! This crate composes the parser, the store and the snapshotter: [`Engine::build`] turns a
//! Dockerfile and a build context into an image in the store. It plans the stages the target
//! needs ([`plan`]), builds independent stages at the same time on the caller's rayon pool,
//! keys every RUN/COPY/ADD/WORKDIR step with a stable, versioned cache key ([`cachekey`],
//! [`cache`]) and says why a step missed, runs RUN steps isolated in namespaces on
//! copy-on-write snapshots ([`runstep`], [`exec`]), applies metadata instructions to the
//! config with BuildKit's history texts ([`imageconfig`]), and writes the image, tagging it
//! last. [`Engine::prune`] collects what no ref reaches, unpacked layers included.
//!
//! It reports progress through a caller-supplied [`progress::Reporter`] and never prints;
//! it never builds the global rayon pool.
//!
//! Modules:
//! - [`engine`] — the store and its snapshotter together; unpacking and pruning;
//! - [`plan`] — the build graph;
//! - [`runstep`] — RUN;
//! - [`imageconfig`] — instruction -> config change, history texts (also for `import --change`);
//! - [`cache`] — step records and explanations of misses;
//! - [`logs`] — step logs on disk;
//! - [`exec`] — the one place that forks, unshares, mounts, pivots and execs a step's process;
//! - [`user`] — `USER` and `--chown` resolution from an image's `/etc/passwd` and `/etc/group`;
//! - [`context`] — the build context: `.dockerignore`, walking, content hashing, wildcards;
//! - [`copy`] — `COPY` and `ADD`: sources to a cache digest, then into a root, in-root safe;
//! - [`container`] — containers: a writable snapshot over an image plus a record; run, diff,
//!   commit, mount, export;
//! - [`import`] — `strata import`: a tarball or a folder becomes a one-layer image;
//! - [`cachekey`] — cache keys and the explanation of cache misses;
//! - [`progress`] — build events and the [`progress::Reporter`] trait;
//! - [`platform`] — the host platform and the automatic platform build args;
//! - [`timefmt`] — RFC 3339 times;
//! - [`analyze`] — layer insight: per-layer changes, wasted bytes, efficiency, findings;
//! - [`check`] — `build --check`: the lints and the checks that need the store, without building.
//! - [`pull`] — base images pulled from registries (missing ones, or all with `--pull`);
//! - [`remote_cache`] — the shared cache: `--cache-from` / `--cache-to` through a registry or
//!   an OCI layout folder, layers fetched only when needed.

pub mod analyze;
mod build;
pub mod cache;
pub mod cachekey;
pub mod check;
pub mod container;
pub mod context;
pub mod copy;
pub mod engine;
mod error;
pub mod exec;
mod gofmt;
pub mod imageconfig;
pub mod import;
pub mod logs;
pub mod plan;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod remote_cache;
pub mod runstep;
pub mod timefmt;
pub mod user;

pub use build::{error_text, random_hex, BuildOptions, BuildResult, SecretSpec, StepOutcome};
pub use engine::{Engine, LayerRef, PruneOptions, PruneReport};
pub use error::Error;
pub use pull::PullPolicy;
pub use runstep::SecretSource;
