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
    let Some((_, s)) = serve_probe("dp-big", &["--memory", "256Mi"]) else {
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
