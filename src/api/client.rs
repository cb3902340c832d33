//! The Admin API's client side, as `runlet deploy|services|revisions|status` and the tests
//! use it: reaching the daemon (its Unix socket, or a TCP address with an optional bearer
//! token), the calls those commands make (every page of a list, create-or-update, delete),
//! and waiting for an operation to end.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::pb::any::AnyError;
use crate::pb::longrunning::{self as lro, operation, operations_client::OperationsClient};
use crate::pb::run_v2::services_client::ServicesClient;
use crate::pb::run_v2::{
    self as v2, executions_client::ExecutionsClient, jobs_client::JobsClient,
    revisions_client::RevisionsClient, tasks_client::TasksClient,
};
use crate::spec::SpecError;

/// The name of the daemon's API socket in its state dir.
pub const SOCKET: &str = "runlet.sock";

/// The daemon's API socket for `state_dir` (served with mode 0600).
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Where the daemon's API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Its Unix socket (`<state-dir>/runlet.sock`).
    Unix(PathBuf),
    /// Its `--api-listen` address, as `http://HOST:PORT`.
    Tcp(Uri),
}

impl Target {
    /// `HOST:PORT` or `http://HOST:PORT` (`--api`).
    pub fn tcp(text: &str) -> Result<Target, SpecError> {
        let bad = |detail: String| SpecError {
            field: "--api",
            detail,
        };
        let full = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let uri: Uri = full
            .parse()
            .map_err(|_| bad(format!("{text:?} is not HOST:PORT or http://HOST:PORT")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(format!(
                "{text:?}: only http:// is served (the daemon has no TLS; use a tunnel for remote access)"
            )));
        }
        let path_ok = matches!(uri.path(), "" | "/");
        if uri.host().is_none() || uri.port_u16().is_none() || !path_ok || uri.query().is_some() {
            return Err(bad(format!(
                "{text:?} is not HOST:PORT or http://HOST:PORT (with a port, no path)"
            )));
        }
        Ok(Target::Tcp(uri))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
            Target::Tcp(u) => write!(f, "http://{}", u.authority().map_or("", |a| a.as_str())),
        }
    }
}

/// Why a call to the daemon failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the runlet daemon at {target}: is `runlet daemon` running?")]
    Unreachable { target: String },
    #[error("permission denied on the runlet daemon's socket {target} (it is root's, mode 0600): run as root, or use --api")]
    PermissionDenied { target: String },
    #[error("the API token cannot be sent as a header: it must be printable ASCII")]
    BadToken,
    /// The daemon refused the call; its message says why.
    #[error("{}", .0.message())]
    Status(Status),
    /// An operation ended with an error.
    #[error("{message}")]
    Failed { code: Code, message: String },
    #[error("the daemon's answer cannot be read")]
    Answer(#[from] AnyError),
}

impl ClientError {
    /// Whether the caller's input was refused (exit 64).
    pub fn is_usage(&self) -> bool {
        match self {
            ClientError::BadToken => true,
            ClientError::Status(s) => s.code() == Code::InvalidArgument,
            _ => false,
        }
    }

    /// Whether the daemon said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status(s) if s.code() == Code::NotFound)
    }
}

/// Adds `Authorization: Bearer <token>` to every call, when there is a token.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

pub(super) type Authed = InterceptedService<Channel, Bearer>;

/// A connection to the daemon's API.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    services: ServicesClient<Authed>,
    revisions: RevisionsClient<Authed>,
    operations: OperationsClient<Authed>,
    pub(super) jobs: JobsClient<Authed>,
    pub(super) executions: ExecutionsClient<Authed>,
    pub(super) tasks: TasksClient<Authed>,
}

/// How long a connection attempt may take (the daemon is local, or one hop away).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one `WaitOperation` asks the daemon to wait before answering anyway.
const WAIT_SLICE: Duration = Duration::from_secs(60);

impl Client {
    /// Connects to `target`, sending `token` (if any) with every call.
    pub async fn connect(target: Target, token: Option<&str>) -> Result<Client, ClientError> {
        let bearer = match token {
            None => Bearer(None),
            Some(t) => Bearer(Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ClientError::BadToken)?,
            )),
        };
        let channel = match &target {
            Target::Unix(path) => {
                let path = path.clone();
                // The URI is a placeholder: the connector ignores it and dials the socket.
                Endpoint::from_static("http://[::]:0")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(s))
                        }
                    }))
                    .await
            }
            Target::Tcp(uri) => {
                Endpoint::from(uri.clone())
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect()
                    .await
            }
        }
        .map_err(|e| unreachable(&target, &e))?;
        Ok(Client {
            services: ServicesClient::with_interceptor(channel.clone(), bearer.clone()),
            revisions: RevisionsClient::with_interceptor(channel.clone(), bearer.clone()),
            jobs: JobsClient::with_interceptor(channel.clone(), bearer.clone()),
            executions: ExecutionsClient::with_interceptor(channel.clone(), bearer.clone()),
            tasks: TasksClient::with_interceptor(channel.clone(), bearer.clone()),
            operations: OperationsClient::with_interceptor(channel, bearer),
            target,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A refused call as an error; a connection lost mid-call as the daemon being gone.
    pub(super) fn status(&self, s: Status) -> ClientError {
        if s.code() == Code::Unavailable {
            return ClientError::Unreachable {
                target: self.target.to_string(),
            };
        }
        ClientError::Status(s)
    }

    /// The service `name` (in full).
    pub async fn get_service(&self, name: &str) -> Result<v2::Service, ClientError> {
        let req = v2::GetServiceRequest {
            name: name.to_string(),
        };
        let r = self.services.clone().get_service(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    /// Every service under `parent` (`projects/P/locations/R`), newest first.
    pub async fn list_services(&self, parent: &str) -> Result<Vec<v2::Service>, ClientError> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = v2::ListServicesRequest {
                parent: parent.to_string(),
                page_size: 100,
                page_token,
                show_deleted: false,
            };
            let r = self.services.clone().list_services(req).await;
            let page = r.map_err(|s| self.status(s))?.into_inner();
            all.extend(page.services);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Every revision under `parent`: a service's full name, or `PARENT/services/-` for
    /// all; newest first.
    pub async fn list_revisions(&self, parent: &str) -> Result<Vec<v2::Revision>, ClientError> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = v2::ListRevisionsRequest {
                parent: parent.to_string(),
                page_size: 100,
                page_token,
                show_deleted: false,
            };
            let r = self.revisions.clone().list_revisions(req).await;
            let page = r.map_err(|s| self.status(s))?.into_inner();
            all.extend(page.revisions);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = page.next_page_token;
        }
    }

    /// Creates or replaces the service `svc.name` (`UpdateService` with `allow_missing`):
    /// the whole template counts, as with `gcloud run services replace`.
    pub async fn deploy(&self, svc: v2::Service) -> Result<lro::Operation, ClientError> {
        let req = v2::UpdateServiceRequest {
            update_mask: None,
            service: Some(svc),
            validate_only: false,
            allow_missing: true,
        };
        let r = self.services.clone().update_service(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    /// Deletes the service `name` (in full).
    pub async fn delete_service(&self, name: &str) -> Result<lro::Operation, ClientError> {
        let req = v2::DeleteServiceRequest {
            name: name.to_string(),
            validate_only: false,
            etag: String::new(),
        };
        let r = self.services.clone().delete_service(req).await;
        Ok(r.map_err(|s| self.status(s))?.into_inner())
    }

    /// Waits until `op` is done (`WaitOperation`, a minute at a time) and returns it.
    pub async fn wait(&self, mut op: lro::Operation) -> Result<lro::Operation, ClientError> {
        while !op.done {
            let req = lro::WaitOperationRequest {
                name: op.name.clone(),
                timeout: Some(pbjson_types::Duration {
                    seconds: WAIT_SLICE.as_secs() as i64,
                    nanos: 0,
                }),
            };
            let r = self.operations.clone().wait_operation(req).await;
            op = r.map_err(|s| self.status(s))?.into_inner();
        }
        Ok(op)
    }
}

/// The connection failure as the error a user can act on.
fn unreachable(target: &Target, e: &(dyn std::error::Error + 'static)) -> ClientError {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return ClientError::PermissionDenied {
                    target: target.to_string(),
                };
            }
        }
        cause = c.source();
    }
    ClientError::Unreachable {
        target: target.to_string(),
    }
}

/// The resource a finished operation carries (its response), or the error it ended with.
pub fn operation_result<M>(op: &lro::Operation) -> Result<M, ClientError>
where
    M: prost::Message + prost::Name + Default,
{
    match &op.result {
        Some(operation::Result::Response(any)) => Ok(any.unpack()?),
        Some(operation::Result::Error(s)) => Err(ClientError::Failed {
            code: Code::from_i32(s.code),
            message: s.message.clone(),
        }),
        None => Err(ClientError::Failed {
            code: Code::Unknown,
            message: format!("operation {} has no result", op.name),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_targets() {
        for (text, want) in [
            ("127.0.0.1:8090", "http://127.0.0.1:8090"),
            ("http://127.0.0.1:8090", "http://127.0.0.1:8090"),
            ("http://localhost:8090/", "http://localhost:8090"),
            ("[::1]:8090", "http://[::1]:8090"),
        ] {
            assert_eq!(Target::tcp(text).unwrap().to_string(), want, "{text}");
        }
        for bad in [
            "127.0.0.1",
            "https://127.0.0.1:8090",
            "http://h:1/x",
            "unix:/x",
            "",
        ] {
            let e = Target::tcp(bad).unwrap_err();
            assert_eq!(e.field, "--api", "{bad}");
        }
        assert_eq!(
            Target::Unix("/var/lib/runlet/runlet.sock".into()).to_string(),
            "unix:/var/lib/runlet/runlet.sock"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("runlet.sock");
        let e = Client::connect(Target::Unix(sock.clone()), None)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot reach the runlet daemon at unix:{}: is `runlet daemon` running?",
                sock.display()
            )
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = Target::tcp(&format!("127.0.0.1:{port}")).unwrap();
        let e = Client::connect(t, None).await.unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        let e = Client::connect(Target::Unix(sock), Some("bad\ntoken"))
            .await
            .unwrap_err();
        assert!(e.is_usage(), "{e:?}");
    }

    #[test]
    fn operation_results() {
        let svc = v2::Service {
            name: "s".into(),
            ..Default::default()
        };
        let ok = lro::Operation {
            name: "op".into(),
            done: true,
            result: Some(operation::Result::Response(crate::pb::any::Any::pack(&svc))),
            ..Default::default()
        };
        assert_eq!(operation_result::<v2::Service>(&ok).unwrap(), svc);
        let failed = lro::Operation {
            result: Some(operation::Result::Error(crate::pb::rpc::Status {
                code: Code::FailedPrecondition as i32,
                message: "Image 'x' not found.".into(),
                details: vec![],
            })),
            ..ok
        };
        let e = operation_result::<v2::Service>(&failed).unwrap_err();
        assert_eq!(e.to_string(), "Image 'x' not found.");
        assert!(!e.is_usage());
    }
}
