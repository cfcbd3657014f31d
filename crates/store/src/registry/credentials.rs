//! Credentials in Docker's format: `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`),
//! `{"auths": {"<registry>": {"auth": base64("user:password")}}}`, so a user's existing
//! `docker login` works and ours works for Docker.
//!
//! Every other key of the file (`credsStore`, `psFormat`, proxies, ...) is kept as it was when
//! the file is rewritten; the rewrite is atomic (temp file, fsync, rename) and the file is
//! private (0600).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::reference::DEFAULT_DOMAIN;

/// The key Docker files Docker Hub's credentials under.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// The largest credentials file we read.
const MAX_CONFIG: u64 = 4 << 20;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, not even in debug output.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The host a registry name or a config key stands for: scheme and path dropped, Docker Hub's
/// aliases folded into `docker.io` (Docker's `ConvertToHostname` plus the Hub aliases).
pub fn registry_host(name: &str) -> String {
    let rest = name
        .strip_prefix("https://")
        .or_else(|| name.strip_prefix("http://"))
        .unwrap_or(name);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_DOMAIN.to_string()
        }
        _ => host,
    }
}

/// The key `docker login` writes for a registry.
fn auth_key(registry: &str) -> String {
    let host = registry_host(registry);
    if host == DEFAULT_DOMAIN {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        host
    }
}

/// Docker's client configuration file, as far as credentials go.
#[derive(Clone, Debug)]
pub struct AuthFile {
    path: PathBuf,
    root: Map<String, Value>,
}

impl AuthFile {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`; `None` when neither
    /// variable is set.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
        Some(PathBuf::from(home).join(".docker").join("config.json"))
    }

    /// Read the file at `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<AuthFile> {
        let bad = |reason: String| Error::Credentials {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = match fs::metadata(path) {
            Ok(m) if m.len() > MAX_CONFIG => {
                return Err(bad(format!("larger than {MAX_CONFIG} bytes")))
            }
            Ok(_) => fs::read(path).map_err(|e| Error::io("read", path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("stat", path, e)),
        };
        let root = if bytes.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(bad("not a JSON object".into())),
                Err(e) => return Err(bad(format!("invalid JSON: {e}"))),
            }
        };
        Ok(AuthFile {
            path: path.to_path_buf(),
            root,
        })
    }

    /// The file this configuration came from (and is saved to).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.root.get("auths").and_then(Value::as_object)
    }

    /// The credentials stored for `registry` (`docker.io`, `localhost:5000`), if any.
    /// Keys are matched by host, so `https://index.docker.io/v1/` is Docker Hub's.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        let want = registry_host(registry);
        let Some(auths) = self.auths() else {
            return Ok(None);
        };
        // An exact key wins over one that only normalises to the same host.
        let exact = auths.get(&auth_key(registry));
        let entry = exact.or_else(|| {
            auths
                .iter()
                .find(|(k, _)| registry_host(k) == want)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry.and_then(Value::as_object) else {
            return Ok(None);
        };
        let bad = |reason: String| Error::Credentials {
            path: self.path.clone(),
            reason: format!("auths entry for {want}: {reason}"),
        };
        if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
            if !auth.is_empty() {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| bad(format!("\"auth\" is not base64: {e}")))?;
                let text =
                    String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8".into()))?;
                let (user, pass) = text
                    .split_once(':')
                    .ok_or_else(|| bad("\"auth\" is not user:password".into()))?;
                return Ok(Some(Credentials {
                    username: user.to_string(),
                    password: pass.to_string(),
                }));
            }
        }
        // Older files spell the fields out.
        let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default();
        if !field("username").is_empty() {
            return Ok(Some(Credentials {
                username: field("username").to_string(),
                password: field("password").to_string(),
            }));
        }
        Ok(None)
    }

    /// Store credentials for `registry` under the key `docker login` uses (replacing any
    /// entry for the same host). Call [`AuthFile::save`] to write the file.
    pub fn set(&mut self, registry: &str, credentials: &Credentials) {
        self.remove(registry);
        let auths = self
            .root
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(auths) = auths {
            let raw = format!("{}:{}", credentials.username, credentials.password);
            let mut entry = Map::new();
            entry.insert(
                "auth".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
            );
            auths.insert(auth_key(registry), Value::Object(entry));
        }
    }

    /// Forget the credentials of `registry` (every key for the same host); returns whether
    /// there were any. Call [`AuthFile::save`] to write the file.
    pub fn remove(&mut self, registry: &str) -> bool {
        let want = registry_host(registry);
        let Some(Value::Object(auths)) = self.root.get_mut("auths") else {
            return false;
        };
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| registry_host(k) == want)
            .cloned()
            .collect();
        for k in &keys {
            auths.remove(k);
        }
        !keys.is_empty()
    }

    /// Write the file atomically with mode 0600 (its folder is created 0700 if missing). A
    /// symlinked `config.json` is written through to its target, as Docker does.
    pub fn save(&self) -> Result<()> {
        let target = match fs::canonicalize(&self.path) {
            Ok(p) => p,
            Err(_) => self.path.clone(),
        };
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::io("create", &dir, e))?;
        }
        let mut body = serde_json::to_vec_pretty(&Value::Object(self.root.clone()))
            .map_err(|e| Error::json("credentials file", e))?;
        body.push(b'\n');
        // NamedTempFile is created 0600.
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.json-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io("create temp file in", &dir, e))?;
        tmp.write_all(&body)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| Error::io("write", tmp.path().to_path_buf(), e))?;
        tmp.persist(&target)
            .map_err(|e| Error::io("rename into", &target, e.error))?;
        crate::fsutil::sync_dir(&dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hosts_normalise_like_docker() {
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_host("registry-1.docker.io"), "docker.io");
        assert_eq!(registry_host("http://LocalHost:5000/x"), "localhost:5000");
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(auth_key("docker.io"), DOCKER_HUB_AUTH_KEY);
        assert_eq!(auth_key("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn reads_what_docker_login_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        // "alice:s3cr:et" and "bob:pw" in base64, as docker writes them.
        fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcjpldA=="},
                "https://ghcr.io":{"auth":"Ym9iOnB3"},"old.example":{"username":"u","password":"p"},
                "empty.example":{}},"psFormat":"table"}"#,
        )
        .unwrap();
        let f = AuthFile::load(&path).unwrap();
        let hub = f.get("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cr:et")
        );
        assert_eq!(f.get("ghcr.io").unwrap().unwrap().username, "bob");
        assert_eq!(f.get("old.example").unwrap().unwrap().password, "p");
        assert_eq!(f.get("empty.example").unwrap(), None);
        assert_eq!(f.get("quay.io").unwrap(), None);
        assert!(!format!("{hub:?}").contains("s3cr"));
    }

    #[test]
    fn writes_atomically_privately_and_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker").join("config.json");
        let mut f = AuthFile::load(&path).unwrap();
        assert_eq!(f.get("localhost:5000").unwrap(), None);
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        f.set("localhost:5000", &c);
        f.save().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        // Another tool's keys survive a rewrite.
        let mut v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v["credHelpers"] = serde_json::json!({"gcr.io": "gcloud"});
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let mut f = AuthFile::load(&path).unwrap();
        assert_eq!(f.get("localhost:5000").unwrap(), Some(c.clone()));
        f.set("https://localhost:5000/", &c);
        f.save().unwrap();
        let v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["credHelpers"]["gcr.io"], "gcloud");
        assert_eq!(v["auths"].as_object().unwrap().len(), 1);
        assert_eq!(v["auths"]["localhost:5000"]["auth"], "dTpwOnc=");

        let mut f = AuthFile::load(&path).unwrap();
        assert!(f.remove("localhost:5000"));
        assert!(!f.remove("localhost:5000"));
        f.save().unwrap();
        assert_eq!(
            AuthFile::load(&path)
                .unwrap()
                .get("localhost:5000")
                .unwrap(),
            None
        );
        let leftovers = fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp files left behind");
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, "[1]").unwrap();
        let err = AuthFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("not a JSON object"),
            "{err}"
        );
        fs::write(&path, r#"{"auths":{"x.io":{"auth":"!!"}}}"#).unwrap();
        let err = AuthFile::load(&path)
            .unwrap()
            .get("x.io")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.io") && err.contains("base64"), "{err}");
        fs::write(&path, "").unwrap();
        assert_eq!(AuthFile::load(&path).unwrap().get("x.io").unwrap(), None);
    }
}
