//! The one response body type used by every route.
//!
//! * `Full`: a complete buffer (JSON reports, errors);
//! * `Repeat`: `N` filler bytes produced 64 KiB at a time from a static
//!   buffer, so `?bytes=` never holds the whole body in memory; its exact
//!   size is advertised so HTTP/1.1 sends `content-length`;
//! * `Channel`: chunks pushed by a producer task (`sse`, `flush_then_sleep`,
//!   `echo`), sent as they arrive.
//!
//! The body also carries the request's [`InFlight`] marker, released when
//! the body ends or is dropped, so streamed responses count as "in flight"
//! until their last byte is written.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::state::InFlight;

/// Chunk size for `Repeat` bodies and file writes.
pub const CHUNK: usize = 64 * 1024;
static FILL: [u8; CHUNK] = [b'x'; CHUNK];

/// Producer side of a `Channel` body. Sending `Err` aborts the response.
pub type ChunkSender = mpsc::Sender<io::Result<Bytes>>;

enum Kind {
    Full(Option<Bytes>),
    Repeat {
        remaining: u64,
    },
    Channel(mpsc::Receiver<io::Result<Bytes>>),
    /// One data frame, then trailers (a unary gRPC response).
    WithTrailers(Option<Bytes>, Option<hyper::HeaderMap>),
}

pub struct ProbeBody {
    kind: Kind,
    guard: Option<InFlight>,
}

impl ProbeBody {
    pub fn empty() -> ProbeBody {
        ProbeBody::full(Bytes::new())
    }

    pub fn full(data: impl Into<Bytes>) -> ProbeBody {
        ProbeBody {
            kind: Kind::Full(Some(data.into())),
            guard: None,
        }
    }

    pub fn repeat(len: u64) -> ProbeBody {
        ProbeBody {
            kind: Kind::Repeat { remaining: len },
            guard: None,
        }
    }

    /// A streamed body plus the sender that feeds it. The body ends when
    /// every sender is dropped.
    pub fn channel(capacity: usize) -> (ChunkSender, ProbeBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            tx,
            ProbeBody {
                kind: Kind::Channel(rx),
                guard: None,
            },
        )
    }

    /// `data` followed by `trailers`.
    pub fn with_trailers(data: impl Into<Bytes>, trailers: hyper::HeaderMap) -> ProbeBody {
        ProbeBody {
            kind: Kind::WithTrailers(Some(data.into()), Some(trailers)),
            guard: None,
        }
    }

    /// Ties the request's in-flight marker to this body's lifetime.
    pub fn attach(&mut self, guard: InFlight) {
        self.guard = Some(guard);
    }
}

impl Body for ProbeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let res = match &mut this.kind {
            Kind::Full(data) => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
            Kind::Repeat { remaining } => {
                if *remaining == 0 {
                    Poll::Ready(None)
                } else {
                    let n = (*remaining).min(CHUNK as u64) as usize;
                    *remaining -= n as u64;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILL[..n])))))
                }
            }
            Kind::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
            Kind::WithTrailers(data, trailers) => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        };
        if let Poll::Ready(None) = res {
            this.guard = None;
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(d) => d.as_ref().is_none_or(|d| d.is_empty()),
            Kind::Repeat { remaining } => *remaining == 0,
            Kind::Channel(_) => false,
            Kind::WithTrailers(d, t) => d.is_none() && t.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Repeat { remaining } => SizeHint::with_exact(*remaining),
            Kind::Channel(_) | Kind::WithTrailers(..) => SizeHint::default(),
        }
    }
}

/// Next frame of a request body (`None` at the end).
pub async fn next_frame(body: &mut Incoming) -> Option<Result<Frame<Bytes>, hyper::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut b: ProbeBody) -> (usize, usize) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (mut total, mut frames) = (0, 0);
        loop {
            match Pin::new(&mut b).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => {
                    frames += 1;
                    total += f.into_data().map(|d| d.len()).unwrap_or(0);
                }
                Poll::Ready(None) => return (total, frames),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn repeat_is_chunked_and_exact() {
        let b = ProbeBody::repeat(CHUNK as u64 * 2 + 5);
        assert_eq!(b.size_hint().exact(), Some(CHUNK as u64 * 2 + 5));
        assert_eq!(drain(b), (CHUNK * 2 + 5, 3));
        assert!(ProbeBody::repeat(0).is_end_stream());
    }

    #[test]
    fn full_body() {
        let b = ProbeBody::full("hello");
        assert_eq!(b.size_hint().exact(), Some(5));
        assert_eq!(drain(b), (5, 1));
        assert!(ProbeBody::empty().is_end_stream());
    }

    #[test]
    fn guard_released_at_end() {
        let before = crate::state::STATE.concurrency().in_flight;
        let mut b = ProbeBody::full("x");
        b.attach(InFlight::enter());
        drain(b);
        // Other tests may hold markers concurrently; ours must be gone.
        assert!(crate::state::STATE.concurrency().in_flight <= before + 1);
    }
}
