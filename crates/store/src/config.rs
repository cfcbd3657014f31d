//! Image configs: oci-spec's type extended with Docker's fields.
//!
//! `oci_spec::image::ImageConfiguration` lacks Docker's `Healthcheck`, `Shell`, `OnBuild` and
//! `ArgsEscaped` inside `config`; [`ImageConfig`] pairs it with [`DockerExtensions`] and merges
//! the two when serialising. Configs the store did not create are never re-serialised: the
//! image ID is the digest of their exact bytes, which [`crate::Image`] keeps.

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Docker's `HEALTHCHECK` settings; durations are integer nanoseconds as Docker stores them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `[]` inherit, `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Time between checks (ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Time one check may take (ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Grace period after start (ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// Interval during the start period (ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    /// Consecutive failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The fields Docker adds to the OCI `config` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerExtensions {
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// `ONBUILD` triggers, as raw instruction text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Set by BuildKit on `CMD`/`ENTRYPOINT` (a Windows leftover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
}

impl DockerExtensions {
    fn is_empty(&self) -> bool {
        *self == DockerExtensions::default()
    }
}

#[derive(Deserialize)]
struct ExtensionsOnly {
    #[serde(default)]
    config: Option<DockerExtensions>,
}

/// An image config: the OCI fields plus Docker's extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The OCI fields (`created`, `architecture`, `os`, `config`, `rootfs`, `history`, ...).
    pub oci: ImageConfiguration,
    /// Docker's extra `config` fields.
    pub docker: DockerExtensions,
}

impl ImageConfig {
    /// Parse config bytes (from a store, an archive or a registry). Unknown fields are
    /// tolerated; `rootfs.type` must be `layers` and every diffID a sha256 digest.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig> {
        let oci: ImageConfiguration =
            serde_json::from_slice(bytes).map_err(|e| Error::json("image config", e))?;
        let ext: ExtensionsOnly =
            serde_json::from_slice(bytes).map_err(|e| Error::json("image config", e))?;
        let config = ImageConfig {
            oci,
            docker: ext.config.unwrap_or_default(),
        };
        if config.oci.rootfs().typ() != "layers" {
            return Err(Error::content(
                "image config",
                format!("unknown rootfs type {:?}", config.oci.rootfs().typ()),
            ));
        }
        config.diff_ids()?;
        Ok(config)
    }

    /// The canonical bytes of a config this store creates: compact JSON with sorted keys, so
    /// equal configs always get the same image ID.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(&self.oci).unwrap_or(serde_json::Value::Null);
        if !self.docker.is_empty() {
            if let (Some(top), Ok(serde_json::Value::Object(ext))) =
                (value.as_object_mut(), serde_json::to_value(&self.docker))
            {
                let inner = top
                    .entry("config")
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if let Some(inner) = inner.as_object_mut() {
                    inner.extend(ext);
                }
            }
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The layers' diffIDs, base first.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.oci
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| {
                Digest::parse(d).map_err(|e| Error::content("image config rootfs", e.to_string()))
            })
            .collect()
    }

    /// Replace the diffIDs.
    pub fn set_diff_ids(&mut self, diff_ids: &[Digest]) {
        *self.oci.rootfs_mut().diff_ids_mut() = diff_ids.iter().map(Digest::to_string).collect();
    }

    /// The `created` timestamp (RFC 3339), if any.
    pub fn created(&self) -> Option<&str> {
        self.oci.created().as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CONFIG: &str = r#"{"architecture":"amd64","config":{"Hostname":"","Env":["PATH=/bin"],"Cmd":["sh"],"Entrypoint":null,"OnBuild":null,"Labels":null,"ExposedPorts":{"80/tcp":{}},"Volumes":null,"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Retries":3},"Shell":["/bin/ash","-c"],"ArgsEscaped":true},"container":"abc","container_config":{"Cmd":["/bin/sh"]},"created":"2024-01-01T00:00:00Z","docker_version":"20.10.24","history":[{"created":"2024-01-01T00:00:00Z","created_by":"/bin/sh -c #(nop) ADD file:x in / "}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"]}}"#;

    #[test]
    fn parses_docker_configs_with_extensions_and_nulls() {
        let c = ImageConfig::parse(DOCKER_CONFIG.as_bytes()).unwrap();
        assert_eq!(c.diff_ids().unwrap().len(), 1);
        assert_eq!(
            c.docker.shell.as_deref(),
            Some(&["/bin/ash".to_string(), "-c".into()][..])
        );
        assert_eq!(c.docker.healthcheck.as_ref().unwrap().retries, Some(3));
        assert_eq!(c.docker.args_escaped, Some(true));
        assert_eq!(c.created(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(
            c.oci.config().as_ref().unwrap().cmd().as_deref(),
            Some(&["sh".to_string()][..])
        );
    }

    #[test]
    fn serialising_is_canonical_and_round_trips() {
        let c = ImageConfig::parse(DOCKER_CONFIG.as_bytes()).unwrap();
        let bytes = c.to_bytes();
        assert_eq!(bytes, c.clone().to_bytes(), "deterministic");
        let back = ImageConfig::parse(&bytes).unwrap();
        assert_eq!(back, c);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""Shell":["/bin/ash","-c"]"#), "{text}");
        assert!(text.contains(r#""ExposedPorts":{"80/tcp":{}}"#), "{text}");
    }

    #[test]
    fn rejects_unknown_rootfs_types_and_bad_diff_ids() {
        let bad = DOCKER_CONFIG.replace(r#""type":"layers""#, r#""type":"squash""#);
        assert!(ImageConfig::parse(bad.as_bytes()).is_err());
        let bad = DOCKER_CONFIG.replace("sha256:5f70", "sha256:XX70");
        assert!(ImageConfig::parse(bad.as_bytes()).is_err());
        assert!(ImageConfig::parse(b"not json").is_err());
        assert!(ImageConfig::parse(b"{}").is_err());
    }

    #[test]
    fn diff_ids_can_be_set() {
        let mut c = ImageConfig::default();
        let d = Digest::of(b"x");
        c.set_diff_ids(&[d, d]);
        assert_eq!(c.diff_ids().unwrap(), vec![d, d]);
    }
}
