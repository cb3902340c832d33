//! File descriptors, with a real containerd (see tests/common): `runlet serve` raises its
//! open-file limit, holds thousands of idle client connections and still serves, and at
//! its connection cap makes new connections wait (logged, counted) instead of failing.
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, http, probe_env, within, Env, Lines, Served};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// `runlet serve --image probe --service SERVICE` on a free port, metrics on another,
/// with `env` set and started with a soft open-file limit of 1024; waits until it serves.
fn serve(env: &Env, service: &str, vars: &[(&str, &str)]) -> Served {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd: Command = env.runlet();
    cmd.args(["serve", "--image", "probe", "--service", service])
        .args(["--listen", &listen.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .envs(vars.iter().copied())
        .env("RUNLET_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // SAFETY: only setrlimit(2) (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().expect("spawn runlet");
    let output = Lines::new();
    output.read_in_thread(child.stdout.take().unwrap());
    output.read_in_thread(child.stderr.take().unwrap());
    let s = Served {
        child,
        listen,
        metrics: Some(metrics),
        output,
    };
    assert!(
        s.wait_for_output("is serving at", Duration::from_secs(60)),
        "runlet serve did not start:\n{}",
        s.output()
    );
    s
}

/// The soft and hard "Max open files" of process `pid`.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let mut f = line["Max open files".len()..].split_whitespace();
    (f.next().unwrap().into(), f.next().unwrap().into())
}

fn metrics_text(s: &Served) -> String {
    http(s.metrics.unwrap(), "GET", "/metrics", &[], b"").text()
}

#[test]
fn serve_raises_its_open_file_limit_and_serves_past_5000_idle_connections() {
    let Some(env) = probe_env() else { return };
    let s = serve(&env, "fds-many", &[]);
    let (soft, hard) = nofile(s.child.id());
    assert_eq!(soft, hard, "runlet's soft open-file limit was not raised");
    // This process needs the descriptors too.
    let (_, my_hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, my_hard, my_hard).unwrap();
    assert!(
        my_hard > 5_200 && hard.parse::<u64>().unwrap_or(u64::MAX) > 5_200,
        "the hard open-file limit ({my_hard}) is too low for this test"
    );
    let idle: Vec<TcpStream> = (0..5_000)
        .map(|i| TcpStream::connect(s.listen).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // Every one accepted (runlet at a soft limit of 1024 would have stopped near 1000).
    let accepted = within(Duration::from_secs(30), || {
        metrics_text(&s).contains("runlet_ingress_connections 5000")
    });
    assert!(accepted, "{}", metrics_text(&s));
    for _ in 0..3 {
        let r = s.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    drop(idle);
}

#[test]
fn at_the_connection_cap_new_connections_wait_and_are_counted() {
    let Some(env) = probe_env() else { return };
    let s = serve(
        &env,
        "fds-cap",
        &[
            ("RUNLET_MAX_CONNECTIONS", "3"),
            ("RUNLET_INGRESS_THREADS", "1"),
        ],
    );
    assert_eq!(s.get("/").status, 200);
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(s.listen).unwrap())
        .collect();
    assert!(within(Duration::from_secs(10), || metrics_text(&s)
        .contains("runlet_ingress_connections 3")));
    // A fourth waits in the backlog: its request is not answered while three are open.
    let mut fourth = TcpStream::connect(s.listen).unwrap();
    fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 64];
    let r = fourth.read(&mut buf);
    assert!(r.is_err(), "answered at the cap: {r:?}");
    let m = metrics_text(&s);
    assert!(m.contains("runlet_ingress_connection_limit 3"), "{m}");
    assert!(
        m.contains("runlet_ingress_connection_limit_waits_total 1"),
        "{m}"
    );
    assert!(
        s.wait_for_output("new client connection(s) wait", Duration::from_secs(5)),
        "{}",
        s.output()
    );
    // One closes: the fourth is served.
    drop(open.pop());
    fourth
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    fourth.read_to_end(&mut got).unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
}
