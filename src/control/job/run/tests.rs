//! The execution loop against the scripted fake runtime, network and root fs, in paused
//! time: an attempt's whole life in order, parallelism, retries, timeouts (SIGTERM, SIGKILL
//! exactly 10 s later), OOM, cancellation, records, and recovery of abandoned executions.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::super::record::{AttemptReason, ExecutionRecord, ExecutionState, TaskState};
use super::super::spec::{resolve, JobFlags, JobSpec};
use super::super::store::RecordStore;
use super::super::{container_id, Ctx, LineSink};
use super::{execute, recover};
use crate::control::sandbox::tests::{made, released};
use crate::control::KILL_GRACE;
use crate::runtime::fake::{Behaviour, Call, FakeNetwork, FakeRootFs, FakeRuntime};
use crate::runtime::{labels, ContainerSpec, Runtime};

type TestCtx = Ctx<FakeRuntime, FakeNetwork, FakeRootFs>;

fn spec(tasks: u32, max_retries: u32, timeout: &str) -> JobSpec {
    resolve(
        &JobFlags {
            name: Some("hello".into()),
            image: Some("probe".into()),
            tasks: Some(tasks.to_string()),
            max_retries: Some(max_retries.to_string()),
            task_timeout: Some(timeout.into()),
            set_env_vars: vec!["USER_VAR=x".into()],
            ..Default::default()
        },
        None,
    )
    .unwrap()
}

fn ctx(rt: &FakeRuntime, spec: JobSpec, state_dir: &Path) -> Arc<TestCtx> {
    let sink: LineSink = Arc::new(|_| {});
    Arc::new(Ctx {
        runtime: Arc::new(rt.clone()),
        net: rt.network(),
        rootfs: rt.root_fs(),
        spec: Arc::new(spec),
        image: Default::default(),
        user: Default::default(),
        argv: vec!["/probe".into(), "job".into()],
        sidecars: Vec::new(),
        state_dir: state_dir.to_path_buf(),
        sink,
        kill_grace: KILL_GRACE,
        task_file: None,
    })
}

/// The env of a created container, as a map.
fn env_of(spec: &ContainerSpec) -> HashMap<String, String> {
    spec.oci_spec["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn attempt_of(spec: &ContainerSpec) -> u32 {
    env_of(spec)["CLOUD_RUN_TASK_ATTEMPT"].parse().unwrap()
}

/// The most containers started and not yet deleted at any point of the call log.
fn peak_running(calls: &[Call]) -> usize {
    let mut running = HashSet::new();
    let mut peak = 0;
    for c in calls {
        match c {
            Call::Start(id) => {
                running.insert(id.clone());
                peak = peak.max(running.len());
            }
            Call::Delete(id) => {
                running.remove(id);
            }
            _ => {}
        }
    }
    peak
}

fn never() -> impl std::future::Future<Output = ()> {
    std::future::pending()
}

#[tokio::test(start_paused = true)]
async fn four_tasks_two_at_a_time_with_the_contract_env() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.exit_after(Duration::from_secs(1), 0).await;
    let store = RecordStore::new(dir.path());
    let c = ctx(&rt, spec(4, 3, "10m"), dir.path());
    let t0 = Instant::now();
    let run = tokio::spawn({
        let store = store.clone();
        async move { execute(c, &store, "hello-abcde", 2, never()).await }
    });
    // Mid-way the record on disk already holds the first two results.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mid = store.load("hello-abcde").unwrap();
    assert_eq!(mid.status.state, ExecutionState::Running);
    assert_eq!(
        (mid.status.succeeded_count, mid.status.running_count),
        (2, 2),
        "{:?}",
        mid.status
    );
    let rec = run.await.unwrap().unwrap();

    assert_eq!(rec.status.state, ExecutionState::Succeeded);
    assert_eq!(rec.status.succeeded_count, 4);
    assert_eq!(rec.status.retried_count, 0);
    // Two waves of 1 s (plus the log drain of each attempt).
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let calls = rt.calls().await;
    assert_eq!(peak_running(&calls), 2, "{calls:?}");
    for index in 0..4 {
        let id = container_id("hello-abcde", index, 0);
        let spec = rt.spec(&id).await.unwrap();
        let env = env_of(&spec);
        assert_eq!(env["CLOUD_RUN_JOB"], "hello");
        assert_eq!(env["CLOUD_RUN_EXECUTION"], "hello-abcde");
        assert_eq!(env["CLOUD_RUN_TASK_INDEX"], index.to_string());
        assert_eq!(env["CLOUD_RUN_TASK_ATTEMPT"], "0");
        assert_eq!(env["CLOUD_RUN_TASK_COUNT"], "4");
        assert_eq!(env["USER_VAR"], "x");
        assert!(!env.contains_key("PORT"), "JOB-2: no PORT");
        assert_eq!(spec.labels[labels::MANAGED], "true");
        assert_eq!(spec.labels[labels::JOB], "hello");
        assert_eq!(spec.labels[labels::EXECUTION], "hello-abcde");
        assert_eq!(spec.labels[labels::TASK_INDEX], index.to_string());
        assert_eq!(spec.labels[labels::TASK_ATTEMPT], "0");
    }
    assert!(rt.list().await.unwrap().is_empty(), "nothing left");
    assert_eq!(
        store.load("hello-abcde").unwrap(),
        rec,
        "the final record is on disk"
    );
    assert!(!store.is_live("hello-abcde"));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_is_attached_mounted_created_started_deleted_then_released() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.exit_after(Duration::from_millis(100), 0).await;
    let store = RecordStore::new(dir.path());
    let c = ctx(&rt, spec(1, 0, "10m"), dir.path());
    let rec = execute(c.clone(), &store, "hello-life", 1, never())
        .await
        .unwrap();
    assert_eq!(rec.status.state, ExecutionState::Succeeded);
    let id = container_id("hello-life", 0, 0);
    let dir = c.task_dir(&id);
    let life = [Call::Start(id.clone()), Call::Delete(id.clone())];
    assert_eq!(
        rt.calls().await,
        [made(&id, &dir), life.to_vec(), released(&id, &dir)].concat()
    );
    // The container joins its namespace and sees its own /etc files.
    let created = rt.spec(&id).await.unwrap();
    let netns = format!("/run/netns/runlet-{id}");
    assert_eq!(created.labels[labels::NETNS], netns);
    let namespaces = created.oci_spec["linux"]["namespaces"].to_string();
    assert!(namespaces.contains(&netns), "{namespaces}");
    assert!(created.upper_dir.unwrap().ends_with("rootfs"));
    let mounts = created.oci_spec["mounts"].to_string();
    assert!(mounts.contains("/etc/hosts"), "{mounts}");
    assert!(!c.task_dir(&id).exists(), "the files are gone");
}

#[tokio::test(start_paused = true)]
async fn a_network_that_cannot_attach_fails_the_attempt_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.fail_attaches().await;
    let store = RecordStore::new(dir.path());
    let c = ctx(&rt, spec(1, 0, "10m"), dir.path());
    let rec = execute(c.clone(), &store, "hello-nonet", 1, never())
        .await
        .unwrap();
    let r = rec.status.tasks[0].last_attempt_result.clone().unwrap();
    assert_eq!(r.reason, AttemptReason::RuntimeError);
    assert!(
        r.message
            .contains("attaching the container's network: CNI bridge ADD")
            && r.message.contains("scripted failure"),
        "{}",
        r.message
    );
    let id = container_id("hello-nonet", 0, 0);
    let released = released(&id, &c.task_dir(&id));
    assert_eq!(
        rt.calls().await,
        [
            vec![Call::Attach(id.clone()), Call::Delete(id.clone())],
            released
        ]
        .concat()
    );
    assert!(!c.task_dir(&id).exists());
}

#[tokio::test(start_paused = true)]
async fn a_task_failing_twice_then_succeeding_is_retried_as_fresh_containers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.on_start(|spec| {
        Some(Behaviour::exit(
            Duration::from_millis(100),
            if attempt_of(spec) < 2 { 1 } else { 0 },
        ))
    })
    .await;
    let store = RecordStore::new(dir.path());
    let rec = execute(
        ctx(&rt, spec(1, 3, "10m"), dir.path()),
        &store,
        "hello-retry",
        1,
        never(),
    )
    .await
    .unwrap();
    assert_eq!(rec.status.state, ExecutionState::Succeeded);
    assert_eq!(rec.status.retried_count, 1);
    let t = &rec.status.tasks[0];
    assert_eq!((t.attempts, t.retried), (3, 2));
    assert_eq!(t.last_attempt_result.as_ref().unwrap().exit_code, Some(0));
    let created: Vec<Call> = rt
        .calls()
        .await
        .into_iter()
        .filter(|c| matches!(c, Call::Create(_)))
        .collect();
    assert_eq!(
        created,
        (0..3)
            .map(|a| Call::Create(container_id("hello-retry", 0, a)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_that_always_fails_gets_max_retries_plus_one_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.exit_after(Duration::from_millis(10), 3).await;
    let store = RecordStore::new(dir.path());
    let rec = execute(
        ctx(&rt, spec(2, 1, "10m"), dir.path()),
        &store,
        "hello-fail",
        2,
        never(),
    )
    .await
    .unwrap();
    assert_eq!(rec.status.state, ExecutionState::Failed);
    assert_eq!((rec.status.failed_count, rec.status.retried_count), (2, 2));
    for t in &rec.status.tasks {
        assert_eq!(t.attempts, 2);
        let r = t.last_attempt_result.as_ref().unwrap();
        assert_eq!((r.exit_code, r.reason), (Some(3), AttemptReason::Failed));
    }
    let starts = rt
        .calls()
        .await
        .iter()
        .filter(|c| matches!(c, Call::Start(_)))
        .count();
    assert_eq!(starts, 4);
}

#[tokio::test(start_paused = true)]
async fn past_the_task_timeout_sigterm_then_sigkill_exactly_10_s_later() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new(); // runs until killed; ignores SIGTERM
    let store = RecordStore::new(dir.path());
    let t0 = Instant::now();
    let rec = execute(
        ctx(&rt, spec(1, 0, "2s"), dir.path()),
        &store,
        "hello-slow",
        1,
        never(),
    )
    .await
    .unwrap();
    let took = t0.elapsed();
    // 2 s timeout + 10 s grace (+ 50 ms of log drain).
    assert!(
        took >= Duration::from_secs(12) && took < Duration::from_millis(12_100),
        "{took:?}"
    );
    let id = container_id("hello-slow", 0, 0);
    let kills: Vec<Call> = rt
        .calls()
        .await
        .into_iter()
        .filter(|c| matches!(c, Call::Kill { .. }))
        .collect();
    assert_eq!(
        kills,
        vec![
            Call::Kill {
                id: id.clone(),
                signal: 15,
                all: false
            },
            Call::Kill {
                id: id.clone(),
                signal: 9,
                all: true
            },
        ]
    );
    assert_eq!(rec.status.state, ExecutionState::Failed);
    let r = rec.status.tasks[0].last_attempt_result.clone().unwrap();
    assert_eq!(
        (r.term_signal, r.exit_code, r.reason),
        (Some(9), None, AttemptReason::TimedOut)
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_task_that_handles_sigterm_is_not_killed_but_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.exit_on(&[15]).await;
    let store = RecordStore::new(dir.path());
    let t0 = Instant::now();
    let rec = execute(
        ctx(&rt, spec(1, 0, "2s"), dir.path()),
        &store,
        "hello-term",
        1,
        never(),
    )
    .await
    .unwrap();
    assert!(t0.elapsed() < Duration::from_millis(2100));
    assert!(!rt
        .calls()
        .await
        .iter()
        .any(|c| matches!(c, Call::Kill { signal: 9, .. })));
    let r = rec.status.tasks[0].last_attempt_result.clone().unwrap();
    assert_eq!(
        (r.term_signal, r.reason),
        (Some(15), AttemptReason::TimedOut)
    );
    assert_eq!(rec.status.state, ExecutionState::Failed);
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_is_reported_as_out_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.on_start(|_| {
        Some(Behaviour {
            after: Duration::from_millis(300),
            code: 137,
            oom: true,
        })
    })
    .await;
    let store = RecordStore::new(dir.path());
    let rec = execute(
        ctx(&rt, spec(1, 0, "10m"), dir.path()),
        &store,
        "hello-oom",
        1,
        never(),
    )
    .await
    .unwrap();
    let r = rec.status.tasks[0].last_attempt_result.clone().unwrap();
    assert_eq!(
        (r.term_signal, r.reason),
        (Some(9), AttemptReason::OutOfMemory)
    );
    assert!(r.message.contains("out of memory"), "{}", r.message);
    assert_eq!(rec.status.state, ExecutionState::Failed);
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_running_tasks_and_cancels_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new(); // tasks run until stopped, and ignore SIGTERM
    let store = RecordStore::new(dir.path());
    let t0 = Instant::now();
    let cancel = tokio::time::sleep(Duration::from_secs(5));
    let rec = execute(
        ctx(&rt, spec(5, 3, "10m"), dir.path()),
        &store,
        "hello-cancel",
        2,
        cancel,
    )
    .await
    .unwrap();
    // Cancelled at 5 s; SIGKILL 10 s after SIGTERM.
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_millis(15_100),
        "{took:?}"
    );
    assert_eq!(rec.status.state, ExecutionState::Cancelled);
    assert_eq!(rec.status.cancelled_count, 5);
    for (i, t) in rec.status.tasks.iter().enumerate() {
        assert_eq!(t.state, TaskState::Cancelled);
        if i < 2 {
            let r = t.last_attempt_result.clone().unwrap();
            assert_eq!(
                (r.term_signal, r.reason),
                (Some(9), AttemptReason::Cancelled)
            );
        } else {
            assert!(t.last_attempt_result.is_none(), "never started");
        }
    }
    let calls = rt.calls().await;
    for i in 0..2 {
        let id = container_id("hello-cancel", i, 0);
        assert!(calls.contains(&Call::Kill {
            id: id.clone(),
            signal: 15,
            all: false
        }));
        assert!(calls.contains(&Call::Kill {
            id: id.clone(),
            signal: 9,
            all: true
        }));
        assert!(calls.contains(&Call::Delete(id)));
    }
    assert_eq!(
        calls.iter().filter(|c| matches!(c, Call::Start(_))).count(),
        2,
        "nothing started after the cancel"
    );
    assert!(rt.list().await.unwrap().is_empty());
    assert_eq!(
        store.load("hello-cancel").unwrap().status.state,
        ExecutionState::Cancelled
    );
}

#[tokio::test(start_paused = true)]
async fn create_failures_are_attempt_failures() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.fail_creates().await;
    let store = RecordStore::new(dir.path());
    let rec = execute(
        ctx(&rt, spec(1, 1, "10m"), dir.path()),
        &store,
        "hello-nocreate",
        1,
        never(),
    )
    .await
    .unwrap();
    let t = &rec.status.tasks[0];
    assert_eq!((t.state, t.attempts), (TaskState::Failed, 2));
    let r = t.last_attempt_result.clone().unwrap();
    assert_eq!(r.reason, AttemptReason::RuntimeError);
    assert!(r.message.contains("scripted failure"), "{}", r.message);
}

#[tokio::test(start_paused = true)]
async fn recovery_marks_abandoned_executions_failed_and_removes_their_containers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    let store = RecordStore::new(dir.path());
    let s = spec(3, 0, "10m");

    // An execution whose runlet died: record says running, nobody holds its lock, one task
    // done, one container still there.
    let mut dead = ExecutionRecord::new(&s, "hello-dead1", 2, std::time::SystemTime::now());
    dead.attempt_started(0, 0, std::time::SystemTime::now());
    dead.attempt_finished(
        0,
        &super::Outcome::Exited(crate::runtime::ExitStatus { code: 0 }),
        super::Action::Succeed,
        std::time::SystemTime::now(),
        Duration::from_secs(1),
    );
    dead.attempt_started(1, 0, std::time::SystemTime::now());
    store.save_blocking(&dead).unwrap();
    // A live one: same, but its lock is held.
    let live = ExecutionRecord::new(&s, "hello-live1", 1, std::time::SystemTime::now());
    store.save_blocking(&live).unwrap();
    let _held = store.lock("hello-live1").unwrap();
    // And a container of an execution recorded in another state dir: not ours.
    for (id, exec) in [
        ("hello-dead1-1-0", "hello-dead1"),
        ("hello-live1-0-0", "hello-live1"),
        ("hello-other-0-0", "hello-other"),
    ] {
        let mut lbl = HashMap::new();
        lbl.insert(labels::MANAGED.to_string(), "true".to_string());
        lbl.insert(labels::EXECUTION.to_string(), exec.to_string());
        rt.started(id, lbl).await;
    }
    // And an attempt directory of the dead execution whose container was never created.
    std::fs::create_dir_all(super::super::tasks_dir(dir.path()).join("hello-dead1-2-0")).unwrap();

    let r = recover(&rt, &rt.network(), &rt.root_fs(), &store, dir.path())
        .await
        .unwrap();
    assert_eq!(r.executions, vec!["hello-dead1".to_string()]);
    let mut removed = r.containers.clone();
    removed.sort();
    assert_eq!(
        removed,
        vec!["hello-dead1-1-0".to_string(), "hello-dead1-2-0".to_string()]
    );

    let after = store.load("hello-dead1").unwrap();
    assert_eq!(after.status.state, ExecutionState::Failed);
    assert_eq!(
        after.status.tasks[0].state,
        TaskState::Succeeded,
        "finished results are kept"
    );
    assert_eq!(after.status.tasks[1].state, TaskState::Failed);
    assert_eq!(after.status.tasks[2].state, TaskState::Cancelled);
    assert_eq!(
        store.load("hello-live1").unwrap().status.state,
        ExecutionState::Running
    );
    let mut left: Vec<String> = rt.list().await.unwrap().into_iter().map(|c| c.id).collect();
    left.sort();
    assert_eq!(
        left,
        vec!["hello-live1-0-0".to_string(), "hello-other-0-0".to_string()]
    );
    assert!(!super::super::tasks_dir(dir.path())
        .join("hello-dead1-2-0")
        .exists());

    // Idempotent: nothing more to do.
    assert_eq!(
        recover(&rt, &rt.network(), &rt.root_fs(), &store, dir.path())
            .await
            .unwrap(),
        Default::default()
    );
}

#[tokio::test(start_paused = true)]
async fn a_result_is_on_disk_before_the_next_task_starts() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    let store = RecordStore::new(dir.path());
    // When a container starts, note how many results the record on disk holds.
    let seen = Arc::new(AtomicU32::new(u32::MAX));
    let (seen2, store2) = (seen.clone(), store.clone());
    rt.on_start(move |spec| {
        if env_of(spec)["CLOUD_RUN_TASK_INDEX"] == "2" {
            let rec = store2.load("hello-durable").unwrap();
            seen2.store(
                rec.status.succeeded_count + rec.status.failed_count,
                Ordering::SeqCst,
            );
        }
        Some(Behaviour::exit(Duration::from_millis(200), 0))
    })
    .await;
    execute(
        ctx(&rt, spec(3, 0, "10m"), dir.path()),
        &store,
        "hello-durable",
        1,
        never(),
    )
    .await
    .unwrap();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "tasks 0 and 1 were recorded before task 2 started"
    );
}

#[tokio::test(start_paused = true)]
async fn each_task_gets_its_own_read_only_file_and_its_path_in_the_env() {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::new();
    rt.exit_after(Duration::from_secs(1), 0).await;
    let store = RecordStore::new(dir.path());
    let mut c = ctx(&rt, spec(3, 0, "10m"), dir.path());
    Arc::get_mut(&mut c).unwrap().task_file = Some(super::super::TaskFile {
        dir: dir.path().join("inputs"),
        path: "/run/runlet/message.json".into(),
        env: "MESSAGE_FILE".into(),
    });
    let rec = execute(c, &store, "hello-files", 3, never()).await.unwrap();
    assert_eq!(rec.status.succeeded_count, 3);
    for index in 0..3 {
        let spec = rt
            .spec(&container_id("hello-files", index, 0))
            .await
            .unwrap();
        assert_eq!(env_of(&spec)["MESSAGE_FILE"], "/run/runlet/message.json");
        let source = dir.path().join(format!("inputs/{index}.json"));
        let mounts = spec.oci_spec["mounts"].as_array().unwrap();
        let m = mounts
            .iter()
            .find(|m| m["destination"] == "/run/runlet/message.json")
            .unwrap_or_else(|| panic!("no mount of the task's file: {mounts:?}"));
        assert_eq!(m["source"], source.display().to_string());
        assert_eq!(m["type"], "bind");
        assert!(m["options"].as_array().unwrap().contains(&"ro".into()));
    }
}
