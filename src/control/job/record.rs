//! Execution records: one JSON document per execution under
//! `<state-dir>/jobs/executions/<execution>.json`, in Cloud Run's vocabulary (an `Execution`
//! with `spec` and `status`: succeededCount, failedCount, cancelledCount, retriedCount,
//! runningCount, startTime, completionTime, and per task index, retried and
//! lastAttemptResult with exitCode or termSignal).
//!
//! A record is replaced durably (temp file, fsync, rename, fsync of the directory) each time
//! the execution's state changes, so a crash loses no result already reported. The runlet
//! running an execution holds an exclusive `flock` on `<execution>.lock` for its whole life;
//! the kernel drops it when that process dies however it dies, which is how a later runlet
//! tells a running execution from an abandoned one ([`RecordStore::try_claim`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::schedule::{Action, Outcome};
use super::spec::{ExecutionSpecYaml, JobSpec, API_VERSION};
use crate::util::rfc3339;

/// The label of an execution record naming its job (Cloud Run's).
pub const JOB_LABEL: &str = "run.googleapis.com/job";

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("execution record {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("execution record {path} is not readable: {detail}")]
    Parse { path: String, detail: String },
    #[error("execution {name} not found (see `runlet job executions list`)")]
    NotFound { name: String },
    #[error("execution {name} is already locked by another runlet")]
    Locked { name: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RecordError {
    let path = path.display().to_string();
    move |source| RecordError::Io { op, path, source }
}

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

// ---- human output -------------------------------------------------------------------------

/// `1.2s`, `5m02s`, `1h03m`.
pub fn fmt_duration(ms: u64) -> String {
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
pub fn tasks_table(rec: &ExecutionRecord) -> String {
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
pub fn counts(rec: &ExecutionRecord) -> String {
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
pub fn describe(rec: &ExecutionRecord) -> String {
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
pub fn list_table(records: &[ExecutionRecord]) -> String {
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

// ---- the store ----------------------------------------------------------------------------

/// Where execution records live.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

/// The exclusive lock of the runlet that owns an execution. Dropping it releases the lock;
/// [`release`](Self::release) also removes the lock file.
#[derive(Debug)]
pub struct ExecutionLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl ExecutionLock {
    /// Removes the lock file, then releases the lock.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl RecordStore {
    pub fn new(state_dir: &Path) -> Self {
        RecordStore {
            dir: state_dir.join("jobs").join("executions"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn json(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.lock"))
    }

    fn flock(&self, name: &str) -> Result<Option<ExecutionLock>, RecordError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let path = self.lock_path(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(ExecutionLock { _lock: lock, path })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(RecordError::Io {
                op: "lock",
                path: path.display().to_string(),
                source: e.into(),
            }),
        }
    }

    /// Takes the lock of a new execution (held for as long as it runs).
    pub fn lock(&self, name: &str) -> Result<ExecutionLock, RecordError> {
        self.flock(name)?.ok_or_else(|| RecordError::Locked {
            name: name.to_string(),
        })
    }

    /// Takes the lock of an execution whose owner is gone; `None` while its owner lives.
    pub fn try_claim(&self, name: &str) -> Result<Option<ExecutionLock>, RecordError> {
        self.flock(name)
    }

    /// True while a live runlet owns execution `name`.
    pub fn is_live(&self, name: &str) -> bool {
        let path = self.lock_path(name);
        let Ok(file) = OpenOptions::new().write(true).open(&path) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock),
            Err((_, nix::errno::Errno::EWOULDBLOCK))
        )
    }

    /// Replaces the record durably: temp file, fsync, rename, fsync of the directory.
    pub fn save_blocking(&self, rec: &ExecutionRecord) -> Result<(), RecordError> {
        let bytes = serde_json::to_vec(rec).map_err(|e| RecordError::Parse {
            path: self.json(rec.name()).display().to_string(),
            detail: e.to_string(),
        })?;
        std::fs::create_dir_all(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let path = self.json(rec.name());
        let tmp = self.dir.join(format!(".{}.json.tmp", rec.name()));
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", &self.dir))
    }

    /// [`save_blocking`](Self::save_blocking) on a blocking thread.
    pub async fn save(&self, rec: &ExecutionRecord) -> Result<(), RecordError> {
        let store = self.clone();
        let rec = rec.clone();
        tokio::task::spawn_blocking(move || store.save_blocking(&rec))
            .await
            .map_err(|e| RecordError::Io {
                op: "write",
                path: self.dir.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    pub fn load(&self, name: &str) -> Result<ExecutionRecord, RecordError> {
        let path = self.json(name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecordError::NotFound {
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|e| RecordError::Parse {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    }

    /// Every record, newest first. Unreadable files are skipped (and returned as errors
    /// beside the records, for the caller to report).
    pub fn list(&self) -> (Vec<ExecutionRecord>, Vec<RecordError>) {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (records, errors),
            Err(e) => {
                errors.push(io_err("list", &self.dir)(e));
                return (records, errors);
            }
        };
        for entry in entries.filter_map(Result::ok) {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            match self.load(name) {
                Ok(r) => records.push(r),
                Err(e) => errors.push(e),
            }
        }
        records.sort_by(|a, b| {
            b.status
                .start_time
                .cmp(&a.status.start_time)
                .then_with(|| b.name().cmp(a.name()))
        });
        (records, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::{resolve, JobFlags};
    use super::*;
    use crate::runtime::ExitStatus;

    fn spec(tasks: u32) -> JobSpec {
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

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
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
        let text = describe(&r);
        assert!(
            text.contains("1 succeeded, 1 failed, 1 cancelled, 1 retried"),
            "{text}"
        );
        assert!(text.contains("exit code 1"), "{text}");
    }

    #[test]
    fn json_uses_cloud_run_names() {
        let mut r = ExecutionRecord::new(&spec(1), "hello-abcde", 1, t0());
        r.attempt_started(0, 0, t0());
        r.attempt_finished(
            0,
            &Outcome::OutOfMemory(ExitStatus { code: 137 }),
            Action::Fail,
            t0(),
            Duration::ZERO,
        );
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
        r.attempt_started(0, 0, t0());
        r.attempt_finished(
            0,
            &Outcome::Exited(ExitStatus { code: 0 }),
            Action::Succeed,
            t0(),
            Duration::ZERO,
        );
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

    #[test]
    fn the_store_writes_durably_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path());
        let mut a = ExecutionRecord::new(&spec(1), "hello-aaaaa", 1, t0());
        store.save_blocking(&a).unwrap();
        a.status.start_time = "2023-11-14T22:13:21Z".into();
        a.metadata.name = "hello-bbbbb".into();
        store.save_blocking(&a).unwrap();
        assert_eq!(store.load("hello-bbbbb").unwrap(), a);
        let (list, errors) = store.list();
        assert!(errors.is_empty());
        assert_eq!(
            list.iter().map(|r| r.name()).collect::<Vec<_>>(),
            ["hello-bbbbb", "hello-aaaaa"]
        );
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
        assert!(matches!(
            store.load("nope"),
            Err(RecordError::NotFound { .. })
        ));
        std::fs::write(store.dir().join("broken.json"), "{").unwrap();
        assert_eq!(store.list().1.len(), 1);

        assert!(!store.is_live("hello-aaaaa"));
        let lock = store.lock("hello-aaaaa").unwrap();
        assert!(store.is_live("hello-aaaaa"));
        assert!(store.try_claim("hello-aaaaa").unwrap().is_none());
        lock.release();
        assert!(!store.is_live("hello-aaaaa"));
        let claimed = store.try_claim("hello-aaaaa").unwrap().unwrap();
        assert!(store.is_live("hello-aaaaa"));
        drop(claimed);
        assert!(!store.is_live("hello-aaaaa"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(1234), "1.2s");
        assert_eq!(fmt_duration(302_000), "5m02s");
        assert_eq!(fmt_duration(3_780_000), "1h03m");
    }
}
