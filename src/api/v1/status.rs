//! The Knative `status` of a v1 resource, read off the one model's (v2) output fields: plain
//! functions, tested with tables. gcloud waits on these: a call is done when `Ready` is
//! `True` or `False` and `observedGeneration` equals `metadata.generation`; on `False` it
//! prints `Ready`'s message.

use serde_json::{json, Map, Value};

use crate::daemon::resource::short;
use crate::pb::run_v2::{self as v2, condition::State};

/// A v2 condition state as Knative's `status` string.
pub(crate) fn status_of(state: i32) -> &'static str {
    match State::try_from(state) {
        Ok(State::ConditionSucceeded) => "True",
        Ok(State::ConditionFailed) => "False",
        _ => "Unknown",
    }
}

/// Knative's `reason` for a condition in a state: why it is not `True`.
pub(crate) fn reason_of(state: i32, v2_reason: Option<&v2::condition::Reasons>) -> Option<String> {
    use v2::condition::{CommonReason, Reasons, RevisionReason};
    let named = match v2_reason {
        Some(Reasons::Reason(r)) => CommonReason::try_from(*r)
            .ok()
            .filter(|r| *r != CommonReason::Undefined)
            .map(|r| camel(r.as_str_name())),
        Some(Reasons::RevisionReason(r)) => RevisionReason::try_from(*r)
            .ok()
            .filter(|r| *r != RevisionReason::Undefined)
            .map(|r| camel(r.as_str_name())),
        _ => None,
    };
    named.or_else(|| match State::try_from(state) {
        Ok(State::ConditionFailed) => Some("RevisionFailed".into()),
        Ok(State::ConditionReconciling) | Ok(State::ConditionPending) => Some("Deploying".into()),
        _ => None,
    })
}

/// `CONTAINER_MISSING` → `ContainerMissing`.
fn camel(s: &str) -> String {
    s.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}

/// One condition in Knative's shape.
pub(crate) fn condition(c: &v2::Condition) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), c.r#type.clone().into());
    o.insert("status".into(), status_of(c.state).into());
    if let Some(r) = reason_of(c.state, c.reasons.as_ref()) {
        o.insert("reason".into(), r.into());
    }
    if !c.message.is_empty() {
        o.insert("message".into(), c.message.clone().into());
    }
    if let Some(t) = &c.last_transition_time {
        o.insert("lastTransitionTime".into(), json!(t));
    }
    if v2::condition::Severity::try_from(c.severity) == Ok(v2::condition::Severity::Warning) {
        o.insert("severity".into(), "Warning".into());
    } else if v2::condition::Severity::try_from(c.severity) == Ok(v2::condition::Severity::Info) {
        o.insert("severity".into(), "Info".into());
    }
    Value::Object(o)
}

/// The generation the status describes: the daemon has acted on the latest generation once
/// nothing is reconciling (an update that made no revision changes nothing to wait for).
pub(crate) fn observed_generation(generation: i64, observed: i64, reconciling: bool) -> i64 {
    if reconciling {
        observed
    } else {
        generation
    }
}

/// A service's `status`: `Ready` (the v2 terminal condition), `ConfigurationsReady`,
/// `RoutesReady`, the URL, the revisions and the traffic.
pub(crate) fn service(svc: &v2::Service) -> Value {
    let mut conditions: Vec<Value> = svc.terminal_condition.iter().map(condition).collect();
    // Knative lists Ready, then ConfigurationsReady, then RoutesReady.
    for t in ["ConfigurationsReady", "RoutesReady"] {
        if let Some(c) = svc.conditions.iter().find(|c| c.r#type == t) {
            conditions.push(condition(c));
        }
    }
    let mut o = Map::new();
    o.insert(
        "observedGeneration".into(),
        observed_generation(svc.generation, svc.observed_generation, svc.reconciling).into(),
    );
    o.insert("conditions".into(), conditions.into());
    if !svc.latest_created_revision.is_empty() {
        o.insert(
            "latestCreatedRevisionName".into(),
            short(&svc.latest_created_revision).into(),
        );
    }
    if !svc.latest_ready_revision.is_empty() {
        o.insert(
            "latestReadyRevisionName".into(),
            short(&svc.latest_ready_revision).into(),
        );
    }
    if !svc.uri.is_empty() {
        o.insert("url".into(), svc.uri.clone().into());
        o.insert("address".into(), json!({ "url": svc.uri }));
    }
    let traffic: Vec<Value> = svc
        .traffic_statuses
        .iter()
        .map(|t| {
            let mut o = Map::new();
            if !t.revision.is_empty() {
                o.insert("revisionName".into(), short(&t.revision).into());
            }
            o.insert("percent".into(), t.percent.into());
            if t.r#type == v2::TrafficTargetAllocationType::Latest as i32 {
                o.insert("latestRevision".into(), true.into());
            }
            if !t.tag.is_empty() {
                o.insert("tag".into(), t.tag.clone().into());
            }
            if !t.uri.is_empty() {
                o.insert("url".into(), t.uri.clone().into());
            }
            Value::Object(o)
        })
        .collect();
    if !traffic.is_empty() {
        o.insert("traffic".into(), traffic.into());
    }
    Value::Object(o)
}

/// A revision's `status`: its `Ready` condition, and `Active` (serving traffic, or
/// retired).
pub(crate) fn revision(rev: &v2::Revision) -> Value {
    let mut conditions: Vec<Value> = rev
        .conditions
        .iter()
        .filter(|c| c.r#type == "Ready")
        .map(condition)
        .collect();
    let retired = rev.conditions.iter().any(|c| c.r#type == "Active");
    let ready = rev
        .conditions
        .iter()
        .any(|c| c.r#type == "Ready" && c.state == State::ConditionSucceeded as i32);
    conditions.push(if retired {
        json!({"type": "Active", "status": "False", "reason": "Retired", "message": "Revision retired.", "severity": "Info"})
    } else if ready {
        json!({"type": "Active", "status": "True", "severity": "Info"})
    } else {
        json!({"type": "Active", "status": "Unknown", "severity": "Info"})
    });
    json!({
        "observedGeneration": observed_generation(rev.generation, rev.observed_generation, rev.reconciling),
        "conditions": conditions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::resource;

    #[test]
    fn states_and_reasons() {
        for (state, status, reason) in [
            (State::ConditionSucceeded, "True", None),
            (State::ConditionFailed, "False", Some("RevisionFailed")),
            (State::ConditionReconciling, "Unknown", Some("Deploying")),
            (State::ConditionPending, "Unknown", Some("Deploying")),
            (State::Unspecified, "Unknown", None),
        ] {
            assert_eq!(status_of(state as i32), status);
            assert_eq!(reason_of(state as i32, None).as_deref(), reason);
        }
        let retired =
            v2::condition::Reasons::RevisionReason(v2::condition::RevisionReason::Retired as i32);
        assert_eq!(
            reason_of(State::ConditionSucceeded as i32, Some(&retired)).as_deref(),
            Some("Retired")
        );
        assert_eq!(camel("CONTAINER_MISSING"), "ContainerMissing");
    }

    #[test]
    fn observed_generation_follows_reconciling() {
        for (generation, observed, reconciling, want) in [
            (2, 1, true, 1),
            (2, 1, false, 2),
            (1, 0, true, 0),
            (3, 3, false, 3),
        ] {
            assert_eq!(observed_generation(generation, observed, reconciling), want);
        }
    }

    fn svc() -> v2::Service {
        v2::Service {
            name: "projects/p/locations/r/services/hello".into(),
            generation: 1,
            ..Default::default()
        }
    }

    #[test]
    fn service_status_through_a_rollout() {
        let rev = "projects/p/locations/r/services/hello/revisions/hello-00001-abc";
        // Deploying: not fresh for gcloud (observedGeneration 0 < generation 1).
        let mut s = svc();
        resource::service_reconciling(&mut s, rev);
        s.generation = 1;
        let st = service(&s);
        assert_eq!(st["observedGeneration"], 0);
        assert_eq!(st["conditions"][0]["type"], "Ready");
        assert_eq!(st["conditions"][0]["status"], "Unknown");
        assert_eq!(st["conditions"][1]["type"], "ConfigurationsReady");
        assert_eq!(st["conditions"][2]["type"], "RoutesReady");
        assert_eq!(st["latestCreatedRevisionName"], "hello-00001-abc");
        assert!(st.get("url").is_none());
        // Ready.
        resource::service_ready(&mut s, rev, "http://hello.localhost:8080");
        let st = service(&s);
        assert_eq!(st["observedGeneration"], 1);
        assert_eq!(st["conditions"][0]["status"], "True");
        assert_eq!(st["url"], "http://hello.localhost:8080");
        assert_eq!(st["address"]["url"], "http://hello.localhost:8080");
        assert_eq!(st["latestReadyRevisionName"], "hello-00001-abc");
        assert_eq!(st["traffic"][0]["revisionName"], "hello-00001-abc");
        assert_eq!(st["traffic"][0]["percent"], 100);
        assert_eq!(st["traffic"][0]["latestRevision"], true);
        // A failed rollout: Ready False with the reason, the message gcloud prints.
        let mut f = svc();
        resource::service_reconciling(&mut f, rev);
        resource::service_failed(&mut f, rev, "pulling image x: not found");
        let st = service(&f);
        assert_eq!(st["observedGeneration"], 1);
        assert_eq!(st["conditions"][0]["status"], "False");
        assert_eq!(st["conditions"][0]["reason"], "RevisionFailed");
        assert!(st["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("pulling image x: not found"));
        assert_eq!(st["conditions"][1]["status"], "False");
    }

    #[test]
    fn revision_status() {
        let s = svc();
        let mut rev = resource::new_revision(
            &s,
            "projects/p/locations/r/services/hello/revisions/hello-1",
        );
        assert_eq!(revision(&rev)["conditions"][1]["status"], "Unknown");
        resource::revision_result(&mut rev, None);
        let st = revision(&rev);
        assert_eq!(st["conditions"][0]["type"], "Ready");
        assert_eq!(st["conditions"][0]["status"], "True");
        assert_eq!(st["conditions"][1]["type"], "Active");
        assert_eq!(st["conditions"][1]["status"], "True");
        resource::revision_retired(&mut rev);
        assert_eq!(revision(&rev)["conditions"][1]["status"], "False");
        assert_eq!(revision(&rev)["conditions"].as_array().unwrap().len(), 2);
    }
}
