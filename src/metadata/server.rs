//! The metadata server's listener: one per runlet process, on the bridge's gateway address
//! at a port the kernel picks (bound with `IP_FREEBIND`, so it works before the bridge
//! exists). Each request: the source address names the instance ([`super::Registry`]), the
//! answer is [`super::answer::answer`]'s, tokens come from [`super::token`] and
//! [`super::idtoken`].

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use thiserror::Error;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use super::answer::{answer, Reply, Req};
use super::idtoken::Signer256;
use super::token::{TokenError, TokenSource, NOT_CONFIGURED};
use super::Registry;

#[derive(Debug, Error)]
#[error("metadata server on {addr}: {detail}")]
pub struct ServerError {
    pub addr: String,
    pub detail: String,
}

/// What the server shares between requests.
pub struct Shared {
    pub registry: Arc<Registry>,
    pub tokens: TokenSource,
    signer: OnceCell<Option<Arc<Signer256>>>,
}

/// A running metadata server.
pub struct MetaServer {
    pub port: u16,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP listener on `ip:0` that may bind an address not (yet) on this host.
fn bind_freely(ip: Ipv4Addr) -> std::io::Result<std::net::TcpListener> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(ip, 0)),
    )?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(std::net::TcpListener::from(fd))
}

/// Starts the server on `ip` (the gateway).
pub fn start(
    ip: Ipv4Addr,
    registry: Arc<Registry>,
    tokens: TokenSource,
) -> Result<MetaServer, ServerError> {
    let fail = |detail: String| ServerError {
        addr: ip.to_string(),
        detail,
    };
    let std_listener = bind_freely(ip).map_err(|e| fail(e.to_string()))?;
    let port = std_listener
        .local_addr()
        .map_err(|e| fail(e.to_string()))?
        .port();
    let listener =
        tokio::net::TcpListener::from_std(std_listener).map_err(|e| fail(e.to_string()))?;
    let shared = Arc::new(Shared {
        registry,
        tokens,
        signer: OnceCell::new(),
    });
    let s2 = shared.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!("metadata server accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shared = s2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, peer, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // A client that shuts its sending side once the request is written (`nc`,
                // HTTP/1.0 scripts) still gets the answer: without half-close, hyper drops
                // the connection at that EOF, before a slower answer (a token) is written.
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .half_close(true)
                    .serve_connection(io, svc)
                    .await
                {
                    debug!("metadata connection from {peer}: {e}");
                }
            });
        }
    });
    Ok(MetaServer { port, shared, task })
}

fn respond(status: u16, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert("metadata-flavor", http::HeaderValue::from_static("Google"));
    h.insert(
        "server",
        http::HeaderValue::from_static("Metadata Server for runlet"),
    );
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    shared: &Shared,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let headers = req.headers();
    let flavor = headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Google"));
    let r = Req {
        path: req.uri().path(),
        query,
        flavor,
        forwarded: headers.contains_key("x-forwarded-for"),
    };
    let inst = match peer.ip() {
        IpAddr::V4(ip) => shared.registry.get(ip).await,
        IpAddr::V6(_) => None,
    };
    let text = "application/text";
    match answer(&r, inst.as_ref()) {
        Reply::Done(s, ctype, body) => respond(s, ctype, body),
        Reply::Moved(to) => {
            let mut resp = respond(301, "text/html", format!("<a href=\"{to}\">moved</a>\n"));
            if let Ok(v) = http::HeaderValue::from_str(&to) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            resp
        }
        Reply::Token => match shared.tokens.get().await {
            Ok((token, secs)) => respond(
                200,
                "application/json",
                serde_json::json!({"access_token": token, "expires_in": secs, "token_type": "Bearer"}).to_string(),
            ),
            Err(TokenError::NotConfigured) => respond(404, text, NOT_CONFIGURED.to_string()),
            Err(TokenError::Command(e) | TokenError::KeyFile(e)) => {
                warn!("metadata token: {e}");
                respond(503, text, format!("{e}\n"))
            }
        },
        Reply::IdToken { audience } => match (signer(shared).await, inst) {
            (Some(s), Some(i)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                respond(200, text, s.id_token(&audience, &i.identity.service_account, now))
            }
            _ => respond(503, text, "no signing key\n".into()),
        },
        Reply::Jwks => match signer(shared).await {
            Some(s) => respond(200, "application/json", s.jwks().to_string()),
            None => respond(503, text, "no signing key\n".into()),
        },
    }
}

/// The signing key, made on first use.
async fn signer(shared: &Shared) -> Option<Arc<Signer256>> {
    shared
        .signer
        .get_or_init(|| async {
            match tokio::task::spawn_blocking(Signer256::generate).await {
                Ok(Ok(s)) => Some(Arc::new(s)),
                Ok(Err(e)) => {
                    warn!("generating the ID token key: {e}");
                    None
                }
                Err(e) => {
                    warn!("generating the ID token key: {e}");
                    None
                }
            }
        })
        .await
        .clone()
}
