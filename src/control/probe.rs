//! Startup and liveness probes (contract LIFE-2), with gcloud's flag syntax:
//! `--startup-probe=httpGet.path=/ready,httpGet.port=8080,periodSeconds=1,failureThreshold=5`,
//! `tcpSocket.port=8080`, `grpc.port=8080,grpc.service=NAME`, plus `initialDelaySeconds`,
//! `timeoutSeconds`. A probe runs from inside the instance's network namespace.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::network::NetnsDialer;
use crate::spec::SpecError;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Http { path: String, port: u16 },
    Tcp { port: u16 },
    Grpc { port: u16, service: String },
}

/// A configured probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

/// Parses gcloud's probe flag; `port` is the container port used when none is given.
pub fn parse(field: &'static str, s: &str, port: u16) -> Result<Probe, SpecError> {
    let bad = |detail: String| SpecError { field, detail };
    let mut kind: Option<&str> = None;
    let mut path = "/".to_string();
    let mut probe_port = port;
    let mut service = String::new();
    let mut p = Probe {
        action: Action::Tcp { port },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        failure_threshold: 3,
    };
    let secs = |k: &str, v: &str, lo: u64, hi: u64| -> Result<u64, SpecError> {
        let n: u64 = v
            .parse()
            .map_err(|_| bad(format!("{k}={v:?} is not a whole number of seconds")))?;
        if n < lo || n > hi {
            return Err(bad(format!(
                "{k}={n} is out of range: allowed {lo} to {hi}"
            )));
        }
        Ok(n)
    };
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("{item:?} is not KEY=VALUE")))?;
        let mut set_kind = |want: &'static str| -> Result<(), SpecError> {
            match kind {
                Some(k) if k != want => Err(bad(format!(
                    "a probe has one of httpGet, tcpSocket or grpc; got both {k} and {want}"
                ))),
                _ => {
                    kind = Some(want);
                    Ok(())
                }
            }
        };
        match k {
            "httpGet.path" => {
                set_kind("httpGet")?;
                if !v.starts_with('/') {
                    return Err(bad(format!("httpGet.path={v:?} must start with /")));
                }
                path = v.to_string();
            }
            "httpGet.port" | "tcpSocket.port" | "grpc.port" => {
                set_kind(match k {
                    "httpGet.port" => "httpGet",
                    "tcpSocket.port" => "tcpSocket",
                    _ => "grpc",
                })?;
                probe_port = v.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad(format!("{k}={v:?} is not a port (1-65535)")))?;
            }
            "grpc.service" => {
                set_kind("grpc")?;
                service = v.to_string();
            }
            "initialDelaySeconds" => p.initial_delay = Duration::from_secs(secs(k, v, 0, 240)?),
            "periodSeconds" => p.period = Duration::from_secs(secs(k, v, 1, 240)?),
            "timeoutSeconds" => p.timeout = Duration::from_secs(secs(k, v, 1, 240)?),
            "failureThreshold" => p.failure_threshold = secs(k, v, 1, 100)? as u32,
            other => {
                return Err(bad(format!(
                    "unknown key {other:?}; allowed: httpGet.path, httpGet.port, tcpSocket.port, grpc.port, grpc.service, initialDelaySeconds, periodSeconds, timeoutSeconds, failureThreshold"
                )))
            }
        }
    }
    p.action = match kind {
        Some("httpGet") => Action::Http {
            path,
            port: probe_port,
        },
        Some("grpc") => Action::Grpc {
            port: probe_port,
            service,
        },
        _ => Action::Tcp { port: probe_port },
    };
    if p.timeout > p.period {
        return Err(bad(format!(
            "timeoutSeconds ({}) must not exceed periodSeconds ({})",
            p.timeout.as_secs(),
            p.period.as_secs()
        )));
    }
    Ok(p)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gcloud_probe_flags() {
        let p = parse("--startup-probe", "httpGet.path=/ready,httpGet.port=9000,initialDelaySeconds=2,periodSeconds=5,timeoutSeconds=3,failureThreshold=4", 8080).unwrap();
        assert_eq!(
            p.action,
            Action::Http {
                path: "/ready".into(),
                port: 9000
            }
        );
        assert_eq!(
            (p.initial_delay, p.period, p.timeout, p.failure_threshold),
            (
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(3),
                4
            )
        );
        assert_eq!(
            parse("f", "tcpSocket.port=81", 8080).unwrap().action,
            Action::Tcp { port: 81 }
        );
        assert_eq!(
            parse("f", "httpGet.path=/x", 8080).unwrap().action,
            Action::Http {
                path: "/x".into(),
                port: 8080
            }
        );
        assert_eq!(
            parse("f", "grpc.service=svc", 8080).unwrap().action,
            Action::Grpc {
                port: 8080,
                service: "svc".into()
            }
        );
        assert_eq!(
            parse("f", "periodSeconds=1", 8080).unwrap().action,
            Action::Tcp { port: 8080 }
        );
    }

    #[test]
    fn refuses_bad_probe_flags_naming_the_key() {
        for (s, needle) in [
            ("httpGet.path=x", "must start with /"),
            ("nonsense=1", "unknown key \"nonsense\""),
            ("periodSeconds=0", "periodSeconds=0 is out of range"),
            ("tcpSocket.port=http", "not a port"),
            ("httpGet.path=/,tcpSocket.port=1", "got both"),
            ("periodSeconds=1,timeoutSeconds=2", "must not exceed"),
            ("novalue", "not KEY=VALUE"),
        ] {
            let e = parse("--liveness-probe", s, 8080).unwrap_err();
            assert_eq!(e.field, "--liveness-probe");
            assert!(e.detail.contains(needle), "{s}: {}", e.detail);
        }
    }
}
