//! Job schedules in the daemon: bad `--schedule` / `--time-zone` / `--schedule-overlap`
//! exit 64 naming the flag and the allowed form (before any daemon is reached), and the
//! API refuses bad schedule annotations naming them; against real containerd, in real
//! time, a job scheduled `* * * * *` gets an execution from the daemon within the minute
//! that runs to its end, marked as triggered by the schedule, and clearing the schedule
//! stops it. (The trigger's timing is tested under paused time in
//! `src/daemon/schedule_trigger.rs`.)

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::daemon::{fresh_state, Daemon, PARENT};
use serde_json::json;

/// `runlet ARGS --api ADDR` that must succeed: its stdout.
fn ok(env: &common::Env, d: &Daemon, args: &[&str]) -> String {
    d.cli_ok(env, args).0
}

#[test]
fn bad_schedule_flags_exit_64_naming_the_flag_and_the_form() {
    // Nothing listens on port 9: the refusals come before the daemon is reached.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runlet"))
            .args(args)
            .args(["--api", "127.0.0.1:9"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let create = ["jobs", "create", "sj", "--image", "busybox"];
    let update = ["jobs", "update", "sj"];
    let table: &[(&[&str], &[&str], &[&str])] = &[
        (
            &create,
            &["--schedule", "* * *"],
            &["--schedule", "5 fields"],
        ),
        (
            &create,
            &["--schedule", "0 0 * * * *"],
            &["--schedule", "5 fields"],
        ),
        (
            &create,
            &["--schedule", "@daily"],
            &["--schedule", "5 fields"],
        ),
        (
            &create,
            &["--schedule", "61 * * * *"],
            &["--schedule", "5 fields"],
        ),
        (
            &create,
            &["--schedule", "* * * * *", "--time-zone", "Mars/Olympus"],
            &["--time-zone", "IANA time zone"],
        ),
        (
            &create,
            &["--schedule", "* * * * *", "--schedule-overlap", "queue"],
            &["--schedule-overlap", "allowed skip or start"],
        ),
        (
            &create,
            &["--time-zone", "Europe/Paris"],
            &["--time-zone", "give --schedule too"],
        ),
        (
            &update,
            &["--schedule", "every minute"],
            &["--schedule", "5 fields"],
        ),
        (
            &update,
            &["--clear-schedule", "--schedule", "* * * * *"],
            &["--clear-schedule"],
        ),
    ];
    for (cmd, flags, says) in table {
        let (code, err) = run(&[*cmd, *flags].concat());
        assert_eq!(code, Some(64), "{flags:?}: {err}");
        for s in *says {
            assert!(err.contains(s), "{flags:?}: wanted {s:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
    }
}

/// Seconds into the current wall-clock minute.
fn second_of_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60
}

#[test]
fn a_job_scheduled_every_minute_runs_until_its_schedule_is_cleared() {
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "schedule");
    let d = Daemon::start(&env);

    // The API refuses a bad schedule annotation, naming it.
    let r = d.call(
        "POST",
        &format!("{PARENT}/jobs?jobId=badsched"),
        Some(&json!({
            "annotations": {"runlet.io/schedule": "* * * * * * *"},
            "template": {"template": {"containers": [{"image": "busybox"}]}}
        })),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("runlet.io/schedule"), "{}", r.text());

    ok(
        &env,
        &d,
        &[
            "jobs",
            "create",
            "every",
            "--image",
            "busybox",
            "--command",
            "^~^/bin/sh~-c~echo scheduled; sleep 2",
            "--schedule",
            "* * * * *",
        ],
    );
    let described = ok(&env, &d, &["jobs", "describe", "every"]);
    assert!(
        described.contains("Schedule      * * * * * (Etc/UTC), overlap: skip"),
        "{described}"
    );
    ok(
        &env,
        &d,
        &["jobs", "update", "every", "--time-zone", "Europe/Paris"],
    );
    let described = ok(&env, &d, &["jobs", "describe", "every"]);
    assert!(
        described.contains("* * * * * (Europe/Paris)"),
        "{described}"
    );

    // Due at the next minute: started then, done 2 s later.
    let succeeded = || {
        let list = ok(&env, &d, &["jobs", "executions", "list", "--job", "every"]);
        list.lines()
            .skip(1)
            .find(|l| l.contains("Succeeded"))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(String::from)
    };
    assert!(
        common::within(Duration::from_secs(75), || succeeded().is_some()),
        "no scheduled execution ran to its end within 75 s:\n{}\n--- daemon ---\n{}",
        ok(&env, &d, &["jobs", "executions", "list"]),
        d.output()
    );
    let id = succeeded().unwrap();
    let described = ok(&env, &d, &["jobs", "executions", "describe", &id]);
    assert!(described.contains("Triggered by  schedule"), "{described}");
    assert!(
        d.output().contains("scheduled execution started"),
        "{}",
        d.output()
    );

    // Cleared (away from a minute's turn, so no run is under way): nothing starts at the
    // next due time.
    while !(5..50).contains(&second_of_minute()) {
        std::thread::sleep(Duration::from_millis(500));
    }
    ok(&env, &d, &["jobs", "update", "every", "--clear-schedule"]);
    let described = ok(&env, &d, &["jobs", "describe", "every"]);
    assert!(!described.contains("Schedule"), "{described}");
    let count = |d: &Daemon| {
        ok(&env, d, &["jobs", "executions", "list", "--job", "every"])
            .lines()
            .skip(1)
            .count()
    };
    let before = count(&d);
    std::thread::sleep(Duration::from_secs(60 - second_of_minute() + 5));
    assert_eq!(count(&d), before, "{}", d.output());
    ok(&env, &d, &["jobs", "delete", "every"]);
    drop(d);
    env.assert_nothing_left("every-");
}
