//! What `runlet jobs ...` prints: the lists (jobs, executions, tasks), the job and execution
//! summaries, and the progress line of `execute --wait`. Plain functions of the resources.

use runlet::pb::run_v2::{self as v2, condition::State, execution_reference::CompletionStatus};

use super::tables::table;
use super::{region, short, time_rfc3339, Readiness};

/// An execution's state in one word, from its `Completed` condition.
pub fn execution_state(e: &v2::Execution) -> &'static str {
    let c = e.conditions.iter().find(|c| c.r#type == "Completed");
    match c.map(|c| (State::try_from(c.state), c.reasons)) {
        Some((Ok(State::ConditionSucceeded), _)) => "Succeeded",
        Some((Ok(State::ConditionFailed), Some(v2::condition::Reasons::ExecutionReason(r))))
            if r == v2::condition::ExecutionReason::Cancelled as i32 =>
        {
            "Cancelled"
        }
        Some((Ok(State::ConditionFailed), _)) => "Failed",
        Some((Ok(State::ConditionPending), _)) | None => "Pending",
        _ => "Running",
    }
}

fn mark(state: &str) -> &'static str {
    match state {
        "Succeeded" => Readiness::Ready.mark(),
        "Failed" | "Cancelled" => Readiness::Failed.mark(),
        _ => Readiness::Pending.mark(),
    }
}

fn status_word(s: i32) -> &'static str {
    match CompletionStatus::try_from(s) {
        Ok(CompletionStatus::ExecutionSucceeded) => "Succeeded",
        Ok(CompletionStatus::ExecutionFailed) => "Failed",
        Ok(CompletionStatus::ExecutionRunning) => "Running",
        Ok(CompletionStatus::ExecutionPending) => "Pending",
        Ok(CompletionStatus::ExecutionCancelled) => "Cancelled",
        _ => "",
    }
}

/// `runlet jobs list`.
pub fn jobs(list: &[v2::Job]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|j| {
            let latest = j.latest_created_execution.as_ref();
            vec![
                Readiness::of(j.terminal_condition.as_ref())
                    .mark()
                    .to_string(),
                short(&j.name).to_string(),
                region(&j.name).to_string(),
                latest.map_or_else(String::new, |l| short(&l.name).to_string()),
                latest
                    .map_or("", |l| status_word(l.completion_status))
                    .to_string(),
                time_rfc3339(j.create_time.as_ref()),
            ]
        })
        .collect();
    table(
        &["", "JOB", "REGION", "LAST RUN", "STATUS", "CREATED"],
        &rows,
    )
}

/// `runlet jobs executions list`.
pub fn executions(list: &[v2::Execution]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let state = execution_state(e);
            vec![
                mark(state).to_string(),
                short(&e.name).to_string(),
                e.job.clone(),
                region(&e.name).to_string(),
                e.running_count.to_string(),
                format!("{} / {}", e.succeeded_count, e.task_count),
                state.to_string(),
                time_rfc3339(e.create_time.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "",
            "EXECUTION",
            "JOB",
            "REGION",
            "RUNNING",
            "COMPLETE",
            "STATE",
            "CREATED",
        ],
        &rows,
    )
}

/// A task's state in one word.
fn task_state(t: &v2::Task) -> &'static str {
    let c = t.conditions.iter().find(|c| c.r#type == "Completed");
    match c.map(|c| (State::try_from(c.state), c.reasons)) {
        Some((Ok(State::ConditionSucceeded), _)) => "Succeeded",
        Some((Ok(State::ConditionFailed), Some(v2::condition::Reasons::ExecutionReason(r))))
            if r == v2::condition::ExecutionReason::Cancelled as i32 =>
        {
            "Cancelled"
        }
        Some((Ok(State::ConditionFailed), _)) => "Failed",
        Some((Ok(State::ConditionReconciling), _)) => "Running",
        _ => "Pending",
    }
}

/// `runlet jobs executions tasks list`.
pub fn tasks(list: &[v2::Task]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            let state = task_state(t);
            let last = t
                .last_attempt_result
                .as_ref()
                .map_or_else(String::new, |r| {
                    if r.term_signal != 0 {
                        format!("signal {}", r.term_signal)
                    } else {
                        format!("exit {}", r.exit_code)
                    }
                });
            vec![
                mark(state).to_string(),
                short(&t.name).to_string(),
                t.index.to_string(),
                state.to_string(),
                t.retried.to_string(),
                last,
                time_rfc3339(t.start_time.as_ref()),
                time_rfc3339(t.completion_time.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "",
            "TASK",
            "INDEX",
            "STATE",
            "RETRIES",
            "LAST ATTEMPT",
            "STARTED",
            "COMPLETED",
        ],
        &rows,
    )
}

/// `runlet jobs describe JOB`.
pub fn job(j: &v2::Job) -> String {
    let t = j.template.clone().unwrap_or_default();
    let tt = t.template.clone().unwrap_or_default();
    let c = tt.containers.first().cloned().unwrap_or_default();
    let mut out = format!(
        "{} Job {} in region {}\n\n",
        Readiness::of(j.terminal_condition.as_ref()).mark(),
        short(&j.name),
        region(&j.name)
    );
    let retries = match tt.retries {
        Some(v2::task_template::Retries::MaxRetries(n)) => n,
        None => 3,
    };
    let lines = [
        ("Image", c.image.clone()),
        ("Tasks", t.task_count.max(1).to_string()),
        (
            "Parallelism",
            if t.parallelism == 0 {
                "as many as the machine allows".into()
            } else {
                t.parallelism.to_string()
            },
        ),
        ("Max retries", retries.to_string()),
        (
            "Task timeout",
            tt.timeout
                .map_or_else(|| "600s".into(), |d| format!("{}s", d.seconds)),
        ),
        ("Command", c.command.join(" ")),
        ("Args", c.args.join(" ")),
        (
            "Env",
            c.env
                .iter()
                .map(|e| match &e.values {
                    Some(v2::env_var::Values::Value(v)) => format!("{}={v}", e.name),
                    _ => e.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "Schedule",
            runlet::control::job::cron::describe(&j.annotations).unwrap_or_default(),
        ),
        ("Executions", j.execution_count.to_string()),
        (
            "Last run",
            j.latest_created_execution
                .as_ref()
                .map_or_else(String::new, |l| {
                    format!("{} ({})", short(&l.name), status_word(l.completion_status))
                }),
        ),
    ];
    for (k, v) in lines {
        if !v.is_empty() {
            out.push_str(&format!("{k:<14}{v}\n"));
        }
    }
    out.push_str(&pubsub_line(j));
    out
}

/// The job's Pub/Sub binding, if any (annotations `runlet.io/pubsub-*`).
fn pubsub_line(j: &v2::Job) -> String {
    match runlet::pubsub::binding::from_annotations(&j.annotations) {
        Ok(Some(b)) => format!(
            "{:<14}{} (one task per message; at most {} execution{} at once)\n",
            "Pub/Sub",
            b.subscription,
            b.max_executions,
            if b.max_executions == 1 { "" } else { "s" }
        ),
        _ => String::new(),
    }
}

/// `runlet jobs executions describe EXECUTION`.
pub fn execution(e: &v2::Execution) -> String {
    let state = execution_state(e);
    let mut out = format!(
        "{} Execution {} of job {} in region {}: {state}\n\n",
        mark(state),
        short(&e.name),
        e.job,
        region(&e.name)
    );
    let lines = [
        ("Tasks", e.task_count.to_string()),
        ("Parallelism", e.parallelism.to_string()),
        ("Running", e.running_count.to_string()),
        ("Succeeded", e.succeeded_count.to_string()),
        ("Failed", e.failed_count.to_string()),
        ("Cancelled", e.cancelled_count.to_string()),
        ("Retried", e.retried_count.to_string()),
        ("Started", time_rfc3339(e.start_time.as_ref())),
        ("Completed", time_rfc3339(e.completion_time.as_ref())),
        (
            "Triggered by",
            e.annotations
                .get(runlet::control::job::cron::TRIGGERED_BY)
                .cloned()
                .unwrap_or_default(),
        ),
    ];
    for (k, v) in lines {
        if !v.is_empty() {
            out.push_str(&format!("{k:<14}{v}\n"));
        }
    }
    if let Some(c) = e.conditions.iter().find(|c| c.r#type == "Completed") {
        if !c.message.is_empty() {
            out.push_str(&format!("{:<14}{}\n", "Message", c.message));
        }
    }
    out
}

/// The line `execute --wait` prints when the counts change.
pub fn progress(e: &v2::Execution) -> String {
    format!(
        "Tasks: {} running, {} succeeded, {} failed, {} cancelled of {} ({} retried)\n",
        e.running_count,
        e.succeeded_count,
        e.failed_count,
        e.cancelled_count,
        e.task_count,
        e.retried_count
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(state: State, reason: Option<v2::condition::ExecutionReason>) -> v2::Condition {
        v2::Condition {
            r#type: "Completed".into(),
            state: state as i32,
            reasons: reason.map(|r| v2::condition::Reasons::ExecutionReason(r as i32)),
            ..Default::default()
        }
    }

    #[test]
    fn states_and_tables() {
        use v2::condition::ExecutionReason as R;
        let table = [
            (None, "Pending"),
            (
                Some(completed(State::ConditionReconciling, None)),
                "Running",
            ),
            (
                Some(completed(State::ConditionSucceeded, None)),
                "Succeeded",
            ),
            (
                Some(completed(State::ConditionFailed, Some(R::NonZeroExitCode))),
                "Failed",
            ),
            (
                Some(completed(State::ConditionFailed, Some(R::Cancelled))),
                "Cancelled",
            ),
        ];
        for (c, want) in table {
            let e = v2::Execution {
                conditions: c.into_iter().collect(),
                ..Default::default()
            };
            assert_eq!(execution_state(&e), want);
        }
        let e = v2::Execution {
            name: "projects/p/locations/l/jobs/hello/executions/hello-abcde".into(),
            job: "hello".into(),
            task_count: 4,
            succeeded_count: 3,
            running_count: 1,
            conditions: vec![completed(State::ConditionReconciling, None)],
            ..Default::default()
        };
        let t = executions(std::slice::from_ref(&e));
        assert!(
            t.contains("hello-abcde") && t.contains("3 / 4") && t.contains("Running"),
            "{t}"
        );
        assert!(progress(&e).starts_with("Tasks: 1 running, 3 succeeded"));
        assert!(
            execution(&e).contains("Succeeded     3"),
            "{}",
            execution(&e)
        );
    }
}
