//! Manifests and indexes as the registry serves them (OCI and Docker schema 2), and picking a
//! platform out of an index. Pure: bytes in, values out.

use serde::Deserialize;

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media;

/// Docker's schema 1 (signed and unsigned): refused, as Docker 20.10+ does for pushes.
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
];

/// The `Accept` header of a manifest request.
pub(crate) fn accept_header() -> String {
    [
        media::OCI_INDEX,
        media::DOCKER_MANIFEST_LIST,
        media::OCI_MANIFEST,
        media::DOCKER_MANIFEST,
    ]
    .join(", ")
}

/// A platform: `linux/amd64`, `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture in Go's spelling (`amd64`, `arm64`).
    pub architecture: String,
    /// CPU variant (`v7`, `v8`), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Platform {
        let architecture = crate::image::host_arch();
        let variant = match architecture {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            _ => None,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parse `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        let bad = || Error::InvalidContent {
            what: format!("platform {text:?}"),
            reason: "expected os/arch or os/arch/variant".into(),
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<RawPlatform>,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// A parsed image manifest.
#[derive(Clone, Debug)]
pub(crate) struct Manifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What a manifest request returned.
#[derive(Clone, Debug)]
pub(crate) enum Fetched {
    Manifest(Manifest),
    /// An index: its entries with their platforms.
    Index(Vec<(Descriptor, Option<Platform>)>),
}

fn descriptor(d: &RawDescriptor, what: &str) -> Result<Descriptor> {
    let digest = Digest::parse(&d.digest)
        .map_err(|e| Error::content(what.to_string(), format!("bad digest: {e}")))?;
    Ok(Descriptor::new(d.media_type.clone(), digest, d.size))
}

/// Parse a manifest or an index; `content_type` is the response's header, used when the
/// document does not name its own media type.
pub(crate) fn parse(bytes: &[u8], content_type: &str, what: &str) -> Result<Fetched> {
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))?;
    let declared = raw
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        });
    if DOCKER_SCHEMA1.contains(&declared.as_str()) || raw.schema_version == Some(1) {
        return Err(Error::UnsupportedMediaType {
            media_type: if declared.is_empty() {
                DOCKER_SCHEMA1[0].to_string()
            } else {
                declared
            },
            what: format!("{what} (Docker schema 1 images are deprecated; push it again with a current client)"),
        });
    }
    let is_index = media::is_index(&declared)
        || (!media::is_manifest(&declared) && raw.manifests.is_some() && raw.config.is_none());
    if is_index {
        let entries = raw.manifests.unwrap_or_default();
        let mut out = Vec::with_capacity(entries.len());
        for e in &entries {
            let platform = e.platform.as_ref().map(|p| Platform {
                os: p.os.to_ascii_lowercase(),
                architecture: p.architecture.to_ascii_lowercase(),
                variant: p.variant.as_ref().map(|v| v.to_ascii_lowercase()),
            });
            out.push((descriptor(e, what)?, platform));
        }
        return Ok(Fetched::Index(out));
    }
    let media_type = if declared.is_empty() {
        media::OCI_MANIFEST.to_string()
    } else {
        declared
    };
    if !media::is_manifest(&media_type) {
        return Err(Error::UnsupportedMediaType {
            media_type,
            what: what.to_string(),
        });
    }
    let config = raw
        .config
        .as_ref()
        .ok_or_else(|| Error::content(what, "no config descriptor"))?;
    let config = descriptor(config, what)?;
    let mut layers = Vec::new();
    for (i, l) in raw.layers.unwrap_or_default().iter().enumerate() {
        if l.urls.as_ref().is_some_and(|u| !u.is_empty())
            || l.media_type.contains("foreign")
            || l.media_type.contains("nondistributable")
        {
            return Err(Error::UnsupportedMediaType {
                media_type: l.media_type.clone(),
                what: format!("{what} layer {i} (foreign layers are not fetched)"),
            });
        }
        if media::layer_compression(&l.media_type).is_none() {
            return Err(Error::UnsupportedMediaType {
                media_type: l.media_type.clone(),
                what: format!("{what} layer {i}"),
            });
        }
        layers.push(descriptor(l, what)?);
    }
    Ok(Fetched::Manifest(Manifest {
        media_type,
        config,
        layers,
    }))
}

/// The index entry for `want`: same os and architecture; the same variant when both name one
/// (an entry without a variant matches any, and arm64's `v8` is its default).
pub(crate) fn pick_platform<'a>(
    entries: &'a [(Descriptor, Option<Platform>)],
    want: &Platform,
) -> Option<&'a Descriptor> {
    let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
        ("arm64", None) => Some("v8".to_string()),
        (_, v) => v.map(str::to_string),
    };
    let wanted_variant = norm(want);
    let mut fallback = None;
    for (d, platform) in entries {
        let Some(p) = platform else { continue };
        if !media::is_manifest(&d.media_type) && !d.media_type.is_empty() {
            continue;
        }
        if p.os != want.os || p.architecture != want.architecture {
            continue;
        }
        match (norm(p), &wanted_variant) {
            (Some(a), Some(b)) if a == *b => return Some(d),
            (Some(_), Some(_)) => {}
            _ => {
                fallback.get_or_insert(d);
            }
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    #[test]
    fn parses_docker_and_oci_manifests() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{D1}","size":7}},
            "layers":[{{"mediaType":"{}","digest":"{D2}","size":9}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        );
        let Fetched::Manifest(m) = parse(docker.as_bytes(), "", "m").unwrap() else {
            panic!("a manifest")
        };
        assert_eq!(m.media_type, media::DOCKER_MANIFEST);
        assert_eq!(m.config.size, 7);
        assert_eq!(m.layers[0].digest.to_string(), D2);

        // OCI without mediaType in the body: the Content-Type decides.
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{D1}","size":7}},"layers":[]}}"#,
            media::OCI_CONFIG
        );
        let Fetched::Manifest(m) = parse(
            oci.as_bytes(),
            "application/vnd.oci.image.manifest.v1+json; x=y",
            "m",
        )
        .unwrap() else {
            panic!("a manifest")
        };
        assert_eq!(m.media_type, media::OCI_MANIFEST);
    }

    #[test]
    fn refuses_schema1_foreign_layers_and_unknown_types() {
        let err = parse(br#"{"schemaVersion":1,"name":"x"}"#, "", "m").unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
        let foreign = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"{D1}","size":1}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":1,"urls":["https://x"]}}]}}"#,
            media::DOCKER_MANIFEST
        );
        assert!(parse(foreign.as_bytes(), "", "m")
            .unwrap_err()
            .to_string()
            .contains("foreign"));
        let odd = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"{D1}","size":1}},
            "layers":[{{"mediaType":"application/x-lz4","digest":"{D2}","size":1}}]}}"#,
            media::OCI_MANIFEST
        );
        assert!(parse(odd.as_bytes(), "", "m").is_err());
        assert!(parse(b"[]", "", "m").is_err());
        assert!(parse(br#"{"mediaType":"text/plain"}"#, "", "m").is_err());
    }

    #[test]
    fn picks_the_platform_from_an_index() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
              {{"mediaType":"{m}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
              {{"mediaType":"{m}","digest":"{D2}","size":2,"platform":{{"os":"linux","architecture":"arm64"}}}},
              {{"mediaType":"{m}","digest":"{D3}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            media::OCI_INDEX,
            m = media::OCI_MANIFEST
        );
        let Fetched::Index(entries) = parse(index.as_bytes(), "", "i").unwrap() else {
            panic!("an index")
        };
        let pick = |p: &str| pick_platform(&entries, &Platform::parse(p).unwrap()).map(|d| d.size);
        assert_eq!(pick("linux/amd64"), Some(3));
        assert_eq!(pick("linux/arm64/v8"), Some(2));
        assert_eq!(pick("linux/arm64"), Some(2));
        assert_eq!(pick("linux/arm/v7"), Some(1));
        assert_eq!(pick("linux/arm/v6"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//x").is_err());
    }
}
