//! v1 services (`serving.knative.dev/v1` `Service`): a view of the daemon's one model. A
//! request body is read as the service.yaml it is (Knative's shape, in JSON) and mapped by
//! the same functions `runlet services replace` uses ([`service_yaml_to_v2`]); an answer
//! is the service's export ([`service_yaml_export`]) with the output fields added
//! (`metadata.uid`, `generation`, ..., and `status` from [`super::status`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tonic::Status;

use super::{status, Answer, Loc};
use crate::daemon::names::ServiceName;
use crate::daemon::Daemon;
use crate::pb::run_v2 as v2;
use crate::spec::{service_yaml, service_yaml_export, service_yaml_to_v2};

pub(crate) const API_VERSION: &str = "serving.knative.dev/v1";

/// How long a delete waits for the service's instances to be gone.
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// The service in Knative's shape.
pub(crate) fn view(svc: &v2::Service) -> Value {
    let mut v = serde_json::to_value(service_yaml_export::export(svc)).unwrap_or_default();
    let (project, name) = match ServiceName::parse("name", &svc.name) {
        Ok(n) => (n.parent.project, n.service),
        Err(_) => (String::new(), svc.name.clone()),
    };
    let md = &mut v["metadata"];
    md["uid"] = svc.uid.clone().into();
    md["generation"] = svc.generation.into();
    md["resourceVersion"] = svc.etag.trim_matches('"').into();
    md["selfLink"] = format!("/apis/{API_VERSION}/namespaces/{project}/services/{name}").into();
    if let Some(t) = &svc.create_time {
        md["creationTimestamp"] = json!(t);
    }
    if !svc.creator.is_empty() {
        md["annotations"]["serving.knative.dev/creator"] = svc.creator.clone().into();
    }
    if !svc.last_modifier.is_empty() {
        md["annotations"]["serving.knative.dev/lastModifier"] = svc.last_modifier.clone().into();
    }
    v["status"] = status::service(svc);
    v
}

/// What gcloud sends that the service.yaml mapping has no field for, removed when empty:
/// `spec.template.spec.nodeSelector: {}` (gcloud always writes it).
pub(crate) fn normalize(body: &mut Value) {
    if let Some(spec) = body
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    {
        if spec
            .get("nodeSelector")
            .is_some_and(|n| n.as_object().is_some_and(|o| o.is_empty()) || n.is_null())
        {
            spec.remove("nodeSelector");
        }
    }
}

/// A request's `Service` (its name checked against the path's `namespace`) as the one
/// model's `Service`, and its short name.
pub(crate) fn input(namespace: &str, body: &[u8]) -> Result<(String, v2::Service), Status> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("invalid JSON body: {e}")))?;
    normalize(&mut v);
    if let Some(ns) = v.pointer("/metadata/namespace").and_then(Value::as_str) {
        if ns != namespace {
            return Err(Status::invalid_argument(format!(
                "metadata.namespace {ns:?} does not match the namespace of the path ({namespace:?}): runlet's namespace is the project"
            )));
        }
    }
    // JSON is YAML: the service.yaml parser gives the same checks and field paths.
    let text = serde_json::to_string(&v).unwrap_or_default();
    let y = service_yaml::parse(&text).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let m = service_yaml_to_v2::service(&y).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok((m.name, m.service))
}

fn full(loc: &Loc, name: &str) -> String {
    format!(
        "projects/{}/locations/{}/services/{name}",
        loc.project, loc.region
    )
}

pub(crate) async fn get(d: &Arc<Daemon>, loc: &Loc, name: &str) -> Answer {
    Ok(view(&d.get_service(&full(loc, name)).await?))
}

pub(crate) async fn list(d: &Arc<Daemon>, loc: &Loc, sel: &super::Selector) -> Answer {
    let list = d
        .list_services(v2::ListServicesRequest {
            parent: format!("projects/{}/locations/{}", loc.project, loc.region),
            ..Default::default()
        })
        .await?;
    let items: Vec<Value> = list
        .services
        .iter()
        .map(view)
        .filter(|v| sel.matches(&super::labels_of(v)))
        .collect();
    Ok(super::list("ServiceList", API_VERSION, items))
}

pub(crate) async fn create(d: &Arc<Daemon>, loc: &Loc, body: &[u8]) -> Answer {
    let (name, svc) = input(&loc.project, body)?;
    d.create_service(v2::CreateServiceRequest {
        parent: format!("projects/{}/locations/{}", loc.project, loc.region),
        service: Some(svc),
        service_id: name.clone(),
        validate_only: false,
    })
    .await?;
    get(d, loc, &name).await
}

pub(crate) async fn replace(d: &Arc<Daemon>, loc: &Loc, name: &str, body: &[u8]) -> Answer {
    let (given, mut svc) = input(&loc.project, body)?;
    if given != name {
        return Err(Status::invalid_argument(format!(
            "metadata.name {given:?} does not match the name in the path ({name:?})"
        )));
    }
    svc.name = full(loc, name);
    d.update_service(v2::UpdateServiceRequest {
        service: Some(svc),
        update_mask: None,
        validate_only: false,
        allow_missing: false,
    })
    .await?;
    get(d, loc, name).await
}

/// Deletes the service and waits (a while) for its instances to be gone, so that what
/// gcloud reports done is done.
pub(crate) async fn delete(d: &Arc<Daemon>, loc: &Loc, name: &str) -> Answer {
    let svc = d.get_service(&full(loc, name)).await?;
    let op = d
        .delete_service(v2::DeleteServiceRequest {
            name: full(loc, name),
            ..Default::default()
        })
        .await?;
    d.ops.wait(&op.name, DELETE_WAIT).await?;
    Ok(super::deleted("services", name, &svc.uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What gcloud 528's `run deploy hello --image IMG` sends (captured from a stub).
    const GCLOUD_CREATE: &str = r#"{"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"annotations": {"run.googleapis.com/client-name": "gcloud", "run.googleapis.com/client-version": "528.0.0"}, "labels": {}, "name": "hello", "namespace": "proj1"}, "spec": {"template": {"metadata": {"annotations": {"run.googleapis.com/client-name": "gcloud", "run.googleapis.com/client-version": "528.0.0", "run.googleapis.com/startup-cpu-boost": "True"}, "labels": {"client.knative.dev/nonce": "kxtyfmlczv"}}, "spec": {"containers": [{"image": "docker.io/library/nginx:latest", "name": ""}], "nodeSelector": {}}}}, "status": {"address": {}}}"#;

    #[test]
    fn gclouds_create_maps_to_the_model() {
        let (name, svc) = input("proj1", GCLOUD_CREATE.as_bytes()).unwrap();
        assert_eq!(name, "hello");
        let t = svc.template.unwrap();
        assert_eq!(t.containers[0].image, "docker.io/library/nginx:latest");
        // gcloud's nonce and client annotations are the platform's, not the service's.
        assert!(t.labels.is_empty(), "{:?}", t.labels);
        assert!(svc.annotations.is_empty(), "{:?}", svc.annotations);
        assert!(
            t.containers[0]
                .resources
                .as_ref()
                .unwrap()
                .startup_cpu_boost
        );
        // Another namespace than the path's is refused.
        let e = input("other", GCLOUD_CREATE.as_bytes()).unwrap_err();
        assert!(e.message().contains("namespace"), "{}", e.message());
        // A field runlet does not map is refused with its path.
        let bad = GCLOUD_CREATE.replace("\"nodeSelector\": {}", "\"nodeSelector\": {\"a\": \"b\"}");
        let e = input("proj1", bad.as_bytes()).unwrap_err();
        assert!(e.message().contains("nodeSelector"), "{}", e.message());
    }

    #[test]
    fn the_view_goes_back_in() {
        let (_, mut svc) = input("proj1", GCLOUD_CREATE.as_bytes()).unwrap();
        svc.name = "projects/proj1/locations/us-central1/services/hello".into();
        svc.uid = "u-1".into();
        svc.generation = 2;
        svc.etag = "\"abc\"".into();
        svc.creator = "runlet".into();
        let v = view(&svc);
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["kind"], "Service");
        assert_eq!(v["metadata"]["name"], "hello");
        assert_eq!(v["metadata"]["namespace"], "proj1");
        assert_eq!(v["metadata"]["generation"], 2);
        assert_eq!(v["metadata"]["resourceVersion"], "abc");
        assert_eq!(
            v["metadata"]["labels"]["cloud.googleapis.com/location"],
            "us-central1"
        );
        assert!(v["status"].is_object());
        // gcloud sends back what it read (plus its change): the same service.
        let (name, again) = input("proj1", &serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(name, "hello");
        assert_eq!(again.template, svc.template);
        assert_eq!(again.labels, svc.labels);
    }
}
