//! The HTTP/JSON side of the API: the `google.api.http` routes of the published
//! `google.cloud.run.v2` and `google.longrunning` definitions (`POST /v2/{parent}/services`,
//! `GET /v2/{name}`, ...), each a call on the [`Daemon`]. Bodies use proto3's JSON mapping
//! (the generated serde code); non-path request fields come as camelCase (or snake_case)
//! query parameters; errors take Google's shape, `{"error": {"code", "message", "status"}}`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::de::DeserializeOwned;
use tonic::{Code, Status};

use super::grpc::wait_timeout;
use crate::daemon::Daemon;
use crate::pb::longrunning::Operation;
use crate::pb::run_v2 as v2;

/// What a route answers: a JSON document, or an error.
type Answer = Result<serde_json::Value, Status>;

/// Serves one REST call. `host` is the request's `Host` (the v1 API reads the region from
/// it); `query` is the raw query string. The v1 API's routes ([`super::v1`]) are tried
/// first, then v2's.
pub async fn handle(
    daemon: &Arc<Daemon>,
    method: &Method,
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let v1 = match super::v1::route(daemon, method, host, path, query, &body).await {
        None => super::v1_jobs::route(daemon, method, host, path, query, &body).await,
        services => services,
    };
    if let Some(answer) = v1 {
        return match answer {
            Ok(v) => reply(StatusCode::OK, &v),
            Err(s) => error(&s),
        };
    }
    let q = Query::parse(query.unwrap_or(""));
    let enums_as_ints = q.enums_as_ints();
    match route(daemon, method, path, &q, &body).await {
        Ok(mut v) => {
            if enums_as_ints {
                enums_to_numbers(&mut v);
            }
            reply(StatusCode::OK, &v)
        }
        Err(s) => error(&s),
    }
}

/// Rewrites the enum names of an answer into numbers (`$alt=json;enum-encoding=int`). An
/// answer is a resource, a list of them, or operations; each resource names its type by
/// the shape of its name, an operation's parts by `@type`.
fn enums_to_numbers(v: &mut serde_json::Value) {
    use crate::pb::enum_numbers::enums_to_numbers as rewrite;
    let type_of = |v: &serde_json::Value| -> Option<String> {
        if let Some(t) = v.get("@type").and_then(|t| t.as_str()) {
            return t
                .strip_prefix(crate::pb::any::TYPE_URL_PREFIX)
                .map(String::from);
        }
        let name = v.get("name")?.as_str()?;
        let kind = if name.contains("/tasks/") {
            "Task"
        } else if name.contains("/executions/") {
            "Execution"
        } else if name.contains("/jobs/") {
            "Job"
        } else if name.contains("/revisions/") {
            "Revision"
        } else if name.contains("/operations/") {
            return Some("google.longrunning.Operation".into());
        } else {
            "Service"
        };
        Some(format!("google.cloud.run.v2.{kind}"))
    };
    let mut one = |v: &mut serde_json::Value| {
        if let Some(t) = type_of(v) {
            let _ = rewrite(v, &t);
        }
        for part in ["metadata", "response"] {
            if let Some(p) = v.get_mut(part) {
                if let Some(t) = type_of(p) {
                    let _ = rewrite(p, &t);
                }
            }
        }
    };
    for list in [
        "services",
        "revisions",
        "operations",
        "jobs",
        "executions",
        "tasks",
    ] {
        if let Some(items) = v.get_mut(list).and_then(|l| l.as_array_mut()) {
            items.iter_mut().for_each(&mut one);
            return;
        }
    }
    one(v);
}

async fn route(d: &Arc<Daemon>, m: &Method, path: &str, q: &Query, body: &[u8]) -> Answer {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Err(not_found(m, path));
    };
    let rest = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| Status::invalid_argument("the path is not UTF-8"))?;
    let seg: Vec<&str> = rest.split('/').collect();
    // projects/P/locations/L/...
    if seg.len() < 5 || seg[0] != "projects" || seg[2] != "locations" {
        return Err(not_found(m, path));
    }
    let parent = seg[..4].join("/");
    match (m, &seg[4..]) {
        (&Method::POST, ["services"]) => {
            let svc: v2::Service = body_json(body)?;
            let op = d
                .create_service(v2::CreateServiceRequest {
                    parent,
                    service: Some(svc),
                    service_id: q.get("serviceId").unwrap_or_default(),
                    validate_only: q.bool("validateOnly")?,
                })
                .await?;
            operation(&op)
        }
        (&Method::GET, ["services"]) => to_json(
            &d.list_services(v2::ListServicesRequest {
                parent,
                page_size: q.int("pageSize")?,
                page_token: q.get("pageToken").unwrap_or_default(),
                show_deleted: q.bool("showDeleted")?,
            })
            .await?,
        ),
        (&Method::GET, ["services", _]) => to_json(&d.get_service(&rest).await?),
        (&Method::PATCH, ["services", _]) => {
            let mut svc: v2::Service = body_json(body)?;
            if svc.name.is_empty() {
                svc.name = rest.to_string();
            } else if svc.name != rest {
                return Err(Status::invalid_argument(format!(
                    "service.name {:?} does not match the path ({rest})",
                    svc.name
                )));
            }
            let mask = q
                .get("updateMask")
                .map(|m| crate::pb::field_mask::FieldMask::from_json_str(&m));
            let op = d
                .update_service(v2::UpdateServiceRequest {
                    service: Some(svc),
                    update_mask: mask,
                    validate_only: q.bool("validateOnly")?,
                    allow_missing: q.bool("allowMissing")?,
                })
                .await?;
            operation(&op)
        }
        (&Method::DELETE, ["services", _]) => operation(
            &d.delete_service(v2::DeleteServiceRequest {
                name: rest.to_string(),
                validate_only: q.bool("validateOnly")?,
                etag: q.get("etag").unwrap_or_default(),
            })
            .await?,
        ),
        (&Method::GET, ["services", _, "revisions"]) => to_json(
            &d.list_revisions(v2::ListRevisionsRequest {
                parent: seg[..6].join("/"),
                page_size: q.int("pageSize")?,
                page_token: q.get("pageToken").unwrap_or_default(),
                show_deleted: q.bool("showDeleted")?,
            })
            .await?,
        ),
        (&Method::GET, ["services", _, "revisions", _]) => to_json(&d.get_revision(&rest).await?),
        (&Method::DELETE, ["services", _, "revisions", _]) => operation(
            &d.delete_revision(v2::DeleteRevisionRequest {
                name: rest.to_string(),
                validate_only: q.bool("validateOnly")?,
                etag: q.get("etag").unwrap_or_default(),
            })
            .await?,
        ),
        (&Method::POST, ["jobs"]) => {
            let job: v2::Job = body_json(body)?;
            operation(
                &d.create_job(v2::CreateJobRequest {
                    parent,
                    job: Some(job),
                    job_id: q.get("jobId").unwrap_or_default(),
                    validate_only: q.bool("validateOnly")?,
                })
                .await?,
            )
        }
        (&Method::GET, ["jobs"]) => to_json(
            &d.list_jobs(v2::ListJobsRequest {
                parent,
                page_size: q.int("pageSize")?,
                page_token: q.get("pageToken").unwrap_or_default(),
                show_deleted: q.bool("showDeleted")?,
            })
            .await?,
        ),
        (&Method::POST, ["jobs", j]) if j.ends_with(":run") => {
            let mut req: v2::RunJobRequest = body_or_default(body)?;
            req.name = rest.trim_end_matches(":run").to_string();
            operation(&d.run_job(req).await?)
        }
        (&Method::GET, ["jobs", _]) => to_json(&d.get_job(&rest).await?),
        (&Method::PATCH, ["jobs", _]) => {
            let mut job: v2::Job = body_json(body)?;
            if job.name.is_empty() {
                job.name = rest.to_string();
            } else if job.name != rest {
                return Err(Status::invalid_argument(format!(
                    "job.name {:?} does not match the path ({rest})",
                    job.name
                )));
            }
            operation(
                &d.update_job(v2::UpdateJobRequest {
                    job: Some(job),
                    validate_only: q.bool("validateOnly")?,
                    allow_missing: q.bool("allowMissing")?,
                })
                .await?,
            )
        }
        (&Method::DELETE, ["jobs", _]) => operation(
            &d.delete_job(v2::DeleteJobRequest {
                name: rest.to_string(),
                validate_only: q.bool("validateOnly")?,
                etag: q.get("etag").unwrap_or_default(),
            })
            .await?,
        ),
        (&Method::GET, ["jobs", _, "executions"]) => to_json(
            &d.list_executions(v2::ListExecutionsRequest {
                parent: seg[..6].join("/"),
                page_size: q.int("pageSize")?,
                page_token: q.get("pageToken").unwrap_or_default(),
                show_deleted: q.bool("showDeleted")?,
            })
            .await?,
        ),
        (&Method::POST, ["jobs", _, "executions", e]) if e.ends_with(":cancel") => {
            let mut req: v2::CancelExecutionRequest = body_or_default(body)?;
            req.name = rest.trim_end_matches(":cancel").to_string();
            operation(&d.cancel_execution(req).await?)
        }
        (&Method::GET, ["jobs", _, "executions", _]) => to_json(&d.get_execution(&rest).await?),
        (&Method::DELETE, ["jobs", _, "executions", _]) => operation(
            &d.delete_execution(v2::DeleteExecutionRequest {
                name: rest.to_string(),
                validate_only: q.bool("validateOnly")?,
                etag: q.get("etag").unwrap_or_default(),
            })
            .await?,
        ),
        (&Method::GET, ["jobs", _, "executions", _, "tasks"]) => to_json(
            &d.list_tasks(v2::ListTasksRequest {
                parent: seg[..8].join("/"),
                page_size: q.int("pageSize")?,
                page_token: q.get("pageToken").unwrap_or_default(),
                show_deleted: q.bool("showDeleted")?,
            })
            .await?,
        ),
        (&Method::GET, ["jobs", _, "executions", _, "tasks", _]) => {
            to_json(&d.get_task(&rest).await?)
        }
        (&Method::GET, ["operations"]) => {
            let (ops, next) = d
                .ops
                .list(
                    &parent,
                    q.int("pageSize")?,
                    &q.get("pageToken").unwrap_or_default(),
                )
                .await?;
            let ops = ops
                .iter()
                .map(crate::pb::any::operation_json)
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?;
            let mut v = serde_json::json!({ "operations": ops });
            if !next.is_empty() {
                v["nextPageToken"] = next.into();
            }
            Ok(v)
        }
        (&Method::GET, ["operations", _]) => operation(&d.ops.get(&rest).await?),
        (&Method::DELETE, ["operations", _]) => {
            d.ops.delete(&rest).await?;
            Ok(serde_json::json!({}))
        }
        (&Method::POST, ["operations", id]) if id.ends_with(":wait") => {
            let name = rest.trim_end_matches(":wait");
            let body: serde_json::Value = if body.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| Status::invalid_argument(format!("invalid JSON body: {e}")))?
            };
            let timeout = match body.get("timeout") {
                Some(t) => Some(
                    serde_json::from_value::<pbjson_types::Duration>(t.clone())
                        .map_err(|e| Status::invalid_argument(format!("invalid timeout: {e}")))?,
                ),
                None => None,
            };
            operation(&d.ops.wait(name, wait_timeout(timeout.as_ref())).await?)
        }
        _ => Err(not_found(m, path)),
    }
}

fn not_found(m: &Method, path: &str) -> Status {
    Status::not_found(format!("no route for {m} {path}: this server serves the Cloud Run Admin API v2 (services, revisions, jobs, executions, tasks, operations) under /v2/projects/*/locations/*"))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn body_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    if body.is_empty() {
        return Err(Status::invalid_argument(
            "the request body is empty: expected a JSON resource",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("invalid JSON body: {e}")))
}

/// A `body: "*"` request: the JSON body, or the defaults when it is empty.
fn body_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("invalid JSON body: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Answer {
    serde_json::to_value(v).map_err(internal)
}

fn operation(op: &Operation) -> Answer {
    crate::pb::any::operation_json(op).map_err(internal)
}

fn reply(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// Google's error JSON for a status, with the HTTP status its code maps to.
pub fn error(s: &Status) -> Response<Full<Bytes>> {
    let http = http_status(s.code());
    let v = serde_json::json!({
        "error": {
            "code": http.as_u16(),
            "message": s.message(),
            "status": code_name(s.code()),
        }
    });
    reply(http, &v)
}

/// The HTTP status of a gRPC code, as Google's APIs map them.
pub fn http_status(c: Code) -> StatusCode {
    match c {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code's name as `google.rpc.Code` spells it.
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Query parameters; names match camelCase or snake_case.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.replace('_', "").to_ascii_lowercase(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, camel: &str) -> Option<String> {
        self.0.get(&camel.to_ascii_lowercase()).cloned()
    }

    fn bool(&self, name: &str) -> Result<bool, Status> {
        match self.get(name).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(v) => Err(Status::invalid_argument(format!(
                "invalid {name} {v:?}: expected true or false"
            ))),
        }
    }

    fn int(&self, name: &str) -> Result<i32, Status> {
        match self.get(name) {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                Status::invalid_argument(format!("invalid {name} {v:?}: expected a number"))
            }),
        }
    }

    /// `$alt=json;enum-encoding=int`, as Google's generated REST clients send it.
    fn enums_as_ints(&self) -> bool {
        self.get("$alt")
            .is_some_and(|a| a.contains("enum-encoding=int"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_and_values() {
        let q = Query::parse(
            "serviceId=hello&validate_only=true&pageSize=5&%24alt=json%3Benum-encoding%3Dint",
        );
        assert_eq!(q.get("serviceId").as_deref(), Some("hello"));
        assert!(q.bool("validateOnly").unwrap());
        assert_eq!(q.int("pageSize").unwrap(), 5);
        assert!(q.enums_as_ints());
        assert!(!q.bool("allowMissing").unwrap());
        assert!(Query::parse("validateOnly=maybe")
            .bool("validateOnly")
            .is_err());
    }

    #[test]
    fn codes_map_as_googles() {
        for (c, http, name) in [
            (Code::InvalidArgument, 400, "INVALID_ARGUMENT"),
            (Code::NotFound, 404, "NOT_FOUND"),
            (Code::AlreadyExists, 409, "ALREADY_EXISTS"),
            (Code::FailedPrecondition, 400, "FAILED_PRECONDITION"),
            (Code::Unauthenticated, 401, "UNAUTHENTICATED"),
            (Code::Aborted, 409, "ABORTED"),
        ] {
            assert_eq!(http_status(c).as_u16(), http);
            assert_eq!(code_name(c), name);
        }
    }
}
