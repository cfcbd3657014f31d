//! Shared pieces of how the CLI talks to people and scripts: Docker-style tables, human sizes
//! and times, colour decisions, JSON output, error rendering and the stderr logger.
//!
//! Everything here is pure formatting or a thin decision over the environment, so commands
//! stay short and print the same way.

pub mod color;
pub mod error;
pub mod human;
pub mod json;
pub mod log;
pub mod out;
pub mod progress;
pub mod table;
