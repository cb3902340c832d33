//! One route's state on one ingress worker thread ([`Lane`]: this thread's copy of the
//! route's snapshot, its per-request metrics added up here, its resolved metric handles),
//! and the thread's set of them ([`Lanes`]), which follows the route table the control path
//! publishes: a lane is made on a route's first request on the thread (at once for a single
//! route) and let go when the route leaves the table; requests still holding it finish on
//! it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::admission::{try_acquire, Slot};
use super::endpoint::Snapshot;
use super::route::{route_key, IngressConfig, Route, RouteTable, Unrouted};
use crate::metrics::Metrics;

/// One route's state on one worker thread, shared by its connections.
pub(super) struct Lane {
    pub(super) route: Arc<Route>,
    /// This thread's copy of the route's snapshot, brought up to date when the snapshot's
    /// version changes: reading the `watch` itself takes a read lock shared with every
    /// thread (and cloning a receiver, a reference count), contended atomics on every
    /// request.
    cached: CachedSnapshot,
    /// This route's metric handle, resolved once: a label lookup per request costs a hash
    /// and a lock.
    pub(super) queue_wait: prometheus::Histogram,
    /// Per-request metrics, added up by this thread (see [`LocalMetrics`]).
    local: LocalMetricsLock,
    metrics: Arc<Metrics>,
}

/// This thread's requests by status class and their latency, added up here and flushed to
/// the shared metrics every 64 requests, every 100 ms (the worker's `tick`) and when the
/// lane goes: updating the shared counter and histogram took contended atomics (five or
/// so) on every request.
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

impl Lane {
    fn new(route: Arc<Route>, metrics: &Arc<Metrics>) -> Lane {
        let svc = route.cfg.service.as_str();
        let class = |c: &str| metrics.requests.with_label_values(&[svc, c]).local();
        let local = LocalMetrics {
            requests: [
                class("1xx"),
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            latency: metrics.latency.with_label_values(&[svc]).local(),
            pending: 0,
        };
        let queue_wait = metrics.queue_wait.with_label_values(&[svc]);
        let mut rx = route.snapshot.clone();
        let first = rx.borrow_and_update().clone();
        Lane {
            route,
            cached: CachedSnapshot::new((rx, first)),
            queue_wait,
            local: LocalMetricsLock::new(local),
            metrics: metrics.clone(),
        }
    }

    pub(super) fn cfg(&self) -> &IngressConfig {
        &self.route.cfg
    }

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

    /// Flushes what this thread added up, if anything.
    fn flush(&self) {
        let mut m = self.local_metrics();
        if m.pending > 0 {
            m.flush();
        }
    }

    /// [`try_acquire`] on this thread's copy of the snapshot. A copy a moment old is safe: an
    /// instance being stopped is marked closed, and one just added is seen by the next
    /// request (or by a request that waits, which reads the `watch` itself).
    pub(super) fn try_acquire_cached(&self) -> Option<Slot> {
        let cached = self.cached_snapshot();
        try_acquire(&cached.1, self.cfg().concurrency, &self.route.demand)
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

    /// Counts a refusal in `runlet_refusals_total{service,reason}`.
    pub(super) fn count_refusal(&self, reason: &'static str) {
        self.metrics
            .refusals
            .with_label_values(&[&self.cfg().service, reason])
            .inc();
    }

    /// Counts a request head refused before it was routed (it did not parse): as a
    /// refusal, and as a 4xx request.
    fn count_refused_head(&self, reason: &'static str) {
        self.count_refusal(reason);
        let mut m = self.local_metrics();
        m.requests[4].inc();
        m.pending += 1;
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // A local counter does not flush itself when dropped.
        let m = self.local.get_mut().unwrap_or_else(|p| p.into_inner());
        m.flush();
    }
}

/// One worker thread's view of the route table, and its lanes.
pub(super) struct Lanes {
    rx: watch::Receiver<Arc<RouteTable>>,
    table: Arc<RouteTable>,
    lanes: LaneSet,
    metrics: Arc<Metrics>,
}

enum LaneSet {
    /// The table's single route: taken with no lookup.
    Single(Arc<Lane>),
    /// By route identity ([`route_key`]), made on a route's first request.
    ByRoute(HashMap<usize, Arc<Lane>>),
}

/// The label of what cannot be told apart by service (requests refused before they were
/// routed, in a table by host).
const UNROUTED: &str = "";

impl Lanes {
    pub(super) fn new(mut rx: watch::Receiver<Arc<RouteTable>>, metrics: Arc<Metrics>) -> Lanes {
        let table = rx.borrow_and_update().clone();
        let lanes = match table.single_route() {
            Some(route) => LaneSet::Single(Arc::new(Lane::new(route.clone(), &metrics))),
            None => LaneSet::ByRoute(HashMap::new()),
        };
        Lanes {
            rx,
            table,
            lanes,
            metrics,
        }
    }

    /// Takes the latest table if the control path published one: the lanes of routes no
    /// longer in it are let go (and flushed once the last request on them ends).
    fn refresh(&mut self) {
        if !self.rx.has_changed().unwrap_or(false) {
            return;
        }
        self.table = self.rx.borrow_and_update().clone();
        let mut kept = match std::mem::replace(&mut self.lanes, LaneSet::ByRoute(HashMap::new())) {
            LaneSet::Single(lane) => HashMap::from([(route_key(&lane.route), lane)]),
            LaneSet::ByRoute(lanes) => lanes,
        };
        self.lanes = match self.table.single_route() {
            Some(route) => LaneSet::Single(
                kept.remove(&route_key(route))
                    .unwrap_or_else(|| Arc::new(Lane::new(route.clone(), &self.metrics))),
            ),
            None => {
                let keys = self.table.keys();
                kept.retain(|key, _| keys.contains(key));
                LaneSet::ByRoute(kept)
            }
        };
    }

    /// The lane for a request whose host is `authority()` (called only for a table by
    /// host: a single route's requests are not read).
    pub(super) fn choose<'a>(
        &mut self,
        authority: impl FnOnce() -> Option<&'a [u8]>,
    ) -> Result<Arc<Lane>, Unrouted> {
        self.refresh();
        let lanes = match &mut self.lanes {
            LaneSet::Single(lane) => return Ok(lane.clone()),
            LaneSet::ByRoute(lanes) => lanes,
        };
        let route = self.table.lookup(authority())?;
        let lane = lanes
            .entry(route_key(route))
            .or_insert_with(|| Arc::new(Lane::new(route.clone(), &self.metrics)));
        Ok(lane.clone())
    }

    fn each(&self) -> impl Iterator<Item = &Arc<Lane>> + '_ {
        let (single, by_route) = match &self.lanes {
            LaneSet::Single(lane) => (Some(lane), None),
            LaneSet::ByRoute(lanes) => (None, Some(lanes.values())),
        };
        single.into_iter().chain(by_route.into_iter().flatten())
    }

    /// Every 100 ms (the worker's `tick`): takes a new table, flushes what each lane added
    /// up, and brings each lane's copy of its snapshot up to date (a quiet thread's copy
    /// would otherwise keep removed instances, and its pooled connections to them, until
    /// its next request).
    pub(super) fn tick(&mut self) {
        self.refresh();
        for lane in self.each() {
            lane.flush();
            drop(lane.cached_snapshot());
        }
    }

    /// Flushes what every lane added up (the worker is stopping).
    pub(super) fn flush(&self) {
        for lane in self.each() {
            lane.flush();
        }
    }

    /// The longest request timeout of the table's routes (the shutdown grace).
    pub(super) fn longest_timeout(&self) -> Duration {
        let timeouts = self.table.routes().map(|r| r.cfg.timeout);
        timeouts.max().unwrap_or_default()
    }

    /// The `service` label of requests refused before they were routed: the single
    /// route's, or `""` in a table by host.
    pub(super) fn unrouted_label(&self) -> &str {
        match &self.lanes {
            LaneSet::Single(lane) => &lane.cfg().service,
            LaneSet::ByRoute(_) => UNROUTED,
        }
    }

    /// Counts a request head refused before it was routed (it did not parse), as a
    /// refusal and a 4xx request: the single route's, or the unrouted ones' by host.
    pub(super) fn count_refused_head(&self, reason: &'static str) {
        match &self.lanes {
            LaneSet::Single(lane) => lane.count_refused_head(reason),
            LaneSet::ByRoute(_) => self.count_unrouted(reason),
        }
    }

    /// Counts a request that had no route (or whose head did not parse), under `service=""`.
    pub(super) fn count_unrouted(&self, reason: &'static str) {
        let m = &self.metrics;
        m.refusals.with_label_values(&[UNROUTED, reason]).inc();
        m.requests.with_label_values(&[UNROUTED, "4xx"]).inc();
    }
}
