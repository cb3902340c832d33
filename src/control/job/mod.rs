//! Jobs: an execution runs `taskCount` tasks, at most `parallelism` at once; each task runs
//! as one or more attempts, each attempt a fresh container, until one exits 0 (JOB-1) or the
//! retries run out. Attempts past the task timeout are stopped (SIGTERM, SIGKILL 10 s later,
//! LIFE-J2); attempts over their memory limit are reported as out of memory.
//!
//! - [`spec`]: the job from flags and Cloud Run job YAML, validated; default parallelism.
//! - [`schedule`]: the task scheduler's decisions (which task runs next), as plain functions (`next_action`, [`Scheduler`]).
//! - [`cron`]: a job's schedule (unix-cron annotations) and the schedule trigger's decisions.
//! - [`record`]: execution records in Cloud Run's vocabulary.
//! - [`store`]: where records are written, durably; the owner lock.
//! - [`run`]: the execution loop, one attempt (its container is a
//!   [`Sandbox`](crate::control::sandbox::Sandbox)), recovery after a crash.

pub mod cron;
pub mod record;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod store;
pub mod task_file;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::image::ImageInfo;
use crate::runtime::network::{NetConfig, Network};
use crate::runtime::rootfs::{MemoryFs, RootFs};
use crate::runtime::{Runtime, RuntimeError};

pub use record::{ExecutionRecord, ExecutionState};
pub use run::{execute, recover, resume, Recovered};
pub use schedule::{next_action, Action, Outcome, Scheduler};
pub use spec::JobSpec;
pub use store::{RecordError, RecordStore};
pub use task_file::TaskFile;

#[derive(Debug, Error)]
pub enum JobError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A sidecar of a job's tasks as resolved once for the execution.
#[derive(Debug, Clone)]
pub struct TaskContainer {
    pub image: ImageInfo,
    /// Numeric user and group resolved from the image's `User`.
    pub user: crate::runtime::passwd::ImageUser,
    pub argv: Vec<String>,
}

/// One line a task's container wrote.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub index: u32,
    pub attempt: u32,
    /// The container's name when the task has sidecars; empty otherwise.
    pub container: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    pub text: &'a str,
}

/// Where task output goes (the CLI prints it with the task index and attempt).
pub type LineSink = Arc<dyn Fn(&Line<'_>) + Send + Sync>;

/// What every attempt of an execution shares.
pub struct Ctx<R: Runtime, N: Network = NetConfig, F: RootFs = MemoryFs> {
    pub runtime: Arc<R>,
    /// One network namespace per attempt (OUT-1).
    pub net: N,
    /// Where each attempt's root filesystem's writable layer lives (in memory).
    pub rootfs: F,
    pub spec: Arc<JobSpec>,
    pub image: ImageInfo,
    /// Numeric user and group resolved from the image's `User`.
    pub user: crate::runtime::passwd::ImageUser,
    /// The container's argv, resolved once from the image and the spec.
    pub argv: Vec<String>,
    /// The sidecars' images, users and argvs, in the spec's order (empty without sidecars).
    pub sidecars: Vec<TaskContainer>,
    pub state_dir: PathBuf,
    pub sink: LineSink,
    /// SIGKILL follows SIGTERM after this long (10 s, LIFE-J2).
    pub kill_grace: Duration,
    /// A read-only file of its own for each task (the daemon's Pub/Sub trigger: its
    /// message), if any.
    pub task_file: Option<TaskFile>,
}

impl<R: Runtime, N: Network, F: RootFs> Ctx<R, N, F> {
    /// An attempt's files (FIFOs, /etc files).
    pub fn task_dir(&self, id: &str) -> PathBuf {
        tasks_dir(&self.state_dir).join(id)
    }
}

/// Where attempts keep their files, one directory per container id.
pub fn tasks_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("jobs").join("tasks")
}

/// The execution name: `<job>-<5 random lowercase alphanumerics>`.
pub fn execution_name(job: &str) -> String {
    format!("{job}-{}", crate::util::random_suffix(5))
}

/// The container of one attempt: `<execution>-<index>-<attempt>`.
pub fn container_id(execution: &str, index: u32, attempt: u32) -> String {
    format!("{execution}-{index}-{attempt}")
}

/// The execution a container id of [`container_id`]'s form belongs to.
pub fn execution_of(container_id: &str) -> Option<&str> {
    let mut parts = container_id.rsplitn(3, '-');
    let attempt = parts.next()?;
    let index = parts.next()?;
    let execution = parts.next()?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (numeric(attempt) && numeric(index)).then_some(execution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let e = execution_name("hello-world");
        assert!(e.starts_with("hello-world-") && e.len() == "hello-world-".len() + 5);
        let id = container_id(&e, 12, 3);
        assert_eq!(execution_of(&id), Some(e.as_str()));
        assert_eq!(execution_of("hello-abcde-x-1"), None);
        assert_eq!(execution_of("plain"), None);
        // The longest job name still gives a container id containerd accepts (<= 76).
        let long = "a".repeat(spec::MAX_NAME);
        assert!(container_id(&execution_name(&long), 9999, 10).len() <= 76);
    }
}
