//! Running startup and liveness probes (contract LIFE-2) from inside the instance's
//! network namespace. The definitions and their flag syntax live in
//! [`crate::spec::probe`].

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::network::NetnsDialer;
use crate::spec::probe::Action;
pub use crate::spec::probe::Probe;

/// The outcome of one probe run.
pub type Outcome = Result<(), String>;

/// Runs the probe once, bounded by its timeout.
pub async fn check(probe: &Probe, dialer: &NetnsDialer) -> Outcome {
    match tokio::time::timeout(probe.timeout, run(&probe.action, dialer)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", probe.timeout.as_secs())),
    }
}

async fn run(action: &Action, dialer: &NetnsDialer) -> Outcome {
    match action {
        Action::Tcp { port } => dialer
            .connect_port(*port)
            .await
            .map(drop)
            .map_err(|e| format!("TCP connect to port {port}: {e}")),
        Action::Http { path, port } => {
            let mut s = dialer
                .connect_port(*port)
                .await
                .map_err(|e| format!("HTTP GET {path} on port {port}: {e}"))?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: runlet-probe\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut head = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let m = s.read(&mut head[n..]).await.map_err(|e| e.to_string())?;
                if m == 0 {
                    break;
                }
                n += m;
            }
            let line = String::from_utf8_lossy(&head[..n]).into_owned();
            let code: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("HTTP GET {path}: not an HTTP response: {line:?}"))?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP GET {path} on port {port} answered {code}"))
            }
        }
        Action::Grpc { port, service } => grpc_health(dialer, *port, service).await,
    }
}

/// `grpc.health.v1.Health/Check` over h2c; SERVING passes.
async fn grpc_health(dialer: &NetnsDialer, port: u16, service: &str) -> Outcome {
    use http_body_util::{BodyExt, Full};
    let fail = |e: String| format!("gRPC health check on port {port}: {e}");
    let stream = dialer
        .connect_port(port)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| fail(e.to_string()))?;
    tokio::spawn(conn);
    // HealthCheckRequest { service = 1 (string) }, framed: flag 0, 4-byte length.
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        msg.push(service.len() as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let req = http::Request::post(format!(
        "http://localhost:{port}/grpc.health.v1.Health/Check"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(bytes::Bytes::from(body)))
    .map_err(|e| fail(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let header_status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let trailer_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = trailer_status.or(header_status).unwrap_or_default();
    if status != "0" {
        return Err(fail(format!("grpc-status {status:?}")));
    }
    let data = collected.to_bytes();
    // HealthCheckResponse { status = 1 (enum) }: SERVING is 1.
    if data.len() >= 7 && data[5] == 0x08 && data[6] == 0x01 {
        Ok(())
    } else {
        Err(fail("status is not SERVING".into()))
    }
}
