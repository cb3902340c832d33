//! Google's official Cloud Run clients, unmodified, against `runlet daemon` on real
//! containerd: Python's `google-cloud-run` over gRPC and over REST (tests/api/python), and
//! the Rust `google-cloud-run-v2` crate (REST; tests/api/rust_client.rs). Each creates a
//! service from the loaded probe image, waits for the operation, GETs the returned `uri` by
//! its name (the system resolver, through the daemon's /etc/hosts block), updates an env var
//! and sees the new revision answer, lists revisions, deletes, finds nothing left, and checks
//! the errors (unknown image, duplicate, bad name).
//!
//! The daemons here manage /etc/hosts, so the tests take turns (one lock).

mod common;
#[path = "api/rust_client.rs"]
mod rust_client;
#[path = "api/rust_jobs.rs"]
mod rust_jobs;

use std::process::Command;
// A plain lock between test threads (no async runtime holds it).
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;

use common::daemon::{Daemon, Launch};

/// One daemon at a time owns the /etc/hosts block.
#[allow(clippy::disallowed_types)]
static HOSTS: Mutex<()> = Mutex::new(());

fn daemon(env: &common::Env) -> Daemon {
    Daemon::launch(
        env,
        Launch {
            manage_hosts: true,
            ..Launch::default()
        },
    )
    .unwrap_or_else(|f| panic!("runlet daemon did not start: {f:?}"))
}

/// The Python with `google-cloud-run` installed (deploy/test.sh makes it); in CI a missing
/// one fails the test.
fn python() -> Option<String> {
    match std::env::var("RUNLET_TEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but RUNLET_TEST_PYTHON is not: deploy/test.sh installs google-cloud-run into target/pyenv")
        }
        Err(_) => {
            eprintln!("SKIPPED: set RUNLET_TEST_PYTHON to a python with google-cloud-run (deploy/test.sh does)");
            None
        }
    }
}

/// The flow of tests/api/python/`script` over `transport`, as service `service`, with the
/// archives `images` loaded besides the probe.
fn python_flow(script: &str, transport: &str, service: &str, images: &[&str]) {
    let Some(env) = common::probe_env() else {
        return;
    };
    let Some(py) = python() else { return };
    for i in images {
        env.load(i);
    }
    let _hosts = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let env = common::daemon::fresh_state(&env, service);
    let d = daemon(&env);
    let target = match transport {
        "--grpc" => d.api.to_string(),
        _ => format!("http://{}", d.api),
    };
    let script = format!("{}/tests/api/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(py)
        .arg(script)
        .args([
            transport,
            &target,
            "--service",
            service,
            "--containerd",
            &env.containerd,
        ])
        .env("NO_GCE_CHECK", "True")
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the Python client's flow failed:\n{text}\n--- daemon ---\n{}",
        d.output()
    );
    assert!(text.contains("ok:"), "{text}");
    env.assert_nothing_left(service);
}

/// A jobs flow (tests/api/python/`script`) over `transport`, as job `job`, with the
/// busybox and probe images loaded.
fn python_jobs_flow(script: &str, transport: &str, job: &str) {
    let Some(env) = common::probe_env() else {
        return;
    };
    let Some(py) = python() else { return };
    env.load("busybox.oci.tar");
    let _hosts = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let env = common::daemon::fresh_state(&env, job);
    let d = daemon(&env);
    let target = match transport {
        "--grpc" => d.api.to_string(),
        _ => format!("http://{}", d.api),
    };
    let script = format!("{}/tests/api/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(py)
        .arg(&script)
        .args([
            transport,
            &target,
            "--job",
            job,
            "--containerd",
            &env.containerd,
        ])
        .env("NO_GCE_CHECK", "True")
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the Python client's jobs flow {script} failed:\n{text}\n--- daemon ---\n{}",
        d.output()
    );
    assert!(text.contains("PASS"), "{text}");
    env.assert_nothing_left(&format!("{job}-"));
}

#[test]
fn official_python_client_runs_jobs_over_grpc() {
    python_jobs_flow("jobs_test.py", "--grpc", "pyjob-grpc");
}

#[test]
fn official_python_client_runs_jobs_over_rest() {
    python_jobs_flow("jobs_test.py", "--rest", "pyjob-rest");
}

/// A job with a sidecar (issue 16): the main container reaches it on localhost, started
/// after its startup probe passed (its exit code decides the execution); GET returns both
/// containers as stored; an unknown `dependsOn` and a startup probe on the main container
/// are INVALID_ARGUMENT naming `job.template.template.containers[0]`'s field.
#[test]
fn official_python_client_runs_jobs_with_sidecars() {
    python_jobs_flow("job_sidecars_test.py", "--rest", "pyjob-side");
}

#[test]
fn official_python_client_over_grpc() {
    python_flow("services_test.py", "--grpc", "py-grpc", &[]);
}

#[test]
fn official_python_client_over_rest() {
    python_flow("services_test.py", "--rest", "py-rest", &[]);
}

/// A service with a sidecar (issue 16): the ingress container reaches it on localhost and
/// starts after its startup probe passed; GET returns the containers as stored; a bad
/// `dependsOn` is INVALID_ARGUMENT naming `template.containers[1].dependsOn`.
#[test]
fn official_python_client_deploys_sidecars() {
    python_flow(
        "sidecars_test.py",
        "--rest",
        "py-sidecars",
        &["busybox.oci.tar"],
    );
}

#[test]
fn official_rust_client_over_rest() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let _hosts = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let env = common::daemon::fresh_state(&env, "rs-rest");
    let d = daemon(&env);
    let cfg = rust_client::Flow {
        endpoint: format!("http://{}", d.api),
        parent: common::daemon::PARENT.into(),
        service_id: "rs-rest".into(),
        image: "docker.io/library/probe:latest".into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let revisions = rt
        .block_on(rust_client::services_flow(&cfg))
        .unwrap_or_else(|e| {
            panic!(
                "the Rust client's flow failed: {e:#}\n--- daemon ---\n{}",
                d.output()
            )
        });
    for r in &revisions {
        env.assert_nothing_left(r);
    }
}

#[test]
fn official_rust_client_runs_jobs_over_rest() {
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let _hosts = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let env = common::daemon::fresh_state(&env, "rsjob");
    let d = daemon(&env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(rust_jobs::jobs_flow(
        &format!("http://{}", d.api),
        common::daemon::PARENT,
        "rsjob",
    ))
    .unwrap_or_else(|e| {
        panic!(
            "the Rust client's jobs flow failed: {e:#}\n--- daemon ---\n{}",
            d.output()
        )
    });
    env.assert_nothing_left("rsjob-");
}
