//! The behaviour suite, written once and run against both drivers.

use std::path::Path;

use strata_overlay::tar_write::EntryKind;
use strata_overlay::{
    ChangeKind, Driver, Error, LayerSource, Snapshotter, TarOptions, UnpackOptions,
};

use crate::common::*;

const EPOCH: i64 = 1_600_000_000;

fn opts() -> TarOptions {
    TarOptions {
        clamp_mtime: Some(EPOCH),
    }
}

/// The base layer: a little of everything a layer carries.
pub fn base_tar() -> Vec<u8> {
    let mut t = TarBuilder::default();
    t.dir("etc/")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n");
    t.file("etc/gone.conf", b"bye\n");
    let mut keep = spec("etc/keep/", EntryKind::Dir);
    keep.mode = 0o750;
    keep.uid = 1000;
    keep.gid = 1000;
    t.raw(keep, b"").file("etc/keep/a", b"a\n");
    t.dir("bin/");
    let mut tool = spec("bin/tool", EntryKind::File);
    tool.mode = 0o755;
    tool.uid = 1000;
    tool.gid = 100;
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4] = 0x00;
    cap[5] = 0x04; // cap_net_bind_service
    tool.xattrs = vec![
        ("security.capability".into(), cap),
        ("user.note".into(), b"hello".to_vec()),
    ];
    t.raw(tool, b"#!/bin/sh\necho tool\n");
    let mut suid = spec("bin/suid", EntryKind::File);
    suid.mode = 0o4755;
    t.raw(suid, b"suid\n");
    t.file("bin/link-a", b"shared inode\n")
        .hardlink("bin/link-b", "bin/link-a");
    t.dir("usr/").dir("usr/lib/").dir("usr/lib/old/");
    t.file("usr/lib/old/x", b"x").file("usr/lib/old/y", b"y");
    t.symlink("lnk", "etc/passwd");
    t.raw(spec("fifo", EntryKind::Fifo), b"");
    t.dir("data/");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    t.file("data/big.bin", &big);
    t.file("rename-me", b"r\n").file("chmod-me", b"c\n");
    t.finish()
}

pub struct Scenario {
    pub _dir: tempfile::TempDir,
    pub snap: Snapshotter,
    pub tars: Vec<Vec<u8>>,
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

fn step(
    snap: &Snapshotter,
    key: &str,
    parent: &str,
    name: &str,
    change: impl FnOnce(&Path),
) -> Vec<u8> {
    snap.prepare(key, Some(parent)).unwrap();
    let root = snap.mount(key).unwrap();
    change(&root);
    snap.unmount(key).unwrap();
    let mut tar = Vec::new();
    snap.write_layer(key, &mut tar, &opts()).unwrap();
    // Writing twice gives the same bytes.
    let mut again = Vec::new();
    snap.write_layer(key, &mut again, &opts()).unwrap();
    assert_eq!(tar, again, "layer tar of {key} is not deterministic");
    snap.commit(key, name).unwrap();
    tar
}

/// Stack three layers, then change an active snapshot in every way a RUN step can.
pub fn scenario(driver: Driver) -> Scenario {
    let (dir, snap) = store(driver);
    let base = base_tar();
    snap.unpack("l1", None, &base[..], &UnpackOptions::default())
        .unwrap();
    let t2 = step(&snap, "k2", "l1", "l2", |r| {
        sh(
            r,
            "echo new > etc/new.conf; echo more >> etc/passwd; rm etc/gone.conf",
        )
    });
    let t3 = step(&snap, "k3", "l2", "l3", |r| {
        sh(r, "rm -rf usr/lib/old; mkdir usr/lib/old; echo z > usr/lib/old/z; mkdir -p opt/app; echo run > opt/app/run")
    });
    let top = step(&snap, "k4", "l3", "top", |r| {
        sh(r, "echo b > etc/keep/b");
        setxattr(&r.join("etc/keep/a"), "user.color", b"blue");
        sh(
            r,
            "mv etc/keep etc/kept; \
         mv rename-me renamed; chmod 600 chmod-me; chown 1234:5678 etc/passwd; \
         rm lnk; ln -s bin/tool lnk2; echo n > new1; ln new1 new2; rm -rf data; \
         mkdir -p long/$(printf 'd%.0s' $(seq 1 120))/$(printf 'f%.0s' $(seq 1 120)); \
         echo deep > long/$(printf 'd%.0s' $(seq 1 120))/$(printf 'f%.0s' $(seq 1 120))/file",
        );
    });
    Scenario {
        _dir: dir,
        snap,
        tars: vec![base, t2, t3, top],
    }
}

pub fn round_trip(driver: Driver) {
    let s = scenario(driver);
    // The diff saw every kind of change.
    s.snap.prepare("probe", Some("l3")).unwrap();
    let root = s.snap.mount("probe").unwrap();
    sh(&root, "rm etc/new.conf; chmod 700 opt/app; echo x > added");
    s.snap.unmount("probe").unwrap();
    let changes: Vec<String> = s
        .snap
        .diff("probe")
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
        .collect();
    assert_eq!(changes, ["A added", "D etc/new.conf", "C opt/app"]);
    assert!(s
        .snap
        .diff("probe")
        .unwrap()
        .iter()
        .all(|c| c.kind != ChangeKind::Modify || c.path == Path::new("opt/app")));

    // Unpack all four tars on a fresh store (in parallel where the driver can) and compare.
    let (_d2, fresh) = store(driver);
    let names = ["l1", "l2", "l3", "top"];
    let layers: Vec<LayerSource> = names
        .iter()
        .zip(&s.tars)
        .map(|(n, t)| LayerSource {
            name: n.to_string(),
            reader: Box::new(std::io::Cursor::new(t.clone())),
        })
        .collect();
    let stats = fresh
        .unpack_chain(None, layers, &UnpackOptions::default())
        .unwrap();
    assert_eq!(stats.len(), 4);
    for (store, key) in [(&s.snap, "va"), (&fresh, "vb")] {
        store.view(key, Some("top")).unwrap();
        store.mount(key).unwrap();
    }
    let a = s.snap.graph_driver_data("va").unwrap().merged_dir;
    let b = fresh.graph_driver_data("vb").unwrap().merged_dir;
    let a = if driver == Driver::Vfs {
        s.snap.graph_driver_data("top").unwrap().upper_dir
    } else {
        a
    };
    let b = if driver == Driver::Vfs {
        fresh.graph_driver_data("top").unwrap().upper_dir
    } else {
        b
    };
    assert_same_tree(&a, &b);
    let t = tree(&b);
    // Spot checks of what the comparison covers.
    assert!(
        !t.contains_key(Path::new("etc/gone.conf")),
        "whiteout applied"
    );
    assert!(
        !t.contains_key(Path::new("usr/lib/old/x")),
        "opaque dir hides lower entries"
    );
    assert!(t.contains_key(Path::new("usr/lib/old/z")));
    assert_eq!(t[Path::new("bin/suid")].mode, 0o4755);
    assert_eq!(t[Path::new("etc/passwd")].uid, 1234);
    assert_eq!(t[Path::new("etc/kept")].mode, 0o750);
    assert_eq!(
        t[Path::new("etc/kept/a")].xattrs,
        [("user.color".to_string(), b"blue".to_vec())]
    );
    assert_eq!(t[Path::new("bin/tool")].xattrs.len(), 2);
    assert_eq!(
        t[Path::new("new2")].link_group.as_deref(),
        Some(Path::new("new1"))
    );
    assert_eq!(
        t[Path::new("bin/link-b")].link_group.as_deref(),
        Some(Path::new("bin/link-a"))
    );
    assert_eq!(t[Path::new("fifo")].kind, "fifo");
    assert!(!t.contains_key(Path::new("data")));
    s.snap.unmount("va").unwrap();
    fresh.unmount("vb").unwrap();
}

pub fn shared_prefix(driver: Driver) {
    let (_d, snap) = store(driver);
    let mut l2 = TarBuilder::default();
    let l2 = l2.file("two", b"2").finish();
    let mut l3 = TarBuilder::default();
    let l3 = l3.file("three", b"3").finish();
    let chain = |name: &str, t: &[u8]| LayerSource {
        name: name.into(),
        reader: Box::new(std::io::Cursor::new(t.to_vec())),
    };
    let base = base_tar();
    snap.unpack_chain(
        None,
        vec![chain("c1", &base), chain("c1-c2", &l2)],
        &UnpackOptions::default(),
    )
    .unwrap();
    let again = snap
        .unpack_chain(
            None,
            vec![chain("c1", &base), chain("c1-c3", &l3)],
            &UnpackOptions::default(),
        )
        .unwrap();
    assert_eq!(again.len(), 1, "the shared base is not unpacked twice");
    let all: Vec<String> = snap.walk().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(all, ["c1", "c1-c2", "c1-c3"]);
    let home = snap.home();
    let lower2 = std::fs::read_to_string(home.join("c1-c2/lower")).unwrap();
    let lower3 = std::fs::read_to_string(home.join("c1-c3/lower")).unwrap();
    let link1 = std::fs::read_to_string(home.join("c1/link")).unwrap();
    assert_eq!(lower2, format!("l/{link1}"));
    assert_eq!(lower2, lower3);
    assert_eq!(
        std::fs::read_link(home.join("l").join(&link1)).unwrap(),
        Path::new("../c1/diff")
    );
    assert!(
        !home.join("c1/lower").exists(),
        "a base layer has no lower file"
    );
    let g = snap.graph_driver_data("c1-c2").unwrap();
    if driver == Driver::Overlay {
        assert_eq!(
            g.lower_dir.unwrap(),
            home.join("c1/diff").display().to_string()
        );
        assert_eq!(g.upper_dir, home.join("c1-c2/diff"));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o710,
        "store folders must not be world-traversable (CVE-2021-41091)"
    );
    assert_eq!(
        std::fs::metadata(home.join("c1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o710
    );
    assert!(snap.usage("c1").unwrap().size >= 300_000);
}

pub fn depth_limit(driver: Driver) {
    let (_d, snap) = store(driver);
    let mut parent: Option<String> = None;
    for i in 0..129 {
        let mut t = TarBuilder::default();
        let t = t
            .file(&format!("f{i:03}"), format!("{i}").as_bytes())
            .finish();
        let name = format!("layer{i:03}");
        snap.unpack(&name, parent.as_deref(), &t[..], &UnpackOptions::default())
            .unwrap();
        parent = Some(name);
    }
    // 128 lower layers mount.
    snap.prepare("deep", Some("layer127")).unwrap();
    let root = snap.mount("deep").unwrap();
    assert_eq!(std::fs::read_to_string(root.join("f000")).unwrap(), "0");
    assert_eq!(std::fs::read_to_string(root.join("f127")).unwrap(), "127");
    std::fs::write(root.join("mine"), "x").unwrap();
    snap.unmount("deep").unwrap();
    assert_eq!(snap.diff("deep").unwrap().len(), 1);
    snap.view("deepview", Some("layer127")).unwrap();
    let v = snap.mount("deepview").unwrap();
    assert!(v.join("f064").exists());
    snap.unmount("deepview").unwrap();
    // The 129th is refused, with a message that says why and what to do.
    let err = snap.prepare("too-deep", Some("layer128")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyLayers {
                count: 129,
                max: 128
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("129") && msg.contains("RUN, COPY and ADD"),
        "{msg}"
    );
    assert!(snap.stat("too-deep").is_err(), "nothing half-made stays");
}

pub fn lifecycle(driver: Driver) {
    let (dir, snap) = store(driver);
    let base = base_tar();
    snap.unpack("base", None, &base[..], &UnpackOptions::default())
        .unwrap();
    assert!(matches!(
        snap.unpack("base", None, &base[..], &UnpackOptions::default()),
        Err(Error::AlreadyExists { .. })
    ));
    snap.prepare("work", Some("base")).unwrap();
    assert!(matches!(
        snap.prepare("work", Some("base")),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        snap.commit("base", "x"),
        Err(Error::WrongKind { .. })
    ));
    let root = snap.mount("work").unwrap();
    std::fs::write(root.join("scratch"), "x").unwrap();
    let err = snap.remove("base").unwrap_err();
    assert!(matches!(err, Error::HasChildren { .. }), "{err}");
    // A crash: the process dies with a mount and a half-made folder behind.
    let home = snap.home().to_path_buf();
    std::fs::create_dir(home.join(".tmp-crashed")).unwrap();
    drop(snap);
    let snap = Snapshotter::open(&dir.path().join("store"), Some(driver)).unwrap();
    assert!(
        !strata_overlay::mount::is_mounted(&root).unwrap(),
        "stale mount cleaned up"
    );
    assert!(!home.join(".tmp-crashed").exists());
    assert_eq!(
        snap.stat("work").unwrap().kind,
        strata_overlay::Kind::Active
    );
    let work = home.join("work/work");
    if driver == Driver::Overlay {
        assert_eq!(
            std::fs::read_dir(&work).unwrap().count(),
            0,
            "work dir emptied"
        );
    }
    snap.remove("work").unwrap();
    snap.remove("base").unwrap();
    assert!(snap.walk().unwrap().is_empty());
    assert_eq!(snap.empty_trash().unwrap(), 2);
    assert_eq!(
        std::fs::read_dir(home.join("l")).unwrap().count(),
        0,
        "links removed"
    );
}

/// A kept mount (`strata mount`) survives the crash recovery of the next process to open
/// the store; an ordinary mount left behind does not.
fn kept_mounts_survive_recovery(driver: Driver) {
    let (dir, snap) = store(driver);
    let root = snap.home().parent().unwrap().to_path_buf();
    snap.unpack("base", None, &base_tar()[..], &UnpackOptions::default())
        .unwrap();
    snap.prepare("kept", Some("base")).unwrap();
    snap.view("left", Some("base")).unwrap();
    let kept = snap.mount_kept("kept").unwrap();
    assert_eq!(snap.mount_kept("kept").unwrap(), kept, "idempotent");
    std::fs::write(kept.join("new-file"), "x").unwrap();
    let left = snap.mount("left").unwrap();
    assert!(snap.is_kept("kept").unwrap() && !snap.is_kept("left").unwrap());
    drop(snap);

    // No other process holds the store: opening it recovers.
    let snap = Snapshotter::open(&root, Some(driver)).unwrap();
    assert_eq!(snap.mounted_at("kept").unwrap(), Some(kept.clone()));
    assert_eq!(snap.mounted_at("left").unwrap(), None, "{}", left.display());
    assert_eq!(std::fs::read_to_string(kept.join("new-file")).unwrap(), "x");
    assert_eq!(
        std::fs::read_to_string(kept.join("etc/passwd"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    let changes: Vec<String> = snap
        .diff("kept")
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
        .collect();
    assert_eq!(changes, ["A new-file"]);

    snap.unmount("kept").unwrap();
    assert!(!snap.is_kept("kept").unwrap());
    assert_eq!(snap.mounted_at("kept").unwrap(), None);
    snap.remove("kept").unwrap();
    snap.remove("left").unwrap();
    drop(dir);
}

macro_rules! for_both_drivers {
    ($($case:ident),* $(,)?) => {
        mod overlay_driver {
            $(
                #[test]
                #[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
                fn $case() {
                    super::$case(strata_overlay::Driver::Overlay);
                }
            )*
        }
        mod vfs_driver {
            $(
                #[test]
                #[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
                fn $case() {
                    super::$case(strata_overlay::Driver::Vfs);
                }
            )*
        }
    };
}

/// Recovery (which reads every snapshot) runs only after a process that did not end
/// cleanly: one that died (its mark is left in `.users/`) or left a mount of its own behind.
/// A clean close leaves the next open to empty the trash only.
fn recovery_follows_unclean_ends_only(driver: Driver) {
    let (dir, snap) = store(driver);
    let root = dir.path().join("store");
    let home = snap.home().to_path_buf();
    snap.unpack("base", None, &base_tar()[..], &UnpackOptions::default())
        .unwrap();
    snap.view("v", Some("base")).unwrap();
    snap.mount("v").unwrap();
    snap.unmount("v").unwrap();
    snap.remove("v").unwrap();
    drop(snap);
    assert_eq!(std::fs::read_dir(home.join(".users")).unwrap().count(), 0);

    // A clean end: a stray folder (not made by a snapshotter) is not looked at; the trash
    // is emptied.
    std::fs::create_dir(home.join(".tmp-stray")).unwrap();
    let snap = Snapshotter::open(&root, Some(driver)).unwrap();
    assert!(
        home.join(".tmp-stray").exists(),
        "no recovery after a clean end"
    );
    assert_eq!(std::fs::read_dir(home.join(".trash")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(home.join(".users")).unwrap().count(), 1);
    drop(snap);

    // A process that died leaves its mark: the next one recovers and clears the mark.
    std::fs::write(home.join(".users/4000000-dead"), "").unwrap();
    let snap = Snapshotter::open(&root, Some(driver)).unwrap();
    assert!(!home.join(".tmp-stray").exists(), "recovered");
    assert!(!home.join(".users/4000000-dead").exists());
    assert_eq!(
        snap.stat("base").unwrap().kind,
        strata_overlay::Kind::Committed
    );

    // A mount left behind by a process that otherwise ended well also means recovery.
    snap.view("left", Some("base")).unwrap();
    let left = snap.mount("left").unwrap();
    drop(snap);
    assert_eq!(std::fs::read_dir(home.join(".users")).unwrap().count(), 1);
    let snap = Snapshotter::open(&root, Some(driver)).unwrap();
    assert!(
        !strata_overlay::mount::is_mounted(&left).unwrap(),
        "unmounted"
    );
    snap.remove("left").unwrap();
    drop(snap);
    assert_eq!(std::fs::read_dir(home.join(".users")).unwrap().count(), 0);

    // A store from before the marks (no `.users/`) is recovered once.
    std::fs::remove_dir(home.join(".users")).unwrap();
    std::fs::create_dir(home.join(".tmp-old")).unwrap();
    drop(Snapshotter::open(&root, Some(driver)).unwrap());
    assert!(!home.join(".tmp-old").exists());
    drop(dir);
}

for_both_drivers!(
    round_trip,
    shared_prefix,
    depth_limit,
    lifecycle,
    kept_mounts_survive_recovery,
    recovery_follows_unclean_ends_only
);

/// The overlay probe's result is kept in `.overlay-caps` under what it depends on: a later
/// open reuses it; a missing, corrupt or foreign (another boot, another folder) one means
/// probing again, and the mount options come out the same.
#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn the_overlay_probe_is_kept_and_checked() {
    let (dir, snap) = store(Driver::Overlay);
    let root = dir.path().join("store");
    snap.unpack("base", None, &base_tar()[..], &UnpackOptions::default())
        .unwrap();
    let caps = snap.home().join(".overlay-caps");
    let features = snap.mount_features().to_vec();
    drop(snap);
    let kept = std::fs::read_to_string(&caps).unwrap();
    assert!(kept.contains("boot="), "{kept}");
    let reopen = || {
        let s = Snapshotter::open(&root, None).unwrap();
        assert_eq!(s.driver(), Driver::Overlay);
        assert_eq!(s.mount_features(), features);
    };
    // Kept: the probe folder is not made again (its mtime stays).
    let before = std::fs::metadata(&caps).unwrap().modified().unwrap();
    reopen();
    assert_eq!(
        std::fs::metadata(&caps).unwrap().modified().unwrap(),
        before
    );
    for bad in [
        "not json".to_string(),
        kept.replace("boot=", "boot=other-"),
        kept.replace("\"features\":[", "\"features\":[\"bogus\","),
    ] {
        std::fs::write(&caps, &bad).unwrap();
        if bad.contains("bogus") {
            // Same conditions: the kept (here: tampered) options are believed...
            let s = Snapshotter::open(&root, None).unwrap();
            assert!(s.mount_features().iter().any(|f| f == "bogus"));
            s.prepare("v", Some("base")).unwrap();
            // ...until a mount with them fails, which forgets them.
            assert!(s.mount("v").is_err());
            assert!(!caps.exists(), "forgotten after a failed mount");
            s.remove("v").unwrap();
            drop(s);
        }
        reopen();
        assert_eq!(
            std::fs::read_to_string(&caps).unwrap(),
            kept,
            "probed again"
        );
    }
    std::fs::remove_file(&caps).unwrap();
    reopen();
    assert_eq!(std::fs::read_to_string(&caps).unwrap(), kept);
    drop(dir);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn drivers_write_byte_identical_tars() {
    let o = scenario(Driver::Overlay);
    let v = scenario(Driver::Vfs);
    for (i, (a, b)) in o.tars.iter().zip(&v.tars).enumerate().skip(1) {
        assert!(
            a == b,
            "layer {} differs between overlay and vfs ({} vs {} bytes)",
            i + 1,
            a.len(),
            b.len()
        );
    }
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn redirected_dirs_fall_back_to_the_naive_diff() {
    let (_d, snap) = store(Driver::Overlay);
    let mut t = TarBuilder::default();
    let t = t.dir("a/").file("a/one", b"1").file("a/two", b"2").finish();
    snap.unpack("base", None, &t[..], &UnpackOptions::default())
        .unwrap();
    snap.prepare("k", Some("base")).unwrap();
    // What a kernel with redirect_dir=on leaves after `mv a b`: a whiteout at `a` and a
    // redirected, otherwise empty `b` in the upper dir.
    let upper = snap.graph_driver_data("k").unwrap().upper_dir;
    sh(&upper, "mknod a c 0 0; mkdir b");
    setxattr(&upper.join("b"), "trusted.overlay.redirect", b"/a");
    let changes: Vec<String> = snap
        .diff("k")
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
        .collect();
    assert_eq!(changes, ["D a", "A b", "A b/one", "A b/two"]);
    let mut tar = Vec::new();
    snap.write_layer("k", &mut tar, &TarOptions::default())
        .unwrap();
    assert!(tar.windows(5).any(|w| w == b"b/two"));
}

#[test]
fn unprivileged_open_of_vfs_works_or_says_why() {
    let t = tempfile::tempdir().unwrap();
    let s = Snapshotter::open(t.path(), Some(Driver::Vfs)).unwrap();
    assert_eq!(s.driver(), Driver::Vfs);
    assert!(s.walk().unwrap().is_empty());
    assert_eq!("overlay".parse::<Driver>().unwrap(), Driver::Overlay);
    assert!("zfs"
        .parse::<Driver>()
        .unwrap_err()
        .contains("unknown storage driver"));
}
