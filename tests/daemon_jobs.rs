//! The daemon's jobs through `runlet jobs ...` against real containerd: create, execute with
//! `--wait` and overrides, executions and tasks listed; `runlet job executions list` (the
//! foreground command) reads the same store, shows the daemon's running execution and never
//! marks it; cancel; delete. And `kill -9` of the daemon mid-execution: job commands leave
//! the execution alone while the daemon is down; the restarted daemon adopts the running
//! task (its exit is recorded, the other task runs after it, the counts are true) and can
//! cancel an adopted one.

mod common;

use std::time::Duration;

use common::daemon::{fresh_state, Daemon};

/// Task 1's first attempt fails; `sleep` as the first argument waits until SIGTERM.
const SCRIPT: &str = concat!(
    r#"trap "exit 143" TERM; "#,
    r#"if [ "$1" = sleep ]; then sleep 300 & wait; exit 0; fi; "#,
    r#"if [ "$1" = nap ]; then sleep 4; exit 0; fi; "#,
    r#"if [ "$CLOUD_RUN_TASK_INDEX" = 1 ] && [ "$CLOUD_RUN_TASK_ATTEMPT" = 0 ]; then exit 3; fi; "#,
    r#"echo task "$CLOUD_RUN_TASK_INDEX": "$@""#
);

/// A task's main container with a sidecar: fetches the `web` sidecar's page once (no retry:
/// web must have passed its startup probe), reads the file web wrote on the shared volume.
const MAIN: &str = "wget -q -O - http://127.0.0.1:8081/hello.txt || exit 9; \
    cat /data/msg || exit 8; echo main-index=$CLOUD_RUN_TASK_INDEX";

/// The `web` sidecar: writes its page and the shared file, says its task and `$GREETING`,
/// listens one second late, exits on SIGTERM.
const WEB: &str = "mkdir -p /www; echo hi-from-sidecar > /www/hello.txt; \
    echo written-by-web > /shared/msg; echo side-index=$CLOUD_RUN_TASK_INDEX greeting=$GREETING; \
    trap 'echo web-got-term; exit 0' TERM; sleep 1; httpd -p 8081 -h /www; \
    while :; do sleep 0.2; done";

/// `runlet ARGS --api ADDR`: (exit code, stdout, stderr).
fn cli(env: &common::Env, d: &Daemon, args: &[&str]) -> (Option<i32>, String, String) {
    d.cli(env, args)
}

/// [`cli`] that must succeed: its stdout.
fn ok(env: &common::Env, d: &Daemon, args: &[&str]) -> String {
    d.cli_ok(env, args).0
}

fn create(env: &common::Env, d: &Daemon, job: &str) {
    let command = format!("^~^/bin/sh~-c~{SCRIPT}~sh");
    ok(
        env,
        d,
        &[
            "jobs",
            "create",
            job,
            "--image",
            "busybox",
            "--tasks",
            "4",
            "--parallelism",
            "2",
            "--max-retries",
            "2",
            "--command",
            &command,
            "--args",
            "first",
        ],
    );
}

/// The first execution id in `runlet jobs executions list` output whose row has `word`.
fn execution_with(list: &str, word: &str) -> Option<String> {
    list.lines()
        .skip(1)
        .find(|l| l.contains(word))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(String::from)
}

/// Runs the long execution (`how` as the argument: `sleep` until SIGTERM, `nap` for 4 s)
/// with `tasks` tasks and waits until its first task runs; its id.
fn start_sleeper(env: &common::Env, d: &Daemon, job: &str) -> String {
    start_run(env, d, job, "sleep", "1")
}

fn start_run(env: &common::Env, d: &Daemon, job: &str, how: &str, tasks: &str) -> String {
    let out = ok(
        env,
        d,
        &["jobs", "execute", job, "--args", how, "--tasks", tasks],
    );
    let id = out
        .split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_else(|| panic!("no execution id in {out}"))
        .to_string();
    // Counted running from its start (container creation on); wait for the process.
    let container = format!("{id}-0-0");
    assert!(
        common::within(Duration::from_secs(30), || {
            !ok(env, d, &["jobs", "executions", "describe", &id]).contains("Running       0")
                && env
                    .ctr(&["tasks", "ls"])
                    .lines()
                    .any(|l| l.starts_with(&container) && l.contains("RUNNING"))
        }),
        "{id} never ran a task:\n{}",
        d.output()
    );
    id
}

#[test]
fn jobs_through_the_cli_and_one_store_with_runlet_job() {
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "jobs-cli");
    let d = Daemon::start(&env);
    create(&env, &d, "clijob");
    let described = ok(&env, &d, &["jobs", "describe", "clijob"]);
    assert!(described.contains("Tasks         4"), "{described}");
    assert!(ok(&env, &d, &["jobs", "list"]).contains("clijob"));

    let out = ok(&env, &d, &["jobs", "execute", "clijob", "--wait"]);
    assert!(out.contains("has successfully completed"), "{out}");
    assert!(out.contains("4 succeeded"), "{out}");
    let list = ok(&env, &d, &["jobs", "executions", "list", "--job", "clijob"]);
    let first = execution_with(&list, "Succeeded").unwrap_or_else(|| panic!("{list}"));
    let tasks = ok(
        &env,
        &d,
        &["jobs", "executions", "tasks", "list", "--execution", &first],
    );
    assert_eq!(tasks.lines().count(), 5, "{tasks}");
    assert!(tasks.contains(&format!("{first}-task1")), "{tasks}");

    // Overrides: 2 tasks with other arguments.
    let out = ok(
        &env,
        &d,
        &[
            "jobs", "execute", "clijob", "--wait", "--tasks", "2", "--args", "second",
        ],
    );
    assert!(out.contains("2 succeeded"), "{out}");

    // A running execution of the daemon: the foreground command lists it and leaves it
    // running (its records are one store; the daemon owns this one).
    let long = start_sleeper(&env, &d, "clijob");
    let (code, fg, err) = {
        let out = env
            .runlet()
            .args(["job", "executions", "list"])
            .output()
            .expect("run runlet");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{fg}{err}");
    assert!(fg.contains(&long) && fg.contains(&first), "{fg}");
    let described = ok(&env, &d, &["jobs", "executions", "describe", &long]);
    assert!(described.contains(": Running"), "{described}");
    let tasks = env.ctr(&["tasks", "ls"]);
    assert!(
        tasks.contains(&format!("{long}-0-0")),
        "the daemon's task container was touched: {tasks}\n{}\n--- daemon ---\n{}",
        ok(&env, &d, &["jobs", "executions", "describe", &long]),
        d.output()
    );

    let out = ok(&env, &d, &["jobs", "executions", "cancel", &long]);
    assert!(out.contains("cancelled"), "{out}");
    let described = ok(&env, &d, &["jobs", "executions", "describe", &long]);
    assert!(described.contains(": Cancelled"), "{described}");
    ok(&env, &d, &["jobs", "executions", "delete", &first]);
    let list = ok(&env, &d, &["jobs", "executions", "list"]);
    assert!(!list.contains(&first), "{list}");
    ok(&env, &d, &["jobs", "delete", "clijob"]);
    let (code, _, err) = cli(&env, &d, &["jobs", "describe", "clijob"]);
    assert_ne!(code, Some(0), "{err}");
    drop(d);
    env.assert_nothing_left("clijob-");
}

#[test]
fn a_killed_daemon_adopts_its_running_tasks_and_the_execution_goes_on() {
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "jobs-kill");
    let mut d = Daemon::start(&env);
    create(&env, &d, "killjob");
    // Two tasks of 4 s (the job's parallelism is 2: both run); caught running.
    let long = start_run(&env, &d, "killjob", "nap", "2");
    d.child.kill().expect("SIGKILL the daemon");
    d.child.wait().expect("reap the daemon");
    let container = format!("{long}-0-0");
    let tasks = env.ctr(&["tasks", "ls"]);
    assert!(
        tasks.contains(&container),
        "{container} not in {tasks}\n--- daemon ---\n{}",
        d.output()
    );

    // A job command while the daemon is down leaves its execution to it.
    let (code, _) = env.run(&["job", "executions", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        env.ctr(&["tasks", "ls"]).contains(&container),
        "a job command removed the daemon's task"
    );

    // Restarted, the daemon adopts the running task: its exit is recorded, the rest runs.
    let mut d2 = Daemon::start(&env);
    assert!(
        common::within(Duration::from_secs(60), || {
            ok(&env, &d2, &["jobs", "executions", "describe", &long]).contains(": Succeeded")
        }),
        "{long} did not complete after the restart:\n{}\n--- daemon ---\n{}",
        ok(&env, &d2, &["jobs", "executions", "describe", &long]),
        d2.output()
    );
    let described = ok(&env, &d2, &["jobs", "executions", "describe", &long]);
    assert!(described.contains("Succeeded     2"), "{described}");
    assert!(described.contains("Running       0"), "{described}");
    assert!(described.contains("Failed        0"), "{described}");
    let out = d2.output();
    assert!(out.contains("adopted a running attempt"), "{out}");
    // And a cancellation after a restart stops an adopted task.
    let sleeper = start_sleeper(&env, &d2, "killjob");
    d2.child.kill().expect("SIGKILL the daemon");
    d2.child.wait().expect("reap the daemon");
    let d3 = Daemon::start(&env);
    // The adoption is logged once its task is taken over, shortly after start-up.
    assert!(
        common::within(Duration::from_secs(10), || d3
            .output()
            .contains("adopted a running attempt")),
        "{}",
        d3.output()
    );
    let out = ok(&env, &d3, &["jobs", "executions", "cancel", &sleeper]);
    assert!(out.contains("cancelled"), "{out}");
    ok(&env, &d3, &["jobs", "delete", "killjob"]);
    drop(d3);
    env.assert_nothing_left("killjob-");
}

/// Sidecars in jobs through the Admin API: a job whose task has a main container and a
/// `web` sidecar (busybox httpd, listening 1 s late behind its TCP startup probe), sharing
/// an in-memory volume; the main container `dependsOn` it and fetches its page once over
/// localhost. The execution succeeds (the sidecar, still running, is stopped with SIGTERM),
/// each container's lines are logged with its name, and nothing is left in containerd.
#[test]
fn a_job_with_a_sidecar_through_the_api() {
    use serde_json::json;
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "jobs-sidecar");
    let d = Daemon::start(&env);
    let (main, web) = (MAIN, WEB);
    let job = json!({
        "template": {"taskCount": 2, "template": {
            "maxRetries": 0,
            "volumes": [{"name": "shared", "emptyDir": {"medium": "MEMORY", "sizeLimit": "16Mi"}}],
            "containers": [
                {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c", main],
                 "dependsOn": ["web"],
                 "volumeMounts": [{"name": "shared", "mountPath": "/data"}]},
                {"name": "web", "image": "busybox", "command": ["/bin/sh", "-c", web],
                 "startupProbe": {"tcpSocket": {"port": 8081}, "periodSeconds": 1, "failureThreshold": 10},
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ]
        }}
    });
    let parent = common::daemon::PARENT;
    let op = d.ok("POST", &format!("{parent}/jobs?jobId=sidejob"), Some(&job));
    d.wait_ok(&op);
    let got = d.ok("GET", &format!("{parent}/jobs/sidejob"), None);
    let containers = &got["template"]["template"]["containers"];
    assert_eq!(containers[1]["name"], "web", "{got}");

    let op = d.ok(
        "POST",
        &format!("{parent}/jobs/sidejob:run"),
        Some(&json!({})),
    );
    let execution = d.wait_ok(&op);
    assert_eq!(
        execution["succeededCount"],
        2,
        "{execution}\n{}",
        d.output()
    );
    let log = d.output();
    for want in [
        "hi-from-sidecar",
        "written-by-web",
        "main-index=1",
        "side-index=1",
        "web-got-term",
        "container=web",
        "container=main",
    ] {
        assert!(
            log.contains(want),
            "want {want:?} in the daemon's log:\n{log}"
        );
    }
    env.assert_nothing_left("sidejob");

    // A cycle is refused at the door, naming the containers.
    let mut cyclic = job.clone();
    cyclic["template"]["template"]["containers"][1]["dependsOn"] = json!(["main"]);
    let r = d.call(
        "POST",
        &format!("{parent}/jobs?jobId=cyclic"),
        Some(&cyclic),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("a dependency cycle among main, web"),
        "{}",
        r.text()
    );
}

/// `runlet jobs create|update --container` (issue 16): the groups become the stored job's
/// containers; the main container reaches the `web` sidecar on localhost at its start (only
/// if web passed its startup probe first) and reads what web wrote on the shared volume. An
/// update edits web by name (a new variable, the rest kept) and adds a sidecar; the next
/// execution shows both.
#[test]
fn jobs_create_and_update_with_container_groups_through_the_cli() {
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "jobs-cli-sidecar");
    let d = Daemon::start(&env);
    let (main_args, web_args) = (format!("^@^-c@{MAIN}"), format!("^@^-c@{WEB}"));
    ok(
        &env,
        &d,
        &[
            "jobs",
            "create",
            "clisidecar",
            "--tasks",
            "2",
            "--max-retries",
            "0",
            "--add-volume",
            "name=shared,type=in-memory,size-limit=16Mi",
            "--container",
            "main",
            "--image",
            "busybox",
            "--command",
            "/bin/sh",
            "--args",
            &main_args,
            "--depends-on",
            "web",
            "--add-volume-mount",
            "volume=shared,mount-path=/data",
            "--container",
            "web",
            "--image",
            "busybox",
            "--command",
            "/bin/sh",
            "--args",
            &web_args,
            "--set-env-vars",
            "GREETING=first",
            "--startup-probe",
            "tcpSocket.port=8081,periodSeconds=1,failureThreshold=10",
            "--add-volume-mount",
            "volume=shared,mount-path=/shared",
        ],
    );
    let described = ok(
        &env,
        &d,
        &["jobs", "describe", "clisidecar", "--format", "json"],
    );
    let job: serde_json::Value = serde_json::from_str(&described).expect("JSON");
    let names: Vec<&str> = job["template"]["template"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["main", "web"], "{described}");

    let out = ok(&env, &d, &["jobs", "execute", "clisidecar", "--wait"]);
    assert!(out.contains("2 succeeded"), "{out}\n{}", d.output());
    let log = d.output();
    for want in [
        "hi-from-sidecar",
        "written-by-web",
        "main-index=1",
        "side-index=1 greeting=first",
        "web-got-term",
        "container=web",
        "container=main",
    ] {
        assert!(
            log.contains(want),
            "want {want:?} in the daemon's log:\n{log}"
        );
    }

    // Update: web gets a variable by name (its command, probe and mount stay), a sidecar
    // is added; main is untouched.
    ok(
        &env,
        &d,
        &[
            "jobs",
            "update",
            "clisidecar",
            "--container",
            "web",
            "--update-env-vars",
            "GREETING=second",
            "--container",
            "extra",
            "--image",
            "busybox",
            "--command",
            "/bin/sh",
            "--args",
            "^@^-c@echo extra-ran-$CLOUD_RUN_TASK_INDEX",
        ],
    );
    let out = ok(&env, &d, &["jobs", "execute", "clisidecar", "--wait"]);
    assert!(out.contains("2 succeeded"), "{out}\n{}", d.output());
    let log = d.output();
    for want in [
        "side-index=1 greeting=second",
        "extra-ran-1",
        "container=extra",
    ] {
        assert!(
            log.contains(want),
            "want {want:?} in the daemon's log:\n{log}"
        );
    }

    // Refused before the daemon is asked, naming the flag and the container.
    for (args, want) in [
        (
            vec!["--container", "web", "--port", "8081"],
            "--port: container web: a task serves nothing",
        ),
        (
            vec!["--container", "web", "--depends-on", "main"],
            "a dependency cycle among main, web",
        ),
    ] {
        let mut line = vec!["jobs", "update", "clisidecar"];
        line.extend(args);
        let (code, out, err) = cli(&env, &d, &line);
        assert_eq!(code, Some(64), "{out}{err}");
        assert!(err.contains(want), "want {want:?} in: {err}");
    }
    ok(&env, &d, &["jobs", "delete", "clisidecar"]);
    drop(d);
    env.assert_nothing_left("clisidecar");
}
