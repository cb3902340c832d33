//! The ingress worker threads: one per listener, each with its own single-threaded tokio
//! runtime and its own state ([`Shared`]: a copy of the snapshot, metrics added up locally,
//! hyper's server), and the accept loop each runs ([`serve`]).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{warn, Instrument};

use super::admission::{try_acquire, Demand, Slot};
use super::downstream;
use super::endpoint::Snapshot;
use super::headers;
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

/// The ingress settings.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub service: String,
    pub concurrency: usize,
    /// How long a request waits for capacity before 429/503 (LIFE-3).
    pub hold: Duration,
    /// Request timeout from receipt (RESP-1).
    pub timeout: Duration,
    /// Largest number of waiting requests; beyond it requests are refused at once.
    pub max_queue: usize,
}

/// One worker thread's state, shared by its connections.
pub(super) struct Shared {
    pub(super) cfg: IngressConfig,
    pub(super) snapshot: watch::Receiver<Snapshot>,
    /// This thread's copy of the snapshot, brought up to date when the snapshot's version
    /// changes: reading the `watch` itself takes a read lock shared with every thread (and
    /// cloning a receiver, a reference count), contended atomics on every request.
    cached: CachedSnapshot,
    pub(super) demand: Arc<Demand>,
    metrics: Arc<Metrics>,
    /// This service's metric handle, resolved once: a label lookup per request costs a
    /// hash and a lock.
    pub(super) queue_wait: prometheus::Histogram,
    /// Per-request metrics, added up by this thread (see [`LocalMetrics`]).
    local: LocalMetricsLock,
    /// Serves the connections [`downstream`] hands over (HTTP/2, bodies, upgrades).
    pub(super) hyper: hyper_util::server::conn::auto::Builder<TokioExecutor>,
}

/// This thread's requests by status class and their latency, added up here and flushed to
/// the shared metrics every 64 requests, and every 100 ms by [`tick`]: updating the shared
/// counter and histogram took contended atomics (five or so) on every request.
struct LocalMetrics {
    requests: [prometheus::local::LocalIntCounter; 6],
    latency: prometheus::local::LocalHistogram,
    pending: u32,
}

impl LocalMetrics {
    fn flush(&mut self) {
        for c in &self.requests {
            c.flush();
        }
        self.latency.flush();
        self.pending = 0;
    }
}

/// Only ever locked by one ingress thread, never across an await.
#[allow(clippy::disallowed_types)]
type LocalMetricsLock = std::sync::Mutex<LocalMetrics>;

/// Only ever locked by one ingress thread, never across an await.
#[allow(clippy::disallowed_types)]
type CachedSnapshot = std::sync::Mutex<(watch::Receiver<Snapshot>, Snapshot)>;

impl Shared {
    fn local_metrics(&self) -> std::sync::MutexGuard<'_, LocalMetrics> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a finished request (see [`LocalMetrics`]).
    pub(super) fn record(&self, class: usize, latency: Duration) {
        let mut m = self.local_metrics();
        m.requests[class].inc();
        m.latency.observe(latency.as_secs_f64());
        m.pending += 1;
        if m.pending >= 64 {
            m.flush();
        }
    }

    /// [`try_acquire`] on this thread's copy of the snapshot. A copy a moment old is safe: an
    /// instance being stopped is marked closed, and one just added is seen by the next
    /// request (or by a request that waits, which reads the `watch` itself).
    pub(super) fn try_acquire_cached(&self) -> Option<Slot> {
        let cached = self.cached_snapshot();
        try_acquire(&cached.1, self.cfg.concurrency, &self.demand)
    }

    /// This thread's copy of the snapshot, brought up to date.
    fn cached_snapshot(&self) -> std::sync::MutexGuard<'_, (watch::Receiver<Snapshot>, Snapshot)> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let (rx, snap) = &mut *cached;
        if rx.has_changed().unwrap_or(false) {
            *snap = rx.borrow_and_update().clone();
        }
        cached
    }

    fn refresh_cached(&self) {
        drop(self.cached_snapshot());
    }

    /// Counts a refusal in `runlet_refusals_total{service,reason}`.
    pub(super) fn count_refusal(&self, reason: &'static str) {
        self.metrics
            .refusals
            .with_label_values(&[&self.cfg.service, reason])
            .inc();
    }

    /// Counts a request head refused before it reached [`super::proxy::handle`] (it did not
    /// parse): as a refusal, and as a 4xx request.
    pub(super) fn count_refused_head(&self, reason: &'static str) {
        self.count_refusal(reason);
        let mut m = self.local_metrics();
        m.requests[4].inc();
        m.pending += 1;
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

/// Binds `addr` for `workers` ingress threads: one `SO_REUSEPORT` socket each, so the
/// kernel spreads connections over them. An address already in use by anyone (with
/// `SO_REUSEPORT` or not) is refused first, so two runlets never share a port silently.
/// Must be called within a tokio runtime; the listeners come back as std sockets.
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let addr = std::net::TcpListener::bind(addr)?.local_addr()?;
    (0..workers.clamp(1, MAX_WORKERS))
        .map(|_| {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            socket.listen(1024)?.into_std()
        })
        .collect()
}

/// How many ingress threads to run: `RUNLET_INGRESS_THREADS`, else one per CPU.
pub fn default_workers() -> usize {
    std::env::var("RUNLET_INGRESS_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, MAX_WORKERS)
}

/// Starts the data path on one thread per listener, each with a single-threaded tokio
/// runtime (thread per core, like nginx's workers): a connection, its requests and their
/// upstream connections stay on one thread. Workers stop accepting when `shutdown` turns
/// true. The control path keeps the main runtime; the two meet only through the snapshot
/// (`watch`) and [`Demand`] (atomics, `Notify`), which work across runtimes.
pub fn start(
    listeners: Vec<std::net::TcpListener>,
    cfg: IngressConfig,
    snapshot: watch::Receiver<Snapshot>,
    demand: Arc<Demand>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    span: tracing::Span,
) -> io::Result<Ingress> {
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (cfg, snapshot, demand, metrics, shutdown, span) = (
            cfg.clone(),
            snapshot.clone(),
            demand.clone(),
            metrics.clone(),
            shutdown.clone(),
            span.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("ingress-{i}"))
            .spawn(move || {
                WORKER.with(|w| w.set(i % MAX_WORKERS + 1));
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return warn!("ingress worker {i}: {e}"),
                    };
                    serve(listener, cfg, snapshot, demand, metrics, shutdown)
                        .instrument(span)
                        .await
                })
            })?;
        threads.push(thread);
    }
    Ok(Ingress { threads })
}

/// Every 100 ms, for the life of the thread's `serve`: flushes the per-request metrics a
/// quiet thread has added up since the last flush.
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
        {
            let mut m = shared.local_metrics();
            if m.pending > 0 {
                m.flush();
            }
        }
        // A quiet thread's copy would otherwise keep removed instances (and its pooled
        // connections to them) until its next request.
        shared.refresh_cached();
    }
}

/// Serves requests on `listener` until `shutdown` turns true; then stops accepting, closes
/// idle connections and lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    cfg: IngressConfig,
    snapshot: watch::Receiver<Snapshot>,
    demand: Arc<Demand>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let svc = cfg.service.clone();
    let class = |c: &str| metrics.requests.with_label_values(&[&svc, c]);
    let requests_by_class = [
        class("1xx"),
        class("1xx"),
        class("2xx"),
        class("3xx"),
        class("4xx"),
        class("5xx"),
    ];
    let local = LocalMetrics {
        requests: requests_by_class.map(|c| c.local()),
        latency: metrics.latency.with_label_values(&[&svc]).local(),
        pending: 0,
    };
    let queue_wait = metrics.queue_wait.with_label_values(&[&svc]);
    let mut cached_rx = snapshot.clone();
    let first = cached_rx.borrow_and_update().clone();
    let shared = Arc::new(Shared {
        cfg,
        cached: CachedSnapshot::new((cached_rx, first)),
        snapshot,
        demand,
        metrics,
        queue_wait,
        local: LocalMetricsLock::new(local),
        hyper: hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()),
    });
    tokio::spawn(tick(Arc::downgrade(&shared)));
    // Every connection holds a watcher until it ends: `shutdown()` below waits for them.
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stopper = Arc::new(downstream::Stopper::default());
    loop {
        let (stream, peer) = tokio::select! {
            c = accept(&listener) => c,
            _ = stopped(&mut shutdown) => break,
        };
        let client = Arc::new(headers::Client::new(peer.ip()));
        let conn = downstream::serve_conn(
            stream,
            peer,
            shared.clone(),
            client,
            stopper.clone(),
            graceful.watcher(),
        );
        tokio::spawn(conn);
    }
    // Connections arriving from now on are refused, not left unaccepted in the backlog.
    drop(listener);
    stopper.stop();
    // In-flight requests get to finish, bounded by the request timeout; idle connections
    // close at once. This must wait here: when an ingress thread's `serve` returns, its
    // runtime, and every connection task on it, is dropped.
    let grace = shared.cfg.timeout + Duration::from_secs(1);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {}
    }
    shared.local_metrics().flush();
}

/// The next connection, with Nagle's algorithm off. A failed accept (out of file
/// descriptors, say) is logged and tried again after a pause.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
