//! The gRPC side of the API: tonic's generated service traits, each method a call on the
//! [`Daemon`].

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::daemon::Daemon;
use crate::pb::longrunning::{self as lro, operations_server};
use crate::pb::run_v2::{
    self as v2, executions_server, jobs_server, revisions_server, services_server, tasks_server,
};

/// Every gRPC service of the API, over one daemon.
#[derive(Clone)]
pub struct Api(pub Arc<Daemon>);

/// The gRPC services, routed by path, ready to be served.
pub fn routes(daemon: Arc<Daemon>) -> tonic::service::Routes {
    let api = Api(daemon);
    tonic::service::Routes::new(services_server::ServicesServer::new(api.clone()))
        .add_service(revisions_server::RevisionsServer::new(api.clone()))
        .add_service(jobs_server::JobsServer::new(api.clone()))
        .add_service(executions_server::ExecutionsServer::new(api.clone()))
        .add_service(tasks_server::TasksServer::new(api.clone()))
        .add_service(operations_server::OperationsServer::new(api))
        .prepare()
}

/// The longest a `WaitOperation` waits (Google's servers cap it too).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A `WaitOperation` timeout: as asked, at most [`MAX_WAIT`], that long when unset.
pub fn wait_timeout(t: Option<&pbjson_types::Duration>) -> Duration {
    match t {
        Some(d) if d.seconds > 0 || d.nanos > 0 => {
            Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32).min(MAX_WAIT)
        }
        _ => MAX_WAIT,
    }
}

#[tonic::async_trait]
impl services_server::Services for Api {
    async fn create_service(
        &self,
        r: Request<v2::CreateServiceRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0
            .create_service(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn get_service(
        &self,
        r: Request<v2::GetServiceRequest>,
    ) -> Result<Response<v2::Service>, Status> {
        self.0
            .get_service(&r.into_inner().name)
            .await
            .map(Response::new)
    }
    async fn list_services(
        &self,
        r: Request<v2::ListServicesRequest>,
    ) -> Result<Response<v2::ListServicesResponse>, Status> {
        self.0
            .list_services(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn update_service(
        &self,
        r: Request<v2::UpdateServiceRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0
            .update_service(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn delete_service(
        &self,
        r: Request<v2::DeleteServiceRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0
            .delete_service(r.into_inner())
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl revisions_server::Revisions for Api {
    async fn get_revision(
        &self,
        r: Request<v2::GetRevisionRequest>,
    ) -> Result<Response<v2::Revision>, Status> {
        self.0
            .get_revision(&r.into_inner().name)
            .await
            .map(Response::new)
    }
    async fn list_revisions(
        &self,
        r: Request<v2::ListRevisionsRequest>,
    ) -> Result<Response<v2::ListRevisionsResponse>, Status> {
        self.0
            .list_revisions(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn delete_revision(
        &self,
        r: Request<v2::DeleteRevisionRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0
            .delete_revision(r.into_inner())
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl jobs_server::Jobs for Api {
    async fn create_job(
        &self,
        r: Request<v2::CreateJobRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0.create_job(r.into_inner()).await.map(Response::new)
    }
    async fn get_job(&self, r: Request<v2::GetJobRequest>) -> Result<Response<v2::Job>, Status> {
        self.0
            .get_job(&r.into_inner().name)
            .await
            .map(Response::new)
    }
    async fn list_jobs(
        &self,
        r: Request<v2::ListJobsRequest>,
    ) -> Result<Response<v2::ListJobsResponse>, Status> {
        self.0.list_jobs(r.into_inner()).await.map(Response::new)
    }
    async fn update_job(
        &self,
        r: Request<v2::UpdateJobRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0.update_job(r.into_inner()).await.map(Response::new)
    }
    async fn delete_job(
        &self,
        r: Request<v2::DeleteJobRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0.delete_job(r.into_inner()).await.map(Response::new)
    }
    async fn run_job(
        &self,
        r: Request<v2::RunJobRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0.run_job(r.into_inner()).await.map(Response::new)
    }
}

#[tonic::async_trait]
impl executions_server::Executions for Api {
    async fn get_execution(
        &self,
        r: Request<v2::GetExecutionRequest>,
    ) -> Result<Response<v2::Execution>, Status> {
        self.0
            .get_execution(&r.into_inner().name)
            .await
            .map(Response::new)
    }
    async fn list_executions(
        &self,
        r: Request<v2::ListExecutionsRequest>,
    ) -> Result<Response<v2::ListExecutionsResponse>, Status> {
        self.0
            .list_executions(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn delete_execution(
        &self,
        r: Request<v2::DeleteExecutionRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0
            .delete_execution(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn cancel_execution(
        &self,
        r: Request<v2::CancelExecutionRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0
            .cancel_execution(r.into_inner())
            .await
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl tasks_server::Tasks for Api {
    async fn get_task(&self, r: Request<v2::GetTaskRequest>) -> Result<Response<v2::Task>, Status> {
        self.0
            .get_task(&r.into_inner().name)
            .await
            .map(Response::new)
    }
    async fn list_tasks(
        &self,
        r: Request<v2::ListTasksRequest>,
    ) -> Result<Response<v2::ListTasksResponse>, Status> {
        self.0.list_tasks(r.into_inner()).await.map(Response::new)
    }
}

#[tonic::async_trait]
impl operations_server::Operations for Api {
    async fn list_operations(
        &self,
        r: Request<lro::ListOperationsRequest>,
    ) -> Result<Response<lro::ListOperationsResponse>, Status> {
        let r = r.into_inner();
        let (operations, next_page_token) =
            self.0.ops.list(&r.name, r.page_size, &r.page_token).await?;
        Ok(Response::new(lro::ListOperationsResponse {
            operations,
            next_page_token,
            ..Default::default()
        }))
    }
    async fn get_operation(
        &self,
        r: Request<lro::GetOperationRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        self.0
            .ops
            .get(&r.into_inner().name)
            .await
            .map(Response::new)
    }
    async fn delete_operation(
        &self,
        r: Request<lro::DeleteOperationRequest>,
    ) -> Result<Response<pbjson_types::Empty>, Status> {
        self.0.ops.delete(&r.into_inner().name).await?;
        Ok(Response::new(pbjson_types::Empty {}))
    }
    async fn cancel_operation(
        &self,
        r: Request<lro::CancelOperationRequest>,
    ) -> Result<Response<pbjson_types::Empty>, Status> {
        let name = r.into_inner().name;
        self.0.ops.get(&name).await?;
        Err(Status::unimplemented(format!(
            "operation {name} cannot be cancelled: rollouts run to the end (delete the service or deploy again)"
        )))
    }
    async fn wait_operation(
        &self,
        r: Request<lro::WaitOperationRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let r = r.into_inner();
        self.0
            .ops
            .wait(&r.name, wait_timeout(r.timeout.as_ref()))
            .await
            .map(Response::new)
    }
}
