//! The tunnel of an upgraded connection (WebSocket): once the instance answers 101, the
//! client's and the instance's connections are spliced until either closes, the request
//! deadline passes or the instance is marked out of memory (LIFE-9). The client
//! connection's place under the connection cap is held until then (hyper's connection
//! future ends at the upgrade).

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::debug;

use super::admission::Slot;
use super::body::ProxyBody;
use super::conn_limit::Permit;
use super::upstream::UpstreamBody;

/// Answers 101 to the client and splices the two upgraded connections until either side
/// closes or the request deadline passes (Cloud Run applies the request timeout to
/// WebSockets), or the instance is marked out of memory. The slot, and the client
/// connection's `place` under the connection cap, are held for the tunnel's life.
pub(super) fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    resp: &mut Response<UpstreamBody>,
    slot: Slot,
    deadline: Instant,
    place: Option<Permit>,
) -> Response<ProxyBody> {
    let upstream = hyper::upgrade::on(&mut *resp);
    tokio::spawn(async move {
        if let (Ok(c), Ok(u)) = tokio::join!(client, upstream) {
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
            tokio::select! {
                _ = copy => {}
                _ = tokio::time::sleep_until(deadline) => debug!("WebSocket closed at the request timeout"),
                _ = slot.endpoint.out_of_memory() => debug!("WebSocket closed: the instance ran out of memory"),
            }
        }
        drop(slot);
        drop(place);
    });
    let body = http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let mut out = Response::new(body);
    *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = std::mem::take(resp.headers_mut());
    out
}
