//! Crafted archives given to `load`: each must fail with a clear error, write nothing outside
//! the store, tag nothing, and leave the store consistent (`fsck` clean).

use std::io::{Read, Write};
use std::path::Path;

use strata_store::{
    Compression, Digest, FsckOptions, ImageConfig, LoadEvent, LoadOptions, Reference, SaveOptions,
    Store,
};

/// One member of a crafted tar.
#[derive(Clone)]
struct Member {
    name: String,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Option<String>,
    /// Size to declare in the header, when it should differ from `data.len()`.
    declared: Option<u64>,
}

fn file(name: &str, data: &[u8]) -> Member {
    Member {
        name: name.into(),
        kind: tar::EntryType::Regular,
        data: data.to_vec(),
        link: None,
        declared: None,
    }
}

fn link(name: &str, target: &str, kind: tar::EntryType) -> Member {
    Member {
        name: name.into(),
        kind,
        data: Vec::new(),
        link: Some(target.into()),
        declared: None,
    }
}

/// Write members with raw names (the tar crate's path checks would refuse the hostile ones).
fn build(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut h = tar::Header::new_gnu();
        {
            let name = &mut h.as_old_mut().name;
            assert!(m.name.len() < name.len(), "keep crafted names short");
            name[..m.name.len()].copy_from_slice(m.name.as_bytes());
        }
        if let Some(l) = &m.link {
            let field = &mut h.as_old_mut().linkname;
            field[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(m.kind);
        h.set_mode(0o644);
        h.set_size(m.declared.unwrap_or(m.data.len() as u64));
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&m.data);
        let pad = (512 - m.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// The members of an archive.
fn members(archive: &[u8]) -> Vec<Member> {
    let mut a = tar::Archive::new(archive);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_str().unwrap().to_string();
        let kind = e.header().entry_type();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Member {
            name,
            kind,
            data,
            link: None,
            declared: None,
        });
    }
    out
}

fn tar_with(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    /// A good two-image docker archive (`a:1` has layers [base, top_a], `b:1` [base, top_b]).
    good: Vec<u8>,
    layer_a: Digest,
    layer_b: Digest,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(&dir.path().join("src")).unwrap();
    let layer = |content: &[u8]| {
        let mut w = src.layer_writer(Compression::None).unwrap();
        w.write_all(&tar_with("f", content)).unwrap();
        w.finish().unwrap()
    };
    let base = layer(b"base");
    let top_a = layer(b"top a");
    let top_b = layer(b"top b");
    let config = ImageConfig::default();
    let a = src
        .write_image(&config, &[base.clone(), top_a.clone()])
        .unwrap();
    let b = src.write_image(&config, &[base, top_b.clone()]).unwrap();
    src.tag(&Reference::parse("a:1").unwrap(), &a).unwrap();
    src.tag(&Reference::parse("b:1").unwrap(), &b).unwrap();
    let mut good = Vec::new();
    src.save(&["a:1", "b:1"], &mut good, &SaveOptions::default())
        .unwrap();
    let path = dir.path().to_path_buf();
    Fixture {
        _dir: dir,
        dir: path,
        good,
        layer_a: top_a.digest,
        layer_b: top_b.digest,
    }
}

/// Everything under `dir`, relative, sorted (to prove nothing was written outside the store).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            let is_store = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("store-") || n == "src");
            if p.is_dir() && !is_store {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn refuse(f: &Fixture, case: &str, archive: &[u8], expect: &str) {
    refuse_with(f, case, archive, expect, &LoadOptions::default());
}

fn refuse_with(f: &Fixture, case: &str, archive: &[u8], expect: &str, options: &LoadOptions) {
    let root = f.dir.join(format!("store-{case}"));
    let store = Store::open(&root).unwrap();
    let before = tree(&f.dir);
    let mut events = Vec::new();
    let err = store
        .load_with(archive, options, &mut |e| events.push(e))
        .expect_err(case);
    let message = err.to_string();
    eprintln!("{case}: {message}");
    assert!(
        message.contains(expect),
        "{case}: expected an error mentioning {expect:?}, got: {message}"
    );
    // Layers are reported as they are checked, so some may have been before the fault was
    // found; an image never is.
    assert!(
        !events.iter().any(|e| matches!(
            e,
            LoadEvent::ImageLoaded { .. } | LoadEvent::ImageIdLoaded { .. }
        )),
        "{case}: reported {events:?}"
    );
    assert_eq!(
        tree(&f.dir),
        before,
        "{case}: something was written outside the store"
    );
    assert!(
        store.images().unwrap().is_empty(),
        "{case}: an image was tagged"
    );
    let fsck = store.fsck(FsckOptions::default()).unwrap();
    assert!(fsck.is_clean(), "{case}: {fsck:?}");
    assert_eq!(fsck.temp_files, 0, "{case}: temp files left behind");
    for outside in ["/etc/evil", "/tmp/evil", "/evil"] {
        assert!(!Path::new(outside).exists(), "{case}: {outside} appeared");
    }
    // The good archive still loads into the same store afterwards.
    store.load(&f.good[..], &mut |_| {}).unwrap();
    assert_eq!(store.images().unwrap().len(), 2, "{case}");
}

fn replace(members: &[Member], name: &str, data: &[u8]) -> Vec<Member> {
    members
        .iter()
        .map(|m| {
            if m.name == name {
                Member {
                    data: data.to_vec(),
                    ..m.clone()
                }
            } else {
                m.clone()
            }
        })
        .collect()
}

fn manifest_json(members: &[Member]) -> serde_json::Value {
    let m = members.iter().find(|m| m.name == "manifest.json").unwrap();
    serde_json::from_slice(&m.data).unwrap()
}

#[test]
fn the_good_archive_loads() {
    let f = fixture();
    let store = Store::open(&f.dir.join("ok")).unwrap();
    let mut events = Vec::new();
    store.load(&f.good[..], &mut |e| events.push(e)).unwrap();
    assert_eq!(events.len(), 5, "{events:?}"); // 3 distinct layers + 2 tags
                                               // Rebuilt through our raw writer too.
    store
        .load(&build(&members(&f.good))[..], &mut |_| {})
        .unwrap();
}

#[test]
fn hostile_archives_are_refused_cleanly() {
    let f = fixture();
    let good = members(&f.good);
    let blob_a = format!("blobs/sha256/{}", f.layer_a.hex());
    let blob_b = format!("blobs/sha256/{}", f.layer_b.hex());
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();

    // 1. A member name climbing out of the archive.
    let mut m = good.clone();
    m.insert(0, file("../evil", b"x"));
    cases.push(("dotdot-name", build(&m), "escapes the archive"));

    // 2. An absolute member name.
    let mut m = good.clone();
    m.insert(0, file("/etc/evil", b"x"));
    cases.push(("absolute-name", build(&m), "absolute path"));

    // 3. A symlink member pointing outside the archive.
    let mut m = good.clone();
    m.insert(
        0,
        link("x/layer.tar", "../../etc/passwd", tar::EntryType::Symlink),
    );
    cases.push(("symlink-out", build(&m), "escapes the archive"));

    // 4. A hard link to an absolute path.
    let mut m = good.clone();
    m.insert(0, link("x/layer.tar", "/etc/shadow", tar::EntryType::Link));
    cases.push(("hardlink-abs", build(&m), "absolute path"));

    // 5. The manifest names a layer that is a link to a link.
    let mut m: Vec<Member> = good.iter().filter(|x| x.name != blob_a).cloned().collect();
    m.insert(0, link(&blob_a, "hop", tar::EntryType::Link));
    m.insert(0, link("hop", "hop2", tar::EntryType::Link));
    cases.push(("link-chain", build(&m), "links to another link"));

    // 6. A blob whose content does not match its name.
    let m = replace(&good, &blob_a, &tar_with("f", b"evil"));
    cases.push(("digest-mismatch", build(&m), "does not match its digest"));

    // 7. The archive cut short inside a layer member.
    let full = build(&good);
    let offset = {
        let mut at = 0;
        for x in &good {
            at += 512;
            if x.name == blob_a {
                break;
            }
            at += x.data.len().div_ceil(512) * 512;
        }
        at + 100
    };
    cases.push(("truncated", full[..offset].to_vec(), "truncated"));

    // 8. The manifest names a blob the archive does not hold.
    let m: Vec<Member> = good.iter().filter(|x| x.name != blob_a).cloned().collect();
    cases.push(("missing-blob", build(&m), "not in the archive"));

    // 9. Image a's manifest.json entry uses image b's top layer.
    let mut mj = manifest_json(&good);
    mj[0]["Layers"][1] = serde_json::json!(blob_b);
    let m = replace(&good, "manifest.json", mj.to_string().as_bytes());
    cases.push((
        "layer-of-another-image",
        build(&m),
        "but the image config says",
    ));

    // 10. A member declaring a huge size, then the archive ends.
    let mut m: Vec<Member> = good.iter().filter(|x| x.name != blob_a).cloned().collect();
    let mut huge = file(&blob_a, b"tiny");
    huge.declared = Some(1 << 40);
    m.push(huge);
    let mut bytes = build(&m);
    bytes.truncate(bytes.len() - 1024);
    cases.push(("huge-declared-size", bytes, "truncated"));

    // 11. Not a tar at all.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    cases.push(("not-a-tar", noise, "not a tar archive"));

    // 12. An empty file.
    cases.push(("empty", Vec::new(), "the input is empty"));

    // 13. The same member twice with different content.
    let mut m = good.clone();
    m.push(file("manifest.json", b"[]"));
    cases.push((
        "duplicate-member",
        build(&m),
        "appears twice with different content",
    ));

    // 14. manifest.json that is not JSON.
    let m = replace(&good, "manifest.json", b"{not json");
    cases.push(("bad-json", build(&m), "invalid JSON"));

    // 15. More layers than the config has diffIDs.
    let mut mj = manifest_json(&good);
    mj[0]["Layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(blob_b));
    let m = replace(&good, "manifest.json", mj.to_string().as_bytes());
    cases.push(("layer-count", build(&m), "layers length mismatch"));

    // 16. A blob member whose name is not a digest.
    let mut m = good.clone();
    m.insert(0, file("blobs/sha256/NOT-A-DIGEST", b"x"));
    cases.push(("bad-blob-name", build(&m), "sha256 digest"));

    // 17. manifest.json pointing its Config outside the archive.
    let mut mj = manifest_json(&good);
    mj[0]["Config"] = serde_json::json!("../../etc/passwd");
    let m = replace(&good, "manifest.json", mj.to_string().as_bytes());
    cases.push(("config-escapes", build(&m), "escapes the archive"));

    // 18. An invalid tag.
    let mut mj = manifest_json(&good);
    mj[0]["RepoTags"] = serde_json::json!(["Not/Valid:tag"]);
    let m = replace(&good, "manifest.json", mj.to_string().as_bytes());
    cases.push(("bad-tag", build(&m), "must be lowercase"));

    // 19. A device node.
    let mut m = good.clone();
    let mut dev = file("dev/null", b"");
    dev.kind = tar::EntryType::Char;
    m.insert(0, dev);
    cases.push(("device-node", build(&m), "unsupported member type"));

    // 20. A metadata member declaring 100 MiB.
    let mut m = good.clone();
    let mut big = file("big.json", b"{}");
    big.declared = Some(100 << 20);
    m.insert(0, big);
    cases.push((
        "huge-metadata",
        build(&m),
        "more than a metadata file may have",
    ));

    // 21. A gzip stream that is corrupt half-way.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&f.good).unwrap();
    let mut gz = gz.finish().unwrap();
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 64] {
        *b ^= 0x5a;
    }
    cases.push(("corrupt-gzip", gz, "invalid archive"));

    // 22. Neither manifest.json nor index.json.
    let m: Vec<Member> = good
        .iter()
        .filter(|x| x.name != "manifest.json" && x.name != "index.json")
        .cloned()
        .collect();
    cases.push((
        "no-manifest",
        build(&m),
        "neither manifest.json nor index.json",
    ));

    // 23. manifest.json is null.
    let m = replace(&good, "manifest.json", b"null");
    cases.push(("null-manifest", build(&m), "is null"));

    assert!(cases.len() >= 15);
    for (case, archive, expect) in &cases {
        refuse(&f, case, archive, expect);
    }
}

/// Limits small enough that a few MiB of zeros trip them (the defaults allow 4 GiB).
fn tight() -> LoadOptions {
    LoadOptions {
        max_expansion_ratio: 100,
        expansion_allowance: 1 << 20,
        max_uncompressed: 1 << 30,
    }
}

#[test]
fn decompression_bombs_are_refused_cleanly() {
    let f = fixture();
    let zeros = tar_with("zeros", &vec![0u8; 8 << 20]);

    // A zstd layer of 8 MiB of zeros (about 1000:1) in an otherwise valid archive.
    let src = Store::open(&f.dir.join("bomb-src")).unwrap();
    let mut w = src.layer_writer(Compression::Zstd).unwrap();
    w.write_all(&zeros).unwrap();
    let layer = w.finish().unwrap();
    assert!(layer.size * 100 < layer.uncompressed_size, "{layer:?}");
    let image = src
        .write_image(&ImageConfig::default(), std::slice::from_ref(&layer))
        .unwrap();
    src.tag(&Reference::parse("bomb:1").unwrap(), &image)
        .unwrap();
    let mut archive = Vec::new();
    let zstd_layers = SaveOptions {
        compression: Some(Compression::Zstd),
        ..SaveOptions::default()
    };
    src.save(&["bomb:1"], &mut archive, &zstd_layers).unwrap();
    let member = format!(
        "member \"blobs/sha256/{}\": layer 0 expands",
        layer.digest.hex()
    );
    refuse_with(&f, "zstd-layer-bomb", &archive, &member, &tight());
    // Within the default limits the same archive is an ordinary image.
    let store = Store::open(&f.dir.join("bomb-ok")).unwrap();
    store.load(&archive[..], &mut |_| {}).unwrap();
    assert_eq!(store.images().unwrap().len(), 1);

    // A gzip archive that expands 1000:1 (one member of zeros).
    let mut m = members(&f.good);
    m.insert(0, file("junk", &vec![0u8; 8 << 20]));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&build(&m)).unwrap();
    let gz = gz.finish().unwrap();
    refuse_with(&f, "gzip-archive-bomb", &gz, "decompression bomb", &tight());

    // A plain archive over the absolute cap.
    let cap = LoadOptions {
        max_uncompressed: 4 << 20,
        ..tight()
    };
    refuse_with(&f, "over-the-cap", &build(&m), "decompression bomb", &cap);
}

#[test]
fn load_limits_scale_with_the_compressed_size() {
    let o = tight();
    assert_eq!(o.limit(0), 1 << 20);
    assert_eq!(o.limit(1 << 20), 100 << 20);
    assert_eq!(o.limit(u64::MAX), 1 << 30);
    let d = LoadOptions::default();
    assert_eq!(d.limit(1), 4 << 30);
    assert_eq!(d.limit(1 << 30), 1 << 40);
}
