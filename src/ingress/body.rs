//! The body types the data path passes along: the client's request body, and the response
//! body a client gets.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Body errors end the response abruptly (the connection is closed, never left hanging).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a response to a client.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A client's request body: none (`Left`: a request read by `downstream.rs`), or
/// hyper's (`Right`), cut at the service's request body limit.
pub type ClientBody = Either<Empty<Bytes>, Limited>;

/// A request body from hyper that ends with an error instead of passing on more than its
/// limit (Cloud Run's 32 MiB for an HTTP/1 container): the frame that would cross it is not
/// sent, so the instance never sees a complete request, and `tripped` tells the data path
/// to answer 413.
pub struct Limited {
    inner: Incoming,
    /// Bytes still allowed, and the flag set when a frame would go past them; `None`: no
    /// limit.
    left: Option<(u64, Arc<AtomicBool>)>,
}

/// The client sent more than the request body limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the service's limit")]
pub struct TooLarge;

impl Limited {
    pub fn new(inner: Incoming) -> Self {
        Limited { inner, left: None }
    }

    /// Limits the body to `limit` bytes; the flag returned is set once it goes past them.
    pub fn limit(&mut self, limit: u64) -> Arc<AtomicBool> {
        let tripped = Arc::new(AtomicBool::new(false));
        self.left = Some((limit, tripped.clone()));
        tripped
    }
}

/// Whether a request body with `size` (what is known of it) is over `limit` before a
/// byte of it is read: its `Content-Length` says so.
pub fn over_limit_up_front(size: &SizeHint, limit: Option<u64>) -> bool {
    limit.is_some_and(|l| size.lower() > l)
}

impl Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let (Some(data), Some((left, tripped))) = (frame.data_ref(), this.left.as_mut()) {
            let n = data.len() as u64;
            if n > *left {
                tripped.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Box::new(TooLarge))));
            }
            *left -= n;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_over_the_limit_are_refused_up_front_when_their_length_says_so() {
        let exact = |n| SizeHint::with_exact(n);
        // (what is known of the body, limit) -> refused before reading
        let table = [
            (exact(10), Some(10), false),
            (exact(11), Some(10), true),
            (SizeHint::new(), Some(10), false),
            (exact(u64::MAX), None, false),
            (exact(0), Some(0), false),
        ];
        for (size, limit, want) in table {
            assert_eq!(
                over_limit_up_front(&size, limit),
                want,
                "{size:?} {limit:?}"
            );
        }
    }
}
