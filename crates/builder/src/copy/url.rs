//! `ADD <http(s) URL>`: naming, downloading, `--checksum`.
//!
//! The file is downloaded during [`super::prepare`] into a temporary folder the plan owns,
//! hashed while it is written (its sha256 is what `--checksum` is checked against and its
//! content what enters the cache key), and gets mode 0600 and, when the server sends
//! `Last-Modified`, that time as its mtime (BuildKit's HTTP source). Its name under a
//! directory destination is the last segment of the URL path, percent-decoded, or
//! `__unnamed__` when the path has none (the Dockerfile frontend's rule; the
//! `Content-Disposition` header is not consulted). Proxies come from the usual
//! `HTTP(S)_PROXY`/`NO_PROXY` variables.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::Error;

/// The name BuildKit gives a download whose URL path has no last segment.
pub(crate) const UNNAMED: &str = "__unnamed__";

/// The file name of a URL: the last segment of its path (`path.Base` of the decoded
/// path), or [`UNNAMED`].
pub(crate) fn url_file_name(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = after_scheme.find(['?', '#']).unwrap_or(after_scheme.len());
    let without_query = &after_scheme[..end];
    let path = without_query.find('/').map_or("", |i| &without_query[i..]);
    let decoded = percent_decode(path);
    let trimmed = decoded.trim_end_matches('/');
    let base = trimmed.rsplit('/').next().unwrap_or("");
    if base.is_empty() || base == "." || base == ".." {
        UNNAMED.to_string()
    } else {
        base.to_string()
    }
}

/// `%XX` escapes decoded (invalid ones kept as written), lossily as UTF-8.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `--checksum` value: `sha256:` and 64 hex digits (the only form BuildKit accepts for
/// HTTP sources). Returned as `sha256:<lower-case hex>`.
pub(crate) fn parse_checksum(value: &str) -> Result<String, Error> {
    let bad = |reason| Error::InvalidChecksum {
        value: value.to_string(),
        reason,
    };
    let Some((algo, hex)) = value.split_once(':') else {
        return Err(bad("expected sha256:<64 hex digits>"));
    };
    if algo != "sha256" {
        return Err(bad("only sha256 checksums are supported for URLs"));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("a sha256 checksum has 64 hex digits"));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Downloads `url` into the new file `dir/file` (mode 0600, mtime from `Last-Modified`),
/// verifying `checksum` (as returned by [`parse_checksum`]) when given.
pub(crate) fn download(
    url: &str,
    dir: &Path,
    file: &str,
    checksum: Option<&str>,
) -> Result<(), Error> {
    let fail = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        // A stalled transfer fails instead of hanging the build; a slow one goes on.
        .timeout_per_read(Some(Duration::from_secs(120)))
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("the server answered {status}")));
    }
    let modified = response
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let mut body = response.into_body().into_reader();
    let path = dir.join(file);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e.to_string())),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write", &path, e))?;
    }
    // The umask may have narrowed the mode; BuildKit's downloads are exactly 0600.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| Error::io("chmod", &path, e))?;
    if let Some(time) = modified {
        out.set_modified(time)
            .map_err(|e| Error::io("set times", &path, e))?;
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(expected) = checksum {
        if expected != digest {
            return Err(Error::ChecksumMismatch {
                url: url.to_string(),
                expected: expected.to_string(),
                actual: digest,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url_path() {
        assert_eq!(
            url_file_name("https://example.com/a/b/file.tar.gz"),
            "file.tar.gz"
        );
        assert_eq!(url_file_name("https://example.com/a/dir/"), "dir");
        assert_eq!(url_file_name("https://example.com/x?y=/z#frag"), "x");
        assert_eq!(url_file_name("https://example.com/my%20file"), "my file");
        assert_eq!(url_file_name("https://example.com"), UNNAMED);
        assert_eq!(url_file_name("https://example.com/"), UNNAMED);
        assert_eq!(url_file_name("https://example.com/?q=1"), UNNAMED);
        assert_eq!(url_file_name("http://h:8080/%zz"), "%zz");
    }

    #[test]
    fn checksums_are_sha256_only() {
        let hex = "A".repeat(64);
        assert_eq!(
            parse_checksum(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{}", "a".repeat(64))
        );
        for bad in [
            "",
            "sha256",
            "sha256:abc",
            "md5:00",
            &format!("sha512:{hex}"),
        ] {
            assert!(
                matches!(parse_checksum(bad), Err(Error::InvalidChecksum { .. })),
                "{bad}"
            );
        }
    }
}
