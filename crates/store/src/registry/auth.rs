//! Registry authentication, the pure parts: `WWW-Authenticate` challenges, token requests and
//! responses, scopes.
//!
//! The flow (distribution's token spec): a request answered 401 carries a challenge. `Basic`
//! means "send the user's credentials with every request". `Bearer realm=..,service=..,scope=..`
//! means "ask the realm for a token for this service and these scopes (with the user's
//! credentials, if any; anonymously otherwise), then send `Authorization: Bearer <token>`".
//! Tokens are cached per set of scopes until shortly before they expire.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// How a registry wants to be authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=...`: credentials with every request.
    Basic,
    /// `Bearer realm=...,service=...`: tokens from `realm`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to pass back.
        service: Option<String>,
        /// The scope the registry asked for, when it named one.
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` header; the first `Bearer` or `Basic` challenge wins.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut rest = header.trim();
    while !rest.is_empty() {
        let (scheme, after) = match rest.find(|c: char| c.is_ascii_whitespace()) {
            Some(i) => (&rest[..i], rest[i..].trim_start()),
            None => (rest, ""),
        };
        let (params, next) = parse_params(after);
        let get = |k: &str| {
            params
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            if let Some(realm) = get("realm").filter(|r| !r.is_empty()) {
                return Some(Challenge::Bearer {
                    realm,
                    service: get("service"),
                    scope: get("scope"),
                });
            }
        }
        rest = next.trim_start_matches([',', ' ', '\t']);
    }
    None
}

/// Parse `k=v, k="quoted \" v"` pairs up to the start of the next challenge; returns the
/// pairs and what follows.
fn parse_params(input: &str) -> (Vec<(String, String)>, &str) {
    let mut out = Vec::new();
    let mut rest = input;
    loop {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let Some(eq) = rest.find('=') else {
            return (out, rest);
        };
        let name = &rest[..eq];
        // A name with a space in it is the next challenge's scheme ("Basic realm=...").
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace() || c == ',') {
            return (out, rest);
        }
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((name.to_string(), value));
        rest = tail;
    }
}

/// The scope for pulling from, or pushing to, a repository.
pub(crate) fn repository_scope(path: &str, push: bool) -> String {
    if push {
        format!("repository:{path}:pull,push")
    } else {
        format!("repository:{path}:pull")
    }
}

/// A token endpoint's answer (`token`, or OAuth2's `access_token`).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A bearer token and when to stop using it.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

impl TokenResponse {
    /// The token, valid until a little before it expires (60 s when the answer says nothing,
    /// as the spec defaults).
    pub fn into_token(self, now: Instant) -> Option<Token> {
        let value = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = self.expires_in.unwrap_or(60).clamp(10, 24 * 3600);
        Some(Token {
            value,
            expires: now + Duration::from_secs(lifetime - lifetime / 10),
        })
    }
}

/// The query string of a token request (`service`, each `scope`, and `account` when logged in).
pub(crate) fn token_query(
    service: Option<&str>,
    scopes: &[String],
    account: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(s) = service {
        q.push(("service", s.to_string()));
    }
    for s in scopes {
        q.push(("scope", s.clone()));
    }
    if let Some(a) = account {
        q.push(("account", a.to_string()));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
        let h = r#"bearer realm="http://127.0.0.1:1/t\"x", error="insufficient_scope""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t\"x".into(),
                service: None,
                scope: None,
            })
        );
        // Unquoted values and a second challenge after the first.
        let h = "Foo a=b, Bearer realm=https://r/t,service=s";
        assert!(
            matches!(parse_challenge(h), Some(Challenge::Bearer { service: Some(s), .. }) if s == "s")
        );
    }

    #[test]
    fn parses_basic_and_refuses_junk() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            parse_challenge("Bearer realm=\"unterminated"),
            Some(Challenge::Bearer {
                realm: "unterminated".into(),
                service: None,
                scope: None,
            })
        );
    }

    #[test]
    fn tokens_expire_early() {
        let now = Instant::now();
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).unwrap();
        let t = t.into_token(now).unwrap();
        assert_eq!(t.value, "a");
        assert_eq!(t.expires, now + Duration::from_secs(270));
        let t: TokenResponse = serde_json::from_str(r#"{"token":"b"}"#).unwrap();
        assert_eq!(
            t.into_token(now).unwrap().expires,
            now + Duration::from_secs(54)
        );
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(t.into_token(now).is_none());
    }

    #[test]
    fn token_queries_carry_every_scope() {
        let q = token_query(
            Some("svc"),
            &[repository_scope("a/b", true), repository_scope("c", false)],
            Some("me"),
        );
        assert_eq!(
            q,
            vec![
                ("service", "svc".to_string()),
                ("scope", "repository:a/b:pull,push".to_string()),
                ("scope", "repository:c:pull".to_string()),
                ("account", "me".to_string()),
            ]
        );
    }
}
