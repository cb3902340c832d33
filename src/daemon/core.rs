//! The [`Daemon`]: the services it holds (in memory, written through to the [`Store`]), the
//! operations, the route table it publishes to the ingress, and the host's `/etc/hosts`
//! block. Loading the store on start brings every service back; [`Daemon::shut_down`]
//! retires every revision.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::hosts::HostsFile;
use super::operations::Operations;
use super::revision::Host;
use super::services::{short, Entry, REVISIONS, SERVICES};
use super::store::Store;
use crate::control::owner::{self, Verdict};
use crate::ingress::RouteTable;
use crate::pb::run_v2 as v2;
use crate::runtime::network::GATEWAY;
use crate::runtime::{labels, Runtime};

/// The daemon's state, shared by the API handlers and the rollouts.
pub struct Daemon {
    pub(super) me: Weak<Daemon>,
    pub(super) host: Host,
    pub(super) store: Arc<Store>,
    pub ops: Operations,
    pub(super) state: Mutex<State>,
    routes: watch::Sender<Arc<RouteTable>>,
    hosts: Option<HostsFile>,
    /// The services as `/etc/hosts` lines for instances (`host.peers` reads it).
    peers: watch::Sender<Arc<str>>,
    /// The ingress address (a service's `uri` names its port).
    pub(super) listen: SocketAddr,
    pub(super) ingress_port: u16,
    /// Set by [`shut_down`](Self::shut_down): a rollout that has not begun leaves its
    /// operations to the restarted daemon instead of starting an instance.
    pub(super) stopping: AtomicBool,
    /// Cancelled by [`shut_down`](Self::shut_down): a rollout launching its first
    /// instance stops and removes it and leaves its operations to the restarted daemon.
    pub(super) shutdown: CancellationToken,
    /// Deletions under way (their services are no longer in the state); shutting down
    /// waits for them.
    pub(super) deletions: TaskTracker,
    /// The jobs and their executions (`super::jobs`, `super::executions`).
    pub(super) jobs: super::jobs::Jobs,
    /// Jobs bound to Pub/Sub subscriptions (`super::pubsub_trigger`).
    pub(super) pubsub: super::pubsub_trigger::PubsubTriggers,
}

#[derive(Default)]
pub(super) struct State {
    /// By full name.
    pub services: BTreeMap<String, Entry>,
    /// Services found marked deleted in the store on start (a deletion a restart
    /// interrupted): [`Daemon::resume`] finishes their deletion.
    pub deleting: Vec<v2::Service>,
}

impl Daemon {
    /// The daemon over `store`, with the services it holds loaded (not started: see
    /// [`resume`](Self::resume)).
    pub fn load(
        mut host: Host,
        store: Arc<Store>,
        listen: SocketAddr,
        routes: watch::Sender<Arc<RouteTable>>,
        hosts: Option<HostsFile>,
    ) -> Arc<Daemon> {
        let ops = Operations::load(store.clone());
        let jobs = super::jobs::Jobs::load(&store);
        let (peers, peers_rx) = watch::channel(Arc::from(""));
        host.peers = Some(peers_rx);
        let mut state = State::default();
        match store.list::<v2::Service>(SERVICES) {
            Ok(list) => {
                for (name, svc) in list {
                    if svc.delete_time.is_some() {
                        state.deleting.push(svc);
                    } else {
                        state.services.insert(name, Entry::new(svc));
                    }
                }
            }
            Err(e) => warn!("reading the stored services: {}", crate::util::Chain(&e)),
        }
        match store.list::<v2::Revision>(REVISIONS) {
            Ok(list) => {
                for (_, rev) in list {
                    match state.services.get_mut(&rev.service) {
                        Some(e) => {
                            e.revisions.insert(short(&rev.name).to_string(), rev);
                        }
                        None => {
                            let _ = store.delete(REVISIONS, &rev.name);
                        }
                    }
                }
            }
            Err(e) => warn!("reading the stored revisions: {}", crate::util::Chain(&e)),
        }
        Arc::new_cyclic(|me| Daemon {
            me: me.clone(),
            host,
            store,
            ops,
            state: Mutex::new(state),
            routes,
            hosts,
            peers,
            ingress_port: listen.port(),
            listen,
            stopping: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            deletions: TaskTracker::new(),
            jobs,
            pubsub: Default::default(),
        })
    }

    /// This daemon, for tasks that outlive a call.
    pub(super) fn me(&self) -> Arc<Daemon> {
        self.me.upgrade().expect("the daemon outlives its calls")
    }

    /// Starts every stored service again (after removing what an earlier daemon left of
    /// them in containerd), completing the operations a restart interrupted: those of a
    /// service with the result of its one rollout, deletions as done (their services'
    /// containers and records removed first), and those of a deleted service as aborted.
    pub async fn resume(&self) {
        self.resume_jobs().await;
        self.start_schedule_trigger();
        self.start_pubsub_triggers().await;
        let pending = self.ops.pending().await;
        let mut state = self.state.lock().await;
        let deleting = std::mem::take(&mut state.deleting);
        let mut todo = Vec::new();
        for (full, e) in &state.services {
            let rev = if e.svc.latest_ready_revision.is_empty() || e.svc.reconciling {
                short(&e.svc.latest_created_revision).to_string()
            } else {
                short(&e.svc.latest_ready_revision).to_string()
            };
            let ops: Vec<String> = pending
                .iter()
                .filter(|op| !is_deletion(op) && op_target(op).as_deref() == Some(full.as_str()))
                .map(|op| op.name.clone())
                .collect();
            if !rev.is_empty() {
                todo.push((full.clone(), rev, ops));
            }
        }
        let ids = self.service_ids(&state);
        self.start_listeners(&mut state);
        drop(state);
        let serving: BTreeMap<String, String> = todo
            .iter()
            .map(|(full, rev, _)| (short(full).to_string(), rev.clone()))
            .collect();
        // Containers of the services being deleted are removed here too (they serve no
        // revision); their revisions' records went in `load`.
        let mut adoptable = self.sort_leftovers(&ids, &serving).await;
        for svc in &deleting {
            info!(service = %svc.name, "finishing a deletion a restart interrupted");
            self.forget_deleted(&svc.name, &[]).await;
        }
        for op in &pending {
            // Jobs' and executions' operations are `resume_jobs`'s.
            if super::jobs::is_jobs_op(op) {
                continue;
            }
            if is_deletion(op) {
                let result = op
                    .metadata
                    .clone()
                    .ok_or_else(|| tonic::Status::aborted("interrupted by a restart"));
                self.ops.finish(&op.name, result).await;
                continue;
            }
            let target = op_target(op).unwrap_or_default();
            if !todo.iter().any(|(f, _, _)| *f == target) {
                let gone = tonic::Status::aborted(format!("service {target} was deleted"));
                self.ops.finish(&op.name, Err(gone)).await;
            }
        }
        self.update_hosts(ids);
        for (full, rev, ops) in todo {
            let adopt = adoptable.remove(short(&full)).unwrap_or_default();
            info!(service = %full, revision = %rev, adopting = adopt.len(), "resuming");
            let d = self.me();
            tokio::spawn(async move { d.roll_out(full, rev, ops, adopt).await });
        }
    }

    /// Binds again the own addresses of the services that have one (a restart); one that
    /// cannot be bound any more is reported and left out.
    fn start_listeners(&self, state: &mut State) {
        for e in state.services.values_mut() {
            let addr = match super::listener::wanted(&e.svc) {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(s) => {
                    warn!(service = %e.svc.name, "{}", s.message());
                    continue;
                }
            };
            match super::listener::bind(addr) {
                Ok(b) => e.listener = self.start_listener(b, short(&e.svc.name)),
                Err(s) => warn!(service = %e.svc.name, "{}", s.message()),
            }
        }
    }

    /// Serves a service's bound own address (`None`, reported, if its threads cannot start).
    pub(super) fn start_listener(
        &self,
        bound: super::listener::Bound,
        service: &str,
    ) -> Option<super::listener::ServiceListener> {
        let addr = bound.addr;
        bound
            .start(service, self.host.metrics.clone())
            .map_err(|e| warn!(service, listen = %addr, "starting the ingress threads: {e}"))
            .ok()
    }

    /// Sorts the containers of services found in containerd by their owner: this daemon's
    /// instances of a serving revision are returned by service, to be adopted; what this
    /// daemon may take over otherwise (its own of other revisions, those of a gone runlet
    /// of one of its services) is removed; the rest is left alone. Then the instances left
    /// without a container are released ([`release_orphans`]). Runs before this daemon makes
    /// any instance.
    ///
    /// [`release_orphans`]: crate::control::service::leftovers::release_orphans
    async fn sort_leftovers(
        &self,
        services: &BTreeSet<String>,
        serving: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Vec<String>> {
        let mut adopt: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let list = match self.host.runtime.list().await {
            Ok(l) => l,
            Err(e) => {
                warn!("listing containers to adopt: {}", crate::util::Chain(&e));
                return adopt;
            }
        };
        for c in list {
            let Some(svc) = c.labels.get(labels::SERVICE) else {
                continue;
            };
            let remove = match owner::verdict_on(&c.labels, services.contains(svc)) {
                Verdict::Adopt => {
                    let rev = c.labels.get(labels::REVISION);
                    if rev.is_some() && serving.get(svc) == rev {
                        // An instance is adopted by its ingress container's id (the
                        // instance's); a sidecar's container goes with its instance.
                        if !is_sidecar(&c.id, &c.labels) {
                            adopt.entry(svc.clone()).or_default().push(c.id.clone());
                        }
                        false
                    } else {
                        true
                    }
                }
                Verdict::Remove => true,
                Verdict::Leave => false,
            };
            if remove {
                warn!(container = %c.id, service = %svc, "removing a container an earlier runlet left behind");
                crate::control::service::leftovers::remove(
                    self.host.runtime.as_ref(),
                    &self.host.net,
                    &self.host.state_dir,
                    &c.id,
                )
                .await;
            }
        }
        // Instances an earlier run of this daemon (or a gone `runlet serve` of this state
        // dir) was making when it died: their namespace, address and mount, but no container.
        crate::control::service::leftovers::release_orphans(
            self.host.runtime.as_ref(),
            &self.host.net,
            &crate::runtime::rootfs::MemoryFs,
            &self.host.state_dir,
        )
        .await;
        adopt
    }

    /// Stops every revision (in-flight requests finish first), closes the services' own
    /// addresses and removes the hosts block. Rollouts and deletions under way end first:
    /// a rollout still launching its first instance is cancelled (the instance stopped and
    /// removed, its operations left pending for the restarted daemon to resume). The
    /// runtime goes away when this returns, and a task cut short there would leave its
    /// instance running in containerd.
    pub async fn shut_down(&self) {
        self.stopping.store(true, Ordering::Release);
        self.shutdown.cancel();
        // No pull after this; the executions' cancelled tasks give their messages back.
        self.stop_pubsub_triggers().await;
        self.stop_jobs().await;
        self.wait_pubsub_drivers().await;
        let rollouts: Vec<_> = {
            let state = self.state.lock().await;
            state
                .services
                .values()
                .map(|e| e.rollouts.clone())
                .collect()
        };
        // Held to the end: a rollout waiting for one sees `stopping` when it gets it.
        let _rollouts = futures::future::join_all(rollouts.iter().map(|l| l.lock())).await;
        self.deletions.close();
        self.deletions.wait().await;
        let (runs, listeners): (Vec<_>, Vec<_>) = {
            let mut state = self.state.lock().await;
            let listeners: Vec<_> = state
                .services
                .values_mut()
                .filter_map(|e| e.listener.take().map(|l| l.close()))
                .collect();
            let runs = state
                .services
                .values_mut()
                .filter_map(|e| e.serving.take())
                .collect();
            self.publish_routes(&state);
            (runs, listeners)
        };
        // The services' own addresses stop accepting first; their requests in flight end
        // while the revisions still run.
        futures::future::join_all(listeners).await;
        futures::future::join_all(runs.into_iter().map(|r| r.retire())).await;
        if let Some(h) = &self.hosts {
            if let Err(e) = h.remove_block() {
                warn!(
                    "removing runlet's block from {}: {}",
                    h.path().display(),
                    crate::util::Chain(&e)
                );
            }
        }
    }

    /// Publishes the route of every serving revision to the ingress, and to the service's
    /// own address where it has one.
    pub(super) fn publish_routes(&self, state: &State) {
        let routes = state
            .services
            .values()
            .filter_map(|e| e.serving.as_ref().map(|r| r.route.clone()));
        self.routes
            .send_replace(Arc::new(RouteTable::by_host(routes)));
        for e in state.services.values() {
            if let Some(l) = &e.listener {
                l.publish(e.serving.as_ref().map(|r| &r.route));
            }
        }
    }

    /// Every service's short name.
    pub(super) fn service_ids(&self, state: &State) -> BTreeSet<String> {
        state
            .services
            .keys()
            .map(|k| short(k).to_string())
            .collect()
    }

    /// Keeps the names of the services resolvable: in the host's `/etc/hosts` block (to
    /// 127.0.0.1), and in every instance's `/etc/hosts` (to the bridge's gateway, where the
    /// ingress also listens), for running instances and new ones.
    pub(super) fn update_hosts(&self, names: BTreeSet<String>) {
        let names: BTreeSet<String> = names.iter().map(|n| format!("{n}.localhost")).collect();
        if let Some(h) = &self.hosts {
            if let Err(e) = h.set(&names) {
                warn!(
                    "updating {}: {}",
                    h.path().display(),
                    crate::util::Chain(&e)
                );
            }
        }
        match super::hosts::peers_block(&names, GATEWAY.into()) {
            Ok(block) => {
                self.peers.send_replace(Arc::from(block.as_str()));
                super::hosts::update_instances(&self.host.state_dir.join("instances"), &block);
            }
            Err(e) => warn!(
                "the services' names for instances: {}",
                crate::util::Chain(&e)
            ),
        }
    }
}

/// Whether an operation is a service's deletion (its metadata is the service marked
/// deleted).
fn is_deletion(op: &crate::pb::longrunning::Operation) -> bool {
    op.metadata
        .as_ref()
        .and_then(|any| any.unpack::<v2::Service>().ok())
        .is_some_and(|s| s.delete_time.is_some())
}

/// The service an operation is about (its metadata's name).
fn op_target(op: &crate::pb::longrunning::Operation) -> Option<String> {
    let any = op.metadata.as_ref()?;
    any.unpack::<v2::Service>().ok().map(|s| s.name)
}

/// A sidecar's container: labelled with an instance other than itself (the ingress
/// container's id is the instance's).
fn is_sidecar(id: &str, labelled: &std::collections::HashMap<String, String>) -> bool {
    labelled
        .get(labels::INSTANCE)
        .is_some_and(|instance| instance != id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_are_adopted_with_their_instance() {
        let with = |instance: Option<&str>| {
            instance
                .map(|i| (labels::INSTANCE.to_string(), i.to_string()))
                .into_iter()
                .collect()
        };
        for (id, instance, sidecar) in [
            ("web-00001-abc-x1y2z", Some("web-00001-abc-x1y2z"), false),
            ("web-00001-abc-x1y2z-log", Some("web-00001-abc-x1y2z"), true),
            // Labelled before sidecars existed: an instance.
            ("web-00001-abc-x1y2z", None, false),
        ] {
            assert_eq!(is_sidecar(id, &with(instance)), sidecar, "{id}");
        }
    }
}
