//! Helpers for the tests that run the `runlet` binary against a real containerd.
//!
//! `deploy/test.sh` starts a containerd for the tests and builds the test images, then sets
//! `RUNLET_TEST_CONTAINERD` (its socket) and `RUNLET_TEST_IMAGES` (the archive directory).
//! Without them these tests skip with a message, except under CI (`CI` set), where a missing
//! containerd is a failure.
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Env {
    pub containerd: String,
    pub images: PathBuf,
    pub state_dir: PathBuf,
}

/// The test environment, or `None` (skip) outside CI when it is not set up.
pub fn env() -> Option<Env> {
    let containerd = std::env::var("RUNLET_TEST_CONTAINERD").ok();
    let images = std::env::var("RUNLET_TEST_IMAGES").ok();
    match (containerd, images) {
        (Some(c), Some(i)) => {
            assert!(
                std::path::Path::new(&c).exists(),
                "RUNLET_TEST_CONTAINERD={c} does not exist: is the test containerd running?"
            );
            let state_dir = std::env::var("RUNLET_TEST_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from("/var/lib/runlet-test"));
            Some(Env {
                containerd: c,
                images: PathBuf::from(i),
                state_dir,
            })
        }
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but RUNLET_TEST_CONTAINERD / RUNLET_TEST_IMAGES are not: the containerd tests must run in CI (use deploy/test.sh)")
        }
        _ => {
            eprintln!("SKIPPED: set RUNLET_TEST_CONTAINERD and RUNLET_TEST_IMAGES (deploy/test.sh does) to run the containerd tests");
            None
        }
    }
}

pub fn runlet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_runlet")
}

impl Env {
    /// A `runlet` command wired to the test containerd (never a private one).
    pub fn runlet(&self) -> Command {
        let mut c = Command::new(runlet_bin());
        c.arg("--containerd-address")
            .arg(&self.containerd)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--no-embedded-containerd");
        c.env_remove("RUST_BACKTRACE");
        c
    }

    /// The same containerd with a state dir of its own: for a test whose state (job
    /// records) must not be touched by the recovery that other tests' commands run.
    pub fn isolated(&self, name: &str) -> Env {
        let mut dir = self.state_dir.clone().into_os_string();
        dir.push(format!("-{name}"));
        Env {
            containerd: self.containerd.clone(),
            images: self.images.clone(),
            state_dir: PathBuf::from(dir),
        }
    }

    pub fn archive(&self, name: &str) -> PathBuf {
        self.images.join(name)
    }

    /// Loads an archive; panics with runlet's output if that fails.
    pub fn load(&self, archive: &str) -> String {
        let out = self
            .runlet()
            .args(["image", "load", "--quiet"])
            .arg(self.archive(archive))
            .output()
            .expect("run runlet");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "image load {archive} failed: {text}");
        text
    }

    /// Runs `ctr -n runlet ARGS` against the test containerd.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.containerd)
            .args(["-n", "runlet"])
            .args(args)
            .output()
            .expect("ctr is installed with containerd");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `runlet serve` with `args` and waits until it says it is serving.
    pub fn serve(&self, args: &[&str]) -> Served {
        Served::start(self, args)
            .unwrap_or_else(|out| panic!("runlet serve {args:?} did not start:\n{out}"))
    }
}

/// A port nobody listens on right now.
/// Whether `f` comes true within `limit` (checked every 20 ms).
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A running `runlet serve`, with its combined output collected.
pub struct Served {
    pub child: Child,
    pub listen: SocketAddr,
    pub output: Arc<Mutex<String>>,
}

impl Served {
    /// Starts it; on failure returns what it printed.
    pub fn start(env: &Env, args: &[&str]) -> Result<Served, String> {
        let port = free_port();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = env.runlet();
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .args(args);
        if !args.contains(&"--metrics-listen") {
            cmd.args(["--metrics-listen", "off"]);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUNLET_LOG", "info")
            .env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn runlet");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let line = strip_ansi(&line);
                    out.lock().unwrap().push_str(&line);
                    out.lock().unwrap().push('\n');
                }
            });
        }
        let mut s = Served {
            child,
            listen,
            output,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if s.output().contains("is serving at") {
                return Ok(s);
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("exited with {status}\n{}", s.output()));
            }
            if Instant::now() > deadline {
                let _ = s.child.kill();
                return Err(format!("not serving after 60 s\n{}", s.output()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Whether runlet's output contains `needle` within `timeout`. Log lines are written
    /// by runlet's own tasks and read by a thread here: they may trail the response that
    /// caused them by a few milliseconds, so assertions on them wait.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        within(timeout, || self.output().contains(needle))
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.listen, "GET", path, &[], b"")
    }

    /// Sends SIGINT (Ctrl-C) and waits for runlet to exit; returns its status and output.
    pub fn interrupt(mut self) -> (ExitStatus, String) {
        let _ = nix_kill(self.child.id(), 2);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        (status, self.output())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix_kill(self.child.id(), 2);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
    }
}

fn nix_kill(pid: u32, sig: i32) -> std::io::Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill failed"))
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); raw header bytes
/// are sent as given, so tests can send what a strict client would refuse to.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..pos])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || b.len() < pos + 2 + size {
            if size > 0 {
                out.extend_from_slice(&b[pos + 2..]);
            }
            break;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + size]);
        b = &b[(pos + 4 + size).min(b.len())..];
    }
    out
}
