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

/// A reader that counts the bytes taken from it.
struct Counting<'a> {
    data: &'a [u8],
    read: std::rc::Rc<std::cell::Cell<usize>>,
}

impl std::io::Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.read.get());
        let at = self.read.get();
        buf[..n].copy_from_slice(&self.data[at..at + n]);
        self.read.set(at + n);
        Ok(n)
    }
}

/// Load `archive` and return, per layer event, how many bytes had been read when it came.
fn layer_event_offsets(archive: &[u8]) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let input = Counting {
        data: archive,
        read: read.clone(),
    };
    let mut offsets = Vec::new();
    store
        .load(input, &mut |e| {
            if matches!(e, LoadEvent::LayerLoaded { .. }) {
                offsets.push(read.get());
            }
        })
        .unwrap();
    assert_eq!(store.images().unwrap().len(), 1);
    offsets
}

#[test]
fn layers_are_reported_as_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(dir.path()).unwrap();
    // Four 3 MiB layers that do not compress, so that the archive is 12 MiB and the loader's
    // 1 MiB read buffer cannot hide where the reading is.
    let mut layers = Vec::new();
    let mut seed = 1u64;
    for i in 0..4 {
        let noise: Vec<u8> = (0..3 << 20)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        let mut w = src.layer_writer(Compression::Zstd).unwrap();
        w.write_all(&layer_tar(&format!("f{i}"), &noise)).unwrap();
        layers.push(w.finish().unwrap());
    }
    let image = src.write_image(&ImageConfig::default(), &layers).unwrap();
    src.tag(&Reference::parse("app:1").unwrap(), &image)
        .unwrap();
    let mut archive = Vec::new();
    src.save(&["app:1"], &mut archive, &SaveOptions::default())
        .unwrap();

    // As saved (metadata first): each layer is reported before the next one is read.
    let offsets = layer_event_offsets(&archive);
    assert_eq!(offsets.len(), 4);
    let len = archive.len();
    for (i, at) in offsets.iter().enumerate() {
        let bound = (i + 1) * (3 << 20) + (2 << 20);
        assert!(
            *at <= bound,
            "layer {i} reported at byte {at} of {len}: {offsets:?}"
        );
    }
    assert!(offsets[0] < len / 2, "{offsets:?} of {len}");

    // Manifest last (as Docker writes it): the layers wait in the store for the manifest and
    // are reported when it arrives, at the end of the archive; the load still works.
    let mut a = tar::Archive::new(&archive[..]);
    let mut blobs = Archive::new();
    let mut metadata = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_str().unwrap().to_string();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if name.starts_with("blobs/") {
            blobs.file(&name, &data);
        } else {
            metadata.push((name, data));
        }
    }
    for (name, data) in &metadata {
        blobs.file(name, data);
    }
    let last = blobs.finish();
    let offsets = layer_event_offsets(&last);
    assert_eq!(offsets.len(), 4);
    assert!(
        offsets.iter().all(|at| *at == last.len()),
        "{offsets:?} of {}",
        last.len()
    );
}
