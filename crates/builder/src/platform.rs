//! Platforms in OCI terms and the build args Docker predefines.
//!
//! A platform is `os/architecture[/variant]` with GOARCH names (`amd64`, `arm64`, `arm/v7`), as
//! OCI image indexes and `--platform` flags spell it. The builder needs the host's platform for
//! `BUILDPLATFORM` and the target's for `TARGETPLATFORM`; both families of automatic build args
//! are produced here, together with the list of proxy args that Docker passes to `RUN` without
//! an `ARG` line and keeps out of the cache key and history.

use std::fmt;

use crate::Error;

/// Build args that need no `ARG` line: passed to `RUN` when given with `--build-arg`, and left
/// out of cache keys and history unless the Dockerfile declares them (reference notes §6.3).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether `name` is one of the predefined proxy args (case-sensitive, as Docker matches them).
pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
}

/// Names of the automatic platform args, in the order [`platform_args`] returns them.
pub const PLATFORM_ARG_NAMES: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// An OCI platform: operating system, architecture and optional variant, normalised to the
/// names Go and OCI use (`amd64`, not `x86_64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture in GOARCH terms, e.g. `amd64`, `arm64`, `arm`.
    pub architecture: String,
    /// CPU variant, e.g. `v7` for `arm`; `None` when the architecture has no variant.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    ///
    /// The architecture comes from the compile target; for 32-bit `arm` the variant is read
    /// from `/proc/cpuinfo` when possible (defaulting to `v7`, Debian's `armhf`).
    pub fn host() -> Self {
        let (architecture, variant) = host_arch();
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant,
        }
    }

    /// Parses `os[/arch[/variant]]` (`linux/arm/v7`, `linux/amd64`, `linux/x86_64`) and
    /// normalises architecture aliases and variants as containerd's `platforms.Normalize`
    /// does. An `os` alone means the host's architecture.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidPlatform {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = value.trim().split('/').collect();
        if parts.len() > 3 {
            return Err(invalid("expected os[/arch[/variant]]"));
        }
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid("empty component"));
        }
        let valid_component = |p: &&str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !parts.iter().all(valid_component) {
            return Err(invalid(
                "components may only hold letters, digits, '.', '-' and '_'",
            ));
        }
        let os = parts[0].to_ascii_lowercase();
        let os = if os == "macos" {
            "darwin".to_string()
        } else {
            os
        };
        let (arch, variant) = match parts.len() {
            1 => {
                let host = Platform::host();
                return Ok(Platform {
                    os,
                    architecture: host.architecture,
                    variant: host.variant,
                });
            }
            2 => (parts[1].to_ascii_lowercase(), None),
            _ => (
                parts[1].to_ascii_lowercase(),
                Some(parts[2].to_ascii_lowercase()),
            ),
        };
        let (architecture, variant) = normalize_arch(&arch, variant.as_deref());
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The automatic platform build args for a build on `build` producing an image for `target`:
/// `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`, then the same four for
/// `BUILD*`. A missing variant is the empty string, as BuildKit sets it.
pub fn platform_args(target: &Platform, build: &Platform) -> Vec<(String, String)> {
    let mut args = Vec::with_capacity(PLATFORM_ARG_NAMES.len());
    for (prefix, platform) in [("TARGET", target), ("BUILD", build)] {
        args.push((format!("{prefix}PLATFORM"), platform.to_string()));
        args.push((format!("{prefix}OS"), platform.os.clone()));
        args.push((format!("{prefix}ARCH"), platform.architecture.clone()));
        args.push((
            format!("{prefix}VARIANT"),
            platform.variant.clone().unwrap_or_default(),
        ));
    }
    args
}

/// Maps Rust's architecture name to GOARCH, with the variant where one applies.
fn host_arch() -> (&'static str, Option<String>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", None),
        "arm" => (
            "arm",
            Some(arm_variant_from_cpuinfo().unwrap_or("v7").to_string()),
        ),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
        "mips64" => ("mips64", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    }
}

/// Reads `CPU architecture: N` from `/proc/cpuinfo`, as containerd does for 32-bit ARM.
fn arm_variant_from_cpuinfo() -> Option<&'static str> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("cpu architecture"))?;
    let value = line.split(':').nth(1)?.trim();
    match value {
        "5" | "5TE" | "5TEJ" => Some("v5"),
        "6" | "6TEJ" => Some("v6"),
        "7" => Some("v7"),
        "8" | "AArch64" => Some("v8"),
        _ => None,
    }
}

/// containerd's normalisation of architecture aliases and default variants.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let (arch, variant): (&str, Option<&str>) = match (arch, variant) {
        ("i386", v) => ("386", v),
        ("x86_64" | "x86-64" | "amd64", Some("v1")) => ("amd64", None),
        ("x86_64" | "x86-64", v) => ("amd64", v),
        ("aarch64" | "arm64", Some("8" | "v8" | "v8.0")) => ("arm64", None),
        ("aarch64" | "arm64", Some("9" | "9.0" | "v9.0")) => ("arm64", Some("v9")),
        ("aarch64", v) => ("arm64", v),
        ("armhf", _) => ("arm", Some("v7")),
        ("armel", _) => ("arm", Some("v6")),
        ("arm", None | Some("7") | Some("v7")) => ("arm", Some("v7")),
        ("arm", Some("5")) => ("arm", Some("v5")),
        ("arm", Some("6")) => ("arm", Some("v6")),
        ("arm", Some("8")) => ("arm", Some("v8")),
        (a, v) => (a, v),
    };
    (arch.to_string(), variant.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_platform_uses_goarch_names() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
        #[cfg(target_arch = "aarch64")]
        assert_eq!(host.to_string(), "linux/arm64");
    }

    #[test]
    fn parse_normalises_aliases() {
        let cases = [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("Linux/AMD64", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("linux/ppc64le", "linux/ppc64le"),
            ("linux/riscv64", "linux/riscv64"),
        ];
        for (input, want) in cases {
            assert_eq!(Platform::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn parse_os_alone_takes_the_host_architecture() {
        let p = Platform::parse("linux").unwrap();
        assert_eq!(p.architecture, Platform::host().architecture);
    }

    #[test]
    fn parse_rejects_malformed_values() {
        for bad in [
            "",
            "linux/",
            "/amd64",
            "linux/amd64/v1/x",
            "linux/am d64",
            "lin:ux",
        ] {
            let err = Platform::parse(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid platform"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn platform_args_cover_target_and_build() {
        let target = Platform::parse("linux/arm/v7").unwrap();
        let build = Platform::parse("linux/amd64").unwrap();
        let args = platform_args(&target, &build);
        let names: Vec<&str> = args.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, PLATFORM_ARG_NAMES);
        let values: Vec<&str> = args.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            values,
            [
                "linux/arm/v7",
                "linux",
                "arm",
                "v7",
                "linux/amd64",
                "linux",
                "amd64",
                ""
            ]
        );
    }

    #[test]
    fn proxy_args_are_case_sensitive() {
        assert!(is_proxy_arg("HTTP_PROXY"));
        assert!(is_proxy_arg("no_proxy"));
        assert!(!is_proxy_arg("Http_Proxy"));
        assert!(!is_proxy_arg("PROXY"));
    }
}
