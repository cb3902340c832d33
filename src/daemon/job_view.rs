//! The output fields of Job, Execution and Task resources, read from what the job engine
//! records: an execution is stored as the resource it was created as (its template, its
//! names) plus the engine's [`ExecutionRecord`] (counts, times, every task's state), which
//! is written at every change, so a read is true whenever it is made. Plain functions; no
//! I/O.

use sha2::{Digest, Sha256};

use super::resource::{condition, etag_of, State};
use crate::control::job::record::{AttemptReason, TaskState, TaskStatus};
use crate::control::job::{ExecutionRecord, ExecutionState, JobSpec};
use crate::pb::rpc;
use crate::pb::run_v2::{self as v2, condition::ExecutionReason, execution_reference};
use crate::pb::timestamp::Timestamp;

/// A task's id: `{execution}-task{index}`.
pub fn task_id(execution: &str, index: u32) -> String {
    format!("{execution}-task{index}")
}

/// The index of task `id` of `execution` (`{execution}-task{N}`, `-task-{N}` accepted).
pub fn task_index(execution: &str, id: &str) -> Option<u32> {
    let rest = id.strip_prefix(execution)?.strip_prefix("-task")?;
    let n = rest.strip_prefix('-').unwrap_or(rest);
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// A stable UUID-shaped id derived from `seed` (a task's, from its execution's uid).
fn derived_uid(seed: &str) -> String {
    let h = hex::encode(Sha256::digest(seed.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn time(s: &str) -> Option<Timestamp> {
    Timestamp::parse_rfc3339(s).ok()
}

fn duration(d: std::time::Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A new execution `name` (its full name) of `job`, as it is stored: what it runs (`spec`,
/// the job with a `RunJob`'s overrides applied) at `parallelism`; no status yet.
pub fn new_execution(job: &v2::Job, name: &str, spec: &JobSpec, parallelism: u32) -> v2::Execution {
    let exec = job.template.clone().unwrap_or_default();
    let mut task = exec.template.clone().unwrap_or_default();
    if let Some(c) = task.containers.first_mut() {
        c.args = spec.args.clone().unwrap_or_default();
        c.env = spec
            .env
            .iter()
            .map(|(k, v)| v2::EnvVar {
                name: k.clone(),
                values: Some(v2::env_var::Values::Value(v.clone())),
            })
            // Secrets stay references.
            .chain(
                spec.secrets
                    .env
                    .iter()
                    .map(|(k, r)| crate::spec::secrets_v2::env_var(k, r)),
            )
            .collect();
    }
    task.timeout = Some(duration(spec.task_timeout));
    task.retries = Some(v2::task_template::Retries::MaxRetries(
        spec.max_retries as i32,
    ));
    let now = super::resource::now();
    v2::Execution {
        name: name.to_string(),
        uid: super::resource::uid(),
        creator: "runlet".into(),
        generation: 1,
        labels: exec.labels,
        annotations: exec.annotations,
        create_time: Some(now),
        update_time: Some(now),
        job: super::resource::short(&job.name).to_string(),
        parallelism: parallelism as i32,
        task_count: spec.task_count as i32,
        template: Some(task),
        observed_generation: 1,
        reconciling: true,
        ..Default::default()
    }
}

/// The execution as a read returns it: `stored` with the record's status (`None`: not
/// started yet, every task pending).
pub fn execution(stored: &v2::Execution, rec: Option<&ExecutionRecord>) -> v2::Execution {
    let mut e = stored.clone();
    let Some(rec) = rec else {
        e.reconciling = true;
        e.conditions = vec![condition(
            "Completed",
            State::ConditionPending,
            "Waiting for the execution to start.",
        )];
        e.etag = etag_of(&e);
        return e;
    };
    let s = &rec.status;
    e.start_time = time(&s.start_time);
    e.completion_time = s.completion_time.as_deref().and_then(time);
    e.update_time = e.completion_time.or(e.update_time);
    e.running_count = s.running_count as i32;
    e.succeeded_count = s.succeeded_count as i32;
    e.failed_count = s.failed_count as i32;
    e.cancelled_count = s.cancelled_count as i32;
    e.retried_count = s.retried_count as i32;
    e.reconciling = s.state == ExecutionState::Running;
    let total = s.tasks.len();
    let mut completed = match s.state {
        ExecutionState::Running => condition(
            "Completed",
            State::ConditionReconciling,
            &format!(
                "{} of {total} task(s) completed, {} running.",
                s.succeeded_count + s.failed_count + s.cancelled_count,
                s.running_count
            ),
        ),
        ExecutionState::Succeeded => condition(
            "Completed",
            State::ConditionSucceeded,
            &match s.duration_ms {
                Some(ms) => format!(
                    "Execution completed successfully in {:.1}s.",
                    ms as f64 / 1000.0
                ),
                None => "Execution completed successfully.".into(),
            },
        ),
        ExecutionState::Failed => {
            let mut c = condition(
                "Completed",
                State::ConditionFailed,
                s.message.as_deref().unwrap_or("The execution failed."),
            );
            c.reasons = Some(v2::condition::Reasons::ExecutionReason(
                ExecutionReason::NonZeroExitCode as i32,
            ));
            c
        }
        ExecutionState::Cancelled => {
            let mut c = condition(
                "Completed",
                State::ConditionFailed,
                s.message
                    .as_deref()
                    .unwrap_or("The execution was cancelled."),
            );
            c.reasons = Some(v2::condition::Reasons::ExecutionReason(
                ExecutionReason::Cancelled as i32,
            ));
            c
        }
    };
    completed.last_transition_time = e.completion_time.or(e.start_time);
    let started =
        s.tasks.iter().any(|t| t.state != TaskState::Pending) || s.state != ExecutionState::Running;
    e.conditions = vec![
        condition("ResourcesAvailable", State::ConditionSucceeded, ""),
        condition(
            "Started",
            if started {
                State::ConditionSucceeded
            } else {
                State::ConditionPending
            },
            "",
        ),
        completed,
    ];
    e.etag = etag_of(&e);
    e
}

/// How the execution stands, for its job's `latestCreatedExecution`.
pub fn completion_status(view: &v2::Execution) -> execution_reference::CompletionStatus {
    use execution_reference::CompletionStatus as C;
    let completed = view.conditions.iter().find(|c| c.r#type == "Completed");
    match completed {
        None => C::ExecutionPending,
        Some(c) if c.state == State::ConditionSucceeded as i32 => C::ExecutionSucceeded,
        Some(c) if c.state == State::ConditionFailed as i32 => {
            if c.reasons
                == Some(v2::condition::Reasons::ExecutionReason(
                    ExecutionReason::Cancelled as i32,
                ))
            {
                C::ExecutionCancelled
            } else {
                C::ExecutionFailed
            }
        }
        Some(c) if c.state == State::ConditionPending as i32 => C::ExecutionPending,
        Some(_) => C::ExecutionRunning,
    }
}

/// The job as a read returns it: `stored` with its latest execution's state (`latest`, as
/// [`execution`] reads it).
pub fn job(stored: &v2::Job, latest: Option<&v2::Execution>) -> v2::Job {
    let mut j = stored.clone();
    if let Some(e) = latest {
        j.latest_created_execution = Some(v2::ExecutionReference {
            name: e.name.clone(),
            create_time: e.create_time,
            completion_time: e.completion_time,
            delete_time: None,
            completion_status: completion_status(e) as i32,
        });
    }
    j
}

/// The job's own conditions: ready once stored (a job has nothing to deploy).
pub fn job_ready(j: &mut v2::Job) {
    j.reconciling = false;
    j.observed_generation = j.generation;
    j.terminal_condition = Some(condition("Ready", State::ConditionSucceeded, ""));
    j.conditions = Vec::new();
}

/// The tasks of an execution, by index (none before it starts).
pub fn tasks(view: &v2::Execution, rec: Option<&ExecutionRecord>) -> Vec<v2::Task> {
    let Some(rec) = rec else {
        return Vec::new();
    };
    rec.status.tasks.iter().map(|t| task(view, t)).collect()
}

fn task(view: &v2::Execution, t: &TaskStatus) -> v2::Task {
    let short = super::resource::short(&view.name);
    let tpl = view.template.clone().unwrap_or_default();
    let max_retries = match tpl.retries {
        Some(v2::task_template::Retries::MaxRetries(n)) => n,
        None => 3,
    };
    let start_time = t.start_time.as_deref().and_then(time);
    let completion_time = t.completion_time.as_deref().and_then(time);
    let last_attempt_result = t.last_attempt_result.as_ref().map(|r| {
        let code = match r.reason {
            AttemptReason::Succeeded => 0,
            AttemptReason::Cancelled => tonic::Code::Cancelled as i32,
            AttemptReason::TimedOut => tonic::Code::DeadlineExceeded as i32,
            _ => tonic::Code::Unknown as i32,
        };
        v2::TaskAttemptResult {
            status: Some(rpc::Status {
                code,
                message: if code == 0 {
                    String::new()
                } else {
                    r.message.clone()
                },
                details: Vec::new(),
            }),
            exit_code: r.exit_code.map_or(0, |c| c as i32),
            term_signal: r.term_signal.map_or(0, |s| s as i32),
        }
    });
    let message = t
        .last_attempt_result
        .as_ref()
        .map(|r| r.message.clone())
        .unwrap_or_default();
    let completed = match t.state {
        TaskState::Pending => condition("Completed", State::ConditionPending, ""),
        TaskState::Running => condition("Completed", State::ConditionReconciling, "Running."),
        TaskState::Succeeded => condition("Completed", State::ConditionSucceeded, ""),
        TaskState::Failed | TaskState::Cancelled => {
            let mut c = condition("Completed", State::ConditionFailed, &message);
            let reason = if t.state == TaskState::Cancelled {
                ExecutionReason::Cancelled
            } else {
                ExecutionReason::NonZeroExitCode
            };
            c.reasons = Some(v2::condition::Reasons::ExecutionReason(reason as i32));
            c
        }
    };
    let mut task = v2::Task {
        name: format!("{}/tasks/{}", view.name, task_id(short, t.index)),
        uid: derived_uid(&format!("{}/{}", view.uid, t.index)),
        generation: 1,
        labels: view.labels.clone(),
        annotations: view.annotations.clone(),
        create_time: view.create_time,
        scheduled_time: start_time,
        start_time,
        completion_time,
        update_time: completion_time.or(start_time).or(view.create_time),
        job: view.job.clone(),
        execution: short.to_string(),
        containers: tpl.containers,
        volumes: tpl.volumes,
        max_retries,
        timeout: tpl.timeout,
        service_account: tpl.service_account,
        execution_environment: match tpl.execution_environment {
            0 => v2::ExecutionEnvironment::Gen2 as i32,
            n => n,
        },
        reconciling: matches!(t.state, TaskState::Running | TaskState::Pending) && view.reconciling,
        conditions: vec![completed],
        observed_generation: 1,
        index: t.index as i32,
        retried: t.retried as i32,
        last_attempt_result,
        ..Default::default()
    };
    task.etag = etag_of(&task);
    task
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::job::schedule::{Action, Outcome};
    use crate::runtime::ExitStatus;
    use std::time::Duration;

    use crate::control::job::record::tests::{spec, t0};

    #[test]
    fn task_names() {
        assert_eq!(task_id("hello-abcde", 3), "hello-abcde-task3");
        assert_eq!(task_index("hello-abcde", "hello-abcde-task3"), Some(3));
        assert_eq!(task_index("hello-abcde", "hello-abcde-task-12"), Some(12));
        assert_eq!(task_index("hello-abcde", "hello-abcde-taskx"), None);
        assert_eq!(task_index("hello-abcde", "other-task1"), None);
    }

    #[test]
    fn counts_and_conditions_follow_the_record() {
        let spec = spec(3);
        let job = v2::Job {
            name: "projects/p/locations/l/jobs/hello".into(),
            template: Some(Default::default()),
            ..Default::default()
        };
        let name = "projects/p/locations/l/jobs/hello/executions/hello-abcde";
        let stored = new_execution(&job, name, &spec, 2);
        assert_eq!((stored.task_count, stored.parallelism), (3, 2));
        let pending = execution(&stored, None);
        assert_eq!(
            completion_status(&pending),
            execution_reference::CompletionStatus::ExecutionPending
        );

        let mut rec = ExecutionRecord::new(&spec, "hello-abcde", 2, t0());
        rec.attempt_started(0, 0, t0());
        rec.attempt_started(1, 0, t0());
        let fail = Outcome::Exited(ExitStatus { code: 1 });
        rec.attempt_finished(0, &fail, Action::Retry { attempt: 1 }, t0(), Duration::ZERO);
        let v = execution(&stored, Some(&rec));
        assert_eq!(
            (v.running_count, v.retried_count, v.succeeded_count),
            (1, 1, 0)
        );
        assert!(v.reconciling);
        assert_eq!(
            completion_status(&v),
            execution_reference::CompletionStatus::ExecutionRunning
        );
        let ts = tasks(&v, Some(&rec));
        assert_eq!(ts.len(), 3);
        assert_eq!(ts[0].retried, 1);
        assert_eq!(ts[0].last_attempt_result.as_ref().unwrap().exit_code, 1);
        assert!(ts[0]
            .name
            .ends_with("/executions/hello-abcde/tasks/hello-abcde-task0"));
        assert_eq!(ts[0].execution, "hello-abcde");
        assert_eq!(ts[0].job, "hello");

        let ok = Outcome::Exited(ExitStatus { code: 0 });
        for i in 0..3 {
            rec.attempt_started(i, u32::from(i == 0), t0());
            rec.attempt_finished(i, &ok, Action::Succeed, t0(), Duration::ZERO);
        }
        rec.finish(false, t0(), Duration::from_secs(2));
        let v = execution(&stored, Some(&rec));
        assert_eq!(
            (v.succeeded_count, v.retried_count, v.running_count),
            (3, 1, 0)
        );
        assert!(v.completion_time.is_some() && !v.reconciling);
        assert_eq!(
            completion_status(&v),
            execution_reference::CompletionStatus::ExecutionSucceeded
        );
        let j = super::job(&job, Some(&v));
        assert_eq!(
            j.latest_created_execution.unwrap().completion_status,
            execution_reference::CompletionStatus::ExecutionSucceeded as i32
        );

        let mut rec = ExecutionRecord::new(&spec, "hello-abcde", 2, t0());
        rec.task_cancelled(0, t0());
        rec.finish(true, t0(), Duration::ZERO);
        let v = execution(&stored, Some(&rec));
        assert_eq!(
            completion_status(&v),
            execution_reference::CompletionStatus::ExecutionCancelled
        );
    }
}
