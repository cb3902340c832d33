//! runlet against hostile workloads and a crowded machine, with a real containerd (see
//! tests/common): a container flooding its output without newlines, control characters in
//! its output, the default metrics address taken, and a clean shutdown of the private
//! containerd.
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env, free_port, probe_env, runlet_bin, Env, Lines, Served};

/// Starts `cmd` (a `runlet serve`) on `listen` with its stdout and stderr read into the
/// returned `Served`'s output, and waits until it serves.
fn start(mut cmd: Command, listen: SocketAddr) -> Served {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUNLET_LOG", "info")
        .env_remove("NO_COLOR");
    let mut child = cmd.spawn().expect("spawn runlet");
    let output = Lines::new();
    output.read_in_thread(child.stdout.take().unwrap());
    output.read_in_thread(child.stderr.take().unwrap());
    let s = Served {
        child,
        listen,
        metrics: None,
        output,
    };
    assert!(
        s.wait_for_output("is serving at", Duration::from_secs(60)),
        "runlet serve did not start:\n{}",
        s.output()
    );
    s
}

/// `runlet serve --listen 127.0.0.1:FREE ARGS` on the test containerd, and its address.
fn serve_cmd(env: &Env, args: &[&str]) -> (Command, SocketAddr) {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = env.runlet();
    cmd.args(["serve", "--listen", &listen.to_string()])
        .args(args);
    (cmd, listen)
}

/// The resident memory of process `pid`, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// busybox httpd whose `/cgi-bin/go` makes the container write 1 GiB without a newline to
/// its stdout (PID 1's), then `FLOOD-DONE`; it prints a line with ESC sequences at start.
const FLOOD: &str = r#"mkdir -p /w/cgi-bin; printf '#!/bin/sh\n(yes | tr -d "\\n" | head -c 1073741824; echo; echo FLOOD-DONE) </dev/null >/proc/1/fd/1 2>&1 &\necho Content-Type: text/plain\necho\necho started\n' > /w/cgi-bin/go; chmod +x /w/cgi-bin/go; printf 'FORGED \033[31mred\033[0m\n'; exec httpd -f -p 8080 -h /w"#;

#[test]
fn a_gibibyte_without_newlines_leaves_runlets_memory_flat_and_escapes_are_escaped() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let (mut cmd, listen) = serve_cmd(
        &env,
        &[
            "--image",
            "busybox",
            "--service",
            "hard-flood",
            "--metrics-listen",
            "off",
            "--command",
            &format!("sh,-c,{FLOOD}"),
        ],
    );
    // runlet's stderr carries the flood (16 KiB log lines): count those, keep the rest.
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env("RUNLET_LOG", "info").env_remove("NO_COLOR");
    let mut child = cmd.spawn().expect("spawn runlet");
    let output = Lines::new();
    output.read_in_thread(child.stdout.take().unwrap());
    let raw = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let (cuts, whole_long) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    {
        let (output, raw, cuts, whole_long) = (
            output.clone(),
            raw.clone(),
            cuts.clone(),
            whole_long.clone(),
        );
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                if line.len() > 4096 {
                    // The mark ends the message; runlet's fields follow it.
                    let mark = "…[line cut at 16384 bytes]".as_bytes();
                    let tail = &line[line.len().saturating_sub(256)..];
                    let cut = tail.windows(mark.len()).any(|w| w == mark);
                    let n = if cut { &cuts } else { &whole_long };
                    n.fetch_add(1, Ordering::Relaxed);
                } else {
                    output.push(&String::from_utf8_lossy(&line));
                    raw.lock().unwrap().push(line);
                }
            }
        });
    }
    let served = Served {
        child,
        listen,
        metrics: None,
        output,
    };
    assert!(
        served.wait_for_output("is serving at", Duration::from_secs(60)),
        "{}",
        served.output()
    );
    let pid = served.child.id();
    // The baseline: runlet serving, warmed up by a request or two.
    for _ in 0..3 {
        served.get("/");
    }
    std::thread::sleep(Duration::from_millis(500));
    let base = rss_kib(pid);
    assert!(base > 0);

    let r = served.get("/cgi-bin/go");
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut most = base;
    let mut last_request = Instant::now();
    while !served.output().contains("FLOOD-DONE") {
        most = most.max(rss_kib(pid));
        assert!(
            most < base + 32 * 1024,
            "runlet's RSS grew from {base} KiB to {most} KiB after {} cut lines",
            cuts.load(Ordering::Relaxed)
        );
        assert!(
            Instant::now() < deadline,
            "the flood did not end within 300 s ({} cut lines)",
            cuts.load(Ordering::Relaxed)
        );
        // Requests are still served while the output floods in.
        if last_request.elapsed() > Duration::from_secs(2) {
            let r = served.get("/");
            assert!(r.status < 500, "{}", r.status);
            last_request = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // 1 GiB in 16 KiB pieces: every piece but the last cut (the last ends at the newline).
    assert_eq!(cuts.load(Ordering::Relaxed), (1 << 30) / 16384 - 1);
    assert_eq!(whole_long.load(Ordering::Relaxed), 1);
    eprintln!("runlet's RSS: {base} KiB at start, {most} KiB at most during the 1 GiB flood");

    // The ESC sequences arrive as text, never as ESC bytes.
    let raw = raw.lock().unwrap();
    let forged = raw
        .iter()
        .find(|l| l.windows(6).any(|w| w == b"FORGED"))
        .map(|l| String::from_utf8_lossy(l).into_owned());
    let forged = forged.expect("the container's FORGED line in runlet's log");
    assert!(forged.contains(r"FORGED \x1b[31mred\x1b[0m"), "{forged:?}");
    assert!(
        !raw.iter().any(|l| l.contains(&0x1b)),
        "an ESC byte in runlet's output"
    );
    let (status, out) = served.interrupt();
    assert!(status.success(), "{out}");
    env.assert_nothing_left("hard-flood");
}

#[test]
fn the_default_metrics_address_taken_is_a_warning_a_given_one_an_error() {
    let Some(env) = probe_env() else { return };
    // Taken by this test, or already by someone else: taken either way.
    let _held = std::net::TcpListener::bind("127.0.0.1:9090");
    assert!(std::net::TcpListener::bind("127.0.0.1:9090").is_err());

    let (cmd, listen) = serve_cmd(&env, &["--image", "probe", "--service", "hard-metrics"]);
    let served = start(cmd, listen);
    assert_eq!(served.get("/").status, 200);
    let (status, out) = served.interrupt();
    assert!(status.success(), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains("127.0.0.1:9090") && warnings[0].contains("--metrics-listen"),
        "{out}"
    );

    let listen = format!("127.0.0.1:{}", free_port());
    let (code, err) = env.run(&[
        "serve",
        "--listen",
        &listen,
        "--image",
        "probe",
        "--service",
        "hard-metrics",
        "--metrics-listen",
        "127.0.0.1:9090",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot listen on 127.0.0.1:9090 (--metrics-listen)"),
        "{err}"
    );
    env.assert_nothing_left("hard-metrics");
}

#[test]
fn a_clean_shutdown_with_the_private_containerd_logs_no_warning() {
    let Some(env) = env() else { return };
    // runlet's own containerd: nothing answers at --containerd-address, so runlet starts
    // one under its state dir (and stops it at exit).
    let state = env.isolated("embedded").state_dir;
    let private = || {
        let mut c = Command::new(runlet_bin());
        c.arg("--containerd-address")
            .arg(state.join("nothing-here.sock"))
            .arg("--state-dir")
            .arg(&state);
        c
    };
    let load = private()
        .args(["image", "load", "--quiet"])
        .arg(env.archive("probe.oci.tar"))
        .output()
        .unwrap();
    assert!(load.status.success(), "{load:?}");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = private();
    cmd.args([
        "serve",
        "--listen",
        &listen.to_string(),
        "--metrics-listen",
        "off",
    ])
    .args(["--image", "probe", "--service", "hard-embedded"]);
    let served = start(cmd, listen);
    assert_eq!(served.get("/").status, 200);
    let (status, out) = served.interrupt();
    assert!(status.success(), "{out}");
    let shutdown = out
        .find("shutting down")
        .unwrap_or_else(|| panic!("no shutdown line:\n{out}"));
    let after = &out[shutdown..];
    assert!(after.contains("private containerd stopped"), "{out}");
    assert!(
        !after.lines().any(|l| l.contains(" WARN ")),
        "a warning after the shutdown began:\n{after}"
    );
}

/// The state dir holds env values (job records, the daemon's store), secrets and instance
/// files: every command makes it 0700, or tightens one found looser.
#[test]
fn the_state_dir_is_made_private_and_a_loose_one_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let Some(env) = probe_env() else { return };
    let env = env.isolated("private");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let s = env.serve_probe("hard-private", &[]);
    assert_eq!(s.get("/").status, 200);
    assert_eq!(mode(&env.state_dir), 0o700, "serve on a new state dir");
    let (status, out) = s.interrupt();
    assert!(status.success(), "{out}");
    std::fs::set_permissions(&env.state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err) = env.run(&["image", "ls"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        mode(&env.state_dir),
        0o700,
        "a 0755 state dir, after image ls"
    );
    env.assert_nothing_left("hard-private");
}
