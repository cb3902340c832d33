//! The service controller: reacts to what happens to instances ([`Event`]s from the tasks it
//! spawns, OOM kills from the runtime) and reconciles the instance set with the autoscaler's
//! decision on every event, demand wake-up and tick, publishing the routable snapshot and
//! the instance metrics each time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};

use super::backoff::{exited_early, start_backoff};
use super::{drain, liveness, Instances};
use crate::control::autoscale::{self, InstanceLoad, Observation, Policy};
use crate::control::service::instance::{Running, StartError};
use crate::ingress::{Death, Demand, Endpoint, Snapshot};
use crate::metrics::Metrics;

/// How often the controller reconciles when nothing happens (idle timeouts are noticed on
/// a tick).
const TICK: Duration = Duration::from_millis(500);

/// What happened to an instance, as the controller's tasks and the runtime report it.
pub enum Event {
    /// A launch ended: the instance is ready, or it failed to start (with its id).
    Started(Result<Running, (String, StartError)>),
    /// A ready instance's container exited.
    Exited(String),
    /// A ready instance failed its liveness probe, with why.
    Unhealthy(String, String),
    /// The kernel's OOM killer hit the instance (perhaps only a child process).
    OutOfMemory(String),
    /// An instance's stop sequence ended; nothing of it is left.
    Stopped(String),
}

/// A routable instance, since when it is ready and since when it has had no request in
/// flight.
struct Ready {
    running: Running,
    ready_at: Instant,
    idle_since: Instant,
}

/// Runs the service until `shutdown` resolves, then stops every instance and returns.
/// `initial` are instances already ready (the first one, started before serving).
pub async fn run<I: Instances>(
    ctx: Arc<I>,
    policy: Policy,
    demand: Arc<Demand>,
    snapshot_tx: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
    initial: Vec<Running>,
    shutdown: impl Future<Output = ()>,
) {
    let (mut controller, mut events) =
        Controller::new(ctx, policy, demand.clone(), snapshot_tx, metrics);
    controller.adopt(initial);
    let mut tick = tokio::time::interval(TICK);
    let mut ooms = controller.subscribe_to_ooms().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = demand.wake.notified() => {}
            _ = tick.tick() => {}
            Some(id) = recv_opt(&mut ooms) => controller.on_event(Event::OutOfMemory(id)).await,
            Some(ev) = events.recv() => controller.on_event(ev).await,
        }
        controller.reconcile();
    }
    controller.shut_down(events).await;
}

/// The state of one service's instances, and what to do about them.
pub struct Controller<I: Instances> {
    ctx: Arc<I>,
    policy: Policy,
    demand: Arc<Demand>,
    snapshot_tx: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
    /// The service's name (the metrics' label).
    service: String,
    /// Where the tasks the controller spawns report back.
    events: mpsc::UnboundedSender<Event>,
    ready: Vec<Ready>,
    starting: usize,
    stopping: usize,
    /// Failed starts in a row; they set the backoff.
    failures: u32,
    /// Instances in a row that exited soon after they became ready (a crash loop: each
    /// passes its start-up probe, then dies); they set the backoff too, until an instance
    /// stays up.
    early_exits: u32,
    /// No start before this (the backoff after a failed start).
    not_before: Instant,
    /// Why the last start failed, until one succeeds: told to waiting requests.
    failed_reason: Option<String>,
    exit_watchers: HashMap<String, JoinHandle<()>>,
    live_checks: HashMap<String, JoinHandle<()>>,
    /// The endpoints of instances being drained and stopped: an OOM kill there still cuts
    /// their requests in flight.
    leaving: HashMap<String, Arc<Endpoint>>,
    /// Instances the OOM killer hit, so that their exit is reported as such.
    oom_seen: HashSet<String>,
    startups: StartupTimes,
}

impl<I: Instances> Controller<I> {
    /// A controller with no instances, and the receiver of the events its tasks send.
    pub fn new(
        ctx: Arc<I>,
        policy: Policy,
        demand: Arc<Demand>,
        snapshot_tx: watch::Sender<Snapshot>,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let controller = Controller {
            service: ctx.spec().name.clone(),
            ctx,
            policy,
            demand,
            snapshot_tx,
            metrics,
            events,
            ready: Vec::new(),
            starting: 0,
            stopping: 0,
            failures: 0,
            early_exits: 0,
            not_before: Instant::now(),
            failed_reason: None,
            exit_watchers: HashMap::new(),
            live_checks: HashMap::new(),
            leaving: HashMap::new(),
            oom_seen: HashSet::new(),
            startups: StartupTimes::default(),
        };
        (controller, rx)
    }

    /// Takes over instances that are already ready: they count as starting until their
    /// `Started` event is handled, like launched ones.
    pub fn adopt(&mut self, initial: Vec<Running>) {
        self.starting += initial.len();
        for r in initial {
            let _ = self.events.send(Event::Started(Ok(r)));
        }
    }

    /// The runtime's OOM kills, or `None` (then they are told from exit status only).
    pub async fn subscribe_to_ooms(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        match self.ctx.oom_events().await {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(
                    "cannot subscribe to OOM events ({}); OOM kills are told from exit status only",
                    crate::util::error_chain(&e)
                );
                None
            }
        }
    }

    /// Updates the instance set for what happened.
    pub async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Started(Ok(running)) => self.on_ready(running),
            Event::Started(Err((id, e))) => self.on_start_failed(&id, &e),
            Event::Exited(id) => self.on_exited(id).await,
            Event::Unhealthy(id, reason) => self.on_unhealthy(&id, &reason),
            Event::OutOfMemory(id) => self.on_out_of_memory(id),
            Event::Stopped(id) => self.on_stopped(&id),
        }
    }

    fn on_ready(&mut self, running: Running) {
        self.starting -= 1;
        self.failures = 0;
        self.failed_reason = None;
        let service = &self.service;
        self.metrics
            .starts
            .with_label_values(&[service, "ready"])
            .inc();
        self.metrics
            .startup
            .with_label_values(&[service])
            .observe(running.startup.as_secs_f64());
        self.startups.push(running.startup);
        info!(instance = %running.id, "instance ready after {} ms ({})", running.startup.as_millis(), running.phases);
        self.watch_exit(&running);
        self.watch_liveness(&running);
        let now = Instant::now();
        self.ready.push(Ready {
            running,
            ready_at: now,
            idle_since: now,
        });
    }

    /// Reports the instance's exit as [`Event::Exited`].
    fn watch_exit(&mut self, running: &Running) {
        let mut exit = running.exit.clone();
        let id = running.id.clone();
        let events = self.events.clone();
        let watcher = tokio::spawn(async move {
            while exit.borrow_and_update().is_none() {
                if exit.changed().await.is_err() {
                    return;
                }
            }
            let _ = events.send(Event::Exited(id));
        });
        self.exit_watchers.insert(running.id.clone(), watcher);
    }

    /// Runs the liveness probes of the instance's containers (all share its network
    /// namespace, so one dialer reaches every container's port) and reports the first
    /// failure as [`Event::Unhealthy`], naming the container when there are several.
    fn watch_liveness(&mut self, running: &Running) {
        let Some(dialer) = running.dialer.clone() else {
            return;
        };
        let spec = self.ctx.spec();
        let named = !spec.sidecars.is_empty();
        let probes: Vec<(String, crate::spec::Probe)> = spec
            .containers()
            .into_iter()
            .filter_map(|c| c.liveness_probe.map(|p| (c.name, p)))
            .collect();
        if probes.is_empty() {
            return;
        }
        let (id, events) = (running.id.clone(), self.events.clone());
        let check = tokio::spawn(async move {
            // Dropped with this task (aborted when the instance stops): so are the probes.
            let mut set = tokio::task::JoinSet::new();
            for (name, p) in probes {
                let dialer = dialer.clone();
                set.spawn(async move {
                    let why = liveness::until_failed(&p, &dialer).await;
                    if named {
                        format!("container {name}: {why}")
                    } else {
                        why
                    }
                });
            }
            if let Some(Ok(reason)) = set.join_next().await {
                let _ = events.send(Event::Unhealthy(id, reason));
            }
        });
        self.live_checks.insert(running.id.clone(), check);
    }

    fn on_start_failed(&mut self, id: &str, e: &StartError) {
        self.starting -= 1;
        self.failures += 1;
        let backoff = start_backoff(self.failures);
        self.not_before = Instant::now() + backoff;
        self.metrics
            .starts
            .with_label_values(&[&self.service, "failed"])
            .inc();
        let why = crate::util::error_chain(e);
        error!(instance = %id, "instance failed to start: {why}; next attempt in {} ms", backoff.as_millis());
        self.failed_reason = Some(why);
    }

    async fn on_exited(&mut self, id: String) {
        let Some(pos) = self.ready.iter().position(|r| r.running.id == id) else {
            return;
        };
        let Ready {
            running, ready_at, ..
        } = self.ready.remove(pos);
        let status = (*running.exit.borrow())
            .map(|s| s.to_string())
            .unwrap_or_default();
        if self.oom_seen.contains(&id) || self.ctx.oom_killed(&id).await {
            running.endpoint.mark_dead(Death::OutOfMemory);
            self.metrics.ooms.with_label_values(&[&self.service]).inc();
            warn!(instance = %id, "instance OOM-killed ({status}): it exceeded its memory limit of {} MiB", self.ctx.spec().memory_bytes >> 20);
        } else {
            running.endpoint.mark_dead(Death::Exited(status.clone()));
            let lived = Instant::now() - ready_at;
            if exited_early(lived) {
                self.early_exits += 1;
                let backoff = start_backoff(self.early_exits);
                self.not_before = self.not_before.max(Instant::now() + backoff);
                warn!(instance = %id, "instance exited while serving ({status}) {} ms after it became ready; {} such exit(s) in a row, next start in {} ms at the earliest", lived.as_millis(), self.early_exits, backoff.as_millis());
            } else {
                warn!(instance = %id, "instance exited while serving ({status}); removing it");
            }
        }
        self.stop(running, false);
    }

    fn on_unhealthy(&mut self, id: &str, reason: &str) {
        let Some(running) = self.take_ready(id) else {
            return;
        };
        running
            .endpoint
            .mark_dead(Death::Exited(format!("liveness probe failed: {reason}")));
        warn!(instance = %id, "liveness probe failed: {reason}; replacing the instance");
        self.stop(running, true);
    }

    /// LIFE-9: the instance is terminated, even if only a child was killed and the main
    /// process lives on. Marking its endpoint is what the data path acts on, with no call
    /// back here: it takes no new request, and every request in flight on it ends with 500
    /// at once (a streaming response is cut); then it is killed without the SIGTERM grace.
    fn on_out_of_memory(&mut self, id: String) {
        self.oom_seen.insert(id.clone());
        let limit = self.ctx.spec().memory_bytes >> 20;
        if let Some(running) = self.take_ready(&id) {
            running.endpoint.mark_dead(Death::OutOfMemory);
            self.metrics.ooms.with_label_values(&[&self.service]).inc();
            warn!(instance = %id, "instance OOM-killed: it exceeded its memory limit of {limit} MiB; its requests in flight get 500, and it is killed (SIGKILL)");
            self.stop(running, false);
        } else if let Some(endpoint) = self.leaving.get(&id) {
            if !endpoint.is_out_of_memory() {
                endpoint.mark_dead(Death::OutOfMemory);
                self.metrics.ooms.with_label_values(&[&self.service]).inc();
                warn!(instance = %id, "instance OOM-killed while stopping: it exceeded its memory limit of {limit} MiB; its requests in flight get 500");
            }
        }
    }

    fn on_stopped(&mut self, id: &str) {
        self.leaving.remove(id);
        if let Some(h) = self.live_checks.remove(id) {
            h.abort();
        }
        self.stopping -= 1;
        let _ = self
            .metrics
            .in_flight
            .remove_label_values(&[&self.service, id]);
        if let Some(h) = self.exit_watchers.remove(id) {
            h.abort();
        }
        info!(instance = %id, "instance stopped");
    }

    /// Takes the instance out of the ready set, if it is in it.
    fn take_ready(&mut self, id: &str) -> Option<Running> {
        let pos = self.ready.iter().position(|r| r.running.id == id)?;
        Some(self.ready.remove(pos).running)
    }

    /// Starts and stops instances as the autoscaler decides for the current load, then
    /// publishes the snapshot and the metrics.
    pub fn reconcile(&mut self) {
        let now = Instant::now();
        for r in &mut self.ready {
            if r.running.endpoint.in_flight() > 0 {
                r.idle_since = now;
            }
            if !exited_early(now - r.ready_at) {
                self.early_exits = 0;
            }
        }
        let obs = self.observe(now);
        let d = autoscale::decide(&self.policy, &obs);
        let mut stop_idx = d.stop;
        stop_idx.sort_unstable_by(|a, b| b.cmp(a));
        for i in stop_idx {
            let r = self.ready.remove(i);
            info!(instance = %r.running.id, "instance idle for {} s: draining", (now - r.idle_since).as_secs());
            self.stop(r.running, true);
        }
        if d.start > 0 && now >= self.not_before {
            for _ in 0..d.start {
                self.start_one();
            }
        }
        self.publish(obs.queued);
    }

    fn observe(&self, now: Instant) -> Observation {
        Observation {
            ready: self
                .ready
                .iter()
                .map(|r| InstanceLoad {
                    in_flight: r.running.endpoint.in_flight(),
                    idle_for: now - r.idle_since,
                })
                .collect(),
            starting: self.starting,
            queued: self.demand.queued.load(Ordering::Acquire),
        }
    }

    /// Launches a new instance in the background; it reports back as [`Event::Started`].
    fn start_one(&mut self) {
        self.starting += 1;
        let spec = self.ctx.spec();
        let id = format!("{}-{}", spec.revision, crate::util::random_suffix(5));
        info!(instance = %id, "instance starting");
        let span = tracing::info_span!("instance", service = %spec.name, instance = %id);
        let (ctx, events) = (self.ctx.clone(), self.events.clone());
        tokio::spawn(
            async move {
                let r = ctx.launch(&id).await.map_err(|e| (id, e));
                let _ = events.send(Event::Started(r));
            }
            .instrument(span),
        );
    }

    /// Drains (if `drain`) and stops the instance in the background; it reports back as
    /// [`Event::Stopped`].
    fn stop(&mut self, running: Running, drain: bool) {
        self.stopping += 1;
        self.leaving
            .insert(running.id.clone(), running.endpoint.clone());
        let span = tracing::info_span!("instance", service = %self.ctx.spec().name, instance = %running.id);
        let (ctx, events) = (self.ctx.clone(), self.events.clone());
        tokio::spawn(
            async move {
                let id = drain::drain_and_stop(ctx.as_ref(), running, drain).await;
                let _ = events.send(Event::Stopped(id));
            }
            .instrument(span),
        );
    }

    /// Sets the instance gauges and sends the ingress the routable instances.
    fn publish(&self, queued: usize) {
        let service = &self.service;
        for (state, n) in [
            ("ready", self.ready.len()),
            ("starting", self.starting),
            ("stopping", self.stopping),
        ] {
            self.metrics
                .instances
                .with_label_values(&[service, state])
                .set(n as i64);
        }
        let snap = self.snapshot();
        self.metrics
            .queue_depth
            .with_label_values(&[service])
            .set(queued as i64);
        for r in &self.ready {
            self.metrics
                .in_flight
                .with_label_values(&[service, &r.running.id])
                .set(r.running.endpoint.in_flight() as i64);
        }
        self.snapshot_tx.send_replace(snap);
    }

    /// What the ingress may route to, and what waiting requests should know.
    fn snapshot(&self) -> Snapshot {
        let none_left = self.starting == 0 && self.ready.is_empty();
        Snapshot {
            endpoints: self
                .ready
                .iter()
                .map(|r| r.running.endpoint.clone())
                .collect(),
            starting: self.starting,
            at_max: self.ready.len() + self.starting >= self.policy.max_instances,
            failed_start: if none_left {
                self.failed_reason.clone()
            } else {
                None
            },
            avg_startup: self.startups.average(),
        }
    }

    /// Stops routing, lets in-flight requests finish and stops every instance, including
    /// those still starting; returns when all are gone.
    pub async fn shut_down(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        info!(service = %self.service, "shutting down: draining {} instance(s)", self.ready.len());
        self.snapshot_tx.send_replace(Snapshot {
            at_max: true,
            ..Default::default()
        });
        for r in std::mem::take(&mut self.ready) {
            self.stop(r.running, true);
        }
        while self.stopping > 0 || self.starting > 0 {
            match events.recv().await {
                Some(Event::Stopped(_)) => self.stopping -= 1,
                Some(Event::Started(Ok(running))) => {
                    self.starting -= 1;
                    self.stop(running, true);
                }
                Some(Event::Started(Err(_))) => self.starting -= 1,
                Some(Event::Exited(_) | Event::Unhealthy(..) | Event::OutOfMemory(_)) => {}
                None => break,
            }
        }
        let watchers = self.exit_watchers.drain().chain(self.live_checks.drain());
        for (_, h) in watchers {
            h.abort();
        }
    }
}

/// The last start-up times: their average tells waiting requests how long a start takes.
#[derive(Default)]
struct StartupTimes(VecDeque<Duration>);

impl StartupTimes {
    /// How many of the last start-ups count.
    const KEPT: usize = 20;

    fn push(&mut self, startup: Duration) {
        self.0.push_back(startup);
        if self.0.len() > Self::KEPT {
            self.0.pop_front();
        }
    }

    fn average(&self) -> Option<Duration> {
        (!self.0.is_empty()).then(|| self.0.iter().sum::<Duration>() / self.0.len() as u32)
    }
}

async fn recv_opt(rx: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The controller's timing against the scripted fake, under paused tokio time.
    use super::*;
    use crate::control::service::fake::Fake;
    use crate::runtime::ExitStatus;
    use crate::spec::ServiceSpec;

    #[test]
    fn the_average_start_up_is_over_the_last_twenty() {
        let mut t = StartupTimes::default();
        assert_eq!(t.average(), None);
        for s in 1..=30 {
            t.push(Duration::from_secs(s));
        }
        // 11..=30 kept: average 20.5 s.
        assert_eq!(t.average(), Some(Duration::from_millis(20_500)));
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
            secrets: Default::default(),
            sidecars: Default::default(),
            execution_environment: Default::default(),
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
        let fake = Arc::new(Fake::new(s, launch_takes, fail));
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
        fn stopped(&self) -> Vec<(String, Instant, Duration)> {
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
    async fn an_oom_kill_in_a_child_cuts_the_instance_off_at_once_and_kills_it_without_grace() {
        let t0 = Instant::now();
        let h = start(1, 2, Duration::from_secs(1));
        at(t0, 2.0).await;
        let endpoint = h.snap.borrow().endpoints[0].clone();
        assert!(!endpoint.is_out_of_memory());
        // The kernel killed a child: the main process (the fake's exit sender) lives on.
        h.fake.oom(&endpoint.instance);
        at(t0, 2.001).await;
        assert!(
            endpoint.is_out_of_memory(),
            "the data path is told: its requests in flight end with 500"
        );
        assert!(
            h.snap.borrow().endpoints.is_empty(),
            "no longer routable (a replacement is starting)"
        );
        let stopped = h.stopped();
        assert_eq!(stopped.len(), 1);
        let (id, when, grace) = &stopped[0];
        assert_eq!(id, &endpoint.instance);
        assert_eq!(*when, t0 + Duration::from_secs(2), "stopped at once");
        assert_eq!(*grace, Duration::ZERO, "SIGKILL, no SIGTERM grace");
        at(t0, 3.5).await;
        assert_eq!(h.ready(), 1, "min instances brings a new one");
        h.shutdown().await;
    }

    /// A crash loop: every instance passes its start-up and exits at once. Before the
    /// backoff covered exits after ready, min instances restarted it as fast as launches
    /// went (about 200 launches in these 30 s).
    #[tokio::test(start_paused = true)]
    async fn instances_exiting_right_after_ready_are_restarted_with_backoff() {
        let t0 = Instant::now();
        let h = start(1, 2, Duration::from_millis(100));
        let mut exited = 0;
        while Instant::now() < t0 + Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let exits = h.fake.exits.lock().unwrap();
            for tx in exits.iter().skip(exited) {
                let _ = tx.send(Some(ExitStatus { code: 3 }));
            }
            exited = exits.len();
        }
        let times: Vec<f64> = h
            .fake
            .launched
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| (*t - t0).as_secs_f64())
            .collect();
        assert!(
            (4..=7).contains(&times.len()),
            "restarted with 1, 2, 4, 8, 16 s between: {times:?}"
        );
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for g in gaps.windows(2) {
            assert!(g[1] > g[0] * 1.5, "gaps grow: {gaps:?}");
        }
        h.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_that_stayed_up_resets_the_crash_backoff() {
        let t0 = Instant::now();
        let h = start(1, 2, Duration::from_millis(100));
        // Two quick exits: 1 s, then 2 s before the next start.
        for at_s in [0.5, 2.0] {
            at(t0, at_s).await;
            let exits = h.fake.exits.lock().unwrap();
            let _ = exits.last().unwrap().send(Some(ExitStatus { code: 3 }));
        }
        // The third instance (started ~4.1 s) stays up past the window, then exits.
        at(t0, 30.0).await;
        assert_eq!(h.launched(), 3);
        {
            let exits = h.fake.exits.lock().unwrap();
            let _ = exits.last().unwrap().send(Some(ExitStatus { code: 3 }));
        }
        at(t0, 30.3).await;
        assert_eq!(h.launched(), 4, "restarted at once: the backoff was reset");
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
