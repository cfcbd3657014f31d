//! Probing whether overlayfs works here and how it must be mounted.
//!
//! The probe (a test mount and a dozen file operations) answers for a kernel, a filesystem
//! and a namespace, not for one process: its result is kept in `<home>/.overlay-caps` with
//! what it depends on (the boot, the store folder's device and inode, the filesystem type,
//! the user namespace's uid map), and probed again when any of those differs or the file is
//! missing or unreadable. A new boot is a new kernel as far as the probe knows (modules,
//! parameters), so a reboot always probes again.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::layout::{random_hex, write_atomic};
use crate::meta::{get_xattr, Meta};
use crate::mount::{overlay_options, unmount, Mount};

/// What the probe found.
#[derive(Debug, Clone)]
pub(crate) struct OverlayCaps {
    /// Options added to every overlay mount (`index=off`, `redirect_dir=off`, `metacopy=off`,
    /// or `userxattr` in a user namespace).
    pub features: Vec<String>,
    /// The xattr marking opaque directories in layers we write.
    pub opaque_xattr: &'static str,
    /// Mounting in a user namespace (`user.overlay.*` xattrs).
    pub userxattr: bool,
    /// Whether upper dirs can be read as plain diffs (no redirects appeared).
    pub native_diff: bool,
}

impl Default for OverlayCaps {
    fn default() -> Self {
        OverlayCaps {
            features: Vec::new(),
            opaque_xattr: "trusted.overlay.opaque",
            userxattr: false,
            native_diff: true,
        }
    }
}

/// True when this process is in a user namespace other than the initial one.
pub(crate) fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

fn param(name: &str) -> bool {
    Path::new("/sys/module/overlay/parameters")
        .join(name)
        .exists()
}

/// Decide the mount features from what the kernel offers (pure apart from the two checks).
pub(crate) fn features(userns: bool, has: impl Fn(&str) -> bool) -> Vec<String> {
    let mut f = Vec::new();
    if has("index") {
        f.push("index=off".into());
    }
    if userns {
        // userxattr forces redirect_dir and metacopy off by itself.
        f.push("userxattr".into());
    } else {
        if has("redirect_dir") {
            f.push("redirect_dir=off".into());
        }
        if has("metacopy") {
            f.push("metacopy=off".into());
        }
    }
    f
}

/// The file in the driver's home that keeps the last probe's result.
const CAPS_FILE: &str = ".overlay-caps";

/// What `.overlay-caps` holds.
#[derive(Debug, Serialize, Deserialize)]
struct KeptCaps {
    /// What the result depends on ([`conditions`]); a different one means probing again.
    conditions: String,
    features: Vec<String>,
    opaque_xattr: String,
    userxattr: bool,
    native_diff: bool,
}

/// What a probe's result depends on, as one string; `None` when it cannot be told (then the
/// probe runs and nothing is kept).
fn conditions(home: &Path) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let st = rustix::fs::stat(home).ok()?;
    let fs = rustix::fs::statfs(home).ok()?;
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
    let uid_map: Vec<&str> = uid_map.split_whitespace().collect();
    Some(format!(
        "v1 boot={} dev={} ino={} fstype={:x} uid_map={}",
        boot.trim(),
        st.st_dev,
        st.st_ino,
        fs.f_type,
        uid_map.join(" ")
    ))
}

fn read_kept(home: &Path, want: &str) -> Option<OverlayCaps> {
    let bytes = std::fs::read(home.join(CAPS_FILE)).ok()?;
    let kept: KeptCaps = serde_json::from_slice(&bytes).ok()?;
    if kept.conditions != want {
        return None;
    }
    let opaque_xattr = match kept.opaque_xattr.as_str() {
        "trusted.overlay.opaque" => "trusted.overlay.opaque",
        "user.overlay.opaque" => "user.overlay.opaque",
        _ => return None,
    };
    Some(OverlayCaps {
        features: kept.features,
        opaque_xattr,
        userxattr: kept.userxattr,
        native_diff: kept.native_diff,
    })
}

/// [`probe_overlay`], answered from `<home>/.overlay-caps` when the conditions it was probed
/// under still hold; a fresh success is kept there (best effort). Failures are not kept: the
/// next open tries again.
pub(crate) fn probe_overlay_kept(home: &Path) -> Result<OverlayCaps, String> {
    check_root()?;
    let want = conditions(home);
    if let Some(caps) = want.as_deref().and_then(|w| read_kept(home, w)) {
        return Ok(caps);
    }
    let caps = probe_overlay(home)?;
    if let Some(conditions) = want {
        let kept = KeptCaps {
            conditions,
            features: caps.features.clone(),
            opaque_xattr: caps.opaque_xattr.to_string(),
            userxattr: caps.userxattr,
            native_diff: caps.native_diff,
        };
        if let Ok(bytes) = serde_json::to_vec(&kept) {
            let _ = write_atomic(&home.join(CAPS_FILE), &bytes);
        }
    }
    Ok(caps)
}

/// Forgets the kept probe result, so that the next open probes again (a mount with the kept
/// options failed).
pub(crate) fn forget_kept(home: &Path) {
    let _ = std::fs::remove_file(home.join(CAPS_FILE));
}

fn check_root() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err(
            "mounting overlayfs needs root, or root in a user namespace with its own mount namespace \
             (e.g. `unshare --user --map-root-user --mount`); use `--storage-driver vfs` otherwise"
                .into(),
        );
    }
    Ok(())
}

/// Mount a tiny overlay in `home` and check whiteouts, opaque dirs and that renaming a lower
/// directory does not leave a redirect. Returns why overlay cannot be used on failure.
pub(crate) fn probe_overlay(home: &Path) -> Result<OverlayCaps, String> {
    check_root()?;
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("\toverlay") || l.trim() == "nodev\toverlay")
    {
        return Err("the kernel has no overlay filesystem (`modprobe overlay`?)".into());
    }
    let userns = in_user_namespace();
    let caps = OverlayCaps {
        features: features(userns, param),
        opaque_xattr: if userns {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        },
        userxattr: userns,
        native_diff: true,
    };
    let dir = home.join(format!(
        ".probe-{}",
        random_hex().map_err(|e| e.to_string())?
    ));
    let r = run_probe(&dir, caps);
    let merged = dir.join("merged");
    if crate::mount::is_mounted(&merged).unwrap_or(false) {
        let _ = unmount(&merged);
    }
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_probe(dir: &Path, mut caps: OverlayCaps) -> Result<OverlayCaps, String> {
    let e = |what: &str, err: std::io::Error| format!("probe: {what}: {err}");
    for d in ["l1/dir", "l1/rd", "l2", "upper", "work", "merged"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|x| e("mkdir", x))?;
    }
    std::fs::write(dir.join("l1/dir/f"), "x").map_err(|x| e("write", x))?;
    std::fs::write(dir.join("l2/x"), "x").map_err(|x| e("write", x))?;
    let mut options = vec!["rw".to_string()];
    options.extend(overlay_options(
        Some((&dir.join("upper"), &dir.join("work"))),
        &caps.features,
        &[dir.join("l1"), dir.join("l2")],
    ));
    let m = Mount {
        fs_type: "overlay".into(),
        source: "overlay".into(),
        options,
    };
    let merged = dir.join("merged");
    m.mount(&merged)
        .map_err(|x| format!("probe mount failed: {x}"))?;
    let checks = (|| {
        std::fs::remove_file(merged.join("x")).map_err(|x| e("delete", x))?;
        let w = Meta::lstat(&dir.join("upper/x")).map_err(|x| x.to_string())?;
        if !w.is_whiteout() {
            return Err("probe: deleting a lower file did not leave a 0/0 whiteout".to_string());
        }
        std::fs::remove_dir_all(merged.join("dir")).map_err(|x| e("delete dir", x))?;
        std::fs::create_dir(merged.join("dir")).map_err(|x| e("mkdir", x))?;
        let opaque =
            get_xattr(&dir.join("upper/dir"), caps.opaque_xattr).map_err(|x| x.to_string())?;
        if opaque.as_deref() != Some(b"y") {
            return Err(format!(
                "probe: a recreated directory is not marked with {}",
                caps.opaque_xattr
            ));
        }
        // With redirect_dir off, renaming a lower directory fails with EXDEV (tools copy).
        if std::fs::rename(merged.join("rd"), merged.join("rd2")).is_ok() {
            caps.native_diff = false;
        }
        Ok(())
    })();
    let _ = unmount(&merged);
    checks.map(|()| caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_the_kernel_and_namespace() {
        let all = |_: &str| true;
        assert_eq!(
            features(false, all),
            ["index=off", "redirect_dir=off", "metacopy=off"]
        );
        assert_eq!(features(true, all), ["index=off", "userxattr"]);
        assert!(features(false, |_| false).is_empty());
    }
}
