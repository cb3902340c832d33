//! Pub/Sub triggers against real containerd and Google's Pub/Sub emulator: a job bound to
//! a pull subscription drains its backlog (one task per message, each message once, all
//! acked) and starts nothing once it is empty; a failed task's message is acked, or
//! forwarded to the subscription's dead-letter topic; a push subscription delivers to a
//! service through runlet.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use common::daemon::{fresh_state, Daemon, Launch, PARENT};
use common::pubsub::{base64, Emulator};

/// A task prints its message file on one line, prefixed, and exits with `$1`.
const SCRIPT: &str = r#"echo "handled: $(cat "$RUNLET_PUBSUB_MESSAGE_FILE")"; exit "${1:-0}""#;

/// `runlet ARGS --api ADDR` that must succeed: stdout + stderr.
fn ok(env: &common::Env, d: &Daemon, args: &[&str]) -> String {
    let (out, err) = d.cli_ok(env, args);
    out + &err
}

/// `runlet jobs create JOB` running [`SCRIPT`] with `exit_code`, bound by `bind`.
fn create_job(env: &common::Env, d: &Daemon, job: &str, exit_code: &str, bind: &[&str]) {
    let command = format!("^~^/bin/sh~-c~{SCRIPT}~sh~{exit_code}");
    let mut args = vec![
        "jobs",
        "create",
        job,
        "--image",
        "busybox",
        "--parallelism",
        "4",
        "--max-retries",
        "0",
        "--command",
        &command,
    ];
    args.extend_from_slice(bind);
    ok(env, d, &args);
}

/// The message files the tasks of `job` printed (from the daemon's task log lines).
fn handled(d: &Daemon, job: &str) -> Vec<Value> {
    d.output()
        .lines()
        .filter(|l| l.contains(&format!("job={job} ")))
        .filter_map(|l| l.split_once("handled: ").map(|(_, j)| j))
        // The log line's fields follow the text: read the one JSON value.
        .filter_map(|j| {
            serde_json::Deserializer::from_str(j)
                .into_iter::<Value>()
                .next()?
                .ok()
        })
        .collect()
}

/// The executions of `job`, through the Admin API.
fn executions(d: &Daemon, job: &str) -> Vec<Value> {
    d.ok("GET", &format!("{PARENT}/jobs/{job}/executions"), None)["executions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ended(e: &Value) -> bool {
    e["completionTime"].is_string()
}

fn daemon_with(env: &common::Env, emu: &Emulator) -> Daemon {
    let host = emu.host();
    Daemon::launch(
        env,
        Launch {
            env: &[("PUBSUB_EMULATOR_HOST", &host)],
            ..Default::default()
        },
    )
    .unwrap_or_else(|f| panic!("runlet daemon did not start: {f:?}"))
}

#[test]
fn base64_as_rfc4648_says() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"hello"), "aGVsbG8=");
}

#[test]
fn a_bound_job_drains_its_subscription_one_task_per_message_then_scales_to_zero() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let Some(emu) = Emulator::start() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "pubsub-drain");
    let d = daemon_with(&env, &emu);
    let topic = emu.topic("work");
    let sub = emu.subscription("work-sub", &topic, json!({}));

    // A malformed binding is refused at the door, naming the annotation.
    let bad = d.call(
        "POST",
        &format!("{PARENT}/jobs?jobId=badbind"),
        Some(&json!({
            "annotations": {"runlet.io/pubsub-subscription": sub, "runlet.io/pubsub-max-executions": "0"},
            "template": {"template": {"containers": [{"image": "busybox"}]}}
        })),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text().contains("runlet.io/pubsub-max-executions"),
        "{}",
        bad.text()
    );

    create_job(
        &env,
        &d,
        "drain",
        "0",
        &["--pubsub-subscription", &sub, "--max-executions", "2"],
    );
    let described = ok(&env, &d, &["jobs", "describe", "drain"]);
    assert!(
        described.contains(&format!("Pub/Sub       {sub}")) && described.contains("at most 2"),
        "{described}"
    );
    // Bound but empty: nothing runs.
    std::thread::sleep(Duration::from_secs(3));
    assert!(executions(&d, "drain").is_empty());

    let mut published = BTreeMap::new();
    for i in 0..20 {
        let data = format!("work item {i}");
        published.insert(
            emu.publish(&topic, data.as_bytes()),
            base64(data.as_bytes()),
        );
    }
    assert!(
        common::within(Duration::from_secs(180), || {
            handled(&d, "drain").len() >= 20 && executions(&d, "drain").iter().all(ended)
        }),
        "the backlog was not drained: {} handled\n--- daemon ---\n{}",
        handled(&d, "drain").len(),
        d.output()
    );
    // Every message once, with its data and attributes, in a task of its own.
    let seen = handled(&d, "drain");
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for m in &seen {
        let id = m["messageId"].as_str().unwrap().to_string();
        assert_eq!(
            m["data"].as_str(),
            published.get(&id).map(String::as_str),
            "{m}"
        );
        assert_eq!(m["attributes"]["from"], "test", "{m}");
        assert_eq!(m["subscription"], sub.as_str(), "{m}");
        *by_id.entry(id).or_default() += 1;
    }
    assert_eq!(by_id.len(), 20, "{seen:?}");
    assert!(
        by_id.values().all(|&n| n == 1),
        "a message ran twice: {by_id:?}"
    );
    let execs = executions(&d, "drain");
    let tasks: i64 = execs.iter().map(|e| e["taskCount"].as_i64().unwrap()).sum();
    assert_eq!(tasks, 20, "one task per message: {execs:?}");
    for e in &execs {
        assert_eq!(e["succeededCount"], e["taskCount"], "{e}");
        assert!(
            e["taskCount"].as_i64().unwrap() <= 10,
            "batches are bounded: {e}"
        );
        assert_eq!(
            e["annotations"]["runlet.io/pubsub-subscription"],
            sub.as_str()
        );
    }
    // All acked: nothing comes back, even after the ack deadline (10 s) would have passed.
    std::thread::sleep(Duration::from_secs(11));
    assert!(emu.pull(&sub).is_empty(), "messages were not acked");
    // Empty: no further execution starts over several poll periods.
    let count = executions(&d, "drain").len();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        executions(&d, "drain").len(),
        count,
        "an execution started on an empty subscription"
    );

    // Unbound: later messages start nothing.
    ok(
        &env,
        &d,
        &["jobs", "update", "drain", "--clear-pubsub-subscription"],
    );
    let described = ok(&env, &d, &["jobs", "describe", "drain"]);
    assert!(!described.contains("Pub/Sub"), "{described}");
    emu.publish(&topic, b"after unbinding");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(executions(&d, "drain").len(), count);
    assert_eq!(
        emu.pull(&sub).len(),
        1,
        "the message waits in the subscription"
    );

    ok(&env, &d, &["jobs", "delete", "drain"]);
    drop(d);
    env.assert_nothing_left("drain-");
    assert!(
        !env.state_dir.join("jobs/inputs").exists()
            || common::file_names(env.state_dir.join("jobs/inputs")).is_empty(),
        "the message files are removed"
    );
}

#[test]
fn a_failed_tasks_message_is_acked_or_dead_lettered() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let Some(emu) = Emulator::start() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "pubsub-fail");
    let d = daemon_with(&env, &emu);
    let topic = emu.topic("jobs-in");
    let dead = emu.topic("jobs-dead");
    let dead_sub = emu.subscription("jobs-dead-sub", &dead, json!({}));
    let with_dl = emu.subscription(
        "with-dl",
        &topic,
        json!({"deadLetterPolicy": {"deadLetterTopic": dead, "maxDeliveryAttempts": 5}}),
    );
    let plain = emu.subscription("plain", &topic, json!({}));
    create_job(
        &env,
        &d,
        "faildl",
        "3",
        &["--pubsub-subscription", &with_dl],
    );
    create_job(
        &env,
        &d,
        "failplain",
        "3",
        &["--pubsub-subscription", &plain],
    );
    let id = emu.publish(&topic, b"cannot be done");

    // Both subscriptions got it; each job's one task failed (no retries).
    assert!(
        common::within(Duration::from_secs(120), || {
            ["faildl", "failplain"].iter().all(|j| {
                let e = executions(&d, j);
                e.len() == 1 && ended(&e[0])
            })
        }),
        "--- daemon ---\n{}",
        d.output()
    );
    for j in ["faildl", "failplain"] {
        let e = &executions(&d, j)[0];
        assert_eq!(e["failedCount"], 1, "{e}");
        assert_eq!(
            e["annotations"]["runlet.io/pubsub-message-ids"],
            id.as_str(),
            "{e}"
        );
    }
    // The dead-letter subscription has it, with its data and where it came from.
    let mut forwarded = Vec::new();
    assert!(
        common::within(Duration::from_secs(20), || {
            forwarded.extend(emu.pull(&dead_sub));
            !forwarded.is_empty()
        }),
        "nothing reached the dead-letter topic\n--- daemon ---\n{}",
        d.output()
    );
    let m = &forwarded[0]["message"];
    assert_eq!(m["data"], base64(b"cannot be done"), "{m}");
    assert_eq!(m["attributes"]["from"], "test", "{m}");
    assert_eq!(
        m["attributes"]["CloudPubSubDeadLetterSourceSubscription"],
        with_dl.as_str(),
        "{m}"
    );
    assert!(
        common::within(Duration::from_secs(10), || d
            .output()
            .contains("its message is acked (the failure is on the execution)")),
        "{}",
        d.output()
    );
    // Both acked: neither subscription delivers it again, even past the ack deadline; no
    // further execution.
    std::thread::sleep(Duration::from_secs(11));
    assert!(emu.pull(&with_dl).is_empty(), "dead-lettered but not acked");
    assert!(emu.pull(&plain).is_empty(), "failed but not acked");
    assert_eq!(executions(&d, "faildl").len(), 1);
    assert_eq!(executions(&d, "failplain").len(), 1);
    ok(&env, &d, &["jobs", "delete", "faildl"]);
    ok(&env, &d, &["jobs", "delete", "failplain"]);
    drop(d);
    env.assert_nothing_left("fail");
}

#[test]
fn a_push_subscription_delivers_each_message_to_a_service_through_runlet() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let Some(emu) = Emulator::start() else {
        return;
    };
    let served = env.serve_probe("pushed", &["--set-env-vars", "PROBE_LOG_REQUESTS=1"]);
    let topic = emu.topic("pushes");
    emu.subscription(
        "push-sub",
        &topic,
        json!({"pushConfig": {"pushEndpoint": format!("http://{}/pubsub/push", served.listen)}}),
    );
    for i in 0..3 {
        emu.publish(&topic, format!("push {i}").as_bytes());
    }
    let count = || served.output().matches("probe: POST /pubsub/push").count();
    assert!(
        common::within(Duration::from_secs(60), || count() >= 3),
        "{} pushes reached the service\n--- runlet ---\n{}\n--- emulator ---\n{}",
        count(),
        served.output(),
        emu.output.text()
    );
    // Answered 200: acked, so not pushed again.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(count(), 3, "{}", served.output());
}
