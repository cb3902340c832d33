//! The job commands' human output: the execution's start and end lines, `executions
//! describe` and the per-task table, and `executions list`.

use runlet::control::job::record::{ExecutionRecord, ExecutionState, TaskState, TaskStatus};
use runlet::control::job::JobSpec;

/// The line printed when an execution starts.
pub(super) fn started(name: &str, spec: &JobSpec, parallelism: u32) -> String {
    let how = match spec.parallelism {
        Some(_) => String::new(),
        None => format!(
            " (unset: this machine's cap for --cpu {} and --memory {})",
            spec.cpu, spec.memory
        ),
    };
    format!(
        "Execution [{name}] of job [{}] started: {} task(s), parallelism {parallelism}{how}, max retries {}, task timeout {}s\n",
        spec.name,
        spec.task_count,
        spec.max_retries,
        spec.task_timeout.as_secs()
    )
}

/// The verdict and the description printed when an execution ends.
pub(super) fn finished(rec: &ExecutionRecord) -> String {
    let verdict = match rec.status.state {
        ExecutionState::Succeeded => "succeeded",
        ExecutionState::Failed => "failed",
        ExecutionState::Cancelled => "was cancelled",
        ExecutionState::Running => "is still running",
    };
    format!(
        "\nExecution [{}] {verdict}: {}\n{}",
        rec.name(),
        counts(rec),
        describe(rec)
    )
}

/// `1.2s`, `5m02s`, `1h03m`.
fn fmt_duration(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

fn task_result(t: &TaskStatus) -> String {
    match &t.last_attempt_result {
        Some(r) => r.message.clone(),
        None if t.state == TaskState::Cancelled => "cancelled before it started".into(),
        None => "-".into(),
    }
}

/// The per-task table.
fn tasks_table(rec: &ExecutionRecord) -> String {
    let mut out = format!(
        "{:<6} {:<10} {:<9} {:<9} RESULT\n",
        "TASK", "STATE", "ATTEMPTS", "DURATION"
    );
    for t in &rec.status.tasks {
        out.push_str(&format!(
            "{:<6} {:<10} {:<9} {:<9} {}\n",
            t.index,
            format!("{:?}", t.state),
            t.attempts,
            t.duration_ms
                .map(fmt_duration)
                .unwrap_or_else(|| "-".into()),
            task_result(t)
        ));
    }
    out
}

/// The counts line: `4 succeeded, 0 failed, 0 cancelled, 1 retried`.
fn counts(rec: &ExecutionRecord) -> String {
    let s = &rec.status;
    let running = if s.running_count > 0 {
        format!(", {} running", s.running_count)
    } else {
        String::new()
    };
    format!(
        "{} succeeded, {} failed, {} cancelled, {} retried{running}",
        s.succeeded_count, s.failed_count, s.cancelled_count, s.retried_count
    )
}

/// `runlet job executions describe` as text (and the end-of-execution summary).
pub(super) fn describe(rec: &ExecutionRecord) -> String {
    let s = &rec.status;
    let t = &rec.spec.template.spec;
    let mut out = String::new();
    out.push_str(&format!("Execution:    {}\n", rec.name()));
    out.push_str(&format!("Job:          {}\n", rec.job()));
    out.push_str(&format!("Image:        {}\n", rec.image()));
    out.push_str(&format!("State:        {:?}\n", s.state));
    if let Some(m) = &s.message {
        out.push_str(&format!("Message:      {m}\n"));
    }
    out.push_str(&format!(
        "Tasks:        {} (parallelism {}, max retries {}, task timeout {}s)\n",
        s.tasks.len(),
        s.parallelism,
        t.max_retries.unwrap_or_default(),
        t.timeout_seconds.unwrap_or_default()
    ));
    out.push_str(&format!("Results:      {}\n", counts(rec)));
    out.push_str(&format!("Started:      {}\n", s.start_time));
    if let Some(c) = &s.completion_time {
        out.push_str(&format!("Completed:    {c}\n"));
    }
    if let Some(d) = s.duration_ms {
        out.push_str(&format!("Total time:   {}\n", fmt_duration(d)));
    }
    out.push('\n');
    out.push_str(&tasks_table(rec));
    out
}

/// `runlet job executions list` as text.
pub(super) fn list(records: &[ExecutionRecord]) -> String {
    let mut out = format!(
        "{:<40} {:<24} {:<10} {:>6} {:>9} {:>6} {:>9} {:>7}  {:<20} {}\n",
        "EXECUTION",
        "JOB",
        "STATE",
        "TASKS",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "RETRIED",
        "STARTED",
        "DURATION"
    );
    for r in records {
        let s = &r.status;
        out.push_str(&format!(
            "{:<40} {:<24} {:<10} {:>6} {:>9} {:>6} {:>9} {:>7}  {:<20} {}\n",
            r.name(),
            r.job(),
            format!("{:?}", s.state),
            s.tasks.len(),
            s.succeeded_count,
            s.failed_count,
            s.cancelled_count,
            s.retried_count,
            s.start_time,
            s.duration_ms
                .map(fmt_duration)
                .unwrap_or_else(|| "-".into())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use runlet::control::job::spec::{resolve, JobFlags};
    use runlet::control::job::{Action, Outcome};
    use runlet::runtime::ExitStatus;

    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(1234), "1.2s");
        assert_eq!(fmt_duration(302_000), "5m02s");
        assert_eq!(fmt_duration(3_780_000), "1h03m");
    }

    #[test]
    fn describe_shows_counts_and_results() {
        let spec = resolve(
            &JobFlags {
                name: Some("hello".into()),
                image: Some("probe".into()),
                tasks: Some("2".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut r = ExecutionRecord::new(&spec, "hello-abcde", 2, t0);
        r.attempt_started(0, 0, t0);
        r.attempt_finished(
            0,
            &Outcome::Exited(ExitStatus { code: 1 }),
            Action::Retry { attempt: 1 },
            t0,
            Duration::from_secs(1),
        );
        r.attempt_started(0, 1, t0);
        r.attempt_finished(
            0,
            &Outcome::Exited(ExitStatus { code: 1 }),
            Action::Fail,
            t0,
            Duration::from_millis(2500),
        );
        r.task_cancelled(1, t0);
        r.finish(false, t0, Duration::from_secs(3));
        let text = finished(&r);
        assert!(
            text.starts_with(
                "\nExecution [hello-abcde] failed: 0 succeeded, 1 failed, 1 cancelled, 1 retried\n"
            ),
            "{text}"
        );
        assert!(text.contains("Job:          hello\n"), "{text}");
        assert!(text.contains("exit code 1"), "{text}");
        assert!(text.contains("cancelled before it started"), "{text}");
        assert!(text.contains("2.5s"), "{text}");
        let list = list(&[r]);
        assert!(list.starts_with("EXECUTION "), "{list}");
        assert!(list.contains("hello-abcde"), "{list}");
    }
}
