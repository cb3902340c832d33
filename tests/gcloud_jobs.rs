//! `gcloud run jobs` (the real gcloud, which must be installed: the test fails without it)
//! against the daemon's Admin API v1 for jobs, with real containers in containerd: create
//! with 3 tasks, `execute --wait` (3 tasks succeed), `--update-env-vars` overrides that
//! reach the containers, a failing execution gcloud reports as failed, executions list,
//! describe, cancel and delete, jobs list from the global endpoint, and delete leaving
//! nothing in containerd.
//!
//! gcloud is pointed at runlet as `runlet setup gcloud` does it: a throwaway
//! `CLOUDSDK_CONFIG` with `api_endpoint_overrides/run http://runlet:PORT/`; it sends its
//! regional calls to `REGION-runlet:PORT`, so both names must resolve to 127.0.0.1 (added
//! to /etc/hosts if missing, never removed).

// These tests time a separate process by the wall clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{fresh_state, Daemon};
use common::strip_ansi;

const PROJECT: &str = "gjobs-test";
const REGION: &str = "us-central1";

/// Sleeps while `$SLEEP` is set (until SIGTERM), then succeeds when `$A` equals `$EXPECT`.
const SCRIPT: &str = r#"trap "exit 143" TERM; if [ -n "$SLEEP" ]; then sleep "$SLEEP" & wait; fi; test "$A" = "$EXPECT""#;

/// Adds `127.0.0.1 NAMES # runlet-gcloud` to /etc/hosts for the names not there yet.
fn ensure_hosts(names: &[&str]) {
    let text = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    let known = |n: &str| {
        text.lines().any(|l| {
            let l = l.split('#').next().unwrap_or("");
            l.split_whitespace().skip(1).any(|w| w == n)
        })
    };
    let missing: Vec<&str> = names.iter().copied().filter(|n| !known(n)).collect();
    if missing.is_empty() {
        return;
    }
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/hosts")
        .expect("open /etc/hosts to append");
    let sep = if text.ends_with('\n') || text.is_empty() {
        ""
    } else {
        "\n"
    };
    writeln!(f, "{sep}127.0.0.1 {} # runlet-gcloud", missing.join(" "))
        .expect("append to /etc/hosts");
}

/// gcloud with its own configuration, pointed at the daemon's API port.
struct Gcloud {
    config: std::path::PathBuf,
}

impl Gcloud {
    fn new(dir: &Path, api_port: u16) -> Gcloud {
        let version = Command::new("gcloud").arg("--version").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "gcloud is required for this test (Google Cloud SDK): {version:?}"
        );
        let config = dir.join("gcloud-config");
        let _ = std::fs::remove_dir_all(&config);
        std::fs::create_dir_all(&config).expect("create CLOUDSDK_CONFIG");
        let g = Gcloud { config };
        for (k, v) in [
            ("auth/disable_credentials", "true".to_string()),
            ("core/should_prompt_to_enable_api", "false".into()),
            ("core/disable_usage_reporting", "true".into()),
            ("component_manager/disable_update_check", "true".into()),
            ("core/project", PROJECT.into()),
            ("run/region", REGION.into()),
            (
                "api_endpoint_overrides/run",
                format!("http://runlet:{api_port}/"),
            ),
        ] {
            let (code, out) = g.run(&["config", "set", k, &v]);
            assert_eq!(code, Some(0), "gcloud config set {k}: {out}");
        }
        g
    }

    /// `gcloud ARGS`: (exit code, stdout and stderr, without colours).
    fn run(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = Command::new("gcloud")
            .args(args)
            .env("CLOUDSDK_CONFIG", &self.config)
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .env("NO_COLOR", "1")
            .output()
            .expect("run gcloud");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), strip_ansi(&text))
    }

    /// `gcloud ARGS` that must succeed: its output.
    fn ok(&self, d: &Daemon, args: &[&str]) -> String {
        let (code, out) = self.run(args);
        assert_eq!(
            code,
            Some(0),
            "gcloud {args:?}:\n{out}\n--- daemon ---\n{}",
            d.output()
        );
        out
    }
}

/// The execution gcloud's output names: `Execution [NAME]`, or (when it failed) in the
/// `gcloud run jobs executions describe NAME` it suggests.
fn execution_in(out: &str) -> String {
    if let Some(at) = out.find("Execution [") {
        let rest = &out[at + "Execution [".len()..];
        return rest[..rest.find(']').expect("closing ]")].to_string();
    }
    let at = out
        .find("executions describe ")
        .unwrap_or_else(|| panic!("no execution named in: {out}"));
    out[at + "executions describe ".len()..]
        .split_whitespace()
        .next()
        .expect("a name")
        .to_string()
}

fn v2_execution(d: &Daemon, job: &str, execution: &str) -> serde_json::Value {
    d.ok(
        "GET",
        &format!("projects/{PROJECT}/locations/{REGION}/jobs/{job}/executions/{execution}"),
        None,
    )
}

#[test]
fn gcloud_run_jobs_against_the_daemon() {
    let Some(env) = common::env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "gcloud-jobs");
    let region_host = format!("{REGION}-runlet");
    ensure_hosts(&["runlet", &region_host]);
    let d = Daemon::start(&env);
    std::fs::create_dir_all(&env.state_dir).unwrap();
    let g = Gcloud::new(&env.state_dir, d.api.port());
    let args = format!("--args=-c,{SCRIPT}");

    let out = g.ok(
        &d,
        &[
            "run",
            "jobs",
            "create",
            "gj",
            "--image",
            "busybox",
            "--tasks",
            "3",
            "--max-retries",
            "0",
            "--set-env-vars",
            "A=x,EXPECT=x",
            "--command",
            "/bin/sh",
            &args,
            "--quiet",
        ],
    );
    assert!(out.contains("has successfully been created"), "{out}");
    // update: gcloud reads the job, changes it and replaces it (PUT), then waits for it.
    g.ok(
        &d,
        &[
            "run",
            "jobs",
            "update",
            "gj",
            "--task-timeout",
            "5m",
            "--quiet",
        ],
    );
    let job = d.ok(
        "GET",
        &format!("projects/{PROJECT}/locations/{REGION}/jobs/gj"),
        None,
    );
    assert_eq!(job["template"]["template"]["timeout"], "300s", "{job}");
    assert_eq!(job["template"]["taskCount"], 3, "{job}");
    assert_eq!(job["generation"], "2", "{job}");

    // execute --wait: 3 tasks succeed.
    let out = g.ok(&d, &["run", "jobs", "execute", "gj", "--wait"]);
    assert!(out.contains("has successfully completed"), "{out}");
    let first = execution_in(&out);
    let x = v2_execution(&d, "gj", &first);
    assert_eq!(x["succeededCount"], 3, "{x}");
    let list = g.ok(&d, &["run", "jobs", "executions", "list", "--job", "gj"]);
    assert!(list.contains(&first) && list.contains("3 / 3"), "{list}");
    let described = g.ok(&d, &["run", "jobs", "executions", "describe", &first]);
    assert!(described.contains(&first), "{described}");
    assert!(described.contains("busybox"), "{described}");

    // Overrides reach the containers: A=b alone fails the test in every task...
    let (code, out) = g.run(&[
        "run",
        "jobs",
        "execute",
        "gj",
        "--wait",
        "--update-env-vars",
        "A=b",
    ]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("The execution failed"), "{out}");
    let failed = execution_in(&out);
    let x = v2_execution(&d, "gj", &failed);
    assert_eq!(x["failedCount"], 3, "{x}");
    // ...and with EXPECT=b too it succeeds, with 2 tasks.
    let out = g.ok(
        &d,
        &[
            "run",
            "jobs",
            "execute",
            "gj",
            "--wait",
            "--update-env-vars",
            "A=b,EXPECT=b",
            "--tasks",
            "2",
        ],
    );
    assert!(out.contains("has successfully completed"), "{out}");
    let x = v2_execution(&d, "gj", &execution_in(&out));
    assert_eq!(x["succeededCount"], 2, "{x}");
    assert_eq!(x["taskCount"], 2, "{x}");

    // A job's IAM policy: add a binding (gcloud reads, then writes with the etag), read it.
    g.ok(
        &d,
        &[
            "run",
            "jobs",
            "add-iam-policy-binding",
            "gj",
            "--member",
            "user:me@example.com",
            "--role",
            "roles/run.invoker",
        ],
    );
    let policy = g.ok(
        &d,
        &["run", "jobs", "get-iam-policy", "gj", "--format", "json"],
    );
    assert!(policy.contains("user:me@example.com"), "{policy}");
    assert!(policy.contains("roles/run.invoker"), "{policy}");
    let described = g.ok(&d, &["run", "jobs", "describe", "gj"]);
    assert!(described.contains("Executed 3 times"), "{described}");
    assert!(described.contains("busybox"), "{described}");
    // jobs list goes to the global endpoint (runlet:PORT): every region.
    let jobs = g.ok(&d, &["run", "jobs", "list"]);
    assert!(jobs.contains("gj") && jobs.contains(REGION), "{jobs}");

    // Cancel a running execution.
    let out = g.ok(
        &d,
        &[
            "run",
            "jobs",
            "execute",
            "gj",
            "--async",
            "--update-env-vars",
            "SLEEP=300",
        ],
    );
    let long = execution_in(&out);
    let out = g.ok(
        &d,
        &["run", "jobs", "executions", "cancel", &long, "--quiet"],
    );
    assert!(!out.contains("ERROR"), "{out}");
    let x = v2_execution(&d, "gj", &long);
    assert!(x["cancelledCount"].as_i64() > Some(0), "{x}");
    assert_eq!(x["succeededCount"].as_i64(), None, "{x}");

    // Delete an execution.
    g.ok(
        &d,
        &["run", "jobs", "executions", "delete", &failed, "--quiet"],
    );
    let list = g.ok(&d, &["run", "jobs", "executions", "list", "--job", "gj"]);
    assert!(!list.contains(&failed) && list.contains(&first), "{list}");
    let (code, out) = g.run(&["run", "jobs", "executions", "describe", &failed]);
    assert_ne!(code, Some(0), "{out}");

    // A missing job: Google's error, printed by gcloud.
    let (code, out) = g.run(&["run", "jobs", "execute", "nosuchjob", "--wait"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("nosuchjob"), "{out}");

    g.ok(&d, &["run", "jobs", "delete", "gj", "--quiet"]);
    let (code, out) = g.run(&["run", "jobs", "describe", "gj"]);
    assert_ne!(code, Some(0), "{out}");
    // The executions' task containers go with the job.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = env.ctr(&["containers", "ls", "-q"]);
        if !left.contains("gj-") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(d);
    env.assert_nothing_left("gj-");
}
