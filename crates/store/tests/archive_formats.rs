//! `load` of the archive shapes other tools write, and concurrency around loads and GC.

use std::io::Write;
use std::time::{Duration, Instant};

use strata_store::{
    Compression, Digest, FsckOptions, GcOptions, ImageConfig, LoadEvent, Reference, SaveOptions,
    Store,
};

fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

struct Archive(tar::Builder<Vec<u8>>);

impl Archive {
    fn new() -> Archive {
        Archive(tar::Builder::new(Vec::new()))
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        self.0.append_data(&mut h, name, data).unwrap();
        self
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        self.0.append_link(&mut h, name, target).unwrap();
        self
    }
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn config_for(diff_ids: &[Digest]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(Digest::to_string).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2024-05-06T07:08:09Z",
        "config": {"Cmd": ["sh"], "Entrypoint": null, "OnBuild": null},
        "container_config": {"Cmd": ["/bin/sh"]}, "docker_version": "20.10.24",
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[test]
fn legacy_docker_archive_with_a_linked_and_a_gzipped_layer() {
    let base = layer_tar("a", b"base layer");
    let empty = vec![0u8; 1024];
    let top = layer_tar("b", b"top layer");
    let (d_base, d_empty, d_top) = (Digest::of(&base), Digest::of(&empty), Digest::of(&top));
    // The same (empty) layer twice, as Docker writes it: the second layer.tar links to the
    // first. The top layer.tar is gzipped (docker load accepts that too).
    let config = config_for(&[d_base, d_empty, d_top, d_empty]);
    let id = Digest::of(&config);
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", id.hex()),
        "RepoTags": ["legacy/app:v1", "legacy/app:latest"],
        "Layers": ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar", "l4/layer.tar"],
    }]);
    let mut a = Archive::new();
    a.file("l1/VERSION", b"1.0")
        .file("l1/json", b"{}")
        .file("l1/layer.tar", &base)
        .file("l2/layer.tar", &empty)
        .file("l3/layer.tar", &gzip(&top))
        .symlink("l4/layer.tar", "../l2/layer.tar")
        .file(&format!("{}.json", id.hex()), &config)
        .file("manifest.json", manifest.to_string().as_bytes())
        .file("repositories", br#"{"legacy/app":{"v1":"x"}}"#);
    let archive = a.finish();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut events = Vec::new();
    let report = store.load(&archive[..], &mut |e| events.push(e)).unwrap();
    assert_eq!(report.layers_loaded, 3, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, LoadEvent::ImageLoaded { .. }))
            .count(),
        2
    );
    let image = store.resolve("legacy/app:v1").unwrap();
    assert_eq!(image.id(), id, "the config is kept byte for byte");
    assert_eq!(image.config_bytes, config);
    assert_eq!(image.diff_ids, vec![d_base, d_empty, d_top, d_empty]);
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut store.open_layer(&image.layers[2].digest, &d_top).unwrap(),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, top);
    assert!(store.fsck(FsckOptions::default()).unwrap().is_clean());

    // Again: every layer already exists and nothing is loaded twice.
    let blobs_before = std::fs::read_dir(dir.path().join("blobs/sha256"))
        .unwrap()
        .count();
    let mut events = Vec::new();
    let report = store.load(&archive[..], &mut |e| events.push(e)).unwrap();
    assert_eq!(
        (report.layers_loaded, report.layers_existing),
        (0, 3),
        "{events:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        blobs_before
    );

    // A store holding these layers only as zstd blobs does not store the plain copies.
    let other = tempfile::tempdir().unwrap();
    let zstd_store = Store::open(other.path()).unwrap();
    let mut layers = Vec::new();
    for t in [&base, &empty, &top] {
        let mut w = zstd_store.layer_writer(Compression::Zstd).unwrap();
        w.write_all(t).unwrap();
        layers.push(w.finish().unwrap());
    }
    let count = || {
        std::fs::read_dir(other.path().join("blobs/sha256"))
            .unwrap()
            .count()
    };
    let zstd_blobs = count();
    let report = zstd_store.load(&archive[..], &mut |_| {}).unwrap();
    assert_eq!(report.layers_existing, 3);
    // New: the config, a manifest, and the gzipped layer.tar (its diffID is only known once
    // it is read, so it is kept as another blob of that layer); the plain ones were dropped.
    assert_eq!(count(), zstd_blobs + 3);
    let image = zstd_store.resolve("legacy/app:v1").unwrap();
    assert_eq!(image.layers[0].digest, layers[0].digest);
    assert!(zstd_store.fsck(FsckOptions::default()).unwrap().is_clean());
}

#[test]
fn oci_layout_with_a_multi_platform_index() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(&dir.path().join("src")).unwrap();
    let mut w = src.layer_writer(Compression::Gzip).unwrap();
    w.write_all(&layer_tar("x", b"amd64 content")).unwrap();
    let layer = w.finish().unwrap();
    let image = src
        .write_image(&ImageConfig::default(), std::slice::from_ref(&layer))
        .unwrap();
    // A nested index naming our image for linux/amd64 and a missing one for arm64.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": Digest::of(b"arm").to_string(), "size": 3,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": image.manifest.digest.to_string(), "size": image.manifest.size,
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    });
    let index_bytes = index.to_string().into_bytes();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": Digest::of(&index_bytes).to_string(), "size": index_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "ghcr.io/o/multi:2"},
        }],
    });
    let mut a = Archive::new();
    a.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for d in [image.manifest.digest, image.config.digest, layer.digest] {
        a.file(
            &format!("blobs/sha256/{}", d.hex()),
            &std::fs::read(src.blob_path(&d)).unwrap(),
        );
    }
    a.file(
        &format!("blobs/sha256/{}", Digest::of(&index_bytes).hex()),
        &index_bytes,
    )
    .file("index.json", top.to_string().as_bytes());
    let archive = a.finish();

    let dst = Store::open(&dir.path().join("dst")).unwrap();
    dst.load(&archive[..], &mut |_| {}).unwrap();
    let got = dst.resolve("ghcr.io/o/multi:2").unwrap();
    assert_eq!(
        got.manifest.digest, image.manifest.digest,
        "the manifest is kept as is"
    );
    assert!(dst.fsck(FsckOptions::default()).unwrap().is_clean());
}

#[test]
fn concurrent_loads_of_one_archive_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(&dir.path().join("src")).unwrap();
    let mut names = Vec::new();
    for i in 0..3u8 {
        let mut w = src.layer_writer(Compression::Zstd).unwrap();
        w.write_all(&layer_tar("f", &vec![i; 3 << 20])).unwrap();
        let image = src
            .write_image(&ImageConfig::default(), &[w.finish().unwrap()])
            .unwrap();
        let name = format!("c{i}:latest");
        src.tag(&Reference::parse(&name).unwrap(), &image).unwrap();
        names.push(name);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut archive = Vec::new();
    src.save(&refs, &mut archive, &SaveOptions::default())
        .unwrap();

    let dst = Store::open(&dir.path().join("dst")).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let dst = dst.clone();
            let archive = &archive;
            scope.spawn(move || dst.load(&archive[..], &mut |_| {}).unwrap());
        }
    });
    assert_eq!(dst.images().unwrap().len(), 3);
    let fsck = dst.fsck(FsckOptions::default()).unwrap();
    assert!(fsck.is_clean() && fsck.temp_files == 0, "{fsck:?}");
}

#[test]
fn gc_waits_for_leases() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let orphan = store.write_blob(b"not referenced yet").unwrap();
    let lease = store.lease().unwrap();
    let start = Instant::now();
    std::thread::scope(|scope| {
        let gc = scope.spawn(|| store.gc(GcOptions::default()).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            store.has_blob(&orphan.digest),
            "GC ran while a lease was held"
        );
        drop(lease);
        let report = gc.join().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(report.removed, vec![(orphan.digest, orphan.size)]);
    });
}

#[test]
fn untagged_images_are_kept_listed_and_found_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(&dir.path().join("src")).unwrap();
    let mut w = src.layer_writer(Compression::None).unwrap();
    w.write_all(&layer_tar("u", b"untagged")).unwrap();
    let image = src
        .write_image(&ImageConfig::default(), &[w.finish().unwrap()])
        .unwrap();
    src.tag(&Reference::parse("u:1").unwrap(), &image).unwrap();
    let mut archive = Vec::new();
    // Saved by ID: the archive names no tag.
    src.save(
        &[&image.id().to_string()],
        &mut archive,
        &SaveOptions::default(),
    )
    .unwrap();

    let dst = Store::open(&dir.path().join("dst")).unwrap();
    let mut events = Vec::new();
    dst.load(&archive[..], &mut |e| events.push(e)).unwrap();
    assert!(events.contains(&LoadEvent::ImageIdLoaded { id: image.id() }));
    let listed = dst.images().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].reference.is_none());
    assert_eq!(listed[0].id, image.id());
    dst.gc(GcOptions::default()).unwrap();
    assert_eq!(dst.resolve(&image.id().short()).unwrap().id(), image.id());
    // Once tagged, it is listed under its tag only.
    let found = dst.resolve(&image.id().short()).unwrap();
    dst.tag(&Reference::parse("now/tagged:1").unwrap(), &found)
        .unwrap();
    let listed = dst.images().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].reference.is_some());
    assert!(dst.fsck(FsckOptions::default()).unwrap().is_clean());
}
