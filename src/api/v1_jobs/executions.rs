//! v1 `Execution` and `Task` as views of the daemon's v2 ones, a `:run` call's overrides,
//! and the label selectors gcloud lists them with. Plain functions; no I/O.

use serde::Deserialize;
use serde_json::{json, Value};
use tonic::Status;

use super::jobs::{
    self, condition, metadata, time, EnvV1, IntOrString, Object, Place, API_VERSION,
};
use crate::daemon::resource::short;
use crate::pb::run_v2::{self as v2, run_job_request::overrides::ContainerOverride};

pub const JOB_LABEL: &str = "run.googleapis.com/job";
pub const EXECUTION_LABEL: &str = "run.googleapis.com/execution";
pub const STATE_LABEL: &str = "run.googleapis.com/runningState";

/// The body of `POST .../jobs/J:run`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunJobV1 {
    pub overrides: Option<OverridesV1>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OverridesV1 {
    pub container_overrides: Vec<ContainerOverrideV1>,
    pub task_count: Option<i32>,
    pub timeout_seconds: Option<IntOrString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerOverrideV1 {
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<EnvV1>,
    pub clear_args: bool,
}

/// A `:run` body as v2's `RunJobRequest` overrides (`None`: run as stored).
pub fn overrides(body: &[u8]) -> Result<Option<v2::run_job_request::Overrides>, Status> {
    let r: RunJobV1 = if body.iter().all(u8::is_ascii_whitespace) {
        RunJobV1::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Status::invalid_argument(format!("invalid JSON body: {e}")))?
    };
    let Some(o) = r.overrides else {
        return Ok(None);
    };
    let container_overrides = o
        .container_overrides
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(ContainerOverride {
                name: c.name.clone(),
                args: c.args.clone(),
                env: jobs::env_to_v2(&c.env, &format!("overrides.containerOverrides[{i}].env"))?,
                clear_args: c.clear_args,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let timeout = match &o.timeout_seconds {
        None => None,
        Some(t) => Some(pbjson_types::Duration {
            seconds: t.get("overrides.timeoutSeconds")?,
            nanos: 0,
        }),
    };
    Ok(Some(v2::run_job_request::Overrides {
        container_overrides,
        task_count: o.task_count.unwrap_or(0),
        timeout,
    }))
}

/// One requirement of a Kubernetes label selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// `key = value` (or `==`).
    Equals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
}

/// Parses the label selectors gcloud sends (`run.googleapis.com/job = j`,
/// `k in (a,b)`, comma-separated); anything else is refused.
pub fn selector(s: &str) -> Result<Vec<Requirement>, Status> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        // A requirement ends at a comma outside parentheses.
        let mut depth = 0;
        let end = rest
            .char_indices()
            .find(|&(_, ch)| {
                match ch {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                ch == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let part = rest[..end].trim();
        rest = rest[end..].trim_start_matches(',').trim();
        let unsupported = || {
            Status::invalid_argument(format!(
                "unsupported labelSelector {part:?}: runlet reads `key = value` and `key in (a,b)`"
            ))
        };
        if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            if k.trim_end().ends_with('!') {
                return Err(unsupported());
            }
            out.push(Requirement::Equals(k.trim().into(), v.trim().into()));
        } else if let Some((k, v)) = part.split_once(" in ") {
            let v = v.trim();
            let list = v
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(unsupported)?;
            out.push(Requirement::In(
                k.trim().into(),
                list.split(',').map(|x| x.trim().to_string()).collect(),
            ));
        } else {
            return Err(unsupported());
        }
    }
    Ok(out)
}

/// Whether `labels` meet every requirement.
pub fn matches(reqs: &[Requirement], labels: &serde_json::Map<String, Value>) -> bool {
    reqs.iter().all(|r| match r {
        Requirement::Equals(k, v) => labels.get(k).and_then(Value::as_str) == Some(v),
        Requirement::In(k, vs) => labels
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|l| vs.iter().any(|v| v == l)),
    })
}

/// The value a selector requires of `key` (`key = value`), if it names one.
pub fn required<'a>(reqs: &'a [Requirement], key: &str) -> Option<&'a str> {
    reqs.iter().find_map(|r| match r {
        Requirement::Equals(k, v) if k == key => Some(v.as_str()),
        _ => None,
    })
}

fn labels_of(v: &Value) -> serde_json::Map<String, Value> {
    v["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Whether the v1 view `v` meets the selector.
pub fn selected(reqs: &[Requirement], v: &Value) -> bool {
    matches(reqs, &labels_of(v))
}

/// The execution as v1 shows it.
pub fn to_v1(e: &v2::Execution, place: &Place) -> Value {
    let id = short(&e.name);
    let mut labels = e.labels.clone();
    labels.insert(JOB_LABEL.into(), e.job.clone());
    let mut annotations = e.annotations.clone();
    if !e.creator.is_empty() {
        annotations.insert("run.googleapis.com/creator".into(), e.creator.clone());
    }
    let mut meta = metadata(
        place,
        Object {
            kind_path: "executions",
            short: id,
            uid: &e.uid,
            generation: e.generation,
            etag: &e.etag,
            create_time: &e.create_time,
            labels,
            annotations: &annotations,
        },
    );
    meta.insert(
        "ownerReferences".into(),
        json!([{ "apiVersion": API_VERSION, "kind": "Job", "name": e.job, "controller": true, "blockOwnerDeletion": true }]),
    );
    let mut spec = json!({
        "taskCount": e.task_count,
        "template": { "spec": jobs::task_spec(&e.template.clone().unwrap_or_default()) },
    });
    if e.parallelism != 0 {
        spec["parallelism"] = e.parallelism.into();
    }
    let mut status = json!({
        "observedGeneration": e.observed_generation,
        "conditions": e.conditions.iter().map(condition).collect::<Vec<_>>(),
        "runningCount": e.running_count,
        "succeededCount": e.succeeded_count,
        "failedCount": e.failed_count,
        "cancelledCount": e.cancelled_count,
        "retriedCount": e.retried_count,
    });
    for (k, t) in [
        ("startTime", &e.start_time),
        ("completionTime", &e.completion_time),
    ] {
        let t = time(t);
        if !t.is_null() {
            status[k] = t;
        }
    }
    if !e.log_uri.is_empty() {
        status["logUri"] = e.log_uri.clone().into();
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "Execution",
        "metadata": meta,
        "spec": spec,
        "status": status,
    })
}

/// A task's running state, as v1's `run.googleapis.com/runningState` label names it.
pub fn running_state(t: &v2::Task) -> &'static str {
    use v2::condition::{ExecutionReason, Reasons, State};
    let Some(c) = t.conditions.iter().find(|c| c.r#type == "Completed") else {
        return "Pending";
    };
    match State::try_from(c.state) {
        Ok(State::ConditionSucceeded) => "Succeeded",
        Ok(State::ConditionFailed)
            if c.reasons == Some(Reasons::ExecutionReason(ExecutionReason::Cancelled as i32)) =>
        {
            "Cancelled"
        }
        Ok(State::ConditionFailed) => "Failed",
        Ok(State::ConditionReconciling) => "Running",
        _ => "Pending",
    }
}

/// The task as v1 shows it.
pub fn task_to_v1(t: &v2::Task, place: &Place) -> Value {
    let id = short(&t.name);
    let mut labels = t.labels.clone();
    labels.insert(JOB_LABEL.into(), t.job.clone());
    labels.insert(EXECUTION_LABEL.into(), t.execution.clone());
    labels.insert(STATE_LABEL.into(), running_state(t).into());
    let meta = metadata(
        place,
        Object {
            kind_path: "tasks",
            short: id,
            uid: &t.uid,
            generation: t.generation,
            etag: &t.etag,
            create_time: &t.create_time,
            labels,
            annotations: &t.annotations,
        },
    );
    let tpl = v2::TaskTemplate {
        containers: t.containers.clone(),
        timeout: t.timeout,
        service_account: t.service_account.clone(),
        retries: Some(v2::task_template::Retries::MaxRetries(t.max_retries)),
        ..Default::default()
    };
    let mut status = json!({
        "observedGeneration": t.observed_generation,
        "conditions": t.conditions.iter().map(condition).collect::<Vec<_>>(),
        "index": t.index,
        "retried": t.retried,
    });
    for (k, v) in [
        ("startTime", &t.start_time),
        ("completionTime", &t.completion_time),
    ] {
        let v = time(v);
        if !v.is_null() {
            status[k] = v;
        }
    }
    if let Some(r) = &t.last_attempt_result {
        let s = r.status.clone().unwrap_or_default();
        status["lastAttemptResult"] = json!({
            "exitCode": r.exit_code,
            "status": { "code": s.code, "message": s.message },
        });
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": meta,
        "spec": jobs::task_spec(&tpl),
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::resource::{condition as v2cond, State};

    #[test]
    fn selectors_as_gcloud_sends_them() {
        use Requirement::*;
        for (s, want) in [
            ("", Some(vec![])),
            (
                "run.googleapis.com/job = j",
                Some(vec![Equals(JOB_LABEL.into(), "j".into())]),
            ),
            ("a==b", Some(vec![Equals("a".into(), "b".into())])),
            (
                "run.googleapis.com/execution = e,run.googleapis.com/runningState in (Running,Failed)",
                Some(vec![
                    Equals(EXECUTION_LABEL.into(), "e".into()),
                    In(STATE_LABEL.into(), vec!["Running".into(), "Failed".into()]),
                ]),
            ),
            ("a != b", None),
            ("a", None),
            ("a in b", None),
        ] {
            assert_eq!(selector(s).ok(), want, "{s:?}");
        }
    }

    #[test]
    fn gclouds_run_overrides_map_to_v2() {
        // What `gcloud run jobs execute j --update-env-vars A=b --args x,y --tasks 2
        // --task-timeout 30s` sends (gcloud 528).
        let body = br#"{"overrides": {"containerOverrides": [{"args": ["x", "y"], "clearArgs": false, "env": [{"name": "A", "value": "b"}]}], "taskCount": 2, "timeoutSeconds": 30}}"#;
        let o = overrides(body).unwrap().unwrap();
        assert_eq!(o.task_count, 2);
        assert_eq!(o.timeout.unwrap().seconds, 30);
        let c = &o.container_overrides[0];
        assert_eq!(c.args, ["x", "y"]);
        assert!(!c.clear_args);
        assert_eq!(c.env[0].name, "A");
        assert_eq!(
            c.env[0].values,
            Some(v2::env_var::Values::Value("b".into()))
        );
        assert_eq!(overrides(b"{}").unwrap(), None);
        assert_eq!(overrides(b"").unwrap(), None);
        assert!(overrides(br#"{"overrides": {"timeoutSeconds": "x"}}"#).is_err());
    }

    fn place() -> Place {
        Place {
            project: "p".into(),
            region: "r".into(),
        }
    }

    #[test]
    fn execution_counts_and_conditions() {
        use v2::condition::{ExecutionReason, Reasons};
        let mut done = v2cond("Completed", State::ConditionFailed, "1 task failed");
        done.reasons = Some(Reasons::ExecutionReason(
            ExecutionReason::NonZeroExitCode as i32,
        ));
        let e = v2::Execution {
            name: "projects/p/locations/r/jobs/j/executions/j-abc".into(),
            job: "j".into(),
            generation: 1,
            observed_generation: 1,
            task_count: 3,
            succeeded_count: 2,
            failed_count: 1,
            create_time: Some(crate::pb::timestamp::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            completion_time: Some(crate::pb::timestamp::Timestamp {
                seconds: 1_700_000_010,
                nanos: 0,
            }),
            conditions: vec![
                v2cond("ResourcesAvailable", State::ConditionSucceeded, ""),
                v2cond("Started", State::ConditionSucceeded, ""),
                done,
            ],
            template: Some(v2::TaskTemplate {
                containers: vec![v2::Container {
                    image: "img".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = to_v1(&e, &place());
        assert_eq!(v["kind"], "Execution");
        assert_eq!(v["metadata"]["name"], "j-abc");
        assert_eq!(v["metadata"]["generation"], 1);
        assert_eq!(v["metadata"]["labels"][JOB_LABEL], "j");
        assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["spec"]["taskCount"], 3);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["image"],
            "img"
        );
        let s = &v["status"];
        assert_eq!(s["observedGeneration"], 1);
        assert_eq!(s["succeededCount"], 2);
        assert_eq!(s["failedCount"], 1);
        assert_eq!(s["runningCount"], 0);
        assert_eq!(s["completionTime"], "2023-11-14T22:13:30Z");
        assert_eq!(s["conditions"][2]["type"], "Completed");
        assert_eq!(s["conditions"][2]["status"], "False");
        assert_eq!(s["conditions"][2]["reason"], "NonZeroExitCode");
        assert!(selected(
            &selector("run.googleapis.com/job = j").unwrap(),
            &v
        ));
        assert!(!selected(
            &selector("run.googleapis.com/job = k").unwrap(),
            &v
        ));
    }

    #[test]
    fn task_running_states() {
        use v2::condition::{ExecutionReason, Reasons};
        let task = |c: Option<v2::Condition>| v2::Task {
            conditions: c.into_iter().collect(),
            ..Default::default()
        };
        let mut cancelled = v2cond("Completed", State::ConditionFailed, "");
        cancelled.reasons = Some(Reasons::ExecutionReason(ExecutionReason::Cancelled as i32));
        for (t, want) in [
            (task(None), "Pending"),
            (
                task(Some(v2cond("Completed", State::ConditionPending, ""))),
                "Pending",
            ),
            (
                task(Some(v2cond("Completed", State::ConditionReconciling, ""))),
                "Running",
            ),
            (
                task(Some(v2cond("Completed", State::ConditionSucceeded, ""))),
                "Succeeded",
            ),
            (
                task(Some(v2cond("Completed", State::ConditionFailed, ""))),
                "Failed",
            ),
            (task(Some(cancelled)), "Cancelled"),
        ] {
            assert_eq!(running_state(&t), want);
        }
    }
}
