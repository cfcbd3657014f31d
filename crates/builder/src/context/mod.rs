//! The build context: which files a build may see, and what they hash to.
//!
//! - [`ignore`]: `.dockerignore` reading (with `<Dockerfile>.dockerignore` precedence) and
//!   matching exactly as moby/patternmatcher does;
//! - [`walk`]: the context as a sorted index of entries (no symlink is followed), with the
//!   ignore rules applied and directories pruned only when that is safe;
//! - [`hash`]: BuildKit-style content hashing of selected paths, for cache keys and for
//!   naming the file that changed;
//! - [`hashcache`]: the metadata-keyed memo of file digests that lets a rebuild read only
//!   the files that changed;
//! - [`glob`]: `COPY`/`ADD` wildcard expansion with Go `filepath.Match` semantics;
//! - [`gopath`]: Go's `filepath.Clean` and `filepath.Match`, on which all of the above rest.

pub mod glob;
pub mod gopath;
pub mod hash;
pub mod hashcache;
pub mod ignore;
mod pathtable;
pub mod walk;

pub use glob::{expand_double_star, expand_wildcards, split_wildcards};
pub use hash::{hash_selection, HashOptions};
pub use hashcache::{HashCache, StatId};
pub use ignore::{parse_ignore_file, read_ignore_file, IgnoreFile, PatternMatcher};
pub use walk::{ContextIndex, Entry, FileKind};
