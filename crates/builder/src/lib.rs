//! Build engine for strata.
//!
//! This crate will compose the parser, the store and the snapshotter: it plans a build graph
//! from a parsed Dockerfile, keys every step with a stable, versioned cache key, runs RUN steps
//! isolated in namespaces on copy-on-write snapshots, copies build-context files for COPY/ADD,
//! and builds independent stages in parallel. It reports progress through a caller-supplied
//! sink and never prints.
