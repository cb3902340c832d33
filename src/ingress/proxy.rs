//! Proxying one request: route it ([`super::route`]: the lane of its service on this
//! thread), check its headers, take a slot ([`super::admission`]), send it to the instance, and turn the instance's answer, or its failure, into the response for the
//! client, cut at the request deadline ([`DeadlineBody`]). (knative's queue `timeout.go`
//! plays the deadline's part there.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Either};
use hyper::body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tracing::{info, warn, Instrument};

use super::admission::{acquire, Slot};
use super::body::{self, BoxError, ClientBody, ProxyBody};
use super::conn_limit::Permit;
use super::endpoint::{Death, Endpoint};
use super::headers;
use super::lane::Lane;
use super::raw;
use super::refusal::Refusal;
use super::tunnel::tunnel;
use super::upstream::{UpstreamBody, UpstreamError};
use super::worker::Shared;

/// A request as the data path gets it: typed (hyper's: HTTP/2, bodies, upgrades), or as
/// read by `downstream.rs` (a bodiless HTTP/1.x request, forwarded as lines when the instance
/// speaks HTTP/1.1: see [`raw`]).
pub enum ClientRequest {
    Typed(Request<ClientBody>),
    Raw(raw::RawRequest),
}

impl ClientRequest {
    fn method(&self) -> &http::Method {
        match self {
            ClientRequest::Typed(r) => r.method(),
            ClientRequest::Raw(r) => &r.method,
        }
    }

    /// The host the request names: the URI's authority (HTTP/2's `:authority`, an
    /// absolute-form target), else the `Host` header.
    fn authority(&self) -> Option<&[u8]> {
        match self {
            ClientRequest::Typed(r) => r
                .uri()
                .authority()
                .map(|a| a.as_str().as_bytes())
                .or_else(|| r.headers().get(http::header::HOST).map(|h| h.as_bytes())),
            ClientRequest::Raw(r) => r.head.get(b"host"),
        }
    }

    /// The first value of header `name` (lower case).
    fn header(&self, name: &'static str) -> Option<&[u8]> {
        match self {
            ClientRequest::Typed(r) => r.headers().get(name).map(|h| h.as_bytes()),
            ClientRequest::Raw(r) => r.head.get(name.as_bytes()),
        }
    }

    /// The request's trace (`X-Cloud-Trace-Context` or `traceparent`), for its log lines.
    fn trace(&self) -> Option<(String, Option<String>)> {
        crate::log_format::trace_context(
            self.header("x-cloud-trace-context"),
            self.header("traceparent"),
        )
    }

    /// The request target's path and query (for logs).
    fn target(&self) -> Option<http::uri::PathAndQuery> {
        match self {
            ClientRequest::Typed(r) => r.uri().path_and_query().cloned(),
            ClientRequest::Raw(r) => Some(r.target.clone()),
        }
    }
}

/// The response for a client: typed, or (for a raw request) the instance's head as read.
pub enum Answer {
    Typed(Response<ProxyBody>),
    Raw(raw::RawResponse, DeadlineBody),
}

impl Answer {
    fn status(&self) -> http::StatusCode {
        match self {
            Answer::Typed(r) => r.status(),
            Answer::Raw(r, _) => r.status,
        }
    }

    /// The same response, typed (for hyper).
    pub(super) fn into_typed(self) -> Response<ProxyBody> {
        match self {
            Answer::Typed(r) => r,
            Answer::Raw(r, body) => {
                let mut resp = Response::new(body.boxed());
                *resp.status_mut() = r.status;
                // The fields were parsed by httparse, so they convert; should one not, the
                // response goes without it rather than fail.
                *resp.headers_mut() = r.head.to_header_map().unwrap_or_default();
                resp
            }
        }
    }
}

/// How long a refusal's response may take to write to a client that reads slowly.
pub(super) const REFUSAL_WRITE: Duration = Duration::from_secs(10);

/// Proxies one request on the lane of its route; a refusal becomes its response here
/// (logged and counted), a request no route takes included (404). With the response, the
/// time by which it must have been written to the client: the request deadline for the
/// instance's response (a client that stops reading must not keep the instance's slot past
/// it), [`REFUSAL_WRITE`] from now for a refusal.
pub(super) async fn handle(
    shared: &Shared,
    client: &headers::Client,
    req: ClientRequest,
) -> (Answer, Instant) {
    let refused = |a| (a, Instant::now() + REFUSAL_WRITE);
    let received = Instant::now();
    // (A raw request's were checked as its head was read.)
    if let ClientRequest::Typed(r) = &req {
        let hosts = r.headers().get_all(http::header::HOST).iter().count();
        if let Err(why) = headers::host_rule(r.version() == http::Version::HTTP_11, hosts) {
            let refusal = Refusal::BadRequest(why.into());
            let service = shared.count_refused_head(refusal.reason());
            info!(%service, method = %req.method(), reason = refusal.reason(), "refused: {refusal}");
            return refused(Answer::Typed(refusal.response()));
        }
    }
    let lane = match shared.lane(|| req.authority()) {
        Ok(lane) => lane,
        Err(unrouted) => {
            let refusal = Refusal::UnknownHost(unrouted);
            let path = req.target();
            let path = path.as_ref().map_or("/", |t| t.path());
            info!(service = "", method = %req.method(), path, reason = refusal.reason(), "refused: {refusal}");
            shared.count_unrouted(refusal.reason());
            return refused(Answer::Typed(refusal.response()));
        }
    };
    let deadline = received + lane.cfg().timeout;
    let target = req.target();
    let path = target.as_ref().map_or("/", |t| t.path());
    // A debug-level span: at the default level it costs nothing per request; refusals are
    // logged at info with the request's method and path.
    let span = tracing::debug_span!("request", method = %req.method(), path = %path);
    let method = req.method().clone();
    let trace = req.trace();
    let result = forward(&lane, client, req, deadline).instrument(span).await;
    let (resp, until) = match result {
        Ok(r) => (r, deadline),
        Err(refusal) => {
            let resp = refusal.response();
            let (trace, span_id) = trace
                .as_ref()
                .map_or((None, None), |(t, s)| (Some(t.as_str()), s.as_deref()));
            info!(service = %lane.cfg().service, %method, path, status = resp.status().as_u16(), reason = refusal.reason(), trace, span_id, "refused: {}", refusal.with_causes());
            lane.count_refusal(refusal.reason());
            refused(Answer::Typed(resp))
        }
    };
    let class = (resp.status().as_u16() / 100).min(5) as usize;
    lane.record(class, received.elapsed());
    (resp, until)
}

async fn forward(
    lane: &Lane,
    client: &headers::Client,
    req: ClientRequest,
    deadline: Instant,
) -> Result<Answer, Refusal> {
    match &req {
        ClientRequest::Typed(r) => headers::check(r.headers()),
        ClientRequest::Raw(r) => r.head.check(),
    }
    .map_err(Refusal::BadHeader)?;
    // A WebSocket (HTTP/1.1 Upgrade) passes through as a tunnel once the instance agrees.
    // (A raw request has none: `downstream` hands upgrades to hyper.)
    let upgrade = match &req {
        ClientRequest::Typed(r) if r.version() == http::Version::HTTP_11 => {
            headers::upgrade_protocol(r.headers())
        }
        _ => None,
    };
    // One timer for the whole request: the wait for a slot, the wait for the response
    // headers, and the body (registering a timer per phase costs on every request).
    // A body over the service's limit: refused before a slot is taken when its length says
    // so, else cut as it passes the limit (see `body::Limited`).
    let mut tripped = None;
    let mut req = req;
    if let (ClientRequest::Typed(r), Some(limit)) = (&mut req, lane.cfg().max_body) {
        if let Either::Right(body) = r.body_mut() {
            if body::over_limit_up_front(&body.size_hint(), Some(limit)) {
                return Err(Refusal::BodyTooLarge(limit));
            }
            tripped = Some((body.limit(limit), limit));
        }
    }
    let mut timer = Box::pin(tokio::time::sleep_until(deadline));
    let slot = tokio::select! {
        biased;
        r = acquire(lane, deadline) => r?,
        _ = &mut timer => return Err(Refusal::Timeout),
    };
    let mut req = match req {
        ClientRequest::Raw(raw) if !slot.endpoint.http2 => {
            return forward_raw(client, raw, slot, timer, deadline).await;
        }
        ClientRequest::Raw(raw) => raw.into_typed().map_err(|e| Refusal::Malformed(e.into()))?,
        ClientRequest::Typed(r) => r,
    };
    let authority = req.uri().authority().cloned();
    // HTTP/1.1 to the instance takes the origin form (`/path?query`), which is what an
    // HTTP/1.1 client sends (left as is); HTTP/2 needs the scheme and authority as
    // pseudo-headers.
    let origin_form = req.uri().scheme().is_none() && authority.is_none();
    if slot.endpoint.http2 || !origin_form {
        let mut parts = http::uri::Parts::default();
        if slot.endpoint.http2 {
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(slot.endpoint.authority.clone());
        }
        parts.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|_| Refusal::BadRequest("bad request target".into()))?;
    }
    *req.version_mut() = if slot.endpoint.http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    // (Cheap clones: both share the request's bytes.)
    let host_header = req.headers().get(http::header::HOST).cloned();
    strip_and_add(
        req.headers_mut(),
        client,
        authority
            .as_ref()
            .map(|a| a.as_str())
            .or_else(|| host_header.as_ref().and_then(|h| h.to_str().ok())),
    );
    if !req.headers().contains_key(http::header::HOST) {
        if let Ok(v) = http::HeaderValue::from_str(slot.endpoint.authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let client_upgrade = match upgrade {
        Some(proto) if !slot.endpoint.http2 => {
            req.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            req.headers_mut().insert(http::header::UPGRADE, proto);
            let place = req.extensions_mut().remove::<Permit>();
            Some((hyper::upgrade::on(&mut req), place))
        }
        _ => None,
    };
    let endpoint = slot.endpoint.clone();
    let call = endpoint.upstream().send(req);
    let cut = tripped.as_ref().map(|(t, limit)| (t.as_ref(), *limit));
    let mut resp = answer(call, &mut timer, &endpoint, deadline, cut).await?;
    if let Some((upgrade, place)) = client_upgrade {
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Answer::Typed(tunnel(
                upgrade, &mut resp, slot, deadline, place,
            )));
        }
    }
    headers::strip_hop_by_hop(resp.headers_mut());
    let dropped = headers::drop_invalid(resp.headers_mut());
    warn_dropped(&endpoint, &dropped);
    let (parts, body) = resp.into_parts();
    // The body keeps the slot until it ends, and is cut at the request deadline.
    let body = DeadlineBody::new(body, timer, slot);
    Ok(Answer::Typed(Response::from_parts(parts, body.boxed())))
}

/// [`forward`] for a raw request to an HTTP/1.1 instance: its lines go out and the
/// response's come back with no `HeaderMap` in between (see [`raw`]).
async fn forward_raw(
    client: &headers::Client,
    mut req: raw::RawRequest,
    slot: Slot,
    mut timer: Pin<Box<Sleep>>,
    deadline: Instant,
) -> Result<Answer, Refusal> {
    let endpoint = slot.endpoint.clone();
    let head = req.encode(client, endpoint.authority.as_str());
    let call = endpoint.upstream().send_head(
        &head,
        req.method.is_idempotent(),
        req.method == http::Method::HEAD,
    );
    let (mut resp, body) = answer(call, &mut timer, &endpoint, deadline, None).await?;
    resp.head.strip_hop_by_hop();
    let dropped = resp.head.drop_invalid();
    warn_dropped(&endpoint, &dropped);
    let body = DeadlineBody::new(UpstreamBody::Left(body), timer, slot);
    Ok(Answer::Raw(resp, body))
}

/// The instance's answer to `call`, or the refusal when the request deadline (`timer`)
/// comes first, the instance is marked out of memory (500 at once, LIFE-9: the kill may
/// have hit a child while the main process keeps the request), or the instance does not
/// answer. A broken connection may be the instance dying: the control path gets a moment
/// to say why (an OOM kill turns into 500 there too). `cut`: the flag [`body::Limited`]
/// sets, and its limit: a failure after it is set is the body going past the limit (413).
async fn answer<T, E: Into<UpstreamError>>(
    call: impl Future<Output = Result<T, E>>,
    timer: &mut Pin<Box<Sleep>>,
    endpoint: &Endpoint,
    deadline: Instant,
    cut: Option<(&AtomicBool, u64)>,
) -> Result<T, Refusal> {
    let e = tokio::select! {
        biased;
        r = call => match r {
            Ok(r) => return Ok(r),
            Err(e) => e.into(),
        },
        _ = timer => return Err(Refusal::Timeout),
        _ = endpoint.out_of_memory() => return Err(Refusal::OutOfMemory),
    };
    if let Some((tripped, limit)) = cut {
        if tripped.load(Ordering::Acquire) {
            return Err(Refusal::BodyTooLarge(limit));
        }
    }
    let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
    Err(match endpoint.death_by(until).await {
        Some(Death::OutOfMemory) => Refusal::OutOfMemory,
        Some(Death::Exited(how)) => Refusal::Exited(how),
        None => Refusal::Upstream(e),
    })
}

fn warn_dropped(endpoint: &Endpoint, dropped: &[String]) {
    if !dropped.is_empty() {
        warn!(instance = %endpoint.instance, "dropped response headers breaking HDR-1/HDR-2: {}", dropped.join(", "));
    }
}

pub(super) fn strip_and_add(
    h: &mut http::HeaderMap,
    client: &headers::Client,
    authority: Option<&str>,
) {
    headers::strip_hop_by_hop(h);
    headers::add_forwarding(h, client, authority);
}

/// A response body that ends with an error at the request deadline, or when the instance
/// is marked out of memory (LIFE-9) (the connection is then closed: a response whose
/// headers were sent cannot become a 504 or a 500), and holds the instance slot until it
/// is done.
pub struct DeadlineBody {
    inner: UpstreamBody,
    sleep: Pin<Box<Sleep>>,
    /// Resolves when the instance is marked out of memory; made the first time the body
    /// has to wait for the instance, so that a response read in one go costs nothing more.
    oom: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
    slot: Slot,
}

impl DeadlineBody {
    fn new(inner: UpstreamBody, sleep: Pin<Box<Sleep>>, slot: Slot) -> Self {
        DeadlineBody {
            inner,
            sleep,
            oom: None,
            slot,
        }
    }
}

/// The request deadline passed while the response was streaming.
#[derive(Debug, thiserror::Error)]
#[error("request timeout reached while streaming the response")]
pub struct CutAtDeadline;

/// The instance was marked out of memory while the response was streaming (LIFE-9).
#[derive(Debug, thiserror::Error)]
#[error("the instance ran out of memory while streaming the response")]
pub struct CutOutOfMemory;

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Once the body has waited, the out-of-memory mark comes first: a main process
        // still streaming after its child was killed is cut too.
        if let Some(oom) = self.oom.as_mut() {
            if oom.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(CutOutOfMemory))));
            }
        }
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r);
        }
        if self.oom.is_none() {
            let endpoint = self.slot.endpoint.clone();
            let mut oom: Pin<Box<dyn Future<Output = ()> + Send + Sync>> =
                Box::pin(async move { endpoint.out_of_memory().await });
            if oom.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(CutOutOfMemory))));
            }
            self.oom = Some(oom);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(CutAtDeadline)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
