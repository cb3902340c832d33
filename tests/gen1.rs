//! The first-generation execution environment (`--execution-environment gen1`, SBX-1) with
//! a real containerd and gVisor's `runsc` (see tests/common): a gen1 service answers from
//! inside gVisor (system calls gVisor does not implement fail there), gen2 stays the default
//! and has them, jobs refuse gen1 as Cloud Run does, and a missing runsc is named.
//!
//! Needs `runsc` (Debian package `runsc`; deploy/install-deps.sh installs it): without it
//! these tests skip with a message, except under CI, where they fail.

mod common;

use std::process::Command;

use common::{probe_env, strip_ansi, Env};
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

/// A file inside the container, through the probe's `/readfile`.
fn read_inside(served: &common::Served, path: &str) -> String {
    let r = served.get(&format!("/readfile?path={path}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()["contents"]
        .as_str()
        .unwrap_or_default()
        .to_string()
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
    let version = read_inside(&served, "/proc/version");
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert_ne!(version.trim(), host.trim(), "{version}");
    // The memory limit is what gVisor reports as the machine's memory.
    let meminfo = read_inside(&served, "/proc/meminfo");
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

/// Runs `runlet job execute NAME --image probe --args job ARGS`; exit code and output.
fn job(env: &Env, name: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = env
        .runlet()
        .args(["job", "execute", name, "--image", "probe", "--args", "job"])
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

#[test]
fn jobs_run_in_gen2_and_refuse_gen1_as_cloud_run_does() {
    let Some(env) = probe_env() else { return };
    let (code, out) = job(&env, "gen1-job", &["--execution-environment", "gen1"]);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("--execution-environment") && out.contains("gen2"),
        "{out}"
    );
    let (code, out) = job(&env, "gen2-job", &["--execution-environment", "gen2"]);
    assert_eq!(code, Some(0), "{out}");
    let line = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.split_once("] ")?.1).ok())
        .find(|v| v["probe"] == "job")
        .unwrap_or_else(|| panic!("no job line:\n{out}"));
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
         echo project=$(printf 'GET /computeMetadata/v1/project/project-id HTTP/1.0\\r\\nMetadata-Flavor: Google\\r\\n\\r\\n' | nc -w 5 metadata.google.internal 80 | tail -n 1); \
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
    // busybox httpd under this gVisor sometimes drops a connection (502): the conformance
    // suite's META checks retry on it too. Only the answer's content matters here.
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
        served.wait_for_output("project=", std::time::Duration::from_secs(10)),
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
