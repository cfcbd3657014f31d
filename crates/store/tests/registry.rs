//! The registry client against a real `docker-registry` (distribution 2.8) on 127.0.0.1:
//! round trips (monolithic and chunked uploads, mounts), no-op pushes, shared layers uploaded
//! once, layers reused by diffID, clear errors, and a fault-injecting proxy.

mod registry_common;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use registry_common::{
    layer_tar, storage_blob, FaultProxy, Faults, Registry, Setup, TokenServer, PASSWORD, USER,
};
use strata_store::registry::{
    BlobOutcome, Client, ClientOptions, Credentials, Event, PullOptions, PushOptions,
};
use strata_store::{Compression, Error, FsckOptions, Image, ImageConfig, Reference, Store};

const INTEROP: &str = "interop: needs docker-registry and skopeo (run by cargo xtask test)";

fn options(dir: &std::path::Path) -> ClientOptions {
    ClientOptions {
        auth_file: Some(dir.join("no-config.json")),
        cert_dirs: Vec::new(),
        retry_delay: Duration::from_millis(10),
        max_retry_delay: Duration::from_millis(200),
        ..ClientOptions::default()
    }
}

fn config() -> ImageConfig {
    ImageConfig::parse(
        br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .unwrap()
}

fn image(store: &Store, layers: &[(u64, usize)], c: Compression) -> Image {
    let mut infos = Vec::new();
    for (seed, size) in layers {
        let mut w = store.layer_writer(c).unwrap();
        w.write_all(&layer_tar(*seed, *size)).unwrap();
        infos.push(w.finish().unwrap());
    }
    store.write_image(&config(), &infos).unwrap()
}

fn reference(addr: &str, rest: &str) -> Reference {
    Reference::parse(&format!("{addr}/{rest}")).unwrap()
}

/// Collects events.
#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl Events {
    fn reporter(&self) -> impl Fn(Event) + Sync + '_ {
        move |e| self.0.lock().unwrap().push(e)
    }
    fn outcomes(&self) -> Vec<BlobOutcome> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::BlobDone { outcome, .. } => Some(outcome.clone()),
                _ => None,
            })
            .collect()
    }
    fn retries(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::Retrying { .. }))
            .count()
    }
}

fn assert_clean(store: &Store) {
    let report = store.fsck(FsckOptions::default()).unwrap();
    assert!(report.is_clean(), "fsck: {report:?}");
}

fn count(requests: &[String], method: &str, needle: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.starts_with(method) && r.contains(needle))
        .count()
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn chunked_push_pull_round_trip_then_mounts_and_a_no_op_push() {
    let _ = INTEROP;
    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(&tmp.path().join("a")).unwrap();
    let img = image(
        &a,
        &[(1, 3 << 20), (2, 1 << 20), (3, 100_000)],
        Compression::Zstd,
    );

    // Chunked: nothing goes up in one PUT, 1 MiB PATCHes.
    let chunked = Client::new(ClientOptions {
        monolithic_max: 0,
        chunk_size: 1 << 20,
        ..options(tmp.path())
    });
    let dest = reference(&reg.addr, "app/chunked:v1");
    let events = Events::default();
    let report = chunked
        .push(&a, &img, &dest, &PushOptions::default(), &events.reporter())
        .unwrap();
    assert_eq!(
        (report.uploaded, report.mounted, report.existing),
        (4, 0, 0)
    );
    assert_eq!(report.manifest, img.manifest);
    let requests = reg.requests();
    let big = img.layers[0].digest.to_string();
    assert!(
        count(&requests, "PATCH", "/v2/app/chunked/blobs/uploads/") >= 4,
        "{requests:#?}"
    );
    assert_eq!(
        count(&requests, "PUT", &big.replace(':', "%3A")),
        1,
        "{requests:#?}"
    );

    // Pull into a fresh store: same manifest, same image, layer records, verified content.
    let b = Store::open(&tmp.path().join("b")).unwrap();
    let client = Client::new(options(tmp.path()));
    let pulled = client
        .pull(&b, &dest, &PullOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(pulled.image.manifest.digest, img.manifest.digest);
    assert_eq!(pulled.image.id(), img.id());
    assert_eq!(pulled.downloaded, 4);
    for (layer, diff_id) in pulled.image.layers.iter().zip(&pulled.image.diff_ids) {
        let records = b.layer_blobs(diff_id).unwrap();
        assert_eq!(records[0].digest, layer.digest);
        let mut r = b.open_layer(&layer.digest, diff_id).unwrap();
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert_eq!(
            b.blob_sources(&layer.digest).unwrap(),
            vec![format!("{}/app/chunked", reg.addr)]
        );
    }
    assert_eq!(b.resolve(&dest.to_string()).unwrap().id(), img.id());
    assert_clean(&b);

    // Pushing from b to another repository mounts every blob: b knows where they came from.
    let events = Events::default();
    let other = reference(&reg.addr, "app/other:v1");
    let report = client
        .push(
            &b,
            &pulled.image,
            &other,
            &PushOptions::default(),
            &events.reporter(),
        )
        .unwrap();
    assert_eq!(report.mounted, 4, "{:?}", events.outcomes());
    assert!(events.outcomes().iter().all(|o| *o
        == BlobOutcome::Mounted {
            from: "app/chunked".into()
        }));
    let requests = reg.requests();
    assert_eq!(count(&requests, "POST", "mount=").min(4), 4);
    assert_eq!(count(&requests, "PATCH", "/v2/app/other/"), 0);

    // An unchanged image: one HEAD of the manifest (plus the new client's ping).
    let before = reg.requests().len();
    let fresh = Client::new(options(tmp.path()));
    let report = fresh
        .push(&b, &pulled.image, &other, &PushOptions::default(), &|_| {})
        .unwrap();
    assert!(report.up_to_date);
    let after = reg.requests();
    assert_eq!(after.len() - before, 2, "{:#?}", &after[before..]);

    // A pull of what the store has downloads nothing.
    let again = client
        .pull(&b, &other, &PullOptions::default(), &|_| {})
        .unwrap();
    assert_eq!((again.downloaded, again.existing), (0, 4));
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn monolithic_uploads_and_shared_base_layers_go_up_once() {
    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(&tmp.path().join("s")).unwrap();
    let base = [(10, 2 << 20), (11, 1 << 20)];
    let urm = image(&s, &[base[0], base[1], (12, 300_000)], Compression::Zstd);
    let sso = image(&s, &[base[0], base[1], (13, 300_000)], Compression::Zstd);
    let client = Client::new(ClientOptions {
        monolithic_max: u64::MAX,
        ..options(tmp.path())
    });
    client
        .push(
            &s,
            &urm,
            &reference(&reg.addr, "layer-urm:v1"),
            &PushOptions::default(),
            &|_| {},
        )
        .unwrap();
    let events = Events::default();
    let report = client
        .push(
            &s,
            &sso,
            &reference(&reg.addr, "layer-sso:v1"),
            &PushOptions::default(),
            &events.reporter(),
        )
        .unwrap();
    // The shared base layers are mounted; the new layer and the config are uploaded.
    assert_eq!(
        (report.mounted, report.uploaded),
        (2, 2),
        "{:?}",
        events.outcomes()
    );
    let requests = reg.requests();
    for layer in &urm.layers[..2] {
        let d = layer.digest.to_string().replace(':', "%3A");
        let uploads = requests
            .iter()
            .filter(|r| r.starts_with("PUT") && r.contains(&format!("digest={d}")))
            .count();
        assert_eq!(
            uploads, 1,
            "base layer {d} uploaded {uploads} times: {requests:#?}"
        );
        assert_eq!(count(&requests, "POST", &format!("mount={d}")), 1);
    }
    assert_eq!(
        count(&requests, "PATCH", "/blobs/uploads/"),
        0,
        "monolithic only"
    );

    // Both pull back into one fresh store; the base is downloaded once.
    let fresh = Store::open(&tmp.path().join("fresh")).unwrap();
    let first = client
        .pull(
            &fresh,
            &reference(&reg.addr, "layer-urm:v1"),
            &PullOptions::default(),
            &|_| {},
        )
        .unwrap();
    let second = client
        .pull(
            &fresh,
            &reference(&reg.addr, "layer-sso:v1"),
            &PullOptions::default(),
            &|_| {},
        )
        .unwrap();
    assert_eq!(
        (first.downloaded, second.downloaded, second.existing),
        (4, 2, 2)
    );
    assert_clean(&fresh);
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn a_layer_known_by_diff_id_is_not_downloaded_unless_pinned() {
    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(&tmp.path().join("a")).unwrap();
    let img = image(&a, &[(20, 1 << 20), (21, 200_000)], Compression::Gzip);
    let client = Client::new(options(tmp.path()));
    let dest = reference(&reg.addr, "reuse/app:v1");
    client
        .push(&a, &img, &dest, &PushOptions::default(), &|_| {})
        .unwrap();

    // b holds the first layer uncompressed (as `docker load` would leave it).
    let b = Store::open(&tmp.path().join("b")).unwrap();
    let mut w = b.layer_writer(Compression::None).unwrap();
    w.write_all(&layer_tar(20, 1 << 20)).unwrap();
    let plain = w.finish().unwrap();
    let events = Events::default();
    let report = client
        .pull(&b, &dest, &PullOptions::default(), &events.reporter())
        .unwrap();
    assert!(events
        .outcomes()
        .contains(&BlobOutcome::LayerReused { blob: plain.digest }));
    assert_eq!(report.downloaded, 2, "config and the second layer");
    assert_eq!(report.image.id(), img.id());
    assert_ne!(report.image.manifest.digest, img.manifest.digest);
    assert_eq!(report.image.layers[0].digest, plain.digest);
    let gets = count(
        &reg.requests(),
        "GET",
        &format!("/blobs/{}", img.layers[0].digest),
    );
    assert_eq!(gets, 0);
    assert_clean(&b);

    // Pinned by digest, the exact blobs are fetched and the manifest is the registry's.
    let pinned =
        Reference::parse(&format!("{}/reuse/app@{}", reg.addr, img.manifest.digest)).unwrap();
    let report = client
        .pull(&b, &pinned, &PullOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(report.image.manifest.digest, img.manifest.digest);
    assert_eq!(
        b.resolve(&pinned.to_string()).unwrap().manifest.digest,
        img.manifest.digest
    );
    assert_eq!(b.layer_blobs(&img.diff_ids[0]).unwrap().len(), 2);
    assert_clean(&b);
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn errors_name_registry_repository_and_request_and_leave_no_image() {
    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let client = Client::new(options(tmp.path()));
    let s = Store::open(&tmp.path().join("s")).unwrap();
    let missing = reference(&reg.addr, "nothing/here:v9");
    let err = client
        .pull(&s, &missing, &PullOptions::default(), &|_| {})
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Registry {
                status: Some(404),
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains(&reg.addr) && text.contains("nothing/here") && text.contains("manifest v9"),
        "{text}"
    );
    assert!(
        text.contains("MANIFEST_UNKNOWN") || text.contains("NAME_UNKNOWN"),
        "{text}"
    );

    // A registry that lost a layer: the pull fails, names the blob, and tags nothing.
    let img = image(&s, &[(30, 500_000), (31, 500_000)], Compression::Zstd);
    let dest = reference(&reg.addr, "broken/app:v1");
    client
        .push(&s, &img, &dest, &PushOptions::default(), &|_| {})
        .unwrap();
    std::fs::remove_file(storage_blob(
        &reg.storage,
        &img.layers[1].digest.to_string(),
    ))
    .unwrap();
    let fresh = Store::open(&tmp.path().join("fresh")).unwrap();
    let err = client
        .pull(&fresh, &dest, &PullOptions::default(), &|_| {})
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&img.layers[1].digest.to_string()), "{text}");
    assert!(fresh.images().unwrap().is_empty());
    assert!(!fresh.has_blob(&img.layers[1].digest));
    assert_clean(&fresh);

    // Nothing listens: a clear transport error after the retries.
    let dead = Reference::parse("127.0.0.1:1/x/y:z").unwrap();
    let err = client
        .pull(&fresh, &dead, &PullOptions::default(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("127.0.0.1:1") && err.contains("reach"),
        "{err}"
    );
}

fn faults_round(seed: u64, chunked: bool, retries: u32) -> bool {
    let Some(reg) = Registry::start(Setup::default()) else {
        return true;
    };
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults {
            seed,
            error_every: 4,
            cut_every: 2,
            cut_within: 6 << 20,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(&tmp.path().join("a")).unwrap();
    let img = image(
        &a,
        &[
            (40 + seed, 4 << 20),
            (50 + seed, 2 << 20),
            (60 + seed, 300_000),
        ],
        Compression::Zstd,
    );
    let client = Client::new(ClientOptions {
        retries,
        monolithic_max: if chunked { 0 } else { u64::MAX },
        chunk_size: if chunked { 512 << 10 } else { 0 },
        ..options(tmp.path())
    });
    let dest = reference(&proxy.addr, "flaky/app:v1");
    let events = Events::default();
    let pushed = client.push(&a, &img, &dest, &PushOptions::default(), &events.reporter());
    let b = Store::open(&tmp.path().join("b")).unwrap();
    let pulled = client.pull(&b, &dest, &PullOptions::default(), &events.reporter());
    let (errors, cuts) = (
        proxy.stats.errors.load(Ordering::Relaxed),
        proxy.stats.cuts.load(Ordering::Relaxed),
    );
    eprintln!(
        "seed {seed} chunked {chunked}: {} connections, {errors} injected 500s, {cuts} cuts, {} retries; push {}, pull {}",
        proxy.stats.connections.load(Ordering::Relaxed),
        events.retries(),
        if pushed.is_ok() { "ok".to_string() } else { format!("{:?}", pushed.as_ref().err()) },
        if pulled.is_ok() { "ok".to_string() } else { format!("{:?}", pulled.as_ref().err()) },
    );
    assert!(errors + cuts > 0, "the proxy injected no fault");
    assert!(retries == 0 || events.retries() > 0);
    let ok = pushed.is_ok() && pulled.is_ok();
    match (&pushed, &pulled) {
        (Ok(_), Ok(p)) => {
            assert_eq!(p.image.id(), img.id());
            assert_eq!(p.image.manifest.digest, img.manifest.digest);
        }
        _ => {
            // A failure must say what failed; the store stays consistent either way.
            let e = pushed.err().or(pulled.err()).unwrap().to_string();
            assert!(e.contains(&proxy.addr) && e.contains("flaky/app"), "{e}");
            assert!(b.images().unwrap().is_empty() || b.resolve(&dest.to_string()).is_ok());
        }
    }
    assert_clean(&a);
    assert_clean(&b);
    ok
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn faults_chunked_uploads_and_resumed_downloads_survive_a_flaky_proxy() {
    assert!(faults_round(1, true, 12));
    assert!(faults_round(2, true, 12));
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn faults_monolithic_uploads_survive_a_flaky_proxy() {
    assert!(faults_round(3, false, 12));
    assert!(faults_round(4, false, 12));
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn faults_without_retries_fail_clearly_and_leave_stores_consistent() {
    // No retries: the first injected fault ends the transfer, with an error naming it.
    assert!(!faults_round(5, true, 0));
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn bearer_tokens_are_fetched_once_per_scope_and_refused_clearly() {
    let tokens = TokenServer::start();
    let Some(reg) = Registry::start(Setup {
        auth_yaml: Some(tokens.yaml.clone()),
        ..Setup::default()
    }) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(&tmp.path().join("a")).unwrap();
    let img = image(&a, &[(70, 1 << 20), (71, 200_000)], Compression::Zstd);
    let creds = |password: &str| ClientOptions {
        credentials: vec![(
            reg.addr.clone(),
            Credentials {
                username: USER.into(),
                password: password.into(),
            },
        )],
        ..options(tmp.path())
    };
    let client = Client::new(creds(PASSWORD));
    let dest = reference(&reg.addr, "bearer/app:v1");
    client
        .push(&a, &img, &dest, &PushOptions::default(), &|_| {})
        .unwrap();
    // Parallel uploads of 3 blobs and the manifest share one token.
    assert_eq!(
        *tokens.issued.lock().unwrap(),
        vec!["repository:bearer/app:pull,push".to_string()]
    );
    let b = Store::open(&tmp.path().join("b")).unwrap();
    client
        .pull(&b, &dest, &PullOptions::default(), &|_| {})
        .unwrap();
    assert_eq!(
        tokens.issued.lock().unwrap().len(),
        2,
        "one more for the pull scope"
    );
    // A mount asks for pull on the source repository in the same token.
    let events = Events::default();
    client
        .push(
            &b,
            &b.resolve(&dest.to_string()).unwrap(),
            &reference(&reg.addr, "bearer/other:v1"),
            &PushOptions::default(),
            &events.reporter(),
        )
        .unwrap();
    assert!(events
        .outcomes()
        .iter()
        .all(|o| matches!(o, BlobOutcome::Mounted { .. })));
    assert_eq!(
        tokens.issued.lock().unwrap().last().unwrap(),
        "repository:bearer/app:pull repository:bearer/other:pull,push"
    );

    // Anonymous: pulls (the token server grants pull to anyone), cannot push.
    let anonymous = Client::new(options(tmp.path()));
    let c = Store::open(&tmp.path().join("c")).unwrap();
    anonymous
        .pull(&c, &dest, &PullOptions::default(), &|_| {})
        .unwrap();
    let err = anonymous
        .push(
            &c,
            &img,
            &reference(&reg.addr, "bearer/anon:v1"),
            &PushOptions::default(),
            &|_| {},
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Registry {
                status: Some(401),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("bearer/anon"), "{err}");

    // A wrong password: the token server refuses, and the error says so.
    let wrong = Client::new(creds("nope"));
    let err = wrong
        .pull(&c, &dest, &PullOptions::default(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("authentication failed") && err.contains(USER),
        "{err}"
    );
    assert!(tokens.refused.load(Ordering::Relaxed) >= 1);
    assert_clean(&b);
    assert_clean(&c);
}

#[test]
#[ignore = "interop: needs docker-registry and skopeo (run by cargo xtask test)"]
fn manifests_of_any_config_push_and_fetch_one_layer_at_a_time() {
    use strata_store::media::OCI_MANIFEST;
    use strata_store::registry::ManifestUpload;
    use strata_store::{Descriptor, Digest};

    let Some(reg) = Registry::start(Setup::default()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(&tmp.path().join("a")).unwrap();
    let client = Client::new(options(tmp.path()));
    let dest = reference(&reg.addr, "team/app:cache");
    assert_eq!(client.fetch_manifest(&dest, &|_| {}).unwrap(), None);

    // Two layers; a config of a media type no image has.
    let mut layers = Vec::new();
    for seed in [21, 22] {
        let mut w = a.layer_writer(Compression::Zstd).unwrap();
        w.write_all(&layer_tar(seed, 200_000)).unwrap();
        layers.push(w.finish().unwrap());
    }
    let config = br#"{"records":["anything the caller likes"]}"#.to_vec();
    let config_desc = Descriptor::new(
        "application/vnd.example.config.v1+json",
        Digest::of(&config),
        config.len() as u64,
    );
    a.write_blob(&config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_desc.media_type, "digest": config_desc.digest.to_string(), "size": config_desc.size},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let upload = ManifestUpload {
        media_type: OCI_MANIFEST.into(),
        bytes: manifest.clone(),
        blobs: std::iter::once(config_desc.clone())
            .chain(layers.iter().map(|l| l.descriptor()))
            .collect(),
    };
    let never = |d: &Descriptor| -> strata_store::Result<()> {
        panic!("{} is in the store: nothing to fetch", d.digest)
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let report = client
        .push_manifest(&a, &dest, &upload, &never, &cancel, &|_| {})
        .unwrap();
    assert_eq!(report.uploaded, 3);
    assert!(!report.up_to_date);
    let again = client
        .push_manifest(&a, &dest, &upload, &never, &cancel, &|_| {})
        .unwrap();
    assert!(again.up_to_date);

    // A fresh store reads the manifest and config without storing them, then one layer.
    let b = Store::open(&tmp.path().join("b")).unwrap();
    let remote = client.fetch_manifest(&dest, &|_| {}).unwrap().unwrap();
    assert_eq!(remote.bytes, manifest);
    assert_eq!(remote.config, config_desc);
    assert_eq!(remote.layers.len(), 2);
    let bytes = client
        .fetch_blob_bytes(&dest, &remote.config, &|_| {})
        .unwrap();
    assert_eq!(bytes, config);
    let info = client
        .fetch_layer(&b, &dest, &remote.layers[1], &layers[1].diff_id, &|_| {})
        .unwrap();
    assert_eq!(info.digest, layers[1].digest);
    assert!(b.has_blob(&layers[1].digest) && !b.has_blob(&layers[0].digest));
    assert_eq!(
        b.blob_sources(&layers[1].digest).unwrap(),
        vec![format!("{}/team/app", reg.addr)]
    );
    // A record claiming another diffID is refused and nothing becomes visible.
    let e = client
        .fetch_layer(&b, &dest, &remote.layers[0], &layers[1].diff_id, &|_| {})
        .unwrap_err();
    assert!(
        matches!(e, Error::DiffIdMismatch { .. }) || e.to_string().contains("diff"),
        "{e}"
    );
    assert!(!b.has_blob(&layers[0].digest));
    assert_clean(&b);

    // Pushing from b to another repository: the layer b pulled from team/app is mounted from
    // there; the one b lacks (and knows no source of) goes to fetch_missing, then up.
    let fetched = Mutex::new(Vec::new());
    let fetch = |d: &Descriptor| -> strata_store::Result<()> {
        fetched.lock().unwrap().push(d.digest);
        client
            .fetch_layer(&b, &dest, d, &layers[0].diff_id, &|_| {})
            .map(|_| ())
    };
    b.write_blob(&config).unwrap();
    let other = reference(&reg.addr, "team/other:cache");
    let report = client
        .push_manifest(&b, &other, &upload, &fetch, &cancel, &|_| {})
        .unwrap();
    assert_eq!(*fetched.lock().unwrap(), vec![layers[0].digest]);
    assert_eq!((report.mounted, report.uploaded), (1, 2), "{report:?}");
    assert!(client.fetch_manifest(&other, &|_| {}).unwrap().is_some());
}
