//! `--cache-from` and `--cache-to` specs, in BuildKit's syntax: comma-separated `key=value`
//! fields, `type=registry,ref=REF` or `type=local,src=DIR` / `type=local,dest=DIR`; a bare
//! reference (no `=`) means `type=registry,ref=REF`, as `docker buildx` accepts.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use strata_store::Reference;

use crate::Error;

/// The tag a local cache folder names its manifest with when the spec does not say.
pub const DEFAULT_LOCAL_TAG: &str = "latest";

/// How long a cache export may take before the build gives up on it (with a warning).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// BuildKit options strata accepts and has no use for: its own media-type and compression
/// switches (strata always writes an OCI image manifest and keeps layers as built), and
/// `ignore-error` (a failed export is always only a warning here).
const IGNORED_KEYS: &[&str] = &[
    "oci-mediatypes",
    "image-manifest",
    "compression",
    "compression-level",
    "force-compression",
    "ignore-error",
];

/// Where a shared cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// A manifest in a registry, under a tag (`127.0.0.1:5000/team/app:cache`).
    Registry(Reference),
    /// An OCI image layout folder; the manifest is the one tagged `tag` in its `index.json`.
    Local {
        /// The folder.
        dir: PathBuf,
        /// The tag.
        tag: String,
    },
}

impl fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "{r}"),
            CacheLocation::Local { dir, tag } if tag == DEFAULT_LOCAL_TAG => {
                write!(f, "{}", dir.display())
            }
            CacheLocation::Local { dir, tag } => write!(f, "{} (tag {tag})", dir.display()),
        }
    }
}

/// A `--cache-from`: where to read cache records from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImport {
    /// Where.
    pub location: CacheLocation,
}

/// Which records a cache export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMode {
    /// The steps whose layers make up the result (the target stage and the stages it is
    /// built `FROM`).
    #[default]
    Min,
    /// Every step of every stage built, intermediate stages included.
    Max,
}

/// A `--cache-to`: where to write this build's cache records, and which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// Where.
    pub location: CacheLocation,
    /// Which records.
    pub mode: ExportMode,
    /// How long the export may take; past it the build goes on with a warning.
    pub timeout: Duration,
}

/// The fields of a spec, with the option name for errors.
struct Fields {
    option: &'static str,
    spec: String,
    fields: Vec<(String, String)>,
}

impl Fields {
    fn parse(option: &'static str, spec: &str) -> Result<Fields, Error> {
        let spec = spec.trim();
        let mut fields = Vec::new();
        if !spec.contains('=') && !spec.is_empty() {
            fields.push(("type".to_string(), "registry".to_string()));
            fields.push(("ref".to_string(), spec.to_string()));
        } else {
            for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = part.split_once('=').ok_or_else(|| Error::InvalidOption {
                    option,
                    value: spec.to_string(),
                    reason: format!("{part:?} is not key=value"),
                })?;
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        Ok(Fields {
            option,
            spec: spec.to_string(),
            fields,
        })
    }

    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::InvalidOption {
            option: self.option,
            value: self.spec.clone(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.fields.iter().position(|(k, _)| k == key)?;
        Some(self.fields.remove(i).1)
    }

    /// The location the fields name; `dir_key` is `src` (import) or `dest` (export).
    fn location(&mut self, dir_key: &str) -> Result<CacheLocation, Error> {
        let kind = self.take("type").unwrap_or_else(|| "registry".into());
        let location = match kind.as_str() {
            "registry" => {
                let r = self
                    .take("ref")
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| self.bad("type=registry needs ref=REGISTRY/REPOSITORY:TAG"))?;
                let reference =
                    Reference::parse(&r).map_err(|e| self.bad(format!("ref={r}: {e}")))?;
                CacheLocation::Registry(reference)
            }
            "local" => {
                let dir = self
                    .take(dir_key)
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| self.bad(format!("type=local needs {dir_key}=DIR")))?;
                let tag = self
                    .take("tag")
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| DEFAULT_LOCAL_TAG.into());
                if !tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    return Err(self.bad(format!("tag={tag}: a tag is letters, digits, . _ -")));
                }
                CacheLocation::Local {
                    dir: PathBuf::from(dir),
                    tag,
                }
            }
            other => {
                return Err(self.bad(format!(
                    "type={other} is not supported (strata reads and writes type=registry and type=local)"
                )))
            }
        };
        Ok(location)
    }

    /// Refuses fields nobody took (except BuildKit's that do not apply).
    fn finish(self) -> Result<(), Error> {
        match self
            .fields
            .iter()
            .find(|(k, _)| !IGNORED_KEYS.contains(&k.as_str()))
        {
            Some((k, _)) => Err(self.bad(format!("unknown field {k:?}"))),
            None => Ok(()),
        }
    }
}

impl CacheImport {
    /// Parses a `--cache-from` spec.
    pub fn parse(spec: &str) -> Result<CacheImport, Error> {
        let mut f = Fields::parse("--cache-from", spec)?;
        let location = f.location("src")?;
        // BuildKit's registry imports accept (and ignore) a mode.
        f.take("mode");
        f.finish()?;
        Ok(CacheImport { location })
    }
}

impl CacheExport {
    /// Parses a `--cache-to` spec.
    pub fn parse(spec: &str) -> Result<CacheExport, Error> {
        let mut f = Fields::parse("--cache-to", spec)?;
        let location = f.location("dest")?;
        let mode = match f.take("mode").as_deref() {
            None | Some("min") => ExportMode::Min,
            Some("max") => ExportMode::Max,
            Some(other) => return Err(f.bad(format!("mode={other}: use min or max"))),
        };
        let timeout = match f.take("timeout") {
            None => DEFAULT_EXPORT_TIMEOUT,
            Some(t) => parse_duration(&t)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| f.bad(format!("timeout={t}: write it as 90s, 5m or 1h")))?,
        };
        f.finish()?;
        Ok(CacheExport {
            location,
            mode,
            timeout,
        })
    }
}

/// `90`, `90s`, `1.5m`, `2h`, `500ms`.
fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && (0.0..1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_parse_registry_local_and_bare_references() {
        let i = CacheImport::parse("type=registry,ref=127.0.0.1:5000/app:cache").unwrap();
        assert_eq!(
            i.location,
            CacheLocation::Registry(Reference::parse("127.0.0.1:5000/app:cache").unwrap())
        );
        let bare = CacheImport::parse("127.0.0.1:5000/app:cache").unwrap();
        assert_eq!(bare, i);
        let l = CacheImport::parse("type=local,src=/tmp/c,tag=v1").unwrap();
        assert_eq!(
            l.location,
            CacheLocation::Local {
                dir: "/tmp/c".into(),
                tag: "v1".into()
            }
        );
        assert_eq!(l.location.to_string(), "/tmp/c (tag v1)");
        let l = CacheImport::parse("type=local,src=/tmp/c").unwrap();
        assert_eq!(l.location.to_string(), "/tmp/c");
        for bad in [
            "type=gha",
            "type=registry",
            "type=local,dest=/x",
            "type=registry,ref=a/UPPER:x",
            "type=registry,ref=a:b,bogus=1",
            "type=local,src=/x,tag=a/b",
            "novalue,type=local",
        ] {
            let e = CacheImport::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--cache-from"), "{bad}: {e}");
        }
    }

    #[test]
    fn exports_parse_mode_timeout_and_ignore_buildkit_switches() {
        let e = CacheExport::parse("type=registry,ref=r.io/a:cache,mode=max,timeout=30s").unwrap();
        assert_eq!(e.mode, ExportMode::Max);
        assert_eq!(e.timeout, Duration::from_secs(30));
        let e = CacheExport::parse(
            "type=local,dest=/tmp/c,oci-mediatypes=true,image-manifest=true,ignore-error=true",
        )
        .unwrap();
        assert_eq!(e.mode, ExportMode::Min);
        assert_eq!(e.timeout, DEFAULT_EXPORT_TIMEOUT);
        assert!(matches!(e.location, CacheLocation::Local { .. }));
        for bad in [
            "type=local,src=/x",
            "type=registry,ref=a:b,mode=all",
            "type=registry,ref=a:b,timeout=0",
            "type=registry,ref=a:b,timeout=soon",
            "type=s3,bucket=x",
        ] {
            let e = CacheExport::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--cache-to"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5d"), None);
        assert_eq!(parse_duration(""), None);
    }
}
