//! Instance lifecycle against real containers: scale from zero, scale out to max, scale in,
//! min instances, SIGTERM → SIGKILL timing, OOM → 500, the in-memory writable filesystem,
//! start-up failures, startup and liveness probes.
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{env, http, probe_env, serve_probe, within, Env, Served};

fn containers_of(env: &Env, service: &str) -> usize {
    env.ctr(&["containers", "ls", "-q"])
        .lines()
        .filter(|l| l.starts_with(&format!("{service}-00001-")))
        .count()
}

fn wait_until(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(
        within(limit, f),
        "timed out after {limit:?} waiting for {what}"
    );
}

fn hostname(s: &Served) -> String {
    s.get("/").json().unwrap()["hostname"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn idle_instances_scale_to_zero_and_the_next_request_starts_one() {
    let Some((env, s)) = serve_probe("lc-zero", &["--idle-timeout", "2s"]) else {
        return;
    };
    let first = hostname(&s);
    wait_until("scale to zero", Duration::from_secs(20), || {
        containers_of(&env, "lc-zero") == 0
    });
    assert!(
        s.wait_for_output("draining", Duration::from_secs(5)),
        "{}",
        s.output()
    );
    let t0 = Instant::now();
    let r = s.get("/");
    assert_eq!(
        r.status, 200,
        "the first request after zero is held until an instance is ready"
    );
    assert_ne!(
        r.json().unwrap()["hostname"].as_str().unwrap(),
        first,
        "a new instance served it"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn load_scales_out_to_exactly_max_instances() {
    let Some((env, s)) = serve_probe("lc-out", &["--concurrency", "1", "--max-instances", "3"])
    else {
        return;
    };
    let addr = s.listen;
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || http(addr, "GET", "/?sleep=3000", &[], b"")))
        .collect();
    let mut peak = 0;
    for _ in 0..40 {
        peak = peak.max(containers_of(&env, "lc-out"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let hosts: HashSet<String> = clients
        .into_iter()
        .map(|c| {
            let r = c.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.json().unwrap()["hostname"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(hosts.len(), 3, "served by {hosts:?}");
    assert_eq!(peak, 3, "never more than --max-instances");
}

#[test]
fn min_instances_are_started_and_kept_when_idle() {
    let Some((env, _s)) = serve_probe("lc-min", &["--min-instances", "2", "--idle-timeout", "1s"])
    else {
        return;
    };
    wait_until("two instances", Duration::from_secs(20), || {
        containers_of(&env, "lc-min") == 2
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(containers_of(&env, "lc-min"), 2);
}

#[test]
fn sigkill_follows_an_ignored_sigterm_after_ten_seconds() {
    let Some((env, s)) = serve_probe("lc-kill", &["--set-env-vars", "PROBE_IGNORE_SIGTERM=1"])
    else {
        return;
    };
    let t0 = Instant::now();
    let (status, out) = s.interrupt();
    let took = t0.elapsed();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("SIGTERM received") && out.contains("(ignoring)"),
        "{out}"
    );
    assert!(out.contains("SIGKILL sent 10 s after SIGTERM"), "{out}");
    assert!(
        took >= Duration::from_millis(9800) && took < Duration::from_secs(14),
        "shutdown took {took:?}"
    );
    assert_eq!(containers_of(&env, "lc-kill"), 0);
}

#[test]
fn a_container_that_handles_sigterm_is_gone_well_before_ten_seconds() {
    let Some((_, s)) = serve_probe("lc-term", &[]) else {
        return;
    };
    let t0 = Instant::now();
    let (status, out) = s.interrupt();
    assert!(status.success());
    assert!(out.contains("SIGTERM received"), "{out}");
    assert!(!out.contains("SIGKILL sent"), "{out}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t0.elapsed()
    );
}

#[test]
fn out_of_memory_ends_the_instance_and_every_in_flight_request_gets_500() {
    let Some((_, s)) = serve_probe("lc-oom", &["--memory", "64Mi"]) else {
        return;
    };
    let first = hostname(&s);
    let addr = s.listen;
    let bystander = std::thread::spawn(move || http(addr, "GET", "/?sleep=4000", &[], b""));
    s.wait_probe_in_flight(2);
    let r = s.get("/?alloc=256");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("memory"), "{}", r.text());
    let b = bystander.join().unwrap();
    assert_eq!(
        b.status,
        500,
        "the other request in flight on the instance: {}",
        b.text()
    );
    assert!(
        s.wait_for_output("OOM-killed", Duration::from_secs(5)),
        "{}",
        s.output()
    );
    let next = s.get("/");
    assert_eq!(next.status, 200);
    assert_ne!(
        next.json().unwrap()["hostname"].as_str().unwrap(),
        first,
        "a fresh instance"
    );
}

#[test]
fn writing_more_than_the_memory_limit_to_the_root_filesystem_kills_the_instance() {
    let Some((_, s)) = serve_probe("lc-fs-mem", &["--memory", "64Mi"]) else {
        return;
    };
    // Below the limit: fine, and it is in memory (FS-1, FS-2).
    let ok = s.get("/?write=8&path=/data-small.bin");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let r = s.get("/?write=200&path=/data-big.bin");
    assert_ne!(
        r.status,
        200,
        "writing 200 MiB with a 64 MiB limit must not succeed: {}",
        r.text()
    );
    wait_until("the instance replaced", Duration::from_secs(20), || {
        s.output().contains("OOM-killed") || s.output().contains("exited while serving")
    });
}

#[test]
fn files_written_by_one_instance_are_not_seen_by_the_next() {
    let Some((env, s)) = serve_probe("lc-fs-gone", &["--idle-timeout", "1s"]) else {
        return;
    };
    assert_eq!(s.get("/?write=1&path=/marker").status, 200);
    assert_eq!(
        s.get("/readfile?path=/marker").json().unwrap()["exists"],
        true
    );
    wait_until("scale to zero", Duration::from_secs(20), || {
        containers_of(&env, "lc-fs-gone") == 0
    });
    assert_eq!(
        s.get("/readfile?path=/marker").json().unwrap()["exists"],
        false,
        "FS-3: nothing survives the instance"
    );
}

#[test]
fn an_instance_that_never_listens_fails_its_startup_window_and_leaves_nothing() {
    let Some(env) = probe_env() else { return };
    let t0 = Instant::now();
    let err = env.serve_fails(&[
        "--image",
        "probe",
        "--service",
        "lc-never",
        "--startup-timeout",
        "3s",
        "--set-env-vars",
        "PROBE_NEVER_LISTEN=1",
    ]);
    assert!(
        err.contains("did not listen on port 8080 within 3 s"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(containers_of(&env, "lc-never"), 0);
}

#[test]
fn a_startup_probe_decides_readiness() {
    let Some(env) = probe_env() else { return };
    // Passes once the app listens (it starts listening after 1.5 s).
    let s = env.serve_probe(
        "lc-startup-ok",
        &[
            "--set-env-vars",
            "PROBE_LISTEN_DELAY_MS=1500",
            "--startup-probe",
            "httpGet.path=/healthz,periodSeconds=1,failureThreshold=5",
        ],
    );
    assert_eq!(s.get("/").status, 200);
    drop(s);
    // Never passes: the path answers 503.
    let err = env.serve_fails(&[
        "--image",
        "probe",
        "--service",
        "lc-startup-bad",
        "--startup-probe",
        "httpGet.path=/?status=503,periodSeconds=1,failureThreshold=2",
    ]);
    assert!(
        err.contains("startup probe failed 2 times") && err.contains("503"),
        "{err}"
    );
    assert_eq!(
        containers_of(&env, "lc-startup-bad"),
        0,
        "the failed instance was removed"
    );
    // A TCP probe and a gRPC probe (the probe answers grpc.health.v1 over h2c).
    for p in [
        "tcpSocket.port=8080,periodSeconds=1",
        "grpc.port=8080,periodSeconds=1",
    ] {
        let s = env.serve_probe("lc-startup-kinds", &["--startup-probe", p]);
        assert_eq!(s.get("/").status, 200, "{p}");
    }
}

#[test]
fn a_failing_liveness_probe_replaces_the_instance() {
    let Some((_, s)) = serve_probe(
        "lc-live",
        &[
            "--liveness-probe",
            "httpGet.path=/healthz,periodSeconds=1,failureThreshold=2",
        ],
    ) else {
        return;
    };
    let first = hostname(&s);
    assert_eq!(s.get("/unhealthy").status, 200);
    wait_until("liveness failure", Duration::from_secs(15), || {
        s.output().contains("liveness probe failed")
    });
    let next = s.get("/");
    assert_eq!(next.status, 200);
    assert_ne!(next.json().unwrap()["hostname"].as_str().unwrap(), first);
}

#[test]
fn bad_probe_flags_name_the_field() {
    let Some(env) = env() else { return };
    let (code, err) = env.run(&[
        "serve",
        "--image",
        "probe",
        "--liveness-probe",
        "httpGet.path=/,bogus=1",
    ]);
    assert_eq!(code, Some(64));
    assert!(
        err.contains("--liveness-probe") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn in_memory_volumes_are_mounted_with_their_size_limit() {
    let Some((_, s)) = serve_probe(
        "lc-volume",
        &[
            "--add-volume",
            "name=cache,type=in-memory,size-limit=16Mi",
            "--add-volume-mount",
            "volume=cache,mount-path=/cache",
        ],
    ) else {
        return;
    };
    assert_eq!(s.get("/?write=4&path=/cache/small").status, 200);
    let full = s.get("/?write=32&path=/cache/big");
    assert_ne!(
        full.status,
        200,
        "16 MiB volume took 32 MiB: {}",
        full.text()
    );
    assert!(
        full.text().to_lowercase().contains("space"),
        "{}",
        full.text()
    );
    let j = s.get("/").json().unwrap();
    let mounts = j["mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.as_str().unwrap().contains(" /cache ")
                && m.as_str().unwrap().contains("tmpfs")),
        "{mounts:?}"
    );
}

/// The CPU quota runlet gave instance `id`, read from the host (cgroup v1 or v2).
fn host_cpu_quota(id: &str) -> String {
    let v1 = format!("/sys/fs/cgroup/cpu/runlet/{id}/cpu.cfs_quota_us");
    let v2 = format!("/sys/fs/cgroup/runlet/{id}/cpu.max");
    std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("no CPU quota file for {id}: {e}"))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn cpu_throttling_cuts_an_idle_instance_to_one_percent_and_a_request_restores_it() {
    let Some((env, s)) = serve_probe("lc-throttle", &["--cpu", "2", "--cpu-throttling"]) else {
        return;
    };
    // Inside a request the container sees its full quota (LIFE-5)...
    let r = s.get("/").json().unwrap();
    assert_eq!(r["cgroup"]["cpu_quota_us"], "200000", "{r}");
    let id = r["hostname"].as_str().unwrap().to_string();
    // ...and once it is idle the host shows 1% of a CPU.
    wait_until("the idle quota", Duration::from_secs(5), || {
        host_cpu_quota(&id) == "1000"
    });
    // Without the flag an idle instance keeps its quota.
    let plain = env.serve_probe("lc-no-throttle", &[]);
    let id = plain.get("/").json().unwrap()["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(host_cpu_quota(&id), "100000");
}
