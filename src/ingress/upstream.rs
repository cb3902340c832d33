//! Connections from the ingress to one instance, kept per ingress thread.
//!
//! An HTTP/1.1 request without a body (nearly every GET) goes through [`super::upstream_h1`]: the
//! request's own task writes it and reads the response from a pooled connection. Requests
//! with a body, upgrades (WebSockets) and HTTP/2 (`--use-http2`) go through hyper-util's
//! client, which writes a request body while the response may already be arriving and hands
//! over upgraded connections.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::Either;
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::raw::RawResponse;
use super::upstream_h1::{self as h1, H1Body, H1Error};
use crate::dial::Dial;

/// A failure to get a response from the instance.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    H1(#[from] H1Error),
    #[error("sending the request to the instance")]
    Client(#[from] hyper_util::client::legacy::Error),
}

/// One ingress thread's connections to one instance. `B` is the request body type (the
/// client's body, streamed through).
pub struct Upstream<B = Incoming> {
    dialer: Arc<dyn Dial>,
    /// `127.0.0.1:PORT`, for the absolute URI hyper-util's client wants.
    authority: http::uri::Authority,
    /// HTTP/1.1 only: idle connections for requests without a body.
    lean: Option<Arc<h1::Pool>>,
    client: Client<Connector, B>,
}

impl<B> Upstream<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(dialer: Arc<dyn Dial>, authority: http::uri::Authority, http2: bool) -> Self {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .http2_only(http2);
        Upstream {
            client: b.build(Connector(dialer.clone())),
            dialer,
            authority,
            lean: (!http2).then(Default::default),
        }
    }

    /// Sends `req`, whose URI is in origin form (`/path?query`) for HTTP/1.1 and absolute
    /// for HTTP/2, and returns the response.
    pub async fn send(&self, req: Request<B>) -> Result<Response<UpstreamBody>, UpstreamError> {
        if let Some(pool) = &self.lean {
            if req.body().is_end_stream() && !req.headers().contains_key(http::header::UPGRADE) {
                let (parts, _) = req.into_parts();
                let resp = h1::send(pool, self.dialer.as_ref(), &parts).await?;
                return Ok(resp.map(Either::Left));
            }
        }
        let mut req = req;
        if req.uri().scheme().is_none() {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(self.authority.clone());
            parts.path_and_query = req.uri().path_and_query().cloned();
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
        let resp = self.client.request(req).await?;
        Ok(resp.map(Either::Right))
    }
}

impl<B> Upstream<B> {
    /// Sends a bodiless HTTP/1.1 request head, ready to write (see [`h1::send_head`]).
    pub async fn send_head(
        &self,
        head: &[u8],
        idempotent: bool,
        head_request: bool,
    ) -> Result<(RawResponse, H1Body), H1Error> {
        let Some(pool) = &self.lean else {
            return Err(H1Error::Malformed("HTTP/1.1 request to an HTTP/2 instance"));
        };
        h1::send_head(pool, self.dialer.as_ref(), head, idempotent, head_request).await
    }
}

/// A response body from the instance: read by [`h1`] (`Left`) or by hyper (`Right`).
pub type UpstreamBody = Either<H1Body, Incoming>;

/// Dials through the instance's network namespace (for hyper-util's client).
#[derive(Clone)]
pub struct Connector(pub Arc<dyn Dial>);

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let d = self.0.clone();
        Box::pin(async move { d.dial().await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::Loopback;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An HTTP/1.1 server on loopback that counts connections; with `close_after_one` it
    /// drops each connection after its first response, without saying so.
    async fn server(close_after_one: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let served = Arc::new(AtomicUsize::new(0));
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        served.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let body = if req.uri().path() == "/empty" {
                                ""
                            } else {
                                "hello"
                            };
                            Ok::<_, std::convert::Infallible>(Response::new(
                                http_body_util::Full::new(Bytes::from(body)),
                            ))
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    if close_after_one {
                        let mut conn = std::pin::pin!(conn);
                        // Serve one exchange, then drop the socket.
                        let _ =
                            tokio::time::timeout(Duration::from_millis(100), conn.as_mut()).await;
                    } else {
                        let _ = conn.await;
                    }
                });
            }
        });
        (addr, conns)
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .header(http::header::HOST, "test")
            .body(Full::default())
            .unwrap()
    }

    fn upstream(addr: std::net::SocketAddr) -> Upstream<Full<Bytes>> {
        let authority = http::uri::Authority::try_from(addr.to_string()).unwrap();
        Upstream::new(Arc::new(Loopback(addr)), authority, false)
    }

    /// How many connections `exchanges` opened to a [`server`] (`close_after_one` as there).
    async fn connections<F>(
        close_after_one: bool,
        exchanges: impl FnOnce(Upstream<Full<Bytes>>) -> F,
    ) -> usize
    where
        F: std::future::Future<Output = ()>,
    {
        let (addr, conns) = server(close_after_one).await;
        exchanges(upstream(addr)).await;
        conns.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_ends() {
        let opened = connections(false, |up| async move {
            for path in ["/", "/empty", "/", "/empty"] {
                let resp = up.send(get(path)).await.unwrap();
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body.is_empty(), path == "/empty");
            }
        });
        assert_eq!(opened.await, 1);
    }

    #[tokio::test]
    async fn a_response_dropped_half_read_does_not_return_its_connection() {
        let opened = connections(false, |up| async move {
            drop(up.send(get("/")).await.unwrap());
            let resp = up.send(get("/")).await.unwrap();
            resp.into_body().collect().await.unwrap();
        });
        assert_eq!(opened.await, 2);
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_while_idle_is_not_used() {
        let opened = connections(true, |up| async move {
            for _ in 0..3 {
                let resp = up.send(get("/")).await.unwrap();
                resp.into_body().collect().await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        assert_eq!(opened.await, 3);
    }

    #[tokio::test]
    async fn a_request_with_a_body_goes_through_hyper_and_its_connection_is_reused() {
        let opened = connections(false, |up| async move {
            for _ in 0..3 {
                let req = Request::post("/")
                    .header(http::header::HOST, "test")
                    .body(Full::new(Bytes::from_static(b"payload")))
                    .unwrap();
                let resp = up.send(req).await.unwrap();
                assert!(matches!(resp.body(), Either::Right(_)), "read by hyper");
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"hello");
            }
        });
        assert_eq!(opened.await, 1);
    }
}
