//! An HTTP/2 response freed at its deadline even when the client stalls it through flow
//! control alone (it never sends `WINDOW_UPDATE`).
//!
//! On HTTP/1 a client that stops reading stops the socket's writes, and the write is
//! bounded by the deadline (`downstream`). Over HTTP/2 the socket keeps flowing: hyper
//! takes a chunk of the body, then waits for the stream's send window without polling the
//! body again, so the body's own deadline timer ([`super::proxy::DeadlineBody`]) is never
//! looked at and the instance slot it holds would be kept for as long as the client likes.
//! [`bound`] puts the body in a cell that a timer empties at the deadline: the body (its
//! slot, its connection to the instance) is dropped then, and the stream is reset the next
//! time hyper polls it.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::debug;

use super::body::{BoxError, ProxyBody};
use super::proxy::CutAtDeadline;

/// Locked only inside a poll, a size hint or the timer's take, never across an await.
#[allow(clippy::disallowed_types)]
type Cell = std::sync::Mutex<Option<ProxyBody>>;

/// `body`, dropped at `until` if it has not ended by then.
pub(super) fn bound(body: ProxyBody, until: Instant) -> ProxyBody {
    Bounded {
        cell: Arc::new(Cell::new(Some(body))),
        until,
        timer: None,
    }
    .boxed()
}

struct Bounded {
    cell: Arc<Cell>,
    until: Instant,
    /// Started with the first chunk that does not end the body: only after a chunk can
    /// hyper wait for a window (before one, the body is polled and times itself).
    timer: Option<AbortHandle>,
}

fn lock(cell: &Cell) -> std::sync::MutexGuard<'_, Option<ProxyBody>> {
    cell.lock().unwrap_or_else(|p| p.into_inner())
}

/// Empties the cell at `until` (the body is dropped outside the lock).
async fn drop_at(cell: Weak<Cell>, until: Instant) {
    tokio::time::sleep_until(until).await;
    let Some(cell) = cell.upgrade() else { return };
    let body = lock(&cell).take();
    if body.is_some() {
        debug!("an HTTP/2 response the client did not take by the request deadline: dropped");
    }
    drop(body);
}

impl Body for Bounded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let (polled, ended) = {
            let mut cell = lock(&this.cell);
            let Some(body) = cell.as_mut() else {
                return Poll::Ready(Some(Err(Box::new(CutAtDeadline))));
            };
            let polled = Pin::new(&mut *body).poll_frame(cx);
            let ended = body.is_end_stream();
            (polled, ended)
        };
        if this.timer.is_none() && !ended && matches!(polled, Poll::Ready(Some(Ok(_)))) {
            let task = tokio::spawn(drop_at(Arc::downgrade(&this.cell), this.until));
            this.timer = Some(task.abort_handle());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.cell).as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.cell)
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}
