//! What tests/registry.rs puts around runlet: Debian's `docker-registry` started per test
//! (plain HTTP, or TLS with a CA made by `openssl`, htpasswd basic auth or token auth), a
//! bearer-token server, a CONNECT proxy and a throttling TCP relay that count what passes,
//! and OCI layouts of random layers (content no other test has stored).
// These helpers wait on separate processes by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::common::free_port;

/// A `docker-registry` on 127.0.0.1, removed (process and storage) when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a plain-HTTP registry; `extra` is appended to its YAML config.
    pub fn start(extra: &str) -> Registry {
        Registry::start_with("", extra)
    }

    /// Starts a registry; `http` is added to its `http:` section (indented two spaces:
    /// `tls:` ...), `extra` appended to the config.
    pub fn start_with(http: &str, extra: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{http}{extra}",
            dir.path().join("storage").display()
        );
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let r = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn blob_root(&self) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
    }

    /// The `data` files of the blobs in the registry's storage.
    pub fn blobs(&self) -> Vec<PathBuf> {
        let root = self.blob_root();
        let mut out = Vec::new();
        for prefix in std::fs::read_dir(&root).unwrap() {
            for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
                out.push(blob.unwrap().path().join("data"));
            }
        }
        out
    }

    /// The `data` file of blob `digest` in the registry's storage.
    pub fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.blob_root().join(&hex[..2]).join(hex).join("data")
    }

    /// `skopeo copy [EXTRA] SRC docker://HOST/DEST` (TLS not verified: plain HTTP, or the
    /// test CA).
    pub fn push(&self, src: &str, dest: &str, extra: &[&str]) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(src)
            .arg(format!("docker://{}/{dest}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {src} {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The manifest a tag resolves to, as the registry serves it.
    pub fn raw(&self, repo_tag: &str) -> String {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The layer digests of the manifest a tag resolves to, as the registry holds them
    /// (skopeo compresses an OCI layout's uncompressed layers as it pushes them).
    pub fn layers(&self, repo_tag: &str) -> Vec<String> {
        let manifest: serde_json::Value = serde_json::from_str(&self.raw(repo_tag)).unwrap();
        manifest["layers"]
            .as_array()
            .expect("a manifest with layers")
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }

    /// The digest a tag resolves to, as skopeo reads it.
    pub fn digest(&self, repo_tag: &str) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.raw(repo_tag).as_bytes()))
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// A new RSA key in `key` and a certificate for it, signed by itself, in `cert`.
fn self_signed(key: &Path, cert: &Path, subject: &str, extra: &[&str]) {
    let mut args = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
    ];
    args.extend(extra);
    args.extend(["-keyout", path(key), "-out", path(cert)]);
    openssl(&args);
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate it signed for 127.0.0.1 and localhost, made by openssl.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    pub fn new(dir: &Path) -> Tls {
        let p = |n: &str| dir.join(n);
        let (ca_key, ca, key, csr, cert) = (
            p("ca.key"),
            p("ca.crt"),
            p("server.key"),
            p("server.csr"),
            p("server.crt"),
        );
        self_signed(&ca_key, &ca, "/CN=runlet test CA", &[]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            path(&key),
            "-out",
            path(&csr),
        ]);
        let ext = p("san.ext");
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            path(&csr),
            "-CA",
            path(&ca),
            "-CAkey",
            path(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            path(&ext),
            "-out",
            path(&cert),
        ]);
        Tls { ca, cert, key }
    }

    /// The registry's `http:` lines that serve TLS with this certificate.
    pub fn http_config(&self) -> String {
        format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// An htpasswd file (bcrypt, as distribution requires) with one user; the registry's
/// `auth:` section that uses it.
pub fn htpasswd(dir: &Path, user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("run htpasswd (apache2-utils)");
    assert!(out.status.success());
    let path = dir.join("htpasswd");
    std::fs::write(&path, out.stdout).unwrap();
    format!(
        "auth:\n  htpasswd:\n    realm: runlet-test\n    path: {}\n",
        path.display()
    )
}

/// `base64(user:password)`, as `auths` entries and Basic headers carry it.
pub fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What a token server signs with: an RSA key and its self-signed certificate (with the
/// digitalSignature key usage distribution requires of a token's x5c leaf).
pub struct TokenKey {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl TokenKey {
    pub fn new(dir: &Path) -> TokenKey {
        let (key, cert) = (dir.join("token.key"), dir.join("token.crt"));
        self_signed(
            &key,
            &cert,
            "/CN=runlet test token issuer",
            &["-addext", "keyUsage=digitalSignature"],
        );
        TokenKey { key, cert }
    }

    /// The registry's `auth:` section for tokens from `realm`.
    pub fn registry_config(&self, realm: &str) -> String {
        format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.cert.display()
        )
    }

    /// An RS256 JWT granting pull and push on `repository`, signed with openssl, the
    /// certificate in its `x5c` header.
    pub fn jwt(&self, repository: &str) -> String {
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&self.cert)
            .output()
            .expect("run openssl");
        assert!(der.status.success());
        let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "walker", "aud": SERVICE,
            "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": format!("runlet-{now}"),
            "access": [{"type": "repository", "name": repository, "actions": ["pull", "push"]}],
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut sign = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run openssl");
        sign.stdin
            .take()
            .unwrap()
            .write_all(signing_input.as_bytes())
            .unwrap();
        let sig = sign.wait_with_output().unwrap();
        assert!(sig.status.success());
        format!("{signing_input}.{}", b64url(&sig.stdout))
    }
}

/// A listener on a free loopback port, and the port.
fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Reads an HTTP request's head from `conn`: its request line and headers (names as sent,
/// values trimmed). What the client sent past the head may be lost in the buffer: the token
/// request and `CONNECT` send nothing more before they are answered.
fn read_head(conn: &TcpStream) -> Option<(String, Vec<(String, String)>)> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Some((line, headers))
}

/// The `service` and `issuer` the token server and the registry agree on.
pub const SERVICE: &str = "runlet-test-registry";
pub const ISSUER: &str = "runlet-test-issuer";

/// One request to the token server: its query and whether it carried the right Basic
/// credentials.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub query: String,
    pub authorized: bool,
}

/// A bearer-token server (the `realm` of `WWW-Authenticate: Bearer`): answers `GET
/// /token?service=..&scope=..` with `token` to a client with the right Basic credentials,
/// 401 to anyone else.
pub struct TokenServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    pub fn start(user: &str, password: &str, token: String) -> TokenServer {
        let (listener, port) = listen();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let want = basic(user, password);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some((line, headers)) = read_head(&conn) else {
                    continue;
                };
                let query = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|t| t.split_once('?'))
                    .map(|(_, q)| q.to_string())
                    .unwrap_or_default();
                let authorized = headers.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("authorization")
                        && v.split_once(' ').is_some_and(|(scheme, value)| {
                            scheme.eq_ignore_ascii_case("basic") && value.trim() == want
                        })
                });
                seen.lock().unwrap().push(TokenRequest {
                    query: query.clone(),
                    authorized,
                });
                let (status, body) = if authorized {
                    let body = serde_json::json!({
                        "token": token, "access_token": token, "expires_in": 3600,
                    })
                    .to_string();
                    ("200 OK", body)
                } else {
                    (
                        "401 Unauthorized",
                        r#"{"details":"wrong credentials"}"#.to_string(),
                    )
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer { port, requests }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

/// Copies `from` to `to` until either side closes, counting bytes; `delay` (if set) is
/// slept after every 16 KiB.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    count: Option<Arc<AtomicU64>>,
    slow: Option<Arc<AtomicBool>>,
) {
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(c) = &count {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        if slow.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// Relays both ways between `a` and `b` in two threads.
fn relay(a: TcpStream, b: TcpStream, down: Option<Arc<AtomicU64>>, slow: Option<Arc<AtomicBool>>) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    std::thread::spawn(move || pump(a2, b2, None, None));
    std::thread::spawn(move || pump(b, a, down, slow));
}

/// An HTTP proxy that only tunnels (`CONNECT host:port`), recording each target.
pub struct ConnectProxy {
    pub port: u16,
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let (listener, port) = listen();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some((line, _)) = read_head(&conn) else {
                    continue;
                };
                let mut parts = line.split_whitespace();
                let (method, target) = (parts.next(), parts.next().unwrap_or("").to_string());
                seen.lock()
                    .unwrap()
                    .push(format!("{} {target}", method.unwrap_or("")));
                if method != Some("CONNECT") {
                    let _ = conn.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                match TcpStream::connect(&target) {
                    Ok(up) => {
                        let _ = conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                        relay(conn, up, None, None);
                    }
                    Err(_) => {
                        let _ = conn
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                    }
                }
            }
        });
        ConnectProxy { port, targets }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A TCP relay in front of a registry that counts the bytes sent back to clients and,
/// while `slow` is set, sends them slowly (about 3 MiB/s), so a pull can be killed half-way.
pub struct Relay {
    pub port: u16,
    pub down: Arc<AtomicU64>,
    pub slow: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(upstream: u16) -> Relay {
        let (listener, port) = listen();
        let down = Arc::new(AtomicU64::new(0));
        let slow = Arc::new(AtomicBool::new(true));
        let (d, s) = (down.clone(), slow.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                relay(conn, up, Some(d.clone()), Some(s.clone()));
            }
        });
        Relay { port, down, slow }
    }
}

/// An uncompressed layer: a tar of one file, `random-N.bin`, of `size` random bytes (content
/// no other test has stored).
pub fn random_layer(n: usize, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, format!("random-{n}.bin"), &data[..])
        .unwrap();
    tar.into_inner().unwrap()
}

/// Writes an OCI layout in `dir` holding one image `tag` of uncompressed `layers` (base
/// first); returns `oci:DIR:TAG`, for skopeo (which compresses the layers as it pushes
/// them: [`Registry::layers`] has their digests there).
pub fn oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let layers: Vec<(String, usize)> = layers.iter().map(|l| put(l)).collect();
    let diff_ids: Vec<&String> = layers.iter().map(|(d, _)| d).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, s)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    });
    let (m_digest, m_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m_digest, "size": m_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    format!("oci:{}:{tag}", dir.display())
}

/// [`oci_layout`] of one random layer per entry of `sizes` (bytes of its one file).
pub fn random_image(dir: &Path, tag: &str, sizes: &[usize]) -> String {
    let layers: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(n, size)| random_layer(n, *size))
        .collect();
    oci_layout(dir, tag, &layers)
}
