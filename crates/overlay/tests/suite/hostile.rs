//! Hostile layers: each escape technique, run against both drivers. Nothing may change outside
//! the target (a sentinel folder next to the store is checked after every case), and every
//! refusal names the offending entry.

use std::path::Path;

use strata_overlay::tar_write::EntryKind;
use strata_overlay::{Driver, Error, Limits, Snapshotter, UnpackOptions};

use crate::common::*;

enum Expect {
    /// Refused, with an error naming this entry.
    Refused(&'static str),
    /// Accepted, with everything inside the target; the check looks at the layer's folder.
    Contained(fn(&Path)),
}

struct Case {
    what: &'static str,
    tar: Vec<u8>,
    expect: Expect,
    limits: Limits,
}

fn case(what: &'static str, tar: Vec<u8>, expect: Expect) -> Case {
    Case {
        what,
        tar,
        expect,
        limits: Limits::default(),
    }
}

fn t() -> TarBuilder {
    TarBuilder::default()
}

fn cases(sentinel: &Path) -> Vec<Case> {
    let s = sentinel.display().to_string();
    let sfile = format!("{s}/file");
    let up = format!("{}{}", "../".repeat(12), s.trim_start_matches('/'));
    let mut v = vec![
        case(
            "dot-dot name",
            t().file("../escape", b"x").finish(),
            Expect::Refused("../escape"),
        ),
        case(
            "dot-dot after clean",
            t().file("a/../../escape", b"x").finish(),
            Expect::Refused("a/../../escape"),
        ),
        case(
            "symlink to outside, then write through it",
            t().symlink("out", &s).file("out/pwned", b"x").finish(),
            Expect::Refused("out/pwned"),
        ),
        case(
            "symlink to .., then write below it",
            t().symlink("up", "..").file("up/x/y", b"x").finish(),
            Expect::Refused("up/x/y"),
        ),
        case(
            "relative symlink climbing out, then write through it",
            t().symlink("rel", &up).file("rel/f", b"x").finish(),
            Expect::Refused("rel/f"),
        ),
        case(
            "directory replaced by a symlink, then written through",
            t().dir("dd/")
                .symlink("dd", &s)
                .file("dd/file", b"evil")
                .finish(),
            Expect::Refused("dd/file"),
        ),
        case(
            "hardlink climbing out",
            t().hardlink(
                "h",
                &format!("../../../../{}", sfile.trim_start_matches('/')),
            )
            .finish(),
            Expect::Refused("h"),
        ),
        case(
            "hardlink to an absolute host path",
            t().hardlink("h2", &sfile).finish(),
            Expect::Refused("h2"),
        ),
        case(
            "hardlink to a lower layer's file",
            t().hardlink("h3", "victim").finish(),
            Expect::Refused("h3"),
        ),
        case(
            "hardlink to a directory",
            t().dir("hd/").hardlink("hl", "hd").finish(),
            Expect::Refused("hl"),
        ),
        case(
            "hardlink to itself",
            t().hardlink("self", "self").finish(),
            Expect::Refused("self"),
        ),
        case(
            "hardlink to a later entry",
            t().hardlink("early", "late").file("late", b"x").finish(),
            Expect::Refused("early"),
        ),
        case(
            "empty whiteout",
            t().file(".wh.", b"").finish(),
            Expect::Refused(".wh."),
        ),
        case(
            "whiteout of ..",
            t().file("d/.wh...", b"").finish(),
            Expect::Refused("d/.wh..."),
        ),
        case(
            "whiteout of .",
            t().file("d/.wh..", b"").finish(),
            Expect::Refused("d/.wh.."),
        ),
        case(
            "whiteout climbing out",
            t().file("../.wh.file", b"").finish(),
            Expect::Refused("../.wh.file"),
        ),
        case(
            "whiteout through a symlink to outside",
            t().symlink("ws", &s).file("ws/.wh.file", b"").finish(),
            Expect::Refused("ws/.wh.file"),
        ),
        case(
            "opaque marker through a symlink to outside",
            t().symlink("os", &s).file("os/.wh..wh..opq", b"").finish(),
            Expect::Refused("os/.wh..wh..opq"),
        ),
        case(
            "opaque marker as a directory",
            t().dir("d/.wh..wh..opq/").finish(),
            Expect::Refused("d/.wh..wh..opq/"),
        ),
        case(
            "opaque marker below a file",
            t().file("plain", b"x")
                .file("plain/.wh..wh..opq", b"")
                .finish(),
            Expect::Refused("plain/.wh..wh..opq"),
        ),
        case(
            "aufs metadata outside the root",
            t().file("d/.wh..wh.plnk", b"").finish(),
            Expect::Refused("d/.wh..wh.plnk"),
        ),
        case(
            "0/0 character device (a forged overlay whiteout)",
            t().raw(spec("fake-whiteout", EntryKind::Char), b"")
                .finish(),
            Expect::Refused("fake-whiteout"),
        ),
        case(
            "forged trusted.overlay.opaque xattr",
            {
                let mut d = spec("forged/", EntryKind::Dir);
                d.xattrs = vec![("trusted.overlay.opaque".into(), b"y".to_vec())];
                t().raw(d, b"").finish()
            },
            Expect::Refused("forged/"),
        ),
        case(
            "forged user.overlay.redirect xattr",
            {
                let mut d = spec("redir/", EntryKind::Dir);
                d.xattrs = vec![("user.overlay.redirect".into(), b"/etc".to_vec())];
                t().raw(d, b"").finish()
            },
            Expect::Refused("redir/"),
        ),
        case(
            "name with a 256-byte component",
            t().file(&"n".repeat(256), b"x").finish(),
            Expect::Refused("nnnn"),
        ),
        case(
            "unsupported entry type",
            {
                let mut b = t().file("vol", b"").finish();
                b[156] = b'V';
                b[148..156].fill(b' ');
                let sum: u32 = b[..512].iter().map(|&x| u32::from(x)).sum();
                b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                b
            },
            Expect::Refused("vol"),
        ),
        case(
            "corrupt header checksum",
            {
                let mut b = t().file("bad-sum", b"x").finish();
                b[0] = b'B';
                b
            },
            Expect::Refused("Bad-sum"),
        ),
        case(
            "truncated file data",
            {
                let mut b = t().file("cut", &[7u8; 4000]).finish();
                b.truncate(1500);
                b
            },
            Expect::Refused("cut"),
        ),
        case(
            "symlink, then a regular file of the same name",
            t().symlink("s2", &sfile).file("s2", b"evil").finish(),
            Expect::Contained(|d| {
                assert_eq!(std::fs::read(d.join("s2")).unwrap(), b"evil");
            }),
        ),
        case(
            "symlink, then a directory of the same name (no chmod through it)",
            {
                let mut dir = spec("s3/", EntryKind::Dir);
                dir.mode = 0o777;
                t().symlink("s3", &s).raw(dir, b"").finish()
            },
            Expect::Contained(|d| assert!(d.join("s3").symlink_metadata().unwrap().is_dir())),
        ),
        case(
            "hardlink, then a file written over the link",
            t().file("orig", b"orig")
                .hardlink("ln", "orig")
                .file("ln", b"evil")
                .finish(),
            Expect::Contained(|d| {
                assert_eq!(std::fs::read(d.join("orig")).unwrap(), b"orig");
                assert_eq!(std::fs::read(d.join("ln")).unwrap(), b"evil");
            }),
        ),
        case(
            "absolute names are taken as relative",
            t().file("/abs/file", b"x").finish(),
            Expect::Contained(|d| assert!(d.join("abs/file").is_file())),
        ),
        case(
            "whiteout of a lower symlink to outside removes the link only",
            t().file(".wh.lower-out", b"").finish(),
            Expect::Contained(|_| {}),
        ),
        case(
            "opaque marker at the root",
            t().file(".wh..wh..opq", b"").file("only", b"1").finish(),
            Expect::Contained(|_| {}),
        ),
    ];
    // A PAX header claiming 64 MiB: refused before anything is read into memory.
    let mut giant = Vec::new();
    let mut h = spec("PaxHeaders.0/giant", EntryKind::File);
    h.size = 64 << 20;
    let mut block = strata_overlay::tar_write::build_header(&h);
    block[156] = b'x';
    block[148..156].fill(b' ');
    let sum: u32 = block[..512].iter().map(|&x| u32::from(x)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    giant.extend_from_slice(&block);
    giant.extend(std::iter::repeat_n(b'9', 4096));
    v.push(case(
        "giant PAX header",
        giant,
        Expect::Refused("PaxHeaders.0/giant"),
    ));
    let mut long = t();
    let mut l = spec("././@LongLink", EntryKind::File);
    l.size = 2 << 20;
    let mut block = strata_overlay::tar_write::build_header(&l);
    block[156] = b'L';
    block[148..156].fill(b' ');
    let sum: u32 = block[..512].iter().map(|&x| u32::from(x)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    long.bytes.extend_from_slice(&block);
    long.bytes.extend(std::iter::repeat_n(b'a', 4096));
    v.push(case(
        "giant GNU long name",
        long.bytes,
        Expect::Refused("@LongLink"),
    ));
    let mut nul = spec("x", EntryKind::File);
    nul.path = b"bad\0name-but-longer-than-a-hundred-bytes-so-it-goes-to-pax-".repeat(3);
    v.push(case(
        "NUL inside a PAX path",
        t().raw(nul, b"").finish(),
        Expect::Refused("bad"),
    ));
    let mut bomb = case(
        "more entries than allowed",
        t().file("1", b"")
            .file("2", b"")
            .file("3", b"")
            .file("4", b"")
            .finish(),
        Expect::Refused("4"),
    );
    bomb.limits.max_entries = 3;
    v.push(bomb);
    v
}

fn snapshot_sentinel(p: &Path) -> Vec<(std::path::PathBuf, Entry)> {
    use std::os::unix::fs::PermissionsExt;
    let mut v: Vec<_> = tree(p).into_iter().collect();
    let mode = std::fs::metadata(p).unwrap().permissions().mode();
    v.push((
        "<root mode>".into(),
        Entry {
            kind: "dir",
            mode,
            uid: 0,
            gid: 0,
            content: Vec::new(),
            rdev: 0,
            xattrs: Vec::new(),
            link_group: None,
        },
    ));
    v
}

pub fn hostile_layers(driver: Driver) {
    let (dir, snap) = store(driver);
    let sentinel = dir.path().join("sentinel");
    std::fs::create_dir_all(sentinel.join("sub")).unwrap();
    std::fs::write(sentinel.join("file"), "precious").unwrap();
    let before = snapshot_sentinel(&sentinel);
    let mut base = t();
    let base = base
        .dir("d/")
        .file("d/keep", b"k")
        .file("victim", b"v")
        .symlink("lower-out", &sentinel.display().to_string())
        .finish();
    snap.unpack("base", None, &base[..], &UnpackOptions::default())
        .unwrap();
    let all = cases(&sentinel);
    assert!(
        all.iter()
            .filter(|c| matches!(c.expect, Expect::Refused(_)))
            .count()
            >= 20
    );
    for (i, c) in all.into_iter().enumerate() {
        let name = format!("hostile-{i}");
        let opts = UnpackOptions {
            limits: c.limits,
            ..UnpackOptions::default()
        };
        let r = snap.unpack(&name, Some("base"), &c.tar[..], &opts);
        match c.expect {
            Expect::Refused(entry) => {
                let err = r.expect_err(c.what);
                match &err {
                    Error::Entry { entry: got, .. } => {
                        assert!(
                            got.contains(entry),
                            "{}: error names `{got}`, not `{entry}`: {err}",
                            c.what
                        )
                    }
                    other => panic!("{}: not an entry error: {other}", c.what),
                }
                assert!(err.to_string().contains(entry), "{}: {err}", c.what);
                if std::env::var_os("STRATA_SHOW_ERRORS").is_some() {
                    eprintln!("{:>55}: {err}", c.what);
                }
                assert!(
                    snap.stat(&name).is_err(),
                    "{}: a refused layer must not appear",
                    c.what
                );
            }
            Expect::Contained(check) => {
                r.unwrap_or_else(|e| panic!("{}: {e}", c.what));
                check(&snap.graph_driver_data(&name).unwrap().upper_dir);
            }
        }
        assert_eq!(
            snapshot_sentinel(&sentinel),
            before,
            "{} changed something outside the store",
            c.what
        );
        let stray: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "store" && n != "sentinel")
            .collect();
        assert!(
            stray.is_empty(),
            "{}: wrote {stray:?} next to the store",
            c.what
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(snap.home())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "half-made layers left: {leftovers:?}");
}

/// Device nodes as non-root: this thread drops CAP_MKNOD, as a rootless or confined process
/// would lack it.
pub fn devices_need_cap_mknod(driver: Driver) {
    let (dir, snap) = store(driver);
    let sentinel = dir.path().join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    let mut dev = spec("dev/null", EntryKind::Char);
    dev.dev_major = 1;
    dev.dev_minor = 3;
    dev.mode = 0o4666;
    let tar = t().dir("dev/").raw(dev, b"").finish();
    // As root, the device is made, without its setuid bit.
    snap.unpack("with-dev", None, &tar[..], &UnpackOptions::default())
        .unwrap();
    let made = snap
        .graph_driver_data("with-dev")
        .unwrap()
        .upper_dir
        .join("dev/null");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let m = std::fs::symlink_metadata(&made).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.permissions().mode() & 0o7777, 0o666);
    let mut caps = rustix::thread::capabilities(None).unwrap();
    caps.effective.remove(rustix::thread::CapabilitySet::MKNOD);
    rustix::thread::set_capabilities(None, caps).unwrap();
    let err = snap
        .unpack("no-dev", None, &tar[..], &UnpackOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Entry { entry, reason, .. } if entry == "dev/null" && reason.contains("CAP_MKNOD")),
        "{err}"
    );
    assert!(snap.stat("no-dev").is_err());
    // Overlay whiteouts (0/0) need no CAP_MKNOD since Linux 5.8, so layers with deletions
    // still unpack.
    let del = t().file(".wh.dev", b"").finish();
    snap.unpack(
        "deletes",
        Some("with-dev"),
        &del[..],
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read_dir(&sentinel).unwrap().count(), 0);
}

/// The full-tree applier (vfs, `ADD` of an archive) used directly; needs no privileges.
#[test]
fn apply_to_a_plain_tree_is_contained() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("root");
    let sentinel = d.path().join("sentinel");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::write(sentinel.join("file"), "precious").unwrap();
    let s = sentinel.display().to_string();
    let tar = t().symlink("x", &s).file("x/evil", b"e").finish();
    let err =
        strata_overlay::apply_to_tree(&tar[..], &target, &UnpackOptions::default()).unwrap_err();
    assert!(err.to_string().contains("x/evil"), "{err}");
    let tar = t()
        .file("ok/file", b"fine")
        .file(".wh.missing", b"")
        .finish();
    strata_overlay::apply_to_tree(&tar[..], &target, &UnpackOptions::default()).unwrap();
    assert_eq!(std::fs::read(target.join("ok/file")).unwrap(), b"fine");
    assert_eq!(std::fs::read_dir(&sentinel).unwrap().count(), 1);
    let _ = Snapshotter::diff_trees(&sentinel, &target).unwrap();
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

for_both_drivers!(hostile_layers, devices_need_cap_mknod);
