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
            running.endpoint.close();
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

#[cfg(test)]
mod tests {
    //! The controller's timing against a scripted fake, under paused tokio time.
    // The fake's bookkeeping is a few pushes under a lock never held across an await.
    #![allow(clippy::disallowed_types)]
    use super::*;
    use crate::control::autoscale::Policy;
    use crate::runtime::ExitStatus;
    use std::sync::Mutex as StdMutex;

    struct Fake {
        spec: ServiceSpec,
        launch_takes: Duration,
        /// Every launch fails (the container "exits with code 5" during start-up).
        fail: bool,
        launched: StdMutex<Vec<(String, Instant)>>,
        stopped: StdMutex<Vec<(String, Instant)>>,
        exits: StdMutex<Vec<watch::Sender<Option<ExitStatus>>>>,
        _oom_tx: StdMutex<Option<mpsc::UnboundedSender<String>>>,
    }

    impl Instances for Fake {
        fn spec(&self) -> &ServiceSpec {
            &self.spec
        }
        async fn launch(&self, id: &str) -> Result<Running, StartError> {
            self.launched
                .lock()
                .unwrap()
                .push((id.to_string(), Instant::now()));
            tokio::time::sleep(self.launch_takes).await;
            if self.fail {
                return Err(StartError::Exited(ExitStatus { code: 5 }));
            }
            let (r, tx) = Running::without_container(id);
            self.exits.lock().unwrap().push(tx);
            Ok(r)
        }
        async fn stop(&self, running: Running) -> Option<crate::control::Stopped> {
            self.stopped
                .lock()
                .unwrap()
                .push((running.id, Instant::now()));
            None
        }
        async fn oom_events(
            &self,
        ) -> Result<mpsc::UnboundedReceiver<String>, crate::runtime::RuntimeError> {
            let (tx, rx) = mpsc::unbounded_channel();
            *self._oom_tx.lock().unwrap() = Some(tx);
            Ok(rx)
        }
        async fn oom_killed(&self, _: &str) -> bool {
            false
        }
    }

    fn spec(min: usize, max: usize) -> ServiceSpec {
        ServiceSpec {
            name: "svc".into(),
            revision: "svc-00001-abc".into(),
            image: "docker.io/library/probe:latest".into(),
            port: 8080,
            listen: "127.0.0.1:8080".parse().unwrap(),
            env: vec![],
            command: None,
            args: None,
            memory_bytes: 512 << 20,
            cpu: 1.0,
            concurrency: 1,
            timeout: Duration::from_secs(300),
            min_instances: min,
            max_instances: max,
            idle_timeout: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(240),
            use_http2: false,
            cpu_throttling: false,
            startup_probe: None,
            liveness_probe: None,
            volumes: vec![],
        }
    }

    struct Harness {
        fake: Arc<Fake>,
        demand: Arc<Demand>,
        snap: watch::Receiver<Snapshot>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(min: usize, max: usize, launch_takes: Duration) -> Harness {
        start_with(min, max, launch_takes, false)
    }

    fn start_with(min: usize, max: usize, launch_takes: Duration, fail: bool) -> Harness {
        let s = spec(min, max);
        let policy = Policy {
            min_instances: min,
            max_instances: max,
            concurrency: s.concurrency,
            idle_timeout: s.idle_timeout,
        };
        let fake = Arc::new(Fake {
            spec: s,
            launch_takes,
            fail,
            launched: StdMutex::new(vec![]),
            stopped: StdMutex::new(vec![]),
            exits: StdMutex::new(vec![]),
            _oom_tx: StdMutex::new(None),
        });
        let demand = Arc::new(Demand::default());
        let (tx, snap) = watch::channel(Snapshot::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            fake.clone(),
            policy,
            demand.clone(),
            tx,
            Metrics::new(),
            vec![],
            async move {
                let _ = stop_rx.await;
            },
        ));
        Harness {
            fake,
            demand,
            snap,
            stop: Some(stop_tx),
            task,
        }
    }

    impl Harness {
        fn launched(&self) -> usize {
            self.fake.launched.lock().unwrap().len()
        }
        fn stopped(&self) -> Vec<(String, Instant)> {
            self.fake.stopped.lock().unwrap().clone()
        }
        fn ready(&self) -> usize {
            self.snap.borrow().endpoints.len()
        }
        fn want(&self, queued: usize) {
            self.demand.queued.store(queued, Ordering::SeqCst);
            self.demand.wake.notify_one();
        }
        async fn shutdown(mut self) {
            let _ = self.stop.take().map(|s| s.send(()));
            let _ = self.task.await;
        }
    }

    async fn at(t0: Instant, secs: f64) {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn scale_from_zero_counts_starting_instances_and_stops_at_max() {
        let t0 = Instant::now();
        let h = start(0, 2, Duration::from_secs(3));
        at(t0, 1.0).await;
        assert_eq!(h.launched(), 0, "nothing starts without demand at min 0");
        h.want(1);
        at(t0, 2.0).await;
        assert_eq!(h.launched(), 1);
        assert_eq!(h.snap.borrow().starting, 1);
        at(t0, 3.9).await;
        assert_eq!(
            h.launched(),
            1,
            "a starting instance counts: no second start for the same demand"
        );
        assert_eq!(h.ready(), 0);
        at(t0, 4.2).await;
        assert_eq!(h.ready(), 1, "ready 3 s after the wake-up");
        h.want(5);
        at(t0, 10.0).await;
        assert_eq!(h.launched(), 2, "never more than max instances");
        assert!(h.snap.borrow().at_max);
        h.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_instances_stop_after_the_idle_timeout_but_min_stays() {
        let t0 = Instant::now();
        let h = start(1, 3, Duration::from_secs(1));
        at(t0, 0.5).await;
        assert_eq!(h.launched(), 1, "min instances start at once");
        h.want(2);
        at(t0, 3.0).await;
        assert_eq!(h.ready(), 2);
        h.want(0);
        // Both have had no request in flight since they became ready (the first at ~1 s):
        // idle time counts from then.
        at(t0, 60.5).await;
        assert!(
            h.stopped().is_empty(),
            "idle for less than --idle-timeout: kept"
        );
        at(t0, 65.0).await;
        let stopped = h.stopped();
        assert_eq!(stopped.len(), 1, "one stopped, min 1 kept");
        let at_s = (stopped[0].1 - t0).as_secs_f64();
        assert!(
            (61.0..61.6).contains(&at_s),
            "stopped at {at_s} s, want ~61 s (ready at 1 s + 60 s idle)"
        );
        assert_eq!(h.ready(), 1);
        h.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_that_exits_is_removed_and_replaced_on_demand() {
        let t0 = Instant::now();
        let h = start(1, 2, Duration::from_secs(1));
        at(t0, 2.0).await;
        assert_eq!(h.ready(), 1);
        let _ = h.fake.exits.lock().unwrap()[0].send(Some(ExitStatus { code: 1 }));
        at(t0, 3.0).await;
        assert_eq!(h.stopped().len(), 1, "the exited instance is cleaned up");
        at(t0, 5.0).await;
        assert_eq!(h.launched(), 2, "min instances brings a new one");
        assert_eq!(h.ready(), 1);
        h.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn failing_starts_back_off_exponentially_and_waiting_requests_learn_why() {
        let t0 = Instant::now();
        let h = start_with(1, 3, Duration::from_millis(100), true);
        at(t0, 40.0).await;
        let times: Vec<f64> = h
            .fake
            .launched
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| (*t - t0).as_secs_f64())
            .collect();
        assert!(times.len() >= 4, "it keeps trying: {times:?}");
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for g in gaps.windows(2) {
            assert!(
                g[1] > g[0] * 1.5,
                "gaps grow exponentially, not a hot loop: {gaps:?}"
            );
        }
        let snap = h.snap.borrow().clone();
        assert!(
            snap.failed_start
                .as_deref()
                .unwrap_or_default()
                .contains("exit code 5"),
            "{:?}",
            snap.failed_start
        );
        h.shutdown().await;
    }
}
