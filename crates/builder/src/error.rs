//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the builder. Messages are lower-case and name the thing
/// that failed; the underlying cause (if any) is the error's `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("could not {op} {path}")]
    Io {
        /// What was being done (`open`, `read`, `create`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A process spec that cannot be run as given.
    #[error("invalid process spec: {reason}")]
    InvalidSpec {
        /// What is wrong with it.
        reason: String,
    },

    /// The step's process could not be created (fork, pipes, namespaces).
    #[error("could not start the step's process: {what}")]
    Spawn {
        /// What failed.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Isolating the step failed inside the new namespaces, before the command started.
    #[error("could not set up the step's container: {stage}")]
    Setup {
        /// Which setup stage failed, with its target (`mount proc on /proc`).
        stage: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The command to run does not exist in the root filesystem.
    #[error("exec: {program:?}: executable file not found in $PATH")]
    CommandNotFound {
        /// The program as given in argv\[0\].
        program: String,
    },

    /// The step was cancelled (Ctrl-C) and its processes were killed.
    #[error("the step was cancelled")]
    Cancelled,

    /// A user name was not found in the image's `/etc/passwd`.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UserNotFound {
        /// The user as written.
        user: String,
    },

    /// A group name was not found in the image's `/etc/group`.
    #[error("unable to find group {group}: no matching entries in group file")]
    GroupNotFound {
        /// The group as written.
        group: String,
    },

    /// A numeric user or group id outside 0..=2147483647.
    #[error("{what} id {value} is out of range")]
    IdOutOfRange {
        /// `user` or `group`.
        what: &'static str,
        /// The id as written.
        value: String,
    },

    /// A file that must be a regular file is something else.
    #[error("{path} is not a regular file")]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },

    /// A file exceeds the size the builder is willing to read.
    #[error("{path} is larger than {limit} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },

    /// A `.dockerignore` or wildcard pattern is malformed.
    #[error("bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A file name in the build context is not valid UTF-8.
    #[error("{path}: file name is not valid UTF-8")]
    NonUtf8Path {
        /// The file.
        path: PathBuf,
    },

    /// A source path that is not in the build context (or is excluded by `.dockerignore`).
    #[error("{path} not found in the build context")]
    SourceNotFound {
        /// The path as given.
        path: String,
    },

    /// A file changed size while it was being hashed.
    #[error("{path} changed while it was being hashed")]
    ChangedWhileHashing {
        /// The file.
        path: PathBuf,
    },

    /// A platform string that cannot be parsed.
    #[error("invalid platform {value:?}: {reason}")]
    InvalidPlatform {
        /// The platform as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A cache key that is not `sha256:<64 hex>`.
    #[error("invalid cache key {value:?}")]
    InvalidCacheKey {
        /// The text that was given.
        value: String,
    },

    /// A stored cache record that cannot be read.
    #[error("invalid cache record")]
    CacheRecord {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    // ---- COPY and ADD (the `copy` module) ----
    /// `COPY` was given an `http(s)://` or git source.
    #[error("source can't be a URL for COPY")]
    CopyUrl {
        /// The source as written.
        url: String,
    },

    /// `ADD` of a git repository, which the builder does not support yet.
    #[error("ADD of a git repository is not supported yet: {url}")]
    AddGit {
        /// The repository reference as written.
        url: String,
    },

    /// Nothing at all matched the sources of a `COPY`/`ADD`.
    #[error("no source files were specified")]
    NoSourceFiles,

    /// A source path (without wildcards) that does not exist in the `--from` root.
    #[error("{path} not found in the --from source")]
    SourceNotFoundInRoot {
        /// The path as given.
        path: String,
    },

    /// Symbolic links that loop, or more than 40 of them in one path.
    #[error("too many levels of symbolic links resolving {path}")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },

    /// Several sources, but the destination is neither marked as a directory nor one.
    #[error(
        "When using {command} with more than one source file, the destination must be a directory and end with a /"
    )]
    DestMustBeDir {
        /// `COPY` or `ADD`.
        command: &'static str,
    },

    /// A directory had to be created or merged where the destination has something else.
    #[error("cannot copy to non-directory: {path}")]
    DestNotDir {
        /// The path inside the destination root.
        path: String,
    },

    /// A file had to be written where the destination has a directory.
    #[error("cannot replace directory {path} with a file")]
    DestIsDir {
        /// The path inside the destination root.
        path: String,
    },

    /// A destination path could not be resolved inside the destination root.
    #[error("destination {path}")]
    DestPath {
        /// The path inside the destination root.
        path: String,
        /// What the in-root resolution reported.
        #[source]
        source: strata_overlay::Error,
    },

    /// A malformed `--chmod` value.
    #[error("invalid --chmod value {value:?}: {reason}")]
    InvalidChmod {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A malformed or unsupported `--checksum` value, or one given where it cannot apply.
    #[error("invalid --checksum {value:?}: {reason}")]
    InvalidChecksum {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Downloading an `ADD` URL failed.
    #[error("could not download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong (HTTP status, connection error, ...).
        reason: String,
    },

    /// A downloaded file does not have the digest `--checksum` asked for.
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The digest given with `--checksum`.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },

    /// Extracting an `ADD` archive failed (or the archive was refused as unsafe).
    #[error("could not extract {path}")]
    Extract {
        /// The archive (source path or URL).
        path: String,
        /// The unpacker's error.
        #[source]
        source: strata_overlay::Error,
    },

    /// A source file changed between hashing (the cache key) and copying.
    #[error("{path} changed after it was hashed for the cache key")]
    ChangedSinceHashed {
        /// The source path.
        path: String,
    },

    /// A layer of an image being analysed could not be read, or is not a valid layer tar.
    #[error("could not read layer {layer} ({diff_id})")]
    AnalyzeLayer {
        /// The layer's 1-based position, base first.
        layer: usize,
        /// Its diffID.
        diff_id: strata_store::Digest,
        /// What went wrong (a store, tar or I/O error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
