//! What to run: [`ProcessSpec`] and its mounts.

use std::path::{Path, PathBuf};

use crate::Error;

/// Network isolation of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Share the host's network (the default for `RUN`: package mirrors must be reachable).
    #[default]
    Host,
    /// A fresh network namespace with only the loopback interface, up.
    None,
}

/// The mode of a secret file when none is given (reference notes §6.9).
pub const DEFAULT_SECRET_MODE: u32 = 0o400;

/// What is mounted at a [`Mount`]'s target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A host file or directory (recursively), read-only or writable.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mounted read-only.
        readonly: bool,
    },
    /// A persistent cache directory on the host (`RUN --mount=type=cache`).
    Cache {
        /// Host directory.
        source: PathBuf,
        /// Mounted read-only.
        readonly: bool,
    },
    /// An empty tmpfs (mode 1777).
    Tmpfs {
        /// Size limit in bytes; the kernel default (half of RAM) when `None`.
        size: Option<u64>,
    },
    /// A secret: the content of a host file, presented read-only with its own owner and
    /// mode, from memory (a copy in a private tmpfs), so nothing of it reaches the rootfs.
    Secret {
        /// Host file holding the secret.
        source: PathBuf,
        /// Owner of the file inside the container.
        uid: u32,
        /// Group of the file inside the container.
        gid: u32,
        /// Permission bits ([`DEFAULT_SECRET_MODE`] unless told otherwise).
        mode: u32,
    },
}

/// A mount inside the step's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path inside the root filesystem.
    pub target: String,
    /// What to mount there.
    pub kind: MountKind,
}

/// Everything needed to run one process isolated in an already mounted root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The root filesystem: a directory (usually the caller's mounted overlay).
    pub rootfs: PathBuf,
    /// Program and arguments; `argv[0]` without a `/` is looked up in the env's `PATH`.
    pub argv: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the root; created (0755, root) if missing.
    pub cwd: String,
    /// User id the process runs as.
    pub uid: u32,
    /// Group id the process runs as.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
    /// Network isolation.
    pub network: NetworkMode,
    /// Host name inside the container.
    pub hostname: String,
    /// Extra mounts, made in order after the standard ones.
    pub mounts: Vec<Mount>,
    /// Host file bound read-only at `/etc/resolv.conf` (skipped when `None`).
    pub resolv_conf: Option<PathBuf>,
    /// Host file bound read-only at `/etc/hosts` (skipped when `None`).
    pub hosts: Option<PathBuf>,
}

/// BuildKit's default `PATH`, used to find `argv[0]` when the environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths that hold the kernel filesystems the executor mounts itself; extra mounts may not
/// go there.
const RESERVED: [&str; 3] = ["/proc", "/dev", "/sys"];

impl ProcessSpec {
    /// Runs `argv` in `rootfs` as root in `/`, with host networking, host name `strata`, the
    /// host's `/etc/resolv.conf` and `/etc/hosts`, an empty environment and no extra mounts.
    pub fn new(rootfs: impl Into<PathBuf>, argv: &[&str]) -> Self {
        ProcessSpec {
            rootfs: rootfs.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            cwd: "/".to_string(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            network: NetworkMode::Host,
            hostname: "strata".to_string(),
            mounts: Vec::new(),
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            hosts: Some(PathBuf::from("/etc/hosts")),
        }
    }

    /// The `PATH` the program is looked up in.
    pub(crate) fn search_path(&self) -> &str {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str())
    }

    /// Checks what can be checked without touching the root filesystem.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::InvalidSpec { reason });
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return invalid("the command is empty".into());
        }
        let strings = self
            .argv
            .iter()
            .chain(self.env.iter().flat_map(|(k, v)| [k, v]))
            .chain([&self.cwd, &self.hostname]);
        if strings.into_iter().any(|s| s.contains('\0')) {
            return invalid("a NUL byte in the command, environment, cwd or hostname".into());
        }
        if let Some((k, _)) = self
            .env
            .iter()
            .find(|(k, _)| k.is_empty() || k.contains('='))
        {
            return invalid(format!(
                "environment variable name {k:?} is empty or has '='"
            ));
        }
        check_container_path(&self.cwd, "working directory")?;
        if self.cwd.split('/').any(|c| c == "..") {
            return invalid(format!("working directory {} contains '..'", self.cwd));
        }
        if self.cwd.starts_with("/proc/") || self.cwd == "/proc" {
            return invalid(format!("working directory {} is inside /proc", self.cwd));
        }
        if self.hostname.len() > 64 {
            return invalid(format!(
                "host name {:?} is longer than 64 bytes",
                self.hostname
            ));
        }
        for m in &self.mounts {
            check_container_path(&m.target, "mount target")?;
            if m.target.split('/').all(str::is_empty) {
                return invalid("a mount target is /".into());
            }
            if m.target.split('/').any(|c| c == ".." || c == ".") {
                return invalid(format!("mount target {} is not a clean path", m.target));
            }
            if RESERVED
                .iter()
                .any(|r| m.target == *r || m.target.starts_with(&format!("{r}/")))
            {
                return invalid(format!(
                    "mount target {} is inside a kernel filesystem the executor mounts",
                    m.target
                ));
            }
            let source = match &m.kind {
                MountKind::Bind { source, .. }
                | MountKind::Cache { source, .. }
                | MountKind::Secret { source, .. } => Some(source),
                MountKind::Tmpfs { .. } => None,
            };
            if let Some(source) = source {
                check_host_path(source, &m.target)?;
            }
        }
        Ok(())
    }
}

fn check_container_path(path: &str, what: &str) -> Result<(), Error> {
    if !path.starts_with('/') {
        return Err(Error::InvalidSpec {
            reason: format!("{what} {path:?} is not absolute"),
        });
    }
    Ok(())
}

fn check_host_path(path: &Path, target: &str) -> Result<(), Error> {
    if !path.is_absolute() || path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::InvalidSpec {
            reason: format!(
                "the source {} of the mount at {target} is not an absolute path",
                path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(spec: &ProcessSpec) -> String {
        spec.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        ProcessSpec::new("/r", &["true"]).validate().unwrap();
    }

    #[test]
    fn rejects_what_cannot_run() {
        let mut s = ProcessSpec::new("/r", &[]);
        assert_eq!(reason(&s), "invalid process spec: the command is empty");
        s.argv = vec!["a\0b".into()];
        assert!(reason(&s).contains("NUL"));
        s.argv = vec!["true".into()];
        s.env = vec![("A=B".into(), "c".into())];
        assert!(reason(&s).contains("\"A=B\""));
        s.env.clear();
        s.cwd = "app".into();
        assert!(reason(&s).contains("not absolute"));
        s.cwd = "/proc/self/fd/7".into();
        assert!(reason(&s).contains("inside /proc"));
        s.cwd = "/a/../b".into();
        assert!(reason(&s).contains("'..'"));
    }

    #[test]
    fn rejects_bad_mounts() {
        let mut s = ProcessSpec::new("/r", &["true"]);
        let tmpfs = |t: &str| Mount {
            target: t.into(),
            kind: MountKind::Tmpfs { size: None },
        };
        s.mounts = vec![tmpfs("/dev/shm")];
        assert!(reason(&s).contains("kernel filesystem"));
        s.mounts = vec![tmpfs("/")];
        assert!(reason(&s).contains("is /"));
        s.mounts = vec![tmpfs("/a/../etc")];
        assert!(reason(&s).contains("not a clean path"));
        s.mounts = vec![tmpfs("/devices")];
        s.validate().unwrap();
        s.mounts = vec![Mount {
            target: "/c".into(),
            kind: MountKind::Cache {
                source: "relative".into(),
                readonly: false,
            },
        }];
        assert!(reason(&s).contains("not an absolute path"));
    }

    #[test]
    fn path_comes_from_the_environment() {
        let mut s = ProcessSpec::new("/r", &["true"]);
        assert_eq!(s.search_path(), DEFAULT_PATH);
        s.env.push(("PATH".into(), "/opt/bin".into()));
        assert_eq!(s.search_path(), "/opt/bin");
    }
}
