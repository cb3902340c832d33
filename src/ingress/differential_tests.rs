//! Differential test of the two HTTP/1 paths (issue 18): a request head served by runlet's
//! own raw path (`downstream.rs`, a bodiless request) and the same head served by hyper (a
//! one-byte body sends it there) must reach the instance the same: same status to the
//! client, same request line, the same header fields once the framing fields (the
//! body's own `Content-Length`) are set aside. The heads are random (proptest): methods,
//! targets, field names of every shape (hop-by-hop, forwarding, trace, `_`), values with
//! quotes, commas and obs-text, several `Host` fields or none.
//!
//! The instance is a raw TCP server that answers each request with the head it received,
//! so nothing between the ingress and the test normalises what arrived. `PROPTEST_CASES`
//! sets the number of heads (default 48); deploy/fuzz.sh runs it longer.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::loopback_tests::{ingress, route_to};
use super::RouteTable;

/// An instance answering every request with the bytes of its head as the body.
async fn echo_instance() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(echo_connection(s));
        }
    });
    addr
}

async fn echo_connection(mut s: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = buf[..end + 4].to_vec();
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut slots);
        let Ok(httparse::Status::Complete(_)) = req.parse(&head) else {
            return;
        };
        let length: usize = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + 4 + length);
        let mut out =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", head.len()).into_bytes();
        out.extend_from_slice(&head);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One generated request: its line and its fields, written out by [`Req::bytes`].
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    target: String,
    fields: Vec<(String, Vec<u8>)>,
    /// A valid `traceparent` among the fields: the trace headers are then deterministic.
    traced: bool,
}

impl Req {
    /// The request as sent; `body` adds a one-byte body (which hyper serves).
    fn bytes(&self, body: bool) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (n, v) in &self.fields {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        if body {
            out.extend_from_slice(b"content-length: 1\r\n\r\nx");
        } else {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-forwarded-for".to_string()),
        Just("X-Forwarded-Proto".to_string()),
        Just("forwarded".to_string()),
        Just("traceparent".to_string()),
        Just("x-cloud-trace-context".to_string()),
        Just("keep-alive".to_string()),
        Just("te".to_string()),
        Just("trailer".to_string()),
        Just("proxy-connection".to_string()),
        Just("x_under_score".to_string()),
        Just("accept".to_string()),
        Just("cookie".to_string()),
        "[a-zA-Z][-a-zA-Z0-9_!#$%&'*+.^`|~]{0,20}",
    ]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        "[a-z0-9.:-]{1,20}".prop_map(String::into_bytes),
        Just(b"a\",for=6.6.6.6;host=\"b".to_vec()),
        Just(b"[::1]:8080".to_vec()),
        Just(b"svc:8080".to_vec()),
        proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..30),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    let method = prop_oneof![
        Just("GET"),
        Just("DELETE"),
        Just("OPTIONS"),
        Just("POST"),
        Just("PUT"),
        Just("PATCH"),
    ];
    let target = "/[-a-zA-Z0-9/._~%!$&'()*+,;=:@?]{0,40}";
    let fields = proptest::collection::vec((field_name(), field_value()), 0..10);
    // Mostly one Host (of any shape); sometimes none, or two, which are refused (400).
    let hosts = prop_oneof![
        1 => Just(Vec::new()),
        1 => (field_value(), field_value()).prop_map(|(a, b)| vec![a, b]),
        6 => field_value().prop_map(|v| vec![v]),
        6 => Just(vec![b"svc".to_vec()]),
    ];
    (method, target, fields, hosts, any::<bool>()).prop_map(
        |(method, target, mut fields, hosts, traced)| {
            for (i, h) in hosts.into_iter().enumerate() {
                let name = if i == 0 { "Host" } else { "host" };
                fields.insert(i * fields.len() / 2, (name.into(), h));
            }
            if traced {
                fields.retain(|(n, _)| !n.eq_ignore_ascii_case("traceparent"));
                fields.push(("traceparent".into(), TRACEPARENT.as_bytes().to_vec()));
            }
            Req {
                method,
                target,
                fields,
                traced,
            }
        },
    )
}

/// What the client saw: the status line, and for a 200 the head the instance received,
/// as (request line, fields with lowercased names, in order per name).
#[derive(Debug, PartialEq)]
struct Seen {
    status: String,
    line: String,
    fields: Vec<(String, Vec<u8>)>,
}

async fn send(addr: SocketAddr, bytes: &[u8], traced: bool) -> Seen {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    // The answer: a head and a body of its content-length (the connection may stay open).
    let done = |got: &[u8]| -> bool {
        let Some(end) = find(got, b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        got.len() >= end + 4 + length
    };
    let read = async {
        while !done(&got) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no answer within 10 s");
    let end = find(&got, b"\r\n\r\n").expect("a response head");
    let status =
        String::from_utf8_lossy(&got[..got.iter().position(|&b| b == b'\r').unwrap()]).into_owned();
    if !status.contains(" 200 ") {
        return Seen {
            status,
            line: String::new(),
            fields: Vec::new(),
        };
    }
    let body = &got[end + 4..];
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    req.parse(body).expect("the instance echoes a head");
    let line = format!("{} {}", req.method.unwrap(), req.path.unwrap());
    let mut fields: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .filter(|(n, _)| n != "content-length")
        .map(|(n, v)| {
            // Without a valid traceparent of the client's, the trace ids are random.
            let random = !traced && (n == "traceparent" || n == "x-cloud-trace-context");
            (n, if random { b"*".to_vec() } else { v })
        })
        .collect();
    // hyper's HeaderMap keeps the fields of one name together: compare names in order,
    // and each name's values in the order they came.
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Seen {
        status,
        line,
        fields,
    }
}

#[test]
fn a_head_reaches_the_instance_the_same_through_the_raw_path_and_through_hyper() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let instance = echo_instance().await;
        let (addr, _routes, _metrics) =
            ingress(RouteTable::single(route_to("svc", instance, 10))).await;
        std::mem::forget(_routes);
        addr
    });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let same = |req: &Req| {
        let (raw, hyper) = rt.block_on(async {
            (
                send(addr, &req.bytes(false), req.traced).await,
                send(addr, &req.bytes(true), req.traced).await,
            )
        });
        let forwarded = raw.status.contains(" 200 ");
        (raw == hyper, forwarded, raw, hyper)
    };
    for req in seeds() {
        let (equal, _, raw, hyper) = same(&req);
        assert!(equal, "seed {req:?}:\nraw:   {raw:?}\nhyper: {hyper:?}");
    }
    let forwarded = std::cell::Cell::new(0u32);
    runner
        .run(&request(), |req| {
            let (equal, ok, raw, hyper) = same(&req);
            forwarded.set(forwarded.get() + u32::from(ok));
            prop_assert!(equal, "raw:   {:?}\nhyper: {:?}", raw, hyper);
            Ok(())
        })
        .unwrap();
    // The comparison means something only if requests got through.
    assert!(
        forwarded.get() * 5 >= cases,
        "only {} of {cases} random requests were forwarded",
        forwarded.get()
    );
}

/// Heads that are known to be hard for a proxy: each must reach the instance the same way
/// on both paths, before any random one is tried.
fn seeds() -> Vec<Req> {
    let req = |fields: &[(&str, &[u8])]| Req {
        method: "GET",
        target: "/seed?a=1&b=%20".into(),
        fields: fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
        traced: false,
    };
    vec![
        req(&[("Host", b"svc")]),
        req(&[("Host", b"a\",for=6.6.6.6;host=\"b")]),
        req(&[("Host", b"[::1]:8080"), ("Forwarded", b"for=1.2.3.4")]),
        req(&[("Host", b"svc"), ("X-Forwarded-For", b"1.2.3.4, 5.6.7.8")]),
        req(&[
            ("Host", b"svc"),
            ("Connection", b"x-drop, keep-alive"),
            ("x-drop", b"1"),
        ]),
        req(&[
            ("Host", b"svc"),
            ("TE", b"trailers"),
            ("Keep-Alive", b"timeout=5"),
        ]),
        req(&[("Host", b"svc"), ("x_under", b"1"), ("x-under", b"2")]),
        req(&[
            ("Host", b"svc"),
            (
                "x-cloud-trace-context",
                b"105445aa7843bc8bf206b12000100000/1;o=1",
            ),
        ]),
        req(&[("Host", b"svc"), ("traceparent", b"00-zz-1-01")]),
        req(&[("Host", b"svc"), ("x-obs", b"caf\xe9")]),
        req(&[("Host", b"svc"), ("Host", b"other")]),
        req(&[]),
    ]
}
