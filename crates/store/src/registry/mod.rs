//! An OCI distribution client: pull images from a registry into the store and push them back.
//!
//! It moves blobs in and out of the store, as archives do, and keeps the store's invariants:
//! every blob arrives through the verified ingest path (digest and size checked while
//! streaming; a layer's diffID computed in the same pass and checked against the image
//! config before the blob becomes visible), blobs are stored as the registry serves them
//! (no recompression, so a later push sends the same digests), and a pull tags nothing until
//! the whole image is in place, under a [`crate::Lease`].
//!
//! - Auth: anonymous, basic, and the bearer-token flow, tokens cached per scope set;
//!   credentials from Docker's `config.json` ([`AuthFile`]).
//! - Transport: one `ureq` agent per registry; https, and plain http for insecure registries
//!   (127.0.0.0/8 and `localhost` always, as Docker); retries with exponential backoff on
//!   connection failures, timeouts, 5xx and 429; downloads resume with `Range` requests.
//! - Pull: tag or digest -> manifest (an index picks the wanted platform) -> config -> layers
//!   in parallel. A blob the store holds is not downloaded; a layer whose diffID the store
//!   holds in another blob is not downloaded either (the stored image then gets a manifest of
//!   the store's own; pulls by digest always fetch the exact blobs).
//! - Push: a blob the registry has (`HEAD`) is skipped; one the store knows to be in another
//!   repository of the same registry is mounted; others are uploaded (one `PUT` when small,
//!   `PATCH` chunks then `PUT` otherwise, resuming where the registry's `Range` says); the
//!   manifest goes last. An unchanged image costs one `HEAD` of the manifest.
//! - Manifests that are not images to the store (a shared build cache): fetched without
//!   being stored ([`Client::fetch_manifest`], [`Client::fetch_blob_bytes`]), their layers
//!   fetched one at a time on demand ([`Client::fetch_layer`], digest and diffID verified),
//!   and pushed with the same skip/mount/upload rules ([`Client::push_manifest`]).
//! - Progress goes to a caller-supplied [`Reporter`]; the library never prints.
//!
//! Transfers run on scoped std threads (at most [`ClientOptions::max_concurrent`] at once):
//! they wait on the network, not the CPU, so they do not belong on rayon's pool.

mod artifact;
mod auth;
mod credentials;
mod manifest;
mod pull;
mod push;
mod transport;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use artifact::{ManifestUpload, RemoteManifest};
pub use credentials::{registry_host, AuthFile, Credentials, DOCKER_HUB_AUTH_KEY};
pub use manifest::Platform;
pub use pull::{PullOptions, PullReport};
pub use push::{PushOptions, PushReport};

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::Reference;
use transport::{Op, Remote};

/// What a blob transfer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// The image config.
    Config,
    /// A layer.
    Layer,
}

/// How a blob transfer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobOutcome {
    /// Pull: downloaded and verified.
    Downloaded,
    /// Pull: the store already had this blob; nothing was downloaded.
    AlreadyStored,
    /// Pull: the store holds this layer (same diffID) in another blob, which the image uses.
    LayerReused {
        /// The stored blob used instead.
        blob: Digest,
    },
    /// Push: uploaded.
    Uploaded,
    /// Push: the registry already had it.
    AlreadyInRegistry,
    /// Push: mounted from another repository of the same registry; nothing was uploaded.
    Mounted {
        /// The repository it was mounted from.
        from: String,
    },
}

/// Progress of a pull or push, in order per blob; blobs interleave.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A pull found the manifest it will fetch (after picking a platform from an index).
    Resolved {
        /// What was asked for.
        reference: Reference,
        /// The manifest.
        manifest: Descriptor,
    },
    /// A blob transfer starts.
    BlobStarted {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Config or layer.
        kind: BlobKind,
    },
    /// Bytes of a blob moved so far (throttled; not sent for skipped blobs).
    BlobProgress {
        /// The blob.
        digest: Digest,
        /// Bytes done.
        done: u64,
        /// Its size.
        size: u64,
    },
    /// A blob is done.
    BlobDone {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Config or layer.
        kind: BlobKind,
        /// What happened.
        outcome: BlobOutcome,
    },
    /// A request failed and will be tried again after `delay`.
    Retrying {
        /// `registry/repository: what`.
        what: String,
        /// Which attempt failed (1 = the first).
        attempt: u32,
        /// The wait before the next one.
        delay: Duration,
        /// Why it failed.
        reason: String,
    },
    /// A push sent its manifest.
    ManifestPushed {
        /// Where.
        reference: Reference,
        /// The manifest.
        manifest: Descriptor,
    },
    /// A pull tagged the image it stored.
    Tagged {
        /// The tag (or digest reference).
        reference: Reference,
        /// The image ID.
        id: Digest,
    },
}

/// Receives [`Event`]s, possibly from several transfer threads at once.
pub trait Reporter: Sync {
    /// Take one event.
    fn report(&self, event: Event);
}

impl<F: Fn(Event) + Sync> Reporter for F {
    fn report(&self, event: Event) {
        self(event)
    }
}

/// How the client reaches registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `Some(true)`: verify TLS for every registry (even loopback); `Some(false)`: never
    /// verify, and allow plain http; `None` (default): verify, except for insecure registries.
    pub tls_verify: Option<bool>,
    /// Registries treated as insecure (https without verification, then plain http): a host,
    /// `host:port` or an IPv4 CIDR. 127.0.0.0/8 and `localhost` always are.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM files) trusted for every registry.
    pub ca_files: Vec<PathBuf>,
    /// Folders in Docker's `certs.d` layout: `<dir>/<host[:port]>/*.crt` are CAs for that
    /// registry, `*.cert` + `*.key` a client certificate.
    pub cert_dirs: Vec<PathBuf>,
    /// Docker's `config.json` to read credentials from (`None`: [`AuthFile::default_path`]).
    pub auth_file: Option<PathBuf>,
    /// Credentials that take precedence over the file, per registry (as in references).
    pub credentials: Vec<(String, Credentials)>,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Blobs transferred at once.
    pub max_concurrent: usize,
    /// Retries after a failed request (connection errors, timeouts, 5xx, 429).
    pub retries: u32,
    /// The first wait between attempts; it doubles each time.
    pub retry_delay: Duration,
    /// The longest wait between attempts.
    pub max_retry_delay: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for any single read or write on a connection.
    pub read_timeout: Duration,
    /// Blobs up to this size are uploaded with a single `PUT`.
    pub monolithic_max: u64,
    /// Larger blobs go up in `PATCH` chunks of this size (0: one `PATCH` for the whole blob).
    pub chunk_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: None,
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            cert_dirs: vec![
                PathBuf::from("/etc/docker/certs.d"),
                PathBuf::from("/etc/containers/certs.d"),
            ],
            auth_file: None,
            credentials: Vec::new(),
            user_agent: format!("strata/{}", env!("CARGO_PKG_VERSION")),
            max_concurrent: 4,
            retries: 5,
            retry_delay: transport::DEFAULT_RETRY_DELAY,
            max_retry_delay: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            monolithic_max: 4 << 20,
            chunk_size: 0,
        }
    }
}

/// A registry client: one per process is enough; it keeps a connection pool, a scheme and
/// tokens per registry. Cheap to share across threads.
pub struct Client {
    options: Arc<ClientOptions>,
    remotes: Mutex<HashMap<String, Arc<Remote>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.options)
            .finish()
    }
}

impl Client {
    /// A client with these options.
    pub fn new(options: ClientOptions) -> Client {
        Client {
            options: Arc::new(options),
            remotes: Mutex::new(HashMap::new()),
        }
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The credentials for a registry: the options' own, else the credentials file's.
    fn credentials_for(&self, registry: &str) -> Result<Option<Credentials>> {
        let host = registry_host(registry);
        if let Some((_, c)) = self
            .options
            .credentials
            .iter()
            .find(|(r, _)| registry_host(r) == host)
        {
            return Ok(Some(c.clone()));
        }
        let path = match &self.options.auth_file {
            Some(p) => p.clone(),
            None => match AuthFile::default_path() {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        AuthFile::load(&path)?.get(registry)
    }

    fn remote(&self, registry: &str) -> Result<Arc<Remote>> {
        let mut remotes = self.remotes.lock().map_err(|_| Error::Registry {
            registry: registry.to_string(),
            repository: String::new(),
            action: "open a connection".into(),
            status: None,
            reason: "another thread panicked".into(),
        })?;
        if let Some(r) = remotes.get(registry) {
            return Ok(r.clone());
        }
        let credentials = self.credentials_for(registry)?;
        let remote = Arc::new(Remote::new(registry, self.options.clone(), credentials)?);
        remotes.insert(registry.to_string(), remote.clone());
        Ok(remote)
    }

    /// Check that a registry accepts `credentials` (as `docker login` does: ping, then
    /// authenticate). A registry that needs no authentication accepts any.
    pub fn login(&self, registry: &str, credentials: &Credentials) -> Result<()> {
        let remote = Remote::new(registry, self.options.clone(), Some(credentials.clone()))?;
        let cancel = AtomicBool::new(false);
        let quiet = |_: Event| {};
        let op = Op {
            remote: &remote,
            repository: String::new(),
            scopes: Vec::new(),
            reporter: &quiet,
            cancel: &cancel,
        };
        remote.check_login(&op)
    }
}

/// Run `f` over `items` on at most `workers` scoped threads, stopping early (setting
/// `cancel`) at the first error, which is returned. Results keep the items' order.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    cancel: &AtomicBool,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let workers = workers.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                match f(item) {
                    Ok(r) => {
                        if let Ok(mut all) = results.lock() {
                            all[i] = Some(r);
                        }
                    }
                    Err(e) => {
                        cancel.store(true, Ordering::Relaxed);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let all = results.into_inner().map_err(|_| Error::Registry {
        registry: String::new(),
        repository: String::new(),
        action: "transfer blobs".into(),
        status: None,
        reason: "a transfer thread panicked".into(),
    })?;
    all.into_iter()
        .map(|r| {
            r.ok_or_else(|| Error::Registry {
                registry: String::new(),
                repository: String::new(),
                action: "transfer blobs".into(),
                status: None,
                reason: "a transfer was cancelled".into(),
            })
        })
        .collect()
}

/// Throttles progress events to about one per 256 KiB.
pub(crate) struct Progress<'a> {
    reporter: &'a dyn Reporter,
    digest: Digest,
    size: u64,
    last: std::sync::atomic::AtomicU64,
}

impl<'a> Progress<'a> {
    pub fn new(reporter: &'a dyn Reporter, digest: Digest, size: u64) -> Progress<'a> {
        Progress {
            reporter,
            digest,
            size,
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn update(&self, done: u64) {
        let last = self.last.load(Ordering::Relaxed);
        if done >= last + (256 << 10) || (done == self.size && last != done) || done < last {
            self.last.store(done, Ordering::Relaxed);
            self.reporter.report(Event::BlobProgress {
                digest: self.digest,
                done,
                size: self.size,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_keeps_order_and_stops_at_the_first_error() {
        let cancel = AtomicBool::new(false);
        let items: Vec<u32> = (0..20).collect();
        let out = parallel(&items, 3, &cancel, |i| Ok(i * 2)).unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let ran = AtomicUsize::new(0);
        let err = parallel(&items, 2, &cancel, |i| {
            ran.fetch_add(1, Ordering::Relaxed);
            if *i == 3 {
                Err(Error::content("item 3", "failed"))
            } else {
                std::thread::sleep(Duration::from_millis(5));
                Ok(())
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("item 3"));
        assert!(cancel.load(Ordering::Relaxed));
        assert!(ran.load(Ordering::Relaxed) < 20);
        assert!(
            parallel(&Vec::<u32>::new(), 4, &AtomicBool::new(false), |_| Ok(()))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn options_credentials_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut f = AuthFile::load(&path).unwrap();
        let file_creds = Credentials {
            username: "file".into(),
            password: "p".into(),
        };
        f.set("127.0.0.1:5000", &file_creds);
        f.set("other:1", &file_creds);
        f.save().unwrap();
        let explicit = Credentials {
            username: "explicit".into(),
            password: "q".into(),
        };
        let client = Client::new(ClientOptions {
            auth_file: Some(path),
            credentials: vec![("127.0.0.1:5000".into(), explicit.clone())],
            ..ClientOptions::default()
        });
        assert_eq!(
            client.credentials_for("127.0.0.1:5000").unwrap(),
            Some(explicit)
        );
        assert_eq!(client.credentials_for("other:1").unwrap(), Some(file_creds));
        assert_eq!(client.credentials_for("nope:1").unwrap(), None);
    }
}
