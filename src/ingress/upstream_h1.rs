//! The HTTP/1.1 exchange with an instance for a request without a body (GET, HEAD, most
//! DELETEs: nearly all requests a service gets), done by the request's own task.
//!
//! The request head is written in one write; the response head is parsed with `httparse`
//! and its body is read straight from the socket as the client's connection asks for it.
//! Going through hyper's client instead costs a connection task, a channel hop for the
//! request, another for the response and one per body chunk: measured, about half of the
//! proxy's user CPU per request. Requests with a body (the request body must be written
//! while the response may already be coming) and upgrades keep hyper's client.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; `Transfer-Encoding`
//! ending in `chunked` is decoded (any `Content-Length` beside it is dropped); otherwise
//! `Content-Length`; otherwise the body runs to the end of the connection. Interim 1xx
//! responses are skipped. A connection goes back to the pool only after a body that was
//! framed and read to its end, with nothing after it, and no `Connection: close`.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::raw::{self, RawHead, RawResponse};
use crate::dial::Dial;

/// Most bytes of a head, the client's request or the instance's response (start line and
/// headers), and of a chunked body's trailers.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a head.
pub(super) const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// First read size; doubles while reads fill it, up to `MAX_READ`.
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;
/// Most idle connections kept per thread and instance; more are closed when they free up.
const MAX_IDLE: usize = 256;

/// The instance's response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("connecting to the instance")]
    Connect(#[source] io::Error),
    #[error("reading from or writing to the instance")]
    Io(#[from] io::Error),
    #[error("the instance closed the connection before responding")]
    ClosedBeforeResponse,
    #[error("the instance closed the connection before the end of the response body")]
    ClosedInBody,
    #[error("malformed response from the instance: {0}")]
    Malformed(&'static str),
}

/// One connection to the instance, with what has been read from it and not used yet.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    read_size: usize,
}

impl Conn {
    fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            read_size: FIRST_READ,
        }
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(self.read_size);
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        // A read that filled the room asks for a bigger one next time (large bodies).
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// True when the idle connection has something to read: data nobody asked for, or the
    /// instance closing it. Either way it must not carry another request. (tokio keeps the
    /// socket's readiness from epoll, and clears it once a read leaves the socket empty, so
    /// this costs no system call.)
    fn unusable(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.io.poll_read_ready(&mut cx).is_ready()
    }
}

/// Held for a push or a pop, never across an await, and only ever taken by one ingress
/// thread (each has its own pool): a plain mutex is right here.
#[allow(clippy::disallowed_types)]
type IdleList = std::sync::Mutex<Vec<Conn>>;

/// One ingress thread's idle connections to one instance.
#[derive(Default)]
pub struct Pool {
    idle: IdleList,
}

impl Pool {
    /// The most recently used idle connection still fit for a request.
    fn take(&self) -> Option<Conn> {
        let mut list = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = list.pop() {
            if !c.unusable() {
                return Some(c);
            }
        }
        None
    }

    fn put(&self, conn: Conn) {
        let mut list = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() < MAX_IDLE {
            list.push(conn);
        }
    }
}

/// Sends a request without a body (its head only: `parts`, whose URI is in origin form)
/// and returns the response, whose body is read from the connection as it is polled.
pub async fn send(
    pool: &Arc<Pool>,
    dialer: &dyn Dial,
    parts: &http::request::Parts,
) -> Result<Response<H1Body>, H1Error> {
    let head = encode_head(parts);
    let (raw, body) = send_head(
        pool,
        dialer,
        &head,
        parts.method.is_idempotent(),
        parts.method == Method::HEAD,
    )
    .await?;
    let mut resp = Response::new(body);
    *resp.status_mut() = raw.status;
    *resp.headers_mut() = raw.head.to_header_map().map_err(H1Error::Malformed)?;
    Ok(resp)
}

/// Sends a request head (`head`, ready to write) with no body and returns the response
/// head as read, and its body, read from the connection as it is polled. `idempotent`: the
/// request may be sent twice; `head_request`: its method is HEAD.
pub async fn send_head(
    pool: &Arc<Pool>,
    dialer: &dyn Dial,
    head: &[u8],
    idempotent: bool,
    head_request: bool,
) -> Result<(RawResponse, H1Body), H1Error> {
    // A reused connection may have been closed by the instance a moment ago, with the
    // close not seen yet: a request that got no byte back is sent again on a fresh
    // connection, if sending it twice is harmless (RFC 9110 §9.2.2).
    loop {
        let (conn, reused) = match pool.take() {
            Some(c) => (c, true),
            None => (
                Conn::new(dialer.dial().await.map_err(H1Error::Connect)?),
                false,
            ),
        };
        match exchange(conn, head, head_request).await {
            Ok((resp, framing, keep, conn)) => {
                let body = H1Body {
                    conn: Some(conn),
                    framing,
                    keep,
                    pool: pool.clone(),
                };
                return Ok((resp, body));
            }
            Err(Failed::Stale) if reused && idempotent => continue,
            Err(Failed::Stale) => return Err(H1Error::ClosedBeforeResponse),
            Err(Failed::Error(e)) => return Err(e),
        }
    }
}

enum Failed {
    /// Nothing came back: the connection was closed (or reset) under the request.
    Stale,
    Error(H1Error),
}

impl From<H1Error> for Failed {
    fn from(e: H1Error) -> Self {
        Failed::Error(e)
    }
}

fn stale_or(e: io::Error) -> Failed {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => Failed::Stale,
        _ => Failed::Error(H1Error::Io(e)),
    }
}

/// Writes the head, reads up to the end of the (final) response head.
async fn exchange(
    mut conn: Conn,
    head: &[u8],
    head_request: bool,
) -> Result<(RawResponse, Framing, bool, Conn), Failed> {
    conn.io.write_all(head).await.map_err(stale_or)?;
    let mut got_any = false;
    loop {
        if !conn.buf.is_empty() {
            got_any = true;
            if let Some((mut resp, keep)) = parse_head(&mut conn.buf)? {
                if resp.status.is_informational() {
                    // 100 Continue, 103 Early Hints: the final response follows. (A 101
                    // would need an upgrade request, which never takes this path.)
                    if resp.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(H1Error::Malformed("101 without an upgrade request").into());
                    }
                    continue;
                }
                let framing = framing(&mut resp, head_request)?;
                let keep = keep && !matches!(framing, Framing::Close);
                return Ok((resp, framing, keep, conn));
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(H1Error::Malformed("response head too large").into());
            }
        }
        let n = poll_fn(|cx| conn.poll_fill(cx)).await.map_err(stale_or)?;
        if n == 0 {
            return Err(if got_any {
                H1Error::Malformed("connection closed in the response head").into()
            } else {
                Failed::Stale
            });
        }
    }
}

/// The request line and headers, as one buffer.
pub(super) fn encode_head(parts: &http::request::Parts) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let size = 32
        + target.len()
        + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Header values were checked (HDR-2: no CR or LF) or made here.
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Parses a complete response head off the front of `buf`; `None` if more is needed.
/// Returns the response head and whether the connection may stay open after it.
fn parse_head(buf: &mut BytesMut) -> Result<Option<(RawResponse, bool)>, H1Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Malformed("too many response headers"))
        }
        Err(_) => return Err(H1Error::Malformed("unparsable response head")),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(H1Error::Malformed("bad status code"))?;
    let http10 = parsed.version == Some(0);
    // The head is copied out (it is small), which leaves the read buffer to be reused
    // instead of reallocated per response; the fields are slices of the copy.
    let fields = raw::fields_of(buf.as_ptr(), parsed.headers);
    let head = RawHead::new(Bytes::copy_from_slice(&buf[..len]), fields);
    buf.advance(len);
    let keep = if http10 {
        has_token(&head, b"keep-alive")
    } else {
        !has_token(&head, b"close")
    };
    Ok(Some((RawResponse { status, head }, keep)))
}

/// Whether the `Connection` fields list `token`, in any case.
fn has_token(head: &RawHead, token: &[u8]) -> bool {
    head.get_all(b"connection").any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// How the response body is delimited, and what is left of it.
#[derive(Debug, PartialEq)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    /// To the end of the connection.
    Close,
    Done,
}

fn framing(resp: &mut RawResponse, head_request: bool) -> Result<Framing, H1Error> {
    let status = resp.status;
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Done);
    }
    let head = &mut resp.head;
    if let Some(te) = head.get_all(b"transfer-encoding").last() {
        let chunked = te
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        // Transfer-Encoding wins over Content-Length, which then must not be passed on.
        head.remove(b"content-length");
        return Ok(if chunked {
            Framing::Chunked(Chunked::Size)
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for v in head.get_all(b"content-length") {
        for part in v.split(|&b| b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(H1Error::Malformed("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Malformed("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// Where a chunked body decoder is.
#[derive(Debug, PartialEq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// What one step of the chunked decoder produced.
#[derive(Debug, PartialEq)]
enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

impl Chunked {
    /// Decodes from the front of `buf`; `None` when more bytes are needed.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, H1Error> {
        loop {
            match self {
                Chunked::Size => {
                    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(H1Error::Malformed("chunk size line too long"));
                        }
                        return Ok(None);
                    };
                    let size = chunk_size(&buf[..eol])?;
                    buf.advance(eol + 1);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Chunked::DataEnd;
                    }
                    return Ok(Some(Decoded::Data(take(buf, n))));
                }
                Chunked::DataEnd => {
                    let end = match &buf[..] {
                        [b'\r', b'\n', ..] => 2,
                        [b'\n', ..] => 1,
                        [] | [b'\r'] => return Ok(None),
                        _ => return Err(H1Error::Malformed("chunk not followed by CRLF")),
                    };
                    buf.advance(end);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (len, fields) = match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete(x)) => x,
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
                        _ => return Err(H1Error::Malformed("bad trailers")),
                    };
                    let mut trailers = HeaderMap::new();
                    for f in fields {
                        if let (Ok(n), Ok(v)) = (
                            HeaderName::from_bytes(f.name.as_bytes()),
                            HeaderValue::from_bytes(f.value),
                        ) {
                            trailers.append(n, v);
                        }
                    }
                    buf.advance(len);
                    return Ok(Some(if trailers.is_empty() {
                        Decoded::End
                    } else {
                        Decoded::Trailers(trailers)
                    }));
                }
            }
        }
    }
}

/// Up to this many bytes of body are copied out of the read buffer, which then stays with
/// the connection; larger pieces are handed over without a copy (the buffer is then
/// reallocated for the next read).
const COPY_BELOW: usize = 4096;

/// The first `n` bytes of `buf`, as a frame's data.
fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    if n < COPY_BELOW {
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

/// The size on a chunk-size line (hex digits, then optional `;extensions`, then CR).
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(H1Error::Malformed("bad chunk size"));
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char)
            .to_digit(16)
            .ok_or(H1Error::Malformed("bad chunk size"))?;
        Ok(acc * 16 + d as u64)
    })
}

/// A response body read from the instance's connection as it is polled; the connection goes
/// back to the pool at its end.
pub struct H1Body {
    conn: Option<Conn>,
    framing: Framing,
    keep: bool,
    pool: Arc<Pool>,
}

impl H1Body {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            // Bytes after the end of the response: the instance is not speaking HTTP/1.1
            // as agreed, so the connection is not reused.
            if self.keep && conn.buf.is_empty() {
                self.pool.put(conn);
            }
        }
    }
    /// The next frame out of what was already read: `None` when more must be read first.
    #[allow(clippy::option_option)]
    fn buffered(&mut self) -> Option<Option<Result<Frame<Bytes>, H1Error>>> {
        if self.is_end_stream() {
            self.finish();
            return Some(None);
        }
        let conn = match self.conn.as_mut() {
            Some(c) if !c.buf.is_empty() => c,
            Some(_) => return None,
            None => return Some(None),
        };
        match &mut self.framing {
            Framing::Length(left) => {
                let n = (*left).min(conn.buf.len() as u64) as usize;
                *left -= n as u64;
                let data = take(&mut conn.buf, n);
                if *left == 0 {
                    self.finish();
                }
                Some(Some(Ok(Frame::data(data))))
            }
            Framing::Close => {
                let n = conn.buf.len();
                Some(Some(Ok(Frame::data(take(&mut conn.buf, n)))))
            }
            Framing::Chunked(state) => match state.decode(&mut conn.buf) {
                Ok(Some(Decoded::Data(d))) => Some(Some(Ok(Frame::data(d)))),
                Ok(Some(Decoded::Trailers(t))) => {
                    self.finish();
                    Some(Some(Ok(Frame::trailers(t))))
                }
                Ok(Some(Decoded::End)) => {
                    self.finish();
                    Some(None)
                }
                Ok(None) => None,
                Err(e) => {
                    self.conn = None;
                    Some(Some(Err(e)))
                }
            },
            Framing::Done => Some(None),
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(out) = this.buffered() {
                return Poll::Ready(out);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(H1Error::ClosedInBody)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(H1Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body the server never polled because it was known to be empty still ended; a
        // body dropped half-read did not, and its connection closes with it.
        if self.is_end_stream() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::Loopback;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    fn chunked(state: &mut Chunked, input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>), H1Error> {
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match state.decode(&mut buf)? {
                Some(Decoded::Data(d)) => data.extend_from_slice(&d),
                Some(Decoded::Trailers(t)) => {
                    trailers = Some(t);
                    break;
                }
                Some(Decoded::End) => break,
                None if fed < input.len() => {
                    buf.extend_from_slice(&input[fed..fed + 1]);
                    fed += 1;
                }
                None => return Err(H1Error::ClosedInBody),
            }
        }
        assert!(buf.is_empty(), "bytes left after the body");
        Ok((data, trailers))
    }

    #[test]
    fn chunked_bodies_decode_whatever_way_the_bytes_arrive() {
        // (encoded, data, trailer)
        type Case = (
            &'static [u8],
            &'static [u8],
            Option<(&'static str, &'static str)>,
        );
        let cases: &[Case] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", None),
            (
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                b"hello world",
                None,
            ),
            (b"A;ext=1\r\n0123456789\r\n0\r\n\r\n", b"0123456789", None),
            (b"a\n0123456789\n0\n\n", b"0123456789", None),
            (b"0\r\n\r\n", b"", None),
            (
                b"3\r\nabc\r\n0\r\nx-sum: 42\r\n\r\n",
                b"abc",
                Some(("x-sum", "42")),
            ),
        ];
        for (input, data, trailer) in cases {
            // Byte by byte (the helper feeds one at a time) ...
            let (got, t) = chunked(&mut Chunked::Size, input).unwrap();
            assert_eq!(&got, data, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                t.as_ref().map(|t| t.len()),
                trailer.map(|_| 1),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            if let (Some(t), Some((n, v))) = (t, trailer) {
                assert_eq!(t.get(*n).unwrap(), v);
            }
            // ... and all at once.
            let mut buf = BytesMut::from(*input);
            let mut state = Chunked::Size;
            let mut all = Vec::new();
            while let Some(d) = state.decode(&mut buf).unwrap() {
                match d {
                    Decoded::Data(d) => all.extend_from_slice(&d),
                    _ => break,
                }
            }
            assert_eq!(&all, data);
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for input in [
            &b"x\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"1000000000000000\r\n",
        ] {
            assert!(
                matches!(
                    chunked(&mut Chunked::Size, input),
                    Err(H1Error::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 2];
        assert!(Chunked::Size
            .decode(&mut BytesMut::from(&long[..]))
            .is_err());
    }

    fn head(raw: &str) -> Result<Option<(RawResponse, bool)>, H1Error> {
        parse_head(&mut BytesMut::from(raw))
    }

    #[test]
    fn response_heads_and_keep_alive() {
        let cases = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 200, true),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 200, false),
            (
                "HTTP/1.1 404 Nope\r\nconnection: Foo, CLOSE\r\n\r\n",
                404,
                false,
            ),
            ("HTTP/1.0 200 OK\r\n\r\n", 200, false),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
                200,
                true,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", 100, true),
        ];
        for (raw, status, keep) in cases {
            let (resp, k) = head(raw).unwrap().unwrap();
            assert_eq!((resp.status.as_u16(), k), (status, keep), "{raw:?}");
        }
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
        for bad in [
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
        // Values keep bytes >= 0x80 (obs-text): the ingress drops such headers (HDR-2).
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx-odd: caf\xc3\xa9\r\n\r\n"[..]);
        let (resp, _) = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(resp.head.get(b"X-ODD").unwrap(), b"caf\xc3\xa9");
        assert!(buf.is_empty());
    }

    #[test]
    fn how_bodies_are_framed() {
        let resp = |status: u16, headers: &[(&str, &str)]| {
            let mut raw = format!("HTTP/1.1 {status} X\r\n");
            for (n, v) in headers {
                raw.push_str(&format!("{n}: {v}\r\n"));
            }
            raw.push_str("\r\n");
            head(&raw).unwrap().unwrap().0
        };
        let cl = [("content-length", "5")];
        let cases: Vec<(RawResponse, bool, Option<Framing>)> = vec![
            (resp(200, &cl), false, Some(Framing::Length(5))),
            (resp(200, &cl), true, Some(Framing::Done)),
            (resp(204, &[]), false, Some(Framing::Done)),
            (resp(304, &cl), false, Some(Framing::Done)),
            (resp(200, &[]), false, Some(Framing::Close)),
            (
                resp(200, &[("transfer-encoding", "chunked")]),
                false,
                Some(Framing::Chunked(Chunked::Size)),
            ),
            (
                resp(
                    200,
                    &[
                        ("transfer-encoding", "gzip, Chunked"),
                        ("content-length", "5"),
                    ],
                ),
                false,
                Some(Framing::Chunked(Chunked::Size)),
            ),
            (
                resp(200, &[("transfer-encoding", "gzip")]),
                false,
                Some(Framing::Close),
            ),
            (
                resp(200, &[("content-length", "5, 5")]),
                false,
                Some(Framing::Length(5)),
            ),
            (
                resp(200, &[("content-length", "5"), ("content-length", "6")]),
                false,
                None,
            ),
            (resp(200, &[("content-length", "-1")]), false, None),
            (resp(200, &[("content-length", "+5")]), false, None),
            (resp(200, &[("content-length", "")]), false, None),
        ];
        for (mut r, head_request, want) in cases {
            let label = format!("{:?} head={head_request}", r.head);
            match (framing(&mut r, head_request), want) {
                (Ok(f), Some(w)) => {
                    assert_eq!(f, w, "{label}");
                    if matches!(f, Framing::Chunked(_)) {
                        assert!(r.head.get(b"content-length").is_none(), "{label}");
                    }
                }
                (Err(_), None) => {}
                (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// What the scripted server does on reading a request head.
    #[derive(Clone, Copy)]
    enum Step {
        /// Writes these bytes and waits for the next request on the connection.
        Reply(&'static [u8]),
        /// Writes these bytes and closes the connection.
        ReplyClose(&'static [u8]),
        /// Closes the connection without a word.
        Close,
    }
    use Step::*;

    /// A loopback server that answers each request head it reads (on any connection) with
    /// the next step of the script. Counts connections.
    async fn scripted(script: Vec<Step>) -> (Loopback, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        let script = Arc::new(tokio::sync::Mutex::new(script.into_iter()));
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                tokio::spawn(async move {
                    loop {
                        let mut got = Vec::new();
                        while !got.ends_with(b"\r\n\r\n") {
                            let mut b = [0u8; 1];
                            if s.read(&mut b).await.unwrap_or(0) == 0 {
                                return;
                            }
                            got.push(b[0]);
                        }
                        match script.lock().await.next().unwrap_or(Close) {
                            Reply(r) => s.write_all(r).await.unwrap(),
                            ReplyClose(r) => return s.write_all(r).await.unwrap(),
                            Close => return,
                        }
                    }
                });
            }
        });
        (Loopback(addr), conns)
    }

    fn parts(method: Method) -> http::request::Parts {
        let mut p = http::Request::new(()).into_parts().0;
        p.method = method;
        p.uri = "/x?y=1".parse().unwrap();
        p.headers
            .insert(http::header::HOST, HeaderValue::from_static("test"));
        p
    }

    async fn body(resp: Response<H1Body>) -> Result<(Vec<u8>, Option<HeaderMap>), H1Error> {
        let collected = resp.into_body().collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes().to_vec(), trailers))
    }

    #[test]
    fn the_request_head_is_written_as_is() {
        let mut p = parts(Method::DELETE);
        p.headers.append("x-two", HeaderValue::from_static("a"));
        p.headers.append("x-two", HeaderValue::from_static("b"));
        assert_eq!(
            String::from_utf8(encode_head(&p)).unwrap(),
            "DELETE /x?y=1 HTTP/1.1\r\nhost: test\r\nx-two: a\r\nx-two: b\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn responses_of_every_framing_and_connection_reuse() {
        let (dial, conns) = scripted(vec![
            Reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
            Reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\nx-t: 1\r\n\r\n"),
            Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            Reply(b"HTTP/1.1 204 No Content\r\n\r\n"),
            ReplyClose(b"HTTP/1.1 200 OK\r\n\r\nto the end"),
            Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        ])
        .await;
        let pool = Arc::new(Pool::default());
        let r = send(&pool, &dial, &parts(Method::GET)).await.unwrap();
        assert_eq!(body(r).await.unwrap(), (b"hello".to_vec(), None));
        let r = send(&pool, &dial, &parts(Method::GET)).await.unwrap();
        let (data, trailers) = body(r).await.unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(trailers.unwrap()["x-t"], "1");
        // HEAD: the content-length describes the GET; no body follows.
        let r = send(&pool, &dial, &parts(Method::HEAD)).await.unwrap();
        assert_eq!(r.headers()[http::header::CONTENT_LENGTH], "5");
        assert!(r.body().is_end_stream());
        drop(r);
        let r = send(&pool, &dial, &parts(Method::GET)).await.unwrap();
        assert_eq!(r.status(), 204);
        drop(r);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        // A body running to the end of the connection: that connection is done.
        let r = send(&pool, &dial, &parts(Method::GET)).await.unwrap();
        assert_eq!(body(r).await.unwrap().0, b"to the end");
        let r = send(&pool, &dial, &parts(Method::GET)).await.unwrap();
        assert_eq!(body(r).await.unwrap().0, b"ok");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn broken_responses_are_errors() {
        type Case = (Vec<Step>, fn(&H1Error) -> bool);
        let cases: Vec<Case> = vec![
            (vec![Close], |e| matches!(e, H1Error::ClosedBeforeResponse)),
            (vec![ReplyClose(b"HTTP/1.1 200 OK\r\ncontent-le")], |e| {
                matches!(e, H1Error::Malformed(_))
            }),
            (vec![Reply(b"garbage\r\n\r\n")], |e| {
                matches!(e, H1Error::Malformed(_))
            }),
            (
                vec![Reply(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")],
                |e| matches!(e, H1Error::Malformed(_)),
            ),
        ];
        for (script, check) in cases {
            let (dial, _) = scripted(script).await;
            let pool = Arc::new(Pool::default());
            let Err(e) = send(&pool, &dial, &parts(Method::GET)).await else {
                panic!("a response from a broken script")
            };
            assert!(check(&e), "{e}");
        }
        // A body cut short is an error at the end of the body, not a clean end.
        let (dial, _) = scripted(vec![ReplyClose(
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        )])
        .await;
        let pool = Arc::new(Pool::default());
        let r = send(&pool, &dial, &parts(Method::GET)).await.unwrap();
        assert!(matches!(body(r).await, Err(H1Error::ClosedInBody)));
    }

    #[tokio::test]
    async fn bytes_after_a_response_keep_its_connection_out_of_the_pool() {
        let (dial, conns) = scripted(vec![
            Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA"),
            Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        ])
        .await;
        let pool = Arc::new(Pool::default());
        for _ in 0..2 {
            let r = send(&pool, &dial, &parts(Method::GET)).await.unwrap();
            assert_eq!(body(r).await.unwrap().0, b"ok");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_closed_under_a_request_is_retried_only_if_that_is_harmless() {
        // The instance closes the connection after reading the second request, without an
        // answer (what an idle timeout racing a request looks like).
        for (method, retried) in [(Method::GET, true), (Method::POST, false)] {
            let (dial, conns) = scripted(vec![
                Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
                Close,
                Reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            ])
            .await;
            let pool = Arc::new(Pool::default());
            let r = send(&pool, &dial, &parts(Method::GET)).await.unwrap();
            body(r).await.unwrap();
            let second = send(&pool, &dial, &parts(method.clone())).await;
            if retried {
                assert_eq!(body(second.unwrap()).await.unwrap().0, b"ok");
                assert_eq!(conns.load(Ordering::SeqCst), 2);
            } else {
                assert!(
                    matches!(second, Err(H1Error::ClosedBeforeResponse)),
                    "{method}"
                );
            }
        }
    }
}
