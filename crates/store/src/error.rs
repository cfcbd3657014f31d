//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// Everything that can go wrong in the store.
///
/// Variants carry the context needed to act on them (the path, the digest, the archive member);
/// messages are lower-case without a trailing period so callers can wrap them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A digest string is not `sha256:` followed by 64 lower-case hex digits.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// The text that was parsed.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An image reference does not follow Docker's grammar.
    #[error("invalid reference format {input:?}: {reason}")]
    InvalidReference {
        /// The text that was parsed.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A ref name cannot be stored.
    #[error("invalid {kind} ref name {name:?}: {reason}")]
    InvalidRefName {
        /// The ref kind (`tags`, `cache`, `containers`).
        kind: &'static str,
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `read`, `rename`, ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Reading or writing a stream failed (no single path is involved).
    #[error("{context}: {source}")]
    Stream {
        /// What was being read or written.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Content does not hash to the digest it was expected to have.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was verified (a blob, an archive member, a layer).
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// Content does not have the size it was expected to have.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was verified.
        what: String,
        /// The declared size.
        expected: u64,
        /// The real size.
        actual: u64,
    },
    /// The uncompressed content of a layer does not hash to its diffID.
    #[error("layer {blob} does not match its diffID: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The blob that was read.
        blob: Digest,
        /// The diffID it should have.
        expected: Digest,
        /// The digest of what it decompressed to.
        actual: Digest,
    },
    /// A blob the caller asked for is not in the store.
    #[error("blob {digest} not found in the store")]
    BlobNotFound {
        /// The missing digest.
        digest: Digest,
    },
    /// No image is known under a name or ID.
    #[error("no such image: {reference}")]
    ImageNotFound {
        /// What the caller asked for.
        reference: String,
    },
    /// No ref of that kind and name exists.
    #[error("no {kind} ref named {name:?}")]
    RefNotFound {
        /// The ref kind.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// JSON content could not be parsed or produced.
    #[error("invalid {what}: {source}")]
    Json {
        /// What was being parsed (`manifest sha256:...`, `index.json`, ...).
        what: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A manifest, index, config or record is well-formed JSON but wrong.
    #[error("invalid {what}: {reason}")]
    InvalidContent {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A media type the store cannot handle.
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
        /// Where it was found.
        what: String,
    },
    /// An archive given to `load` is malformed or hostile.
    #[error("invalid archive: {}{reason}", member.as_ref().map(|m| format!("member {m:?}: ")).unwrap_or_default())]
    InvalidArchive {
        /// The archive member at fault, when one is.
        member: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// Compressed content expands beyond the limit it is held to (a possible decompression
    /// bomb); nothing refers to it.
    #[error("{what} expands to more than {limit} bytes uncompressed from {compressed} bytes, refused as a possible decompression bomb")]
    TooLarge {
        /// What was being decompressed.
        what: String,
        /// The limit, in uncompressed bytes.
        limit: u64,
        /// Its compressed size.
        compressed: u64,
    },
    /// An image could not be written into an archive.
    #[error("cannot export {image}: {reason}")]
    Export {
        /// The image.
        image: String,
        /// Why not.
        reason: String,
    },
    /// A registry refused a request, answered with an error, or could not be reached (after
    /// retries). `status` is the HTTP status when there was an answer.
    #[error("{registry}/{repository}: {action}: {reason}")]
    Registry {
        /// The registry (`docker.io`, `127.0.0.1:5000`).
        registry: String,
        /// The repository within it (`library/busybox`); empty for registry-wide requests.
        repository: String,
        /// What was asked (`fetch manifest "latest"`, `upload blob sha256:...`).
        action: String,
        /// The HTTP status, if the registry answered.
        status: Option<u16>,
        /// What went wrong, with the registry's own error codes and messages.
        reason: String,
    },
    /// A credentials file (Docker's `config.json`) cannot be read or written.
    #[error("credentials file {}: {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Wrap an `io::Error` with the action and path it came from.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Wrap a stream error with a description of the stream.
    pub(crate) fn stream(context: impl Into<String>, source: io::Error) -> Self {
        Error::Stream {
            context: context.into(),
            source,
        }
    }

    /// Make an archive error about one member.
    pub(crate) fn archive(member: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArchive {
            member: Some(member.into()),
            reason: reason.into(),
        }
    }

    /// Make an archive error about the whole archive.
    pub(crate) fn archive_whole(reason: impl Into<String>) -> Self {
        Error::InvalidArchive {
            member: None,
            reason: reason.into(),
        }
    }

    /// Make an invalid-content error.
    pub(crate) fn content(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidContent {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Make a JSON error.
    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
