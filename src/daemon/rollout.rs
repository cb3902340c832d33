//! A rollout: start the new revision (its first instance must become ready), switch the
//! service's route to it, then retire the revision that served before (requests in flight
//! finish there; its instances drain and stop). A revision that cannot start leaves the
//! previous one serving and fails the operation with the reason.

use tonic::Status;
use tracing::{info, warn};

use super::resource;
use super::revision::{NotStarted, RevisionRun};
use super::services::{short, Entry, REVISIONS, SERVICES};
use super::Daemon;
use crate::pb::any::Any;
use crate::pb::run_v2 as v2;

impl Daemon {
    /// Rolls service `full` out to revision `rev`, completing `ops` when it ends; `adopt`
    /// are instances of `rev` still running from before a restart, taken over if they
    /// still answer (then no first instance is started).
    pub(super) async fn roll_out(
        &self,
        full: String,
        rev: String,
        ops: Vec<String>,
        adopt: Vec<String>,
    ) {
        let Some((lock, spec, identity)) = self.rollout_input(&full, &rev).await else {
            return self.finish_ops(&ops, Err(deleted_during(&full))).await;
        };
        let _one_at_a_time = lock.lock().await;
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            // Left pending in the store: the restarted daemon rolls the service out.
            info!(service = %full, revision = %rev, "daemon stopping: rollout left to the restart");
            return;
        }
        let spec = match spec {
            Ok(s) => s,
            Err(m) => return self.rollout_failed(&full, &rev, &m, &ops).await,
        };
        let run = match RevisionRun::start(&self.host, spec, identity, adopt, &self.shutdown).await
        {
            Ok(r) => r,
            Err(NotStarted::Failed(m)) => return self.rollout_failed(&full, &rev, &m, &ops).await,
            Err(NotStarted::Stopping) => {
                // Left pending in the store, as above.
                info!(service = %full, revision = %rev, "daemon stopping: rollout cut short, left to the restart");
                return;
            }
        };
        let mut state = self.state.lock().await;
        let Some(e) = state.services.get_mut(&full) else {
            drop(state);
            run.retire().await;
            return self.finish_ops(&ops, Err(deleted_during(&full))).await;
        };
        let old = e.serving.replace(run);
        let uri = resource::service_uri(short(&full), self.ingress_port);
        let rev_name = format!("{full}/revisions/{rev}");
        resource::service_ready(&mut e.svc, &rev_name, &uri);
        let pending = latest_pending(e);
        resource::keep_reconciling(&mut e.svc, &rev_name, pending);
        e.svc.etag = resource::etag_of(&e.svc);
        let svc = e.svc.clone();
        let mut changed = Vec::new();
        if let Some(r) = e.revisions.get_mut(&rev) {
            resource::revision_result(r, None);
            changed.push(r.clone());
        }
        if let Some(old) = &old {
            if let Some(r) = e.revisions.get_mut(&old.revision) {
                resource::revision_retired(r);
                changed.push(r.clone());
            }
        }
        self.publish_routes(&state);
        drop(state);
        let _ = self.put(SERVICES, &full, &svc);
        for r in &changed {
            let _ = self.put(REVISIONS, &r.name, r);
        }
        info!(service = %full, revision = %rev, %uri, "revision ready: serving all traffic");
        self.finish_ops(&ops, Ok(svc)).await;
        if let Some(old) = old {
            old.retire().await;
        }
    }

    /// The rollout's lock, the revision's spec (or why it cannot run) and who its instances
    /// are on the metadata server, or `None` when the service or revision is gone.
    async fn rollout_input(
        &self,
        full: &str,
        rev: &str,
    ) -> Option<(
        std::sync::Arc<tokio::sync::Mutex<()>>,
        Result<crate::spec::ServiceSpec, String>,
        crate::metadata::Identity,
    )> {
        let state = self.state.lock().await;
        let e = state.services.get(full)?;
        let r = e.revisions.get(rev)?;
        let svc = v2::Service {
            // Its project: where the template's short secret names are.
            name: full.to_string(),
            template: Some(template_of(r)),
            scaling: e.svc.scaling,
            ..Default::default()
        };
        let spec = crate::spec::run_v2::service_spec(short(full), rev, &svc, self.listen)
            .map_err(|e| e.to_string());
        let identity = crate::metadata::Identity::from_resource(full, &r.service_account);
        Some((e.rollouts.clone(), spec, identity))
    }

    async fn rollout_failed(&self, full: &str, rev: &str, message: &str, ops: &[String]) {
        warn!(service = %full, revision = %rev, "rollout failed: {message}");
        let mut state = self.state.lock().await;
        let mut records = None;
        if let Some(e) = state.services.get_mut(full) {
            let rev_name = format!("{full}/revisions/{rev}");
            resource::service_failed(&mut e.svc, &rev_name, message);
            let pending = latest_pending(e);
            resource::keep_reconciling(&mut e.svc, &rev_name, pending);
            e.svc.etag = resource::etag_of(&e.svc);
            let r = e.revisions.get_mut(rev).map(|r| {
                resource::revision_result(r, Some(message));
                r.clone()
            });
            records = Some((e.svc.clone(), r));
        }
        drop(state);
        if let Some((svc, r)) = records {
            let _ = self.put(SERVICES, full, &svc);
            if let Some(r) = r {
                let _ = self.put(REVISIONS, &r.name, &r);
            }
        }
        let msg = format!("Revision '{rev}' is not ready and cannot serve traffic. {message}");
        self.finish_ops(ops, Err(Status::failed_precondition(msg)))
            .await;
    }

    async fn finish_ops(&self, ops: &[String], result: Result<v2::Service, Status>) {
        for op in ops {
            self.ops
                .finish(op, result.clone().map(|s| Any::pack(&s)))
                .await;
        }
    }
}

/// Whether the service's latest created revision has yet to be rolled out.
fn latest_pending(e: &Entry) -> bool {
    e.revisions
        .get(short(&e.svc.latest_created_revision))
        .is_some_and(|r| r.reconciling)
}

/// How a rollout's operations end when the service is deleted under it.
fn deleted_during(full: &str) -> Status {
    Status::aborted(format!("service {full} was deleted during the rollout"))
}

/// The template a revision was made from (what it runs).
pub(super) fn template_of(r: &v2::Revision) -> v2::RevisionTemplate {
    v2::RevisionTemplate {
        revision: short(&r.name).to_string(),
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        scaling: r.scaling,
        timeout: r.timeout,
        service_account: r.service_account.clone(),
        containers: r.containers.clone(),
        volumes: r.volumes.clone(),
        execution_environment: r.execution_environment,
        max_instance_request_concurrency: r.max_instance_request_concurrency,
        ..Default::default()
    }
}
