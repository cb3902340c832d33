//! The HTTP clients that tests and conformance checks talk to runlet with.
//!
//! * [`send`]: HTTP/1.1 written by hand over one TCP connection, so a check can send what a
//!   strict client refuses to (bad header bytes) and can see exactly how a response ended:
//!   when the head arrived, when the first body byte arrived, and whether the body was
//!   complete (content length reached, last chunk seen) or cut. [`send_blocking`] is the
//!   same for a test without a tokio runtime.
//! * [`h2c_get`]: a GET over cleartext HTTP/2 with prior knowledge (hyper's client).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One HTTP/1.1 request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Sent verbatim, in order, after `Host` (unless given here), `Connection: close` and
    /// `Content-Length`.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// For the whole exchange; the response so far is returned when it passes.
    pub timeout: Duration,
}

impl Request {
    pub fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// `method` (as written) at `path`, with no headers or body of its own.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            ..Request::get(path)
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, t: Duration) -> Request {
        self.timeout = t;
        self
    }
}

/// What came back, with timings counted from the connection attempt.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    pub head_after: Duration,
    pub first_body_after: Option<Duration>,
    pub end_after: Duration,
    /// The body ended as its framing says (content length reached, last chunk seen, or a
    /// clean close for a close-delimited body).
    pub complete: bool,
    /// Why the body ended otherwise (connection reset, timeout, ...).
    pub end_error: Option<String>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body, trimmed and cut to 200 characters, for messages.
    pub fn brief(&self) -> String {
        let t = self.text();
        let t = t.trim();
        match t.char_indices().nth(200) {
            Some((i, _)) => format!("{}...", &t[..i]),
            None => t.to_string(),
        }
    }

    /// The body as JSON; the error quotes the start of the body.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let t = self.text();
            anyhow!(
                "status {}, body is not JSON ({e}): {:?}",
                self.status,
                t.chars().take(300).collect::<String>()
            )
        })
    }
}

/// Sends `req` to `addr` over a fresh connection.
pub async fn send(addr: SocketAddr, req: &Request) -> Result<Response> {
    let t0 = Instant::now();
    let deadline = t0 + req.timeout;
    let mut s = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = s.set_nodelay(true);
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path).into_bytes();
    if !req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        head.extend_from_slice(format!("Host: {addr}\r\n").as_bytes());
    }
    head.extend_from_slice(
        format!(
            "Connection: close\r\nContent-Length: {}\r\n",
            req.body.len()
        )
        .as_bytes(),
    );
    for (k, v) in &req.headers {
        head.extend_from_slice(k.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(&req.body);
    s.write_all(&head)
        .await
        .with_context(|| format!("sending the request to {addr}"))?;

    let mut raw: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // The head.
    let (status, headers, body_start, head_after) = loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let (status, headers) = parse_head(&raw[..end])?;
            if (100..200).contains(&status) {
                raw.drain(..end + 4);
                continue;
            }
            break (status, headers, end + 4, t0.elapsed());
        }
        let n = match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => bail!(
                "no response head from {addr} within {:.1} s",
                req.timeout.as_secs_f64()
            ),
            Ok(Err(e)) => bail!("reading the response head from {addr}: {e}"),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            bail!(
                "{addr} closed the connection before a response head ({} bytes: {:?})",
                raw.len(),
                String::from_utf8_lossy(&raw)
            );
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let mut body_raw = raw.split_off(body_start);
    let framing = framing(&req.method, status, &headers);
    let mut first_body_after = (!body_raw.is_empty()).then(|| t0.elapsed());
    let mut end_error = None;
    let complete = loop {
        let (_, done) = decode(&framing, &body_raw);
        if done {
            break true;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => {
                end_error = Some(format!(
                    "timed out after {:.1} s",
                    req.timeout.as_secs_f64()
                ));
                break false;
            }
            Ok(Err(e)) => {
                end_error = Some(e.to_string());
                break false;
            }
            Ok(Ok(0)) => break matches!(framing, Framing::Close),
            Ok(Ok(n)) => {
                if first_body_after.is_none() {
                    first_body_after = Some(t0.elapsed());
                }
                body_raw.extend_from_slice(&buf[..n]);
            }
        }
    };
    if !complete && end_error.is_none() {
        end_error = Some("connection closed before the end of the body".into());
    }
    let (body, _) = decode(&framing, &body_raw);
    Ok(Response {
        status,
        headers,
        body,
        head_after,
        first_body_after,
        end_after: t0.elapsed(),
        complete,
        end_error,
    })
}

/// [`send`] for a caller without a tokio runtime (on a current-thread runtime of its own).
pub fn send_blocking(addr: SocketAddr, req: &Request) -> Result<Response> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the request")?
        .block_on(send(addr, req))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Framing {
    None,
    Length(usize),
    Chunked,
    Close,
}

fn framing(method: &str, status: u16, headers: &[(String, String)]) -> Framing {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if method == "HEAD" || status == 204 || status == 304 {
        Framing::None
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked
    } else if let Some(n) = get("content-length").and_then(|v| v.trim().parse().ok()) {
        Framing::Length(n)
    } else {
        Framing::Close
    }
}

/// The body decoded so far and whether it is complete.
fn decode(framing: &Framing, raw: &[u8]) -> (Vec<u8>, bool) {
    match framing {
        Framing::None => (Vec::new(), true),
        Framing::Length(n) => (raw[..raw.len().min(*n)].to_vec(), raw.len() >= *n),
        Framing::Close => (raw.to_vec(), false),
        Framing::Chunked => dechunk(raw),
    }
}

/// De-chunks what has arrived; complete once the last (zero-size) chunk and the final
/// CRLF are in.
fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(b, b"\r\n") else {
            return (out, false);
        };
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (out, false);
        };
        let data = &b[eol + 2..];
        if size == 0 {
            // Trailers (if any) end with an empty line.
            return (
                out,
                data.starts_with(b"\r\n") || find(data, b"\r\n\r\n").is_some(),
            );
        }
        if data.len() < size {
            out.extend_from_slice(data);
            return (out, false);
        }
        out.extend_from_slice(&data[..size]);
        if data.len() < size + 2 {
            return (out, false);
        }
        b = &data[size + 2..];
    }
}

/// GET `path` from `addr` over HTTP/2 with prior knowledge; returns status and body.
pub async fn h2c_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    h2c_get_at(addr, &addr.to_string(), path, timeout).await
}

/// Like [`h2c_get`] with `authority` as the request's `:authority` (a server that routes by
/// host, such as runlet's daemon).
pub async fn h2c_get_at(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let fut = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .context("HTTP/2 handshake (prior knowledge)")?;
        let driver = tokio::spawn(conn);
        let req = http::Request::get(format!("http://{authority}{path}"))
            .body(Empty::<Bytes>::new())
            .context("building the HTTP/2 request")?;
        let resp = sender.send_request(req).await.context("HTTP/2 request")?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the HTTP/2 body")?
            .to_bytes()
            .to_vec();
        driver.abort();
        Ok::<_, anyhow::Error>((status, body))
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        anyhow!(
            "HTTP/2 GET {path}: no answer within {} s",
            timeout.as_secs()
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_complete_partial_and_cut() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            (b"hello world".to_vec(), true)
        );
        assert_eq!(dechunk(b"5\r\nhello\r\n"), (b"hello".to_vec(), false));
        assert_eq!(dechunk(b"5\r\nhel"), (b"hel".to_vec(), false));
        assert_eq!(dechunk(b"5\r\nhello\r\n0\r\n"), (b"hello".to_vec(), false));
        assert_eq!(
            dechunk(b"5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n"),
            (b"hello".to_vec(), true)
        );
        assert_eq!(dechunk(b""), (Vec::new(), false));
    }

    #[test]
    fn head_parsing_and_framing() {
        let (status, headers) =
            parse_head(b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 3\r\nX-A: b").unwrap();
        assert_eq!(status, 504);
        assert_eq!(headers[0], ("content-length".into(), "3".into()));
        assert_eq!(framing("GET", 504, &headers), Framing::Length(3));
        assert_eq!(framing("HEAD", 200, &headers), Framing::None);
        assert_eq!(
            framing(
                "GET",
                200,
                &[("transfer-encoding".into(), "chunked".into())]
            ),
            Framing::Chunked
        );
        assert_eq!(framing("GET", 200, &[]), Framing::Close);
        assert!(parse_head(b"garbage").is_err());
    }

    /// A server for one connection: reads the request, writes `reply`, holds the
    /// connection for `hold`, and hands back the request it read.
    async fn one_shot(
        reply: &'static [u8],
        hold: Duration,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let n = s.read(&mut b).await.unwrap();
            s.write_all(reply).await.unwrap();
            tokio::time::sleep(hold).await;
            String::from_utf8_lossy(&b[..n]).into_owned()
        });
        (addr, server)
    }

    #[tokio::test]
    async fn send_sees_a_cut_chunked_body() {
        // Dropped without the last chunk.
        let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        let (addr, _) = one_shot(reply, Duration::from_millis(200)).await;
        let r = send(addr, &Request::get("/")).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abc");
        assert!(!r.complete);
        assert!(r.end_error.is_some());
        assert!(r.end_after >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn send_reads_a_length_delimited_body_and_sends_raw_bytes() {
        let reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nnope";
        let (addr, server) = one_shot(reply, Duration::ZERO).await;
        let r = send(addr, &Request::get("/").header("X-Raw", b"a\x01b".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.text().as_str(), r.complete),
            (400, "nope", true)
        );
        let req = server.await.unwrap();
        assert!(req.contains("X-Raw: a\x01b\r\n"), "{req:?}");
    }

    #[test]
    fn send_blocking_needs_no_runtime() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = l.accept().unwrap();
            let _ = s.read(&mut [0u8; 1024]).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        });
        let r = send_blocking(addr, &Request::new("POST", "/").body("x")).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
}
