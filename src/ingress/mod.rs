//! The data path: accept HTTP/1.1 and HTTP/2 (cleartext) requests, check headers, wait for
//! an instance with free capacity, forward, stream the response back.
//!
//! The ingress never talks to containerd. It reads a [`Snapshot`] of routable instances that
//! the control path publishes through a `watch` channel, and reports demand back through
//! [`Demand`] (atomics and a `Notify`). Every refusal becomes a status in one place,
//! [`rescue::Refusal::response`].

mod front;
pub mod h1;
pub mod headers;
pub mod raw;
pub mod rescue;
pub mod upstream;

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn, Instrument};

use crate::metrics::Metrics;
use crate::runtime::cgroup::CpuQuota;
use rescue::Refusal;
use upstream::{Upstream, UpstreamBody};

/// Body errors end the response abruptly (the connection is closed, never left hanging).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A client's request body: none (a request served by [`front`]), or hyper's.
pub enum ClientBody {
    Empty,
    Hyper(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ClientBody::Empty => hyper::body::SizeHint::with_exact(0),
            ClientBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// A request as the data path gets it: typed (hyper's: HTTP/2, bodies, upgrades), or as
/// read by [`front`] (a bodiless HTTP/1.x request, forwarded as lines when the instance
/// speaks HTTP/1.1: see [`raw`]).
pub enum ClientRequest {
    Typed(Request<ClientBody>),
    Raw(raw::RawRequest),
}

impl ClientRequest {
    fn method(&self) -> &http::Method {
        match self {
            ClientRequest::Typed(r) => r.method(),
            ClientRequest::Raw(r) => &r.method,
        }
    }

    /// The request target's path and query (for logs).
    fn target(&self) -> Option<http::uri::PathAndQuery> {
        match self {
            ClientRequest::Typed(r) => r.uri().path_and_query().cloned(),
            ClientRequest::Raw(r) => Some(r.target.clone()),
        }
    }
}

/// The response for a client: typed, or (for a raw request) the instance's head as read.
pub enum Answer {
    Typed(Response<ProxyBody>),
    Raw(raw::RawResponse, DeadlineBody),
}

impl Answer {
    fn status(&self) -> http::StatusCode {
        match self {
            Answer::Typed(r) => r.status(),
            Answer::Raw(r, _) => r.status,
        }
    }

    /// The same response, typed (for hyper).
    fn into_typed(self) -> Response<ProxyBody> {
        match self {
            Answer::Typed(r) => r,
            Answer::Raw(r, body) => {
                let mut resp = Response::new(body.boxed());
                *resp.status_mut() = r.status;
                // The fields were parsed by httparse, so they convert; should one not, the
                // response goes without it rather than fail.
                *resp.headers_mut() = r.head.to_header_map().unwrap_or_default();
                resp
            }
        }
    }
}

/// Opens a connection to an instance's ingress port.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self) -> Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>> + Send + '_>>;
}

/// Dials a plain loopback address (unit tests of the upstream clients).
#[cfg(test)]
pub(crate) struct Loopback(pub SocketAddr);

#[cfg(test)]
impl Dial for Loopback {
    fn dial(&self) -> Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>> + Send + '_>> {
        Box::pin(tokio::net::TcpStream::connect(self.0))
    }
}

/// Why an instance stopped serving; set by the control path, read when a forwarded request
/// fails, to tell an out-of-memory kill (500, LIFE-9) from a crash (502).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    OutOfMemory,
    Exited(String),
}

/// Most ingress worker threads (more are folded onto these slots).
const MAX_WORKERS: usize = 16;

thread_local! {
    /// The ingress worker this thread is (1..=MAX_WORKERS), or 0 for any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// One routable instance, as the data path sees it.
pub struct Endpoint {
    pub instance: String,
    /// `127.0.0.1:PORT`: the instance's own loopback, reached inside its namespace.
    authority: http::uri::Authority,
    in_flight: AtomicUsize,
    /// Set when the instance is being stopped: no new request takes it, whatever snapshot
    /// the request read.
    closed: AtomicBool,
    http2: bool,
    dialer: Arc<dyn Dial>,
    /// One connection pool per ingress worker thread, made on first use: a request and the
    /// upstream connection it uses are driven by the same thread, with no cross-thread
    /// wake-up (measured: a third of the proxy's CPU per request).
    upstreams: [OnceLock<Upstream<ClientBody>>; MAX_WORKERS + 1],
    death: watch::Sender<Option<Death>>,
    /// `--cpu-throttling`: the instance's CPU quota, cut while no request is in flight.
    throttle: Option<Throttle>,
}

struct Throttle {
    quota: CpuQuota,
    state: ThrottleLock,
}

#[derive(Default)]
struct ThrottleState {
    /// What was last written: `Some(true)` throttled, `Some(false)` full.
    applied: Option<bool>,
    /// Stopping: full CPU for the shutdown, and no more throttling.
    released: bool,
}

/// Held for a quota write at an instance's idle/busy transitions, never across an await.
#[allow(clippy::disallowed_types)]
type ThrottleLock = std::sync::Mutex<ThrottleState>;

impl Endpoint {
    pub fn new(instance: String, port: u16, dialer: Arc<dyn Dial>, http2: bool) -> Self {
        let authority = http::uri::Authority::try_from(format!("127.0.0.1:{port}"))
            .unwrap_or_else(|_| http::uri::Authority::from_static("127.0.0.1"));
        Endpoint {
            instance,
            authority,
            in_flight: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            http2,
            dialer,
            upstreams: Default::default(),
            death: watch::channel(None).0,
            throttle: None,
        }
    }

    /// Throttles the instance's CPU while it has no request in flight (`--cpu-throttling`).
    pub fn with_cpu_throttling(mut self, quota: CpuQuota) -> Self {
        self.throttle = Some(Throttle {
            quota,
            state: Default::default(),
        });
        self
    }

    /// Brings the CPU quota in line with the in-flight count: throttled at 0, full above.
    /// Called at the 0→1 and 1→0 transitions (and by the control path once the instance is
    /// ready); the count is read again under the lock, so whichever of two racing
    /// transitions writes last writes what is true now.
    pub fn sync_cpu(&self) {
        let Some(t) = &self.throttle else { return };
        let mut state = t.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.released {
            return;
        }
        let idle = self.in_flight.load(Ordering::SeqCst) == 0;
        if state.applied != Some(idle) {
            match t.quota.set(idle) {
                Ok(()) => state.applied = Some(idle),
                Err(e) => {
                    // Without the file there is nothing to throttle: stop trying.
                    warn!(instance = %self.instance, "CPU throttling off: {}: {e}", t.quota.file().display());
                    state.released = true;
                }
            }
        }
    }

    /// Gives the instance its full CPU for good (it is being stopped).
    pub fn release_cpu(&self) {
        let Some(t) = &self.throttle else { return };
        let mut state = t.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.released && state.applied == Some(true) {
            let _ = t.quota.set(false);
        }
        state.released = true;
    }

    /// This thread's connections to the instance.
    fn upstream(&self) -> &Upstream<ClientBody> {
        let worker = WORKER.with(Cell::get);
        self.upstreams[worker]
            .get_or_init(|| Upstream::new(self.dialer.clone(), self.authority.clone(), self.http2))
    }

    /// Records why the instance died (the first cause wins).
    pub fn mark_dead(&self, cause: Death) {
        self.death.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(cause);
                true
            } else {
                false
            }
        });
    }

    /// The cause of death, waiting up to `until` for the control path to learn it.
    async fn death_by(&self, until: Instant) -> Option<Death> {
        let mut rx = self.death.subscribe();
        let found = tokio::time::timeout_at(until, rx.wait_for(|d| d.is_some()))
            .await
            .map(|r| r.map(|d| d.clone()));
        match found {
            Ok(Ok(d)) => d,
            _ => None,
        }
    }

    /// Takes no new requests from now on; requests already in flight finish. (After this,
    /// `in_flight` only goes down.)
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> usize {
        // SeqCst: read after `close`, it sees every request that did not see the mark.
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// The set of instances requests may go to. Published by the control path.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Instances being started (requests may wait for them).
    pub starting: usize,
    /// True when no more instances can be started.
    pub at_max: bool,
    /// Set when the latest start-up failed: waiting requests get 503 with this reason.
    pub failed_start: Option<String>,
    /// The service's average observed instance start-up time.
    pub avg_startup: Option<Duration>,
}

/// How long a request may wait for a slot (LIFE-3): the base hold (10 s); while an instance
/// is starting, at least the service's average start-up time, with a margin for a start a
/// bit slower than average (1.5 × the average + 1 s). Always also bounded by the request's
/// own deadline.
pub fn hold_for(base: Duration, starting: bool, avg_startup: Option<Duration>) -> Duration {
    match (starting, avg_startup) {
        (true, Some(avg)) => base.max(avg * 3 / 2 + Duration::from_secs(1)),
        _ => base,
    }
}

/// Demand, reported by the data path to the control path without a call.
#[derive(Default)]
pub struct Demand {
    pub queued: AtomicUsize,
    /// Woken when a request has to wait (so the control path can scale out).
    pub wake: Notify,
    /// Woken when a request finishes (capacity freed).
    released: Notify,
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

struct Shared {
    cfg: IngressConfig,
    snapshot: watch::Receiver<Snapshot>,
    /// This thread's copy of the snapshot, brought up to date when the snapshot's version
    /// changes: reading the `watch` itself takes a read lock shared with every thread (and
    /// cloning a receiver, a reference count), contended atomics on every request.
    cached: CachedSnapshot,
    demand: Arc<Demand>,
    metrics: Arc<Metrics>,
    /// This service's metric handle, resolved once: a label lookup per request costs a
    /// hash and a lock.
    queue_wait: prometheus::Histogram,
    /// Per-request metrics, added up by this thread (see [`LocalMetrics`]).
    local: LocalMetricsLock,
    /// Serves the connections [`front`] hands over (HTTP/2, bodies, upgrades).
    hyper: hyper_util::server::conn::auto::Builder<TokioExecutor>,
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
    fn record(&self, class: usize, latency: Duration) {
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
    fn try_acquire_cached(&self) -> Option<Slot> {
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
    fn count_refusal(&self, reason: &'static str) {
        self.metrics
            .refusals
            .with_label_values(&[&self.cfg.service, reason])
            .inc();
    }

    /// Counts a request head refused before it reached [`handle`] (it did not parse): as a
    /// refusal, and as a 4xx request.
    fn count_refused_head(&self, reason: &'static str) {
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
    let stopper = Arc::new(front::Stopper::default());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = Arc::new(headers::Client::new(peer.ip()));
        let conn = front::serve_conn(
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

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves the rest of a connection with hyper (HTTP/2, requests with a body, upgrades).
async fn serve_with_hyper(
    io: front::Rewind,
    peer: SocketAddr,
    shared: Arc<Shared>,
    client: Arc<headers::Client>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let for_requests = shared.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (shared, client) = (for_requests.clone(), client.clone());
        async move {
            let req = ClientRequest::Typed(req.map(ClientBody::Hyper));
            Ok::<_, Infallible>(handle(shared, client, req).await.into_typed())
        }
    });
    let conn = shared
        .hyper
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        match e.downcast_ref::<hyper::Error>() {
            // hyper answered 400 (or 431/414) itself, before any request reached runlet's
            // handler: log and count it like every other refusal.
            Some(h) if h.is_parse() || h.is_parse_too_large() => {
                info!(service = %shared.cfg.service, %peer, reason = "malformed", "refused: malformed request: {e}");
                shared.count_refused_head("malformed");
            }
            _ => debug!("connection from {peer}: {e}"),
        }
    }
}

/// Releases an instance slot when dropped, so every exit path frees it.
struct Slot {
    endpoint: Arc<Endpoint>,
    demand: Arc<Demand>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SeqCst with the `queued` load below and the waiter's `queued` increment and
        // `in_flight` load: either the waiter sees the freed slot or this sees the waiter.
        if self.endpoint.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.endpoint.sync_cpu();
        }
        // Only waiters need the wake-up (and notify_waiters takes a lock). A waiter counts
        // itself in `queued` before it looks for a slot, so it cannot miss this.
        if self.demand.queued.load(Ordering::SeqCst) > 0 {
            self.demand.released.notify_waiters();
        }
    }
}

/// Takes a slot on the least-loaded endpoint with free capacity (no allocation: this runs
/// for every request).
fn try_acquire(snapshot: &Snapshot, concurrency: usize, demand: &Arc<Demand>) -> Option<Slot> {
    loop {
        let best = snapshot
            .endpoints
            .iter()
            .filter(|e| !e.closed.load(Ordering::SeqCst))
            .map(|e| (e, e.in_flight.load(Ordering::SeqCst)))
            .filter(|(_, n)| *n < concurrency)
            .min_by_key(|(_, n)| *n)?;
        let (e, cur) = best;
        if e.in_flight
            .compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let slot = Slot {
                endpoint: e.clone(),
                demand: demand.clone(),
            };
            // SeqCst with `close`: either the control path sees this request in flight
            // and waits for it, or this sees the endpoint closed and lets it go.
            if e.closed.load(Ordering::SeqCst) {
                drop(slot);
                continue;
            }
            if cur == 0 {
                e.sync_cpu();
            }
            return Some(slot);
        }
        // Raced with another request: look again.
    }
}

/// Waits for a slot: held while instances start, up to the hold time (LIFE-3).
async fn acquire(shared: &Shared, deadline: Instant) -> Result<Slot, Refusal> {
    if let Some(s) = shared.try_acquire_cached() {
        return Ok(s);
    }
    let mut snap_rx = shared.snapshot.clone();
    let queued = shared.demand.queued.fetch_add(1, Ordering::SeqCst) + 1;
    struct Unqueue<'a>(&'a Demand);
    impl Drop for Unqueue<'_> {
        fn drop(&mut self) {
            self.0.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _unqueue = Unqueue(&shared.demand);
    if queued > shared.cfg.max_queue {
        return Err(Refusal::QueueFull);
    }
    shared.demand.wake.notify_one();
    let started = Instant::now();
    loop {
        let hold_until = {
            let snap = snap_rx.borrow();
            (started + hold_for(shared.cfg.hold, snap.starting > 0, snap.avg_startup)).min(deadline)
        };
        let released = shared.demand.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        {
            let snap = snap_rx.borrow_and_update();
            if let Some(s) = try_acquire(&snap, shared.cfg.concurrency, &shared.demand) {
                shared.queue_wait.observe(started.elapsed().as_secs_f64());
                return Ok(s);
            }
            if let Some(reason) = &snap.failed_start {
                if snap.endpoints.is_empty() && snap.starting == 0 {
                    return Err(Refusal::StartFailed(reason.clone()));
                }
            }
        }
        tokio::select! {
            _ = &mut released => {}
            r = snap_rx.changed() => if r.is_err() { return Err(Refusal::NoInstance) },
            _ = tokio::time::sleep_until(hold_until) => {
                if hold_until >= deadline {
                    return Err(Refusal::Timeout);
                }
                let snap = snap_rx.borrow();
                return Err(if snap.at_max { Refusal::RateExceeded } else { Refusal::NoInstance });
            }
        }
    }
}

async fn handle(shared: Arc<Shared>, client: Arc<headers::Client>, req: ClientRequest) -> Answer {
    let received = Instant::now();
    let deadline = received + shared.cfg.timeout;
    let target = req.target();
    let path = target.as_ref().map_or("/", |t| t.path());
    // A debug-level span: at the default level it costs nothing per request; refusals are
    // logged at info with the request's method and path.
    let span = tracing::debug_span!("request", method = %req.method(), path = %path);
    let method = req.method().clone();
    let result = forward(&shared, &client, req, deadline)
        .instrument(span)
        .await;
    let resp = match result {
        Ok(r) => r,
        Err(refusal) => {
            info!(service = %shared.cfg.service, %method, path, reason = refusal.reason(), "refused: {refusal}");
            shared.count_refusal(refusal.reason());
            Answer::Typed(refusal.response())
        }
    };
    let class = (resp.status().as_u16() / 100).min(5) as usize;
    shared.record(class, received.elapsed());
    resp
}

async fn forward(
    shared: &Shared,
    client: &headers::Client,
    req: ClientRequest,
    deadline: Instant,
) -> Result<Answer, Refusal> {
    match &req {
        ClientRequest::Typed(r) => headers::check(r.headers()),
        ClientRequest::Raw(r) => r.head.check(),
    }
    .map_err(Refusal::BadHeader)?;
    // A WebSocket (HTTP/1.1 Upgrade) passes through as a tunnel once the instance agrees.
    // (A raw request has none: `front` hands upgrades to hyper.)
    let upgrade = match &req {
        ClientRequest::Typed(r) if r.version() == http::Version::HTTP_11 => {
            headers::upgrade_protocol(r.headers())
        }
        _ => None,
    };
    // One timer for the whole request: the wait for a slot, the wait for the response
    // headers, and the body (registering a timer per phase costs on every request).
    let mut timer = Box::pin(tokio::time::sleep_until(deadline));
    let slot = tokio::select! {
        biased;
        r = acquire(shared, deadline) => r?,
        _ = &mut timer => return Err(Refusal::Timeout),
    };
    let mut req = match req {
        ClientRequest::Raw(raw) if !slot.endpoint.http2 => {
            return forward_raw(client, raw, slot, timer, deadline).await;
        }
        ClientRequest::Raw(raw) => raw.into_typed().map_err(|e| Refusal::Malformed(e.into()))?,
        ClientRequest::Typed(r) => r,
    };
    let authority = req.uri().authority().cloned();
    // HTTP/1.1 to the instance takes the origin form (`/path?query`), which is what an
    // HTTP/1.1 client sends (left as is); HTTP/2 needs the scheme and authority as
    // pseudo-headers.
    let origin_form = req.uri().scheme().is_none() && authority.is_none();
    if slot.endpoint.http2 || !origin_form {
        let mut parts = http::uri::Parts::default();
        if slot.endpoint.http2 {
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(slot.endpoint.authority.clone());
        }
        parts.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|_| Refusal::BadRequest("bad request target".into()))?;
    }
    *req.version_mut() = if slot.endpoint.http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    // (Cheap clones: both share the request's bytes.)
    let host_header = req.headers().get(http::header::HOST).cloned();
    strip_and_add(
        req.headers_mut(),
        client,
        authority
            .as_ref()
            .map(|a| a.as_str())
            .or_else(|| host_header.as_ref().and_then(|h| h.to_str().ok())),
    );
    if !req.headers().contains_key(http::header::HOST) {
        if let Ok(v) = http::HeaderValue::from_str(slot.endpoint.authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let client_upgrade = match upgrade {
        Some(proto) if !slot.endpoint.http2 => {
            req.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            req.headers_mut().insert(http::header::UPGRADE, proto);
            Some(hyper::upgrade::on(&mut req))
        }
        _ => None,
    };
    let endpoint = slot.endpoint.clone();
    let call = endpoint.upstream().send(req);
    let mut resp = answer(call, &mut timer, &endpoint, deadline).await?;
    if let Some(upgrade) = client_upgrade {
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Answer::Typed(tunnel(upgrade, &mut resp, slot, deadline)));
        }
    }
    headers::strip_hop_by_hop(resp.headers_mut());
    let dropped = headers::drop_invalid(resp.headers_mut());
    warn_dropped(&endpoint, &dropped);
    let (parts, body) = resp.into_parts();
    // The body keeps the slot until it ends, and is cut at the request deadline.
    let body = DeadlineBody {
        inner: body,
        sleep: timer,
        _slot: slot,
    };
    Ok(Answer::Typed(Response::from_parts(parts, body.boxed())))
}

/// [`forward`] for a raw request to an HTTP/1.1 instance: its lines go out and the
/// response's come back with no `HeaderMap` in between (see [`raw`]).
async fn forward_raw(
    client: &headers::Client,
    mut req: raw::RawRequest,
    slot: Slot,
    mut timer: Pin<Box<Sleep>>,
    deadline: Instant,
) -> Result<Answer, Refusal> {
    let endpoint = slot.endpoint.clone();
    let head = req.encode(client, endpoint.authority.as_str());
    let call = endpoint.upstream().send_head(
        &head,
        req.method.is_idempotent(),
        req.method == http::Method::HEAD,
    );
    let (mut resp, body) = answer(call, &mut timer, &endpoint, deadline).await?;
    resp.head.strip_hop_by_hop();
    let dropped = resp.head.drop_invalid();
    warn_dropped(&endpoint, &dropped);
    let body = DeadlineBody {
        inner: UpstreamBody::H1(body),
        sleep: timer,
        _slot: slot,
    };
    Ok(Answer::Raw(resp, body))
}

/// The instance's answer to `call`, or the refusal when the request deadline (`timer`)
/// comes first or the instance does not answer. A broken connection may be the instance
/// dying: the control path gets a moment to say why (an OOM kill turns into 500, per
/// LIFE-9).
async fn answer<T, E: std::fmt::Display>(
    call: impl Future<Output = Result<T, E>>,
    timer: &mut Pin<Box<Sleep>>,
    endpoint: &Endpoint,
    deadline: Instant,
) -> Result<T, Refusal> {
    let e = tokio::select! {
        biased;
        r = call => match r {
            Ok(r) => return Ok(r),
            Err(e) => e.to_string(),
        },
        _ = timer => return Err(Refusal::Timeout),
    };
    let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
    Err(match endpoint.death_by(until).await {
        Some(Death::OutOfMemory) => Refusal::OutOfMemory,
        Some(Death::Exited(how)) => Refusal::Upstream(format!("the instance exited ({how})")),
        None => Refusal::Upstream(e),
    })
}

fn warn_dropped(endpoint: &Endpoint, dropped: &[String]) {
    if !dropped.is_empty() {
        warn!(instance = %endpoint.instance, "dropped response headers breaking HDR-1/HDR-2: {}", dropped.join(", "));
    }
}

/// Answers 101 to the client and splices the two upgraded connections until either side
/// closes or the request deadline passes (Cloud Run applies the request timeout to
/// WebSockets). The slot is held for the tunnel's life.
fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    resp: &mut Response<UpstreamBody>,
    slot: Slot,
    deadline: Instant,
) -> Response<ProxyBody> {
    let upstream = hyper::upgrade::on(&mut *resp);
    tokio::spawn(async move {
        let _slot = slot;
        if let (Ok(c), Ok(u)) = tokio::join!(client, upstream) {
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
            if tokio::time::timeout_at(deadline, copy).await.is_err() {
                debug!("WebSocket closed at the request timeout");
            }
        }
    });
    let body = http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let mut out = Response::new(body);
    *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = std::mem::take(resp.headers_mut());
    out
}

fn strip_and_add(h: &mut http::HeaderMap, client: &headers::Client, authority: Option<&str>) {
    headers::strip_hop_by_hop(h);
    headers::add_forwarding(h, client, authority);
}

/// A response body that ends with an error at the request deadline (the connection is then
/// closed: a response whose headers were sent cannot become a 504), and holds the
/// instance slot until it is done.
pub struct DeadlineBody {
    inner: UpstreamBody,
    sleep: Pin<Box<Sleep>>,
    _slot: Slot,
}

/// The request deadline passed while the response was streaming.
#[derive(Debug, thiserror::Error)]
#[error("request timeout reached while streaming the response")]
pub struct CutAtDeadline;

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(|e| Box::new(e) as BoxError)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(CutAtDeadline)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_times() {
        let ten = Duration::from_secs(10);
        let table = [
            (false, None, ten),
            (true, None, ten),
            (true, Some(Duration::from_secs(2)), ten),
            (true, Some(Duration::from_secs(6)), ten),
            (true, Some(Duration::from_secs(12)), Duration::from_secs(19)),
            (true, Some(Duration::from_secs(30)), Duration::from_secs(46)),
            (false, Some(Duration::from_secs(30)), ten),
        ];
        for (starting, avg, want) in table {
            assert_eq!(
                hold_for(ten, starting, avg),
                want,
                "starting={starting} avg={avg:?}"
            );
        }
    }

    struct Nowhere;
    impl Dial for Nowhere {
        fn dial(
            &self,
        ) -> Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>> + Send + '_>> {
            Box::pin(async { Err(io::Error::other("nowhere")) })
        }
    }

    #[test]
    fn requests_go_to_the_least_loaded_open_endpoint_with_room() {
        let e = |name: &str| Arc::new(Endpoint::new(name.into(), 8080, Arc::new(Nowhere), false));
        let (a, b) = (e("a"), e("b"));
        let snap = Snapshot {
            endpoints: vec![a.clone(), b.clone()],
            ..Default::default()
        };
        let demand = Arc::new(Demand::default());
        let take = || try_acquire(&snap, 2, &demand);
        let s1 = take().unwrap();
        let s2 = take().unwrap();
        assert_ne!(
            s1.endpoint.instance, s2.endpoint.instance,
            "least loaded first"
        );
        let s3 = take().unwrap();
        let s4 = take().unwrap();
        assert!(take().is_none(), "concurrency 2 on both");
        drop((s1, s2, s3, s4));
        // A closed endpoint (being stopped) takes nothing, even from a snapshot that still
        // lists it.
        a.close();
        let held = [take().unwrap(), take().unwrap()];
        assert!(take().is_none(), "b is full and a is closed");
        assert_eq!((a.in_flight(), b.in_flight()), (0, 2));
        drop(held);
    }

    #[test]
    fn cpu_is_throttled_exactly_while_no_request_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cpu.cfs_quota_us");
        let quota = || std::fs::read_to_string(&file).unwrap();
        let e = Arc::new(
            Endpoint::new("i".into(), 8080, Arc::new(Nowhere), false)
                .with_cpu_throttling(CpuQuota::at(file.clone(), "100000", "1000")),
        );
        let snap = Snapshot {
            endpoints: vec![e.clone()],
            ..Default::default()
        };
        let demand = Arc::new(Demand::default());
        e.sync_cpu();
        assert_eq!(quota(), "1000", "idle once ready");
        let a = try_acquire(&snap, 80, &demand).unwrap();
        assert_eq!(quota(), "100000", "first request");
        let b = try_acquire(&snap, 80, &demand).unwrap();
        drop(a);
        assert_eq!(quota(), "100000", "one still in flight");
        drop(b);
        assert_eq!(quota(), "1000", "idle again");
        e.release_cpu();
        assert_eq!(quota(), "100000", "stopping: full CPU");
        drop(try_acquire(&snap, 80, &demand).unwrap());
        assert_eq!(quota(), "100000", "never throttled again once released");
    }

    #[test]
    fn without_the_quota_file_throttling_turns_itself_off() {
        let e = Endpoint::new("i".into(), 8080, Arc::new(Nowhere), false).with_cpu_throttling(
            CpuQuota::at("/nonexistent/cpu.max".into(), "100000", "1000"),
        );
        e.sync_cpu();
        e.sync_cpu();
        e.release_cpu();
    }
}
