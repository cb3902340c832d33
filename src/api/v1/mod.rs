//! The Cloud Run Admin API v1, as gcloud speaks it: Knative-shaped services, revisions,
//! routes and configurations under `/apis/serving.knative.dev/v1/namespaces/P/...`, the
//! IAM calls and the cross-region list under `/v1/projects/P/locations/R/services...`, and
//! the project lookup gcloud makes (`GET /v1/projects/P`, see [`projects`]).
//!
//! v1 is a view of the daemon's one model (the Admin API v2's resources), never a second
//! store: a request body is mapped by the service.yaml mapping (`crate::spec`), an answer
//! is the v2 resource written back in Knative's shape. v1 paths carry only the namespace
//! (the project); the region comes from the request's `Host` ([`region_from_host`]): gcloud
//! sends a region's calls to `R-runlet:PORT`. Errors take Google's JSON shape
//! (`rest::error`), which gcloud prints.
//!
//! [`route`] answers the calls it knows and returns None for any other path, so that a
//! sibling router (the jobs half, `run.googleapis.com/v1`) can be tried next.

mod host;
mod iam;
mod projects;
mod revisions;
mod routes;
mod selector;
mod services;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};
use tonic::Status;

use crate::daemon::Daemon;

pub(crate) use host::region_from_host;
pub(crate) use iam::call as iam_call;
pub(crate) use selector::Selector;

/// What a call answers: a JSON document (HTTP 200), or an error.
pub(crate) type Answer = Result<Value, Status>;

/// Where a call applies: the project (namespace) and the region (`-`: every region, for
/// lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    pub project: String,
    pub region: String,
}

const SERVING: &str = "/apis/serving.knative.dev/v1/namespaces/";

/// Answers a v1 call, or None when the path is not one of this module's.
pub async fn route(
    d: &Arc<Daemon>,
    m: &Method,
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Option<Answer> {
    let q = query_map(query);
    if let Some(rest) = path.strip_prefix(SERVING) {
        return Some(match decode(rest) {
            Ok(rest) => serving(d, m, host, &rest, &q, body).await,
            Err(e) => Err(e),
        });
    }
    let rest = match decode(path.strip_prefix("/v1/projects/")?) {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    let seg: Vec<&str> = rest.split('/').collect();
    Some(match (m, seg.as_slice()) {
        (&Method::GET, [p]) => Ok(projects::project(p)),
        (&Method::GET, [p, "locations", r, "services"]) => match selector(&q) {
            Ok(sel) => services::list(d, &loc(p, r), &sel).await,
            Err(e) => Err(e),
        },
        (_, [p, "locations", r, "services", s]) => match s.split_once(':') {
            // gcloud asks testIamPermissions before the service exists (a deploy's
            // check): only a policy needs its service.
            Some((s, verb)) => match verb {
                "testIamPermissions" => iam_call(d, m, "", verb, body).await,
                _ => match services::get(d, &loc(p, r), s).await {
                    Ok(_) => {
                        let full = format!("projects/{p}/locations/{r}/services/{s}");
                        iam_call(d, m, &full, verb, body).await
                    }
                    Err(e) => Err(e),
                },
            },
            None if m == Method::GET => services::get(d, &loc(p, r), s).await,
            None => Err(no_route(m, path)),
        },
        // A job's policy (`gcloud run jobs add-iam-policy-binding`); the job itself is
        // served by `v1_jobs`.
        (_, [p, "locations", r, "jobs", j]) if j.contains(':') => {
            let (j, verb) = j.split_once(':').expect("checked");
            let full = format!("projects/{p}/locations/{r}/jobs/{j}");
            match verb {
                "testIamPermissions" => iam_call(d, m, "", verb, body).await,
                _ => match d.get_job(&full).await {
                    Ok(_) => iam_call(d, m, &full, verb, body).await,
                    Err(e) => Err(e),
                },
            }
        }
        _ => return None,
    })
}

async fn serving(
    d: &Arc<Daemon>,
    m: &Method,
    host: Option<&str>,
    rest: &str,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Answer {
    let seg: Vec<&str> = rest.split('/').collect();
    let region = host.and_then(region_from_host);
    let (ns, kind, name) = match seg.as_slice() {
        [ns, kind] => (*ns, *kind, None),
        [ns, kind, name] => (*ns, *kind, Some(*name)),
        _ => return Err(no_route(m, rest)),
    };
    let is_list = name.is_none() && m == Method::GET;
    let region = match region {
        Some(r) => r,
        None if is_list => "-".to_string(),
        None => return Err(no_region(host)),
    };
    let l = loc(ns, &region);
    match (m, kind, name) {
        (&Method::GET, "services", None) => services::list(d, &l, &selector(q)?).await,
        (&Method::POST, "services", None) => services::create(d, &l, body).await,
        (&Method::GET, "services", Some(s)) => services::get(d, &l, s).await,
        (&Method::PUT, "services", Some(s)) => services::replace(d, &l, s, body).await,
        (&Method::DELETE, "services", Some(s)) => services::delete(d, &l, s).await,
        (&Method::GET, "revisions", None) => revisions::list(d, &l, &selector(q)?).await,
        (&Method::GET, "revisions", Some(r)) => revisions::get(d, &l, r).await,
        (&Method::DELETE, "revisions", Some(r)) => revisions::delete(d, &l, r).await,
        (&Method::GET, kind @ ("routes" | "configurations"), None) => {
            let sel = selector(q)?;
            let found = d
                .list_services(crate::pb::run_v2::ListServicesRequest {
                    parent: format!("projects/{}/locations/{}", l.project, l.region),
                    ..Default::default()
                })
                .await?;
            type View = fn(&crate::pb::run_v2::Service) -> Value;
            let (view, list_kind): (View, &str) = if kind == "routes" {
                (routes::route, "RouteList")
            } else {
                (routes::configuration, "ConfigurationList")
            };
            let items = found
                .services
                .iter()
                .map(view)
                .filter(|v| sel.matches(&labels_of(v)))
                .collect();
            Ok(list(list_kind, services::API_VERSION, items))
        }
        (&Method::GET, kind @ ("routes" | "configurations"), Some(n)) => {
            let svc = d
                .get_service(&format!(
                    "projects/{}/locations/{}/services/{n}",
                    l.project, l.region
                ))
                .await?;
            Ok(if kind == "routes" {
                routes::route(&svc)
            } else {
                routes::configuration(&svc)
            })
        }
        _ => Err(no_route(m, rest)),
    }
}

fn loc(project: &str, region: &str) -> Loc {
    Loc {
        project: project.to_string(),
        region: region.to_string(),
    }
}

fn decode(s: &str) -> Result<String, Status> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Status::invalid_argument("the path is not UTF-8"))
}

fn query_map(q: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn selector(q: &BTreeMap<String, String>) -> Result<Selector, Status> {
    Selector::parse(q.get("labelSelector").map_or("", String::as_str))
}

/// A resource's `metadata.labels`.
pub(crate) fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// A Knative list (no paging: every item in one answer).
pub(crate) fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {},
        "items": items,
        "unreachable": [],
    })
}

/// A Kubernetes `Status` for a deletion, as gcloud reads the answer of a delete.
pub(crate) fn deleted(kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success",
        "details": { "name": name, "kind": kind, "uid": uid },
    })
}

fn no_route(m: &Method, path: &str) -> Status {
    Status::not_found(format!(
        "no v1 route for {m} {path}: this server serves serving.knative.dev/v1 services, revisions, routes and configurations under {SERVING}PROJECT/"
    ))
}

fn no_region(host: Option<&str>) -> Status {
    Status::invalid_argument(format!(
        "the v1 API takes the region from the request's host, REGION-runlet (gcloud's regional endpoint); this request's host {:?} names none: point gcloud at runlet with `runlet setup gcloud`",
        host.unwrap_or("")
    ))
}
