//! Jobs: the Admin API's calls on jobs (create, get, list, update, delete, run), each checked
//! at the door (`control::job::spec::run_v2` names the refused field), written to the
//! store, and answered with an operation. A job has nothing to deploy, so its create and
//! update operations are done when the call returns: after its image is pulled, when the
//! daemon pulls and the image is not in the store (a failed pull fails the operation);
//! `RunJob`'s completes when the execution ends ([`super::executions`] runs it).
//!
//! Deleting a job with running executions does what Cloud Run does (it deletes a job's
//! dependents in the background, like a Kubernetes cascading delete): the job is gone at
//! once, its running executions are cancelled (SIGTERM, SIGKILL after 10 s), then every
//! execution is deleted; the operation completes when nothing of the job is left.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use tonic::Status;
use tracing::{info, warn};

use super::job_view;
use super::names::{check_job_id, JobName, Parent};
use super::resource::{self, etag_of};
use super::store::Store;
use super::{paging, Daemon};
use crate::control::job::cron::Schedule;
use crate::control::job::spec::run_v2::job_spec;
use crate::control::job::RecordStore;
use crate::pb::any::Any;
use crate::pb::longrunning::{operation, Operation};
use crate::pb::run_v2 as v2;

pub(super) const JOBS: &str = "jobs";
pub(super) const EXECUTIONS: &str = "executions";

/// The jobs the daemon holds, and their executions.
pub struct Jobs {
    pub(super) state: Mutex<JobsState>,
    /// Every execution's run (and every deletion that waits for runs); shutting down
    /// waits for them.
    pub(super) runs: tokio_util::task::TaskTracker,
    /// Notified when a job is stored or deleted (the schedule trigger looks again).
    pub(super) schedules_changed: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
pub(super) struct JobsState {
    /// By full name.
    pub jobs: BTreeMap<String, JobEntry>,
}

pub(super) struct JobEntry {
    pub job: v2::Job,
    /// Its executions by short id, as created (their status is in the record store).
    pub executions: BTreeMap<String, ExecEntry>,
}

pub(super) struct ExecEntry {
    pub exec: v2::Execution,
    /// Set while it runs.
    pub running: Option<Running>,
}

/// A running execution's handles.
#[derive(Clone)]
pub(super) struct Running {
    /// Set to true to cancel it.
    pub cancel: Arc<watch::Sender<bool>>,
    /// Turns true when it has ended (its final record saved).
    pub ended: watch::Receiver<bool>,
}

impl Running {
    /// Waits until the execution has ended.
    pub async fn wait(mut self) {
        let _ = self.ended.wait_for(|e| *e).await;
    }
}

impl Jobs {
    /// The jobs and executions `store` holds (executions of a job that is gone are
    /// forgotten).
    pub fn load(store: &Store) -> Jobs {
        let mut state = JobsState::default();
        match store.list::<v2::Job>(JOBS) {
            Ok(list) => {
                for (name, job) in list {
                    state.jobs.insert(
                        name,
                        JobEntry {
                            job,
                            executions: BTreeMap::new(),
                        },
                    );
                }
            }
            Err(e) => warn!("reading the stored jobs: {}", crate::util::Chain(&e)),
        }
        match store.list::<v2::Execution>(EXECUTIONS) {
            Ok(list) => {
                for (name, exec) in list {
                    let job = name
                        .rsplit_once("/executions/")
                        .map_or("", |(j, _)| j)
                        .to_string();
                    match state.jobs.get_mut(&job) {
                        Some(e) => {
                            e.executions.insert(
                                resource::short(&name).to_string(),
                                ExecEntry {
                                    exec,
                                    running: None,
                                },
                            );
                        }
                        None => {
                            let _ = store.delete(EXECUTIONS, &name);
                        }
                    }
                }
            }
            Err(e) => warn!("reading the stored executions: {}", crate::util::Chain(&e)),
        }
        Jobs {
            state: Mutex::new(state),
            runs: tokio_util::task::TaskTracker::new(),
            schedules_changed: Arc::default(),
        }
    }
}

/// Fields a caller sets on a job (the rest are output only).
fn copy_settable(to: &mut v2::Job, from: &v2::Job) {
    to.labels = from.labels.clone();
    to.annotations = from.annotations.clone();
    to.client = from.client.clone();
    to.client_version = from.client_version.clone();
    to.launch_stage = from.launch_stage;
    to.binary_authorization = from.binary_authorization.clone();
    to.template = from.template.clone();
}

/// Whether operation `op` is about a job or an execution (its metadata's type).
pub(super) fn is_jobs_op(op: &Operation) -> bool {
    op.metadata.as_ref().is_some_and(|m| {
        matches!(
            m.full_name(),
            "google.cloud.run.v2.Job" | "google.cloud.run.v2.Execution"
        )
    })
}

pub(super) fn check_etag(given: &str, current: &str, what: &str) -> Result<(), Status> {
    if !given.is_empty() && given != current {
        return Err(Status::aborted(format!(
            "etag {given} does not match the current etag of {what} ({current}): read it again and retry"
        )));
    }
    Ok(())
}

pub(super) fn not_found_job(name: &JobName) -> Status {
    Status::not_found(format!("job {name} not found"))
}

/// An operation that is done already, with `resource` (validate_only calls: not stored).
pub(super) fn done_op(resource: Any) -> Operation {
    Operation {
        name: String::new(),
        metadata: Some(resource.clone()),
        done: true,
        result: Some(operation::Result::Response(resource)),
    }
}

impl Daemon {
    /// The record store the job engine writes (shared with `runlet job execute`).
    pub(super) fn records(&self) -> RecordStore {
        RecordStore::new(&self.host.state_dir)
    }

    /// An execution as a read returns it (its record read now).
    pub(super) fn execution_view(&self, stored: &v2::Execution) -> v2::Execution {
        let rec = self.records().load(resource::short(&stored.name)).ok();
        job_view::execution(stored, rec.as_ref())
    }

    /// A job as a read returns it (its latest execution read now).
    pub(super) fn job_view(&self, e: &JobEntry) -> v2::Job {
        let latest = e
            .job
            .latest_created_execution
            .as_ref()
            .and_then(|r| e.executions.get(resource::short(&r.name)))
            .map(|x| self.execution_view(&x.exec));
        job_view::job(&e.job, latest.as_ref())
    }

    pub async fn create_job(&self, req: v2::CreateJobRequest) -> Result<Operation, Status> {
        let parent = Parent::parse("parent", &req.parent)?;
        check_job_id(&req.job_id)?;
        let desired = req
            .job
            .ok_or_else(|| Status::invalid_argument("job is required"))?;
        let name = JobName {
            parent,
            job: req.job_id.clone(),
        };
        self.put_job(name, desired, false, req.validate_only).await
    }

    pub async fn update_job(&self, req: v2::UpdateJobRequest) -> Result<Operation, Status> {
        let desired = req
            .job
            .ok_or_else(|| Status::invalid_argument("job is required"))?;
        let name = JobName::parse("job.name", &desired.name)?;
        {
            let state = self.jobs.state.lock().await;
            if !state.jobs.contains_key(&name.to_string()) && !req.allow_missing {
                return Err(not_found_job(&name));
            }
        }
        self.put_job(name, desired, true, req.validate_only).await
    }

    /// Creates (`update` false) or updates a job: a new generation, stored; the operation
    /// is done at once.
    async fn put_job(
        &self,
        name: JobName,
        desired: v2::Job,
        update: bool,
        validate_only: bool,
    ) -> Result<Operation, Status> {
        let full = name.to_string();
        if !validate_only {
            // Cloud Run resolves a job's image when the job is created or updated: pulled
            // here when missing (the state is not locked meanwhile), and a failure fails
            // the operation, naming the image and the registry's answer.
            if let Err(message) = self.pull_job_image(&name, &desired).await {
                let op = self.ops.start(&name.parent, Any::pack(&desired)).await;
                self.ops
                    .finish(&op.name, Err(Status::failed_precondition(message)))
                    .await;
                return self.ops.get(&op.name).await;
            }
        }
        let mut state = self.jobs.state.lock().await;
        if let Some(other) = state
            .jobs
            .keys()
            .find(|k| **k != full && resource::short(k) == name.job)
        {
            return Err(Status::already_exists(format!(
                "a job named {} already exists as {other}: job names are unique on one runlet (their executions and task containers are named after them)",
                name.job
            )));
        }
        let existing = state.jobs.get(&full);
        if existing.is_some() && !update {
            return Err(Status::already_exists(format!("job {full} already exists")));
        }
        let now = resource::now();
        let mut job = match existing {
            None => v2::Job {
                name: full.clone(),
                uid: resource::uid(),
                generation: 1,
                create_time: Some(now),
                creator: "runlet".into(),
                ..Default::default()
            },
            Some(e) => {
                check_etag(&desired.etag, &e.job.etag, &full)?;
                let mut j = e.job.clone();
                j.generation += 1;
                j
            }
        };
        copy_settable(&mut job, &desired);
        job.update_time = Some(now);
        job.last_modifier = "runlet".into();
        job_spec(&name.job, &job, None).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Schedule::from_annotations(&job.annotations).map_err(|e| {
            Status::invalid_argument(format!(
                "invalid job.annotations[{}]: {}",
                e.field, e.detail
            ))
        })?;
        let pubsub = super::pubsub_trigger::check(&job)?;
        job_view::job_ready(&mut job);
        job.etag = etag_of(&job);
        if validate_only {
            return Ok(done_op(Any::pack(&job)));
        }
        self.put(JOBS, &full, &job)?;
        match state.jobs.get_mut(&full) {
            Some(e) => e.job = job.clone(),
            None => {
                state.jobs.insert(
                    full.clone(),
                    JobEntry {
                        job: job.clone(),
                        executions: BTreeMap::new(),
                    },
                );
            }
        }
        let view = self.job_view(&state.jobs[&full]);
        drop(state);
        self.sync_pubsub(&full, pubsub).await;
        info!(job = %full, generation = job.generation, update, "job stored");
        self.jobs.schedules_changed.notify_one();
        let op = self.ops.start(&name.parent, Any::pack(&view)).await;
        self.ops.finish(&op.name, Ok(Any::pack(&view))).await;
        self.ops.get(&op.name).await
    }

    /// Pulls the image of job `desired` when the daemon pulls at all (`--pull missing` or
    /// `always`); with `--pull never` the image is looked up when the job runs. A template
    /// that does not make a job is left to `put_job`'s checks.
    async fn pull_job_image(&self, name: &JobName, desired: &v2::Job) -> Result<(), String> {
        if self.host.pull == crate::image::registry::PullPolicy::Never {
            return Ok(());
        }
        let mut job = v2::Job::default();
        copy_settable(&mut job, desired);
        let Ok(spec) = job_spec(&name.job, &job, None) else {
            return Ok(());
        };
        match self.host.image(&spec.image).await {
            Ok(_) => Ok(()),
            Err(e) => {
                warn!(job = %name, image = %spec.image, "{}", crate::util::Chain(&e));
                Err(super::revision::image_failure(&spec.image, "", &e))
            }
        }
    }

    pub async fn get_job(&self, name: &str) -> Result<v2::Job, Status> {
        let name = JobName::parse("name", name)?;
        let state = self.jobs.state.lock().await;
        state
            .jobs
            .get(&name.to_string())
            .map(|e| self.job_view(e))
            .ok_or_else(|| not_found_job(&name))
    }

    pub async fn list_jobs(
        &self,
        req: v2::ListJobsRequest,
    ) -> Result<v2::ListJobsResponse, Status> {
        let parent = Parent::parse("parent", &req.parent)?;
        // Location `-`: every location of the project.
        let (prefix, infix) = match parent.location.as_str() {
            "-" => (format!("projects/{}/locations/", parent.project), "/jobs/"),
            _ => (format!("{parent}/jobs/"), ""),
        };
        let state = self.jobs.state.lock().await;
        let mut list: Vec<&JobEntry> = state
            .jobs
            .values()
            .filter(|e| e.job.name.starts_with(&prefix) && e.job.name.contains(infix))
            .collect();
        list.sort_by_key(|e| std::cmp::Reverse(e.job.create_time.map(|t| (t.seconds, t.nanos))));
        let (page, next_page_token) = paging::page(list, req.page_size, &req.page_token)?;
        Ok(v2::ListJobsResponse {
            jobs: page.into_iter().map(|e| self.job_view(e)).collect(),
            next_page_token,
        })
    }

    pub async fn delete_job(&self, req: v2::DeleteJobRequest) -> Result<Operation, Status> {
        let name = JobName::parse("name", &req.name)?;
        let full = name.to_string();
        let mut state = self.jobs.state.lock().await;
        let e = state.jobs.get(&full).ok_or_else(|| not_found_job(&name))?;
        check_etag(&req.etag, &e.job.etag, &full)?;
        let mut view = self.job_view(e);
        view.delete_time = Some(resource::now());
        if req.validate_only {
            return Ok(done_op(Any::pack(&view)));
        }
        let entry = state.jobs.remove(&full).expect("checked above");
        drop(state);
        self.jobs.schedules_changed.notify_one();
        self.sync_pubsub(&full, None).await;
        let op = self.ops.start(&name.parent, Any::pack(&view)).await;
        let running: Vec<Running> = entry
            .executions
            .values()
            .filter_map(|x| x.running.clone())
            .collect();
        info!(job = %full, running = running.len(), "deleting the job and its executions");
        for r in &running {
            r.cancel.send_replace(true);
        }
        let d = self.me();
        let op_name = op.name.clone();
        self.jobs.runs.spawn(async move {
            futures::future::join_all(running.into_iter().map(Running::wait)).await;
            for x in entry.executions.values() {
                d.forget_execution(&x.exec.name);
            }
            d.delete_stored(super::iam::KIND, &full);
            d.delete_stored(JOBS, &full);
            d.ops.finish(&op_name, Ok(Any::pack(&view))).await;
            info!(job = %full, "job deleted");
        });
        Ok(op)
    }

    /// Removes what is stored of an execution that has ended: its resource and its record.
    pub(super) fn forget_execution(&self, full: &str) {
        self.delete_stored(EXECUTIONS, full);
        super::task_inputs::remove(&self.host.state_dir, resource::short(full));
        if let Err(e) = self.records().delete(resource::short(full)) {
            warn!("deleting the record of {full}: {}", crate::util::Chain(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert!(check_etag("", "\"a\"", "j").is_ok());
        assert!(check_etag("\"a\"", "\"a\"", "j").is_ok());
        assert_eq!(
            check_etag("\"b\"", "\"a\"", "j").unwrap_err().code(),
            tonic::Code::Aborted
        );
    }
}
