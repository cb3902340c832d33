//! The ingress worker threads: one per group of listeners, each with its own
//! single-threaded tokio runtime and its own state ([`Shared`]: its view of the route
//! table and a lane per route, see [`super::lane`]; hyper's server), and the accept loop
//! each runs ([`serve`]).

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{warn, Instrument};

use super::conn_limit::ConnLimit;
use super::downstream;
use super::headers;
use super::lane::{Lane, Lanes};
use super::route::{RouteTable, Unrouted};
use crate::accept_retry::AcceptRetry;
use crate::metrics::Metrics;

/// Most ingress worker threads (more are folded onto these slots).
pub(super) const MAX_WORKERS: usize = 16;

thread_local! {
    /// The ingress worker this thread is (1..=MAX_WORKERS), or 0 for any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The ingress worker this thread is (1..=MAX_WORKERS), or 0 for any other thread.
#[inline]
pub(super) fn index() -> usize {
    WORKER.with(Cell::get)
}

/// One worker thread's state, shared by its connections.
pub(super) struct Shared {
    lanes: LanesLock,
    /// Serves the connections [`downstream`] hands over (HTTP/2, bodies, upgrades).
    pub(super) hyper: hyper_util::server::conn::auto::Builder<TokioExecutor>,
}

/// Only ever locked by one ingress thread, never across an await.
#[allow(clippy::disallowed_types)]
type LanesLock = std::sync::Mutex<Lanes>;

impl Shared {
    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lane of the route for a request whose host is `authority()` (read only when
    /// the table routes by host).
    pub(super) fn lane<'a>(
        &self,
        authority: impl FnOnce() -> Option<&'a [u8]>,
    ) -> Result<Arc<Lane>, Unrouted> {
        self.lanes().choose(authority)
    }

    /// Counts a request head refused before it was routed (it did not parse), as a
    /// refusal and a 4xx request; returns the `service` label it was counted under (the
    /// single route's, or `""` by host), for the log.
    pub(super) fn count_refused_head(&self, reason: &'static str) -> String {
        let lanes = self.lanes();
        lanes.count_refused_head(reason);
        lanes.unrouted_label().to_string()
    }

    /// Counts a request no route took.
    pub(super) fn count_unrouted(&self, reason: &'static str) {
        self.lanes().count_unrouted(reason);
    }
}

/// The data path running on its own threads; see [`start`].
pub struct Ingress {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Ingress {
    /// Waits until every worker has stopped (after the shutdown signal and the in-flight
    /// requests' grace).
    pub async fn join(self) {
        let _ = tokio::task::spawn_blocking(move || {
            for t in self.threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// An address that could not be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Binds every one of `addrs` for `workers` ingress threads: one `SO_REUSEPORT` socket per
/// address and thread, so the kernel spreads each address's connections over the threads;
/// returns each thread's group, one socket per address, in the order of `addrs`. An
/// address already in use by anyone (with `SO_REUSEPORT` or not) is refused first, so two
/// runlets never share a port silently. (Port 0 picks a port per address.) Must be called
/// within a tokio runtime; the listeners come back as std sockets.
pub fn bind(
    addrs: &[SocketAddr],
    workers: usize,
) -> Result<Vec<Vec<std::net::TcpListener>>, BindError> {
    let workers = workers.clamp(1, MAX_WORKERS);
    let mut groups: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for &asked in addrs {
        let failed = |source| BindError {
            addr: asked,
            source,
        };
        let addr = listener(asked, false)
            .and_then(|probe| probe.local_addr())
            .map_err(failed)?;
        for group in &mut groups {
            group.push(reuseport(addr).map_err(failed)?);
        }
    }
    Ok(groups)
}

/// One listening `SO_REUSEPORT` socket on `addr`.
fn reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    listener(addr, true)
}

/// A listening socket on `addr`. `IP_FREEBIND` lets it bind an address the host does not
/// have yet: the daemon's ingress listens on the bridge's gateway, which exists once the
/// first instance's network is made.
fn listener(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuseport)?;
    if addr.is_ipv4() {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpFreebind, &true)
            .map_err(io::Error::from)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// How many ingress threads to run: `RUNLET_INGRESS_THREADS`, else one per CPU.
pub fn default_workers() -> usize {
    std::env::var("RUNLET_INGRESS_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, MAX_WORKERS)
}

/// Starts the data path on one thread per group of listeners ([`bind`]), each with a
/// single-threaded tokio runtime (thread per core, like nginx's workers): a connection, its
/// requests and their upstream connections stay on one thread. Requests go by `routes`,
/// the table the control path publishes. Workers stop accepting when `shutdown` turns true.
/// The control path keeps the main runtime; the two meet only through the route table and
/// each route's snapshot (`watch`) and [`super::Demand`] (atomics, `Notify`), which work
/// across runtimes.
pub fn start(
    listeners: Vec<Vec<std::net::TcpListener>>,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    span: tracing::Span,
) -> io::Result<Ingress> {
    let mut threads = Vec::new();
    for (i, group) in listeners.into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (routes, metrics, shutdown, span) = (
            routes.clone(),
            metrics.clone(),
            shutdown.clone(),
            span.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("ingress-{i}"))
            .spawn(move || {
                WORKER.with(|w| w.set(i % MAX_WORKERS + 1));
                rt.block_on(async move {
                    let group: io::Result<Vec<_>> =
                        group.into_iter().map(TcpListener::from_std).collect();
                    let group = match group {
                        Ok(g) => g,
                        Err(e) => return warn!("ingress worker {i}: {e}"),
                    };
                    serve(group, routes, metrics, shutdown)
                        .instrument(span)
                        .await
                })
            })?;
        threads.push(thread);
    }
    Ok(Ingress { threads })
}

/// Every 100 ms, for the life of the thread's `serve`: takes a new route table (letting go
/// of the lanes of routes that left it), flushes the per-request metrics a quiet thread
/// has added up since the last flush, and refreshes each lane's copy of its snapshot.
///
/// It also keeps a timer pending on the thread's runtime. Every request arms a deadline
/// timer, and tokio's timer driver, when a timer is armed that is due before the driver's
/// next planned wake-up (or when none is planned: no timer was pending when it last went to
/// sleep), wakes the driver through its eventfd: one extra system call, and one extra turn
/// of the event loop. Measured: a third of requests paid it under load. With this timer
/// pending, the planned wake-up is always within 100 ms, and a request deadline (at least
/// 1 s away) never comes before it.
async fn tick(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.lanes().tick();
    }
}

/// Serves requests on `listeners` (all of them, on this thread) by the route table
/// `routes` until `shutdown` turns true; then stops accepting, closes idle connections and
/// lets requests in flight finish.
pub async fn serve(
    listeners: Vec<TcpListener>,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let metrics_for_limit = metrics.clone();
    let shared = Arc::new(Shared {
        lanes: LanesLock::new(Lanes::new(routes, metrics)),
        hyper: hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()),
    });
    tokio::spawn(tick(Arc::downgrade(&shared)));
    // Every connection holds a watcher until it ends: `shutdown()` below waits for them.
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stopper = Arc::new(downstream::Stopper::default());
    let limit = ConnLimit::new(&metrics_for_limit);
    let mut next = 0;
    let mut retry = AcceptRetry::new("ingress");
    loop {
        // A place under the connection cap first: at the cap, connections wait in the
        // backlog (see `conn_limit`).
        let permit = tokio::select! {
            p = limit.acquire() => p,
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            c = accept(&listeners, &mut next, &mut retry) => c,
            _ = stopped(&mut shutdown) => break,
        };
        // Held by the connection until it ends (and by its tunnel, if it is upgraded).
        let permit = limit.open(permit);
        let client = Arc::new(headers::Client::new(peer.ip()));
        tokio::spawn(downstream::serve_conn(
            stream,
            peer,
            shared.clone(),
            client,
            stopper.clone(),
            graceful.watcher(),
            permit,
        ));
    }
    // Connections arriving from now on are refused, not left unaccepted in the backlog.
    drop(listeners);
    stopper.stop();
    // In-flight requests get to finish, bounded by the request timeout; idle connections
    // close at once. This must wait here: when an ingress thread's `serve` returns, its
    // runtime, and every connection task on it, is dropped.
    let grace = shared.lanes().longest_timeout() + Duration::from_secs(1);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {}
    }
    shared.lanes().flush();
}

/// The next connection on any of `listeners` (taking turns from `next`), with Nagle's
/// algorithm off. A failed accept (out of file descriptors, say) is retried after a pause
/// and logged at most every 10 s ([`AcceptRetry`]).
async fn accept(
    listeners: &[TcpListener],
    next: &mut usize,
    retry: &mut AcceptRetry,
) -> (TcpStream, SocketAddr) {
    loop {
        let accepted = poll_fn(|cx| {
            let n = listeners.len();
            for k in (0..n).map(|i| (*next + i) % n) {
                if let Poll::Ready(r) = listeners[k].poll_accept(cx) {
                    *next = (k + 1) % n;
                    return Poll::Ready(r);
                }
            }
            Poll::Pending
        })
        .await;
        match accepted {
            Ok((stream, peer)) => {
                retry.succeeded();
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => retry.failed(&e).await,
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
