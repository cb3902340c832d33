//! The head timeout on connections handed to hyper: a request head whose first bytes have
//! arrived must be complete within [`super::downstream::HEAD_TIMEOUT`], or the connection
//! is closed (hyper, having no response to write, closes it without one).
//!
//! hyper's own `header_read_timeout` cannot be used: it starts when hyper begins to wait
//! for a head, so it also runs while a keep-alive connection is idle, and closed idle
//! connections at 30 s, which a client's pooled request could race (see
//! docs/architecture.md). This timer starts instead at the first bytes read while no
//! request is in flight, and stops when hyper hands a request to the service: an idle
//! connection has no timer. A request is in flight from its head until its response body
//! has been sent (or dropped), so request and response bodies, however slow, are never
//! timed. HTTP/2 connections, and connections upgraded (WebSocket, `CONNECT`), are not
//! timed at all.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::{BoxError, ProxyBody};

/// What the connection and its service share.
#[derive(Default)]
struct State {
    /// Requests whose head has arrived and whose response has not been sent.
    in_flight: AtomicUsize,
    /// The head already read (the one `downstream` handed over) has not reached the service
    /// yet: it is counted in `in_flight` from the start.
    first: AtomicBool,
    /// No more timing (HTTP/2, or upgraded).
    off: AtomicBool,
    /// Heads that reached the service so far.
    served: AtomicUsize,
}

/// The service's side: tells the connection when heads arrive and responses end.
#[derive(Clone)]
pub(super) struct Heads(Arc<State>);

/// A connection whose heads are timed.
pub(super) struct HeadTimed<T> {
    io: T,
    state: Arc<State>,
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// `served` when the timer started: once it has changed, the head timed has arrived.
    timed_from: usize,
}

/// Times the heads read from `io`, which starts with a complete HTTP/1 head (`http2`:
/// with the HTTP/2 preface, then nothing is timed).
pub(super) fn wrap<T>(io: T, http2: bool, limit: Duration) -> (HeadTimed<T>, Heads) {
    let state = Arc::new(State {
        in_flight: AtomicUsize::new(1),
        first: AtomicBool::new(true),
        off: AtomicBool::new(http2),
        served: AtomicUsize::new(0),
    });
    let heads = Heads(state.clone());
    let io = HeadTimed {
        io,
        state,
        limit,
        timer: None,
        timed_from: 0,
    };
    (io, heads)
}

/// A request in flight, until dropped.
pub(super) struct InFlight(Arc<State>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Heads {
    /// A head reached the service: its request is in flight until the value is dropped.
    pub(super) fn arrived(&self) -> InFlight {
        self.0.served.fetch_add(1, Ordering::Relaxed);
        if !self.0.first.swap(false, Ordering::Relaxed) {
            self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight(self.0.clone())
    }

    /// `resp` with `req` kept in flight until its body has been sent; an upgrade (101, or a
    /// 2xx to `CONNECT`) ends the timing for good.
    pub(super) fn respond(
        &self,
        connect: bool,
        resp: Response<ProxyBody>,
        req: InFlight,
    ) -> Response<ProxyBody> {
        let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || (connect && resp.status().is_success());
        if upgraded {
            self.0.off.store(true, Ordering::Relaxed);
        }
        resp.map(|inner| Guarded { inner, _req: req }.boxed())
    }
}

/// A response body that keeps its request in flight.
struct Guarded {
    inner: ProxyBody,
    _req: InFlight,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether hyper's error `e` is the head timer's.
pub(super) fn timed_out(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut && io.to_string() == TIMED_OUT)
}

const TIMED_OUT: &str = "request head not complete in time";

/// What a read means for the head timer (a plain decision, tested with a table).
#[derive(Debug, PartialEq, Eq)]
enum Timer {
    /// Leave it as it is.
    Keep,
    /// Start it (bytes of a head arrived, none running).
    Start,
    /// Stop it (a request is in flight, or timing is off).
    Stop,
}

fn decide(off: bool, in_flight: usize, running: bool, read_bytes: bool) -> Timer {
    if off || in_flight > 0 {
        return if running { Timer::Stop } else { Timer::Keep };
    }
    if read_bytes && !running {
        Timer::Start
    } else {
        Timer::Keep
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadTimed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let read_bytes = matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        let off = this.state.off.load(Ordering::Relaxed);
        let in_flight = this.state.in_flight.load(Ordering::Relaxed);
        let served = this.state.served.load(Ordering::Relaxed);
        if served != this.timed_from {
            // The head it was timing has arrived (even if its request is over already).
            this.timer = None;
        }
        match decide(off, in_flight, this.timer.is_some(), read_bytes) {
            Timer::Keep => {}
            Timer::Start => {
                this.timer = Some(Box::pin(tokio::time::sleep(this.limit)));
                this.timed_from = served;
            }
            Timer::Stop => this.timer = None,
        }
        if r.is_pending() {
            if let Some(t) = this.timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, TIMED_OUT)));
                }
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadTimed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// hyper serving HTTP/1.1 on connections whose heads are timed at `limit` (the first
    /// request's head is read before, as `downstream` does).
    async fn server(limit: Duration) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (io, heads) = wrap(s, false, limit);
                // Nothing is read yet here: the first head counts as a later one.
                heads.0.in_flight.store(0, Ordering::Relaxed);
                heads.0.first.store(false, Ordering::Relaxed);
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let heads = heads.clone();
                    let in_flight = heads.arrived();
                    async move {
                        let resp = Response::new(
                            Full::new(Bytes::from(req.uri().path().to_string()))
                                .map_err(|e| match e {})
                                .boxed(),
                        );
                        Ok::<_, std::convert::Infallible>(heads.respond(false, resp, in_flight))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), svc),
                );
            }
        });
        addr
    }

    async fn until(s: &mut TcpStream, want: &str) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains(want) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn a_late_head_closes_the_connection_an_idle_one_stays() {
        let limit = Duration::from_millis(400);
        let addr = server(limit).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Idle for longer than the limit before the first request, and between requests.
        tokio::time::sleep(limit * 2).await;
        s.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        until(&mut s, "/one").await;
        tokio::time::sleep(limit * 2).await;
        // A head in pieces, complete within the limit.
        s.write_all(b"GET /two HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(limit / 2).await;
        s.write_all(b"Host: a\r\n\r\n").await.unwrap();
        until(&mut s, "/two").await;
        // One that is not: closed, with no response, after the limit.
        s.write_all(b"GET /three HTTP/1.1\r\n").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(limit * 10, s.read_to_end(&mut rest))
            .await
            .expect("a late head did not close the connection")
            .unwrap();
        assert!(started.elapsed() >= limit, "{:?}", started.elapsed());
        assert!(rest.is_empty());
    }

    #[test]
    fn the_timer_runs_only_for_a_head_that_started_arriving() {
        use Timer::*;
        // (off, in flight, running, bytes read) -> what to do
        let table = [
            (false, 0, false, true, Start),
            (false, 0, false, false, Keep),
            (false, 0, true, true, Keep),
            (false, 0, true, false, Keep),
            (false, 1, true, true, Stop),
            (false, 1, false, true, Keep),
            (true, 0, false, true, Keep),
            (true, 0, true, false, Stop),
        ];
        for (off, in_flight, running, read, want) in table {
            assert_eq!(
                decide(off, in_flight, running, read),
                want,
                "off={off} in_flight={in_flight} running={running} read={read}"
            );
        }
    }
}
