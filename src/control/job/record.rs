//! Execution records: an execution in Cloud Run's vocabulary (an `Execution` with `spec` and
//! `status`: succeededCount, failedCount, cancelledCount, retriedCount, runningCount,
//! startTime, completionTime, and per task index, retried and lastAttemptResult with
//! exitCode or termSignal), and how each event of the execution changes it. Where records
//! are kept is [`super::store`]; how they are printed is the command's business.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::schedule::{Action, Outcome};
use super::spec::{ExecutionSpecYaml, JobSpec, API_VERSION};
use crate::util::rfc3339;

/// The label of an execution record naming its job (Cloud Run's).
pub const JOB_LABEL: &str = "run.googleapis.com/job";
/// The label of an execution record naming the runlet that runs it (as containers carry
/// it: [`crate::control::owner::Owner::label`]).
pub const OWNER_LABEL: &str = crate::runtime::labels::OWNER;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// Why an attempt ended the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptReason {
    /// Exited 0.
    Succeeded,
    /// Exited non-zero (or was killed by a signal nobody at runlet sent).
    Failed,
    OutOfMemory,
    TimedOut,
    Cancelled,
    /// runlet could not run or watch the container.
    RuntimeError,
    /// The runlet running the execution died before the attempt ended.
    RunletExited,
}

/// Cloud Run's `lastAttemptResult`: `exitCode` when the process exited, `termSignal` when a
/// signal ended it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_signal: Option<u32>,
    pub reason: AttemptReason,
    pub message: String,
}

impl AttemptResult {
    pub fn from_outcome(outcome: &Outcome) -> AttemptResult {
        let status = outcome.status();
        let reason = match outcome {
            Outcome::Exited(s) if s.code == 0 => AttemptReason::Succeeded,
            Outcome::Exited(_) => AttemptReason::Failed,
            Outcome::OutOfMemory(_) => AttemptReason::OutOfMemory,
            Outcome::TimedOut(_) => AttemptReason::TimedOut,
            Outcome::Cancelled(_) => AttemptReason::Cancelled,
            Outcome::RuntimeError(_) => AttemptReason::RuntimeError,
        };
        let signal = status.and_then(|s| s.signal());
        AttemptResult {
            exit_code: match signal {
                Some(_) => None,
                None => status.map(|s| s.code),
            },
            term_signal: signal,
            reason,
            message: outcome.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub index: u32,
    pub state: TaskState,
    /// How many times the task was retried (attempts so far minus one).
    pub retried: u32,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// From the first attempt's start to the task's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_result: Option<AttemptResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStatus {
    pub state: ExecutionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The parallelism runlet applied (the spec's, or the machine's cap when unset).
    pub parallelism: u32,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub running_count: u32,
    pub succeeded_count: u32,
    pub failed_count: u32,
    pub cancelled_count: u32,
    /// Tasks retried at least once.
    pub retried_count: u32,
    pub tasks: Vec<TaskStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordMetadata {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub creation_timestamp: String,
}

/// One execution, as stored and as printed by `--format json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRecord {
    pub api_version: String,
    pub kind: String,
    pub metadata: RecordMetadata,
    pub spec: ExecutionSpecYaml,
    pub status: ExecutionStatus,
}

impl ExecutionRecord {
    /// A new running execution with every task pending.
    pub fn new(spec: &JobSpec, name: &str, parallelism: u32, now: SystemTime) -> Self {
        let mut labels = BTreeMap::new();
        labels.insert(JOB_LABEL.to_string(), spec.name.clone());
        labels.insert(
            OWNER_LABEL.to_string(),
            crate::control::owner::current().label(),
        );
        ExecutionRecord {
            api_version: API_VERSION.into(),
            kind: "Execution".into(),
            metadata: RecordMetadata {
                name: name.to_string(),
                labels,
                creation_timestamp: rfc3339(now),
            },
            spec: spec.execution_spec(),
            status: ExecutionStatus {
                state: ExecutionState::Running,
                message: None,
                parallelism,
                start_time: rfc3339(now),
                completion_time: None,
                duration_ms: None,
                running_count: 0,
                succeeded_count: 0,
                failed_count: 0,
                cancelled_count: 0,
                retried_count: 0,
                tasks: (0..spec.task_count)
                    .map(|index| TaskStatus {
                        index,
                        state: TaskState::Pending,
                        retried: 0,
                        attempts: 0,
                        start_time: None,
                        completion_time: None,
                        duration_ms: None,
                        last_attempt_result: None,
                    })
                    .collect(),
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn job(&self) -> &str {
        self.metadata
            .labels
            .get(JOB_LABEL)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The runlet that runs (or ran) it; `None` for records from before owner labels.
    pub fn owner(&self) -> Option<crate::control::owner::Owner> {
        self.metadata
            .labels
            .get(OWNER_LABEL)
            .and_then(|o| crate::control::owner::Owner::parse(o))
    }

    /// Whether a daemon runs it: its recovery after a restart is that daemon's, never a
    /// job command's.
    pub fn daemon_owned(&self) -> bool {
        matches!(self.owner(), Some(crate::control::owner::Owner::Daemon(_)))
    }

    pub fn image(&self) -> &str {
        self.spec
            .template
            .spec
            .containers
            .first()
            .map(|c| c.image.as_str())
            .unwrap_or("")
    }

    fn task(&mut self, index: u32) -> Option<&mut TaskStatus> {
        self.status.tasks.get_mut(index as usize)
    }

    pub fn attempt_started(&mut self, index: u32, attempt: u32, now: SystemTime) {
        if let Some(t) = self.task(index) {
            t.state = TaskState::Running;
            t.attempts = attempt + 1;
            t.retried = attempt;
            t.start_time.get_or_insert_with(|| rfc3339(now));
        }
        self.recount();
    }

    /// Records the end of an attempt and what the scheduler decided; `task_elapsed` runs
    /// from the task's first attempt.
    pub fn attempt_finished(
        &mut self,
        index: u32,
        outcome: &Outcome,
        action: Action,
        now: SystemTime,
        task_elapsed: Duration,
    ) {
        if let Some(t) = self.task(index) {
            t.last_attempt_result = Some(AttemptResult::from_outcome(outcome));
            let state = match action {
                Action::Succeed => Some(TaskState::Succeeded),
                Action::Fail => Some(TaskState::Failed),
                Action::Cancel => Some(TaskState::Cancelled),
                Action::Retry { attempt } => {
                    t.retried = attempt;
                    t.state = TaskState::Pending;
                    None
                }
            };
            if let Some(state) = state {
                t.state = state;
                t.completion_time = Some(rfc3339(now));
                t.duration_ms = Some(task_elapsed.as_millis() as u64);
            }
        }
        self.recount();
    }

    /// A task that never ran because the execution was cancelled.
    pub fn task_cancelled(&mut self, index: u32, now: SystemTime) {
        if let Some(t) = self.task(index) {
            t.state = TaskState::Cancelled;
            t.completion_time = Some(rfc3339(now));
        }
        self.recount();
    }

    /// Ends the execution: cancelled if it was, succeeded if every task did, else failed.
    pub fn finish(&mut self, cancelled: bool, now: SystemTime, elapsed: Duration) {
        self.recount();
        let s = &mut self.status;
        let total = s.tasks.len() as u32;
        (s.state, s.message) = if cancelled {
            (
                ExecutionState::Cancelled,
                Some(format!(
                    "cancelled: {} of {total} task(s) succeeded before the cancellation",
                    s.succeeded_count
                )),
            )
        } else if s.succeeded_count == total {
            (ExecutionState::Succeeded, None)
        } else {
            (
                ExecutionState::Failed,
                Some(format!("{} of {total} task(s) failed", s.failed_count)),
            )
        };
        s.completion_time = Some(rfc3339(now));
        s.duration_ms = Some(elapsed.as_millis() as u64);
    }

    /// Marks an execution whose runlet died: its running tasks failed (their results are
    /// lost), its pending tasks will never run (cancelled), the execution failed.
    pub fn mark_abandoned(&mut self, now: SystemTime) {
        for t in &mut self.status.tasks {
            match t.state {
                TaskState::Running => {
                    t.state = TaskState::Failed;
                    t.completion_time = Some(rfc3339(now));
                    t.last_attempt_result = Some(AttemptResult {
                        exit_code: None,
                        term_signal: None,
                        reason: AttemptReason::RunletExited,
                        message: "runlet exited while this attempt was running; its container was removed".into(),
                    });
                }
                TaskState::Pending => {
                    t.state = TaskState::Cancelled;
                    t.completion_time = Some(rfc3339(now));
                }
                _ => {}
            }
        }
        self.recount();
        self.status.state = ExecutionState::Failed;
        self.status.message =
            Some("runlet exited while the execution was running; marked failed by the next runlet job command".into());
        self.status.completion_time = Some(rfc3339(now));
    }

    /// The scheduler's phase of each task, as recorded (to take the execution over): a
    /// running task is in its latest attempt; a pending one waits for its next.
    pub fn phases(&self) -> Vec<super::schedule::TaskPhase> {
        use super::schedule::TaskPhase as P;
        self.status
            .tasks
            .iter()
            .map(|t| match t.state {
                TaskState::Pending => P::Pending { attempt: t.retried },
                TaskState::Running => P::Running {
                    attempt: t.attempts.saturating_sub(1),
                },
                TaskState::Succeeded => P::Succeeded {
                    attempts: t.attempts,
                },
                TaskState::Failed => P::Failed {
                    attempts: t.attempts,
                },
                TaskState::Cancelled => P::Cancelled,
            })
            .collect()
    }

    /// Recomputes the counts from the tasks.
    pub fn recount(&mut self) {
        let s = &mut self.status;
        let count = |st: TaskState| s.tasks.iter().filter(|t| t.state == st).count() as u32;
        s.running_count = count(TaskState::Running);
        s.succeeded_count = count(TaskState::Succeeded);
        s.failed_count = count(TaskState::Failed);
        s.cancelled_count = count(TaskState::Cancelled);
        s.retried_count = s.tasks.iter().filter(|t| t.retried > 0).count() as u32;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::spec::{resolve, JobFlags};
    use super::*;
    use crate::runtime::ExitStatus;

    pub(crate) fn spec(tasks: u32) -> JobSpec {
        resolve(
            &JobFlags {
                name: Some("hello".into()),
                image: Some("probe".into()),
                tasks: Some(tasks.to_string()),
                ..Default::default()
            },
            None,
        )
        .unwrap()
    }

    pub(crate) fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// Runs one attempt of task `index` that ends with `outcome`, the scheduler deciding
    /// `action`, all at [`t0`].
    fn ran(r: &mut ExecutionRecord, index: u32, outcome: Outcome, action: Action) {
        r.attempt_started(index, 0, t0());
        r.attempt_finished(index, &outcome, action, t0(), Duration::ZERO);
    }

    #[test]
    fn attempt_results_use_exit_code_or_term_signal() {
        let table = [
            (
                Outcome::Exited(ExitStatus { code: 0 }),
                Some(0),
                None,
                AttemptReason::Succeeded,
            ),
            (
                Outcome::Exited(ExitStatus { code: 3 }),
                Some(3),
                None,
                AttemptReason::Failed,
            ),
            (
                Outcome::OutOfMemory(ExitStatus { code: 137 }),
                None,
                Some(9),
                AttemptReason::OutOfMemory,
            ),
            (
                Outcome::TimedOut(Some(ExitStatus { code: 137 })),
                None,
                Some(9),
                AttemptReason::TimedOut,
            ),
            (Outcome::TimedOut(None), None, None, AttemptReason::TimedOut),
            (
                Outcome::Cancelled(Some(ExitStatus { code: 143 })),
                None,
                Some(15),
                AttemptReason::Cancelled,
            ),
            (
                Outcome::RuntimeError("x".into()),
                None,
                None,
                AttemptReason::RuntimeError,
            ),
        ];
        for (outcome, code, signal, reason) in table {
            let r = AttemptResult::from_outcome(&outcome);
            assert_eq!(
                (r.exit_code, r.term_signal, r.reason),
                (code, signal, reason),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn counts_follow_the_tasks() {
        let mut r = ExecutionRecord::new(&spec(3), "hello-abcde", 2, t0());
        r.attempt_started(0, 0, t0());
        r.attempt_started(1, 0, t0());
        assert_eq!(r.status.running_count, 2);
        let fail = Outcome::Exited(ExitStatus { code: 1 });
        r.attempt_finished(
            0,
            &fail,
            Action::Retry { attempt: 1 },
            t0(),
            Duration::from_secs(1),
        );
        assert_eq!(r.status.tasks[0].state, TaskState::Pending);
        assert_eq!(r.status.retried_count, 1);
        r.attempt_started(0, 1, t0());
        r.attempt_finished(
            0,
            &Outcome::Exited(ExitStatus { code: 0 }),
            Action::Succeed,
            t0(),
            Duration::from_millis(2500),
        );
        r.attempt_finished(1, &fail, Action::Fail, t0(), Duration::from_secs(1));
        r.task_cancelled(2, t0());
        r.finish(false, t0(), Duration::from_secs(3));
        let s = &r.status;
        assert_eq!(
            (
                s.running_count,
                s.succeeded_count,
                s.failed_count,
                s.cancelled_count,
                s.retried_count
            ),
            (0, 1, 1, 1, 1)
        );
        assert_eq!(s.state, ExecutionState::Failed);
        assert_eq!(s.tasks[0].attempts, 2);
        assert_eq!(s.tasks[0].retried, 1);
        assert_eq!(s.tasks[0].duration_ms, Some(2500));
        assert_eq!(
            s.tasks[0].start_time.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            s.tasks[1]
                .last_attempt_result
                .as_ref()
                .map(|a| a.message.as_str()),
            Some("exit code 1")
        );
    }

    #[test]
    fn json_uses_cloud_run_names() {
        let mut r = ExecutionRecord::new(&spec(1), "hello-abcde", 1, t0());
        let oom = Outcome::OutOfMemory(ExitStatus { code: 137 });
        ran(&mut r, 0, oom, Action::Fail);
        r.finish(false, t0(), Duration::ZERO);
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["kind"], "Execution");
        assert_eq!(j["metadata"]["labels"]["run.googleapis.com/job"], "hello");
        assert_eq!(j["spec"]["taskCount"], 1);
        assert_eq!(j["spec"]["template"]["spec"]["maxRetries"], 3);
        for k in [
            "succeededCount",
            "failedCount",
            "cancelledCount",
            "retriedCount",
            "runningCount",
            "startTime",
            "completionTime",
        ] {
            assert!(j["status"].get(k).is_some(), "{k}: {j}");
        }
        let t = &j["status"]["tasks"][0];
        assert_eq!(t["index"], 0);
        assert_eq!(t["retried"], 0);
        assert_eq!(t["lastAttemptResult"]["termSignal"], 9);
        assert_eq!(t["lastAttemptResult"]["reason"], "OutOfMemory");
        assert!(t["lastAttemptResult"].get("exitCode").is_none());
    }

    #[test]
    fn abandoned_executions_are_marked_failed() {
        let mut r = ExecutionRecord::new(&spec(3), "hello-abcde", 1, t0());
        let ok = Outcome::Exited(ExitStatus { code: 0 });
        ran(&mut r, 0, ok, Action::Succeed);
        r.attempt_started(1, 0, t0());
        r.mark_abandoned(t0());
        let s = &r.status;
        assert_eq!(s.state, ExecutionState::Failed);
        assert_eq!(
            s.tasks[0].state,
            TaskState::Succeeded,
            "finished results are kept"
        );
        assert_eq!(s.tasks[1].state, TaskState::Failed);
        assert_eq!(
            s.tasks[1].last_attempt_result.as_ref().unwrap().reason,
            AttemptReason::RunletExited
        );
        assert_eq!(s.tasks[2].state, TaskState::Cancelled);
        assert_eq!(
            (s.succeeded_count, s.failed_count, s.cancelled_count),
            (1, 1, 1)
        );
    }
}
