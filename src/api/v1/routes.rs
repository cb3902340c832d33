//! v1 routes and configurations, read-only: Knative's two halves of a service (its traffic
//! and its template), each a view of the service of the same name.

use serde_json::{json, Value};

use super::services;
use crate::pb::run_v2 as v2;

/// The service's `Route`: its traffic and URL.
pub(crate) fn route(svc: &v2::Service) -> Value {
    let s = services::view(svc);
    let st = &s["status"];
    json!({
        "apiVersion": services::API_VERSION,
        "kind": "Route",
        "metadata": owned(&s["metadata"]),
        "spec": { "traffic": s["spec"]["traffic"] },
        "status": {
            "observedGeneration": st["observedGeneration"],
            "conditions": ready_only(st),
            "url": st["url"],
            "address": st["address"],
            "traffic": st["traffic"],
        },
    })
}

/// The service's `Configuration`: its template and the revisions made from it.
pub(crate) fn configuration(svc: &v2::Service) -> Value {
    let s = services::view(svc);
    let st = &s["status"];
    json!({
        "apiVersion": services::API_VERSION,
        "kind": "Configuration",
        "metadata": owned(&s["metadata"]),
        "spec": { "template": s["spec"]["template"] },
        "status": {
            "observedGeneration": st["observedGeneration"],
            "conditions": ready_only(st),
            "latestCreatedRevisionName": st["latestCreatedRevisionName"],
            "latestReadyRevisionName": st["latestReadyRevisionName"],
        },
    })
}

fn owned(service_md: &Value) -> Value {
    let mut md = service_md.clone();
    let name = md["name"].clone();
    md["labels"]["serving.knative.dev/service"] = name.clone();
    if let Some(o) = md.as_object_mut() {
        o.remove("selfLink");
    }
    md["ownerReferences"] = json!([{
        "apiVersion": services::API_VERSION,
        "kind": "Service",
        "name": name,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    md
}

fn ready_only(status: &Value) -> Value {
    let ready: Vec<Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "Ready")
        .cloned()
        .collect();
    ready.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_and_configuration_of_a_service() {
        let mut svc = v2::Service {
            name: "projects/p/locations/r/services/hello".into(),
            template: Some(v2::RevisionTemplate {
                containers: vec![v2::Container {
                    image: "img".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let rev = "projects/p/locations/r/services/hello/revisions/hello-1";
        crate::daemon::resource::service_ready(&mut svc, rev, "http://hello.localhost");
        let r = route(&svc);
        assert_eq!(r["kind"], "Route");
        assert_eq!(r["metadata"]["name"], "hello");
        assert_eq!(r["status"]["url"], "http://hello.localhost");
        assert_eq!(r["status"]["traffic"][0]["revisionName"], "hello-1");
        assert_eq!(r["status"]["conditions"][0]["type"], "Ready");
        let c = configuration(&svc);
        assert_eq!(c["kind"], "Configuration");
        assert_eq!(
            c["spec"]["template"]["spec"]["containers"][0]["image"],
            "img"
        );
        assert_eq!(c["status"]["latestReadyRevisionName"], "hello-1");
    }
}
