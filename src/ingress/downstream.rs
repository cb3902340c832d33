//! The client (downstream) side of an ingress connection.
//!
//! Every connection starts here. Request heads are read and parsed with `httparse`; an
//! HTTP/1.1 request without a body (nearly every GET: what a service mostly gets) is served
//! right here, by the connection's own task: its head stays the bytes read, with the place of
//! each field ([`super::raw`]), and the response is written back in as few writes as the
//! body allows (head and a small body in one). Anything else hands the connection, with the
//! bytes already read, to hyper for the rest of its life: HTTP/2 (the prior-knowledge
//! preface), requests with a body (`Content-Length`, `Transfer-Encoding`), `Expect`,
//! upgrades (WebSockets), `CONNECT` and targets not in origin form. Measured: hyper's server
//! was a third of runlet's instructions per request (callgrind), this path a small part of
//! that.
//!
//! The client's socket is read while its request is in flight and while the response
//! streams: a client that goes away (end of stream with nothing pipelined) abandons its
//! request, which frees its slot, as hyper does. One that half-closes after pipelining gets
//! the requests it sent answered, then the connection closes.
//!
//! Response framing: no body for HEAD, 1xx, 204 and 304; `Content-Length` when the body's
//! size is known, else `Transfer-Encoding: chunked`. A body that fails (the instance broke
//! off, or the request deadline cut it) closes the connection: a response whose head was
//! sent cannot become an error status.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode};
use http_body_util::Either;
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::body::Limited;
use super::conn_limit::Permit;
use super::h2_deadline;
use super::head_timer::{self, HeadTimed, Heads};
use super::headers;
use super::proxy::{handle, Answer, ClientRequest, REFUSAL_WRITE};
use super::raw::{self, push_field, RawHead, RawRequest};
use super::refusal::Refusal;
use super::upstream_h1::{MAX_HEAD, MAX_HEADERS};
use super::worker::Shared;

/// Response bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// Data frames at least this large are written from their own buffer, not copied.
const COPY_BELOW: usize = 16 * 1024;
/// The HTTP/2 connection preface (prior knowledge).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the connection should do with a parsed head.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ServedBy {
    /// Served here: `close` when the connection ends after it (asked by the client, or an
    /// HTTP/1.0 client that did not ask to keep it); `v10` for an HTTP/1.0 client.
    Here { close: bool, v10: bool },
    /// Everything else: hyper serves the connection from this request on.
    Hyper,
}

/// Which requests this module serves itself (see the module comment).
pub(super) fn served_by(req: &httparse::Request<'_, '_>) -> ServedBy {
    let v10 = req.version == Some(0);
    // CONNECT, and targets not in origin form (absolute form, `*`), are left to hyper.
    if req.method == Some("CONNECT") || !req.path.is_some_and(|p| p.starts_with('/')) {
        return ServedBy::Hyper;
    }
    let (mut close, mut keep_alive) = (false, false);
    for h in req.headers.iter() {
        let n = h.name.as_bytes();
        if n.eq_ignore_ascii_case(b"content-length") {
            // A zero length is no body; anything else (or a malformed one) is hyper's.
            if h.value != b"0" {
                return ServedBy::Hyper;
            }
        } else if n.eq_ignore_ascii_case(b"transfer-encoding")
            || n.eq_ignore_ascii_case(b"upgrade")
            || n.eq_ignore_ascii_case(b"expect")
        {
            return ServedBy::Hyper;
        } else if n.eq_ignore_ascii_case(b"connection") {
            for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    ServedBy::Here {
        close: close || (v10 && !keep_alive),
        v10,
    }
}

/// A head read from the client, or why none was.
// Made and taken apart once per request: boxing the request would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Head {
    /// A request to serve here, with [`ServedBy::Here`]'s `close`.
    Request(RawRequest, bool),
    Hyper,
    Refused(Refusal),
}

/// Parses one request head at the start of `buf`, taking it off the buffer when it is
/// served here. `None`: more bytes are needed.
pub(super) fn parse(buf: &mut BytesMut) -> Option<Head> {
    if buf.len() < PREFACE.len() && PREFACE.starts_with(buf) {
        return None;
    }
    if buf.starts_with(PREFACE) {
        return Some(Head::Hyper);
    }
    // Uninitialised slots: zeroing 100 of them cost more than parsing a typical head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Some(Head::Refused(Refusal::HeadTooLarge));
        }
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => return Some(Head::Refused(Refusal::HeadTooLarge)),
        Err(e) => return Some(Head::Refused(Refusal::Malformed(e.to_string()))),
    };
    let (close, v10) = match served_by(&req) {
        ServedBy::Hyper => return Some(Head::Hyper),
        ServedBy::Here { close, v10 } => (close, v10),
    };
    let hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if let Err(why) = headers::host_rule(!v10, hosts) {
        return Some(Head::Refused(Refusal::BadRequest(why.into())));
    }
    let Ok(method) = Method::from_bytes(req.method.unwrap_or("GET").as_bytes()) else {
        return Some(Head::Refused(Refusal::Malformed("invalid method".into())));
    };
    let base = buf.as_ptr();
    let path = req.path.unwrap_or("/");
    let path_at =
        path.as_ptr() as usize - base as usize..path.as_ptr() as usize - base as usize + path.len();
    // The fields stay where they are in the head (see `raw`).
    let fields = raw::fields_of(base, req.headers);
    let head = buf.split_to(n).freeze();
    let fields = RawHead::new(head.clone(), fields);
    let Ok(target) = PathAndQuery::from_maybe_shared(head.slice(path_at)) else {
        return Some(Head::Refused(Refusal::Malformed(
            "invalid request target".into(),
        )));
    };
    let req = RawRequest {
        method,
        target,
        v10,
        head: fields,
    };
    Some(Head::Request(req, close))
}

/// Serves one client connection (see the module comment) until the client closes it, an
/// error ends it, or `stopper` stops it while it is idle.
pub(super) async fn serve_conn(
    mut io: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    client: Arc<headers::Client>,
    stopper: Arc<Stopper>,
    watcher: hyper_util::server::graceful::Watcher,
    permit: Permit,
) {
    let mut stop = stopper.watch();
    let mut inbox = Inbox {
        buf: BytesMut::with_capacity(IN_BUF),
        eof: false,
    };
    let mut out = Vec::with_capacity(OUT_BUF);
    loop {
        // One head, reading as needed; an idle connection closes at shutdown (a request
        // already sent is read first). A head that comes in pieces must be complete within
        // HEAD_TIMEOUT of the first: its timer is armed only then, so a head read whole
        // (nearly all) costs none.
        let mut late: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let head = loop {
            // Empty lines before a request line are ignored (RFC 9112 §2.2): they must not
            // make an idle connection look busy, nor arm the head timer.
            let blank = inbox
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                inbox.buf.advance(blank);
            }
            if !inbox.buf.is_empty() {
                if let Some(h) = parse(&mut inbox.buf) {
                    break h;
                }
                if late.is_none() {
                    late = Some(Box::pin(tokio::time::sleep(HEAD_TIMEOUT)));
                }
            }
            if inbox.eof {
                return;
            }
            if inbox.buf.capacity() - inbox.buf.len() < 4096 {
                inbox.buf.reserve(IN_BUF);
            }
            let idle = inbox.buf.is_empty();
            tokio::select! {
                biased;
                r = tokio_util::io::read_buf(&mut io, &mut inbox.buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = stop.stopped(), if idle => return,
                _ = async { if let Some(t) = late.as_mut() { t.await } }, if late.is_some() => {
                    break Head::Refused(Refusal::HeadTimeout);
                }
            }
        };
        let (req, close) = match head {
            Head::Request(req, close) => (req, close),
            Head::Hyper => {
                // hyper's graceful watcher tells this connection of a shutdown from now on.
                drop(stop);
                let http2 = inbox.buf.starts_with(PREFACE);
                let bound = Arc::new(WriteBound::new());
                let io = Rewind {
                    prefix: inbox.buf.freeze(),
                    io,
                    bound: bound.clone(),
                    stall: None,
                };
                let io = head_timer::wrap(io, http2, HEAD_TIMEOUT);
                return serve_with_hyper(io, bound, peer, shared, client, watcher, permit).await;
            }
            Head::Refused(refusal) => {
                let service = shared.count_refused_head(refusal.reason());
                info!(%service, %peer, reason = refusal.reason(), "refused: {refusal}");
                let resp = Answer::Typed(refusal.response());
                let write =
                    write_response(&mut io, &mut inbox, &mut out, resp, false, false, false);
                let _ = tokio::time::timeout(REFUSAL_WRITE, write).await;
                return;
            }
        };
        let head_request = req.method == Method::HEAD;
        let v10 = req.v10;
        let call = handle(&shared, &client, ClientRequest::Raw(req));
        tokio::pin!(call);
        let (resp, until) = loop {
            tokio::select! {
                biased;
                resp = &mut call => break resp,
                gone = inbox.watch(&mut io), if inbox.watching() => if gone { return },
            }
        };
        // At shutdown the connection ends after the response in flight.
        let keep = !close && !stopper.is_stopping();
        // A client that stops reading does not keep the response (and the instance's slot)
        // past the request deadline: the write is dropped then, and the connection closed.
        let write = write_response(&mut io, &mut inbox, &mut out, resp, head_request, keep, v10);
        match tokio::time::timeout_at(until, write).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => return,
            Err(_) => {
                debug!(%peer, "the client did not take its response by the request deadline: closing");
                return;
            }
        }
        // A large head or body leaves large buffers: an idle connection does not keep them.
        if out.capacity() > 4 * OUT_BUF {
            out = Vec::with_capacity(OUT_BUF);
        }
        if inbox.buf.is_empty() && inbox.buf.capacity() > 4 * IN_BUF {
            inbox.buf = BytesMut::with_capacity(IN_BUF);
        }
    }
}

/// Serves the rest of a connection with hyper (HTTP/2, requests with a body, upgrades).
async fn serve_with_hyper(
    (io, heads): (HeadTimed<Rewind>, Heads),
    bound: Arc<WriteBound>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    client: Arc<headers::Client>,
    watcher: hyper_util::server::graceful::Watcher,
    permit: Permit,
) {
    let for_requests = shared.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let (shared, client) = (for_requests.clone(), client.clone());
        let (heads, bound) = (heads.clone(), bound.clone());
        let in_flight = heads.arrived();
        // A request that may become a tunnel carries the connection's place under the
        // cap: hyper's connection future ends at the upgrade, the tunnel lives on.
        if req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(permit.clone());
        }
        async move {
            let connect = req.method() == Method::CONNECT;
            let http2 = req.version() == http::Version::HTTP_2;
            let req = ClientRequest::Typed(req.map(|b| Either::Right(Limited::new(b))));
            let (answer, until) = handle(&shared, &client, req).await;
            bound.extend_to(until);
            let mut resp = answer.into_typed();
            if http2 {
                // An HTTP/2 client can stall a response through flow control alone, and
                // hyper then polls nothing of it: freed at `until` all the same.
                resp = resp.map(|body| h2_deadline::bound(body, until));
            }
            Ok::<_, Infallible>(heads.respond(connect, resp, in_flight))
        }
    });
    let conn = shared
        .hyper
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        match e.downcast_ref::<hyper::Error>() {
            // hyper answered 400 (or 431/414) itself, before any request reached runlet's
            // handler: log and count it like every other refusal.
            Some(h) if h.is_parse() || h.is_parse_too_large() => {
                let service = shared.count_refused_head("malformed");
                info!(%service, %peer, reason = "malformed", "refused: malformed request: {e}");
            }
            // The head timer closed it (no response: hyper has none to write).
            Some(h) if head_timer::timed_out(h) => {
                let service = shared.count_refused_head("head_timeout");
                info!(%service, %peer, reason = "head_timeout", "closed: {e}");
            }
            _ => debug!("connection from {peer}: {e}"),
        }
    }
}

/// Tells one ingress thread's connections that the ingress is stopping (idle ones then
/// close). A connection registers its waker once, not per request, and checks a flag:
/// waiting on the shutdown `watch` instead cost every request a read lock on its value and
/// a registration in its waiter list, both shared by every thread's connections.
#[derive(Default)]
pub(super) struct Stopper {
    stopping: AtomicBool,
    wakers: WakerList,
}

/// Held to register or wake, never across an await.
#[allow(clippy::disallowed_types)]
type WakerList = std::sync::Mutex<Wakers>;

#[derive(Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Stopper {
    fn wakers(&self) -> std::sync::MutexGuard<'_, Wakers> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, connections close once idle; wakes those waiting.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for w in self.wakers().slots.iter().flatten() {
            w.wake_by_ref();
        }
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A connection's registration, for its life.
    fn watch(self: &Arc<Self>) -> StopWatch {
        let mut w = self.wakers();
        let slot = w.free.pop().unwrap_or_else(|| {
            w.slots.push(None);
            w.slots.len() - 1
        });
        StopWatch {
            stopper: self.clone(),
            slot,
            waker: None,
        }
    }
}

struct StopWatch {
    stopper: Arc<Stopper>,
    slot: usize,
    /// The waker registered (a task's waker stays the same from poll to poll).
    waker: Option<Waker>,
}

impl StopWatch {
    /// Resolves once the ingress is stopping.
    fn stopped(&mut self) -> impl std::future::Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.stopper.is_stopping() {
                return Poll::Ready(());
            }
            if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                let w = cx.waker().clone();
                self.stopper.wakers().slots[self.slot] = Some(w.clone());
                self.waker = Some(w);
            }
            // `stop` sets the flag before it wakes: looked at again once registered.
            if self.stopper.is_stopping() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        let mut w = self.stopper.wakers();
        w.slots[self.slot] = None;
        w.free.push(self.slot);
    }
}

/// How long a request head may take to arrive once its first bytes have (then 408). (On a
/// connection handed to hyper there is none: hyper's `header_read_timeout` also runs while
/// the connection is idle, so it would close idle keep-alive connections.)
pub(super) const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Buffer sizes an idle connection keeps.
const IN_BUF: usize = 8 * 1024;
const OUT_BUF: usize = 4 * 1024;

/// What the client sent that was not used yet, and whether it has stopped sending.
struct Inbox {
    buf: BytesMut,
    eof: bool,
}

impl Inbox {
    /// Whether to read the client's socket while a request is in flight.
    fn watching(&self) -> bool {
        !self.eof && self.buf.len() < MAX_HEAD
    }

    /// Reads what the client sends while its request is in flight (a pipelined request
    /// waits in the buffer). True when the client is gone: an error, or the end of the
    /// stream with nothing pipelined (as hyper, a request whose client left is abandoned).
    async fn watch(&mut self, io: &mut TcpStream) -> bool {
        match tokio_util::io::read_buf(io, &mut self.buf).await {
            Ok(0) if !self.buf.is_empty() => {
                self.eof = true;
                false
            }
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        }
    }
}

/// Writes `resp` to the client. `Ok(true)`: the connection may carry another request.
/// An HTTP/1.0 client cannot take a chunked body: one of unknown length runs to the end of
/// the connection.
async fn write_response(
    io: &mut TcpStream,
    inbox: &mut Inbox,
    out: &mut Vec<u8>,
    resp: Answer,
    head_request: bool,
    keep: bool,
    v10: bool,
) -> io::Result<bool> {
    match resp {
        Answer::Typed(resp) => {
            let (parts, body) = resp.into_parts();
            let fields = parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
            let head = (parts.status, fields);
            write_message(io, inbox, out, head, body, head_request, keep, v10).await
        }
        Answer::Raw(resp, body) => {
            let head = (resp.status, resp.head.fields());
            write_message(io, inbox, out, head, body, head_request, keep, v10).await
        }
    }
}

/// [`write_response`] for a status, its header fields, and a body.
#[allow(clippy::too_many_arguments)]
async fn write_message<'a, B>(
    io: &mut TcpStream,
    inbox: &mut Inbox,
    out: &mut Vec<u8>,
    (status, fields): (StatusCode, impl Iterator<Item = (&'a [u8], &'a [u8])>),
    mut body: B,
    head_request: bool,
    keep: bool,
    v10: bool,
) -> io::Result<bool>
where
    B: Body<Data = Bytes> + Unpin,
{
    let kind = Kind::of(status, head_request, body.size_hint().exact(), v10);
    let keep = keep && kind != Kind::CloseDelimited;
    out.clear();
    encode_head(out, status, fields, kind, keep, v10);
    let chunked = match kind {
        Kind::Bodiless { .. } => {
            io.write_all(out).await?;
            return Ok(keep);
        }
        Kind::Chunked => true,
        Kind::Length(_) | Kind::CloseDelimited => false,
    };
    let mut body = Pin::new(&mut body);
    let mut sent: u64 = 0;
    loop {
        // Take what is ready now; write what was gathered before waiting for more.
        let ready = poll_fn(|cx: &mut Context<'_>| match body.as_mut().poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Some(f)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        let frame = match ready {
            Some(f) => f,
            None => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                loop {
                    tokio::select! {
                        biased;
                        f = poll_fn(|cx| body.as_mut().poll_frame(cx)) => break f,
                        gone = inbox.watch(io), if inbox.watching() => if gone { return Ok(false) },
                    }
                }
            }
        };
        match frame {
            None => break,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    // Trailers: not forwarded (HTTP/1.1 clients seldom ask for them).
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if chunked {
                    push_chunk_size(out, data.len());
                }
                if data.len() >= COPY_BELOW {
                    io.write_all(out).await?;
                    out.clear();
                    io.write_all(&data).await?;
                } else {
                    out.extend_from_slice(&data);
                }
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= WRITE_BATCH {
                    io.write_all(out).await?;
                    out.clear();
                }
            }
            Some(Err(_)) => {
                // Cut off: what was gathered goes out, then the connection closes.
                if !out.is_empty() {
                    io.write_all(out).await?;
                }
                return Ok(false);
            }
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    // A body shorter than its announced length leaves the client waiting: close instead.
    Ok(keep && !matches!(kind, Kind::Length(n) if n != sent))
}

/// How a response body is delimited on the client's connection (hyper's encoder `Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No body: the response to a HEAD request, 1xx, 204 and 304. `keep_length`: the
    /// instance's `Content-Length` is passed on (the length a HEAD or 304 response would
    /// have had; 1xx and 204 have none).
    Bodiless { keep_length: bool },
    /// `Content-Length`: the body's size is known.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the size is not known.
    Chunked,
    /// The size is not known and the client speaks HTTP/1.0, which has no chunked coding:
    /// the body runs to the end of the connection.
    CloseDelimited,
}

impl Kind {
    /// The framing of a response with `status` (to a HEAD request when `head_request`),
    /// whose body's size is `length` when known, for an HTTP/1.0 client when `v10`.
    fn of(status: StatusCode, head_request: bool, length: Option<u64>, v10: bool) -> Kind {
        let not_modified = status == StatusCode::NOT_MODIFIED;
        if head_request
            || not_modified
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
        {
            Kind::Bodiless {
                keep_length: head_request || not_modified,
            }
        } else if let Some(n) = length {
            Kind::Length(n)
        } else if v10 {
            Kind::CloseDelimited
        } else {
            Kind::Chunked
        }
    }
}

/// The status line and headers, with runlet's own framing headers for a body framed as
/// `kind`, and the connection's: `close` unless `keep`, `keep-alive` for a kept HTTP/1.0
/// connection (`v10`).
fn encode_head<'a>(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    kind: Kind,
    keep: bool,
    v10: bool,
) {
    let keep_length = matches!(kind, Kind::Bodiless { keep_length: true });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in fields {
        // Framing is ours to set; a HEAD or 304 response keeps the length the instance gave.
        let framing = match name.len() {
            10 => name.eq_ignore_ascii_case(b"connection"),
            14 => !keep_length && name.eq_ignore_ascii_case(b"content-length"),
            17 => name.eq_ignore_ascii_case(b"transfer-encoding"),
            _ => false,
        };
        if framing {
            continue;
        }
        dated |= name.eq_ignore_ascii_case(b"date");
        push_field(out, name, value);
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date::push(out);
        out.extend_from_slice(b"\r\n");
    }
    match kind {
        Kind::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Kind::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Kind::Bodiless { .. } | Kind::CloseDelimited => {}
    }
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if v10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn push_chunk_size(out: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(n >> (i * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Date` header value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub fn push(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                *c = (secs, httpdate::fmt_http_date(now));
            }
            out.extend_from_slice(c.1.as_bytes());
        });
    }
}

/// A connection handed to hyper: the bytes already read come first, and a write the
/// client does not take by the latest time a response handed to hyper must be written by
/// ([`WriteBound`]) fails, which ends the connection and with it every response on it (their
/// instance slots are released). hyper stops polling a response body while the client's
/// socket is full, so the body's own deadline would not be seen.
pub(super) struct Rewind {
    prefix: Bytes,
    io: TcpStream,
    bound: Arc<WriteBound>,
    /// Armed while a write waits for the client.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The latest time by which a response handed to hyper on one connection must have been
/// written (see [`Rewind`]); none until the first.
pub(super) struct WriteBound {
    base: tokio::time::Instant,
    /// Nanoseconds after `base`; 0: none.
    until: std::sync::atomic::AtomicU64,
}

impl WriteBound {
    fn new() -> Self {
        WriteBound {
            base: tokio::time::Instant::now(),
            until: 0.into(),
        }
    }

    /// A response on the connection must be written by `until`.
    fn extend_to(&self, until: tokio::time::Instant) {
        let n = until.saturating_duration_since(self.base).as_nanos();
        let n = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        self.until.fetch_max(n, Ordering::Relaxed);
    }

    fn get(&self) -> Option<tokio::time::Instant> {
        match self.until.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + std::time::Duration::from_nanos(n)),
        }
    }
}

impl Rewind {
    /// After the client's socket said "not now": whether the bound has passed (the timer
    /// wakes the connection when it does).
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(until) = self.bound.get() else {
            return false;
        };
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.deadline() != until {
            sleep.as_mut().reset(until);
        }
        sleep.as_mut().poll(cx).is_ready()
    }

    fn bounded<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending if self.stalled(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not take its response by the request deadline",
            ))),
            r => r,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.bounded(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bounded(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.bounded(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::Loopback;
    use crate::ingress::{serve, Demand, Endpoint, IngressConfig, Route, RouteTable, Snapshot};
    use crate::metrics::Metrics;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::sync::watch;

    fn served(raw: &str) -> ServedBy {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(raw.as_bytes()).unwrap().is_complete(), "{raw}");
        served_by(&req)
    }

    #[test]
    fn how_response_bodies_are_framed() {
        use StatusCode as S;
        let bodiless = |keep_length| Kind::Bodiless { keep_length };
        // (status, to a HEAD request, body size, HTTP/1.0 client) -> framing
        let table = [
            (S::OK, false, Some(5), false, Kind::Length(5)),
            (S::OK, false, Some(5), true, Kind::Length(5)),
            (S::OK, false, None, false, Kind::Chunked),
            (S::OK, false, None, true, Kind::CloseDelimited),
            (S::OK, true, Some(5), false, bodiless(true)),
            (S::OK, true, None, true, bodiless(true)),
            (S::NOT_MODIFIED, false, Some(5), false, bodiless(true)),
            (S::NO_CONTENT, false, Some(7), false, bodiless(false)),
            (S::SWITCHING_PROTOCOLS, false, None, false, bodiless(false)),
        ];
        for (status, head, length, v10, want) in table {
            let got = Kind::of(status, head, length, v10);
            assert_eq!(
                got, want,
                "{status} head={head} length={length:?} v10={v10}"
            );
        }
    }

    #[test]
    fn which_requests_are_served_here() {
        let here = |close, v10| ServedBy::Here { close, v10 };
        let table = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", here(false, false)),
            (
                "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
                here(true, false),
            ),
            ("GET / HTTP/1.0\r\n\r\n", here(true, true)),
            (
                "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                here(false, true),
            ),
            (
                "DELETE /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                here(false, false),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                ServedBy::Hyper,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                ServedBy::Hyper,
            ),
            (
                "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                ServedBy::Hyper,
            ),
            (
                "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
                ServedBy::Hyper,
            ),
            (
                "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                ServedBy::Hyper,
            ),
            ("GET http://a/x HTTP/1.1\r\n\r\n", ServedBy::Hyper),
            ("OPTIONS * HTTP/1.1\r\n\r\n", ServedBy::Hyper),
        ];
        for (raw, want) in table {
            assert_eq!(served(raw), want, "{raw:?}");
        }
    }

    fn parsed(raw: &[u8]) -> (Option<Head>, BytesMut) {
        let mut buf = BytesMut::from(raw);
        let head = parse(&mut buf);
        (head, buf)
    }

    #[test]
    fn heads_are_parsed_refused_or_handed_over() {
        assert!(
            parsed(b"GET / HTTP/1.1\r\nHost: a\r\n").0.is_none(),
            "partial"
        );
        assert!(
            parsed(b"PRI * HTTP/2").0.is_none(),
            "start of the HTTP/2 preface"
        );
        assert!(matches!(parsed(PREFACE).0, Some(Head::Hyper)));
        let refused = |raw: &[u8]| match parsed(raw).0 {
            Some(Head::Refused(r)) => r.status().as_u16(),
            _ => 0,
        };
        assert_eq!(refused(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nx: a\x01b\r\n\r\n"), 400);
        assert_eq!(refused(b"GET /a b HTTP/1.1\r\n\r\n"), 400);
        // RFC 9112 §3.2: no Host in HTTP/1.1, or two in any version.
        assert_eq!(refused(b"GET / HTTP/1.1\r\nX: y\r\n\r\n"), 400);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            400
        );
        assert!(matches!(
            parsed(b"GET / HTTP/1.0\r\n\r\n").0,
            Some(Head::Request(..))
        ));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(101));
        assert_eq!(refused(many.as_bytes()), 431);
        let long = format!("GET / HTTP/1.1\r\nx: {}", "y".repeat(MAX_HEAD));
        assert_eq!(refused(long.as_bytes()), 431);
        // Bytes >= 0x80 in a value parse; the header rules refuse them later (HDR-2).
        assert!(matches!(
            parsed(b"GET / HTTP/1.1\r\nHost: a\r\nx: caf\xc3\xa9\r\n\r\n").0,
            Some(Head::Request(..))
        ));
        // Pipelined: one head at a time, the rest stays buffered.
        let (head, rest) =
            parsed(b"GET /one?q=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\nGET /two HTTP/1.1\r\n\r\n");
        let Some(Head::Request(req, false)) = head else {
            panic!("not served here")
        };
        assert_eq!((req.target.as_str(), req.v10), ("/one?q=1", false));
        assert_eq!(req.head.get(b"x-a"), Some(&b"1"[..]));
        assert_eq!(req.head.get(b"HOST"), Some(&b"a"[..]));
        assert_eq!(&rest[..], b"GET /two HTTP/1.1\r\n\r\n");
    }

    /// A scripted instance: answers by path. `/` → 5 bytes with a length, `/chunked` → a
    /// chunked body, HEAD → a length and no body, anything with a body → the body echoed.
    async fn instance() -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // More from the connection; false when it ended.
                        async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => false,
                                Ok(k) => {
                                    buf.extend_from_slice(&chunk[..k]);
                                    true
                                }
                            }
                        }
                        let (n, method, path, len, chunked) = loop {
                            let mut h = [httparse::EMPTY_HEADER; 32];
                            let mut r = httparse::Request::new(&mut h);
                            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                                let chunked = r
                                    .headers
                                    .iter()
                                    .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
                                let len = r
                                    .headers
                                    .iter()
                                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                    .map_or(0, |h| {
                                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                                    });
                                break (
                                    n,
                                    r.method.unwrap().to_string(),
                                    r.path.unwrap().to_string(),
                                    len,
                                    chunked,
                                );
                            }
                            if !more(&mut s, &mut buf).await {
                                return;
                            }
                        };
                        if chunked {
                            // Counted once the last chunk came: a cut body never is.
                            while !buf.ends_with(b"\r\n0\r\n\r\n") {
                                if !more(&mut s, &mut buf).await {
                                    return;
                                }
                            }
                            CHUNKED_BODIES.fetch_add(1, Ordering::SeqCst);
                            buf.clear();
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                            continue;
                        }
                        while buf.len() < n + len {
                            if !more(&mut s, &mut buf).await {
                                return;
                            }
                        }
                        let body: Vec<u8> = buf.drain(..n + len).skip(n).collect();
                        if path == "/big" {
                            // 256 MiB, for as long as the ingress takes it.
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 268435456\r\n\r\n")
                                .await;
                            let block = vec![b'x'; 1 << 20];
                            for _ in 0..256 {
                                if s.write_all(&block).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        let resp = if method == "HEAD" {
                            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_string()
                        } else if !body.is_empty() {
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
                                body.len(),
                                String::from_utf8(body).unwrap()
                            )
                        } else if path == "/slow" {
                            // A stream that starts and never ends.
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n").await;
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        } else if path == "/204" {
                            "HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n".to_string()
                        } else if path == "/chunked" {
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_string()
                        } else {
                            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_string()
                        };
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// runlet's ingress in front of the scripted instance; returns its address and the
    /// instance's endpoint.
    async fn ingress() -> (std::net::SocketAddr, Arc<Endpoint>) {
        let (addr, endpoint, stop) = stoppable_ingress().await;
        tokio::spawn(async move {
            let _keep = stop;
            std::future::pending::<()>().await
        });
        (addr, endpoint)
    }

    /// Complete chunked request bodies the scripted instance got.
    static CHUNKED_BODIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// [`ingress`], with the sender that stops it.
    async fn stoppable_ingress() -> (std::net::SocketAddr, Arc<Endpoint>, watch::Sender<bool>) {
        configured_ingress(|_| {}).await
    }

    /// [`stoppable_ingress`] with its route's settings changed by `tweak`.
    async fn configured_ingress(
        tweak: impl FnOnce(&mut IngressConfig),
    ) -> (std::net::SocketAddr, Arc<Endpoint>, watch::Sender<bool>) {
        let inst = instance().await;
        let endpoint = Arc::new(Endpoint::new(
            "i".into(),
            inst.port(),
            Arc::new(Loopback(inst)),
            false,
        ));
        let (snap_tx, snapshot) = watch::channel(Snapshot {
            endpoints: vec![endpoint.clone()],
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let mut cfg = IngressConfig {
            service: "downstream-test".into(),
            concurrency: 10,
            hold: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_queue: 10,
            max_body: None,
        };
        tweak(&mut cfg);
        let route = Arc::new(Route {
            cfg,
            snapshot,
            demand: Arc::new(Demand::default()),
        });
        let (routes_tx, routes) = watch::channel(Arc::new(RouteTable::single(route)));
        tokio::spawn(async move {
            let _keep = (snap_tx, routes_tx);
            serve(vec![listener], routes, Metrics::new(), stop).await;
        });
        (addr, endpoint, stop_tx)
    }

    /// Sends `raw`, reads until `responses` complete responses arrived (or the connection
    /// closed); returns what was read and whether the connection was closed.
    async fn exchange(addr: std::net::SocketAddr, raw: &[u8], until: &str) -> (String, bool) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut got = Vec::new();
        let mut closed = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !String::from_utf8_lossy(&got).ends_with(until) {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no complete answer: {:?}", String::from_utf8_lossy(&got)),
            }
        }
        if !closed {
            let mut chunk = [0u8; 16];
            closed = matches!(
                tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await,
                Ok(Ok(0))
            );
        }
        (String::from_utf8(got).unwrap(), closed)
    }

    #[tokio::test]
    async fn requests_are_served_pipelined_framed_and_closed_as_asked() {
        let (addr, _) = ingress().await;
        // Two pipelined GETs: two responses in order, the connection kept.
        let (got, closed) = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\n",
            "0\r\n\r\n",
        )
        .await;
        let (first, second) = got.split_once("hello").expect(&got);
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(
            first.contains("content-length: 5\r\n") && first.contains("date: "),
            "{got}"
        );
        assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(second.contains("transfer-encoding: chunked\r\n"), "{got}");
        assert!(
            second.ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            "{got}"
        );
        assert!(!closed);
        // HEAD: the instance's length, no body.
        let (got, _) = exchange(addr, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n").await;
        assert!(
            got.contains("content-length: 5\r\n") && got.ends_with("\r\n\r\n"),
            "{got}"
        );
        // Connection: close, and HTTP/1.0 without keep-alive: answered, then closed.
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            let (got, closed) = exchange(addr, raw, "hello").await;
            assert!(got.contains("connection: close\r\n"), "{got}");
            assert!(closed, "{got}");
        }
        // 204: no body, and no length either (the instance's is dropped).
        let (got, _) = exchange(addr, b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 204 No Content\r\n"), "{got}");
        assert!(
            !got.contains("content-length") && !got.contains("transfer-encoding"),
            "{got}"
        );
        // HTTP/1.0 with keep-alive: told so, and kept.
        let (got, closed) = exchange(
            addr,
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            "hello",
        )
        .await;
        assert!(
            got.contains("connection: keep-alive\r\n") && !closed,
            "{got}"
        );
    }

    #[tokio::test]
    async fn bodies_go_to_hyper_and_malformed_heads_get_400() {
        // A body: hyper takes the connection from that request on, the next one included.
        let post_then_get: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nping\
              GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (addr, _) = ingress().await;
        let (got, closed) = exchange(addr, post_then_get, "hello").await;
        assert!(got.contains("\r\n\r\nping"), "{got}");
        assert!(
            got.matches("HTTP/1.1 200 OK").count() == 2 && !closed,
            "{got}"
        );
        let (got, closed) = exchange(addr, b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "\n").await;
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
        assert!(got.contains("malformed request"), "{got}");
        assert!(closed);
    }

    #[tokio::test]
    async fn at_shutdown_idle_connections_close_and_requests_in_flight_are_answered() {
        let (addr, _, stop) = stoppable_ingress().await;
        // Idle, after one request.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut got = [0u8; 256];
        assert!(idle.read(&mut got).await.unwrap() > 0);
        // In flight: a response that has started and goes on.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let n = busy.read(&mut got).await.unwrap();
        assert!(String::from_utf8_lossy(&got[..n]).contains("200 OK"));
        // Idle and never used.
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).unwrap();
        for s in [&mut idle, &mut fresh] {
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest))
                .await
                .expect("an idle connection stayed open at shutdown")
                .unwrap();
            assert!(rest.is_empty());
        }
        // The streaming one is not cut by the shutdown (its deadline ends it later).
        let r = tokio::time::timeout(Duration::from_millis(300), busy.read(&mut got)).await;
        assert!(r.is_err(), "a response in flight was cut at shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_arrive_within_30_s_of_its_first_bytes() {
        let (addr, _) = ingress().await;
        // In pieces, within the time: served.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        s.write_all(b"Host: a\r\n\r\n").await.unwrap();
        let mut got = [0u8; 256];
        let n = s.read(&mut got).await.unwrap();
        let got = String::from_utf8_lossy(&got[..n]);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        // Not complete 30 s after its first bytes: 408, and the connection closes.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut got))
            .await
            .expect("the connection was not closed")
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= HEAD_TIMEOUT && waited < HEAD_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
        // Empty lines between requests are not the start of a head: no 408 for them.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n")
            .await
            .unwrap();
        let mut got = [0u8; 256];
        let n = s.read(&mut got).await.unwrap();
        assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200 OK\r\n"));
        let r = tokio::time::timeout(HEAD_TIMEOUT * 2, s.read(&mut got)).await;
        assert!(r.is_err(), "an idle connection got {r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_connection_hyper_serves_a_head_is_timed_and_idleness_is_not() {
        async fn until(s: &mut TcpStream, want: &str) -> String {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains(want) {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&got).into_owned()
        }
        let (addr, _) = ingress().await;
        // A request with a body: hyper serves the connection from then on.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nping")
            .await
            .unwrap();
        until(&mut s, "\r\n\r\nping").await;
        // Idle twice the head timeout: still open (a pooled request sent now must not race
        // a close), and served.
        let mut got = [0u8; 256];
        let r = tokio::time::timeout(HEAD_TIMEOUT * 2, s.read(&mut got)).await;
        assert!(r.is_err(), "an idle connection got {r:?}");
        // (A head in pieces within the time is served: head_timer's tests, in real time.)
        // A head not complete HEAD_TIMEOUT after its first bytes: the connection closes.
        tokio::time::sleep(Duration::from_secs(5)).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(HEAD_TIMEOUT * 2, s.read_to_end(&mut rest))
            .await
            .expect("the connection was not closed")
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= HEAD_TIMEOUT && waited < HEAD_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }

    #[tokio::test]
    async fn a_client_that_leaves_frees_its_slot_and_one_that_half_closes_gets_its_answers() {
        let (addr, endpoint) = ingress().await;
        // Leaves in the middle of a response that never ends.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("abc") {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(endpoint.in_flight(), 1);
        drop(s);
        let freed = async {
            while endpoint.in_flight() != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), freed)
            .await
            .expect("the slot of a client that left was not freed");
        // Pipelines two requests and closes its sending side: both answered, then closed.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
            .await
            .expect("not closed")
            .unwrap();
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 2, "{got}");
        assert!(got.ends_with("0\r\n\r\n"), "{got}");
    }

    #[tokio::test]
    async fn host_fields_are_checked_here_and_on_hypers_path() {
        let (addr, _) = ingress().await;
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nhost: a\r\nContent-Length: 4\r\n\r\nping",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nping",
        ] {
            let (got, _) = exchange(addr, raw, "\n").await;
            assert!(
                got.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{:?}: {got}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[tokio::test]
    async fn request_bodies_over_the_limit_get_413_with_a_length_or_chunked() {
        let (addr, _, _stop) = configured_ingress(|c| c.max_body = Some(1000)).await;
        let full = "y".repeat(1000);
        // At the limit: passed on, with a length and chunked.
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{full}");
        let (got, _) = exchange(addr, raw.as_bytes(), &full).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        let before = CHUNKED_BODIES.load(Ordering::SeqCst);
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{full}\r\n0\r\n\r\n"
        );
        let (got, _) = exchange(addr, raw.as_bytes(), "ok").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert_eq!(CHUNKED_BODIES.load(Ordering::SeqCst), before + 1);
        // Over it with a length: refused before a byte of the body is read.
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n";
        let (got, _) = exchange(addr, raw, "bytes.\n").await;
        assert!(
            got.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{got}"
        );
        // Chunked, over it: cut as it passes the limit, the instance never gets it whole.
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{full}\r\n1\r\nz\r\n0\r\n\r\n"
        );
        let (got, _) = exchange(addr, raw.as_bytes(), "bytes.\n").await;
        assert!(
            got.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{got}"
        );
        assert_eq!(CHUNKED_BODIES.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test]
    async fn a_client_that_never_reads_frees_its_slot_at_the_request_deadline() {
        let (addr, endpoint, _stop) = configured_ingress(|c| {
            c.timeout = Duration::from_secs(1);
            c.concurrency = 1;
        })
        .await;
        // Served here, and by hyper (a request with a body).
        for raw in [
            &b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
        ] {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let mut s = sock.connect(addr).await.unwrap();
            s.write_all(raw).await.unwrap();
            let busy = async {
                while endpoint.in_flight() == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(2), busy)
                .await
                .expect("the request never reached the instance");
            let freed = async {
                while endpoint.in_flight() != 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(4), freed)
                .await
                .expect("a client that never reads kept its slot past the request deadline");
            let (got, _) = exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "hello").await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            drop(s);
        }
    }

    /// HTTP/2: the socket keeps flowing, the client stalls the response through flow
    /// control alone (a 1 KiB stream window it never opens again, since it never reads).
    #[tokio::test]
    async fn an_http2_client_that_stalls_through_flow_control_frees_its_slot_at_the_deadline() {
        let (addr, endpoint, _stop) = configured_ingress(|c| {
            c.timeout = Duration::from_secs(1);
            c.concurrency = 1;
        })
        .await;
        let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(1024)
                .handshake::<_, http_body_util::Empty<Bytes>>(io)
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::get("http://a/big")
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(2), send.send_request(req))
            .await
            .expect("no response head")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(endpoint.in_flight(), 1);
        let freed = async {
            while endpoint.in_flight() != 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(4), freed)
            .await
            .expect("an HTTP/2 client stalling through flow control kept its slot past the request deadline");
        // The next request gets the slot, on this connection and on another.
        let req = Request::get("http://a/")
            .body(http_body_util::Empty::new())
            .unwrap();
        let next = tokio::time::timeout(Duration::from_secs(2), send.send_request(req))
            .await
            .expect("the connection took no other request")
            .unwrap();
        assert_eq!(next.status(), StatusCode::OK);
        let (got, _) = exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "hello").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        drop(resp);
    }
}
