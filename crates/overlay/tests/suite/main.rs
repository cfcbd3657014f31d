//! The integration suites of strata-overlay, in one test binary.
//!
//! Tests that mount are `#[ignore]`d with the privileged reason; `cargo xtask test` runs them
//! as root inside `unshare --mount --propagation private`, each with a fresh store in a temp
//! dir.

mod behaviour;
mod common;
mod hostile;
