//! The API's listeners: one TCP port serving gRPC and HTTP/JSON together (a request whose
//! `content-type` is `application/grpc*` goes to gRPC, any other to REST), and the Unix
//! socket the `runlet` CLI uses. A listener given a token refuses every call without
//! `Authorization: Bearer <token>` (401 / `UNAUTHENTICATED`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::Status;
use tower_service::Service;
use tracing::{debug, warn};

use super::{grpc, rest};
use crate::daemon::Daemon;

/// The largest REST request body.
const MAX_BODY: usize = 16 << 20;

/// One API endpoint's handler: gRPC and REST over one daemon, with an optional token.
#[derive(Clone)]
pub struct Handler {
    daemon: Arc<Daemon>,
    grpc: tonic::service::Routes,
    token: Option<Arc<str>>,
}

impl Handler {
    pub fn new(daemon: Arc<Daemon>, token: Option<String>) -> Handler {
        Handler {
            grpc: grpc::routes(daemon.clone()),
            daemon,
            token: token.map(Arc::from),
        }
    }

    /// Answers one request.
    pub async fn call(&self, req: Request<Incoming>) -> Response<Body> {
        let is_grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if let Some(token) = &self.token {
            let given = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(token) {
                let s = Status::unauthenticated(
                    "this API listener requires Authorization: Bearer <token> (the daemon's --api-token-file)",
                );
                return if is_grpc {
                    s.into_http()
                } else {
                    rest::error(&s).map(Body::new)
                };
            }
        }
        if is_grpc {
            let mut routes = self.grpc.clone();
            return match routes.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let s = Status::invalid_argument(format!(
                    "reading the request body: {e} (at most {MAX_BODY} bytes)"
                ));
                return rest::error(&s).map(Body::new);
            }
        };
        debug!(method = %parts.method, uri = %parts.uri, "API call");
        rest::handle(
            &self.daemon,
            &parts.method,
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok()),
            parts.uri.path(),
            parts.uri.query(),
            body,
        )
        .await
        .map(Body::new)
    }
}

/// Serves connections from `accept` until `shutdown` turns true; calls in progress are
/// given a moment to finish.
pub async fn serve<S, A, F>(handler: Handler, mut accept: A, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: Future<Output = std::io::Result<S>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            s = accept() => s,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let h = handler.clone();
        let svc = hyper::service::service_fn(move |req| {
            let h = h.clone();
            async move { Ok::<_, Infallible>(h.call(req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!("API connection: {e}");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}
