//! The fault suite (issue 18): runlet against a real containerd while things go wrong
//! around it, each case asserting the behaviour docs/architecture.md ("Faults") promises:
//! containerd restarted under load, `kill -9` of `runlet serve` and of `runlet job execute`,
//! a crash-looping container, one that ignores SIGTERM, one that stops accepting, and a
//! full state dir. Every case ends by checking that nothing is left: containers, tasks,
//! shims, network namespaces, CNI addresses, mounts, iptables rules of a dead runlet.
// These tests time separate processes by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env, file_names, host_traces, http, netns_ids, probe_env, within, Env, Lines};
use runlet_test_support::http::{send_blocking, Request};

/// Processes whose command line holds `needle` (containerd's shims name their container:
/// `containerd-shim-runc-v2 -namespace runlet -id ID ...`).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for pid in file_names("/proc") {
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains("containerd-shim") && common::mentions(&cmd, needle) {
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}

/// iptables rules in the filter table that name runlet process `pid`.
fn iptables_rules_of(pid: u32) -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .expect("iptables is installed");
    let tag = format!("runlet pid {pid}\"");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_string)
        .collect()
}

/// Mount points anywhere on the host that name `needle`.
fn mounts_with(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|m| m.split(' ').nth(1))
        .filter(|p| p.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Nothing of `needle` (a service's or job's name prefix) or of the instances `ids` is
/// left, and no iptables rule of the dead runlet `dead_pid`.
fn assert_no_trace(env: &Env, needle: &str, ids: &[String], dead_pid: Option<u32>) {
    env.assert_nothing_left(needle);
    let shims = processes_with(needle);
    assert!(shims.is_empty(), "shims left: {shims:?}");
    let mounts = mounts_with(needle);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    for id in ids {
        let left = host_traces(id, &env.state_dir);
        assert!(left.is_empty(), "{id} left: {left:?}");
    }
    if let Some(pid) = dead_pid {
        let rules = iptables_rules_of(pid);
        assert!(
            rules.is_empty(),
            "rules of the dead runlet {pid}: {rules:?}"
        );
    }
}

fn wait_until(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(
        within(limit, f),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// The probe's hostname (its instance), or "" for an answer not from the probe.
fn hostname(r: &common::Response) -> String {
    r.json()
        .ok()
        .and_then(|j| j["hostname"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A containerd of the test's own (its socket, root and state apart from the shared test
/// containerd's), so that it can be killed and restarted without disturbing anything else.
struct OwnContainerd {
    run: PathBuf,
    child: Option<Child>,
}

impl OwnContainerd {
    fn start() -> OwnContainerd {
        let run = PathBuf::from("/run/runlet-faults");
        let root = PathBuf::from("/var/lib/runlet-faults");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let sock = run.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}/containerd/root\"\nstate = \"{run}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = root.display(),
            run = run.display(),
            sock = sock.display()
        );
        std::fs::write(run.join("config.toml"), config).unwrap();
        let mut c = OwnContainerd { run, child: None };
        c.spawn();
        c
    }

    fn socket(&self) -> String {
        self.run.join("containerd.sock").display().to_string()
    }

    fn answers(&self) -> bool {
        Command::new("ctr")
            .args(["-a", &self.socket(), "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.run.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is installed");
        self.child = Some(child);
        wait_until("the test's containerd", Duration::from_secs(20), || {
            self.answers()
        });
    }

    /// `kill -9`: the shims (and so the containers) live on.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnContainerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (a) containerd restarted (`kill -9`, then started again) while `runlet serve` serves
/// two instances: the data path never calls containerd, so requests on the running
/// instances, in flight across the restart and sent while containerd is away, succeed. Once
/// it is back, runlet still hears of what happens to the instances it started before:
/// a child process of one goes over the memory limit (PID 1 lives on, so only the OOM event,
/// subscribed again, tells it: LIFE-9's 500 at once) and the other exits (its exit wait is
/// made again); both are replaced.
#[test]
fn containerd_restarted_while_serving_loses_no_request_and_runlet_carries_on() {
    let Some(shared) = env() else { return };
    let mut ctd = OwnContainerd::start();
    let env = Env {
        containerd: ctd.socket(),
        images: shared.images.clone(),
        state_dir: PathBuf::from("/var/lib/runlet-faults/state"),
    };
    env.load("probe.oci.tar");
    let name = "ft-ctd";
    let s = env.serve_probe(name, &["--memory", "128Mi", "--min-instances", "2"]);
    wait_until("two instances", Duration::from_secs(20), || {
        netns_ids(name).len() == 2
    });
    let before = netns_ids(name);
    let addr = s.listen;
    let across = std::thread::spawn(move || http(addr, "GET", "/?sleep=4000", &[], b""));
    std::thread::sleep(Duration::from_millis(500));

    ctd.kill9();
    assert!(!ctd.answers(), "containerd is down");
    for _ in 0..5 {
        let r = s.get("/");
        assert_eq!(r.status, 200, "while containerd is down: {}", r.text());
        assert!(before.contains(&hostname(&r)), "{}", hostname(&r));
    }
    ctd.spawn();
    let r = across.join().unwrap();
    assert_eq!(r.status, 200, "in flight across the restart: {}", r.text());

    // One instance holds a request for 8 s while a child of its server allocates 512 MiB;
    // the other, the less loaded, gets the request that makes it exit.
    let oom = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = http(addr, "GET", "/?child_alloc=512&sleep=8000", &[], b"");
        (r, t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let _ = s.get("/?exit=3");
    let mut missed = Vec::new();
    let (r, took) = oom.join().unwrap();
    if !(r.status == 500 && took < Duration::from_secs(5)) {
        missed.push(format!(
            "a child's OOM kill: {} after {took:?} ({}), want 500 at once",
            r.status,
            r.text().trim()
        ));
    }
    if !s.wait_for_output("exited while serving", Duration::from_secs(20)) {
        missed.push("the instance's exit was not seen".to_string());
    }
    assert!(
        missed.is_empty(),
        "after containerd's restart: {missed:#?}\n{}",
        s.output()
    );
    // Both replaced (min instances 2), by instances that serve.
    let replaced = within(Duration::from_secs(30), || {
        let now = netns_ids(name);
        now.len() == 2 && now.iter().all(|id| !before.contains(id))
    });
    assert!(
        replaced,
        "not replaced: {:?}\n{}",
        netns_ids(name),
        s.output()
    );
    let after = netns_ids(name);
    let r = s.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(after.contains(&hostname(&r)), "{}", hostname(&r));
    let (status, out) = s.interrupt();
    assert!(status.success(), "{out}");
    let all: Vec<String> = before.into_iter().chain(after).collect();
    assert_no_trace(&env, &format!("{name}-"), &all, None);
}

/// Requests in a loop from `n` threads until `stop`; counts the answers.
fn traffic(
    addr: std::net::SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicUsize>, Vec<std::thread::JoinHandle<()>>) {
    let ok = Arc::new(AtomicUsize::new(0));
    let threads = (0..n)
        .map(|_| {
            let (stop, ok) = (stop.clone(), ok.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let req = Request::get("/?sleep=200").timeout(Duration::from_secs(10));
                    match send_blocking(addr, &req) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        })
        .collect();
    (ok, threads)
}

/// (b) `kill -9` of `runlet serve` in the middle of traffic: its instances outlive it;
/// the next `runlet serve` of the service removes them before its first instance, and
/// once that one stops nothing of either run is left.
#[test]
fn serve_killed_mid_traffic_leaves_nothing_after_the_next_serve() {
    let Some(env) = probe_env() else { return };
    let env = env.isolated("faults-kill");
    let name = "ft-kill";
    let mut s = env.serve_probe(name, &["--min-instances", "2"]);
    wait_until("two instances", Duration::from_secs(20), || {
        netns_ids(name).len() == 2
    });
    let ids = netns_ids(name);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, threads) = traffic(s.listen, 4, stop.clone());
    wait_until("traffic", Duration::from_secs(10), || {
        ok.load(Ordering::Relaxed) >= 8
    });
    let pid = s.child.id();
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // What the kill left: the instances run on without their runlet.
    let listed = env.ctr(&["containers", "ls", "-q"]);
    for id in &ids {
        assert!(listed.contains(id.as_str()), "{id} should outlive runlet");
    }

    let next = env.serve_probe(name, &[]);
    assert!(
        next.wait_for_output("earlier runlet left behind", Duration::from_secs(5)),
        "{}",
        next.output()
    );
    assert_eq!(next.get("/").status, 200);
    let mut all = ids.clone();
    all.extend(netns_ids(name));
    let (status, out) = next.interrupt();
    assert!(status.success(), "{out}");
    assert_no_trace(&env, &format!("{name}-"), &all, Some(pid));
}

/// (c) `kill -9` of `runlet job execute` while its tasks run: the next job command on the
/// state dir ends the execution (its tasks are stopped and removed) and nothing is left.
#[test]
fn job_killed_mid_execution_leaves_nothing_after_the_next_job_command() {
    let Some(env) = env() else { return };
    let env = env.isolated("faults-job");
    env.load("probe.oci.tar");
    let name = "ft-job";
    let mut child = env
        .runlet()
        .args(["job", "execute", name, "--image", "probe", "--args", "job"])
        .args(["--tasks", "3", "--parallelism", "2"])
        .args(["--set-env-vars", "PROBE_SLEEP_MS=120000"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runlet");
    let lines = Lines::new();
    lines.read_in_thread(child.stdout.take().unwrap());
    lines.read_in_thread(child.stderr.take().unwrap());
    wait_until("two running tasks", Duration::from_secs(30), || {
        netns_ids(name).len() == 2 && lines.text().matches("\"probe\":\"job\"").count() >= 2
    });
    let ids = netns_ids(name);
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    let listed = env.ctr(&["tasks", "ls"]);
    for id in &ids {
        assert!(listed.contains(id.as_str()), "{id} should outlive runlet");
    }
    let out = env
        .runlet()
        .args(["job", "executions", "list", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_trace(&env, &format!("{name}-"), &ids, Some(pid));
    let tasks = file_names(env.state_dir.join("jobs/tasks"));
    assert!(
        !tasks.iter().any(|t| t.contains(name)),
        "attempt files left: {tasks:?}"
    );
}

/// (d) A container that exits right after it starts listening: each start passes the
/// start-up probe, then the instance exits. runlet says why, and restarts it with a
/// growing backoff (not as fast as it can), and leaves nothing when stopped.
#[test]
fn a_crash_looping_container_is_restarted_with_backoff_and_leaves_nothing() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let name = "ft-crashloop";
    let s = env.serve(&[
        "--service",
        name,
        "--image",
        "busybox",
        "--min-instances",
        "1",
        "--command",
        "/bin/sh",
        "--args",
        "^@^-c@httpd -f -p 8080 & sleep 1; echo crashing; exit 3",
    ]);
    let watched = Duration::from_secs(12);
    std::thread::sleep(watched);
    let out = s.output();
    let starts = out.matches("instance starting").count();
    assert!(
        out.contains("exited while serving (exit code 3)"),
        "the reason is said:\n{out}"
    );
    // As fast as it can, a start every ~1.3 s: 9 or more in 12 s; with the backoff (1, 2,
    // 4 s after each quick exit) 4 or 5.
    assert!(
        (2..=6).contains(&starts),
        "{starts} starts in {watched:?}:\n{out}"
    );
    let (status, out) = s.interrupt();
    assert!(status.success(), "{out}");
    assert_no_trace(&env, &format!("{name}-"), &[], None);
}

/// (e) A container that ignores SIGTERM is SIGKILLed 10 s later when it is scaled in
/// (shutdown: tests/lifecycle.rs `sigkill_follows_an_ignored_sigterm_after_ten_seconds`).
#[test]
fn an_idle_instance_ignoring_sigterm_is_sigkilled_ten_seconds_later() {
    let Some(env) = probe_env() else { return };
    let name = "ft-term";
    let s = env.serve_probe(
        name,
        &[
            "--idle-timeout",
            "1s",
            "--set-env-vars",
            "PROBE_IGNORE_SIGTERM=1",
        ],
    );
    let id = hostname(&s.get("/"));
    wait_until("the SIGKILL", Duration::from_secs(30), || {
        s.output.seen("sending SIGKILL").is_some()
    });
    let term = s.output.seen("(ignoring)").expect("the probe saw SIGTERM");
    let kill = s.output.seen("sending SIGKILL").unwrap();
    let gap = kill - term;
    assert!(
        gap >= Duration::from_millis(9500) && gap < Duration::from_secs(12),
        "SIGKILL {gap:?} after SIGTERM:\n{}",
        s.output()
    );
    wait_until("the instance removed", Duration::from_secs(10), || {
        s.output().contains("instance stopped")
    });
    assert_no_trace(&env, &id, std::slice::from_ref(&id), None);
}

/// (f) A container that listens but stops accepting (its server is stopped with SIGSTOP:
/// the kernel still completes connections into the listen backlog, nobody answers): its
/// requests get 504 at the request timeout, each freeing its slot, and the instance is
/// removed when runlet stops.
#[test]
fn requests_to_a_container_that_stopped_accepting_get_504_at_the_timeout() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let name = "ft-stuck";
    let s = env.serve(&[
        "--service",
        name,
        "--image",
        "busybox",
        "--timeout",
        "3",
        "--concurrency",
        "1",
        "--max-instances",
        "1",
        "--command",
        "/bin/sh",
        "--args",
        "^@^-c@trap 'exit 0' TERM; httpd -f -p 8080 & sleep 1; kill -STOP $!; \
         echo stopped accepting; while :; do sleep 1; done",
    ]);
    assert!(
        s.wait_for_output("stopped accepting", Duration::from_secs(10)),
        "{}",
        s.output()
    );
    let ids = netns_ids(name);
    for _ in 0..2 {
        let t0 = Instant::now();
        let r = s.get("/");
        let took = t0.elapsed();
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
            "answered after {took:?}"
        );
    }
    let (status, out) = s.interrupt();
    assert!(status.success(), "{out}");
    assert_no_trace(&env, &format!("{name}-"), &ids, None);
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: &str) -> SmallFs {
        let _ = Command::new("umount").arg(at).status();
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs at {}", at.display());
        SmallFs(at.to_path_buf())
    }

    /// Fills it up with one file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Files under `dir`, with their sizes, outside `skip`.
fn files_under(dir: &Path, skip: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p == skip {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            out.extend(files_under(&p, skip));
        } else {
            out.push((p, m.len()));
        }
    }
    out
}

/// (g) The state dir on a full filesystem: `runlet serve` fails with an error that says
/// what it could not write and why, starts no container and leaves no file half-written;
/// once there is space again it serves.
#[test]
fn a_full_state_dir_gives_a_clear_error_and_nothing_half_written() {
    let Some(env) = probe_env() else { return };
    let fs = SmallFs::mount(Path::new("/run/runlet-faults-full"), "2m");
    let env = Env {
        state_dir: fs.0.clone(),
        ..env
    };
    let filler = fs.fill();
    let name = "ft-full";
    let err = env.serve_fails(&["--image", "probe", "--service", name]);
    assert!(
        err.contains("No space left on device"),
        "the cause is said: {err}"
    );
    assert!(
        err.contains(&fs.0.display().to_string()),
        "the path is said: {err}"
    );
    env.assert_nothing_left(&format!("{name}-"));
    let files = files_under(&fs.0, &filler);
    let empty: Vec<_> = files.iter().filter(|(_, len)| *len == 0).collect();
    assert!(empty.is_empty(), "half-written files: {empty:?}");

    // Space again: it serves, and stops cleanly.
    std::fs::remove_file(&filler).unwrap();
    let s = env.serve_probe(name, &[]);
    assert_eq!(s.get("/").status, 200);
    let ids = netns_ids(name);
    let (status, out) = s.interrupt();
    assert!(status.success(), "{out}");
    assert_no_trace(&env, &format!("{name}-"), &ids, None);
}

/// (h) Out of memory in a child process, then in PID 1 (LIFE-9). Either way the instance is
/// cut off at once: the request that went over the limit and one in flight beside it end
/// with 500 well inside the 10 s SIGTERM grace (the probe ignores SIGTERM, so only a kill
/// without grace ends them in time), the next request gets a new instance, and nothing of
/// the killed ones is left.
#[test]
fn oom_in_a_child_or_in_pid_1_ends_every_request_in_flight_with_500_at_once() {
    let Some(env) = probe_env() else { return };
    let name = "ft-oom";
    let s = env.serve_probe(
        name,
        &[
            "--memory",
            "128Mi",
            "--set-env-vars",
            "PROBE_IGNORE_SIGTERM=1",
        ],
    );
    let mut killed = Vec::new();
    for (case, path) in [
        ("a child", "/?child_alloc=512&sleep=8000"),
        ("PID 1", "/?alloc=512"),
    ] {
        let id = hostname(&s.get("/"));
        assert!(!id.is_empty() && !killed.contains(&id), "{case}: {id}");
        let addr = s.listen;
        let beside = std::thread::spawn(move || {
            let r = http(addr, "GET", "/?sleep=8000", &[], b"");
            (r, Instant::now())
        });
        s.wait_probe_in_flight(2);
        let t0 = Instant::now();
        let r = s.get(path);
        let took = t0.elapsed();
        let (b, b_end) = beside.join().unwrap();
        assert!(
            r.status == 500 && took < Duration::from_secs(5),
            "{case} over the limit: {} after {took:?} ({})\n{}",
            r.status,
            r.text(),
            s.output()
        );
        assert!(
            r.text().contains("exceeded its memory limit"),
            "{}",
            r.text()
        );
        let b_after = b_end.saturating_duration_since(t0);
        assert!(
            b.status == 500 && b_after < Duration::from_secs(5),
            "{case}: the request beside it: {} {b_after:?} after ({})",
            b.status,
            b.text()
        );
        assert!(
            s.wait_for_output("OOM-killed", Duration::from_secs(5)),
            "{}",
            s.output()
        );
        killed.push(id);
    }
    let r = s.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let next = hostname(&r);
    assert!(!killed.contains(&next), "{next} was killed: {killed:?}");
    let (status, out) = s.interrupt();
    assert!(status.success(), "{out}");
    assert_eq!(out.matches("OOM-killed").count(), 2, "{out}");
    killed.push(next);
    assert_no_trace(&env, &format!("{name}-"), &killed, None);
}

/// (i) An instance that never listens, started while the service serves (its first
/// instance listened; the next ones do not). The 4-minute start-up limit is shortened with
/// `--startup-timeout 3s` (the same code path; the default 240 s is checked under paused
/// time in `control::service::instance`): the request held for it gets 503 once the limit
/// passes, without containerd's text; the log says why; the next start waits (backoff),
/// and nothing of the failed instances is left.
#[test]
fn an_instance_that_never_listens_gets_its_held_request_503_at_the_startup_limit() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let name = "ft-deaf";
    // Instances started before `until` listen; later ones never do.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until = now + 8;
    let script = format!(
        "^@^-c@trap 'exit 0' TERM; if [ $(date +%s) -lt {until} ]; then httpd -f -p 8080 & wait; fi; \
         echo never listening; while :; do sleep 1; done"
    );
    let s = env.serve(&[
        "--service",
        name,
        "--image",
        "busybox",
        "--startup-timeout",
        "3s",
        "--idle-timeout",
        "1s",
        "--command",
        "/bin/sh",
        "--args",
        &script,
    ]);
    let ids = netns_ids(name);
    assert_eq!(ids.len(), 1, "{ids:?}");
    // The first instance goes idle and is stopped; wait past `until`.
    wait_until(
        "the first instance stopped",
        Duration::from_secs(30),
        || s.output().contains("instance stopped"),
    );
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= until
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let t0 = Instant::now();
    let r = s.get("/");
    let took = t0.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(10),
        "answered after {took:?}"
    );
    assert!(
        r.text().contains("could not start") && !r.text().contains("8080"),
        "the body is generic: {}",
        r.text()
    );
    assert!(
        s.wait_for_output(
            "did not listen on port 8080 within 3 s",
            Duration::from_secs(5)
        ),
        "{}",
        s.output()
    );
    // In the backoff the next request is told at once.
    let t0 = Instant::now();
    let r = s.get("/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let (status, out) = s.interrupt();
    assert!(status.success(), "{out}");
    assert_no_trace(&env, &format!("{name}-"), &ids, None);
}

/// (j) Two `runlet serve` of one service name side by side (each on its own port): the
/// second's start-up cleanup leaves the first's live instance alone (its owner, the first
/// process, runs: `control::owner`), each serves from its own instance, and stopping one
/// leaves the other serving.
#[test]
fn a_second_serve_of_the_same_name_leaves_the_first_ones_instances_alone() {
    let Some(env) = probe_env() else { return };
    let name = "ft-twice";
    let first = env.serve_probe(name, &["--min-instances", "1"]);
    let a = hostname(&first.get("/"));
    let second = env.serve_probe(name, &[]);
    assert!(
        second.wait_for_output(
            "leaving a container of the same service name",
            Duration::from_secs(5)
        ),
        "{}",
        second.output()
    );
    assert!(
        !second.output().contains("an earlier runlet left behind"),
        "{}",
        second.output()
    );
    let b = hostname(&second.get("/"));
    assert!(!b.is_empty() && b != a, "{a} {b}");
    assert_eq!(
        hostname(&first.get("/")),
        a,
        "the first's instance serves on"
    );
    let (status, out) = second.interrupt();
    assert!(status.success(), "{out}");
    let r = first.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(hostname(&r), a, "after the second stopped");
    let (status, out) = first.interrupt();
    assert!(status.success(), "{out}");
    assert_no_trace(&env, &format!("{name}-"), &[a, b], None);
}
