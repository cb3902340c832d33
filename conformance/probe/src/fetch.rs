//! The probe's HTTP client. `PROBE_FETCH_AT_START=http://HOST:PORT/PATH`: before it
//! listens, the probe GETs that URL once and exits 3 if it cannot (no answer within 10 s,
//! or a status other than 200); it then serves the body it got at `GET /fetched`.
//! `GET /fetch?url=URL&header=NAME:VALUE` GETs URL when asked and answers
//! `{"status":N,"body":"..."}` (502 with `{"error":"..."}` when there is no answer). Host
//! names are looked up in `/etc/hosts` (the probe runs alone in its image, without NSS).
//!
//! This is the client side of the checks that need one inside an instance (an outbound
//! request, OUT-1; a sidecar reached on localhost before the ingress container starts,
//! LIFE-4), made for gen1: under Debian's runsc 20221219 (its host network), a blocking read
//! on a TCP socket may answer EAGAIN before data arrives, which made busybox's `wget` and
//! `nc` fail there at random, and an epoll wait for a non-blocking connect to complete may
//! never end, which hung tokio's `TcpStream::connect`. So it connects, writes and reads in
//! blocking calls on a thread of its own and reads again after EAGAIN until its deadline.
//! HTTP/1.0 with `Connection: close` and the body read to the end is all it needs, so it is
//! written here rather than pulling an HTTP client into a static test binary.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream as StdStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the whole fetch may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The body fetched at start, served at `/fetched`.
pub static FETCHED: OnceLock<Vec<u8>> = OnceLock::new();

/// `http://HOST:PORT/PATH` split into the address to dial and the request target.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are fetched"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !authority.contains(':') {
        return Err(format!("{url:?}: the URL must name a port"));
    }
    Ok((authority.to_string(), path.to_string()))
}

/// The status code and body of an HTTP/1.x response read to its end.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP/1 status line: {head:?}"))?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// GETs `url` and returns the body of a 200 answer.
pub async fn get(url: &str) -> Result<Vec<u8>, String> {
    match exchange(url, None).await? {
        (200, body) => Ok(body),
        (status, body) => Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        )),
    }
}

/// GETs `url`, with `header` (`Name: value`) if given; returns the status and body.
pub async fn exchange(url: &str, header: Option<&str>) -> Result<(u16, Vec<u8>), String> {
    let url = url.to_string();
    let header = header.map(str::to_string);
    tokio::task::spawn_blocking(move || exchange_blocking(&url, header.as_deref()))
        .await
        .map_err(|e| format!("the fetch thread: {e}"))?
}

/// The address of `host:port`: the host looked up in `hosts` (the text of `/etc/hosts`)
/// first, then as an IP address.
pub fn resolve(authority: &str, hosts: &str) -> Result<SocketAddr, String> {
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{authority:?}: no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{authority:?}: bad port"))?;
    let from_hosts = hosts.lines().find_map(|l| {
        let mut words = l.split('#').next()?.split_whitespace();
        let ip = words.next()?;
        words
            .any(|w| w == host)
            .then(|| ip.parse::<IpAddr>().ok())?
    });
    let ip = match from_hosts {
        Some(ip) => ip,
        None => host
            .parse()
            .map_err(|_| format!("{host:?} is not in /etc/hosts nor an IP address"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// The fetch in blocking I/O, with a retry where a blocking call says it would block.
fn exchange_blocking(url: &str, header: Option<&str>) -> Result<(u16, Vec<u8>), String> {
    let (addr, path) = split_url(url)?;
    let deadline = Instant::now() + TIMEOUT;
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let target = resolve(&addr, &hosts)?;
    let mut s = StdStream::connect(target).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("socket options: {e}"))?;
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if retry(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) if retry(&e) => return Err(format!("no answer from {url} within {TIMEOUT:?}")),
            Err(e) => return Err(format!("reading from {addr}: {e}")),
        }
    }
    parse_response(&raw)
}

/// Whether a blocking read's error means "try again": EINTR, and EAGAIN, which a blocking
/// socket under gen1's runsc answers before data arrives (and a read timeout answers too;
/// the deadline tells them apart).
fn retry(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        type Want = Result<(&'static str, &'static str), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("http://127.0.0.1:8080/", Ok(("127.0.0.1:8080", "/"))),
            ("http://10.0.0.1:9/a/b?c=d", Ok(("10.0.0.1:9", "/a/b?c=d"))),
            ("http://h:1", Ok(("h:1", "/"))),
            ("https://h:1/", Err("only http://")),
            ("http://h/", Err("must name a port")),
        ];
        for (url, want) in cases {
            match (split_url(url), want) {
                (Ok((a, p)), Ok((wa, wp))) => assert_eq!((a.as_str(), p.as_str()), (*wa, *wp)),
                (Err(e), Err(w)) => assert!(e.contains(w), "{url}: {e}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn names_from_etc_hosts() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.9 metadata.google.internal\n\
                     10.209.0.1\tmetadata.google.internal metadata # runlet\n";
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("metadata.google.internal:80", Ok("10.209.0.1:80")),
            ("metadata:8080", Ok("10.209.0.1:8080")),
            ("localhost:1", Ok("127.0.0.1:1")),
            ("192.0.2.2:9", Ok("192.0.2.2:9")),
            ("example.com:80", Err("not in /etc/hosts")),
            ("h", Err("no port")),
        ];
        for (authority, want) in cases {
            match (resolve(authority, hosts), want) {
                (Ok(a), Ok(w)) => assert_eq!(a.to_string(), *w),
                (Err(e), Err(w)) => assert!(e.contains(w), "{authority}: {e}"),
                (got, want) => panic!("{authority}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(parse_response(ok), Ok((200, b"hi".to_vec())));
        let nf = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(parse_response(nf), Ok((404, Vec::new())));
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }
}
