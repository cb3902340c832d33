//! Helpers for the tests that run the `runlet` binary against a real containerd.
//!
//! `deploy/test.sh` starts a containerd for the tests and builds the test images, then sets
//! `RUNLET_TEST_CONTAINERD` (its socket) and `RUNLET_TEST_IMAGES` (the archive directory).
//! Without them these tests skip with a message, except under CI (`CI` set), where a missing
//! containerd is a failure.
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]
#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod pubsub;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use runlet_test_support::http::{Request, Response};
pub use runlet_test_support::names::mentions;
pub use runlet_test_support::{metrics, strip_ansi, within, Lines};

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
        // No test pulls from a registry it did not start (tests/registry.rs passes --pull).
        c.env("RUNLET_PULL", "never");
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

    /// Runs `runlet job execute NAME --image IMAGE --args job ARGS` (the probe's job mode):
    /// its exit code and its output without colours.
    pub fn probe_job(&self, name: &str, image: &str, args: &[&str]) -> (Option<i32>, String) {
        let out = self
            .runlet()
            .args(["job", "execute", name, "--image", image, "--args", "job"])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run runlet");
        let text = strip_ansi(&format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        (out.status.code(), text)
    }

    /// Starts `runlet serve` with `args` and waits until it says it is serving.
    pub fn serve(&self, args: &[&str]) -> Served {
        Served::start(self, args)
            .unwrap_or_else(|out| panic!("runlet serve {args:?} did not start:\n{out}"))
    }

    /// `runlet serve --image probe --service SERVICE ARGS` (the probe image loaded).
    pub fn serve_probe(&self, service: &str, args: &[&str]) -> Served {
        let mut full = vec!["--image", "probe", "--service", service];
        full.extend_from_slice(args);
        self.serve(&full)
    }

    /// Runs `runlet ARGS` to its end; returns its exit code and its stderr.
    pub fn run(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.runlet().args(args).output().expect("run runlet");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `runlet serve --listen 127.0.0.1:FREE --metrics-listen off ARGS`, which must
    /// fail on its own; returns its stderr.
    pub fn serve_fails(&self, args: &[&str]) -> String {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut full = vec!["serve", "--listen", &listen, "--metrics-listen", "off"];
        full.extend_from_slice(args);
        let (code, err) = self.run(&full);
        assert_ne!(code, Some(0), "runlet serve {args:?} succeeded: {err}");
        err
    }

    /// Nothing with `needle` in its name is left: containers, tasks, snapshots, network
    /// namespaces, CNI allocations.
    pub fn assert_nothing_left(&self, needle: &str) {
        let containers = self.ctr(&["containers", "ls", "-q"]);
        assert!(
            !mentions(&containers, needle),
            "containers left: {containers}"
        );
        let tasks = self.ctr(&["tasks", "ls"]);
        assert!(!mentions(&tasks, needle), "tasks left: {tasks}");
        let snaps = self.ctr(&["snapshots", "ls"]);
        assert!(!mentions(&snaps, needle), "snapshots left: {snaps}");
        let netns = file_names("/run/netns");
        assert!(
            !netns.iter().any(|n| mentions(n, needle)),
            "netns left: {netns:?}"
        );
        if let Ok(dir) = std::fs::read_dir("/var/lib/cni/networks/runlet") {
            for e in dir.filter_map(|e| e.ok()) {
                let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
                assert!(
                    !mentions(&owner, needle),
                    "CNI allocation left: {} -> {owner}",
                    e.path().display()
                );
            }
        }
    }
}

/// The names of the entries of `dir` (none if it cannot be read).
pub fn file_names(dir: impl AsRef<std::path::Path>) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What instance `id` holds on the host outside containerd: its network namespace, its
/// CNI address allocation, mounts under `state_dir` (its root fs's tmpfs), its directory.
pub fn host_traces(id: &str, state_dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let netns = format!("runlet-{id}");
    if file_names("/run/netns").contains(&netns) {
        found.push(format!("netns /run/netns/{netns}"));
    }
    let ipam = std::path::Path::new("/var/lib/cni/networks/runlet");
    for f in file_names(ipam) {
        let holder = std::fs::read_to_string(ipam.join(&f)).unwrap_or_default();
        if holder.contains(&netns) {
            found.push(format!("address {f}"));
        }
    }
    let state = state_dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for m in mounts.lines() {
        let point = m.split(' ').nth(1).unwrap_or_default();
        if point.starts_with(&state) && point.contains(id) {
            found.push(format!("mount {point}"));
        }
    }
    let dir = state_dir.join("instances").join(id);
    if dir.exists() {
        found.push(format!("dir {}", dir.display()));
    }
    found
}

/// The ids of the network namespaces runlet made for instances of service `name`.
pub fn netns_ids(name: &str) -> Vec<String> {
    let prefix = format!("runlet-{name}-");
    file_names("/run/netns")
        .into_iter()
        .filter_map(|n| n.strip_prefix(&prefix).map(|rest| format!("{name}-{rest}")))
        .collect()
}

/// The test environment with the probe image loaded, or `None` (skip) like [`env`].
pub fn probe_env() -> Option<Env> {
    let env = env()?;
    env.load("probe.oci.tar");
    Some(env)
}

/// [`probe_env`] with `runlet serve --image probe --service SERVICE ARGS` serving.
pub fn serve_probe(service: &str, args: &[&str]) -> Option<(Env, Served)> {
    let env = probe_env()?;
    let s = env.serve_probe(service, args);
    Some((env, s))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    runlet_test_support::free_port().expect("bind an ephemeral port")
}

/// A running `runlet serve`, with its combined output collected.
pub struct Served {
    pub child: Child,
    pub listen: SocketAddr,
    /// `--metrics-listen`, when `args` gave one.
    pub metrics: Option<SocketAddr>,
    pub output: Lines,
}

/// The probe's job line (`{"probe":"job",...}`) in a job's output.
pub fn probe_job_line(text: &str) -> serde_json::Value {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.split_once("] ")?.1).ok())
        .find(|v| v["probe"] == "job")
        .unwrap_or_else(|| panic!("no probe line:\n{text}"))
}

impl Served {
    /// A file inside the probe's container, through its `/readfile`.
    pub fn read_inside(&self, path: &str) -> String {
        let r = self.get(&format!("/readfile?path={path}"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json().unwrap()["contents"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Starts it; on failure returns what it printed.
    pub fn start(env: &Env, args: &[&str]) -> Result<Served, String> {
        let port = free_port();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = env.runlet();
        cmd.arg("serve").arg("--listen").arg(listen.to_string());
        // Before `args`: after a `--container`, flags belong to that container.
        if !args.contains(&"--metrics-listen") {
            cmd.args(["--metrics-listen", "off"]);
        }
        cmd.args(args);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUNLET_LOG", "info")
            .env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn runlet");
        let output = Lines::new();
        output.read_in_thread(child.stdout.take().expect("piped stdout"));
        output.read_in_thread(child.stderr.take().expect("piped stderr"));
        let metrics = args
            .iter()
            .position(|a| *a == "--metrics-listen")
            .and_then(|at| args.get(at + 1)?.parse().ok());
        let mut s = Served {
            child,
            listen,
            metrics,
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
        self.output.text()
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

    /// Waits until runlet's metrics show `n` requests in flight on `service` (needs
    /// `--metrics-listen`): evidence that a request sent in the background holds a slot.
    pub fn wait_in_flight(&self, service: &str, n: u64) {
        let addr = self.metrics.expect("runlet serve with --metrics-listen");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seen = rt
            .block_on(metrics::wait_in_flight(
                addr,
                service,
                n,
                Duration::from_secs(10),
            ))
            .unwrap();
        assert!(
            seen,
            "{n} request(s) in flight on {service} not seen in runlet's metrics"
        );
    }

    /// Waits until the probe reports `n` requests in flight, counting the asking `GET /`
    /// itself (so 2 means another request has reached the container).
    pub fn wait_probe_in_flight(&self, n: u64) {
        let seen = within(Duration::from_secs(10), || {
            self.get("/").json().unwrap()["concurrency"]["in_flight"].as_u64() >= Some(n)
        });
        assert!(seen, "the probe never reported {n} request(s) in flight");
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

/// One HTTP/1.1 request over a fresh connection (`Connection: close`, 120 s at most); raw
/// header bytes are sent as given, so tests can send what a strict client would refuse to.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Response {
    let mut req = Request::new(method, path)
        .body(body)
        .timeout(Duration::from_secs(120));
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    runlet_test_support::http::send_blocking(addr, &req)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e:#}"))
}
