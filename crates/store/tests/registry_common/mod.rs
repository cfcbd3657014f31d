//! Test harness for registry interop: a real `docker-registry` (distribution) on 127.0.0.1
//! with a free port and storage in a temp dir (optionally with htpasswd basic auth and TLS
//! from a throw-away CA made with `openssl`), killed by PID when dropped (also on panic),
//! and an in-test TCP proxy that injects faults. Shared by the store and CLI test suites.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// User and password of the registry started with `auth`.
pub const USER: &str = "tester";
/// The password.
pub const PASSWORD: &str = "s3cret-pw";

/// How to start the registry.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// htpasswd basic auth.
    pub auth: bool,
    /// TLS with a self-signed CA.
    pub tls: bool,
    /// A raw `auth:` section (e.g. token auth), instead of htpasswd.
    pub auth_yaml: Option<String>,
}

/// A running registry; killed when dropped.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The CA certificate (with `tls`).
    pub ca: Option<PathBuf>,
    /// A `certs.d`-style folder holding `<addr>/ca.crt` (with `tls`).
    pub cert_dir: Option<PathBuf>,
    /// The registry's storage folder.
    pub storage: PathBuf,
    child: Child,
    access_log: PathBuf,
    stderr_log: PathBuf,
    _dir: tempfile::TempDir,
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Registry {
    /// Start one; `None` (saying why) when `docker-registry` or a tool it needs is missing.
    pub fn start(setup: Setup) -> Option<Registry> {
        for tool in ["docker-registry", "openssl", "htpasswd"] {
            if !have(tool) {
                eprintln!("SKIPPED: {tool} is missing (apt-get install docker-registry apache2-utils openssl)");
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut extra = String::new();
        if setup.auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .unwrap();
            assert!(out.status.success());
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out.stdout).unwrap();
            extra.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                path.display()
            ));
        }
        if let Some(yaml) = &setup.auth_yaml {
            extra.push_str(yaml);
        }
        let mut ca = None;
        let mut tls = String::new();
        if setup.tls {
            let d = dir.path();
            run(Command::new("openssl")
                .current_dir(d)
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                ])
                .args([
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=strata test CA",
                ]));
            run(Command::new("openssl")
                .current_dir(d)
                .args([
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "server.key",
                ])
                .args(["-out", "server.csr", "-subj", "/CN=127.0.0.1"]));
            std::fs::write(
                d.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            run(Command::new("openssl")
                .current_dir(d)
                .args([
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                ])
                .args([
                    "-CAcreateserial",
                    "-out",
                    "server.crt",
                    "-days",
                    "2",
                    "-extfile",
                    "ext.cnf",
                ]));
            tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            );
            ca = Some(d.join("ca.crt"));
        }
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{extra}http:\n  addr: {addr}\n{tls}",
                storage.display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let access_log = dir.path().join(format!("access-{port}.log"));
            let stderr_log = dir.path().join(format!("registry-{port}.log"));
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(std::fs::File::create(&access_log).unwrap())
                .stderr(std::fs::File::create(&stderr_log).unwrap())
                .spawn()
                .expect("docker-registry starts");
            let mut reg = Registry {
                addr: addr.clone(),
                ca: ca.clone(),
                cert_dir: None,
                storage: storage.clone(),
                child,
                access_log,
                stderr_log,
                _dir: tempfile::tempdir().unwrap(),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut up = false;
            while Instant::now() < deadline {
                if reg.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if TcpStream::connect(&addr).is_ok() {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                if let Some(ca) = &ca {
                    let cd = dir.path().join("certs.d");
                    std::fs::create_dir_all(cd.join(&addr)).unwrap();
                    std::fs::copy(ca, cd.join(&addr).join("ca.crt")).unwrap();
                    reg.cert_dir = Some(cd);
                }
                reg._dir = dir;
                return Some(reg);
            }
            let log = std::fs::read_to_string(&reg.stderr_log).unwrap_or_default();
            eprintln!("registry on {addr} did not come up, retrying: {log}");
        }
        panic!("docker-registry did not start");
    }

    /// Access-log requests so far, as `METHOD URI STATUS`.
    pub fn requests(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let start = l.find('"')?;
                let rest = &l[start + 1..];
                let end = rest.find('"')?;
                let mut req = rest[..end].split_whitespace();
                let (method, uri) = (req.next()?, req.next()?);
                let status = rest[end + 1..].split_whitespace().next()?;
                Some(format!("{method} {uri} {status}"))
            })
            .collect()
    }

    /// The registry's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How often the proxy misbehaves.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Seed of the deterministic choices.
    pub seed: u64,
    /// About one request in n is answered `500` and its connection closed (0: never).
    pub error_every: u64,
    /// Every n-th connection is cut after a random number of bytes (0: never).
    pub cut_every: u64,
    /// The most bytes a cut connection carries.
    pub cut_within: u64,
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// `500`s answered.
    pub errors: AtomicUsize,
    /// Connections cut.
    pub cuts: AtomicUsize,
}

/// A TCP proxy in front of a registry that answers 500 now and then and cuts connections
/// mid-transfer, deterministically from a seed.
pub struct FaultProxy {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Counters.
    pub stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// What a pump needs to know.
struct Pipe {
    moved: Arc<AtomicU64>,
    budget: Option<u64>,
    cut: Arc<AtomicBool>,
    stats: Arc<ProxyStats>,
    /// For the client-to-registry direction: the fault plan and the proxy's request counter.
    requests: Option<(Faults, Arc<AtomicU64>)>,
}

const METHODS: [&[u8]; 5] = [b"GET ", b"HEAD ", b"PUT ", b"POST ", b"PATCH "];

fn pump(mut from: TcpStream, mut to: TcpStream, pipe: Pipe) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A read that starts with a method is (in practice) the head of a new request on a
        // kept-alive connection: some are answered 500 and the connection is closed.
        if let Some((faults, counter)) = &pipe.requests {
            if faults.error_every > 0 && METHODS.iter().any(|m| buf[..n].starts_with(m)) {
                let k = counter.fetch_add(1, Ordering::Relaxed) + 1;
                if mix(faults.seed.wrapping_mul(31) ^ k) % faults.error_every == 0 {
                    pipe.stats.errors.fetch_add(1, Ordering::Relaxed);
                    answer_500_now(&mut from);
                    break;
                }
            }
        }
        let total = pipe.moved.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if let Some(b) = pipe.budget {
            if total > b {
                // Forward part of it, then cut both ways.
                let keep = n.saturating_sub((total - b) as usize);
                let _ = to.write_all(&buf[..keep]);
                if !pipe.cut.swap(true, Ordering::Relaxed) {
                    pipe.stats.cuts.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn answer_500_now(client: &mut TcpStream) {
    let body = br#"{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}"#;
    let _ = write!(
        client,
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = client.write_all(body);
}

impl FaultProxy {
    /// Listen on a free port and forward to `upstream`.
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_string();
        let (s, st) = (stats.clone(), stop.clone());
        let requests = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let n = n as u64 + 1;
                s.connections.fetch_add(1, Ordering::Relaxed);
                let roll = mix(faults.seed ^ n);
                let budget = (faults.cut_every > 0 && (roll >> 16) % faults.cut_every == 0)
                    .then(|| 1 + (roll >> 32) % faults.cut_within.max(1));
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let moved = Arc::new(AtomicU64::new(0));
                let cut = Arc::new(AtomicBool::new(false));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = Pipe {
                    moved: moved.clone(),
                    budget,
                    cut: cut.clone(),
                    stats: s.clone(),
                    requests: Some((faults, requests.clone())),
                };
                let down = Pipe {
                    moved,
                    budget,
                    cut,
                    stats: s.clone(),
                    requests: None,
                };
                std::thread::spawn(move || pump(client, server, up));
                std::thread::spawn(move || pump(s2, c2, down));
            }
        });
        FaultProxy {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A deterministic pseudo-random layer tar of about `size` bytes: half random (incompressible),
/// half text, so compression does real work.
pub fn layer_tar(seed: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut x = mix(seed) | 1;
    let half = size / 2;
    for chunk in data[..half].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    for (i, b) in data[half..].iter_mut().enumerate() {
        *b = b"the quick brown fox jumps over the lazy dog\n"[(i + seed as usize) % 44];
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    tar.append_data(&mut h, format!("data/layer-{seed}"), &data[..])
        .unwrap();
    tar.into_inner().unwrap()
}

/// The registry's own file path for a blob (to delete it behind its back).
pub fn storage_blob(storage: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// A token server for distribution's `auth: token` (the bearer flow Docker Hub uses): checks
/// basic credentials, and answers RS256 JWTs signed with a throw-away CA key (`openssl`),
/// carrying the certificate in `x5c` and granting every requested scope.
pub struct TokenServer {
    /// `http://127.0.0.1:<port>/token`.
    pub realm: String,
    /// Tokens issued, with the scopes asked for.
    pub issued: Arc<std::sync::Mutex<Vec<String>>>,
    /// Requests refused for bad credentials.
    pub refused: Arc<AtomicUsize>,
    /// The `auth:` section for the registry's config.
    pub yaml: String,
    _dir: tempfile::TempDir,
}

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64std(data: &[u8]) -> String {
    let mut s = b64url(data).replace('-', "+").replace('_', "/");
    while s.len() % 4 != 0 {
        s.push('=');
    }
    s
}

fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap_or(b'?'));
                    i += 3;
                } else {
                    out.push(if b[i] == b'+' { b' ' } else { b[i] });
                    i += 1;
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect()
}

impl TokenServer {
    /// Start one that accepts `USER`/`PASSWORD` (and anonymous requests, granting them pull).
    pub fn start() -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        run(Command::new("openssl")
            .current_dir(&d)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "sign.key",
            ])
            .args([
                "-out",
                "sign.crt",
                "-days",
                "2",
                "-subj",
                "/CN=strata token issuer",
            ]));
        run(Command::new("openssl").current_dir(&d).args([
            "x509", "-in", "sign.crt", "-outform", "der", "-out", "sign.der",
        ]));
        let der = std::fs::read(d.join("sign.der")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let yaml = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: strata-test\n    issuer: strata-test-issuer\n    rootcertbundle: {}\n",
            d.join("sign.crt").display()
        );
        let issued = Arc::new(std::sync::Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (iss, refd, key) = (issued.clone(), refused.clone(), d.join("sign.key"));
        let basic = format!("Basic {}", b64std(format!("{USER}:{PASSWORD}").as_bytes()));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let auth = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                    })
                    .map(str::trim);
                if auth.is_some() && auth != Some(basic.as_str()) {
                    refd.fetch_add(1, Ordering::Relaxed);
                    let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let scopes = query_values(query, "scope");
                let access: Vec<serde_json::Value> = scopes
                    .iter()
                    .filter_map(|s| {
                        let mut parts = s.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        let actions: Vec<&str> = actions
                            .split(',')
                            .filter(|a| auth.is_some() || *a == "pull")
                            .collect();
                        Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header =
                    serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [b64std(&der)]});
                let claims = serde_json::json!({
                    "iss": "strata-test-issuer", "sub": if auth.is_some() { USER } else { "" },
                    "aud": "strata-test", "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("t{now}-{}", iss.lock().unwrap().len()), "access": access,
                });
                let input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut sign = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                sign.stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                let sig = sign.wait_with_output().unwrap().stdout;
                let token = format!("{input}.{}", b64url(&sig));
                iss.lock().unwrap().push(scopes.join(" "));
                let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            realm,
            issued,
            refused,
            yaml,
            _dir: dir,
        }
    }
}
