//! Image references, parsed and normalised as Docker does.
//!
//! `busybox` -> `docker.io/library/busybox:latest`; `localhost:5000/x` keeps its registry;
//! `name@sha256:...` pins a digest. The familiar form (`busybox:latest`) is what users see.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry a name without one belongs to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The namespace of single-component names on the default registry.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag given to a reference with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker's limit on the length of a repository name.
const MAX_NAME_LEN: usize = 255;

/// A normalised image reference: registry, repository path, and a tag and/or a digest.
///
/// At least one of tag and digest is always present: parsing adds `latest` when neither is
/// given, as `docker pull`/`docker tag` do.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parse and normalise a reference (`busybox`, `ghcr.io/o/n:v1`, `n@sha256:...`).
    pub fn parse(input: &str) -> Result<Reference> {
        let bad = |reason: &str| Error::InvalidReference {
            input: input.chars().take(300).collect(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(Digest::parse(d).map_err(|e| bad(&format!("bad digest: {e}")))?),
            ),
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(bad)?;
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        let (domain, path) = split_domain(name);
        validate_domain(&domain).map_err(bad)?;
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad(&format!("repository name ({path}) must be lowercase")));
        }
        validate_path(&path).map_err(bad)?;
        if is_64_hex(name) {
            return Err(bad(
                "cannot specify 64-byte hexadecimal strings as a repository name",
            ));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(bad("repository name must not be more than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.digest
    }

    /// The full repository name (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The repository name as Docker shows it (`busybox`, `me/app`, `ghcr.io/o/n`).
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The whole reference as Docker shows it (`busybox:latest`).
    pub fn familiar(&self) -> String {
        self.with_suffix(self.familiar_name())
    }

    /// A copy with the tag replaced.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        validate_tag(tag).map_err(|reason| Error::InvalidReference {
            input: tag.to_string(),
            reason: reason.to_string(),
        })?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    /// The full normalised form (`docker.io/library/busybox:latest`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.name()))
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

/// Docker's rule: the first component is a registry if it has a '.' or ':', or is `localhost`,
/// or has an upper-case letter; otherwise the name lives on Docker Hub.
fn split_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_NAMESPACE}/{path}")
    } else {
        path
    };
    (domain, path)
}

fn is_64_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    match bytes.first() {
        None => Err("empty tag"),
        Some(&b) if !word(b) => Err("a tag starts with a letter, digit or underscore"),
        _ if bytes.len() > 128 => Err("a tag is at most 128 characters"),
        _ if !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') => {
            Err("a tag holds only letters, digits, '_', '.' and '-'")
        }
        _ => Ok(()),
    }
}

/// `host[:port]`, host being DNS-like components or a bracketed IPv6 address.
fn validate_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("unterminated IPv6 address")?;
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err("invalid IPv6 address in registry");
        }
        match after {
            "" => ("", None),
            p => (
                "",
                Some(p.strip_prefix(':').ok_or("junk after IPv6 address")?),
            ),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a registry port is a number");
        }
    }
    if !domain.starts_with('[') {
        for component in host.split('.') {
            let b = component.as_bytes();
            let alnum = |c: u8| c.is_ascii_alphanumeric();
            let ok = !b.is_empty()
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter().all(|&c| alnum(c) || c == b'-');
            if !ok {
                return Err("invalid registry host name");
            }
        }
    }
    Ok(())
}

/// Components of `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`, separated by '/'.
fn validate_path(path: &str) -> Result<(), &'static str> {
    for component in path.split('/') {
        let b = component.as_bytes();
        if b.is_empty() {
            return Err("empty path component in repository name");
        }
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err("a repository path component starts and ends with a letter or digit");
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err("invalid separator in repository name");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

    #[test]
    fn normalises_like_docker() {
        for (input, full, familiar) in [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            ("me/app:v1", "docker.io/me/app:v1", "me/app:v1"),
            (
                "index.docker.io/library/alpine",
                "docker.io/library/alpine:latest",
                "alpine:latest",
            ),
            (
                "docker.io/library/a/b:x",
                "docker.io/library/a/b:x",
                "library/a/b:x",
            ),
            (
                "localhost:5000/ns/name:tag",
                "localhost:5000/ns/name:tag",
                "localhost:5000/ns/name:tag",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            ("ghcr.io/o/n", "ghcr.io/o/n:latest", "ghcr.io/o/n:latest"),
            ("[::1]:5000/a:b", "[::1]:5000/a:b", "[::1]:5000/a:b"),
            (
                "a__b-c---d/e.f_g:V1.0-x_y",
                "docker.io/a__b-c---d/e.f_g:V1.0-x_y",
                "a__b-c---d/e.f_g:V1.0-x_y",
            ),
        ] {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), familiar, "{input}");
            assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
            assert_eq!(Reference::parse(&r.familiar()).unwrap(), r);
        }
    }

    #[test]
    fn digests_pin_and_suppress_the_default_tag() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = Reference::parse(&format!("busybox:1@{D}")).unwrap();
        assert_eq!(r.familiar(), format!("busybox:1@{D}"));
    }

    #[test]
    fn invalid_references_say_why() {
        for (input, why) in [
            ("", "empty reference"),
            ("Busybox", "must be lowercase"),
            ("busybox:", "empty tag"),
            ("busybox:-x", "a tag starts"),
            ("a//b", "empty path component"),
            ("a/b/", "empty path component"),
            ("-a", "starts and ends"),
            ("a..b", "invalid separator"),
            ("busybox@sha256:abc", "bad digest"),
            ("localhost:xx/a", "port is a number"),
            (
                "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
                "64-byte hexadecimal",
            ),
            ("a:b:c", "invalid separator"),
            ("my_host.-x/a", "invalid registry host"),
        ] {
            let err = Reference::parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input:?}: {err}");
        }
        let long = format!("x/{}", "a".repeat(300));
        assert!(Reference::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("255"));
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
    }

    proptest! {
        #[test]
        fn valid_references_round_trip(
            domain in prop::option::of("[a-z][a-z0-9]{0,8}\\.[a-z]{2,3}(:[0-9]{1,5})?"),
            path in "[a-z0-9]{1,6}([_-][a-z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}([._-][a-z0-9]{1,6})?){0,2}",
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        ) {
            let mut s = String::new();
            if let Some(d) = &domain { s.push_str(d); s.push('/'); }
            s.push_str(&path);
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            let r = Reference::parse(&s).unwrap();
            prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r.clone());
            prop_assert_eq!(Reference::parse(&r.familiar()).unwrap(), r.clone());
            prop_assert_eq!(r.tag(), Some(tag.as_deref().unwrap_or("latest")));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,60}") {
            let _ = Reference::parse(&s);
        }
    }
}
