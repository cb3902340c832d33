//! Running startup and liveness probes (contract LIFE-2): one check of a configured
//! [`Probe`] — a TCP connect, an HTTP GET that must answer 2xx or 3xx, or a gRPC
//! `grpc.health.v1.Health/Check` over h2c that must answer SERVING — made from inside the
//! instance's network namespace and bounded by the probe's timeout. A failed check is a
//! [`ProbeError`] saying which kind of failure it was. The definitions and their flag
//! syntax live in [`crate::spec::probe`].

use std::future::Future;
use std::io;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use prost::Message;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::runtime::network::NetnsDialer;
use crate::spec::probe::Action;
pub use crate::spec::probe::Probe;

/// Why a probe check failed.
#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("port {port} refused the connection")]
    Refused { port: u16 },
    #[error("connecting to port {port}")]
    Connect {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("HTTP GET {path} on port {port}: sending the request or reading the answer")]
    HttpIo {
        path: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("HTTP GET {path} on port {port}: not an HTTP response: {head:?}")]
    NotHttp {
        path: String,
        port: u16,
        head: String,
    },
    #[error("HTTP GET {path} on port {port} answered {code}")]
    BadStatus { path: String, port: u16, code: u16 },
    #[error("gRPC health check on port {port}: building the request")]
    GrpcRequest {
        port: u16,
        #[source]
        source: http::Error,
    },
    #[error("gRPC health check on port {port}: the HTTP/2 exchange")]
    GrpcTransport {
        port: u16,
        #[source]
        source: hyper::Error,
    },
    #[error("gRPC health check on port {port}: grpc-status {code:?}")]
    GrpcStatus { port: u16, code: tonic::Code },
    #[error("gRPC health check on port {port}: the answer is not one HealthCheckResponse")]
    GrpcAnswer {
        port: u16,
        #[source]
        source: Option<prost::DecodeError>,
    },
    #[error("gRPC health check on port {port}: status is {status}, not SERVING")]
    NotServing { port: u16, status: &'static str },
}

/// Opens a TCP connection to a port of the instance; [`NetnsDialer`] does it from inside
/// the instance's network namespace.
pub trait DialPort: Sync {
    fn dial_port(&self, port: u16) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl DialPort for NetnsDialer {
    fn dial_port(&self, port: u16) -> impl Future<Output = io::Result<TcpStream>> + Send {
        self.connect_port(port)
    }
}

/// Runs the probe once, bounded by its timeout.
pub async fn check<D: DialPort>(probe: &Probe, dialer: &D) -> Result<(), ProbeError> {
    match tokio::time::timeout(probe.timeout, run(&probe.action, dialer)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(probe.timeout)),
    }
}

async fn run<D: DialPort>(action: &Action, dialer: &D) -> Result<(), ProbeError> {
    match action {
        Action::Tcp { port } => connect(dialer, *port).await.map(drop),
        Action::Http { path, port } => http_get(dialer, *port, path).await,
        Action::Grpc { port, service } => grpc_health(dialer, *port, service).await,
    }
}

async fn connect<D: DialPort>(dialer: &D, port: u16) -> Result<TcpStream, ProbeError> {
    dialer.dial_port(port).await.map_err(|source| {
        if source.kind() == io::ErrorKind::ConnectionRefused {
            ProbeError::Refused { port }
        } else {
            ProbeError::Connect { port, source }
        }
    })
}

/// The longest answer head read looking for the status line.
const MAX_STATUS_LINE: usize = 1024;

/// `GET path`; a 2xx or 3xx status passes.
async fn http_get<D: DialPort>(dialer: &D, port: u16, path: &str) -> Result<(), ProbeError> {
    let mut s = connect(dialer, port).await?;
    let io_error = |source| ProbeError::HttpIo {
        path: path.to_string(),
        port,
        source,
    };
    let not_http = |head: &[u8]| ProbeError::NotHttp {
        path: path.to_string(),
        port,
        head: String::from_utf8_lossy(&head[..head.len().min(64)]).into_owned(),
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: runlet-probe\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(io_error)?;
    let mut head = [0u8; MAX_STATUS_LINE];
    let mut n = 0;
    let code = loop {
        match status_code(&head[..n]) {
            Ok(Some(code)) => break code,
            Ok(None) if n < head.len() => {}
            _ => return Err(not_http(&head[..n])),
        }
        let m = s.read(&mut head[n..]).await.map_err(io_error)?;
        if m == 0 {
            return Err(not_http(&head[..n]));
        }
        n += m;
    };
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(ProbeError::BadStatus {
            path: path.to_string(),
            port,
            code,
        })
    }
}

/// The status code of an HTTP/1 answer once its status line is complete, `None` while it
/// is not; an error when the bytes are not an HTTP/1 answer.
fn status_code(head: &[u8]) -> Result<Option<u16>, httparse::Error> {
    // No room for headers: the status line is all a probe needs, and httparse fills in
    // the code and reason before it looks at the headers.
    let mut response = httparse::Response::new(&mut []);
    match response.parse(head) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) if response.reason.is_some() => {
            Ok(response.code)
        }
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `grpc.health.v1.Health/Check` over h2c; SERVING passes.
async fn grpc_health<D: DialPort>(dialer: &D, port: u16, service: &str) -> Result<(), ProbeError> {
    let transport = |source| ProbeError::GrpcTransport { port, source };
    let stream = connect(dialer, port).await?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(transport)?;
    tokio::spawn(conn);
    let body = grpc_frame(&HealthCheckRequest {
        service: service.to_string(),
    });
    let req = http::Request::post(format!(
        "http://localhost:{port}/grpc.health.v1.Health/Check"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(bytes::Bytes::from(body)))
    .map_err(|source| ProbeError::GrpcRequest { port, source })?;
    let resp = send.send_request(req).await.map_err(transport)?;
    let header_status = grpc_status(resp.headers());
    let collected = resp.into_body().collect().await.map_err(transport)?;
    let code = collected
        .trailers()
        .and_then(grpc_status)
        .or(header_status)
        .unwrap_or(tonic::Code::Unknown);
    if code != tonic::Code::Ok {
        return Err(ProbeError::GrpcStatus { port, code });
    }
    let data = collected.to_bytes();
    let message = grpc_unframe(&data).ok_or(ProbeError::GrpcAnswer { port, source: None })?;
    let answer = HealthCheckResponse::decode(message).map_err(|e| ProbeError::GrpcAnswer {
        port,
        source: Some(e),
    })?;
    match answer.status() {
        ServingStatus::Serving => Ok(()),
        other => Err(ProbeError::NotServing {
            port,
            status: other.as_str_name(),
        }),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// A gRPC length-prefixed message: flag 0 (not compressed), 4-byte big-endian length.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    // A probe's request comes from a command-line flag, far below 4 GiB.
    let len = u32::try_from(encoded.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame
}

/// The message of a body holding exactly one uncompressed gRPC length-prefixed message.
fn grpc_unframe(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let (len, message) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (flag == 0 && message.len() == len).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Dials 127.0.0.1, where the tests' servers listen.
    struct Loopback;

    impl DialPort for Loopback {
        fn dial_port(&self, port: u16) -> impl Future<Output = io::Result<TcpStream>> + Send {
            TcpStream::connect(("127.0.0.1", port))
        }
    }

    fn probe(action: Action) -> Probe {
        Probe {
            action,
            ..Probe::tcp(0)
        }
    }

    async fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    /// A port nothing listens on.
    async fn closed_port() -> u16 {
        listener().await.1
    }

    /// Answers every connection with `answer` after reading the request head.
    async fn http_server(answer: &'static str) -> u16 {
        let (l, port) = listener().await;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    #[test]
    fn status_lines() {
        // `None`: the status line is not complete yet.
        let table: &[(&[u8], Option<u16>)] = &[
            (b"HTTP/1.1 200 OK\r\n", Some(200)),
            (
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                Some(503),
            ),
            (b"HTTP/1.0 404 Not Found\r\nServer: x\r\n", Some(404)),
            (b"HTTP/1.1 204\r\n\r\n", Some(204)),
            (b"HTTP/1.1 200 OK", None),
            (b"HTTP/1.1 20", None),
            (b"HTTP/", None),
            (b"", None),
        ];
        for (head, want) in table {
            let head_text = String::from_utf8_lossy(head);
            assert_eq!(status_code(head).ok(), Some(*want), "{head_text:?}");
        }
        let not_http: &[&[u8]] = &[
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 abc OK\r\n",
        ];
        for head in not_http {
            let head_text = String::from_utf8_lossy(head);
            assert!(status_code(head).is_err(), "{head_text:?}");
        }
    }

    #[test]
    fn health_check_request_frames_long_service_names() {
        // A hand-written `len as u8` length broke at 128 bytes (a varint needs two).
        for len in [0, 1, 127, 128, 200, 70_000] {
            let service = "s".repeat(len);
            let frame = grpc_frame(&HealthCheckRequest {
                service: service.clone(),
            });
            let message = grpc_unframe(&frame).unwrap();
            let decoded = HealthCheckRequest::decode(message).unwrap();
            assert_eq!(decoded.service, service, "{len}");
        }
        assert_eq!(
            grpc_frame(&HealthCheckRequest {
                service: "s".repeat(200)
            })[..8],
            [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]
        );
    }

    #[test]
    fn grpc_bodies_hold_one_uncompressed_message() {
        let table: &[(&[u8], Option<&[u8]>)] = &[
            (&[0, 0, 0, 0, 2, 8, 1], Some(&[8, 1])),
            (&[0, 0, 0, 0, 0], Some(&[])),
            (&[1, 0, 0, 0, 2, 8, 1], None),
            (&[0, 0, 0, 0, 3, 8, 1], None),
            (&[0, 0, 0, 0, 1, 8, 1], None),
            (&[0, 0, 0], None),
            (&[], None),
        ];
        for (body, want) in table {
            assert_eq!(grpc_unframe(body), *want, "{body:?}");
        }
    }

    #[tokio::test]
    async fn tcp_checks() {
        let (_l, open) = listener().await;
        let closed = closed_port().await;
        assert!(check(&probe(Action::Tcp { port: open }), &Loopback)
            .await
            .is_ok());
        let e = check(&probe(Action::Tcp { port: closed }), &Loopback)
            .await
            .unwrap_err();
        assert!(
            matches!(e, ProbeError::Refused { port } if port == closed),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn http_checks_pass_on_2xx_and_3xx_only() {
        let http = |port| {
            probe(Action::Http {
                path: "/ready".into(),
                port,
            })
        };
        for answer in [
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 302 Found\r\nLocation: /\r\n\r\n",
            "HTTP/1.0 204\r\n\r\n",
        ] {
            let port = http_server(answer).await;
            assert!(check(&http(port), &Loopback).await.is_ok(), "{answer:?}");
        }
        let port = http_server("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let e = check(&http(port), &Loopback).await.unwrap_err();
        assert!(
            matches!(e, ProbeError::BadStatus { code: 503, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("HTTP GET /ready on port {port} answered 503")
        );
        let port = http_server("SSH-2.0-OpenSSH_9.6\r\n").await;
        let e = check(&http(port), &Loopback).await.unwrap_err();
        assert!(matches!(e, ProbeError::NotHttp { .. }), "{e:?}");
        let port = http_server("HTTP/1.1 200").await;
        let e = check(&http(port), &Loopback).await.unwrap_err();
        assert!(matches!(e, ProbeError::NotHttp { .. }), "{e:?}");
        let e = check(&http(closed_port().await), &Loopback)
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Refused { .. }), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out() {
        let (l, port) = listener().await;
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                open.push(s);
            }
        });
        let p = Probe {
            timeout: Duration::from_secs(3),
            ..probe(Action::Http {
                path: "/".into(),
                port,
            })
        };
        let e = check(&p, &Loopback).await.unwrap_err();
        assert!(
            matches!(e, ProbeError::Timeout(t) if t == Duration::from_secs(3)),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "no answer within 3 s");
    }

    #[tokio::test]
    async fn grpc_checks_against_tonic_health() {
        use tonic_health::ServingStatus as Status;
        let (reporter, service) = tonic_health::server::health_reporter();
        let long = "s".repeat(200);
        reporter.set_service_status(&long, Status::Serving).await;
        reporter
            .set_service_status("down", Status::NotServing)
            .await;
        let (l, port) = listener().await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
        );
        let grpc = |service: &str| {
            probe(Action::Grpc {
                port,
                service: service.into(),
            })
        };
        assert!(check(&grpc(""), &Loopback).await.is_ok());
        assert!(check(&grpc(&long), &Loopback).await.is_ok());
        let e = check(&grpc("down"), &Loopback).await.unwrap_err();
        assert!(
            matches!(
                e,
                ProbeError::NotServing {
                    status: "NOT_SERVING",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = check(&grpc("unknown"), &Loopback).await.unwrap_err();
        assert!(
            matches!(
                e,
                ProbeError::GrpcStatus {
                    code: tonic::Code::NotFound,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
