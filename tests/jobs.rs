//! `runlet job` against a real containerd (see tests/common): the workload is the probe in
//! job mode, which prints one JSON line with what it sees (env, argv) and can be told to
//! fail until an attempt, sleep, ignore SIGTERM, allocate memory, or exit with a code.
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{env, probe_env, strip_ansi, Env, Lines};
use serde_json::Value;

/// Runs `runlet job ARGS` to its end.
fn job(env: &Env, args: &[&str]) -> Output {
    env.runlet()
        .arg("job")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run runlet")
}

/// Runs `runlet job execute NAME --image probe --args job ARGS` (the probe in job mode) to
/// its end.
fn probe_job(env: &Env, name: &str, args: &[&str]) -> Output {
    let mut full = vec!["execute", name, "--image", "probe", "--args", "job"];
    full.extend_from_slice(args);
    job(env, &full)
}

fn text(out: &Output) -> String {
    strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The execution name from `Execution [NAME] of job ...`.
fn execution_name(stdout: &str) -> String {
    let start = stdout.find("Execution [").expect("an execution header") + "Execution [".len();
    let end = stdout[start..].find(']').unwrap() + start;
    stdout[start..end].to_string()
}

fn describe(env: &Env, execution: &str) -> Value {
    let out = job(
        env,
        &["executions", "describe", execution, "--format", "json"],
    );
    assert!(out.status.success(), "describe {execution}: {}", text(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("describe is not JSON ({e}): {}", text(&out)))
}

/// The JSON lines the probe printed, as (task index, attempt, report).
fn probe_reports(stdout: &str) -> Vec<(u64, u64, Value)> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("[task ")?;
            let (head, json) = rest.split_once("] ")?;
            let (index, attempt) = head.split_once(" attempt ")?;
            let v: Value = serde_json::from_str(json).ok()?;
            (v["probe"] == "job").then(|| (index.parse().unwrap(), attempt.parse().unwrap(), v))
        })
        .collect()
}

/// Nothing of `needle` is left: what [`Env::assert_nothing_left`] looks at, and attempt
/// files.
fn assert_nothing_left(env: &Env, needle: &str) {
    env.assert_nothing_left(needle);
    let files = common::file_names(env.state_dir.join("jobs/tasks"));
    assert!(
        !files.iter().any(|n| common::mentions(n, needle)),
        "attempt files left: {files:?}"
    );
}

/// A `runlet job execute` running in the background, its lines timestamped as they come.
struct Running {
    child: Child,
    t0: Instant,
    lines: Lines,
}

impl Running {
    fn start(env: &Env, args: &[&str]) -> Running {
        let mut child = env
            .runlet()
            .args(["job", "execute"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runlet");
        let t0 = Instant::now();
        let lines = Lines::new();
        lines.read_in_thread(child.stdout.take().unwrap());
        lines.read_in_thread(child.stderr.take().unwrap());
        Running { child, t0, lines }
    }

    /// `runlet job execute NAME --image probe --args job ARGS` (the probe in job mode).
    fn probe(env: &Env, name: &str, args: &[&str]) -> Running {
        let mut full = vec![name, "--image", "probe", "--args", "job"];
        full.extend_from_slice(args);
        Running::start(env, &full)
    }

    fn output(&self) -> String {
        self.lines.text()
    }

    /// When the first line containing `needle` arrived.
    fn seen(&self, needle: &str) -> Option<Duration> {
        self.lines.seen(needle)
    }

    fn wait_for(&self, needle: &str, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self.seen(needle) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not seen within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit; returns the exit code, when it ended, and the output.
    fn finish(mut self, within: Duration) -> (Option<i32>, Duration, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "runlet did not finish within {within:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let ended = self.t0.elapsed();
        std::thread::sleep(Duration::from_millis(200)); // let the readers drain
        (status.code(), ended, self.output())
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Tasks of execution `name` that containerd runs right now.
fn running_tasks(env: &Env, name: &str) -> usize {
    env.ctr(&["tasks", "ls"])
        .lines()
        .filter(|l| l.contains(name) && l.contains("RUNNING"))
        .count()
}

#[test]
fn four_tasks_two_at_a_time_each_see_their_cloud_run_env() {
    let Some(env) = probe_env() else { return };
    let run = Running::probe(
        &env,
        "jobs-env",
        &[
            "--tasks",
            "4",
            "--parallelism",
            "2",
            "--set-env-vars",
            "PROBE_SLEEP_MS=1500,USER_VAR=hi",
        ],
    );
    run.wait_for("Execution [", Duration::from_secs(30));
    let name = execution_name(&run.output());
    assert!(
        name.starts_with("jobs-env-") && name.len() == "jobs-env-".len() + 5,
        "{name}"
    );
    let suffix = &name["jobs-env-".len()..];
    assert!(
        suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{name}"
    );
    // Sample containerd while it runs: never more than 2 tasks at once.
    let mut peak = 0;
    while run.seen(&format!("Execution [{name}] succeeded")).is_none()
        && run.seen("failed:").is_none()
    {
        peak = peak.max(running_tasks(&env, &name));
        if run.t0.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, took, out) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    assert!(peak <= 2, "{peak} tasks ran at once");
    assert_eq!(peak, 2, "two tasks should have run together");
    assert!(
        took >= Duration::from_secs(3),
        "4 tasks of 1.5 s two at a time take two rounds: {took:?}"
    );

    let reports = probe_reports(&out);
    assert_eq!(reports.len(), 4, "{out}");
    let mut indexes: Vec<u64> = reports.iter().map(|(i, _, _)| *i).collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2, 3]);
    for (index, attempt, r) in &reports {
        let e = &r["env"];
        assert_eq!(e["CLOUD_RUN_JOB"], "jobs-env");
        assert_eq!(e["CLOUD_RUN_EXECUTION"], name.as_str());
        assert_eq!(
            e["CLOUD_RUN_TASK_INDEX"],
            index.to_string(),
            "the prefix names the task that printed it"
        );
        assert_eq!(e["CLOUD_RUN_TASK_ATTEMPT"], attempt.to_string());
        assert_eq!(e["CLOUD_RUN_TASK_ATTEMPT"], "0");
        assert_eq!(e["CLOUD_RUN_TASK_COUNT"], "4");
        assert_eq!(e["USER_VAR"], "hi");
        assert!(e.get("PORT").is_none(), "JOB-2: no PORT: {e}");
    }
    // stderr lines are prefixed too.
    assert!(
        out.lines()
            .any(|l| l.starts_with("[task ") && l.contains("probe: stderr check")),
        "{out}"
    );
    // The summary, and the record.
    assert!(
        out.contains("4 succeeded, 0 failed, 0 cancelled, 0 retried"),
        "{out}"
    );
    let d = describe(&env, &name);
    let s = &d["status"];
    assert_eq!(s["state"], "Succeeded");
    assert_eq!(
        (
            s["succeededCount"].as_u64(),
            s["failedCount"].as_u64(),
            s["runningCount"].as_u64()
        ),
        (Some(4), Some(0), Some(0))
    );
    assert_eq!(s["parallelism"], 2);
    assert!(s["startTime"].is_string() && s["completionTime"].is_string());
    for t in s["tasks"].as_array().unwrap() {
        assert_eq!(t["lastAttemptResult"]["exitCode"], 0);
        assert_eq!(t["retried"], 0);
    }
    let list = job(
        &env,
        &["executions", "list", "jobs-env", "--format", "json"],
    );
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["metadata"]["name"] == name.as_str()));
    let table = text(&job(&env, &["executions", "list", "jobs-env"]));
    assert!(
        table
            .lines()
            .any(|l| l.contains(&name) && l.contains("Succeeded")),
        "{table}"
    );
    assert_nothing_left(&env, &name);
}

#[test]
fn a_task_failing_on_attempts_0_and_1_succeeds_on_attempt_2() {
    let Some(env) = probe_env() else { return };
    let out = probe_job(
        &env,
        "jobs-retry",
        &["--set-env-vars", "PROBE_FAIL_UNTIL_ATTEMPT=2"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let name = execution_name(&all);
    let attempts: Vec<u64> = probe_reports(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .map(|(_, a, r)| {
            assert_eq!(r["env"]["CLOUD_RUN_TASK_ATTEMPT"], a.to_string());
            *a
        })
        .collect();
    assert_eq!(attempts, vec![0, 1, 2], "{all}");
    let s = describe(&env, &name)["status"].clone();
    assert_eq!(s["state"], "Succeeded");
    assert_eq!(s["retriedCount"], 1);
    assert_eq!(s["tasks"][0]["retried"], 2);
    assert_eq!(s["tasks"][0]["attempts"], 3);
    assert_eq!(s["tasks"][0]["lastAttemptResult"]["exitCode"], 0);
    assert!(all.contains("1 retried"), "{all}");
    assert_nothing_left(&env, &name);
}

#[test]
fn a_task_that_always_fails_with_max_retries_1_gets_two_attempts_and_the_cli_fails() {
    let Some(env) = probe_env() else { return };
    let out = probe_job(
        &env,
        "jobs-fail",
        &["--max-retries", "1", "--set-env-vars", "PROBE_JOB_EXIT=3"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let name = execution_name(&all);
    assert_eq!(
        probe_reports(&String::from_utf8_lossy(&out.stdout)).len(),
        2,
        "{all}"
    );
    let s = describe(&env, &name)["status"].clone();
    assert_eq!(s["state"], "Failed");
    assert_eq!(
        (s["failedCount"].as_u64(), s["succeededCount"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(s["tasks"][0]["attempts"], 2);
    assert_eq!(s["tasks"][0]["lastAttemptResult"]["exitCode"], 3);
    assert!(all.contains("exit code 3"), "{all}");
    assert_nothing_left(&env, &name);
}

#[test]
fn past_the_task_timeout_sigterm_then_sigkill_10_s_later() {
    let Some(env) = probe_env() else { return };
    let run = Running::probe(
        &env,
        "jobs-timeout",
        &[
            "--task-timeout",
            "2s",
            "--max-retries",
            "0",
            "--set-env-vars",
            "PROBE_IGNORE_SIGTERM=1,PROBE_SLEEP_MS=120000",
        ],
    );
    let started = run.wait_for("\"probe\":\"job\"", Duration::from_secs(30));
    let sigterm = run.wait_for("SIGTERM received", Duration::from_secs(30));
    let (code, ended, out) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{out}");
    let to_term = sigterm - started;
    let term_to_end = ended - sigterm;
    assert!(
        to_term >= Duration::from_millis(1800) && to_term < Duration::from_secs(4),
        "SIGTERM {to_term:?} after the start:\n{out}"
    );
    assert!(
        term_to_end >= Duration::from_millis(9500) && term_to_end < Duration::from_secs(12),
        "ended {term_to_end:?} after SIGTERM:\n{out}"
    );
    let name = execution_name(&out);
    let r = describe(&env, &name)["status"]["tasks"][0]["lastAttemptResult"].clone();
    assert_eq!(r["termSignal"], 9, "{r}");
    assert_eq!(r["reason"], "TimedOut");
    assert!(r.get("exitCode").is_none());
    assert_nothing_left(&env, &name);
}

#[test]
fn a_task_over_its_memory_limit_fails_as_out_of_memory() {
    let Some(env) = probe_env() else { return };
    let out = probe_job(
        &env,
        "jobs-oom",
        &[
            "--memory",
            "64Mi",
            "--max-retries",
            "0",
            "--set-env-vars",
            "PROBE_ALLOC_MIB=256",
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let name = execution_name(&all);
    let r = describe(&env, &name)["status"]["tasks"][0]["lastAttemptResult"].clone();
    assert_eq!(r["reason"], "OutOfMemory", "{r}");
    assert_eq!(r["termSignal"], 9);
    assert!(all.contains("out of memory"), "{all}");
    // A plain SIGKILL-free failure is not mistaken for OOM: the same job within its limit.
    let ok = probe_job(
        &env,
        "jobs-oom",
        &[
            "--memory",
            "512Mi",
            "--max-retries",
            "0",
            "--set-env-vars",
            "PROBE_ALLOC_MIB=64",
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert_nothing_left(&env, &name);
}

#[test]
fn ctrl_c_cancels_the_execution_and_leaves_nothing_in_containerd() {
    let Some(env) = probe_env() else { return };
    let run = Running::probe(
        &env,
        "jobs-cancel",
        &[
            "--tasks",
            "3",
            "--parallelism",
            "2",
            "--set-env-vars",
            "PROBE_SLEEP_MS=120000",
        ],
    );
    // Both running tasks have started.
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe_reports(&run.output()).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "tasks did not start:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let name = execution_name(&run.output());
    assert_eq!(running_tasks(&env, &name), 2);
    run.signal("INT");
    let (code, _, out) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(130), "{out}");
    assert_eq!(
        out.matches("SIGTERM received").count(),
        2,
        "each running task got SIGTERM:\n{out}"
    );
    let s = describe(&env, &name)["status"].clone();
    assert_eq!(s["state"], "Cancelled", "{s}");
    assert_eq!(s["cancelledCount"], 3);
    assert_eq!(s["runningCount"], 0);
    assert!(s["completionTime"].is_string());
    assert_nothing_left(&env, &name);
}

#[test]
fn a_runlet_killed_mid_execution_is_cleaned_up_by_the_next_job_command() {
    let Some(env) = env() else { return };
    // A state dir of its own: any job command of a test running alongside would otherwise
    // recover (clean up) this execution before the test looks at what runlet left behind.
    let env = env.isolated("crash");
    env.load("probe.oci.tar");
    let run = Running::probe(
        &env,
        "jobs-crash",
        &[
            "--tasks",
            "2",
            "--parallelism",
            "1",
            "--set-env-vars",
            "PROBE_SLEEP_MS=120000",
        ],
    );
    run.wait_for("\"probe\":\"job\"", Duration::from_secs(30));
    let name = execution_name(&run.output());
    run.signal("KILL");
    let (code, _, _) = run.finish(Duration::from_secs(10));
    assert_eq!(code, None, "killed by a signal");
    // The task outlives runlet, and the record still says running.
    assert_eq!(running_tasks(&env, &name), 1);
    let raw: Value = serde_json::from_slice(
        &std::fs::read(env.state_dir.join(format!("jobs/executions/{name}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(raw["status"]["state"], "Running");
    // Any job command cleans up.
    let out = job(&env, &["executions", "list", "jobs-crash"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = describe(&env, &name)["status"].clone();
    assert_eq!(s["state"], "Failed", "{s}");
    assert_eq!(s["tasks"][0]["state"], "Failed");
    assert_eq!(s["tasks"][0]["lastAttemptResult"]["reason"], "RunletExited");
    assert_eq!(s["tasks"][1]["state"], "Cancelled");
    assert_nothing_left(&env, &name);
}

#[test]
fn job_yaml_round_trips_and_flags_override_the_file() {
    let Some(env) = probe_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    let yaml = r#"apiVersion: run.googleapis.com/v1
kind: Job
metadata:
  name: jobs-yaml
  labels:
    team: data
spec:
  template:
    spec:
      taskCount: 2
      parallelism: 1
      template:
        spec:
          maxRetries: 0
          timeoutSeconds: 60
          containers:
          - image: docker.io/library/probe:latest
            args:
            - job
            env:
            - name: FROM_FILE
              value: file
            - name: OVERRIDDEN
              value: file
            resources:
              limits:
                memory: 128Mi
                cpu: 500m
"#;
    std::fs::write(&file, yaml).unwrap();
    let f = file.to_str().unwrap();
    let out = job(&env, &["execute", "-f", f]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let name = execution_name(&all);
    assert!(name.starts_with("jobs-yaml-"), "{name}");
    let reports = probe_reports(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(reports.len(), 2);
    for (_, _, r) in &reports {
        assert_eq!(r["env"]["FROM_FILE"], "file");
        assert_eq!(r["env"]["CLOUD_RUN_TASK_COUNT"], "2");
    }
    // The record's spec is the file's spec.template.spec, field for field.
    let file_spec: Value =
        serde_yaml_ng::from_str::<Value>(yaml).unwrap()["spec"]["template"]["spec"].clone();
    assert_eq!(describe(&env, &name)["spec"], file_spec);

    // Flags given win over the file; the rest still comes from it.
    let out = job(
        &env,
        &[
            "execute",
            "-f",
            f,
            "--tasks",
            "3",
            "--set-env-vars",
            "OVERRIDDEN=flag",
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let name = execution_name(&all);
    let reports = probe_reports(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(reports.len(), 3);
    for (_, _, r) in &reports {
        assert_eq!(r["env"]["FROM_FILE"], "file");
        assert_eq!(r["env"]["OVERRIDDEN"], "flag");
        assert_eq!(r["env"]["CLOUD_RUN_TASK_COUNT"], "3");
    }
    let spec = describe(&env, &name)["spec"].clone();
    assert_eq!(spec["taskCount"], 3);
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["template"]["spec"]["timeoutSeconds"], 60);
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "128Mi"
    );
    assert_nothing_left(&env, "jobs-yaml-");
}

#[test]
fn bad_flags_and_bad_yaml_are_refused_before_anything_starts() {
    let Some(env) = env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = ["execute", "jobs-bad", "--image", "probe"];
    for (args, field) in [
        (vec!["--tasks", "0"], "--tasks"),
        (vec!["--tasks", "10001"], "--tasks"),
        (vec!["--tasks", "many"], "--tasks"),
        (vec!["--parallelism", "-2"], "--parallelism"),
        (vec!["--max-retries", "11"], "--max-retries"),
        (vec!["--task-timeout", "forever"], "--task-timeout"),
        (vec!["--task-timeout", "0"], "--task-timeout"),
        (vec!["--memory", "lots"], "--memory"),
        (vec!["--cpu", "99"], "--cpu"),
        (
            vec!["--set-env-vars", "CLOUD_RUN_TASK_INDEX=7"],
            "--set-env-vars",
        ),
    ] {
        let out = job(&env, &[&base[..], &args[..]].concat());
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{args:?}: {err}");
    }
    let out = job(&env, &["execute", "Bad_Name", "--image", "probe"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    let good = "apiVersion: run.googleapis.com/v1\nkind: Job\nmetadata:\n  name: jobs-bad\nspec:\n  template:\n    spec:\n      taskCount: 1\n      template:\n        spec:\n          containers:\n          - image: probe\n";
    for (yaml, needle) in [
        (
            good.replace(
                "          - image: probe\n",
                "          - image: probe\n            workingDir: /x\n",
            ),
            "spec.template.spec.template.spec.containers[0]: unknown field `workingDir`",
        ),
        (
            good.replace(
                "      taskCount: 1\n",
                "      taskCount: 1\n      serviceAccountName: x\n",
            ),
            "spec.template.spec: unknown field `serviceAccountName`",
        ),
        (
            good.replace("taskCount: 1", "taskCount: 0"),
            "spec.template.spec.taskCount",
        ),
        (good.replace("kind: Job", "kind: Service"), "kind"),
        (good.replace("          - image: probe\n", ""), "containers"),
    ] {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let out = job(&env, &["execute", "-f", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{needle}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "want {needle:?} in: {err}");
    }
    // Refused before containerd is contacted at all.
    let offline = Command::new(common::runlet_bin())
        .args([
            "--containerd-address",
            "/nonexistent.sock",
            "--no-embedded-containerd",
            "job",
            "execute",
            "jobs-bad",
            "--image",
            "probe",
            "--tasks",
            "0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&offline.stderr);
    assert_eq!(offline.status.code(), Some(64), "{err}");
    assert!(
        err.contains("--tasks") && !err.contains("cannot reach containerd"),
        "{err}"
    );
    // Nothing was started or recorded.
    let list = job(
        &env,
        &["executions", "list", "jobs-bad", "--format", "json"],
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&list.stdout).unwrap(),
        serde_json::json!([])
    );
    assert_nothing_left(&env, "jobs-bad");
}

#[test]
fn describing_an_unknown_execution_says_how_to_find_one() {
    let Some(env) = env() else { return };
    let out = job(&env, &["executions", "describe", "nope-abcde"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope-abcde") && err.contains("runlet job executions list"),
        "{err}"
    );
}
