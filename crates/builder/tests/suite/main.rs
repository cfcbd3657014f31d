//! The builder's integration suite: the executor on a busybox root, and whole builds in fresh
//! stores with a busybox base image made from Debian's `busybox-static`.
//!
//! Everything here needs root and overlayfs: each test is `#[ignore]`d as privileged and run
//! by `cargo xtask test` (as root, in a private mount namespace), or by hand with
//! `unshare --mount --propagation private -- cargo test -p strata-builder -- --ignored`.

mod analyze_built;
mod build_basics;
mod build_cache;
mod build_copy;
mod build_graph;
mod build_run;
mod common;
mod containers;
mod exec;
