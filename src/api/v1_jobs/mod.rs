//! Cloud Run's Admin API v1 for jobs (`run.googleapis.com/v1`, the Knative-shaped API
//! `gcloud run jobs` speaks), beside v2 on the daemon's API port. It is a view: every call
//! is a call on the daemon's v2 jobs and executions, never a second store.
//!
//! v1 paths carry only the namespace (the project); the region comes from the request's
//! `Host`, as gcloud addresses it: with `api_endpoint_overrides/run http://runlet:PORT/`
//! and `run/region R`, gcloud sends its regional calls to `R-runlet:PORT`. Without a
//! region in the Host (gcloud's `jobs list` goes to `runlet:PORT`), a list covers every
//! region and other calls are refused. Routes (after `/apis/run.googleapis.com/v1/`):
//!
//! - `namespaces/P/jobs`: POST create, GET list
//! - `namespaces/P/jobs/J`: GET, PUT replace, DELETE; `namespaces/P/jobs/J:run` POST
//! - `namespaces/P/executions`: GET list (`labelSelector=run.googleapis.com/job = J`)
//! - `namespaces/P/executions/E`: GET, DELETE; `...E:cancel` POST
//! - `namespaces/P/tasks`: GET list (`labelSelector=run.googleapis.com/execution = E`);
//!   `namespaces/P/tasks/T`: GET
//!
//! Errors take Google's JSON shape (`{"error": {"code", "message", "status"}}`).

pub mod executions;
pub mod jobs;

use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};
use tonic::Status;

use super::v1::region_from_host;
use crate::daemon::names::JobName;
use crate::daemon::Daemon;
use crate::pb::run_v2 as v2;
use jobs::Place;

/// The path prefix this module serves.
pub const PREFIX: &str = "/apis/run.googleapis.com/v1/";

/// Serves a v1 jobs call, or `None` when `path` is not one.
pub async fn route(
    daemon: &Arc<Daemon>,
    method: &Method,
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Option<Result<Value, Status>> {
    let rest = path.strip_prefix(PREFIX)?;
    let call = Call {
        d: daemon,
        region: host.and_then(region_from_host),
        query: query.unwrap_or(""),
    };
    Some(call.answer(method, rest, body).await)
}

struct Call<'a> {
    d: &'a Arc<Daemon>,
    region: Option<String>,
    query: &'a str,
}

/// The item list of a v1 list call, with its `continue` token.
fn list(kind: &str, items: Vec<Value>, next: String) -> Value {
    let mut meta = json!({});
    if !next.is_empty() {
        meta["continue"] = next.into();
    }
    json!({ "apiVersion": jobs::API_VERSION, "kind": kind, "items": items, "metadata": meta })
}

/// What a v1 delete answers: a Kubernetes `Status`.
fn deleted(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Success",
        "details": { "name": name, "group": "run.googleapis.com", "kind": kind },
    })
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    fn page_size(&self) -> Result<i32, Status> {
        match self.param("limit") {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                Status::invalid_argument(format!("invalid limit {v:?}: expected a number"))
            }),
        }
    }

    fn place(&self, project: &str) -> Result<Place, Status> {
        let region = self.region.clone().ok_or_else(|| {
            Status::invalid_argument(
                "no region: v1 calls take it from the Host, R-runlet:PORT for region R (this call came to a Host without one); point gcloud at runlet with `runlet setup gcloud`",
            )
        })?;
        Ok(Place {
            project: project.to_string(),
            region,
        })
    }

    async fn answer(&self, m: &Method, rest: &str, body: &[u8]) -> Result<Value, Status> {
        let rest = percent_encoding::percent_decode_str(rest)
            .decode_utf8()
            .map_err(|_| Status::invalid_argument("the path is not UTF-8"))?;
        let seg: Vec<&str> = rest.split('/').collect();
        let ["namespaces", project, tail @ ..] = seg.as_slice() else {
            return Err(not_found(m, &rest));
        };
        match (m, tail) {
            (&Method::GET, ["jobs"]) => self.list_jobs(project).await,
            (&Method::POST, ["jobs"]) => self.create_job(project, body).await,
            (&Method::POST, ["jobs", j]) if j.ends_with(":run") => {
                self.run_job(project, j.trim_end_matches(":run"), body)
                    .await
            }
            (&Method::GET, ["jobs", j]) => self.get_job(&self.place(project)?, j).await,
            (&Method::PUT, ["jobs", j]) => self.replace_job(project, j, body).await,
            (&Method::DELETE, ["jobs", j]) => {
                let p = self.place(project)?;
                self.d
                    .delete_job(v2::DeleteJobRequest {
                        name: job_name(&p, j),
                        ..Default::default()
                    })
                    .await?;
                Ok(deleted("jobs", j))
            }
            (&Method::GET, ["executions"]) => self.list_executions(project).await,
            (&Method::GET, ["executions", e]) => {
                let p = self.place(project)?;
                let x = self.d.get_execution(&execution_name(&p, e)).await?;
                Ok(executions::to_v1(&x, &p))
            }
            (&Method::POST, ["executions", e]) if e.ends_with(":cancel") => {
                let p = self.place(project)?;
                let name = execution_name(&p, e.trim_end_matches(":cancel"));
                self.d
                    .cancel_execution(v2::CancelExecutionRequest {
                        name: name.clone(),
                        ..Default::default()
                    })
                    .await?;
                let x = self.d.get_execution(&name).await?;
                Ok(executions::to_v1(&x, &p))
            }
            (&Method::DELETE, ["executions", e]) => {
                let p = self.place(project)?;
                self.d
                    .delete_execution(v2::DeleteExecutionRequest {
                        name: execution_name(&p, e),
                        ..Default::default()
                    })
                    .await?;
                Ok(deleted("executions", e))
            }
            (&Method::GET, ["tasks"]) => self.list_tasks(project).await,
            (&Method::GET, ["tasks", t]) => {
                let p = self.place(project)?;
                let (exec, _) = t.rsplit_once("-task").ok_or_else(|| {
                    Status::not_found(format!("task {t} not found in namespace {project}"))
                })?;
                let task = self
                    .d
                    .get_task(&format!("{}/tasks/{t}", execution_name(&p, exec)))
                    .await?;
                Ok(executions::task_to_v1(&task, &p))
            }
            _ => Err(not_found(m, &rest)),
        }
    }

    /// The number of executions of job `full` (for `status.executionCount`).
    async fn execution_count(&self, full: &str) -> usize {
        let mut n = 0;
        let mut token = String::new();
        loop {
            let Ok(page) = self
                .d
                .list_executions(v2::ListExecutionsRequest {
                    parent: full.to_string(),
                    page_size: 1000,
                    page_token: token,
                    show_deleted: false,
                })
                .await
            else {
                return n;
            };
            n += page.executions.len();
            if page.next_page_token.is_empty() {
                return n;
            }
            token = page.next_page_token;
        }
    }

    async fn job_view(&self, job: &v2::Job, project: &str) -> Result<Value, Status> {
        let name = JobName::parse("name", &job.name)?;
        let place = Place {
            project: project.to_string(),
            region: name.parent.location.clone(),
        };
        let count = self.execution_count(&job.name).await;
        Ok(jobs::to_v1(job, &place, count))
    }

    async fn get_job(&self, p: &Place, j: &str) -> Result<Value, Status> {
        let job = self.d.get_job(&job_name(p, j)).await?;
        self.job_view(&job, &p.project).await
    }

    async fn list_jobs(&self, project: &str) -> Result<Value, Status> {
        // Without a region in the Host: every region (`locations/-`).
        let region = self.region.clone().unwrap_or_else(|| "-".into());
        let resp = self
            .d
            .list_jobs(v2::ListJobsRequest {
                parent: format!("projects/{project}/locations/{region}"),
                page_size: self.page_size()?,
                page_token: self.param("continue").unwrap_or_default(),
                show_deleted: false,
            })
            .await?;
        let mut items = Vec::new();
        for j in &resp.jobs {
            items.push(self.job_view(j, project).await?);
        }
        Ok(list("JobsList", items, resp.next_page_token))
    }

    async fn create_job(&self, project: &str, body: &[u8]) -> Result<Value, Status> {
        let p = self.place(project)?;
        let (id, job) = jobs::to_v2(body)?;
        if id.is_empty() {
            return Err(jobs::bad("metadata.name", "is required"));
        }
        self.d
            .create_job(v2::CreateJobRequest {
                parent: parent(&p),
                job: Some(job),
                job_id: id.clone(),
                validate_only: false,
            })
            .await?;
        self.get_job(&p, &id).await
    }

    async fn replace_job(&self, project: &str, j: &str, body: &[u8]) -> Result<Value, Status> {
        let p = self.place(project)?;
        let (id, mut job) = jobs::to_v2(body)?;
        if !id.is_empty() && id != j {
            return Err(jobs::bad(
                "metadata.name",
                &format!("{id:?} does not match the path ({j})"),
            ));
        }
        job.name = job_name(&p, j);
        self.d
            .update_job(v2::UpdateJobRequest {
                job: Some(job),
                validate_only: false,
                allow_missing: false,
            })
            .await?;
        self.get_job(&p, j).await
    }

    async fn run_job(&self, project: &str, j: &str, body: &[u8]) -> Result<Value, Status> {
        let p = self.place(project)?;
        let overrides = executions::overrides(body)?;
        let op = self
            .d
            .run_job(v2::RunJobRequest {
                name: job_name(&p, j),
                validate_only: false,
                etag: String::new(),
                overrides,
            })
            .await?;
        let started: v2::Execution = op
            .metadata
            .as_ref()
            .ok_or_else(|| Status::internal("RunJob answered without its execution"))?
            .unpack()
            .map_err(|e| Status::internal(e.to_string()))?;
        let x = self.d.get_execution(&started.name).await?;
        Ok(executions::to_v1(&x, &p))
    }

    async fn list_executions(&self, project: &str) -> Result<Value, Status> {
        let p = self.place(project)?;
        let sel = executions::selector(&self.param("labelSelector").unwrap_or_default())?;
        let job = executions::required(&sel, executions::JOB_LABEL).unwrap_or("-");
        let resp = self
            .d
            .list_executions(v2::ListExecutionsRequest {
                parent: job_name(&p, job),
                page_size: self.page_size()?,
                page_token: self.param("continue").unwrap_or_default(),
                show_deleted: false,
            })
            .await;
        let resp = match resp {
            // A selector naming a job that does not exist selects nothing.
            Err(s) if s.code() == tonic::Code::NotFound && job != "-" => {
                return Ok(list("ExecutionsList", Vec::new(), String::new()))
            }
            r => r?,
        };
        let items = resp
            .executions
            .iter()
            .map(|x| executions::to_v1(x, &p))
            .filter(|v| executions::selected(&sel, v))
            .collect();
        Ok(list("ExecutionsList", items, resp.next_page_token))
    }

    async fn list_tasks(&self, project: &str) -> Result<Value, Status> {
        let p = self.place(project)?;
        let sel = executions::selector(&self.param("labelSelector").unwrap_or_default())?;
        let exec = executions::required(&sel, executions::EXECUTION_LABEL).ok_or_else(|| {
            Status::invalid_argument(format!(
                "listing tasks needs labelSelector={} = EXECUTION",
                executions::EXECUTION_LABEL
            ))
        })?;
        let resp = self
            .d
            .list_tasks(v2::ListTasksRequest {
                parent: execution_name(&p, exec),
                page_size: self.page_size()?,
                page_token: self.param("continue").unwrap_or_default(),
                show_deleted: false,
            })
            .await?;
        let items = resp
            .tasks
            .iter()
            .map(|t| executions::task_to_v1(t, &p))
            .filter(|v| executions::selected(&sel, v))
            .collect();
        Ok(list("TasksList", items, resp.next_page_token))
    }
}

fn parent(p: &Place) -> String {
    format!("projects/{}/locations/{}", p.project, p.region)
}

fn job_name(p: &Place, job: &str) -> String {
    format!("{}/jobs/{job}", parent(p))
}

/// An execution's v2 name: v1 does not name its job, so any job (`jobs/-`).
fn execution_name(p: &Place, execution: &str) -> String {
    format!("{}/jobs/-/executions/{execution}", parent(p))
}

fn not_found(m: &Method, path: &str) -> Status {
    Status::not_found(format!(
        "no route for {m} {PREFIX}{path}: runlet serves run.googleapis.com/v1 jobs, executions and tasks under namespaces/PROJECT"
    ))
}
