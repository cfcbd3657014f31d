//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the snapshotter, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing (`"open"`, `"rename"`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A layer tar entry was refused or could not be applied; nothing outside the target was
    /// touched.
    #[error("layer entry #{index} `{entry}`: {reason}")]
    Entry {
        /// Zero-based position of the entry in the tar stream.
        index: u64,
        /// The entry's name as written in the tar (lossily decoded).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path given to an in-root operation leaves the root or is malformed.
    #[error("path `{path}` {reason}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No snapshot has this key.
    #[error("snapshot `{key}` does not exist")]
    NotFound {
        /// The key or name looked up.
        key: String,
    },
    /// A snapshot with this key or name exists already.
    #[error("snapshot `{key}` already exists")]
    AlreadyExists {
        /// The key or name.
        key: String,
    },
    /// The snapshot is of the wrong kind for the operation (e.g. committing a view).
    #[error("snapshot `{key}` is {actual}, but {op} needs {expected}")]
    WrongKind {
        /// The key.
        key: String,
        /// The operation.
        op: &'static str,
        /// The kind the operation needs.
        expected: &'static str,
        /// The kind the snapshot has.
        actual: &'static str,
    },
    /// A key or name cannot be used.
    #[error("snapshot key `{key}` is invalid: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// Removing a snapshot that others are built on.
    #[error(
        "snapshot `{key}` has {} child snapshot(s) (first: `{first}`); remove them first",
        count
    )]
    HasChildren {
        /// The key.
        key: String,
        /// How many children.
        count: usize,
        /// One of them.
        first: String,
    },
    /// More lower layers than overlayfs mounts reliably.
    #[error(
        "a snapshot on this parent would stack {count} lower layers, more than the limit of {max}; \
         only RUN, COPY and ADD instructions make layers, so merge some of them"
    )]
    TooManyLayers {
        /// The number of lower layers asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Mounting failed.
    #[error("mount {fs_type} on {}: {source} (options: {options})", target.display())]
    Mount {
        /// Filesystem type.
        fs_type: String,
        /// Where.
        target: PathBuf,
        /// The options tried (shortened when very long).
        options: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Mount options that do not fit in one page (the kernel would silently cut them).
    #[error("mount options are {len} bytes, more than the {max} that fit in one page")]
    OptionsTooLong {
        /// Their length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The chosen storage driver cannot work here.
    #[error("storage driver `{driver}` cannot be used here: {reason}")]
    DriverUnavailable {
        /// The driver.
        driver: &'static str,
        /// Why.
        reason: String,
    },
    /// A metadata file of the store is unreadable or inconsistent.
    #[error("snapshot metadata {}: {reason}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `op` on `path`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

/// Attach an operation and path to `io` results.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T, E: Into<io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
