//! One registry host: its HTTP agent (TLS settings), its scheme (found by a `GET /v2/` ping),
//! its authentication state, and requests with authentication and retries.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::{self, Method, Response};
use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
use ureq::Body;

use super::auth::{parse_challenge, token_query, Challenge, Token, TokenResponse};
use super::credentials::Credentials;
use super::{ClientOptions, Event, Reporter};
use crate::error::{Error, Result};
use crate::reference::DEFAULT_DOMAIN;

/// Largest error or token response body read.
const MAX_SMALL_BODY: u64 = 1 << 20;
/// Where Debian (and most distributions) keep the system's CA bundle.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Whether a registry host is insecure by default or by setting: 127.0.0.0/8, `::1` and
/// `localhost` always (as Docker), plus every `insecure` entry (a host, `host:port`, or an
/// IPv4 CIDR such as `10.0.0.0/8`).
pub(crate) fn is_insecure(registry: &str, insecure: &[String]) -> bool {
    let host = host_part(registry);
    if host == "localhost" || host == "::1" {
        return true;
    }
    let ip: Option<std::net::Ipv4Addr> = host.parse().ok();
    if ip.is_some_and(|ip| ip.octets()[0] == 127) {
        return true;
    }
    insecure.iter().any(|entry| {
        let entry = entry.trim();
        if entry.eq_ignore_ascii_case(registry) || entry.eq_ignore_ascii_case(host) {
            return true;
        }
        match (entry.split_once('/'), ip) {
            (Some((net, bits)), Some(ip)) => {
                let (Ok(net), Ok(bits)) = (net.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>())
                else {
                    return false;
                };
                if bits > 32 {
                    return false;
                }
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(ip) & mask == u32::from(net) & mask
            }
            _ => false,
        }
    })
}

/// The host of `host[:port]` (brackets of an IPv6 literal removed).
fn host_part(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    }
}

/// The host that serves a registry's API (Docker Hub's differs from its name).
fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_DOMAIN {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// A request body that can be sent again (on retry or after a 401).
#[derive(Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// No body.
    None,
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A region of a file, read with `pread` so one file serves parallel requests.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
        /// Called with the bytes of this region sent so far.
        progress: Option<&'a (dyn Fn(u64) + Sync)>,
    },
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::None => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }
}

struct RegionReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    start: u64,
    progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl Read for RegionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the blob file is shorter than its size",
            ));
        }
        self.pos += n as u64;
        if let Some(p) = self.progress {
            p(self.pos - self.start);
        }
        Ok(n)
    }
}

/// One HTTP request of an operation.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Payload<'a>,
    /// Safe to send again after a transport error or a 5xx (the request is idempotent, or a
    /// repeat is harmless).
    pub retry: bool,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, url: String) -> Call<'a> {
        Call {
            method,
            url,
            headers: Vec::new(),
            payload: Payload::None,
            retry: true,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn payload(mut self, payload: Payload<'a>) -> Self {
        self.payload = payload;
        self
    }

    pub fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }
}

#[derive(Default)]
struct AuthState {
    /// Set once the registry was pinged: `Some(None)` = no authentication needed.
    challenge: Option<Option<Challenge>>,
    tokens: HashMap<String, Token>,
}

/// One registry host.
pub(crate) struct Remote {
    /// The registry as references name it (`docker.io`, `127.0.0.1:5000`).
    pub name: String,
    api_host: String,
    agent: ureq::Agent,
    insecure: bool,
    base: Mutex<Option<String>>,
    auth: Mutex<AuthState>,
    credentials: Option<Credentials>,
    pub options: Arc<ClientOptions>,
}

/// Read every certificate of a PEM file.
fn read_certs(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => out.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::Registry {
                    registry: String::new(),
                    repository: String::new(),
                    action: format!("read certificates from {}", path.display()),
                    status: None,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// CA certificates and a client certificate for `registry` from Docker's `certs.d` layout:
/// `<dir>/<host[:port]>/*.crt` are CAs, `*.cert` + the matching `*.key` a client certificate.
/// CA files, and a client certificate with its key.
type CertFiles = (Vec<PathBuf>, Option<(PathBuf, PathBuf)>);

fn cert_dir_files(dirs: &[PathBuf], registry: &str) -> Result<CertFiles> {
    let mut cas = Vec::new();
    let mut client = None;
    for dir in dirs {
        let dir = dir.join(registry);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            match path.extension().and_then(|e| e.to_str()) {
                Some("crt") => cas.push(path),
                Some("cert") => {
                    let key = path.with_extension("key");
                    if key.is_file() && client.is_none() {
                        client = Some((path, key));
                    }
                }
                _ => {}
            }
        }
    }
    Ok((cas, client))
}

impl Remote {
    pub fn new(
        name: &str,
        options: Arc<ClientOptions>,
        credentials: Option<Credentials>,
    ) -> Result<Remote> {
        let insecure = match options.tls_verify {
            Some(verify) => !verify,
            None => is_insecure(name, &options.insecure_registries),
        };
        let (dir_cas, client_cert) = cert_dir_files(&options.cert_dirs, name)?;
        let mut extra = Vec::new();
        for path in options.ca_files.iter().chain(&dir_cas) {
            extra.extend(read_certs(path)?);
        }
        let mut tls = TlsConfig::builder().disable_verification(insecure);
        if !extra.is_empty() {
            // Specific roots replace the built-in ones: keep the system's next to ours.
            let mut roots = read_certs(Path::new(SYSTEM_CA_BUNDLE)).unwrap_or_default();
            roots.extend(extra);
            tls = tls.root_certs(RootCerts::new_with_certs(&roots));
        }
        if let Some((cert, key)) = client_cert {
            let chain = read_certs(&cert)?;
            let pem = std::fs::read(&key).map_err(|e| Error::io("read", &key, e))?;
            let key = ureq::tls::PrivateKey::from_pem(&pem).map_err(|e| Error::Registry {
                registry: name.to_string(),
                repository: String::new(),
                action: format!("read the client key {}", key.display()),
                status: None,
                reason: e.to_string(),
            })?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .user_agent(options.user_agent.as_str())
            .accept_encoding(ureq::config::AutoHeaderValue::None)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_per_read(Some(options.read_timeout))
            .timeout_per_write(Some(options.read_timeout))
            .max_idle_connections_per_host(options.max_concurrent.max(1) * 2)
            .build();
        Ok(Remote {
            name: name.to_string(),
            api_host: api_host(name).to_string(),
            agent: ureq::Agent::new_with_config(config),
            insecure,
            base: Mutex::new(None),
            auth: Mutex::new(AuthState::default()),
            credentials,
            options,
        })
    }

    fn error(&self, repository: &str, action: &str, status: Option<u16>, reason: String) -> Error {
        Error::Registry {
            registry: self.name.clone(),
            repository: repository.to_string(),
            action: action.to_string(),
            status,
            reason,
        }
    }

    /// One attempt, no retries, no authentication handling.
    fn run(
        &self,
        call: &Call<'_>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>, ureq::Error> {
        let mut b = http::Request::builder()
            .method(call.method.clone())
            .uri(call.url.as_str());
        for (k, v) in &call.headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        let has_body = matches!(call.method, Method::POST | Method::PUT | Method::PATCH);
        if has_body {
            b = b.header("content-length", call.payload.len().to_string());
        }
        match call.payload {
            Payload::None => self.agent.run(b.body(ureq::SendBody::none())?),
            Payload::Bytes(bytes) => self.agent.run(b.body(bytes)?),
            Payload::File {
                file,
                offset,
                len,
                progress,
            } => {
                let mut reader = RegionReader {
                    file,
                    pos: offset,
                    start: offset,
                    end: offset + len,
                    progress,
                };
                self.agent
                    .run(b.body(ureq::SendBody::from_reader(&mut reader))?)
            }
        }
    }

    /// The `scheme://host` of the registry, pinging `/v2/` the first time: https first, and
    /// for an insecure registry plain http when https fails (Docker's order).
    pub fn base(&self, op: &Op<'_>) -> Result<String> {
        if let Some(b) = self.base.lock().map_err(|_| poisoned())?.clone() {
            return Ok(b);
        }
        let schemes: &[&str] = if self.insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{}", self.api_host);
            let call = Call::new(Method::GET, format!("{base}/v2/"));
            let last_scheme = i + 1 == schemes.len();
            let result = if last_scheme {
                op.retrying("ping the registry", |_| self.run(&call, None))
            } else {
                // A TLS failure against a plain-http registry is not worth retrying.
                self.run(&call, None).map_err(|e| (e, false))
            };
            match result {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let challenge = match status {
                        200..=299 => None,
                        401 => {
                            let header = header(&resp, "www-authenticate").unwrap_or_default();
                            Some(parse_challenge(&header).ok_or_else(|| {
                                self.error(
                                    "",
                                    "ping the registry",
                                    Some(401),
                                    format!("unsupported authentication challenge {header:?}"),
                                )
                            })?)
                        }
                        _ => {
                            let reason = describe_status(status, &mut resp);
                            return Err(self.error(
                                "",
                                &format!("GET {base}/v2/"),
                                Some(status),
                                format!("not an OCI registry API v2 endpoint: {reason}"),
                            ));
                        }
                    };
                    drain(resp);
                    self.auth.lock().map_err(|_| poisoned())?.challenge = Some(challenge);
                    *self.base.lock().map_err(|_| poisoned())? = Some(base.clone());
                    return Ok(base);
                }
                Err((e, _)) => last = Some(format!("{base}: {e}")),
            }
        }
        Err(self.error(
            "",
            "reach the registry",
            None,
            last.unwrap_or_else(|| "no scheme to try".into()),
        ))
    }

    /// The `Authorization` header for requests needing `scopes` (fetching a token if needed).
    fn authorization(&self, op: &Op<'_>, scopes: &[String]) -> Result<Option<String>> {
        let mut state = self.auth.lock().map_err(|_| poisoned())?;
        let challenge = match &state.challenge {
            Some(Some(c)) => c.clone(),
            _ => return Ok(None),
        };
        match challenge {
            Challenge::Basic => Ok(self.credentials.as_ref().map(Credentials::basic_header)),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut scopes = scopes.to_vec();
                if scopes.is_empty() {
                    scopes.extend(scope);
                }
                scopes.sort();
                scopes.dedup();
                let key = scopes.join(" ");
                if let Some(t) = state.tokens.get(&key) {
                    if t.expires > Instant::now() {
                        return Ok(Some(format!("Bearer {}", t.value)));
                    }
                }
                // Held across the fetch: parallel transfers wait for one token, not fetch many.
                let token = self.fetch_token(op, &realm, service.as_deref(), &scopes)?;
                let header = format!("Bearer {}", token.value);
                state.tokens.insert(key, token);
                Ok(Some(header))
            }
        }
    }

    fn fetch_token(
        &self,
        op: &Op<'_>,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token> {
        let account = self.credentials.as_ref().map(|c| c.username.as_str());
        let mut url = realm.to_string();
        for (i, (k, v)) in token_query(service, scopes, account).iter().enumerate() {
            url.push(if i == 0 && !realm.contains('?') {
                '?'
            } else {
                '&'
            });
            url.push_str(k);
            url.push('=');
            url.push_str(&percent_encode(v));
        }
        let call = Call::new(Method::GET, url);
        let auth = self.credentials.as_ref().map(Credentials::basic_header);
        let action = format!("get a token from {realm}");
        let mut resp = op
            .retrying(&action, |_| self.run(&call, auth.as_deref()))
            .map_err(|(e, _)| self.error(&op.repository, &action, None, e.to_string()))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            let who = account.map_or("anonymous access".to_string(), |a| format!("user {a:?}"));
            let reason = describe_status(status, &mut resp);
            return Err(self.error(
                &op.repository,
                &action,
                Some(status),
                format!("authentication failed for {who}: {reason}"),
            ));
        }
        if !(200..300).contains(&status) {
            let reason = describe_status(status, &mut resp);
            return Err(self.error(&op.repository, &action, Some(status), reason));
        }
        let body = read_small(resp)
            .map_err(|e| self.error(&op.repository, &action, Some(status), e.to_string()))?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            self.error(
                &op.repository,
                &action,
                Some(status),
                format!("invalid token response: {e}"),
            )
        })?;
        parsed.into_token(Instant::now()).ok_or_else(|| {
            self.error(
                &op.repository,
                &action,
                Some(status),
                "the token response holds no token".into(),
            )
        })
    }

    /// After a 401: take the new challenge and drop the cached token for these scopes.
    fn reauthenticate(&self, resp: &Response<Body>, scopes: &[String]) -> Result<()> {
        let mut state = self.auth.lock().map_err(|_| poisoned())?;
        if let Some(c) = header(resp, "www-authenticate").and_then(|h| parse_challenge(&h)) {
            state.challenge = Some(Some(c));
        }
        let mut key: Vec<String> = scopes.to_vec();
        key.sort();
        key.dedup();
        state.tokens.remove(&key.join(" "));
        Ok(())
    }

    /// Check that `credentials` are accepted: ping, then authenticate (a token, or `/v2/`
    /// with basic credentials). A registry that needs no authentication accepts anything.
    pub fn check_login(&self, op: &Op<'_>) -> Result<()> {
        let base = self.base(op)?;
        let state = self.auth.lock().map_err(|_| poisoned())?.challenge.clone();
        match state {
            Some(Some(Challenge::Bearer { .. })) => {
                self.authorization(op, &[])?;
                Ok(())
            }
            Some(Some(Challenge::Basic)) => {
                let call = Call::new(Method::GET, format!("{base}/v2/"));
                let mut resp = op.send("log in", &call)?;
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    drain(resp);
                    return Ok(());
                }
                let reason = describe_status(status, &mut resp);
                Err(self.error("", "log in", Some(status), reason))
            }
            _ => Ok(()),
        }
    }
}

fn poisoned() -> Error {
    Error::Registry {
        registry: String::new(),
        repository: String::new(),
        action: "share the registry connection".into(),
        status: None,
        reason: "another transfer thread panicked".into(),
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters stay).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response header as text.
pub(crate) fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Read a small body (error documents, tokens, manifests are read with their own cap).
pub(crate) fn read_small(resp: Response<Body>) -> Result<Vec<u8>, ureq::Error> {
    resp.into_body()
        .into_with_config()
        .limit(MAX_SMALL_BODY)
        .read_to_vec()
}

/// Read and drop a body so the connection can be reused.
pub(crate) fn drain(resp: Response<Body>) {
    let _ = read_small(resp);
}

/// A status line plus the registry's error codes and messages, e.g.
/// `404 Not Found: MANIFEST_UNKNOWN: manifest unknown`.
pub(crate) fn describe_status(status: u16, resp: &mut Response<Body>) -> String {
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_SMALL_BODY)
        .read_to_vec()
        .unwrap_or_default();
    let mut text = match status {
        401 => "authentication required (401 Unauthorized)".to_string(),
        403 => "access denied (403 Forbidden)".to_string(),
        404 => "not found (404)".to_string(),
        s => format!(
            "{s} {}",
            http::StatusCode::from_u16(s)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("")
        )
        .trim_end()
        .to_string(),
    };
    let details = registry_errors(&body);
    if !details.is_empty() {
        text.push_str(": ");
        text.push_str(&details);
    }
    text
}

/// `CODE: message` of each entry of a registry error document (`{"errors":[...]}`).
fn registry_errors(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let Some(errors) = v.get("errors").and_then(|e| e.as_array()) else {
        return String::new();
    };
    errors
        .iter()
        .take(5)
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            let s: String = match (code.is_empty(), msg.is_empty()) {
                (false, false) => format!("{code}: {msg}"),
                (false, true) => code.to_string(),
                _ => msg.to_string(),
            };
            s.chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether a transport error is worth another try.
pub(crate) fn retryable(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled => true,
        // A truncated body surfaces as an I/O error wrapped by the body reader.
        ureq::Error::Other(_) => true,
        _ => false,
    }
}

/// Whether an HTTP status is worth another try.
pub(crate) fn retryable_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// The context of one operation (a pull or push of one repository): which registry and
/// repository, the scopes its token needs, where events go, and a flag that stops it.
pub(crate) struct Op<'a> {
    pub remote: &'a Remote,
    pub repository: String,
    pub scopes: Vec<String>,
    pub reporter: &'a dyn Reporter,
    pub cancel: &'a AtomicBool,
}

impl Op<'_> {
    /// A registry error about this operation.
    pub fn error(&self, action: &str, status: Option<u16>, reason: impl Into<String>) -> Error {
        self.remote
            .error(&self.repository, action, status, reason.into())
    }

    /// The error for an unexpected answer.
    pub fn status_error(&self, action: &str, mut resp: Response<Body>) -> Error {
        let status = resp.status().as_u16();
        let reason = describe_status(status, &mut resp);
        self.error(action, Some(status), reason)
    }

    /// `<base>/v2/<repository>/<rest>`.
    pub fn url(&self, rest: &str) -> Result<String> {
        Ok(format!(
            "{}/v2/{}/{rest}",
            self.remote.base(self)?,
            self.repository
        ))
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Sleep before retry `attempt` (1-based), reporting it.
    pub fn backoff(&self, what: &str, attempt: u32, reason: &str) {
        let opts = &self.remote.options;
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        let delay = opts
            .retry_delay
            .saturating_mul(factor)
            .min(opts.max_retry_delay);
        self.reporter.report(Event::Retrying {
            what: format!("{}/{}: {what}", self.remote.name, self.repository),
            attempt,
            delay,
            reason: reason.chars().take(300).collect(),
        });
        std::thread::sleep(delay);
    }

    pub fn attempts(&self) -> u32 {
        self.remote.options.retries + 1
    }

    /// Run `f` until it gives a response that is not a retryable failure or the attempts are
    /// spent. Errors come back with whether they were retryable.
    fn retrying(
        &self,
        what: &str,
        mut f: impl FnMut(u32) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>, (ureq::Error, bool)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f(attempt) {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if retryable_status(status) && attempt < self.attempts() && !self.cancelled() {
                        drain(resp);
                        self.backoff(what, attempt, &format!("the registry answered {status}"));
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    let again = retryable(&e);
                    if again && attempt < self.attempts() && !self.cancelled() {
                        self.backoff(what, attempt, &e.to_string());
                        continue;
                    }
                    return Err((e, again));
                }
            }
        }
    }

    /// Send a request with this operation's authorization; a 401 is answered once by
    /// re-authenticating; transport errors and 5xx are retried with backoff when the call
    /// allows it. Any other status is returned for the caller to judge.
    pub fn send(&self, action: &str, call: &Call<'_>) -> Result<Response<Body>> {
        let mut reauthenticated = false;
        loop {
            let auth = self.remote.authorization(self, &self.scopes)?;
            let result = if call.retry {
                self.retrying(action, |_| self.remote.run(call, auth.as_deref()))
            } else {
                self.remote.run(call, auth.as_deref()).map_err(|e| {
                    let r = retryable(&e);
                    (e, r)
                })
            };
            let resp = result.map_err(|(e, _)| self.error(action, None, e.to_string()))?;
            if resp.status().as_u16() == 401 && !reauthenticated {
                reauthenticated = true;
                self.remote.reauthenticate(&resp, &self.scopes)?;
                let known = self
                    .remote
                    .auth
                    .lock()
                    .map_err(|_| poisoned())?
                    .challenge
                    .clone();
                if matches!(known, Some(Some(_))) {
                    drain(resp);
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Like [`Op::send`], but a transport failure comes back as the raw transport error (so
    /// the caller can resume an upload or a download).
    pub fn send_once(
        &self,
        action: &str,
        call: &Call<'_>,
    ) -> Result<Result<Response<Body>, ureq::Error>> {
        let mut reauthenticated = false;
        loop {
            let auth = self.remote.authorization(self, &self.scopes)?;
            match self.remote.run(call, auth.as_deref()) {
                Err(e) => return Ok(Err(e)),
                Ok(resp) => {
                    if resp.status().as_u16() == 401 && !reauthenticated {
                        reauthenticated = true;
                        self.remote.reauthenticate(&resp, &self.scopes)?;
                        drain(resp);
                        continue;
                    }
                    let _ = action;
                    return Ok(Ok(resp));
                }
            }
        }
    }
}

/// Join a `Location` header to the registry base, and add query parameters.
pub(crate) fn join_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

/// `url` with `params` appended to its query string.
pub(crate) fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let mut out = url.to_string();
    for (k, v) in params {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(k);
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// How long to wait between attempts (exposed for options' defaults).
pub(crate) const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_insecure_by_default() {
        for r in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_insecure(r, &[]), "{r}");
        }
        for r in [
            "docker.io",
            "10.1.2.3:5000",
            "128.0.0.1",
            "localhost.example",
        ] {
            assert!(!is_insecure(r, &[]), "{r}");
        }
        let list = [
            "10.0.0.0/8".to_string(),
            "reg.example:5000".to_string(),
            "other.example".to_string(),
        ];
        assert!(is_insecure("10.1.2.3:5000", &list));
        assert!(!is_insecure("11.1.2.3:5000", &list));
        assert!(is_insecure("reg.example:5000", &list));
        assert!(!is_insecure("reg.example", &list));
        assert!(is_insecure("other.example:443", &list));
        assert!(!is_insecure("10.1.2.3", &["10.0.0.0/33".to_string()]));
    }

    #[test]
    fn locations_and_queries() {
        let base = "http://127.0.0.1:5000";
        assert_eq!(
            join_location(base, "/v2/a/blobs/uploads/u?_state=x"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(
            join_location(base, "https://s3.example/up?sig=1"),
            "https://s3.example/up?sig=1"
        );
        assert_eq!(
            with_query(
                "http://h/v2/a/blobs/uploads/u?_state=x",
                &[("digest", "sha256:ab")]
            ),
            "http://h/v2/a/blobs/uploads/u?_state=x&digest=sha256%3Aab"
        );
        assert_eq!(
            with_query("http://h/up", &[("mount", "sha256:ab"), ("from", "a/b")]),
            "http://h/up?mount=sha256%3Aab&from=a%2Fb"
        );
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(host_part("[::1]:5000"), "::1");
        assert_eq!(host_part("h:5000"), "h");
    }

    #[test]
    fn error_documents_are_summarised() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"DENIED"}]}"#;
        assert_eq!(
            registry_errors(body),
            "MANIFEST_UNKNOWN: manifest unknown; DENIED"
        );
        assert_eq!(registry_errors(b"<html>"), "");
    }

    #[test]
    fn file_regions_are_read_with_progress() {
        let mut tmp = tempfile::tempfile().unwrap();
        io::Write::write_all(&mut tmp, b"0123456789").unwrap();
        let seen = Mutex::new(Vec::new());
        let progress = |n: u64| seen.lock().unwrap().push(n);
        let mut r = RegionReader {
            file: &tmp,
            pos: 3,
            start: 3,
            end: 8,
            progress: Some(&progress),
        };
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "34567");
        assert_eq!(seen.lock().unwrap().last(), Some(&5));
        let mut short = RegionReader {
            file: &tmp,
            pos: 8,
            start: 8,
            end: 20,
            progress: None,
        };
        let mut buf = Vec::new();
        assert!(short.read_to_end(&mut buf).is_err());
    }
}
