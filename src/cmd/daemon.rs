//! `runlet daemon`: the flags checked (bad input exits 64 before anything starts), the state
//! dir locked, then the ingress (routing by Host), the stored services brought back, and the
//! Admin API served on the Unix socket and the TCP port, until Ctrl-C or SIGTERM; then every
//! revision drains and stops.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tracing::info;

use runlet::api::listen::{self, Handler};
use runlet::cli::daemon::DaemonArgs;
use runlet::cli::GlobalArgs;
use runlet::daemon::hosts::HostsFile;
use runlet::daemon::lock::StateLock;
use runlet::daemon::revision::Host;
use runlet::daemon::store::Store;
use runlet::daemon::Daemon;
use runlet::ingress::{self, RouteTable};
use runlet::metrics::Metrics;
use runlet::runtime::containerd::Containerd;
use runlet::runtime::network::{NetConfig, GATEWAY};
use runlet::spec::SpecError;

use super::{wait_for_signal, with_containerd};

/// `runlet daemon` with its input checked.
struct Input {
    listen: SocketAddr,
    api: Option<SocketAddr>,
    token: Option<String>,
    metrics: runlet::metrics::MetricsListen,
    manage_hosts: bool,
    max_body: Option<u64>,
    pull: runlet::image::registry::PullPolicy,
    registry: runlet::image::registry::RegistryOptions,
    /// `--token-command` / `--token-key-file`.
    tokens: runlet::metadata::token::TokenConfig,
}

pub async fn run(global: &GlobalArgs, args: &DaemonArgs) -> Result<i32> {
    let input = input(args)?;
    runlet::fdlimit::raise();
    runlet::state_dir::prepare(&global.state_dir).with_context(|| {
        format!(
            "preparing the state dir {} (mode 0700)",
            global.state_dir.display()
        )
    })?;
    let _lock = StateLock::acquire(&global.state_dir)?;
    let state_dir = global.state_dir.clone();
    with_containerd(global, |c| daemon(c, input, state_dir)).await?;
    Ok(0)
}

fn addr(field: &'static str, text: &str) -> Result<SocketAddr, SpecError> {
    text.parse().map_err(|_| SpecError {
        field,
        detail: format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"),
    })
}

fn input(a: &DaemonArgs) -> Result<Input> {
    let listen = addr("--listen", &a.listen)?;
    let api = match a.api_listen.as_str() {
        "off" => None,
        t => Some(addr("--api-listen", t)?),
    };
    let token = match &a.api_token_file {
        None => None,
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("reading --api-token-file {}", f.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(SpecError {
                    field: "--api-token-file",
                    detail: format!("{} is empty", f.display()),
                }
                .into());
            }
            Some(t)
        }
    };
    if let Some(api) = api {
        if !api.ip().is_loopback() && token.is_none() {
            return Err(SpecError {
                field: "--api-listen",
                detail: format!("{api} is not a loopback address: give --api-token-file so that callers must authenticate"),
            }
            .into());
        }
    }
    let metrics = super::metrics_listen(a.metrics_listen.as_deref())?;
    Ok(Input {
        listen,
        api,
        token,
        metrics,
        manage_hosts: !a.no_manage_hosts,
        max_body: runlet::spec::body_size("--max-request-body-size", &a.max_request_body_size)?,
        pull: a.pull.pull,
        registry: a.pull.registry.options(),
        tokens: a.token.config(),
    })
}

async fn daemon(c: Containerd, input: Input, state_dir: PathBuf) -> Result<()> {
    // Every container made from here on is labelled as this daemon's (control::owner).
    runlet::control::owner::set_daemon(&state_dir);
    let net = NetConfig::new();
    net.check()?;
    // Isolation rules and the metadata server, before any instance; instances may call
    // services through the ingress on the gateway (same port as --listen).
    let meta = runlet::metadata::host::MetaConfig {
        identity: Default::default(),
        tokens: input.tokens.clone(),
    };
    let (net, _sandboxing) = runlet::metadata::host::secure(net, meta, &[input.listen.port()])
        .await
        .context("setting up network isolation and the metadata server")?;
    let store = Arc::new(Store::open(&state_dir.join("daemon"))?);
    let metrics = Metrics::new();
    runlet::metrics::serve_at(input.metrics, metrics.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (routes_tx, routes_rx) = watch::channel(Arc::new(RouteTable::by_host(Vec::new())));
    // Instances call services by URL through the bridge's gateway, on the same port.
    let mut addrs = vec![input.listen];
    if input.listen.ip().is_loopback() {
        addrs.push(SocketAddr::new(GATEWAY.into(), input.listen.port()));
    }
    let listeners = ingress::bind(&addrs, ingress::default_workers())
        .map_err(|e| e.source)
        .with_context(|| format!("cannot listen on {} (--listen)", input.listen))?;
    let api_tcp = match input.api {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (--api-listen)"))?,
        ),
        None => None,
    };
    let sock_path = runlet::api::client::socket_path(&state_dir);
    let api_unix = bind_unix(&sock_path)?;
    let ingress = ingress::start(
        listeners,
        routes_rx,
        metrics.clone(),
        stop_rx.clone(),
        tracing::info_span!("ingress"),
    )
    .context("cannot start the ingress threads")?;
    let hosts = input
        .manage_hosts
        .then(|| HostsFile::new(PathBuf::from("/etc/hosts"), [127, 0, 0, 1].into()));
    let host = Host {
        runtime: Arc::new(c),
        net,
        state_dir: state_dir.clone(),
        metrics,
        peers: None,
        max_body: input.max_body,
        pull: input.pull,
        registry: input.registry.clone(),
    };
    let daemon = Daemon::load(host, store, input.listen, routes_tx, hosts);
    daemon.resume().await;

    let mut servers = Vec::new();
    let unix = Handler::new(daemon.clone(), None);
    servers.push(tokio::spawn(listen::serve(
        unix,
        move || {
            let l = api_unix.clone();
            async move { l.accept().await.map(|(s, _)| s) }
        },
        stop_rx.clone(),
    )));
    if let Some(l) = api_tcp {
        let l = Arc::new(l);
        let tcp = Handler::new(daemon.clone(), input.token.clone());
        servers.push(tokio::spawn(listen::serve(
            tcp,
            move || {
                let l = l.clone();
                async move {
                    let (s, _) = l.accept().await?;
                    let _ = s.set_nodelay(true);
                    Ok(s)
                }
            },
            stop_rx.clone(),
        )));
    }
    let api_text = input.api.map_or("off".to_string(), |a| a.to_string());
    println!(
        "runlet daemon: services at http://SERVICE.localhost:{} (ingress {}), Admin API at {} and unix:{}",
        input.listen.port(),
        input.listen,
        api_text,
        sock_path.display()
    );
    info!(api = %api_text, socket = %sock_path.display(), ingress = %input.listen, "daemon ready");
    wait_for_signal().await;
    stop_tx.send_replace(true);
    for s in servers {
        let _ = s.await;
    }
    daemon.shut_down().await;
    ingress.join().await;
    let _ = std::fs::remove_file(&sock_path);
    info!("daemon stopped; every instance is stopped and removed");
    Ok(())
}

/// Binds the API's Unix socket (mode 0600), replacing a stale one: the state dir's lock
/// says no other daemon uses it.
fn bind_unix(path: &Path) -> Result<Arc<tokio::net::UnixListener>> {
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(Arc::new(l))
}
