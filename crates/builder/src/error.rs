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

    /// A snapshotter operation failed (mounts, layer folders, in-root resolution).
    #[error(transparent)]
    Overlay(#[from] strata_overlay::Error),

    /// The Dockerfile (or a `--change` instruction) does not parse or does not expand.
    #[error(transparent)]
    Parse(#[from] strata_parser::ParseError),

    /// A store operation failed (blobs, refs, images, layers).
    #[error(transparent)]
    Store(#[from] strata_store::Error),

    /// An instruction handed to the config editor is not a config change.
    #[error("{instruction} on line {line} is not a config change")]
    NotAConfigInstruction {
        /// The instruction's keyword.
        instruction: &'static str,
        /// Its line.
        line: usize,
    },

    /// An instruction whose values cannot be used.
    #[error("{instruction} on line {line}: {problem}")]
    InvalidInstruction {
        /// The line of the instruction.
        line: usize,
        /// Its keyword.
        instruction: &'static str,
        /// What is wrong.
        problem: String,
    },

    /// A `--change` instruction (import, commit) that cannot be used.
    #[error("invalid change {change:?}: {reason}")]
    InvalidChange {
        /// The change as given.
        change: String,
        /// What is wrong.
        reason: String,
    },

    /// A stage's base image (or a `--from` image) is not in the store.
    #[error("{what} {name:?} on line {line}: no such image in the store; get it with `strata pull {name}`, `strata load -i ARCHIVE` or `strata import TARBALL {name}`")]
    ImageNotFound {
        /// Where it was named (`FROM`, `COPY --from`, `RUN --mount from`).
        what: &'static str,
        /// The image name as written (after expansion).
        name: String,
        /// The line that names it.
        line: usize,
    },

    /// Stages that depend on each other in a circle.
    #[error("circular dependency between stages: {cycle}")]
    CircularDependency {
        /// The stages on the circle, `a -> b -> a`.
        cycle: String,
    },

    /// A stage would stack more filesystem layers than overlayfs can mount.
    #[error("stage {stage} would stack {count} filesystem layers ({base} from its base, {own} from RUN/COPY/ADD), more than the {max} overlayfs can mount; merge some of its RUN/COPY/ADD instructions into fewer ({lines})")]
    TooManyLayers {
        /// The stage's name or index.
        stage: String,
        /// The layers it would reach.
        count: usize,
        /// Of those, the layers of its base.
        base: usize,
        /// Of those, its own layer-making instructions.
        own: usize,
        /// The limit.
        max: usize,
        /// The lines of its layer-making instructions, summarised.
        lines: String,
    },

    /// A RUN step's command exited with a non-zero status.
    #[error("RUN {command} returned exit code {code}")]
    RunFailed {
        /// The command as written in the Dockerfile.
        command: String,
        /// Its exit code (128 + signal when killed by a signal).
        code: i32,
    },

    /// A feature the build uses that strata does not offer (yet).
    #[error("{what} is not supported{hint}")]
    Unsupported {
        /// The feature.
        what: String,
        /// A suggestion, starting with `: ` (or empty).
        hint: String,
    },

    /// A secret a RUN step needs was not given.
    #[error("secret {id:?} is required by the RUN on line {line} but was not given; pass it with --secret id={id},src=FILE")]
    SecretNotFound {
        /// The secret's id.
        id: String,
        /// The RUN's line.
        line: usize,
    },

    /// A `--secret` or other build option that cannot be used.
    #[error("invalid {option} {value:?}: {reason}")]
    InvalidOption {
        /// The option (`--secret`, `--build-arg`).
        option: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong.
        reason: String,
    },

    /// Lint findings made fatal by `# check=error=true` (as BuildKit, only then).
    #[error("lint violation found for rules: {rules}")]
    Lint {
        /// The rules that fired, comma-separated.
        rules: String,
    },

    /// One step of the build failed; the cause is the source.
    #[error("{step}")]
    Step {
        /// The step, as progress shows it (`[build 2/5] RUN make`).
        step: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
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

    /// No container has this name or ID (prefix).
    #[error("no such container: {name}")]
    ContainerNotFound {
        /// The name or ID as given.
        name: String,
    },

    /// A short container ID that several containers' IDs start with.
    #[error("{count} containers have IDs starting with {prefix}: give more digits")]
    AmbiguousContainer {
        /// The prefix as given.
        prefix: String,
        /// How many match.
        count: usize,
    },

    /// `--name` names a container that exists.
    #[error("the container name {name:?} is already in use by container {id}")]
    ContainerNameInUse {
        /// The name.
        name: String,
        /// The ID of the container that has it.
        id: String,
    },

    /// A `--name` outside Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    #[error("invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters")]
    InvalidContainerName {
        /// The name as given.
        name: String,
    },

    /// An operation that needs the container stopped.
    #[error("cannot {action} container {id}: it is running")]
    ContainerRunning {
        /// The short ID.
        id: String,
        /// What was asked (`remove`, `commit`, ...).
        action: &'static str,
    },

    /// Neither the image nor the command line says what to run.
    #[error("no command specified: image {image} has no ENTRYPOINT or CMD and none was given")]
    NoCommand {
        /// The image as named.
        image: String,
    },

    /// What `import` was given is not a tar archive (after decompression).
    #[error("{source_name} is not a tar archive: {reason}")]
    NotATar {
        /// The file, URL or `-`.
        source_name: String,
        /// What the tar reader found.
        reason: String,
    },
    /// A base image (or a `--from` image) missing from the store could not be pulled, or
    /// `--pull` could not check it.
    #[error("{what} {name:?} on line {line}: could not pull it from its registry")]
    PullFailed {
        /// Where it was named (`FROM`, `COPY --from`, `RUN --mount from`).
        what: &'static str,
        /// The image name as written (after expansion).
        name: String,
        /// The line that names it (0 until the planner knows it).
        line: usize,
        /// The registry's error.
        #[source]
        source: Box<strata_store::Error>,
    },

    /// A shared cache (`--cache-from`, or a layer it names) that cannot be used.
    #[error("unusable build cache {what}: {reason}")]
    InvalidCache {
        /// The cache (its reference or folder), or the layer.
        what: String,
        /// What is wrong.
        reason: String,
    },

    /// A cache export (`--cache-to`) that did not finish in time.
    #[error("the cache export to {target} did not finish within {}s", timeout.as_secs())]
    CacheExportTimeout {
        /// Where it was going.
        target: String,
        /// The time it had.
        timeout: std::time::Duration,
    },
}

impl Error {
    /// Names where a failed pull's image was named (the planner knows; the resolver does not).
    pub(crate) fn named_at(self, what: &'static str, line: usize) -> Self {
        match self {
            Error::PullFailed { name, source, .. } => Error::PullFailed {
                what,
                name,
                line,
                source,
            },
            other => other,
        }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
