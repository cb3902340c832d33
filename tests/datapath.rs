//! The service data path against real containers: concurrency, the hold queue, request
//! timeouts, header rules, protocols (h2c, gRPC, WebSocket, SSE), streaming in bounded
//! memory, metrics.
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{free_port, http, serve_probe, Served};

fn probe_requests_total(s: &Served) -> u64 {
    s.get("/").json().unwrap()["concurrency"]["requests_total"]
        .as_u64()
        .unwrap()
}

#[test]
fn concurrency_one_never_overlaps_inside_the_container() {
    let Some((_, s)) = serve_probe("dp-conc", &["--concurrency", "1", "--max-instances", "1"])
    else {
        return;
    };
    let addr = s.listen;
    let threads: Vec<_> = (0..5)
        .map(|_| {
            std::thread::spawn(move || {
                (0..4)
                    .map(|_| http(addr, "GET", "/?sleep=150", &[], b""))
                    .map(|r| {
                        (
                            r.status,
                            r.json().unwrap()["concurrency"]["max_in_flight"].as_u64(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (status, max) in t.join().unwrap() {
            assert_eq!(status, 200);
            assert_eq!(max, Some(1), "the instance saw overlapping requests");
        }
    }
}

#[test]
fn hold_expires_with_429_when_the_service_is_at_max_instances() {
    let maddr = format!("127.0.0.1:{}", free_port());
    let Some((_, s)) = serve_probe(
        "dp-hold",
        &[
            "--concurrency",
            "1",
            "--max-instances",
            "1",
            "--metrics-listen",
            &maddr,
        ],
    ) else {
        return;
    };
    let addr = s.listen;
    let busy = std::thread::spawn(move || http(addr, "GET", "/?sleep=13000", &[], b""));
    // The one slot is taken (asking the probe would be held too).
    s.wait_in_flight("dp-hold", 1);
    let t0 = Instant::now();
    let r = http(addr, "GET", "/", &[], b"");
    let waited = t0.elapsed();
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("Rate exceeded"), "{}", r.text());
    assert!(
        waited >= Duration::from_millis(9500) && waited < Duration::from_secs(12),
        "held {waited:?}, expected ~10 s"
    );
    assert_eq!(busy.join().unwrap().status, 200);
}

#[test]
fn request_timeout_gives_504_before_headers_and_cuts_a_started_body() {
    let Some((_, s)) = serve_probe("dp-timeout", &["--timeout", "2"]) else {
        return;
    };
    let t0 = Instant::now();
    let r = s.get("/?sleep=5000");
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(3500),
        "504 after {took:?}"
    );
    // Headers flushed at once, body later: the status stays 200 and the body is cut.
    let t0 = Instant::now();
    let r = s.get("/?flush_then_sleep=5000");
    let took = t0.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("started") && !r.text().contains("done"),
        "body: {:?}",
        r.text()
    );
    assert!(took < Duration::from_millis(3500), "cut after {took:?}");
    // The instance keeps running and serves the next request.
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn bad_request_headers_get_400_and_never_reach_the_container() {
    let Some((_, s)) = serve_probe("dp-headers", &[]) else {
        return;
    };
    let before = probe_requests_total(&s);
    let bad: [(&str, &[u8]); 4] = [
        ("X-Obs", b"caf\xc3\xa9"),
        ("X-Ctl", b"a\x01b"),
        ("Bad Name", b"v"),
        ("X-Del", b"a\x7fb"),
    ];
    for (name, value) in bad {
        let r = http(s.listen, "GET", "/", &[(name, value)], b"");
        assert_eq!(r.status, 400, "{name:?}: {}", r.text());
    }
    let after = probe_requests_total(&s);
    assert_eq!(
        after,
        before + 1,
        "only the counting request reached the container"
    );
    // Those hyper refuses while parsing are logged like runlet's own refusals.
    assert!(
        s.wait_for_output("refused: malformed request", Duration::from_secs(5)),
        "{}",
        s.output()
    );
    assert!(s.output().contains("bad_header"), "{}", s.output());
}

#[test]
fn response_headers_breaking_the_rules_are_dropped() {
    let Some((_, s)) = serve_probe("dp-resp-headers", &[]) else {
        return;
    };
    let r = s.get("/?badheader=1");
    assert_eq!(r.status, 200);
    assert!(
        !r.headers.iter().any(|(k, _)| k == "x-probe-bad"),
        "{:?}",
        r.headers
    );
    assert!(
        s.wait_for_output("dropped response headers", Duration::from_secs(5)),
        "{}",
        s.output()
    );
}

#[test]
fn http2_end_to_end_only_with_use_http2_and_grpc_works() {
    let Some((env, h1)) = serve_probe("dp-h1", &[]) else {
        return;
    };
    assert_eq!(
        h1.get("/").json().unwrap()["request"]["version"],
        "HTTP/1.1"
    );
    let h2 = env.serve_probe("dp-h2", &["--use-http2"]);
    assert_eq!(
        h2.get("/").json().unwrap()["request"]["version"],
        "HTTP/2.0"
    );
    // A client speaking h2c (prior knowledge) to runlet, and a real gRPC call.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = h2.listen;
    let status = rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status)
    });
    assert_eq!(
        status.unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[test]
fn websocket_echo_passes_through() {
    let Some((_, s)) = serve_probe("dp-ws", &[]) else {
        return;
    };
    let (mut ws, resp) = tungstenite::connect(format!("ws://{}/ws", s.listen))
        .expect("WebSocket handshake through runlet");
    assert_eq!(resp.status(), 101);
    for msg in ["hello", "world"] {
        ws.send(tungstenite::Message::text(msg)).unwrap();
        let back = ws.read().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    ws.close(None).unwrap();
}

#[test]
fn server_sent_events_arrive_as_they_are_sent() {
    let Some((_, s)) = serve_probe("dp-sse", &[]) else {
        return;
    };
    let mut c = TcpStream::connect(s.listen).unwrap();
    c.write_all(
        format!(
            "GET /?sse=4&interval=700 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            s.listen
        )
        .as_bytes(),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut seen = Vec::new();
    let mut first_at = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if first_at.is_none() && String::from_utf8_lossy(&seen).contains("data: 1") {
            first_at = Some(t0.elapsed());
        }
    }
    let total = t0.elapsed();
    let first = first_at.expect("first event");
    assert!(String::from_utf8_lossy(&seen).contains("data: 4"));
    assert!(
        total >= Duration::from_millis(2000),
        "all events took {total:?}"
    );
    assert!(
        first < Duration::from_millis(1000),
        "first event after {first:?}: buffered, not streamed"
    );
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn hundred_mib_bodies_stream_both_ways_in_bounded_memory() {
    let Some((_, s)) = serve_probe(
        "dp-big",
        &["--memory", "256Mi", "--max-request-body-size", "unlimited"],
    ) else {
        return;
    };
    const SIZE: u64 = 100 << 20;
    // Upload, streamed from here in 1 MiB writes.
    let mut c = TcpStream::connect(s.listen).unwrap();
    c.write_all(format!("POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes()).unwrap();
    let chunk = vec![b'u'; 1 << 20];
    for _ in 0..100 {
        c.write_all(&chunk).unwrap();
    }
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.contains(&format!("\"received\":{SIZE}")), "{resp}");
    // Download, read and dropped as it comes.
    let mut c = TcpStream::connect(s.listen).unwrap();
    c.write_all(
        format!("GET /?bytes={SIZE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(total > SIZE, "got {total} bytes");
    let peak = peak_rss_kib(s.child.id());
    assert!(
        peak < 64 * 1024,
        "runlet's peak RSS was {peak} KiB while streaming 100 MiB each way"
    );
}

#[test]
fn metrics_are_served_in_prometheus_text() {
    let maddr = format!("127.0.0.1:{}", free_port());
    let Some((_, s)) = serve_probe("dp-metrics", &["--metrics-listen", &maddr]) else {
        return;
    };
    assert_eq!(s.get("/").status, 200);
    let bad = http(s.listen, "GET", "/", &[("X-Obs", b"\xff")], b"");
    assert_eq!(bad.status, 400);
    // Each ingress thread adds up its requests and flushes them at least every 100 ms.
    let scrape = || http(maddr.parse().unwrap(), "GET", "/metrics", &[], b"").text();
    let needles = [
        "runlet_requests_total{code_class=\"2xx\",service=\"dp-metrics\"} 1\n",
        "runlet_requests_total{code_class=\"4xx\",service=\"dp-metrics\"} 1\n",
        "runlet_request_duration_seconds_count{service=\"dp-metrics\"} 2\n",
        "runlet_refusals_total{reason=\"bad_header\",service=\"dp-metrics\"} 1",
        "runlet_request_duration_seconds_bucket",
        "runlet_instances{service=\"dp-metrics\",state=\"ready\"} 1",
        "runlet_instance_startup_seconds_count{service=\"dp-metrics\"} 1",
    ];
    let mut m = scrape();
    for _ in 0..40 {
        if needles.iter().all(|n| m.contains(n)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        m = scrape();
    }
    for needle in needles {
        assert!(m.contains(needle), "missing {needle} in:\n{m}");
    }
}

/// The request headers the probe saw, names lowercased.
fn seen_headers(r: &common::Response) -> Vec<(String, String)> {
    let j = r.json().unwrap();
    let pairs: Vec<(String, String)> =
        serde_json::from_value(j["request"]["headers"].clone()).unwrap();
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

#[test]
fn host_cannot_forge_forwarded_and_duplicate_or_missing_host_gets_400() {
    let Some((_, s)) = serve_probe("dp-host", &[]) else {
        return;
    };
    let before = probe_requests_total(&s);
    // Two Host fields (served by runlet's own parser, and with a body by hyper's), or none
    // on HTTP/1.1: 400, and the container sees none of them.
    for (head, body) in [
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", ""),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n",
            "hi",
        ),
        ("GET / HTTP/1.1\r\n", ""),
        ("POST / HTTP/1.1\r\nContent-Length: 2\r\n", "hi"),
    ] {
        let mut c = TcpStream::connect(s.listen).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(format!("{head}Connection: close\r\n\r\n{body}").as_bytes())
            .unwrap();
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{head:?}: {resp}");
    }
    assert_eq!(probe_requests_total(&s), before + 1);
    // A Host that would end Forwarded's quoted string stays inside it.
    let evil: &[u8] = b"a\",for=6.6.6.6;host=\"b";
    let r = http(s.listen, "GET", "/", &[("Host", evil)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = seen_headers(&r);
    let fwd: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "forwarded")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        fwd,
        [r#"for=127.0.0.1;proto=http;host="a\",for=6.6.6.6;host=\"b""#],
        "{headers:?}"
    );
    // Names with `_` reach the container (as on Cloud Run).
    let r = http(s.listen, "GET", "/", &[("X_User_Id", b"7")], b"");
    assert!(
        seen_headers(&r).contains(&("x_user_id".into(), "7".into())),
        "{:?}",
        seen_headers(&r)
    );
}

/// Sends a POST to `/upload` with a body of `size` bytes, chunked in 1 MiB chunks when
/// `chunked`, else with its length (only the head when `head_only`), while reading the
/// response; returns the response as text.
fn upload(addr: std::net::SocketAddr, size: usize, chunked: bool, head_only: bool) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {size}")
    };
    c.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{framing}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        if head_only {
            return;
        }
        // The ingress may stop reading (and close) once it has refused: errors end it.
        let block = vec![b'u'; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len());
            let r = if chunked {
                w.write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| w.write_all(&block[..n]))
                    .and_then(|()| w.write_all(b"\r\n"))
            } else {
                w.write_all(&block[..n])
            };
            if r.is_err() {
                return;
            }
            left -= n;
        }
        if chunked {
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    let mut resp = Vec::new();
    let _ = c.read_to_end(&mut resp);
    let _ = writer.join();
    String::from_utf8_lossy(&resp).into_owned()
}

#[test]
fn request_bodies_over_32_mib_get_413_over_http1_and_pass_with_use_http2() {
    let Some((env, s)) = serve_probe("dp-body", &[]) else {
        return;
    };
    const LIMIT: usize = 32 << 20;
    // At the limit, with a length and chunked: the container gets it all.
    for chunked in [false, true] {
        let resp = upload(s.listen, LIMIT, chunked, false);
        assert!(
            resp.contains(&format!("\"received\":{LIMIT}")),
            "chunked={chunked}: {resp:.300}"
        );
    }
    // Over it: a length says so before the body is sent (the container never hears of it,
    // only the counting request reaches it)...
    let before = probe_requests_total(&s);
    let resp = upload(s.listen, LIMIT + 1, false, true);
    assert!(resp.starts_with("HTTP/1.1 413 "), "{resp:.300}");
    assert_eq!(probe_requests_total(&s), before + 1);
    // ...and a chunked body is cut as it passes the limit.
    let resp = upload(s.listen, LIMIT + (1 << 20), true, false);
    assert!(resp.starts_with("HTTP/1.1 413 "), "{resp:.300}");
    // HTTP/2 to the container: Cloud Run has no limit.
    let h2 = env.serve_probe("dp-body-h2", &["--use-http2"]);
    let size = LIMIT + (1 << 20);
    let resp = upload(h2.listen, size, true, false);
    assert!(
        resp.contains(&format!("\"received\":{size}")),
        "{resp:.300}"
    );
}

#[test]
fn a_client_that_never_reads_frees_its_slot_at_the_request_timeout() {
    let maddr = format!("127.0.0.1:{}", free_port());
    let Some((_, s)) = serve_probe(
        "dp-zerowin",
        &[
            "--timeout",
            "3s",
            "--concurrency",
            "1",
            "--max-instances",
            "1",
            "--metrics-listen",
            &maddr,
        ],
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A tiny receive buffer, a request for 1 GiB, and never a read: the window closes.
    let addr = s.listen;
    let stuck = rt.block_on(async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(2048).unwrap();
        let mut c = sock.connect(addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        c.write_all(b"GET /?bytes=1073741824 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        c
    });
    s.wait_in_flight("dp-zerowin", 1);
    let t0 = Instant::now();
    // Released at the request timeout though the client still has not read.
    s.wait_in_flight("dp-zerowin", 0);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let r = s.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    drop(stuck);
}
