//! The service controller: keeps the set of instances in line with the autoscaler's
//! decisions, publishes the routable snapshot to the ingress, and runs the stop sequence on
//! scale-in, crashes and shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};

use super::autoscale::{self, InstanceLoad, Observation, Policy};
use super::instance::{Ctx, Running, StartError};
use crate::ingress::{Death, Demand, Snapshot};
use crate::metrics::Metrics;
use crate::runtime::{labels, Runtime};
use crate::spec::ServiceSpec;

enum Event {
    Started(Result<Running, (String, StartError)>),
    Exited(String),
    Unhealthy(String, String),
    Stopped(String),
}

struct Ready {
    running: Running,
    idle_since: Instant,
}

/// Runs the service until `shutdown` resolves, then stops every instance and returns.
pub async fn run<I: Instances>(
    ctx: Arc<I>,
    policy: Policy,
    demand: Arc<Demand>,
    snapshot_tx: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
    initial: Vec<Running>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let service = ctx.spec().name.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut ready: Vec<Ready> = Vec::new();
    let mut starting: usize = initial.len();
    for r in initial {
        let _ = tx.send(Event::Started(Ok(r)));
    }
    let mut stopping: usize = 0;
    let mut failures: u32 = 0;
    let mut not_before = Instant::now();
    let mut failed_reason: Option<String> = None;
    let mut exit_watchers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut live_checks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut ooms = match ctx.oom_events().await {
        Ok(rx) => Some(rx),
        Err(e) => {
            warn!("cannot subscribe to OOM events ({e}); OOM kills are told from exit status only");
            None
        }
    };
    let mut oom_seen: HashSet<String> = HashSet::new();
    // The last start-up times: their average sets how long requests wait for a start.
    let mut startups: Vec<Duration> = Vec::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = demand.wake.notified() => {}
            _ = tick.tick() => {}
            Some(id) = recv_opt(&mut ooms) => {
                oom_seen.insert(id.clone());
                if let Some(pos) = ready.iter().position(|r| r.running.id == id) {
                    // LIFE-9: the instance is terminated, even if only a child was killed
                    // and the main process lives on; its in-flight requests get 500.
                    let r = ready.remove(pos);
                    r.running.endpoint.mark_dead(Death::OutOfMemory);
                    metrics.ooms.with_label_values(&[&service]).inc();
                    warn!(instance = %id, "instance OOM-killed: it exceeded its memory limit of {} MiB; terminating it", ctx.spec().memory_bytes >> 20);
                    stopping += 1;
                    spawn_stop(&ctx, r.running, &tx, false);
                }
            }
            Some(ev) = rx.recv() => match ev {
                Event::Started(Ok(running)) => {
                    starting -= 1;
                    failures = 0;
                    failed_reason = None;
                    metrics.starts.with_label_values(&[&service, "ready"]).inc();
                    metrics.startup.with_label_values(&[&service]).observe(running.startup.as_secs_f64());
                    startups.push(running.startup);
                    if startups.len() > 20 {
                        startups.remove(0);
                    }
                    info!(instance = %running.id, "instance ready after {} ms ({})", running.startup.as_millis(), running.phases);
                    let mut exit = running.exit.clone();
                    let id = running.id.clone();
                    let tx2 = tx.clone();
                    exit_watchers.insert(id.clone(), tokio::spawn(async move {
                        while exit.borrow_and_update().is_none() {
                            if exit.changed().await.is_err() { return; }
                        }
                        let _ = tx2.send(Event::Exited(id));
                    }));
                    if let (Some(p), Some(d)) = (ctx.spec().liveness_probe.clone(), running.dialer.clone()) {
                        let (id, tx2) = (running.id.clone(), tx.clone());
                        let h = tokio::spawn(async move {
                            let reason = liveness(&p, &d).await;
                            let _ = tx2.send(Event::Unhealthy(id, reason));
                        });
                        live_checks.insert(running.id.clone(), h);
                    }
                    ready.push(Ready { running, idle_since: Instant::now() });
                }
                Event::Started(Err((id, e))) => {
                    starting -= 1;
                    failures += 1;
                    let backoff = Duration::from_millis(500 * 2u64.saturating_pow(failures.min(7))).min(Duration::from_secs(60));
                    not_before = Instant::now() + backoff;
                    metrics.starts.with_label_values(&[&service, "failed"]).inc();
                    error!(instance = %id, "instance failed to start: {e}; next attempt in {} ms", backoff.as_millis());
                    failed_reason = Some(e.to_string());
                }
                Event::Exited(id) => {
                    if let Some(pos) = ready.iter().position(|r| r.running.id == id) {
                        let r = ready.remove(pos);
                        let status = (*r.running.exit.borrow()).map(|s| s.to_string()).unwrap_or_default();
                        if oom_seen.contains(&id) || ctx.oom_killed(&id).await {
                            r.running.endpoint.mark_dead(Death::OutOfMemory);
                            metrics.ooms.with_label_values(&[&service]).inc();
                            warn!(instance = %id, "instance OOM-killed ({status}): it exceeded its memory limit of {} MiB", ctx.spec().memory_bytes >> 20);
                        } else {
                            r.running.endpoint.mark_dead(Death::Exited(status.clone()));
                            warn!(instance = %id, "instance exited while serving ({status}); removing it");
                        }
                        stopping += 1;
                        spawn_stop(&ctx, r.running, &tx, false);
                    }
                }
                Event::Unhealthy(id, reason) => {
                    if let Some(pos) = ready.iter().position(|r| r.running.id == id) {
                        let r = ready.remove(pos);
                        r.running.endpoint.mark_dead(Death::Exited(format!("liveness probe failed: {reason}")));
                        warn!(instance = %id, "liveness probe failed: {reason}; replacing the instance");
                        stopping += 1;
                        spawn_stop(&ctx, r.running, &tx, true);
                    }
                }
                Event::Stopped(id) => {
                    if let Some(h) = live_checks.remove(&id) {
                        h.abort();
                    }
                    stopping -= 1;
                    let _ = metrics.in_flight.remove_label_values(&[&service, &id]);
                    if let Some(h) = exit_watchers.remove(&id) {
                        h.abort();
                    }
                    info!(instance = %id, "instance stopped");
                }
            }
        }
        // Idle bookkeeping, then the decision.
        let now = Instant::now();
        for r in &mut ready {
            if r.running.endpoint.in_flight() > 0 {
                r.idle_since = now;
            }
        }
        let obs = Observation {
            ready: ready
                .iter()
                .map(|r| InstanceLoad {
                    in_flight: r.running.endpoint.in_flight(),
                    idle_for: now - r.idle_since,
                })
                .collect(),
            starting,
            queued: demand.queued.load(Ordering::Acquire),
        };
        let d = autoscale::decide(&policy, &obs);
        let mut stop_idx = d.stop.clone();
        stop_idx.sort_unstable_by(|a, b| b.cmp(a));
        for i in stop_idx {
            let r = ready.remove(i);
            info!(instance = %r.running.id, "instance idle for {} s: draining", (now - r.idle_since).as_secs());
            stopping += 1;
            spawn_stop(&ctx, r.running, &tx, true);
        }
        if d.start > 0 && now >= not_before {
            for _ in 0..d.start {
                starting += 1;
                let id = format!("{}-{}", ctx.spec().revision, crate::util::random_suffix(5));
                info!(instance = %id, "instance starting");
                let ctx2 = ctx.clone();
                let tx2 = tx.clone();
                let span =
                    tracing::info_span!("instance", service = %ctx.spec().name, instance = %id);
                tokio::spawn(
                    async move {
                        let r = ctx2.launch(&id).await.map_err(|e| (id, e));
                        let _ = tx2.send(Event::Started(r));
                    }
                    .instrument(span),
                );
            }
        }
        metrics
            .instances
            .with_label_values(&[&service, "ready"])
            .set(ready.len() as i64);
        metrics
            .instances
            .with_label_values(&[&service, "starting"])
            .set(starting as i64);
        metrics
            .instances
            .with_label_values(&[&service, "stopping"])
            .set(stopping as i64);
        let snap = Snapshot {
            endpoints: ready.iter().map(|r| r.running.endpoint.clone()).collect(),
            starting,
            at_max: ready.len() + starting >= policy.max_instances,
            failed_start: if starting == 0 && ready.is_empty() {
                failed_reason.clone()
            } else {
                None
            },
            avg_startup: (!startups.is_empty())
                .then(|| startups.iter().sum::<Duration>() / startups.len() as u32),
        };
        metrics
            .queue_depth
            .with_label_values(&[&service])
            .set(obs.queued as i64);
        for r in &ready {
            metrics
                .in_flight
                .with_label_values(&[&service, &r.running.id])
                .set(r.running.endpoint.in_flight() as i64);
        }
        snapshot_tx.send_replace(snap);
    }

    // Shutdown: stop routing, let in-flight requests finish, stop everything.
    info!(service = %service, "shutting down: draining {} instance(s)", ready.len());
    snapshot_tx.send_replace(Snapshot {
        at_max: true,
        ..Default::default()
    });
    for r in ready.drain(..) {
        stopping += 1;
        spawn_stop(&ctx, r.running, &tx, true);
    }
    while stopping > 0 || starting > 0 {
        match rx.recv().await {
            Some(Event::Stopped(_)) => stopping -= 1,
            Some(Event::Started(Ok(running))) => {
                starting -= 1;
                stopping += 1;
                spawn_stop(&ctx, running, &tx, true);
            }
            Some(Event::Started(Err(_))) => starting -= 1,
            Some(Event::Exited(_)) | Some(Event::Unhealthy(..)) => {}
            None => break,
        }
    }
    for (_, h) in exit_watchers.into_iter().chain(live_checks) {
        h.abort();
    }
}

/// Drains an instance (in-flight requests finish, bounded by the request timeout), then
/// runs the stop sequence in the background.
fn spawn_stop<I: Instances>(
    ctx: &Arc<I>,
    running: Running,
    tx: &mpsc::UnboundedSender<Event>,
    drain: bool,
) {
    let ctx = ctx.clone();
    let tx = tx.clone();
    let span = tracing::info_span!("instance", service = %ctx.spec().name, instance = %running.id);
    tokio::spawn(
        async move {
            let id = running.id.clone();
            let drain_until = Instant::now() + ctx.spec().timeout;
            while drain
                && running.endpoint.in_flight() > 0 && running.exit.borrow().is_none() && Instant::now() < drain_until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let stopped = ctx.stop(running).await;
            if let Some(s) = stopped {
                if s.killed {
                    info!(instance = %id, "SIGKILL sent {} s after SIGTERM", super::KILL_GRACE.as_secs());
                }
            }
            let _ = tx.send(Event::Stopped(id));
        }
        .instrument(span),
    );
}

/// Runs a liveness probe until it fails `failureThreshold` times in a row; returns why.
async fn liveness(
    p: &super::probe::Probe,
    dialer: &crate::runtime::network::NetnsDialer,
) -> String {
    tokio::time::sleep(p.initial_delay).await;
    let mut failures = 0;
    loop {
        match super::probe::check(p, dialer).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= p.failure_threshold {
                    return format!("{failures} failures in a row; last: {e}");
                }
            }
        }
        tokio::time::sleep(p.period).await;
    }
}

async fn recv_opt(rx: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// What the controller needs to run instances: [`Ctx`] over a real runtime, or a scripted
/// fake in tests of the controller's timing.
pub trait Instances: Send + Sync + 'static {
    fn spec(&self) -> &ServiceSpec;
    /// Creates and starts an instance and waits until it is ready.
    fn launch(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Running, StartError>> + Send;
    /// Stops an instance (the stop sequence) and removes everything of it.
    fn stop(
        &self,
        running: Running,
    ) -> impl std::future::Future<Output = Option<super::Stopped>> + Send;
    fn oom_events(
        &self,
    ) -> impl std::future::Future<
        Output = Result<mpsc::UnboundedReceiver<String>, crate::runtime::RuntimeError>,
    > + Send;
    fn oom_killed(&self, id: &str) -> impl std::future::Future<Output = bool> + Send;
}

impl<R: Runtime> Instances for Ctx<R> {
    fn spec(&self) -> &ServiceSpec {
        &self.spec
    }
    async fn launch(&self, id: &str) -> Result<Running, StartError> {
        Ctx::launch(self, id).await
    }
    async fn stop(&self, running: Running) -> Option<super::Stopped> {
        Ctx::stop(self, running).await
    }
    async fn oom_events(
        &self,
    ) -> Result<mpsc::UnboundedReceiver<String>, crate::runtime::RuntimeError> {
        self.runtime.oom_events().await
    }
    async fn oom_killed(&self, id: &str) -> bool {
        self.runtime.oom_killed(id).await
    }
}

/// Removes what an earlier runlet left of this service (containers found by label).
pub async fn clean_leftovers<R: Runtime>(ctx: &Ctx<R>) {
    let Ok(list) = ctx.runtime.list().await else {
        return;
    };
    for c in list {
        if c.labels.get(labels::SERVICE) == Some(&ctx.spec.name) {
            warn!(container = %c.id, "removing a container an earlier runlet left behind");
            let _ =
                super::stop_container(ctx.runtime.as_ref(), &c.id, Duration::from_secs(1)).await;
            ctx.teardown(&c.id, None).await;
        }
    }
}
