//! v1 revisions (`serving.knative.dev/v1` `Revision`), read-only but for delete: a view of
//! the one model's revisions. The containers are written by the same export as a
//! service's template; the labels name the service, as gcloud's `revisions list --service`
//! selects them.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{status, Answer, Loc, Selector};
use crate::daemon::names::RevisionName;
use crate::daemon::resource::short;
use crate::daemon::Daemon;
use crate::pb::run_v2 as v2;
use crate::spec::service_yaml_export;

/// The revision in Knative's shape.
pub(crate) fn view(rev: &v2::Revision) -> Value {
    let (project, region, service) = match RevisionName::parse("name", &rev.name) {
        Ok(n) => (
            n.service.parent.project,
            n.service.parent.location,
            n.service.service,
        ),
        Err(_) => Default::default(),
    };
    // The template's export gives the containers, volumes and annotations as a
    // service.yaml writes them.
    let as_service = v2::Service {
        name: rev.service.clone(),
        template: Some(v2::RevisionTemplate {
            labels: rev.labels.clone(),
            annotations: rev.annotations.clone(),
            scaling: rev.scaling,
            timeout: rev.timeout,
            service_account: rev.service_account.clone(),
            containers: rev.containers.clone(),
            volumes: rev.volumes.clone(),
            execution_environment: rev.execution_environment,
            max_instance_request_concurrency: rev.max_instance_request_concurrency,
            ..Default::default()
        }),
        ..Default::default()
    };
    let export = serde_json::to_value(service_yaml_export::export(&as_service)).unwrap_or_default();
    let template = &export["spec"]["template"];
    let name = short(&rev.name);
    let mut md = template["metadata"].clone();
    md["name"] = name.into();
    md["namespace"] = project.clone().into();
    md["uid"] = rev.uid.clone().into();
    md["generation"] = rev.generation.into();
    md["resourceVersion"] = rev.etag.trim_matches('"').into();
    md["selfLink"] =
        format!("/apis/serving.knative.dev/v1/namespaces/{project}/revisions/{name}").into();
    if let Some(t) = &rev.create_time {
        md["creationTimestamp"] = json!(t);
    }
    for (k, v) in [
        ("serving.knative.dev/service", service.as_str()),
        ("serving.knative.dev/configuration", service.as_str()),
        ("serving.knative.dev/route", service.as_str()),
        ("cloud.googleapis.com/location", region.as_str()),
    ] {
        md["labels"][k] = v.into();
    }
    md["ownerReferences"] = json!([{
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Configuration",
        "name": service,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": md,
        "spec": template["spec"],
        "status": status::revision(rev),
    })
}

fn parent(loc: &Loc) -> String {
    format!(
        "projects/{}/locations/{}/services/-",
        loc.project, loc.region
    )
}

pub(crate) async fn list(d: &Arc<Daemon>, loc: &Loc, sel: &Selector) -> Answer {
    let list = d
        .list_revisions(v2::ListRevisionsRequest {
            parent: parent(loc),
            ..Default::default()
        })
        .await?;
    let items: Vec<Value> = list
        .revisions
        .iter()
        .map(view)
        .filter(|v| sel.matches(&super::labels_of(v)))
        .collect();
    Ok(super::list("RevisionList", "serving.knative.dev/v1", items))
}

pub(crate) async fn get(d: &Arc<Daemon>, loc: &Loc, name: &str) -> Answer {
    Ok(view(
        &d.get_revision(&format!("{}/revisions/{name}", parent(loc)))
            .await?,
    ))
}

pub(crate) async fn delete(d: &Arc<Daemon>, loc: &Loc, name: &str) -> Answer {
    let rev = d
        .get_revision(&format!("{}/revisions/{name}", parent(loc)))
        .await?;
    d.delete_revision(v2::DeleteRevisionRequest {
        name: rev.name.clone(),
        ..Default::default()
    })
    .await?;
    Ok(super::deleted("revisions", name, &rev.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::resource;

    #[test]
    fn a_revision_names_its_service() {
        let svc = v2::Service {
            name: "projects/p/locations/us-central1/services/hello".into(),
            template: Some(v2::RevisionTemplate {
                containers: vec![v2::Container {
                    image: "img:1".into(),
                    env: vec![v2::EnvVar {
                        name: "A".into(),
                        values: Some(v2::env_var::Values::Value("b".into())),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let rev = resource::new_revision(
            &svc,
            "projects/p/locations/us-central1/services/hello/revisions/hello-00002-xyz",
        );
        let v = view(&rev);
        assert_eq!(v["kind"], "Revision");
        assert_eq!(v["metadata"]["name"], "hello-00002-xyz");
        assert_eq!(v["metadata"]["namespace"], "p");
        assert_eq!(
            v["metadata"]["labels"]["serving.knative.dev/service"],
            "hello"
        );
        assert_eq!(v["spec"]["containers"][0]["image"], "img:1");
        assert_eq!(v["spec"]["containers"][0]["env"][0]["value"], "b");
        assert_eq!(v["status"]["conditions"][0]["type"], "Ready");
        let sel = Selector::parse("serving.knative.dev/service = hello").unwrap();
        assert!(sel.matches(&super::super::labels_of(&v)));
    }
}
