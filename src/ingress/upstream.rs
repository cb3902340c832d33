//! Connections from the ingress to one instance.
//!
//! HTTP/1.1 (the default) goes through a small pool of hyper `http1` connections kept per
//! ingress thread: a request takes an idle ready connection (or dials one), and its
//! response body gives the connection back when it ends. Compared with hyper-util's
//! general-purpose client this skips a keyed, shared pool and a task spawned per request
//! to watch for the connection becoming idle: measured, about a sixth of the proxy's user
//! CPU per request. HTTP/2 (`--use-http2`) multiplexes on one connection and keeps
//! hyper-util's client.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use super::Dial;

/// Most idle connections kept per thread and instance; more are closed when they free up.
const MAX_IDLE: usize = 256;

/// A failure to get a response from the instance.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the instance: {0}")]
    Connect(io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Client(#[from] hyper_util::client::legacy::Error),
}

/// Held for a push or a pop, never across an await, and only ever taken by one ingress
/// thread (each has its own pool): a plain mutex is right here.
#[allow(clippy::disallowed_types)]
type IdleList<B> = std::sync::Mutex<Vec<http1::SendRequest<B>>>;

/// One ingress thread's connections to one instance. `B` is the request body type (the
/// client's body, streamed through).
pub enum Upstream<B = Incoming> {
    Http1 {
        dialer: Arc<dyn Dial>,
        idle: Arc<IdleList<B>>,
    },
    Http2(Box<Client<Connector, B>>),
}

impl<B> Upstream<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(dialer: Arc<dyn Dial>, http2: bool) -> Self {
        if http2 {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(60))
                .pool_timer(TokioTimer::new())
                .http2_only(true);
            Upstream::Http2(Box::new(b.build(Connector(dialer))))
        } else {
            Upstream::Http1 {
                dialer,
                idle: Default::default(),
            }
        }
    }

    /// Sends `req` (whose URI is already in the form the instance expects) and returns the
    /// response; its body hands the connection back when it ends.
    pub async fn send(
        &self,
        mut req: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>, UpstreamError> {
        let (dialer, idle) = match self {
            Upstream::Http2(client) => {
                let resp = client.request(req).await?;
                return Ok(resp.map(|b| UpstreamBody {
                    inner: b,
                    back: None,
                    ended: false,
                }));
            }
            Upstream::Http1 { dialer, idle } => (dialer, idle),
        };
        // An idle connection may have been closed by the instance since it was last used:
        // a request not yet written to it comes back and goes on another connection.
        loop {
            let (mut sender, fresh) = match take_ready(idle) {
                Some(s) => (s, false),
                None => (connect(dialer.as_ref()).await?, true),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let keep = resp.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                    return Ok(resp.map(|b| UpstreamBody {
                        inner: b,
                        back: keep.then(|| (sender, idle.clone())),
                        ended: false,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(again) if !fresh => req = again,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }
}

/// The most recently used idle connection that is ready for a request. Closed ones are
/// dropped; ones not ready yet (still finishing the previous exchange) stay.
fn take_ready<B>(idle: &IdleList<B>) -> Option<http1::SendRequest<B>> {
    let mut list = idle.lock().unwrap_or_else(|p| p.into_inner());
    let mut i = list.len();
    while i > 0 {
        i -= 1;
        if list[i].is_closed() {
            list.swap_remove(i);
        } else if list[i].is_ready() {
            return Some(list.swap_remove(i));
        }
    }
    None
}

async fn connect<B>(dialer: &dyn Dial) -> Result<http1::SendRequest<B>, UpstreamError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = dialer.dial().await.map_err(UpstreamError::Connect)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!("connection to the instance: {e}");
        }
    });
    Ok(sender)
}

/// A response body from the instance; at its end the connection goes back to the pool.
pub struct UpstreamBody<B = Incoming> {
    inner: Incoming,
    back: Option<(http1::SendRequest<B>, Arc<IdleList<B>>)>,
    ended: bool,
}

impl<B> UpstreamBody<B> {
    fn give_back(&mut self) {
        if let Some((sender, idle)) = self.back.take() {
            let mut list = idle.lock().unwrap_or_else(|p| p.into_inner());
            if list.len() < MAX_IDLE {
                list.push(sender);
            }
        }
    }
}

impl<B> Body for UpstreamBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => {
                self.ended = true;
                self.give_back();
            }
            // A broken body leaves the connection unusable.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for UpstreamBody<B> {
    fn drop(&mut self) {
        // A body the server never polled because it was known to be empty still ended; a
        // body dropped half-read did not, and its connection closes with it.
        if self.ended || self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

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
    use http_body_util::{BodyExt, Empty};
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Loopback(std::net::SocketAddr);

    impl Dial for Loopback {
        fn dial(
            &self,
        ) -> Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>> + Send + '_>> {
            Box::pin(tokio::net::TcpStream::connect(self.0))
        }
    }

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

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::get(path)
            .header(http::header::HOST, "test")
            .body(Empty::new())
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_ends() {
        let (addr, conns) = server(false).await;
        let up: Upstream<Empty<Bytes>> = Upstream::new(Arc::new(Loopback(addr)), false);
        for path in ["/", "/empty", "/", "/empty"] {
            let resp = up.send(get(path)).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.is_empty(), path == "/empty");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_dropped_half_read_does_not_return_its_connection() {
        let (addr, conns) = server(false).await;
        let up: Upstream<Empty<Bytes>> = Upstream::new(Arc::new(Loopback(addr)), false);
        drop(up.send(get("/")).await.unwrap());
        let resp = up.send(get("/")).await.unwrap();
        resp.into_body().collect().await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_while_idle_is_not_used() {
        let (addr, conns) = server(true).await;
        let up: Upstream<Empty<Bytes>> = Upstream::new(Arc::new(Loopback(addr)), false);
        for _ in 0..3 {
            let resp = up.send(get("/")).await.unwrap();
            resp.into_body().collect().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }
}
