//! Request routing: applies the query knobs in a fixed order and picks the
//! response kind.
//!
//! Order of effects for one request:
//! 1. `log=` / `log_stderr=` print their text; `exit=N` exits the process.
//! 2. `alloc=MIB` allocates and touches memory; it is released after
//!    `hold=MS` if given, otherwise when the handler is done (after `sleep`).
//!    `child_alloc=MIB` starts a child process (the probe in job mode) that
//!    waits `child_after=MS` (default 0), then allocates and touches MIB and
//!    exits; the request goes on at once without waiting for it (a server whose
//!    worker or helper process goes over the memory limit).
//! 3. `write=MIB` writes and fsyncs a file.
//! 4. `sleep=MS` waits.
//! 5. The response: `/ws`, `/readfile`, `/upload`, `/syscalls` (see
//!    [`crate::syscalls`]) by path; otherwise the
//!    first of `flush_then_sleep`, `sse`, `bytes`, `echo`; otherwise the
//!    JSON report (which includes the `alloc` / `write` results).
//! 6. `status=N` and `badheader=1` adjust whatever response was chosen
//!    (except the WebSocket 101).

use std::convert::Infallible;
use std::io;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::{next_frame, ProbeBody};
use crate::query::Params;
use crate::report::{self, RequestInfo};
use crate::state::{InFlight, STATE};
use crate::Config;

/// An error answered as JSON `{"error": ...}` (plus any extra fields).
struct HttpError {
    status: StatusCode,
    body: Value,
}

impl HttpError {
    fn new(status: StatusCode, msg: impl Into<String>) -> HttpError {
        HttpError {
            status,
            body: json!({ "error": msg.into() }),
        }
    }
}

/// hyper service entry point. Never fails: errors become JSON responses.
pub async fn handle(
    req: Request<Incoming>,
    remote: SocketAddr,
    cfg: Arc<Config>,
) -> Result<Response<ProbeBody>, Infallible> {
    let mut guard = Some(InFlight::enter());
    let mut resp = match route(req, remote, &cfg, &mut guard).await {
        Ok(r) => r,
        Err(e) => json_response(e.status, &e.body),
    };
    if let Some(g) = guard.take() {
        resp.body_mut().attach(g);
    }
    Ok(resp)
}

fn json_response(status: StatusCode, v: &Value) -> Response<ProbeBody> {
    let mut body =
        serde_json::to_vec(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    body.push(b'\n');
    let mut resp = Response::new(ProbeBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn streamed(content_type: &'static str, body: ProbeBody) -> Response<ProbeBody> {
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn request_info(req: &Request<Incoming>, remote: SocketAddr) -> RequestInfo {
    RequestInfo {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        remote_addr: remote.to_string(),
    }
}

async fn route(
    req: Request<Incoming>,
    remote: SocketAddr,
    cfg: &Config,
    guard: &mut Option<InFlight>,
) -> Result<Response<ProbeBody>, HttpError> {
    let params = Params::parse(req.uri().query().unwrap_or(""))
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e))?;
    if cfg.log_requests {
        println!(
            "probe: {} {} {:?} from {remote}",
            req.method(),
            req.uri(),
            req.version()
        );
    }
    if let Some(t) = &params.log {
        println!("{t}");
    }
    if let Some(t) = &params.log_stderr {
        eprintln!("{t}");
    }
    if let Some(code) = params.exit {
        eprintln!("probe: exit={code} requested, exiting with code {code}");
        crate::exit_now(code);
    }

    let mut extra = Map::new();
    let mut memory = None;
    if let Some(mib) = params.alloc_mib {
        let mem = tokio::task::spawn_blocking(move || alloc_touch(mib))
            .await
            .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        extra.insert(
            "alloc".into(),
            json!({ "mib": mib, "hold_ms": params.hold_ms }),
        );
        memory = Some(mem);
        if let Some(ms) = params.hold_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            memory = None;
        }
    }
    if let Some(mib) = params.child_alloc_mib {
        let pid = spawn_allocating_child(mib, params.child_after_ms)
            .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        extra.insert(
            "child_alloc".into(),
            json!({ "mib": mib, "after_ms": params.child_after_ms, "pid": pid }),
        );
    }
    if let Some(mib) = params.write_mib {
        let path = params
            .path
            .clone()
            .unwrap_or_else(|| format!("/tmp/probe-write-{}", STATE.next_seq()));
        let res = tokio::task::spawn_blocking(move || write_file(path, mib))
            .await
            .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|body| HttpError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body,
            })?;
        extra.insert("write".into(), res);
    }
    if let Some(ms) = params.sleep_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    drop(memory);

    let path = req.uri().path().to_string();
    let mut resp = match path.as_str() {
        "/ws" => {
            let taken = guard.take();
            return crate::ws::handle(req, taken)
                .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e));
        }
        "/readfile" => {
            let path = params
                .path
                .as_deref()
                .ok_or_else(|| HttpError::new(StatusCode::BAD_REQUEST, "missing path="))?;
            json_response(StatusCode::OK, &Value::Object(report::readfile(path)))
        }
        "/upload" => upload(req.into_body()).await?,
        "/fetch" => {
            let url = params
                .url
                .as_deref()
                .ok_or_else(|| HttpError::new(StatusCode::BAD_REQUEST, "missing url="))?;
            match crate::fetch::exchange(url, params.header.as_deref()).await {
                Ok((status, body)) => json_response(
                    StatusCode::OK,
                    &serde_json::json!({"status": status, "body": String::from_utf8_lossy(&body)}),
                ),
                Err(e) => json_response(StatusCode::BAD_GATEWAY, &serde_json::json!({"error": e})),
            }
        }
        "/fetched" => match crate::fetch::FETCHED.get() {
            Some(body) => streamed("application/octet-stream", ProbeBody::full(body.clone())),
            None => {
                return Err(HttpError::new(
                    StatusCode::NOT_FOUND,
                    "nothing fetched at start (PROBE_FETCH_AT_START)",
                ))
            }
        },
        "/syscalls" => json_response(StatusCode::OK, &crate::syscalls::report()),
        "/grpc.health.v1.Health/Check" => grpc_health_serving(),
        "/unhealthy" => {
            crate::state::STATE
                .unhealthy
                .store(true, std::sync::atomic::Ordering::SeqCst);
            json_response(StatusCode::OK, &serde_json::json!({"healthy": false}))
        }
        "/healthz" => {
            let bad = crate::state::STATE
                .unhealthy
                .load(std::sync::atomic::Ordering::SeqCst);
            let code = if bad {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            json_response(code, &serde_json::json!({"healthy": !bad}))
        }
        _ => {
            if let Some(ms) = params.flush_then_sleep_ms {
                flush_then_sleep(ms)
            } else if let Some(n) = params.sse {
                sse(n, params.interval_ms)
            } else if let Some(n) = params.bytes {
                streamed("application/octet-stream", ProbeBody::repeat(n))
            } else if params.echo {
                echo(req.into_body())
            } else {
                let info = request_info(&req, remote);
                let v = tokio::task::spawn_blocking(move || report::build(&info, extra))
                    .await
                    .map_err(|e| {
                        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?;
                json_response(StatusCode::OK, &v)
            }
        }
    };

    if let Some(s) = params.status {
        *resp.status_mut() = StatusCode::from_u16(s)
            .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    if params.badheader {
        // A value with obs-text bytes (>= 0x80): hyper sends it, the contract (HDR-2)
        // does not allow it. `from_bytes` accepts these (it rejects control bytes only).
        match HeaderValue::from_bytes(b"caf\xc3\xa9") {
            Ok(v) => {
                resp.headers_mut().insert("x-probe-bad", v);
            }
            Err(_) => {
                resp.headers_mut()
                    .insert("x-probe-badheader", HeaderValue::from_static("skipped"));
            }
        }
    }
    Ok(resp)
}

/// A unary gRPC answer to `grpc.health.v1.Health/Check`: status SERVING.
/// Message `HealthCheckResponse { status: SERVING (1) }` is the protobuf bytes `08 01`,
/// framed as uncompressed (flag 0) with a 4-byte big-endian length.
fn grpc_health_serving() -> Response<ProbeBody> {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = ProbeBody::with_trailers(&[0u8, 0, 0, 0, 2, 0x08, 0x01][..], trailers);
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    resp
}

/// Allocates `mib` MiB and writes every byte (so every page is resident).
fn alloc_touch(mib: u64) -> Result<Vec<u8>, String> {
    let len = usize::try_from(mib.saturating_mul(1024 * 1024)).map_err(|e| e.to_string())?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|e| format!("cannot allocate {mib} MiB: {e}"))?;
    v.resize(len, 0x5a);
    std::hint::black_box(&v);
    Ok(v)
}

/// Starts this program in job mode as a child that sleeps `after_ms`, then allocates and
/// touches `mib` MiB, then exits; a thread reaps it. Returns its pid.
fn spawn_allocating_child(mib: u64, after_ms: u64) -> Result<u32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the probe binary: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("job")
        .env("PROBE_ALLOC_MIB", mib.to_string())
        .env("PROBE_SLEEP_MS", after_ms.to_string())
        .env("PROBE_JOB_EXIT", "0")
        .env_remove("PROBE_FAIL_UNTIL_ATTEMPT")
        .spawn()
        .map_err(|e| format!("starting the allocating child: {e}"))?;
    let pid = child.id();
    std::thread::spawn(move || match child.wait() {
        Ok(status) => eprintln!("probe: allocating child {pid} ended: {status}"),
        Err(e) => eprintln!("probe: waiting for allocating child {pid}: {e}"),
    });
    Ok(pid)
}

/// Writes `mib` MiB to `path` and fsyncs it. On failure the error JSON
/// includes the path and how much was written.
fn write_file(path: String, mib: u64) -> Result<Value, Value> {
    let block = vec![0xa5u8; 1024 * 1024];
    let mut written: u64 = 0;
    let fail = |e: io::Error, written: u64| json!({ "error": e.to_string(), "path": path, "bytes_written": written });
    let mut f = std::fs::File::create(&path).map_err(|e| fail(e, 0))?;
    for _ in 0..mib {
        f.write_all(&block).map_err(|e| fail(e, written))?;
        written += block.len() as u64;
    }
    f.sync_all().map_err(|e| fail(e, written))?;
    Ok(json!({ "path": path, "bytes": written }))
}

/// `/upload`: counts the request body without storing it.
async fn upload(mut body: Incoming) -> Result<Response<ProbeBody>, HttpError> {
    let start = Instant::now();
    let mut received: u64 = 0;
    while let Some(frame) = next_frame(&mut body).await {
        let frame = frame
            .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, format!("reading body: {e}")))?;
        if let Some(d) = frame.data_ref() {
            received += d.len() as u64;
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "received": received, "elapsed_ms": start.elapsed().as_millis() as u64 }),
    ))
}

/// `echo=1`: streams the request body back as it arrives.
fn echo(mut body: Incoming) -> Response<ProbeBody> {
    let (tx, out) = ProbeBody::channel(4);
    tokio::spawn(async move {
        while let Some(frame) = next_frame(&mut body).await {
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => Ok(d),
                    Err(_) => continue, // trailers
                },
                Err(e) => Err(io::Error::other(e)),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    streamed("application/octet-stream", out)
}

/// `flush_then_sleep=MS`: first chunk at once, `done\n` after MS.
fn flush_then_sleep(ms: u64) -> Response<ProbeBody> {
    let (tx, body) = ProbeBody::channel(2);
    tokio::spawn(async move {
        if tx
            .send(Ok(Bytes::from_static(b"{\"started\":true}\n")))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let _ = tx.send(Ok(Bytes::from_static(b"done\n"))).await;
    });
    streamed("text/plain", body)
}

/// `sse=N&interval=MS`: events `data: 1` .. `data: N`, the first at once.
fn sse(n: u64, interval_ms: u64) -> Response<ProbeBody> {
    let (tx, body) = ProbeBody::channel(2);
    tokio::spawn(async move {
        for i in 1..=n {
            if i > 1 {
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
            }
            if tx
                .send(Ok(Bytes::from(format!("data: {i}\n\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut resp = streamed("text/event-stream", body);
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_touches_requested_size() {
        let v = alloc_touch(2).unwrap();
        assert_eq!(v.len(), 2 * 1024 * 1024);
        assert!(v.iter().step_by(4096).all(|b| *b == 0x5a));
    }

    #[test]
    fn write_file_reports_path_and_size() {
        let p = std::env::temp_dir().join(format!("probe-write-test-{}", std::process::id()));
        let p = p.to_string_lossy().into_owned();
        let v = write_file(p.clone(), 1).unwrap();
        assert_eq!(v["bytes"], json!(1024 * 1024));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1024 * 1024);
        std::fs::remove_file(&p).unwrap();
        let err = write_file("/nonexistent-dir/x".into(), 1).unwrap_err();
        assert_eq!(err["bytes_written"], json!(0));
    }
}
