//! Base images from registries: `FROM` (and `COPY --from`, `RUN --mount=from`) of an image
//! missing from the store pulls it, as `docker build` does; `--pull` checks the tag of every
//! image the build names against its registry and pulls it when it moved.
//!
//! Pulls go through [`strata_store::registry::Client::pull`] (so what the store already holds
//! is never downloaded again, and a failed pull tags nothing) and are reported as
//! [`Event::PullStarted`] and [`Event::PullDone`]. Each name is pulled once per build.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use strata_store::registry::{Client, Event as RegistryEvent, PullOptions};
use strata_store::{Image, Reference, Store};

use crate::progress::{Event, Reporter};
use crate::Error;

/// When a build pulls the images it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only images missing from the store (`docker build`'s default).
    #[default]
    Missing,
    /// Check every named image's tag against its registry, pulling when it moved
    /// (`--pull`). Images named by digest that the store holds are not checked: they cannot
    /// move.
    Always,
    /// Never: a missing image is an error (offline builds).
    Never,
}

/// Resolves image names for one build, pulling as the policy says.
pub(crate) struct Puller<'a> {
    store: &'a Store,
    client: &'a Client,
    policy: PullPolicy,
    reporter: &'a dyn Reporter,
    /// What each name resolved to (pulled or found): a name read again (every `FROM` of the
    /// same base) is the same image for the whole build, without reading the store again.
    pulled: Mutex<HashMap<String, Image>>,
}

impl<'a> Puller<'a> {
    pub fn new(
        store: &'a Store,
        client: &'a Client,
        policy: PullPolicy,
        reporter: &'a dyn Reporter,
    ) -> Puller<'a> {
        Puller {
            store,
            client,
            policy,
            reporter,
            pulled: Mutex::new(HashMap::new()),
        }
    }

    /// The image `name` names: from the store, or pulled. `Ok(None)` when it is missing and
    /// the policy does not pull (or the name is not a registry reference, e.g. an image ID).
    pub fn resolve(&self, name: &str) -> Result<Option<Image>, Error> {
        if let Some(image) = self
            .pulled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(Some(image.clone()));
        }
        let local = match self.store.resolve(name) {
            Ok(i) => Some(i),
            Err(strata_store::Error::ImageNotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let Ok(reference) = Reference::parse(name) else {
            return Ok(local);
        };
        let pull = match self.policy {
            PullPolicy::Never => false,
            PullPolicy::Missing => local.is_none(),
            PullPolicy::Always => local.is_none() || reference.digest().is_none(),
        };
        if !pull {
            if let Some(image) = &local {
                self.pulled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), image.clone());
            }
            return Ok(local);
        }
        // A name that is a (short) image ID the store does not hold is no reference to pull.
        if local.is_none() && looks_like_id(name) {
            return Ok(None);
        }
        let started = Instant::now();
        self.reporter.report(&Event::PullStarted {
            image: reference.to_string(),
        });
        let forward = |e: RegistryEvent| {
            if let RegistryEvent::Retrying {
                what,
                attempt,
                reason,
                ..
            } = e
            {
                self.reporter.report(&Event::Warning {
                    step: None,
                    message: format!("{what}: attempt {attempt} failed ({reason}); retrying"),
                });
            }
        };
        let report = self
            .client
            .pull(self.store, &reference, &PullOptions::default(), &forward)
            .map_err(|source| Error::PullFailed {
                what: "FROM",
                name: name.to_string(),
                line: 0,
                source: Box::new(source),
            })?;
        self.reporter.report(&Event::PullDone {
            image: reference.to_string(),
            id: report.image.id().to_string(),
            downloaded: report.downloaded,
            bytes: report.bytes_downloaded,
            duration: started.elapsed(),
        });
        self.pulled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), report.image.clone());
        Ok(Some(report.image))
    }
}

/// Whether `name` reads as an image ID (`sha256:<hex>` or 12 to 64 hex digits), which a
/// registry cannot serve.
fn looks_like_id(name: &str) -> bool {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    (12..=64).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::CollectingReporter;
    use strata_store::registry::ClientOptions;

    #[test]
    fn ids_are_not_pulled() {
        assert!(looks_like_id(&"ab".repeat(32)));
        assert!(looks_like_id(&format!("sha256:{}", "0".repeat(64))));
        assert!(looks_like_id("0123456789ab"));
        assert!(!looks_like_id("busybox"));
        assert!(!looks_like_id("abc"));
    }

    #[test]
    fn the_policy_decides_what_is_pulled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image = store
            .import(
                &[0u8; 1024][..],
                &strata_store::ImageConfig::default(),
                strata_store::Compression::None,
            )
            .unwrap();
        let local = Reference::parse("127.0.0.1:9/app:1").unwrap();
        store.tag(&local, &image).unwrap();
        // Port 9 (discard) is closed here: any pull attempt fails at once.
        let client = Client::new(ClientOptions {
            retries: 0,
            ..ClientOptions::default()
        });
        let events = CollectingReporter::new();
        for policy in [PullPolicy::Missing, PullPolicy::Never] {
            let p = Puller::new(&store, &client, policy, &events);
            assert_eq!(
                p.resolve("127.0.0.1:9/app:1").unwrap().map(|i| i.id()),
                Some(image.id())
            );
        }
        assert!(events.events().is_empty(), "nothing was pulled");
        // A name is read from the store once per build: the same image for every FROM.
        let once = Puller::new(&store, &client, PullPolicy::Never, &events);
        assert!(once.resolve("127.0.0.1:9/app:1").unwrap().is_some());
        let other = Reference::parse("127.0.0.1:9/moved:1").unwrap();
        store.tag(&other, &image).unwrap();
        assert!(once.resolve("127.0.0.1:9/moved:1").unwrap().is_some());
        store.untag(&other).unwrap();
        assert_eq!(
            once.resolve("127.0.0.1:9/moved:1").unwrap().map(|i| i.id()),
            Some(image.id())
        );
        let never = Puller::new(&store, &client, PullPolicy::Never, &events);
        assert!(never.resolve("127.0.0.1:9/other:1").unwrap().is_none());
        let missing = Puller::new(&store, &client, PullPolicy::Missing, &events);
        let e = missing.resolve("127.0.0.1:9/other:1").unwrap_err();
        assert!(matches!(e, Error::PullFailed { .. }), "{e}");
        assert!(missing.resolve(&"cd".repeat(32)).unwrap().is_none());
        let always = Puller::new(&store, &client, PullPolicy::Always, &events);
        let e = always.resolve("127.0.0.1:9/app:1").unwrap_err();
        let e = e.named_at("FROM", 3);
        assert_eq!(
            e.to_string(),
            "FROM \"127.0.0.1:9/app:1\" on line 3: could not pull it from its registry"
        );
        assert!(matches!(
            events.events().first(),
            Some(Event::PullStarted { .. })
        ));
    }
}
