//! `runlet-bench`: the small load tools behind docs/benchmarks.md (deploy/bench.sh).
//!
//! - `rate URL --rate R --duration D`: an open-loop load at a fixed request rate; latency is
//!   measured from each request's scheduled time (no coordinated omission). Prints JSON.
//! - `first-byte URL [--exec CMD] [--host HOST] [--status CODE]`: runs CMD (if given), then
//!   polls URL until the first response byte arrives; prints the elapsed milliseconds since
//!   the start. `--host` sends that `Host` header (the daemon routes by it); `--status` waits
//!   for a response with that status (a daemon answers 404 until the service is routed).
//! - `step URL --clients N`: N requests at once; prints each one's time to first byte.
//! - `soak URL --rate R --duration D --pid PID`: a long mixed load watching runlet's RSS
//!   and file descriptors ([`soak`]).

// A load generator measures wall-clock latencies of another process; its one lock guards a
// push per request and is never held across an await.
#![allow(clippy::disallowed_types)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

mod soak;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn client(pool: usize) -> HttpClient {
    let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool)
        .build(c)
}

async fn get(c: &HttpClient, url: &hyper::Uri) -> Result<u16> {
    let resp = c.get(url.clone()).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn rate(url: hyper::Uri, rate: f64, duration: Duration, conns: usize) -> Result<()> {
    let c = client(conns);
    // Warm the pool.
    for _ in 0..conns.min(8) {
        let _ = get(&c, &url).await;
    }
    let n = (rate * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(conns));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (c, url, lat, errors, limit) = (
            c.clone(),
            url.clone(),
            lat.clone(),
            errors.clone(),
            limit.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            match get(&c, &url).await {
                Ok(s) if s < 500 => lat
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(scheduled.elapsed().as_secs_f64() * 1000.0),
                _ => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut v = lat.lock().unwrap_or_else(|e| e.into_inner()).clone();
    v.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        serde_json::json!({
            "requests": n, "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
            "achieved_rps": (v.len() as f64 / elapsed).round(),
            "p50_ms": percentile(&v, 50.0), "p90_ms": percentile(&v, 90.0), "p99_ms": percentile(&v, 99.0),
            "max_ms": v.last().copied().unwrap_or(f64::NAN),
        })
    );
    Ok(())
}

/// What `first-byte` polls for.
struct Poll<'a> {
    exec: Option<&'a str>,
    host: Option<&'a str>,
    status: Option<u16>,
    timeout: Duration,
}

fn request(url: &hyper::Uri, host: Option<&str>) -> Result<hyper::Request<Empty<Bytes>>> {
    let mut b = hyper::Request::get(url.clone());
    if let Some(h) = host {
        b = b.header(hyper::header::HOST, h);
    }
    Ok(b.body(Empty::new())?)
}

async fn first_byte(url: hyper::Uri, p: Poll<'_>) -> Result<()> {
    let Poll {
        exec,
        host,
        status,
        timeout,
    } = p;
    let start = Instant::now();
    if let Some(cmd) = exec {
        let st = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .await?;
        if !st.success() {
            bail!("{cmd} failed: {st}");
        }
    }
    let c = client(1);
    loop {
        if let Ok(resp) = c.request(request(&url, host)?).await {
            let wanted = status.is_none_or(|s| resp.status().as_u16() == s);
            let mut body = resp.into_body();
            if !wanted {
                let _ = body.collect().await;
            } else if body.frame().await.is_some() {
                println!("{:.1}", start.elapsed().as_secs_f64() * 1000.0);
                return Ok(());
            }
        }
        if start.elapsed() > timeout {
            bail!("no response from {url} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn step(url: hyper::Uri, clients: usize) -> Result<()> {
    let c = client(clients);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let r = c.get(url).await.map(|r| r.status().as_u16());
                (r.ok(), start.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        let (status, ms) = t.await?;
        out.push(serde_json::json!({"status": status, "first_byte_ms": ms}));
    }
    println!("{}", serde_json::Value::Array(out));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, url) = match (args.first(), args.get(1)) {
        (Some(c), Some(u)) => (c.as_str(), u.parse::<hyper::Uri>().context("URL")?),
        _ => bail!("usage: runlet-bench rate|first-byte|step|soak URL [options]"),
    };
    let secs = |name: &str, default: f64| {
        arg(&args, name)
            .map(|v| v.trim_end_matches('s').parse::<f64>())
            .transpose()
            .map(|v| Duration::from_secs_f64(v.unwrap_or(default)))
    };
    match cmd {
        "rate" => {
            let r: f64 = arg(&args, "--rate").unwrap_or("1000").parse()?;
            let conns: usize = arg(&args, "--connections").unwrap_or("32").parse()?;
            rate(url, r, secs("--duration", 10.0)?, conns).await
        }
        "first-byte" => {
            let status = arg(&args, "--status").map(str::parse).transpose()?;
            let poll = Poll {
                exec: arg(&args, "--exec"),
                host: arg(&args, "--host"),
                status,
                timeout: secs("--timeout", 60.0)?,
            };
            first_byte(url, poll).await
        }
        "step" => step(url, arg(&args, "--clients").unwrap_or("5").parse()?).await,
        "soak" => {
            let num =
                |name: &str, default: &str| arg(&args, name).unwrap_or(default).parse::<usize>();
            soak::soak(soak::Soak {
                url,
                rate: arg(&args, "--rate").unwrap_or("1000").parse()?,
                duration: secs("--duration", 600.0)?,
                pid: arg(&args, "--pid")
                    .context("--pid PID (runlet's)")?
                    .parse()?,
                websockets: num("--websockets", "20")?,
                burst: num("--burst", "40")?,
                every: secs("--every", 60.0)?,
                request_timeout: secs("--request-timeout", 300.0)?,
            })
            .await
        }
        other => bail!("unknown command {other}"),
    }
}
