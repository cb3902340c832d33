//! Executions and tasks: `RunJob` starts an execution on the job engine
//! (`control::job::execute`, the same loop `runlet job execute` runs, writing the same
//! record store), and the Admin API's calls on executions (get, list, cancel, delete) and
//! tasks (get, list) read it back through [`super::job_view`].
//!
//! `RunJob`'s operation completes when the execution ends: with the execution when it
//! succeeded, with `FAILED_PRECONDITION` when a task failed, with `CANCELLED` when it was
//! cancelled (its metadata is the final execution either way). Cancelling stops the running
//! tasks (SIGTERM, SIGKILL after 10 s) and cancels the pending ones. Deleting a running
//! execution cancels it first. Stopping the daemon cancels what runs; a daemon killed
//! mid-execution takes its executions over when it starts again (running attempts
//! adopted: `control::job::resume`), or marks failed one that cannot resume and removes
//! its task containers.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tonic::Status;
use tracing::{info, warn};

use super::job_view;
use super::jobs::{
    check_etag, done_op, not_found_job, ExecEntry, JobEntry, Running, EXECUTIONS, JOBS,
};
use super::names::{ExecutionName, JobName, TaskName};
use super::resource::{self, etag_of, short};
use super::task_inputs::{self, TaskInputs};
use super::{paging, Daemon};
use crate::control::job::spec::run_v2::job_spec;
use crate::control::job::spec::{effective_parallelism, HostResources};
use crate::control::job::{self, Ctx, ExecutionRecord, ExecutionState, JobSpec, Line, LineSink};
use crate::control::KILL_GRACE;
use crate::pb::any::Any;
use crate::pb::longrunning::Operation;
use crate::pb::run_v2 as v2;
use crate::runtime::containerd::Containerd;
use crate::runtime::network::NetConfig;
use crate::runtime::rootfs::MemoryFs;
use crate::runtime::{labels, ocispec, Runtime, RuntimeError};

/// What a finished execution's operation says.
fn outcome(view: &v2::Execution, state: ExecutionState) -> Result<Any, Status> {
    let message = view
        .conditions
        .iter()
        .find(|c| c.r#type == "Completed")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let name = short(&view.name);
    match state {
        ExecutionState::Succeeded => Ok(Any::pack(view)),
        ExecutionState::Cancelled => Err(Status::cancelled(format!(
            "Execution {name} was cancelled: {message}"
        ))),
        ExecutionState::Failed | ExecutionState::Running => Err(Status::failed_precondition(
            format!("Execution {name} failed: {message}"),
        )),
    }
}

fn not_found_execution(name: &ExecutionName) -> Status {
    Status::not_found(format!("execution {name} not found"))
}

/// The job entry and the execution `name` names.
fn find<'a>(
    jobs: &'a mut std::collections::BTreeMap<String, JobEntry>,
    name: &ExecutionName,
) -> Result<&'a mut ExecEntry, Status> {
    jobs.values_mut()
        .filter(|e| name.job.is_any() || e.job.name == name.job.to_string())
        .filter(|e| e.job.name.starts_with(&format!("{}/", name.job.parent)))
        .find_map(|e| e.executions.get_mut(&name.execution))
        .ok_or_else(|| not_found_execution(name))
}

/// An execution just started: its `RunJob` operation, its id, and a watch that turns true
/// when it has ended.
pub(super) struct Started {
    pub op: Operation,
    pub execution: String,
    pub ended: watch::Receiver<bool>,
}

impl Daemon {
    pub async fn run_job(&self, req: v2::RunJobRequest) -> Result<Operation, Status> {
        Ok(self.start_execution(req, None, None).await?.op)
    }

    /// `RunJob`, with per-task `inputs` when a trigger starts it (a file per task; `None`
    /// for a `RunJob` call), and `triggered_by` naming the trigger (the execution's
    /// `runlet.io/triggered-by` annotation) when one starts it.
    pub(super) async fn start_execution(
        &self,
        req: v2::RunJobRequest,
        inputs: Option<TaskInputs>,
        triggered_by: Option<&str>,
    ) -> Result<Started, Status> {
        let name = JobName::parse("name", &req.name)?;
        let full = name.to_string();
        let job = {
            let state = self.jobs.state.lock().await;
            let e = state.jobs.get(&full).ok_or_else(|| not_found_job(&name))?;
            check_etag(&req.etag, &e.job.etag, &full)?;
            e.job.clone()
        };
        let spec = job_spec(&name.job, &job, req.overrides.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let identity = job_identity(&full, &job);
        let image = self.host.image(&spec.image).await.map_err(|e| {
            let message = super::revision::image_failure(&spec.image, "", &e);
            match e {
                crate::image::registry::RegistryError::Store(RuntimeError::ImageNotFound {
                    ..
                }) => Status::failed_precondition(message),
                // containerd could not be read: runlet's failure, not the caller's.
                crate::image::registry::RegistryError::Store(_) => Status::internal(message),
                // The registry's answer (not found, refused, ...).
                _ => Status::failed_precondition(message),
            }
        })?;
        let user = self.host.runtime.image_user(&image).await.map_err(|e| {
            Status::failed_precondition(format!(
                "Image '{}': {}",
                spec.image,
                crate::util::Chain(&e)
            ))
        })?;
        let argv = ocispec::argv(
            &image.name,
            &image.config,
            spec.command.as_deref(),
            spec.args.as_deref(),
        )
        .map_err(|e| {
            Status::invalid_argument(format!(
                "invalid job.template.template.containers[0].command: {e}"
            ))
        })?;
        let sidecars = self
            .sidecar_images(&spec)
            .await
            .map_err(Status::failed_precondition)?;
        let parallelism = effective_parallelism(&spec, &HostResources::detect());

        let mut state = self.jobs.state.lock().await;
        // Checked under the lock `stop_jobs` cancels under: no execution starts unseen.
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Status::unavailable("the daemon is shutting down"));
        }
        let entry = state
            .jobs
            .get_mut(&full)
            .ok_or_else(|| not_found_job(&name))?;
        let id = loop {
            let id = job::execution_name(&name.job);
            if !entry.executions.contains_key(&id) && self.records().load(&id).is_err() {
                break id;
            }
        };
        let exec_name = ExecutionName {
            job: name.clone(),
            execution: id.clone(),
        };
        let mut stored =
            job_view::new_execution(&entry.job, &exec_name.to_string(), &spec, parallelism);
        if let Some(t) = triggered_by {
            stored
                .annotations
                .insert(crate::control::job::cron::TRIGGERED_BY.into(), t.into());
        }
        if let Some(i) = &inputs {
            stored.annotations.extend(i.annotations.clone());
        }
        stored.etag = etag_of(&stored);
        if req.validate_only {
            let op = done_op(Any::pack(&job_view::execution(&stored, None)));
            let (_, ended) = watch::channel(true);
            return Ok(Started {
                op,
                execution: id,
                ended,
            });
        }
        // Each task's file is in place before any task starts.
        if let Some(i) = inputs {
            task_inputs::prepare(&self.host.state_dir, &id, i).map_err(|e| {
                Status::internal(format!(
                    "could not write the task files of {exec_name}: {e}"
                ))
            })?;
        }
        // The record exists before the call returns, so every read finds the execution's
        // tasks (pending until they start).
        let rec = ExecutionRecord::new(&spec, &id, parallelism, SystemTime::now());
        self.records().save(&rec).await.map_err(|e| {
            Status::internal(format!(
                "could not store {exec_name}: {}",
                crate::util::Chain(&e)
            ))
        })?;
        self.put(EXECUTIONS, &stored.name, &stored)?;
        let mut job = entry.job.clone();
        job.execution_count += 1;
        job.latest_created_execution = Some(v2::ExecutionReference {
            name: stored.name.clone(),
            create_time: stored.create_time,
            ..Default::default()
        });
        job.etag = etag_of(&job);
        self.put(JOBS, &full, &job)?;
        entry.job = job;
        let (cancel, cancel_rx) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(false);
        entry.executions.insert(
            id.clone(),
            ExecEntry {
                exec: stored.clone(),
                running: Some(Running {
                    cancel: Arc::new(cancel),
                    ended: ended.clone(),
                }),
            },
        );
        drop(state);
        let view = job_view::execution(&stored, Some(&rec));
        let op = self.ops.start(&name.parent, Any::pack(&view)).await;
        info!(job = %full, execution = %id, tasks = spec.task_count, parallelism, "execution started");

        let ctx = self.execution_ctx(
            &name.job,
            &id,
            spec,
            identity,
            TaskImage {
                image,
                user,
                argv,
                sidecars,
            },
        );
        let records = self.records();
        let run_id = id.clone();
        self.spawn_run(
            stored,
            op.name.clone(),
            cancel_rx,
            ended_tx,
            move |cancelled| async move {
                job::execute(ctx, &records, &run_id, parallelism, cancelled).await
            },
        );
        Ok(Started {
            op,
            execution: id,
            ended,
        })
    }

    /// The images, users and command lines of the job's sidecars (pulled as the main
    /// container's image is); the reason, naming the container, if one cannot run.
    async fn sidecar_images(&self, spec: &JobSpec) -> Result<Vec<job::TaskContainer>, String> {
        let mut out = Vec::new();
        for c in &spec.sidecars.containers {
            let image = self.host.image(&c.image).await.map_err(|e| {
                format!(
                    "container {}: {}",
                    c.name,
                    super::revision::image_failure(&c.image, "", &e)
                )
            })?;
            let user = self.host.runtime.image_user(&image).await.map_err(|e| {
                format!(
                    "container {}: image '{}': {}",
                    c.name,
                    c.image,
                    crate::util::Chain(&e)
                )
            })?;
            let argv = ocispec::argv(
                &image.name,
                &image.config,
                c.command.as_deref(),
                c.args.as_deref(),
            )
            .map_err(|e| format!("container {}: {e}", c.name))?;
            out.push(job::TaskContainer { image, user, argv });
        }
        Ok(out)
    }

    /// What every attempt of execution `id` of job `job` shares.
    fn execution_ctx(
        &self,
        job: &str,
        id: &str,
        spec: JobSpec,
        identity: crate::metadata::Identity,
        run: TaskImage,
    ) -> Arc<Ctx<Containerd, NetConfig, MemoryFs>> {
        let sink: LineSink = {
            let (job, execution) = (job.to_string(), id.to_string());
            Arc::new(
                move |l: &Line<'_>| info!(target: "runlet::task", job = %job, execution = %execution, index = l.index, attempt = l.attempt, container = l.container, stream = l.stream, "{}", l.text),
            )
        };
        Arc::new(Ctx {
            runtime: self.host.runtime.clone(),
            net: self.host.net.with_identity(identity),
            rootfs: MemoryFs,
            spec: Arc::new(spec),
            image: run.image,
            user: run.user,
            argv: run.argv,
            sidecars: run.sidecars,
            state_dir: self.host.state_dir.clone(),
            sink,
            kill_grace: KILL_GRACE,
            // A triggered execution's files, written before it starts (or found again
            // after a restart).
            task_file: task_inputs::find(&self.host.state_dir, id),
        })
    }

    /// Runs `run` (given the cancellation to race) as execution `stored`'s life: when it
    /// ends, the execution is no longer running, operation `op_name` completes with it,
    /// and `ended` turns true.
    fn spawn_run<Fut>(
        &self,
        stored: v2::Execution,
        op_name: String,
        cancel_rx: watch::Receiver<bool>,
        ended_tx: watch::Sender<bool>,
        run: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut
            + Send
            + 'static,
    ) where
        Fut: std::future::Future<Output = Result<ExecutionRecord, job::JobError>> + Send,
    {
        let d = self.me();
        self.jobs.runs.spawn(async move {
            let id = short(&stored.name).to_string();
            let mut cancel_rx = cancel_rx;
            let cancelled = Box::pin(async move {
                if cancel_rx.wait_for(|c| *c).await.is_err() {
                    std::future::pending::<()>().await;
                }
            });
            let result = run(cancelled).await;
            let state = match &result {
                Ok(rec) => rec.status.state,
                Err(e) => {
                    warn!(execution = %id, "the execution could not run to its end: {}", crate::util::error_chain(e));
                    ExecutionState::Failed
                }
            };
            {
                let mut st = d.jobs.state.lock().await;
                if let Some(x) = st
                    .jobs
                    .get_mut(&stored.job_full_name())
                    .and_then(|e| e.executions.get_mut(&id))
                {
                    x.running = None;
                }
            }
            let view = d.execution_view(&stored);
            d.ops.set_metadata(&op_name, Any::pack(&view)).await;
            let result = match result {
                Ok(_) => outcome(&view, state),
                Err(e) => Err(Status::internal(format!(
                    "Execution {id} could not run: {}",
                    crate::util::error_chain(&e)
                ))),
            };
            d.ops.finish(&op_name, result).await;
            let _ = ended_tx.send(true);
            info!(execution = %id, state = ?state, "execution ended");
        });
    }

    /// Takes over an execution the daemon was running when it died: its spec again from
    /// the stored execution, its running attempts adopted. `Err` (with the reason) when it
    /// cannot run any more (its image is gone, say).
    async fn resume_execution(
        &self,
        stored: &v2::Execution,
        rec: ExecutionRecord,
        lock: job::store::ExecutionLock,
        op_name: Option<String>,
    ) -> Result<(), (ExecutionRecord, job::store::ExecutionLock, String)> {
        let job_id = stored.job.clone();
        let job = v2::Job {
            template: Some(v2::ExecutionTemplate {
                labels: stored.labels.clone(),
                annotations: stored.annotations.clone(),
                parallelism: stored.parallelism,
                task_count: stored.task_count,
                template: stored.template.clone(),
            }),
            ..Default::default()
        };
        let prepared = async {
            let spec = job_spec(&job_id, &job, None).map_err(|e| e.to_string())?;
            let image = self
                .host
                .image(&spec.image)
                .await
                .map_err(|e| crate::util::Chain(&e).to_string())?;
            let user = self
                .host
                .runtime
                .image_user(&image)
                .await
                .map_err(|e| crate::util::Chain(&e).to_string())?;
            let argv = ocispec::argv(
                &image.name,
                &image.config,
                spec.command.as_deref(),
                spec.args.as_deref(),
            )
            .map_err(|e| e.to_string())?;
            let sidecars = self.sidecar_images(&spec).await?;
            Ok::<_, String>((spec, image, user, argv, sidecars))
        }
        .await;
        let (spec, image, user, argv, sidecars) = match prepared {
            Ok(p) => p,
            Err(e) => return Err((rec, lock, e)),
        };
        let id = rec.name().to_string();
        let identity = job_identity(&stored.name, &job);
        let ctx = self.execution_ctx(
            &job_id,
            &id,
            spec,
            identity,
            TaskImage {
                image,
                user,
                argv,
                sidecars,
            },
        );
        let (cancel, cancel_rx) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(false);
        {
            let mut state = self.jobs.state.lock().await;
            if let Some(x) = state
                .jobs
                .get_mut(&stored.job_full_name())
                .and_then(|e| e.executions.get_mut(&id))
            {
                x.running = Some(Running {
                    cancel: Arc::new(cancel),
                    ended,
                });
            }
        }
        let op_name = match op_name {
            Some(n) => n,
            None => {
                let parent = super::names::ExecutionName::parse("name", &stored.name)
                    .map(|n| n.job.parent)
                    .map_err(|e| e.message().to_string());
                match parent {
                    Ok(p) => {
                        self.ops
                            .start(&p, Any::pack(&self.execution_view(stored)))
                            .await
                            .name
                    }
                    Err(_) => String::new(),
                }
            }
        };
        let records = self.records();
        self.spawn_run(
            stored.clone(),
            op_name,
            cancel_rx,
            ended_tx,
            move |cancelled| async move { job::resume(ctx, &records, rec, lock, cancelled).await },
        );
        Ok(())
    }

    pub async fn get_execution(&self, name: &str) -> Result<v2::Execution, Status> {
        let name = ExecutionName::parse("name", name)?;
        let mut state = self.jobs.state.lock().await;
        let x = find(&mut state.jobs, &name)?;
        Ok(self.execution_view(&x.exec))
    }

    pub async fn list_executions(
        &self,
        req: v2::ListExecutionsRequest,
    ) -> Result<v2::ListExecutionsResponse, Status> {
        let jn = JobName::parse_or_any("parent", &req.parent)?;
        let state = self.jobs.state.lock().await;
        if !jn.is_any() && !state.jobs.contains_key(&jn.to_string()) {
            return Err(not_found_job(&jn));
        }
        let prefix = format!("{}/jobs/", jn.parent);
        let mut list: Vec<&v2::Execution> = state
            .jobs
            .values()
            .filter(|e| {
                if jn.is_any() {
                    e.job.name.starts_with(&prefix)
                } else {
                    e.job.name == jn.to_string()
                }
            })
            .flat_map(|e| e.executions.values().map(|x| &x.exec))
            .collect();
        list.sort_by(|a, b| {
            let key = |e: &v2::Execution| e.create_time.map(|t| (t.seconds, t.nanos));
            key(b).cmp(&key(a)).then_with(|| b.name.cmp(&a.name))
        });
        let (page, next_page_token) = paging::page(list, req.page_size, &req.page_token)?;
        Ok(v2::ListExecutionsResponse {
            executions: page.into_iter().map(|e| self.execution_view(e)).collect(),
            next_page_token,
        })
    }

    pub async fn cancel_execution(
        &self,
        req: v2::CancelExecutionRequest,
    ) -> Result<Operation, Status> {
        let name = ExecutionName::parse("name", &req.name)?;
        let mut state = self.jobs.state.lock().await;
        let x = find(&mut state.jobs, &name)?;
        let view = self.execution_view(&x.exec);
        check_etag(&req.etag, &view.etag, &req.name)?;
        let Some(running) = x.running.clone() else {
            return Err(Status::failed_precondition(format!(
                "execution {} has already completed: only a running execution can be cancelled",
                short(&x.exec.name)
            )));
        };
        if req.validate_only {
            return Ok(done_op(Any::pack(&view)));
        }
        let stored = x.exec.clone();
        drop(state);
        info!(execution = %stored.name, "cancelling: running tasks get SIGTERM, SIGKILL after 10 s");
        running.cancel.send_replace(true);
        let op = self.ops.start(&name.job.parent, Any::pack(&view)).await;
        let d = self.me();
        let op_name = op.name.clone();
        self.jobs.runs.spawn(async move {
            running.wait().await;
            let view = d.execution_view(&stored);
            d.ops.finish(&op_name, Ok(Any::pack(&view))).await;
        });
        Ok(op)
    }

    pub async fn delete_execution(
        &self,
        req: v2::DeleteExecutionRequest,
    ) -> Result<Operation, Status> {
        let name = ExecutionName::parse("name", &req.name)?;
        let mut state = self.jobs.state.lock().await;
        let x = find(&mut state.jobs, &name)?;
        let mut view = self.execution_view(&x.exec);
        check_etag(&req.etag, &view.etag, &req.name)?;
        view.delete_time = Some(resource::now());
        if req.validate_only {
            return Ok(done_op(Any::pack(&view)));
        }
        let job = x.exec.job_full_name();
        let removed = state
            .jobs
            .get_mut(&job)
            .and_then(|e| e.executions.remove(&name.execution))
            .ok_or_else(|| not_found_execution(&name))?;
        drop(state);
        let op = self.ops.start(&name.job.parent, Any::pack(&view)).await;
        let d = self.me();
        let op_name = op.name.clone();
        info!(execution = %removed.exec.name, running = removed.running.is_some(), "deleting the execution");
        self.jobs.runs.spawn(async move {
            // A running execution is cancelled first (its tasks stopped), as Cloud Run
            // deletes an execution's tasks with it.
            if let Some(r) = removed.running {
                r.cancel.send_replace(true);
                r.wait().await;
            }
            d.forget_execution(&removed.exec.name);
            d.ops.finish(&op_name, Ok(Any::pack(&view))).await;
        });
        Ok(op)
    }

    pub async fn get_task(&self, name: &str) -> Result<v2::Task, Status> {
        let tn = TaskName::parse("name", name)?;
        let not_found = || Status::not_found(format!("task {name} not found"));
        let index =
            job_view::task_index(&tn.execution.execution, &tn.task).ok_or_else(not_found)?;
        let mut state = self.jobs.state.lock().await;
        let x = find(&mut state.jobs, &tn.execution)?;
        let rec = self.records().load(&tn.execution.execution).ok();
        let view = job_view::execution(&x.exec, rec.as_ref());
        job_view::tasks(&view, rec.as_ref())
            .into_iter()
            .nth(index as usize)
            .ok_or_else(not_found)
    }

    pub async fn list_tasks(
        &self,
        req: v2::ListTasksRequest,
    ) -> Result<v2::ListTasksResponse, Status> {
        let en = ExecutionName::parse("parent", &req.parent)?;
        let mut state = self.jobs.state.lock().await;
        let x = find(&mut state.jobs, &en)?;
        let rec = self.records().load(&en.execution).ok();
        let view = job_view::execution(&x.exec, rec.as_ref());
        let list = job_view::tasks(&view, rec.as_ref());
        let (tasks, next_page_token) = paging::page(list, req.page_size, &req.page_token)?;
        Ok(v2::ListTasksResponse {
            tasks,
            next_page_token,
        })
    }

    /// After a restart: executions that were running when the daemon died are taken over
    /// (their running attempts adopted), or, when they cannot run any more, marked failed
    /// and their task containers removed; operations on executions that ended complete.
    pub(super) async fn resume_jobs(&self) {
        let records = self.records();
        let state = self.jobs.state.lock().await;
        let mut interrupted = Vec::new();
        for e in state.jobs.values() {
            for (id, x) in &e.executions {
                let rec = match records.load(id) {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                if rec.status.state != ExecutionState::Running {
                    continue;
                }
                match records.try_claim(id) {
                    Ok(Some(lock)) => interrupted.push((x.exec.clone(), rec, lock)),
                    Ok(None) => {
                        warn!(execution = %id, "execution is locked by another runlet: left alone")
                    }
                    Err(e) => warn!(execution = %id, "claiming: {}", crate::util::Chain(&e)),
                }
            }
        }
        drop(state);
        let pending = self.ops.pending().await;
        let mut failed = Vec::new();
        for (stored, rec, lock) in interrupted {
            // The RunJob operation waiting on it waits on.
            let op = pending
                .iter()
                .find(|op| {
                    op.metadata
                        .as_ref()
                        .and_then(|m| m.unpack::<v2::Execution>().ok())
                        .is_some_and(|e| e.name == stored.name)
                })
                .map(|op| op.name.clone());
            if let Err((rec, lock, why)) = self.resume_execution(&stored, rec, lock, op).await {
                warn!(execution = %rec.name(), "cannot resume the execution: {why}");
                failed.push((rec, lock));
            }
        }
        if !failed.is_empty() {
            let ids: Vec<&str> = failed.iter().map(|(r, _)| r.name()).collect();
            self.remove_task_containers(&ids).await;
        }
        for (mut rec, lock) in failed {
            warn!(execution = %rec.name(), "the execution was running when the daemon exited and cannot resume: marking it failed");
            rec.mark_abandoned(SystemTime::now());
            rec.status.message = Some(
                "the daemon exited while the execution was running and could not resume it; its running tasks were stopped".into(),
            );
            if let Err(e) = records.save(&rec).await {
                warn!(execution = %rec.name(), "saving: {}", crate::util::Chain(&e));
            }
            lock.release();
        }
        // Operations on executions (RunJob, cancel, delete) a restart interrupted.
        let state = self.jobs.state.lock().await;
        for op in self.ops.pending().await {
            // A job's own operation a restart interrupted (a deletion waiting for its
            // executions, which the restart ended): done with the job as it was.
            if let Some(job) = op
                .metadata
                .as_ref()
                .filter(|m| m.full_name() == "google.cloud.run.v2.Job")
            {
                self.ops.finish(&op.name, Ok(job.clone())).await;
                continue;
            }
            let Some(exec) = op
                .metadata
                .as_ref()
                .and_then(|m| m.unpack::<v2::Execution>().ok())
            else {
                continue;
            };
            let job = exec.job_full_name();
            let stored = state
                .jobs
                .get(&job)
                .and_then(|e| e.executions.get(short(&exec.name)));
            if stored.is_some_and(|x| x.running.is_some()) {
                continue;
            }
            let result = match stored {
                Some(x) => {
                    let view = self.execution_view(&x.exec);
                    let st = records
                        .load(short(&exec.name))
                        .map_or(ExecutionState::Failed, |r| r.status.state);
                    self.ops.set_metadata(&op.name, Any::pack(&view)).await;
                    outcome(&view, st)
                }
                None => {
                    self.forget_execution(&exec.name);
                    Ok(Any::pack(&exec))
                }
            };
            self.ops.finish(&op.name, result).await;
        }
    }

    /// Stops and removes the task containers of `executions` that this daemon finds left
    /// in containerd, with their namespaces and files.
    async fn remove_task_containers(&self, executions: &[&str]) {
        let list = match self.host.runtime.list().await {
            Ok(l) => l,
            Err(e) => {
                warn!("listing task containers: {}", crate::util::Chain(&e));
                return;
            }
        };
        let dir = job::tasks_dir(&self.host.state_dir);
        for c in list {
            let Some(execution) = c.labels.get(labels::EXECUTION) else {
                continue;
            };
            if !executions.contains(&execution.as_str())
                || crate::control::owner::verdict_on(&c.labels, true)
                    == crate::control::owner::Verdict::Leave
            {
                continue;
            }
            warn!(container = %c.id, "removing a task container the daemon left running when it exited");
            if let Err(e) = crate::control::stop_container(
                self.host.runtime.as_ref(),
                &c.id,
                std::time::Duration::from_secs(1),
            )
            .await
            {
                warn!(container = %c.id, "stopping: {e}");
            }
            crate::control::sandbox::release(&self.host.net, &MemoryFs, &c.id, &dir.join(&c.id))
                .await;
        }
    }

    /// Cancels every running execution and waits for them (and for deletions) to end.
    pub(super) async fn stop_jobs(&self) {
        {
            let state = self.jobs.state.lock().await;
            for x in state.jobs.values().flat_map(|e| e.executions.values()) {
                if let Some(r) = &x.running {
                    info!(execution = %x.exec.name, "the daemon is stopping: cancelling the execution");
                    r.cancel.send_replace(true);
                }
            }
        }
        self.jobs.runs.close();
        self.jobs.runs.wait().await;
    }
}

/// The full name of an execution's job.
trait JobOf {
    fn job_full_name(&self) -> String;
}

impl JobOf for v2::Execution {
    fn job_full_name(&self) -> String {
        self.name
            .rsplit_once("/executions/")
            .map_or_else(String::new, |(j, _)| j.to_string())
    }
}

/// Who a job's tasks are on the metadata server: the project and region of `name` (the
/// job's or an execution's resource name) and the task template's service account.
fn job_identity(name: &str, job: &v2::Job) -> crate::metadata::Identity {
    let account = job
        .template
        .as_ref()
        .and_then(|t| t.template.as_ref())
        .map(|t| t.service_account.as_str())
        .unwrap_or("");
    crate::metadata::Identity::from_resource(name, account)
}

/// What a job's tasks run: the image, its user, and the command line; the sidecars'.
struct TaskImage {
    image: crate::image::ImageInfo,
    user: crate::runtime::passwd::ImageUser,
    argv: Vec<String>,
    sidecars: Vec<job::TaskContainer>,
}
