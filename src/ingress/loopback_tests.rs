//! The ingress end to end on loopback: real hyper upstream servers on `127.0.0.1:0`, the
//! ingress in front of them with a route table, and clients speaking HTTP/1.1 (the raw
//! path and hyper's) and HTTP/2 (prior knowledge). Routing by host, a route replaced while
//! requests are on it, a single route, listening on several addresses, and an instance
//! marked out of memory under requests in flight, streams and a tunnel (LIFE-9).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{
    bind, serve, start, Death, Demand, Endpoint, IngressConfig, Route, RouteTable, Snapshot,
};
use crate::dial::Loopback;
use crate::metrics::Metrics;

/// An upstream (an instance): a hyper HTTP/1.1 server answering `NAME PATH` (and the
/// request body after it, if any). `/hold` answers only once `release` is sent true;
/// `/stream` sends `NAME first\n` at once and `last\n` once released; `/ws` switches
/// protocols (101) and then writes `NAME` on the upgraded connection (and `/ws-hold` keeps
/// it open until released).
struct Upstream {
    addr: SocketAddr,
    /// Requests that reached it.
    arrived: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

async fn upstream(name: &'static str) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(AtomicUsize::new(0));
    let (release, released) = watch::channel(false);
    let counted = arrived.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (counted, released) = (counted.clone(), released.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut released = released.clone();
                async move {
                    let path = req.uri().path().to_string();
                    if path.starts_with("/ws") {
                        let upgraded = hyper::upgrade::on(req);
                        let hold = path == "/ws-hold";
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(upgraded.await.unwrap());
                            io.write_all(name.as_bytes()).await.unwrap();
                            if hold {
                                let _ = released.wait_for(|r| *r).await;
                            }
                            let _ = io.shutdown().await;
                        });
                        let mut resp = Response::new(Full::default().boxed_unsync());
                        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        let h = resp.headers_mut();
                        h.insert("connection", "upgrade".parse().unwrap());
                        h.insert("upgrade", "websocket".parse().unwrap());
                        return Ok(resp);
                    }
                    if path == "/stream" {
                        let first = Frame::data(Bytes::from(format!("{name} first\n")));
                        let last = async move {
                            let _ = released.wait_for(|r| *r).await;
                            Ok(Frame::data(Bytes::from_static(b"last\n")))
                        };
                        let frames = futures::stream::once(async { Ok(first) })
                            .chain(futures::stream::once(last));
                        return Ok(Response::new(StreamBody::new(frames).boxed_unsync()));
                    }
                    if path == "/hold" {
                        let _ = released.wait_for(|r| *r).await;
                    }
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let text = format!("{name} {path}{}", String::from_utf8_lossy(&body));
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)).boxed_unsync()))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades(),
            );
        }
    });
    Upstream {
        addr,
        arrived,
        release,
    }
}

/// A route for `service` to the one instance `to`; the snapshot's sender is kept by the
/// route's test for its life (leaked: tests are short).
fn route(service: &str, to: &Upstream, concurrency: usize) -> Arc<Route> {
    route_to(service, to.addr, concurrency)
}

/// A route for `service` to the one instance listening at `addr` (see [`route`]).
pub(super) fn route_to(service: &str, addr: SocketAddr, concurrency: usize) -> Arc<Route> {
    let endpoint = Endpoint::new(
        format!("{service}-{}", addr.port()),
        addr.port(),
        Arc::new(Loopback(addr)),
        false,
    );
    let (tx, snapshot) = watch::channel(Snapshot {
        endpoints: vec![Arc::new(endpoint)],
        ..Default::default()
    });
    std::mem::forget(tx);
    Arc::new(Route {
        cfg: IngressConfig {
            service: service.into(),
            concurrency,
            hold: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_queue: 10,
            max_body: None,
        },
        snapshot,
        demand: Arc::new(Demand::default()),
    })
}

/// The ingress serving `table` on loopback: its address, the table's sender, its metrics.
pub(super) async fn ingress(
    table: RouteTable,
) -> (SocketAddr, watch::Sender<Arc<RouteTable>>, Arc<Metrics>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, routes) = watch::channel(Arc::new(table));
    let metrics = Metrics::new();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(serve(vec![listener], routes, metrics.clone(), stop));
    std::mem::forget(stop_tx);
    (addr, tx, metrics)
}

/// A client connection (HTTP/1.1 keep-alive, or HTTP/2 with prior knowledge).
struct Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);
struct Conn2(hyper::client::conn::http2::SendRequest<Full<Bytes>>);

async fn h1(addr: SocketAddr) -> Conn {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    Conn(send)
}

async fn h2(addr: SocketAddr) -> Conn2 {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    Conn2(send)
}

/// The status and body of a response.
async fn read(resp: Response<Incoming>) -> (StatusCode, String) {
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

impl Conn {
    /// GET (or POST `body`, which hyper serves) `path` with `Host: host`.
    async fn send(&mut self, host: &str, path: &str, body: &str) -> (StatusCode, String) {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.0.ready().await.unwrap();
        read(self.0.send_request(req).await.unwrap()).await
    }
}

impl Conn2 {
    /// GET `http://AUTHORITY/PATH`.
    async fn get(&mut self, authority: &str, path: &str) -> (StatusCode, String) {
        let req = Request::get(format!("http://{authority}{path}"))
            .body(Full::default())
            .unwrap();
        self.0.ready().await.unwrap();
        read(self.0.send_request(req).await.unwrap()).await
    }
}

/// Sends `raw` on a fresh connection and reads the answer to the connection's end.
async fn raw(addr: SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
        .await
        .expect("the connection was not closed")
        .unwrap();
    got
}

/// Waits (up to 5 s) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let waited = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), waited)
        .await
        .unwrap_or_else(|_| panic!("waited 5 s for {what}"));
}

#[tokio::test]
async fn hosts_reach_their_services_over_one_keep_alive_connection_and_over_http2() {
    let (a, b) = (upstream("A").await, upstream("B").await);
    let table = RouteTable::by_host([route("a", &a, 10), route("b", &b, 10)]);
    let (addr, _routes, metrics) = ingress(table).await;
    let port = addr.port();
    let ok = |body: &str| (StatusCode::OK, body.to_string());
    // HTTP/1.1 bodiless requests (served by the raw path), Hosts alternating on one
    // connection, with and without a port, in any case.
    let mut c = h1(addr).await;
    for round in 0..3 {
        let (a_host, b_host) = if round == 1 {
            ("A.LOCALHOST".to_string(), format!("B.localhost.:{port}"))
        } else {
            (format!("a.localhost:{port}"), "b.localhost".to_string())
        };
        assert_eq!(c.send(&a_host, "/x", "").await, ok("A /x"));
        assert_eq!(c.send(&b_host, "/y", "").await, ok("B /y"));
    }
    // A body hands the connection to hyper: still routed request by request.
    let mut c = h1(addr).await;
    assert_eq!(c.send("b.localhost", "/p", "1").await, ok("B /p1"));
    assert_eq!(c.send("a.localhost", "/q", "").await, ok("A /q"));
    assert_eq!(c.send("b.localhost", "/r", "").await, ok("B /r"));
    assert_eq!(c.send("a.localhost", "/s", "2").await, ok("A /s2"));
    // HTTP/2: by `:authority`, streams alternating and at once.
    let mut c = h2(addr).await;
    assert_eq!(
        c.get(&format!("a.localhost:{port}"), "/1").await,
        ok("A /1")
    );
    assert_eq!(c.get("b.localhost", "/2").await, ok("B /2"));
    let (mut c1, mut c2) = (Conn2(c.0.clone()), Conn2(c.0.clone()));
    let (x, y) = tokio::join!(c1.get("b.localhost", "/3"), c2.get("a.localhost", "/4"));
    assert_eq!((x, y), (ok("B /3"), ok("A /4")));
    // An upgrade (WebSocket) is routed too: the tunnel is to the host's service.
    for (host, name) in [("b.localhost", "B"), ("a.localhost", "A")] {
        let ws = format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
        let got = raw(addr, &ws).await;
        assert!(
            got.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{got}"
        );
        assert!(got.ends_with(&format!("\r\n\r\n{name}")), "{got}");
    }
    assert_eq!(
        (
            a.arrived.load(Ordering::SeqCst),
            b.arrived.load(Ordering::SeqCst)
        ),
        (8, 8)
    );
    // Each service's requests are counted under its name (flushed within 100 ms).
    let counted = |s: &str, class: &str| metrics.requests.with_label_values(&[s, class]).get();
    until("the requests counted by service", || {
        let each = |s| (counted(s, "2xx"), counted(s, "1xx"));
        each("a") == (7, 1) && each("b") == (7, 1)
    })
    .await;
}

#[tokio::test]
async fn a_host_naming_no_service_gets_404_naming_the_deployed_ones() {
    let (a, b) = (upstream("A").await, upstream("B").await);
    let table = RouteTable::by_host([route("b", &b, 10), route("a", &a, 10)]);
    let (addr, routes, metrics) = ingress(table).await;
    let mut c = h1(addr).await;
    let (status, body) = c.send("foo.localhost", "/", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        "Not Found: no service \"foo\" here; deployed: a, b.\n"
    );
    // The connection goes on, and is routed.
    assert_eq!(c.send("a.localhost", "/", "").await.1, "A /");
    // Other hosts, through hyper (a body) and over HTTP/2.
    let (status, body) = c.send("127.0.0.1", "/", "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no service for host \"127.0.0.1\""), "{body}");
    let (status, body) = h2(addr).await.get("[::1]:8080", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("\"[::1]:8080\"") && body.contains("deployed: a, b"),
        "{body}"
    );
    // No Host at all (HTTP/1.0), on the raw path: the answer says so, and its type.
    let got = raw(addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");
    assert!(
        got.contains("content-type: text/plain; charset=utf-8\r\n"),
        "{got}"
    );
    assert!(
        got.ends_with(
            "no host named (services are reached at SERVICE.localhost); deployed: a, b.\n"
        ),
        "{got}"
    );
    // Counted once each, under no service; nothing reached an instance.
    let refused = metrics
        .refusals
        .with_label_values(&["", "unknown_host"])
        .get();
    assert_eq!(refused, 4);
    assert_eq!(metrics.requests.with_label_values(&["", "4xx"]).get(), 4);
    assert_eq!(
        a.arrived.load(Ordering::SeqCst) + b.arrived.load(Ordering::SeqCst),
        1
    );
    // Nothing deployed.
    routes.send_replace(Arc::new(RouteTable::by_host([])));
    let (status, body) = c.send("a.localhost", "/", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        "Not Found: no service \"a\" here; no services are deployed.\n"
    );
}

#[tokio::test]
async fn a_replaced_route_finishes_what_it_admitted_and_the_next_request_takes_the_new_one() {
    let (old, new) = (upstream("OLD").await, upstream("NEW").await);
    let old_route = route("a", &old, 1);
    let table = RouteTable::by_host([old_route.clone()]);
    let (addr, routes, metrics) = ingress(table).await;
    // One request in flight on the old route, one waiting for it (concurrency 1).
    let mut in_flight = h1(addr).await;
    let in_flight = tokio::spawn(async move { in_flight.send("a.localhost", "/hold", "").await });
    until("the first request at the old instance", || {
        old.arrived.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut waiting = h1(addr).await;
    let waiting = tokio::spawn(async move { waiting.send("a.localhost", "/hold", "").await });
    until("the second request waiting on the old route", || {
        old_route.demand.queued.load(Ordering::SeqCst) == 1
    })
    .await;
    // The rollout: the service's route is now the new revision's.
    routes.send_replace(Arc::new(RouteTable::by_host([route("a", &new, 1)])));
    let mut next = h1(addr).await;
    assert_eq!(
        next.send("a.localhost", "/", "").await,
        (StatusCode::OK, "NEW /".into())
    );
    assert!(!in_flight.is_finished() && !waiting.is_finished());
    // The old instance answers both of the old route's requests.
    old.release.send_replace(true);
    let done = |r: (StatusCode, String)| r == (StatusCode::OK, "OLD /hold".into());
    assert!(done(in_flight.await.unwrap()));
    assert!(done(waiting.await.unwrap()));
    assert_eq!(old.arrived.load(Ordering::SeqCst), 2);
    assert_eq!(new.arrived.load(Ordering::SeqCst), 1);
    // The old route's lane is let go once its requests ended, its counts flushed.
    let counted = || metrics.requests.with_label_values(&["a", "2xx"]).get();
    until("the old route's requests counted", || counted() == 3).await;
    until("the old route let go", || {
        Arc::strong_count(&old_route) == 1
    })
    .await;
}

#[tokio::test]
async fn a_single_route_takes_every_request_whatever_its_host() {
    let a = upstream("A").await;
    let (addr, _routes, _) = ingress(RouteTable::single(route("a", &a, 10))).await;
    let mut c = h1(addr).await;
    for host in [
        "a.localhost",
        "b.localhost",
        "127.0.0.1:80",
        "[::1]",
        "example.com",
    ] {
        assert_eq!(
            c.send(host, "/", "").await,
            (StatusCode::OK, "A /".into()),
            "{host}"
        );
    }
    assert_eq!(c.send("b.localhost", "/", "x").await.1, "A /x");
    assert_eq!(h2(addr).await.get("zzz.localhost", "/").await.1, "A /");
    let got = raw(addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("A /"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_worker_accepts_on_every_address_and_an_address_in_use_is_refused() {
    let a = upstream("A").await;
    let any = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 0);
    // Two addresses (both loopback), three workers: three groups of two.
    let groups = bind(&[any("127.0.0.1"), any("127.0.0.2")], 3).unwrap();
    assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
    let addrs: Vec<SocketAddr> = groups[0].iter().map(|l| l.local_addr().unwrap()).collect();
    for group in &groups {
        let here: Vec<_> = group.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_eq!(here, addrs);
    }
    // Taken (by this runlet's group, or by anyone): refused, naming the address.
    for taken in [
        addrs[1],
        std::net::TcpListener::bind(any("127.0.0.1"))
            .unwrap()
            .local_addr()
            .unwrap(),
    ] {
        let err = bind(&[any("127.0.0.1"), taken], 2).unwrap_err();
        assert_eq!(
            (err.addr, err.source.kind()),
            (taken, std::io::ErrorKind::AddrInUse)
        );
    }
    let table = RouteTable::single(route("a", &a, 100));
    let (_routes_tx, routes) = watch::channel(Arc::new(table));
    let (stop_tx, stop) = watch::channel(false);
    let metrics = Metrics::new();
    let ingress = start(groups, routes, metrics, stop, tracing::Span::none()).unwrap();
    // Fresh connections on both addresses (the kernel spreads them over the workers).
    for i in 0..20 {
        let got = raw(
            addrs[i % 2],
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("A /"),
            "{got}"
        );
    }
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), ingress.join())
        .await
        .expect("the workers did not stop");
    for addr in addrs {
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
    }
}

/// Reads from `s` until what was read contains `want`, up to 5 s.
async fn read_until(s: &mut TcpStream, want: &str) -> String {
    let mut got = Vec::new();
    let reading = async {
        while !String::from_utf8_lossy(&got).contains(want) {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {want:?}: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .unwrap_or_else(|_| panic!("no {want:?} within 5 s"));
    String::from_utf8(got).unwrap()
}

/// What is left to read on `s` until the connection closes; panics if it stays open 2 s.
async fn rest_until_closed(s: &mut TcpStream) -> String {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest))
        .await
        .expect("the connection stayed open")
        .ok();
    String::from_utf8_lossy(&rest).into_owned()
}

#[tokio::test]
async fn an_instance_marked_out_of_memory_gets_500_for_its_requests_and_its_streams_cut() {
    let a = upstream("A").await;
    let route = route("a", &a, 100);
    let endpoint = route.snapshot.borrow().endpoints[0].clone();
    let (addr, _routes, metrics) = ingress(RouteTable::single(route)).await;
    // Held in flight at the instance: on the raw path (a bodiless HTTP/1.1 GET), through
    // hyper (a POST with a body), and over HTTP/2.
    let (mut c1, mut c2, mut c3) = (h1(addr).await, h1(addr).await, h2(addr).await);
    let held = [
        tokio::spawn(async move { c1.send("a", "/hold", "").await }),
        tokio::spawn(async move { c2.send("a", "/hold", "x").await }),
        tokio::spawn(async move { c3.get("a", "/hold").await }),
    ];
    // Streaming, the head and first chunk through: raw HTTP/1.1 (chunked) and HTTP/2.
    let mut raw_stream = TcpStream::connect(addr).await.unwrap();
    raw_stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut raw_stream, "A first\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let mut c4 = h2(addr).await;
    c4.0.ready().await.unwrap();
    let resp =
        c4.0.send_request(
            Request::get("http://a/stream")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut h2_stream = resp.into_body();
    let first = h2_stream
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"A first\n");
    // And a WebSocket tunnel, open.
    let mut ws = TcpStream::connect(addr).await.unwrap();
    ws.write_all(
        b"GET /ws-hold HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    read_until(&mut ws, "\r\n\r\nA").await;
    until("every request at the instance", || {
        a.arrived.load(Ordering::SeqCst) == 6
    })
    .await;

    // The control path learns of an OOM kill (a child's: the instance still holds all of
    // them) and marks the endpoint; nothing else is told.
    let marked = tokio::time::Instant::now();
    endpoint.mark_dead(Death::OutOfMemory);
    for h in held {
        let (status, body) = tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .expect("a request in flight was not answered at once")
            .unwrap();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(body.contains("exceeded its memory limit"), "{body}");
    }
    // The streams are cut, not ended: no last chunk, no chunked terminator; HTTP/2's
    // stream is reset.
    let rest = rest_until_closed(&mut raw_stream).await;
    assert!(
        !rest.contains("last") && !rest.contains("0\r\n\r\n"),
        "{rest:?}"
    );
    let cut = tokio::time::timeout(Duration::from_secs(2), h2_stream.frame())
        .await
        .expect("the HTTP/2 stream was not cut");
    assert!(matches!(cut, Some(Err(_))), "{cut:?}");
    assert_eq!(rest_until_closed(&mut ws).await, "", "the tunnel is closed");
    assert!(marked.elapsed() < Duration::from_secs(1));
    // Counted as out-of-memory refusals, and the endpoint takes no new request.
    let refused = || {
        metrics
            .refusals
            .with_label_values(&["a", "out_of_memory"])
            .get()
    };
    until("three out-of-memory refusals counted", || refused() == 3).await;
    until("every slot given back", || endpoint.in_flight() == 0).await;
    assert!(endpoint.closed.load(Ordering::SeqCst));
}

/// A WebSocket keeps its client connection counted against the connection cap for as long
/// as the tunnel is open: hyper's connection ends at the upgrade, the connection does not.
#[tokio::test]
async fn an_open_websocket_counts_as_an_open_connection_until_it_closes() {
    let a = upstream("A").await;
    let (addr, _routes, metrics) = ingress(RouteTable::single(route("a", &a, 10))).await;
    let mut ws = TcpStream::connect(addr).await.unwrap();
    ws.write_all(
        b"GET /ws-hold HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    read_until(&mut ws, "\r\n\r\nA").await;
    // Given time to (wrongly) give its place back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        metrics.connections.get(),
        1,
        "the open tunnel's connection is not counted"
    );
    // A plain request beside it: two open, then one again once it is closed.
    let mut c = h1(addr).await;
    assert_eq!(c.send("a", "/x", "").await, (StatusCode::OK, "A /x".into()));
    assert_eq!(metrics.connections.get(), 2);
    drop(c);
    until("the plain connection given back", || {
        metrics.connections.get() == 1
    })
    .await;
    // The tunnel closes: its place is given back.
    a.release.send(true).unwrap();
    assert_eq!(rest_until_closed(&mut ws).await, "");
    drop(ws);
    until("the tunnel's connection given back", || {
        metrics.connections.get() == 0
    })
    .await;
}
