//! Mounts as data, and the one place that performs them.
//!
//! The snapshotter returns [`Mount`] values (like containerd's); whoever needs the filesystem
//! (the builder's executor, `strata run`, tests) performs them with [`Mount::mount`] and
//! removes them with [`unmount`]. Overlay options keep `upperdir`/`workdir` first: on this
//! kernel `mount(2)` silently cuts its data at one page, and with the lower dirs last an
//! overflow would drop lower layers or the upper dir without an error (reference notes §11).
//! Options that do not fit in a page go through the new mount API (`fsconfig` `lowerdir+`,
//! Linux >= 6.8), or, where that is missing, through relative `l/` links from a thread that
//! changed its own working directory.

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::{Error, Result};

/// Most bytes of mount data `mount(2)` takes (one 4 KiB page, NUL included).
pub const MAX_MOUNT_DATA: usize = 4095;

/// One mount to perform, as data (containerd's `Mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `overlay` or `bind`.
    pub fs_type: String,
    /// For binds the folder to bind; for overlay the literal `overlay`.
    pub source: PathBuf,
    /// Mount options: `ro`/`rw` and, for overlay, `upperdir=`, `workdir=`, feature switches
    /// and `lowerdir=` (colon-separated, nearest layer first).
    pub options: Vec<String>,
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type={} source={} options={}",
            self.fs_type,
            self.source.display(),
            self.options.join(",")
        )
    }
}

/// How an overlay mount is performed (all give the same result; the benchmark compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `mount(2)` when the options fit in a page, else the new mount API, else relative links.
    Auto,
    /// `mount(2)` with absolute paths; fails when the options do not fit.
    Classic,
    /// `fsopen`/`fsconfig`/`fsmount`, one `lowerdir+` per layer.
    NewApi,
    /// `mount(2)` with lower dirs relative to their common folder, from a thread that
    /// `chdir`ed there (Docker's way).
    Relative,
}

/// Build overlay options in the safe order: upper and work dirs first, then the feature
/// switches, lower dirs last.
pub fn overlay_options(
    upper: Option<(&Path, &Path)>,
    features: &[String],
    lowers: &[PathBuf],
) -> Vec<String> {
    let mut o = Vec::new();
    if let Some((u, w)) = upper {
        o.push(format!("upperdir={}", u.display()));
        o.push(format!("workdir={}", w.display()));
    }
    o.extend(features.iter().cloned());
    let joined: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    o.push(format!("lowerdir={}", joined.join(":")));
    o
}

/// The data string `mount(2)` would get (options without `ro`/`rw`), and whether it fits.
pub fn mount_data(options: &[String]) -> (String, bool) {
    let data: Vec<&str> = options
        .iter()
        .map(String::as_str)
        .filter(|o| *o != "ro" && *o != "rw")
        .collect();
    let s = data.join(",");
    let fits = s.len() <= MAX_MOUNT_DATA;
    (s, fits)
}

/// Rewrite `lowerdir=` with paths relative to their longest common folder; returns that
/// folder and the new options.
pub fn relative_lowers(options: &[String]) -> Option<(PathBuf, Vec<String>)> {
    let lowers: Vec<PathBuf> = options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))?
        .split(':')
        .map(PathBuf::from)
        .collect();
    let mut common = lowers.first()?.parent()?.to_path_buf();
    while !lowers.iter().all(|l| l.starts_with(&common)) {
        common = common.parent()?.to_path_buf();
    }
    let rel: Vec<String> = lowers
        .iter()
        .map(|l| l.strip_prefix(&common).map(|p| p.display().to_string()))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    let out = options
        .iter()
        .map(|o| {
            if o.starts_with("lowerdir=") {
                format!("lowerdir={}", rel.join(":"))
            } else {
                o.clone()
            }
        })
        .collect();
    Some((common, out))
}

fn shorten(s: &str) -> String {
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}... ({} bytes)", &s[..cut], s.len())
    } else {
        s.to_string()
    }
}

impl Mount {
    fn readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    fn err(&self, target: &Path, e: Errno) -> Error {
        Error::Mount {
            fs_type: self.fs_type.clone(),
            target: target.to_path_buf(),
            options: shorten(&self.options.join(",")),
            source: e.into(),
        }
    }

    /// Perform this mount on `target`.
    pub fn mount(&self, target: &Path) -> Result<()> {
        self.mount_with(target, Strategy::Auto)
    }

    /// Perform this mount on `target` with a given strategy (overlay only; binds ignore it).
    pub fn mount_with(&self, target: &Path, strategy: Strategy) -> Result<()> {
        match self.fs_type.as_str() {
            "bind" => {
                rustix::mount::mount_bind_recursive(&self.source, target)
                    .map_err(|e| self.err(target, e))?;
                if self.readonly() {
                    rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                        .map_err(|e| self.err(target, e))?;
                }
                Ok(())
            }
            "overlay" => self.mount_overlay(target, strategy),
            other => Err(Error::Mount {
                fs_type: other.to_string(),
                target: target.to_path_buf(),
                options: String::new(),
                source: Errno::NODEV.into(),
            }),
        }
    }

    fn classic(&self, target: &Path, data: &str) -> Result<()> {
        let flags = if self.readonly() {
            MountFlags::RDONLY
        } else {
            MountFlags::empty()
        };
        let c = CString::new(data).map_err(|_| self.err(target, Errno::INVAL))?;
        rustix::mount::mount("overlay", target, "overlay", flags, Some(c.as_c_str()))
            .map_err(|e| self.err(target, e))
    }

    fn mount_overlay(&self, target: &Path, strategy: Strategy) -> Result<()> {
        let (data, fits) = mount_data(&self.options);
        match strategy {
            Strategy::Classic if !fits => Err(Error::OptionsTooLong {
                len: data.len(),
                max: MAX_MOUNT_DATA,
            }),
            Strategy::Classic => self.classic(target, &data),
            Strategy::Auto if fits => self.classic(target, &data),
            Strategy::NewApi => self.new_api(target),
            Strategy::Relative => self.relative(target),
            Strategy::Auto => match self.new_api(target) {
                Err(Error::Mount { source, .. })
                    if source.raw_os_error() == Some(Errno::INVAL.raw_os_error())
                        || source.raw_os_error() == Some(Errno::NOSYS.raw_os_error()) =>
                {
                    self.relative(target)
                }
                other => other,
            },
        }
    }

    fn new_api(&self, target: &Path) -> Result<()> {
        let e = |e| self.err(target, e);
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(e)?;
        for opt in &self.options {
            if opt == "ro" || opt == "rw" {
                continue;
            }
            match opt.split_once('=') {
                Some(("lowerdir", v)) => {
                    for l in v.split(':') {
                        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l).map_err(e)?;
                    }
                }
                Some((k, v)) => rustix::mount::fsconfig_set_string(&fs, k, v).map_err(e)?,
                None => rustix::mount::fsconfig_set_flag(&fs, opt.as_str()).map_err(e)?,
            }
        }
        rustix::mount::fsconfig_create(&fs).map_err(e)?;
        let attrs = if self.readonly() {
            MountAttrFlags::MOUNT_ATTR_RDONLY
        } else {
            MountAttrFlags::empty()
        };
        let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(e)?;
        rustix::mount::move_mount(
            &mnt,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(e)
    }

    fn relative(&self, target: &Path) -> Result<()> {
        let (dir, opts) =
            relative_lowers(&self.options).ok_or_else(|| self.err(target, Errno::INVAL))?;
        let (data, fits) = mount_data(&opts);
        if !fits {
            return Err(Error::OptionsTooLong {
                len: data.len(),
                max: MAX_MOUNT_DATA,
            });
        }
        let target = std::path::absolute(target).map_err(|e| Error::io("resolve", target, e))?;
        let me = self.clone();
        let t = target.clone();
        // A dedicated thread with its own working directory, so the process's stays put.
        std::thread::spawn(move || -> Result<()> {
            // SAFETY: CLONE_FS only detaches this short-lived thread's cwd/umask/root from the
            // other threads'; nothing in this thread relies on sharing them.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(|e| me.err(&t, e))?;
            rustix::process::chdir(&dir).map_err(|e| me.err(&t, e))?;
            me.classic(&t, &data)
        })
        .join()
        .map_err(|_| self.err(&target, Errno::INVAL))?
    }
}

/// Unmount `target`; when busy, detach it (it goes away once unused).
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::BUSY) => rustix::mount::unmount(target, UnmountFlags::DETACH)
            .map_err(|e| Error::io("unmount (detached)", target, e)),
        Err(e) => Err(Error::io("unmount", target, e)),
    }
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read("/proc/self/mountinfo")
        .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    let mut out = Vec::new();
    for line in info.split(|b| *b == b'\n') {
        let Some(field) = line.split(|b| *b == b' ').nth(4) else {
            continue;
        };
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_mountinfo(field)));
        if p.starts_with(dir) {
            out.push(p);
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    Ok(out)
}

/// Is `path` a mount point?
pub fn is_mounted(path: &Path) -> Result<bool> {
    Ok(mounts_under(path)?.iter().any(|p| p == path))
}

/// Undo mountinfo's octal escapes (`\040` for space and so on).
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 4 <= field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_and_work_come_before_lowers() {
        let o = overlay_options(
            Some((Path::new("/s/a/diff"), Path::new("/s/a/work"))),
            &["index=off".to_string()],
            &[PathBuf::from("/s/l/B"), PathBuf::from("/s/l/C")],
        );
        assert_eq!(
            o,
            [
                "upperdir=/s/a/diff",
                "workdir=/s/a/work",
                "index=off",
                "lowerdir=/s/l/B:/s/l/C"
            ]
        );
    }

    #[test]
    fn data_length_is_checked_against_one_page() {
        let many: Vec<PathBuf> = (0..128)
            .map(|i| PathBuf::from(format!("/var/lib/strata/overlay/l/{i:026}")))
            .collect();
        let o = overlay_options(None, &[], &many);
        let (data, fits) = mount_data(&o);
        assert!(!fits, "{} bytes", data.len());
        let (dir, rel) = relative_lowers(&o).unwrap();
        assert_eq!(dir, Path::new("/var/lib/strata/overlay/l"));
        let (data, fits) = mount_data(&rel);
        assert!(fits, "{} bytes", data.len());
        assert!(data.starts_with("lowerdir=00000000000000000000000000:"));
        let (_, fits) = mount_data(&["ro".into(), "lowerdir=/a:/b".into()]);
        assert!(fits);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(br"/a\040b"), b"/a b");
        assert_eq!(unescape_mountinfo(br"/x\"), br"/x\");
    }
}
