//! The hardening every container gets, checked from inside real containers on a real
//! containerd (see tests/common): Docker's seccomp filter (`Seccomp: 2`, refused syscalls
//! refused, ordinary ones not), Docker's capabilities without `CAP_NET_RAW` for root and
//! none in effect for a non-root user, ICMP without raw sockets, the open-file limit, the
//! supplementary groups of the image's /etc/group, and a pids limit that holds a fork bomb
//! inside its instance. The probe reports what it sees (`/`, `/syscalls`, `/readfile`; in
//! job mode one JSON line with `proc_status` and `syscalls`).
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{probe_env, probe_job_line, Env};
use serde_json::Value;

/// Docker's 14 default capabilities without CAP_NET_RAW (bit 13), as /proc/PID/status
/// shows a set.
const ROOT_CAPS: &str = "00000000a80405fb";
const NO_CAPS: &str = "0000000000000000";

/// What every container must refuse (errno from the seccomp filter or the missing
/// capability) and allow.
fn assert_syscalls(s: &Value, who: &str) {
    for refused in [
        "unshare_newuser",
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "mount",
        "socket_raw",
    ] {
        assert_eq!(s[refused], "EPERM", "{who}: {refused}: {s}");
    }
    for allowed in ["getpid", "socket_tcp", "socket_icmp_dgram"] {
        assert_eq!(s[allowed], "ok", "{who}: {allowed}: {s}");
    }
}

fn status<'a>(report: &'a Value, key: &str) -> &'a str {
    report["proc_status"][key].as_str().unwrap_or_default()
}

#[test]
fn a_root_service_runs_under_dockers_seccomp_filter_without_net_raw_and_with_limits() {
    let Some(env) = probe_env() else { return };
    let served = env.serve_probe("sec-root", &[]);
    let r = served.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json().unwrap();
    // The probe is PID 1: its /proc/self/status is /proc/1/status.
    assert_eq!(report["pid"], 1, "{report}");
    assert_eq!(status(&report, "Seccomp"), "2", "{report}");
    assert_eq!(status(&report, "NoNewPrivs"), "1", "{report}");
    assert_eq!(status(&report, "CapEff"), ROOT_CAPS, "{report}");
    assert_eq!(status(&report, "CapBnd"), ROOT_CAPS, "{report}");
    // USER unset: root, with the groups /etc/group lists root in (staff, 50), as Docker.
    assert_eq!(
        (report["uid"].as_u64(), report["gid"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(status(&report, "Groups"), "50", "{report}");
    assert_eq!(
        report["cgroup"]["files"]["/sys/fs/cgroup/pids/pids.max"], "4096",
        "{report}"
    );
    let s = served.get("/syscalls");
    assert_eq!(s.status, 200, "{}", s.text());
    assert_syscalls(&s.json().unwrap(), "root service");

    let limits = served.read_inside("/proc/self/limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(nofile, "Max open files 1024 1024 files", "{limits}");
    let ping = served.read_inside("/proc/sys/net/ipv4/ping_group_range");
    assert_eq!(
        ping.split_whitespace().collect::<Vec<_>>(),
        ["0", "2147483647"]
    );
    let (code, out) = served.interrupt();
    assert!(code.success(), "{out}");
    env.assert_nothing_left("sec-root");
}

#[test]
fn a_non_root_service_has_no_capabilities_in_effect() {
    let Some(env) = probe_env() else { return };
    env.load("probe-user.oci.tar");
    let served = env.serve(&["--image", "probe-user", "--service", "sec-user"]);
    let report = served.get("/").json().unwrap();
    assert_eq!(report["uid"], 65534, "{report}");
    assert_eq!(report["gid"], 65534, "{report}");
    assert_eq!(status(&report, "Seccomp"), "2", "{report}");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(status(&report, set), NO_CAPS, "{set}: {report}");
    }
    // USER 65534:65534 names its group: no supplementary groups (though /etc/group lists
    // nobody in staff), as Docker.
    assert_eq!(status(&report, "Groups"), "", "{report}");
    assert_syscalls(&served.get("/syscalls").json().unwrap(), "non-root service");
    let (code, out) = served.interrupt();
    assert!(code.success(), "{out}");
    env.assert_nothing_left("sec-user");
}

/// `runlet job execute NAME --image IMAGE --args job`: the probe's job line.
fn job_report(env: &Env, name: &str, image: &str) -> Value {
    let (code, text) = env.probe_job(name, image, &[]);
    assert_eq!(code, Some(0), "{text}");
    probe_job_line(&text)
}

#[test]
fn job_tasks_get_the_same_filter_capabilities_and_groups() {
    let Some(env) = probe_env() else { return };
    env.load("probe-user.oci.tar");
    let root = job_report(&env, "sec-job-root", "probe");
    assert_eq!(status(&root, "Seccomp"), "2", "{root}");
    assert_eq!(status(&root, "CapEff"), ROOT_CAPS, "{root}");
    assert_eq!(status(&root, "Groups"), "50", "{root}");
    assert_syscalls(&root["syscalls"], "root task");
    let user = job_report(&env, "sec-job-user", "probe-user");
    assert_eq!(status(&user, "Seccomp"), "2", "{user}");
    assert_eq!(status(&user, "CapEff"), NO_CAPS, "{user}");
    assert_eq!(status(&user, "Uid").split(' ').next(), Some("65534"));
    assert_syscalls(&user["syscalls"], "non-root task");
    env.assert_nothing_left("sec-job");
}

/// The pids cgroup directories of containers whose id starts with `service`.
fn pids_dirs(service: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup/pids/runlet")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(service))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn read_number(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// busybox: a loop that starts `sleep` processes until fork fails, and keeps trying,
/// beside httpd.
const BOMB: &str = "echo up > /tmp/index.html; (while :; do sleep 1000 & done) >/dev/null 2>&1 & exec httpd -f -p 8080 -h /tmp";

#[test]
fn a_fork_bomb_stays_inside_its_instance() {
    let Some(env) = probe_env() else { return };
    env.load("busybox.oci.tar");
    let peer = env.serve_probe("sec-peer", &[]);
    assert_eq!(peer.get("/").status, 200);
    let bomb = env.serve(&[
        "--image",
        "busybox",
        "--service",
        "sec-bomb",
        "--memory",
        "1Gi",
        "--no-cpu-throttling",
        "--command",
        &format!("sh,-c,{BOMB}"),
    ]);
    // The bomb reaches the limit and stays there.
    let start = Instant::now();
    let dir = loop {
        let dirs = pids_dirs("sec-bomb");
        if let Some(d) = dirs
            .iter()
            // The loop forks until the kernel refuses: the count ends at the limit or a
            // process or two below it (a child exiting as another forks).
            .find(|d| read_number(&d.join("pids.current")) >= 4096 - 8)
        {
            break d.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the bomb did not reach ~4096 processes within 120 s: {:?}",
            dirs.iter()
                .map(|d| read_number(&d.join("pids.current")))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(read_number(&dir.join("pids.max")), 4096);
    // It is bounded, the host can still start processes, and the other instance serves.
    for _ in 0..5 {
        assert!(read_number(&dir.join("pids.current")) <= 4096);
        let ok = Command::new("true").status().expect("the host can fork");
        assert!(ok.success());
        let r = peer.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out) = bomb.interrupt();
    assert!(code.success(), "{out}");
    let (code, out) = peer.interrupt();
    assert!(code.success(), "{out}");
    env.assert_nothing_left("sec-bomb");
    env.assert_nothing_left("sec-peer");
    assert!(pids_dirs("sec-bomb").is_empty());
}
