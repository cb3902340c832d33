//! The first-generation execution environment (`--execution-environment gen1`, SBX-1) with
//! a real containerd and gVisor's `runsc` (see tests/common): a gen1 service answers from
//! inside gVisor (system calls gVisor does not implement fail there), gen2 stays the default
//! and has them, jobs refuse gen1 as Cloud Run does, a missing runsc is named, sidecars run
//! each in their own sandbox of the instance, and the limits hold on the sandbox's host
//! cgroup.
//!
//! Needs `runsc` (Debian package `runsc`; deploy/install-deps.sh installs it): without it
//! these tests skip with a message, except under CI, where they fail.
// These tests wait on a separate process (runlet) by the wall clock: std's Instant is right.
#![allow(clippy::disallowed_types)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{probe_env, probe_job_line, Env};
use serde_json::Value;

/// Whether runsc is installed; under CI its absence is a failure.
fn runsc_present() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v runsc"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but runsc (gVisor) is not installed: deploy/install-deps.sh installs it"
        );
        eprintln!("SKIPPED: runsc (gVisor) is not installed; apt-get install runsc");
    }
    found
}

/// The probe's `/syscalls` report.
fn syscalls(served: &common::Served) -> Value {
    let r = served.get("/syscalls");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

#[test]
fn a_gen1_service_answers_from_inside_gvisor() {
    let Some(env) = probe_env() else { return };
    if !runsc_present() {
        return;
    }
    let served = env.serve_probe(
        "gen1-svc",
        &["--execution-environment", "gen1", "--memory", "256Mi"],
    );
    let r = served.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json().unwrap();
    // The app is PID 1 of its sandbox and got the contract's environment.
    assert_eq!(report["pid"], 1, "{report}");
    let s = syscalls(&served);
    // Linux implements it (and Docker's filter allows it); gVisor does not.
    assert_eq!(s["sched_getattr"], "ENOSYS", "{s}");
    for ok in ["getpid", "socket_tcp"] {
        assert_eq!(s[ok], "ok", "{ok}: {s}");
    }
    // gVisor's own kernel answers, not the host's.
    let version = served.read_inside("/proc/version");
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert_ne!(version.trim(), host.trim(), "{version}");
    // The memory limit is what gVisor reports as the machine's memory.
    let meminfo = served.read_inside("/proc/meminfo");
    assert!(
        meminfo
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().eq(["MemTotal:", "262144", "kB"])),
        "{meminfo}"
    );
    let (code, out) = served.interrupt();
    assert!(code.success(), "{out}");
    env.assert_nothing_left("gen1-svc");
}

#[test]
fn gen2_is_the_default_and_keeps_full_linux() {
    let Some(env) = probe_env() else { return };
    for (service, args) in [
        ("gen2-default", &[][..]),
        ("gen2-given", &["--execution-environment", "gen2"][..]),
    ] {
        let served = env.serve_probe(service, args);
        let s = syscalls(&served);
        assert_eq!(s["sched_getattr"], "ok", "{service}: {s}");
        // Still under Docker's seccomp filter.
        assert_eq!(s["keyctl"], "EPERM", "{service}: {s}");
        let (code, out) = served.interrupt();
        assert!(code.success(), "{out}");
        env.assert_nothing_left(service);
    }
}

#[test]
fn jobs_run_in_gen2_and_refuse_gen1_as_cloud_run_does() {
    let Some(env) = probe_env() else { return };
    let (code, out) = env.probe_job("gen1-job", "probe", &["--execution-environment", "gen1"]);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("--execution-environment") && out.contains("gen2"),
        "{out}"
    );
    let (code, out) = env.probe_job("gen2-job", "probe", &["--execution-environment", "gen2"]);
    assert_eq!(code, Some(0), "{out}");
    let line = probe_job_line(&out);
    assert_eq!(line["syscalls"]["sched_getattr"], "ok", "{line}");
    env.assert_nothing_left("gen2-job");
}

#[test]
fn gen1_without_runsc_is_refused_naming_it() {
    let Some(env) = probe_env() else { return };
    // No runsc on this PATH: refused before any container exists.
    let mut cmd = env.runlet();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:1",
        "--metrics-listen",
        "off",
        "--image",
        "probe",
        "--service",
        "gen1-norunsc",
        "--execution-environment",
        "gen1",
    ])
    .env("PATH", "/nonexistent");
    let out = cmd.output().expect("run runlet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("runsc") && err.contains("apt-get install runsc"),
        "{err}"
    );
    env.assert_nothing_left("gen1-norunsc");
}

/// gVisor uses the instance's namespace's own network stack (runsc --network=host), so the
/// namespace's metadata DNAT and the link-local DROP apply to a gen1 app as to a gen2 one.
/// The client is busybox `nc`: busybox `wget` fails every request under this gVisor (even to
/// the instance's own loopback: "error getting response: Resource temporarily unavailable")
/// and busybox `timeout` segfaults, so neither can show anything here.
#[test]
fn a_gen1_instance_reaches_the_metadata_server_and_no_other_link_local_address() {
    let Some(env) = probe_env() else { return };
    if !runsc_present() {
        return;
    }
    env.load("busybox.oci.tar");
    let script = "nc -w 3 169.254.1.1 80 </dev/null >/dev/null 2>&1 && echo LINKLOCAL-REACHED; \
         for i in 1 2 3 4 5; do \
           p=$(printf 'GET /computeMetadata/v1/project/project-id HTTP/1.0\\r\\nMetadata-Flavor: Google\\r\\n\\r\\n' | nc -w 5 metadata.google.internal 80 | tail -n 1); \
           [ -n \"$p\" ] && break; sleep 1; \
         done; echo project=$p; \
         echo kernel=$(cat /proc/version); \
         mkdir -p /w; echo hello-gen1 > /w/index.html; exec httpd -f -p 8080 -h /w";
    let served = env.serve(&[
        "--image",
        "busybox",
        "--service",
        "gen1-meta",
        "--execution-environment",
        "gen1",
        "--project",
        "gen1-proj",
        "--command",
        "/bin/sh",
        "--args",
        &format!("^@^-c@{script}"),
    ]);
    // busybox's nc and httpd under this gVisor now and then fail a connection (its read
    // answers EAGAIN early; the conformance suite's checks use the probe's client for it):
    // both are tried again here. Only the answers' content matters.
    let mut r = served.get("/");
    for _ in 0..10 {
        if r.status != 502 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        r = served.get("/");
    }
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), "hello-gen1");
    assert!(
        served.wait_for_output("project=", std::time::Duration::from_secs(40)),
        "{}",
        served.output()
    );
    let out = served.output();
    assert!(!out.contains("LINKLOCAL-REACHED"), "{out}");
    // runlet's own server answered, through the namespace's DNAT, from inside gVisor.
    assert!(out.contains("project=gen1-proj"), "{out}");
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert!(
        !out.contains(host.trim()),
        "the host's kernel answered:\n{out}"
    );
    let (code, out) = served.interrupt();
    assert!(code.success(), "{out}");
    env.assert_nothing_left("gen1-meta");
}

/// The ids of the containers whose id starts with `prefix`.
fn containers(env: &Env, prefix: &str) -> Vec<String> {
    env.ctr(&["containers", "ls", "-q"])
        .lines()
        .map(str::trim)
        .filter(|id| id.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Waits (30 s at most) for a file the probe can read inside its container.
fn wait_inside(served: &common::Served, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = served.read_inside(path);
        if !text.is_empty() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never appeared:\n{}",
            served.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Cloud Run's gen1 runs sidecars; here each container of the instance is its own gVisor
/// sandbox (the runc shim with runsc), all in the instance's network namespace (runsc
/// --network=host) and sharing its in-memory volumes (bind mounts, which runsc revalidates:
/// --file-access-mounts=shared is its default). The busybox sidecar fetches the probe's
/// report over the shared loopback and leaves it, its environment and its kernel in the
/// shared volume; the probe reads them back.
#[test]
fn a_gen1_instance_runs_sidecars_each_in_its_own_gvisor_sandbox() {
    let Some(env) = probe_env() else { return };
    if !runsc_present() {
        return;
    }
    env.load("busybox.oci.tar");
    let script =
        "^@^-c@until printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 8080 > /tmp/r \
         && grep -q K_SERVICE /tmp/r; do sleep 1; done; \
         tail -n 1 /tmp/r > /shared/app.tmp && mv /shared/app.tmp /shared/app.json; \
         cat /proc/version > /shared/version.tmp && mv /shared/version.tmp /shared/version; \
         env > /shared/env.tmp && mv /shared/env.tmp /shared/env; \
         trap 'exit 0' TERM; while :; do sleep 1; done";
    let served = env.serve(&[
        "--service",
        "gen1-side",
        "--execution-environment",
        "gen1",
        "--add-volume",
        "name=shared,type=in-memory,size-limit=1Mi",
        "--container",
        "app",
        "--image",
        "probe",
        "--port",
        "8080",
        "--add-volume-mount",
        "volume=shared,mount-path=/shared",
        "--container",
        "side",
        "--image",
        "busybox",
        "--command",
        "/bin/sh",
        "--args",
        script,
        "--add-volume-mount",
        "volume=shared,mount-path=/shared",
    ]);
    let r = served.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    // Two containers, each run by runsc (the wrapper is the shim's runtime binary), each
    // with a runsc root of its own: runsc finds containers by id prefix, and the ingress
    // container's id is a prefix of its sidecar's.
    let ids = containers(&env, "gen1-side");
    assert_eq!(ids.len(), 2, "{ids:?}");
    let mut roots = Vec::new();
    for id in &ids {
        let options = runc_options(&env, id);
        assert!(
            options.contains("gvisor/runsc"),
            "{id} is not run by runsc: {options:?}"
        );
        let root = options
            .split_once("runsc")
            .map(|(_, rest)| rest.to_string());
        roots.push(root.unwrap_or_default());
    }
    assert!(roots.iter().all(|r| r.ends_with("/runsc")), "{roots:?}");
    assert_ne!(roots[0], roots[1]);
    // The sidecar reached the ingress container on the instance's loopback.
    let app: Value = serde_json::from_str(wait_inside(&served, "/shared/app.json").trim())
        .expect("the probe's report");
    assert_eq!(app["env"]["K_SERVICE"], "gen1-side", "{app}");
    // Its environment: K_SERVICE without PORT (PORT-3).
    let side_env = wait_inside(&served, "/shared/env");
    assert!(
        side_env.lines().any(|l| l == "K_SERVICE=gen1-side"),
        "{side_env}"
    );
    assert!(
        !side_env.lines().any(|l| l.starts_with("PORT=")),
        "{side_env}"
    );
    // The sidecar runs under gVisor too.
    let version = wait_inside(&served, "/shared/version");
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert_ne!(version.trim(), host.trim());
    assert_eq!(version.trim(), served.read_inside("/proc/version").trim());
    let (code, out) = served.interrupt();
    assert!(code.success(), "{out}");
    env.assert_nothing_left("gen1-side");
}

/// The runc shim options of container `id` as `ctr containers info` shows them (a
/// protobuf, base64), decoded leniently: its strings, the runtime binary and its root.
fn runc_options(env: &Env, id: &str) -> String {
    use base64::Engine;
    let info: Value = serde_json::from_str(&env.ctr(&["containers", "info", id])).unwrap();
    let value = info["Runtime"]["Options"]["value"]
        .as_str()
        .unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether the probe tried /proc/sys at all (so the checks below read a real answer).
fn ro_detail_reported(report: &Value) -> bool {
    report["proc_sys_readonly_detail"]["open_hostname_for_write"].is_string()
}

/// A host cgroup file of container `id` (cgroup v1 `CONTROLLER/runlet/ID/FILE`, v2
/// `runlet/ID/FILE2`).
fn host_cgroup_file(id: &str, v1: (&str, &str), v2: &str) -> String {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let path = if root.join("cgroup.controllers").exists() {
        root.join("runlet").join(id).join(v2)
    } else {
        root.join(v1.0).join("runlet").join(id).join(v1.1)
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// gVisor shows no cgroup files inside, but the limits hold: the whole sandbox (its sentry
/// and gofer, host processes) sits in the container's host cgroup, which has the memory
/// limit and the CPU quota; inside, the memory limit is the machine size gVisor reports
/// (RES-2's check reads it there), and /proc/sys is the sandbox's own (runsc ignores
/// readonlyPaths; SBX-2's check is gen2-only).
#[test]
fn a_gen1_sandbox_is_held_to_its_limits_by_its_host_cgroup() {
    let Some(env) = probe_env() else { return };
    if !runsc_present() {
        return;
    }
    let served = env.serve_probe(
        "gen1-limits",
        &[
            "--execution-environment",
            "gen1",
            "--memory",
            "256Mi",
            "--cpu",
            "2",
        ],
    );
    let report = served.get("/").json().unwrap();
    let ids = containers(&env, "gen1-limits");
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        assert_eq!(host_cgroup_file(id, ("", ""), "memory.max"), "268435456");
        assert_eq!(host_cgroup_file(id, ("", ""), "cpu.max"), "200000 100000");
    } else {
        assert_eq!(
            host_cgroup_file(id, ("memory", "memory.limit_in_bytes"), ""),
            "268435456"
        );
        assert_eq!(
            host_cgroup_file(id, ("cpu", "cpu.cfs_quota_us"), ""),
            "200000"
        );
        assert_eq!(
            host_cgroup_file(id, ("cpu", "cpu.cfs_period_us"), ""),
            "100000"
        );
    }
    let procs = host_cgroup_file(id, ("memory", "cgroup.procs"), "cgroup.procs");
    let names: Vec<String> = procs
        .lines()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("runsc-sandbox")),
        "the sandbox is not in its container's cgroup: {names:?}"
    );
    // Inside: no cgroup files, the limit as the machine's memory, /proc/sys not writable.
    assert!(report["cgroup"]["memory_limit"].is_null(), "{report}");
    let meminfo = served.read_inside("/proc/meminfo");
    assert!(
        meminfo.starts_with("MemTotal:") && meminfo.lines().next().unwrap().ends_with(" 262144 kB"),
        "{meminfo}"
    );
    // /proc/sys is gVisor's own kernel's, not the host's: root inside may open its files
    // for writing (runsc ignores readonlyPaths; the write itself fails with EIO), and what
    // they show is the sandbox's.
    assert!(ro_detail_reported(&report), "{report}");
    let inside = served.read_inside("/proc/sys/kernel/hostname");
    assert_eq!(
        inside.trim(),
        report["hostname"].as_str().unwrap(),
        "{report}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(inside.trim(), host.trim());
    let (code, out) = served.interrupt();
    assert!(code.success(), "{out}");
    env.assert_nothing_left("gen1-limits");
}
