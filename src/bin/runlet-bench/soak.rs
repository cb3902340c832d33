//! `soak URL --rate R --duration D --pid PID [--websockets N] [--burst N] [--every S]`:
//! a long mixed load on one service, watching the runlet process `PID` (issue 18's soak):
//!
//! - short requests (`GET URL`) at `R` per second, open loop (latency from each request's
//!   scheduled time, as `rate` measures it);
//! - a streamed response every 200 ms (`?flush_then_sleep=300`: a first chunk at once, the
//!   rest 300 ms later);
//! - `N` WebSockets (default 20) held open the whole time, each sending a message every
//!   5 s and expecting it echoed; one that the request timeout (`--request-timeout`, 300 s
//!   as runlet's default) closes is expected, counted apart, and opened again;
//! - every `S` seconds (default 60) a burst of `N` (default 40) requests that each take 3 s
//!   (`?sleep=3000`): more than the running instances take at once, so the service scales
//!   up, and scales in again during the quiet part of the cycle (start runlet with a short
//!   `--idle-timeout`);
//! - every 10 s, runlet's RSS and open file descriptors.
//!
//! Prints one JSON object: counts and non-2xx per kind, the short requests' p50/p99, and the
//! samples with how far RSS and fds moved between the first sample after the first cycle
//! and the last.

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::{client, percentile, HttpClient};

pub struct Soak {
    pub url: hyper::Uri,
    pub rate: f64,
    pub duration: Duration,
    pub pid: u32,
    pub websockets: usize,
    pub burst: usize,
    pub every: Duration,
    /// The service's request timeout (a WebSocket is closed then).
    pub request_timeout: Duration,
}

/// Requests of one kind: how many, and how many did not get a 2xx (or failed).
#[derive(Default)]
struct Kind {
    sent: AtomicUsize,
    bad: AtomicUsize,
}

impl Kind {
    fn count(&self, ok: bool) {
        self.sent.fetch_add(1, Relaxed);
        if !ok {
            self.bad.fetch_add(1, Relaxed);
        }
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({"sent": self.sent.load(Relaxed), "non_2xx_or_failed": self.bad.load(Relaxed)})
    }
}

async fn get_ok(c: &HttpClient, url: hyper::Uri) -> bool {
    match c.get(url).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            ok & resp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

fn with_query(url: &hyper::Uri, query: &str) -> Result<hyper::Uri> {
    let base = url.to_string();
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}{query}").parse()?)
}

/// (RSS in KiB, open fds) of `pid`.
fn sample(pid: u32) -> Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("runlet (pid {pid}) is gone"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds))
}

/// One WebSocket held open until `end`, a message every 5 s; false at the first failure.
fn websocket(url: &hyper::Uri, end: std::time::Instant) -> bool {
    let authority = url.authority().map(|a| a.to_string()).unwrap_or_default();
    let Ok(stream) = TcpStream::connect(&authority) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok((mut ws, _)) = tungstenite::client(format!("ws://{authority}/ws"), stream) else {
        return false;
    };
    let mut n = 0u64;
    while std::time::Instant::now() < end {
        n += 1;
        let text = format!("soak {n}");
        if ws.send(tungstenite::Message::text(text.clone())).is_err() {
            return false;
        }
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) if t.as_str() == text => {}
            _ => return false,
        }
        std::thread::sleep(
            Duration::from_secs(5).min(end.saturating_duration_since(std::time::Instant::now())),
        );
    }
    // The close handshake: read until the echoed close ends the session.
    let _ = ws.close(None);
    while ws.read().is_ok() {}
    true
}

pub async fn soak(s: Soak) -> Result<()> {
    let c = client(64);
    let start = Instant::now();
    let end = start + s.duration;
    let (short, stream, ws, burst) = (
        Arc::new(Kind::default()),
        Arc::new(Kind::default()),
        Arc::new(Kind::default()),
        Arc::new(Kind::default()),
    );
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));

    // WebSockets, each on its own thread (tungstenite is blocking).
    let std_end = std::time::Instant::now() + s.duration;
    // Cloud Run closes a WebSocket at the request timeout (runlet too): a session that ends
    // then is expected, and the client connects again, as a Cloud Run client must.
    let at_timeout = Arc::new(AtomicUsize::new(0));
    let ws_threads: Vec<_> = (0..s.websockets)
        .map(|_| {
            let (url, ws, at_timeout) = (s.url.clone(), ws.clone(), at_timeout.clone());
            let timeout = s.request_timeout;
            std::thread::spawn(move || {
                while std::time::Instant::now() < std_end {
                    let began = std::time::Instant::now();
                    let ok = websocket(&url, std_end);
                    // (A second's slack for the close to arrive.)
                    if !ok && began.elapsed() + Duration::from_secs(1) >= timeout {
                        at_timeout.fetch_add(1, Relaxed);
                        ws.count(true);
                    } else {
                        ws.count(ok);
                    }
                }
            })
        })
        .collect();

    // Streams.
    let streams = {
        let (c, url, stream) = (
            c.clone(),
            with_query(&s.url, "flush_then_sleep=300")?,
            stream.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut running = Vec::new();
            while Instant::now() < end {
                tick.tick().await;
                let (c, url, stream) = (c.clone(), url.clone(), stream.clone());
                running.push(tokio::spawn(
                    async move { stream.count(get_ok(&c, url).await) },
                ));
            }
            for r in running {
                let _ = r.await;
            }
        })
    };

    // Bursts: scale up, then quiet until the next one (scale in).
    let bursts = {
        let (c, url, burst, n, every) = (
            client(s.burst),
            with_query(&s.url, "sleep=3000")?,
            burst.clone(),
            s.burst,
            s.every,
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if Instant::now() >= end {
                    break;
                }
                let all: Vec<_> = (0..n)
                    .map(|_| {
                        let (c, url, burst) = (c.clone(), url.clone(), burst.clone());
                        tokio::spawn(async move { burst.count(get_ok(&c, url).await) })
                    })
                    .collect();
                for t in all {
                    let _ = t.await;
                }
            }
        })
    };

    // Samples of runlet every 10 s.
    let samples = {
        let pid = s.pid;
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            while Instant::now() < end + Duration::from_secs(1) {
                tick.tick().await;
                if let Ok((rss, fds)) = sample(pid) {
                    let t = start.elapsed().as_secs();
                    eprintln!("soak: {t:>4} s  rss {rss} KiB  fds {fds}");
                    out.push((t, rss, fds));
                }
            }
            out
        })
    };

    // Short requests, open loop.
    let interval = Duration::from_secs_f64(1.0 / s.rate);
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut i: u32 = 0;
    let mut running = Vec::new();
    loop {
        let scheduled = start + interval * i;
        if scheduled >= end {
            break;
        }
        i += 1;
        tokio::time::sleep_until(scheduled).await;
        let (c, url, short, lat, limit) = (
            c.clone(),
            s.url.clone(),
            short.clone(),
            lat.clone(),
            limit.clone(),
        );
        running.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            let ok = get_ok(&c, url).await;
            short.count(ok);
            if ok {
                lat.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(scheduled.elapsed().as_secs_f64() * 1000.0);
            }
        }));
        // Reap finished ones now and then so the list stays short.
        if running.len() > 4096 {
            running.retain(|t: &tokio::task::JoinHandle<()>| !t.is_finished());
        }
    }
    for t in running {
        let _ = t.await;
    }
    let _ = streams.await;
    let _ = bursts.await;
    for t in ws_threads {
        let _ = t.join();
    }
    let samples = samples.await?;
    let mut v = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
    v.sort_by(|a, b| a.total_cmp(b));
    // Drift: from the first sample after the first burst cycle (runlet's pools and buffers
    // have grown to their working size) to the last.
    let settled = samples
        .iter()
        .find(|(t, _, _)| *t >= s.every.as_secs() + 10)
        .or(samples.first())
        .copied();
    let drift = |f: fn(&(u64, u64, usize)) -> f64| match (settled, samples.last()) {
        (Some(a), Some(b)) if f(&a) > 0.0 => (f(b) - f(&a)) / f(&a) * 100.0,
        _ => f64::NAN,
    };
    let rss_drift = drift(|s| s.1 as f64);
    let fd_drift = drift(|s| s.2 as f64);
    println!(
        "{}",
        serde_json::json!({
            "duration_s": s.duration.as_secs(), "rate": s.rate,
            "short": short.json(), "streamed": stream.json(), "websockets": ws.json(), "websockets_closed_at_request_timeout": at_timeout.load(Relaxed), "burst": burst.json(),
            "short_p50_ms": percentile(&v, 50.0), "short_p99_ms": percentile(&v, 99.0),
            "short_achieved_rps": (v.len() as f64 / s.duration.as_secs_f64()).round(),
            "samples": samples.iter().map(|(t, r, f)| serde_json::json!([t, r, f])).collect::<Vec<_>>(),
            "rss_drift_pct": rss_drift, "fd_drift_pct": fd_drift,
        })
    );
    Ok(())
}
