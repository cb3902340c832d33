//! The Admin API's client side for jobs, executions and tasks (`runlet jobs ...`): the
//! calls those commands make, every page of a list.

use super::client::{Client, ClientError};
use crate::pb::longrunning as lro;
use crate::pb::run_v2::{self as v2, run_job_request::Overrides};

impl Client {
    /// The job `name` (in full).
    pub async fn get_job(&self, name: &str) -> Result<v2::Job, ClientError> {
        let req = v2::GetJobRequest {
            name: name.to_string(),
        };
        let r = self.jobs.clone().get_job(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    /// Every job under `parent` (`projects/P/locations/R`), newest first.
    pub async fn list_jobs(&self, parent: &str) -> Result<Vec<v2::Job>, ClientError> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = v2::ListJobsRequest {
                parent: parent.to_string(),
                page_size: 100,
                page_token,
                show_deleted: false,
            };
            let r = self.jobs.clone().list_jobs(req).await;
            let page = r.map_err(|s| self.status(s))?.into_inner();
            all.extend(page.jobs);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Creates job `id` under `parent`.
    pub async fn create_job(
        &self,
        parent: &str,
        id: &str,
        job: v2::Job,
    ) -> Result<lro::Operation, ClientError> {
        let req = v2::CreateJobRequest {
            parent: parent.to_string(),
            job: Some(job),
            job_id: id.to_string(),
            validate_only: false,
        };
        let r = self.jobs.clone().create_job(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    /// Replaces job `job.name` (its `etag`, when set, must match).
    pub async fn update_job(&self, job: v2::Job) -> Result<lro::Operation, ClientError> {
        let req = v2::UpdateJobRequest {
            job: Some(job),
            validate_only: false,
            allow_missing: false,
        };
        let r = self.jobs.clone().update_job(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    pub async fn delete_job(&self, name: &str) -> Result<lro::Operation, ClientError> {
        let req = v2::DeleteJobRequest {
            name: name.to_string(),
            validate_only: false,
            etag: String::new(),
        };
        let r = self.jobs.clone().delete_job(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    /// Starts an execution of job `name`; its operation completes when the execution ends.
    pub async fn run_job(
        &self,
        name: &str,
        overrides: Option<Overrides>,
    ) -> Result<lro::Operation, ClientError> {
        let req = v2::RunJobRequest {
            name: name.to_string(),
            validate_only: false,
            etag: String::new(),
            overrides,
        };
        let r = self.jobs.clone().run_job(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    pub async fn get_execution(&self, name: &str) -> Result<v2::Execution, ClientError> {
        let req = v2::GetExecutionRequest {
            name: name.to_string(),
        };
        let r = self.executions.clone().get_execution(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    /// Every execution under `parent`: a job's full name, or `PARENT/jobs/-` for all;
    /// newest first.
    pub async fn list_executions(&self, parent: &str) -> Result<Vec<v2::Execution>, ClientError> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = v2::ListExecutionsRequest {
                parent: parent.to_string(),
                page_size: 100,
                page_token,
                show_deleted: false,
            };
            let r = self.executions.clone().list_executions(req).await;
            let page = r.map_err(|s| self.status(s))?.into_inner();
            all.extend(page.executions);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    pub async fn cancel_execution(&self, name: &str) -> Result<lro::Operation, ClientError> {
        let req = v2::CancelExecutionRequest {
            name: name.to_string(),
            validate_only: false,
            etag: String::new(),
        };
        let r = self.executions.clone().cancel_execution(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    pub async fn delete_execution(&self, name: &str) -> Result<lro::Operation, ClientError> {
        let req = v2::DeleteExecutionRequest {
            name: name.to_string(),
            validate_only: false,
            etag: String::new(),
        };
        let r = self.executions.clone().delete_execution(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    /// Every task of execution `parent` (its full name), by index.
    pub async fn list_tasks(&self, parent: &str) -> Result<Vec<v2::Task>, ClientError> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = v2::ListTasksRequest {
                parent: parent.to_string(),
                page_size: 1000,
                page_token,
                show_deleted: false,
            };
            let r = self.tasks.clone().list_tasks(req).await;
            let page = r.map_err(|s| self.status(s))?.into_inner();
            all.extend(page.tasks);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }
}
