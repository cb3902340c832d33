//! The output fields of Service and Revision resources, filled honestly from what the daemon
//! knows: conditions, `reconciling`, `latestReadyRevision`, `uri`, `etag`, times. Plain
//! functions over the messages; no I/O.

use sha2::{Digest, Sha256};

use crate::pb::run_v2::{self as v2, condition};
use crate::pb::timestamp::Timestamp;

/// The condition state enum, as the API numbers it.
pub use v2::condition::State;

/// The time now, as the API spells it.
pub fn now() -> Timestamp {
    Timestamp::from(std::time::SystemTime::now())
}

/// A random id in UUID form (the API's `uid`).
pub fn uid() -> String {
    let h = hex::encode(rand::random::<[u8; 16]>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A condition of `type_` in `state`, with a message (errors and progress).
pub fn condition(type_: &str, state: State, message: &str) -> v2::Condition {
    v2::Condition {
        r#type: type_.to_string(),
        state: state as i32,
        message: message.to_string(),
        last_transition_time: Some(now()),
        severity: if state == State::ConditionFailed {
            v2::condition::Severity::Error as i32
        } else {
            0
        },
        reasons: None,
    }
}

/// The service's URL: `http://NAME.localhost:PORT` (or without the port for 80).
pub fn service_uri(service: &str, ingress_port: u16) -> String {
    if ingress_port == 80 {
        format!("http://{service}.localhost")
    } else {
        format!("http://{service}.localhost:{ingress_port}")
    }
}

/// A rollout of `revision` (its full name) has begun.
pub fn service_reconciling(svc: &mut v2::Service, revision: &str) {
    svc.reconciling = true;
    svc.latest_created_revision = revision.to_string();
    let revision = short(revision);
    let msg = format!("Deploying revision {revision}.");
    svc.terminal_condition = Some(condition("Ready", State::ConditionReconciling, &msg));
    svc.conditions = vec![
        condition("RoutesReady", State::ConditionReconciling, ""),
        condition("ConfigurationsReady", State::ConditionReconciling, &msg),
    ];
}

/// `revision` (its full name) is ready and serves all traffic at `uri`.
pub fn service_ready(svc: &mut v2::Service, revision: &str, uri: &str) {
    svc.reconciling = false;
    svc.observed_generation = svc.generation;
    svc.latest_ready_revision = revision.to_string();
    let revision = short(revision);
    svc.uri = uri.to_string();
    svc.urls = vec![uri.to_string()];
    svc.terminal_condition = Some(condition("Ready", State::ConditionSucceeded, ""));
    svc.conditions = vec![
        condition("RoutesReady", State::ConditionSucceeded, ""),
        condition("ConfigurationsReady", State::ConditionSucceeded, ""),
    ];
    svc.traffic_statuses = vec![v2::TrafficTargetStatus {
        r#type: v2::TrafficTargetAllocationType::Latest as i32,
        revision: revision.to_string(),
        percent: 100,
        tag: String::new(),
        uri: String::new(),
    }];
}

/// After the rollout of `ended` (full name) has made the service ready or failed: when the
/// latest created revision is another one whose rollout has yet to run (`latest_pending`:
/// that revision is still reconciling; an update queued behind this rollout), the service
/// is still reconciling towards it. Otherwise a restart would resume `ended` and report the
/// queued update done.
pub fn keep_reconciling(svc: &mut v2::Service, ended: &str, latest_pending: bool) {
    if latest_pending
        && !svc.latest_created_revision.is_empty()
        && svc.latest_created_revision != ended
    {
        let latest = svc.latest_created_revision.clone();
        service_reconciling(svc, &latest);
    }
}

/// `revision` (its full name) could not start; whatever served before still does.
pub fn service_failed(svc: &mut v2::Service, revision: &str, message: &str) {
    let revision = short(revision);
    svc.reconciling = false;
    svc.observed_generation = svc.generation;
    let msg = format!("Revision '{revision}' is not ready and cannot serve traffic. {message}");
    svc.terminal_condition = Some(condition("Ready", State::ConditionFailed, &msg));
    svc.conditions = vec![
        condition(
            "RoutesReady",
            if svc.latest_ready_revision.is_empty() {
                State::ConditionFailed
            } else {
                State::ConditionSucceeded
            },
            "",
        ),
        condition("ConfigurationsReady", State::ConditionFailed, &msg),
    ];
}

/// A new revision of `svc` (named in full by `name`), from its template.
pub fn new_revision(svc: &v2::Service, name: &str) -> v2::Revision {
    let t = svc.template.clone().unwrap_or_default();
    let c = now();
    v2::Revision {
        name: name.to_string(),
        uid: uid(),
        generation: 1,
        labels: t.labels,
        annotations: t.annotations,
        create_time: Some(c),
        update_time: Some(c),
        service: svc.name.clone(),
        scaling: t.scaling,
        timeout: t.timeout.or(Some(pbjson_types::Duration {
            seconds: 300,
            nanos: 0,
        })),
        service_account: t.service_account,
        containers: t.containers,
        volumes: t.volumes,
        execution_environment: t.execution_environment,
        max_instance_request_concurrency: t.max_instance_request_concurrency,
        reconciling: true,
        conditions: vec![condition(
            "Ready",
            State::ConditionReconciling,
            "Starting the first instance.",
        )],
        observed_generation: 1,
        ..Default::default()
    }
}

/// The revision's own state after its rollout.
pub fn revision_result(rev: &mut v2::Revision, failure: Option<&str>) {
    rev.reconciling = false;
    rev.update_time = Some(now());
    rev.conditions = vec![match failure {
        None => condition("Ready", State::ConditionSucceeded, ""),
        Some(m) => condition("Ready", State::ConditionFailed, m),
    }];
    rev.etag = etag_of(rev);
}

/// A revision that no longer receives traffic (Cloud Run marks these `Active` false).
pub fn revision_retired(rev: &mut v2::Revision) {
    rev.update_time = Some(now());
    if !rev.conditions.iter().any(|c| c.r#type == "Active") {
        let mut c = condition("Active", State::ConditionSucceeded, "Revision retired.");
        c.reasons = Some(condition::Reasons::RevisionReason(
            v2::condition::RevisionReason::Retired as i32,
        ));
        rev.conditions.push(c);
    }
    rev.etag = etag_of(rev);
}

/// A resource's short id from its full name (`.../revisions/ID` → `ID`).
pub fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// A content hash, stable across restarts: over the message with its etag cleared.
pub fn etag_of<M: prost::Message + Clone + Etagged>(m: &M) -> String {
    let mut m = m.clone();
    m.set_etag(String::new());
    let digest = Sha256::digest(m.encode_to_vec());
    format!("\"{}\"", &hex::encode(digest)[..20])
}

/// Messages with an `etag` field.
pub trait Etagged {
    fn set_etag(&mut self, etag: String);
}

impl Etagged for v2::Service {
    fn set_etag(&mut self, etag: String) {
        self.etag = etag;
    }
}

impl Etagged for v2::Revision {
    fn set_etag(&mut self, etag: String) {
        self.etag = etag;
    }
}

impl Etagged for v2::Job {
    fn set_etag(&mut self, etag: String) {
        self.etag = etag;
    }
}

impl Etagged for v2::Execution {
    fn set_etag(&mut self, etag: String) {
        self.etag = etag;
    }
}

impl Etagged for v2::Task {
    fn set_etag(&mut self, etag: String) {
        self.etag = etag;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_and_uid() {
        assert_eq!(service_uri("hello", 8080), "http://hello.localhost:8080");
        assert_eq!(service_uri("hello", 80), "http://hello.localhost");
        let u = uid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }

    #[test]
    fn status_transitions() {
        let mut s = v2::Service {
            generation: 2,
            ..Default::default()
        };
        let rev = "projects/p/locations/l/services/hello/revisions/hello-00002-abc";
        service_reconciling(&mut s, rev);
        assert!(s.reconciling);
        assert_eq!(s.latest_created_revision, rev);
        assert_eq!(
            s.terminal_condition.as_ref().unwrap().state,
            State::ConditionReconciling as i32
        );
        service_failed(&mut s, rev, "Image 'x' not found.");
        assert!(!s.reconciling);
        let t = s.terminal_condition.clone().unwrap();
        assert_eq!(t.state, State::ConditionFailed as i32);
        assert!(t.message.contains("Image 'x' not found."), "{}", t.message);
        assert!(
            t.message.contains("Revision 'hello-00002-abc'"),
            "{}",
            t.message
        );
        assert_eq!(s.observed_generation, 2);
        service_ready(&mut s, rev, "http://hello.localhost:8080");
        assert_eq!(s.latest_ready_revision, rev);
        assert_eq!(s.traffic_statuses[0].revision, "hello-00002-abc");
        assert_eq!(s.uri, "http://hello.localhost:8080");
        assert_eq!(
            s.terminal_condition.unwrap().state,
            State::ConditionSucceeded as i32
        );
    }

    /// A rollout that ends (ready or failed) while a newer revision waits leaves the
    /// service reconciling towards the newer one (a restart then deploys that one).
    #[test]
    fn a_rollout_ending_under_a_newer_revision_keeps_reconciling() {
        let base = "projects/p/locations/l/services/hello/revisions/";
        let (r2, r3) = (
            format!("{base}hello-00002-a"),
            format!("{base}hello-00003-b"),
        );
        type End = fn(&mut v2::Service, &str);
        let ends: [(&str, End); 2] = [
            ("ready", |s, r| {
                service_ready(s, r, "http://hello.localhost:8080")
            }),
            ("failed", |s, r| {
                service_failed(s, r, "Image 'x' not found.")
            }),
        ];
        for (what, end) in ends {
            let mut s = v2::Service::default();
            service_reconciling(&mut s, &r2);
            service_reconciling(&mut s, &r3);
            end(&mut s, &r2);
            let done = s.clone();
            keep_reconciling(&mut s, &r2, false);
            assert_eq!(
                s, done,
                "{what}: the latest one's rollout has run (and failed)"
            );
            keep_reconciling(&mut s, &r2, true);
            assert!(s.reconciling, "{what}");
            assert_eq!(s.latest_created_revision, r3, "{what}");
            assert_eq!(
                s.terminal_condition.as_ref().unwrap().state,
                State::ConditionReconciling as i32,
                "{what}"
            );
            // The latest one's own end settles it.
            end(&mut s, &r3);
            keep_reconciling(&mut s, &r3, true);
            assert!(!s.reconciling, "{what}");
        }
        let mut s = v2::Service::default();
        service_reconciling(&mut s, &r3);
        service_ready(&mut s, &r2, "http://hello.localhost:8080");
        keep_reconciling(&mut s, &r2, true);
        assert_eq!(
            s.latest_ready_revision, r2,
            "the older one serves meanwhile"
        );
    }

    #[test]
    fn etags_change_with_content_only() {
        let mut s = v2::Service {
            description: "a".into(),
            ..Default::default()
        };
        let a = etag_of(&s);
        s.etag = a.clone();
        assert_eq!(etag_of(&s), a);
        s.description = "b".into();
        assert_ne!(etag_of(&s), a);
    }
}
