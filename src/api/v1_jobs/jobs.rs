//! The v1 `Job` (`run.googleapis.com/v1`, Knative-shaped) as a view of the daemon's v2 Job,
//! both ways: [`to_v2`] reads what a client sends (gcloud's create and replace bodies), and
//! [`to_v1`] writes the stored job in the shape gcloud reads. Plain functions; no I/O.
//!
//! Mapped: `metadata.name`, `labels` and `annotations` (keys under the platform prefixes are
//! the server's: `run.googleapis.com/client-name` and `client-version` become the v2
//! `client` fields, the rest is dropped, as Cloud Run sets them itself),
//! `spec.template.spec.{taskCount, parallelism}`, and the task spec: containers (name,
//! image, command, args, env values and secret references, `resources.limits`,
//! `workingDir`, a sidecar's `startupProbe`), `maxRetries`, `timeoutSeconds`, `serviceAccountName`. Volumes are refused
//! (by field path) until v1 maps them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tonic::Status;

use crate::pb::run_v2::{self as v2, env_var, task_template};
use crate::spec::service_yaml::ProbeYaml;
use crate::spec::{service_yaml_export, service_yaml_to_v2};

pub const API_VERSION: &str = "run.googleapis.com/v1";
pub const REGION_LABEL: &str = "cloud.googleapis.com/location";
const CLIENT_NAME: &str = "run.googleapis.com/client-name";
const CLIENT_VERSION: &str = "run.googleapis.com/client-version";
const RESERVED_PREFIXES: &[&str] = &[
    "run.googleapis.com",
    "cloud.googleapis.com",
    "serving.knative.dev",
    "client.knative.dev",
    "autoscaling.knative.dev",
];

/// Kubernetes-style object metadata, the parts runlet reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetaV1 {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub resource_version: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobV1 {
    pub metadata: MetaV1,
    pub spec: JobSpecV1,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobSpecV1 {
    pub template: ExecutionTemplateV1,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecutionTemplateV1 {
    pub metadata: MetaV1,
    pub spec: ExecutionSpecV1,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecutionSpecV1 {
    pub parallelism: Option<i32>,
    pub task_count: Option<i32>,
    pub template: TaskTemplateV1,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskTemplateV1 {
    pub spec: TaskSpecV1,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskSpecV1 {
    pub containers: Vec<ContainerV1>,
    pub max_retries: Option<i32>,
    pub timeout_seconds: Option<IntOrString>,
    pub service_account_name: String,
    pub volumes: Vec<Value>,
}

/// An int64 as JSON carries it: a number or a decimal string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

impl IntOrString {
    pub fn get(&self, field: &str) -> Result<i64, Status> {
        match self {
            IntOrString::Int(n) => Ok(*n),
            IntOrString::Str(s) => s
                .parse()
                .map_err(|_| bad(field, &format!("{s:?} is not a number"))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerV1 {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<EnvV1>,
    pub resources: ResourcesV1,
    pub working_dir: String,
    pub volume_mounts: Vec<Value>,
    /// A sidecar's (the Knative shape service.yaml uses too).
    pub startup_probe: Option<ProbeYaml>,
    /// Refused: a job's containers have none.
    pub liveness_probe: Option<Value>,
    pub readiness_probe: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourcesV1 {
    pub limits: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvV1 {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<EnvSourceV1>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvSourceV1 {
    pub secret_key_ref: Option<SecretKeyRefV1>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretKeyRefV1 {
    pub name: String,
    pub key: String,
}

const CONTAINER_DEPENDENCIES: &str = crate::control::job::spec::CONTAINER_DEPENDENCIES;

pub fn bad(field: &str, detail: &str) -> Status {
    Status::invalid_argument(format!("invalid {field}: {detail}"))
}

fn reserved(key: &str) -> bool {
    let prefix = key.split_once('/').map_or("", |(p, _)| p);
    RESERVED_PREFIXES.contains(&prefix)
}

/// The user's keys of a label or annotation map (the platform's dropped).
fn users(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.iter()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Reads a v1 Job body into the v2 Job the daemon stores (`name` left empty: the caller
/// knows the full name).
pub fn to_v2(body: &[u8]) -> Result<(String, v2::Job), Status> {
    let j: JobV1 = serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("invalid JSON body: {e}")))?;
    let m = &j.metadata;
    let exec = &j.spec.template;
    let mut task = task_spec_to_v2(&exec.spec.template.spec, "spec.template.spec.template.spec")?;
    // Sidecars' start-up order: v1 carries it as an annotation, v2 as `dependsOn`.
    if let Some(text) = exec.metadata.annotations.get(CONTAINER_DEPENDENCIES) {
        let deps: BTreeMap<String, Vec<String>> = serde_json::from_str(text).map_err(|e| {
            bad(
                "spec.template.metadata.annotations[run.googleapis.com/container-dependencies]",
                &format!("not a JSON map of container name to names ({e})"),
            )
        })?;
        for c in &mut task.containers {
            if let Some(d) = deps.get(&c.name) {
                c.depends_on = d.clone();
            }
        }
    }
    let job = v2::Job {
        labels: users(&m.labels),
        annotations: users(&m.annotations),
        client: m.annotations.get(CLIENT_NAME).cloned().unwrap_or_default(),
        client_version: m
            .annotations
            .get(CLIENT_VERSION)
            .cloned()
            .unwrap_or_default(),
        etag: m.resource_version.clone(),
        template: Some(v2::ExecutionTemplate {
            labels: users(&exec.metadata.labels),
            annotations: users(&exec.metadata.annotations),
            parallelism: exec.spec.parallelism.unwrap_or(0),
            task_count: exec.spec.task_count.unwrap_or(0),
            template: Some(task),
        }),
        ..Default::default()
    };
    Ok((m.name.clone(), job))
}

/// A v1 task spec as the v2 task template.
pub fn task_spec_to_v2(t: &TaskSpecV1, at: &str) -> Result<v2::TaskTemplate, Status> {
    if !t.volumes.is_empty() {
        return Err(bad(
            &format!("{at}.volumes"),
            "volumes are not supported through the v1 API yet (use the v2 API or runlet job create)",
        ));
    }
    let containers = t
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| container(c, &format!("{at}.containers[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = match &t.timeout_seconds {
        None => None,
        Some(s) => Some(pbjson_types::Duration {
            seconds: s.get(&format!("{at}.timeoutSeconds"))?,
            nanos: 0,
        }),
    };
    Ok(v2::TaskTemplate {
        containers,
        timeout,
        service_account: t.service_account_name.clone(),
        retries: t.max_retries.map(task_template::Retries::MaxRetries),
        ..Default::default()
    })
}

fn container(c: &ContainerV1, at: &str) -> Result<v2::Container, Status> {
    if !c.volume_mounts.is_empty() {
        return Err(bad(
            &format!("{at}.volumeMounts"),
            "volumes are not supported through the v1 API yet",
        ));
    }
    for (field, given) in [
        ("livenessProbe", c.liveness_probe.is_some()),
        ("readinessProbe", c.readiness_probe.is_some()),
    ] {
        if given {
            return Err(bad(
                &format!("{at}.{field}"),
                "liveness and readiness probes are not allowed on a job's containers; leave them unset",
            ));
        }
    }
    let startup_probe = match &c.startup_probe {
        None => None,
        Some(p) => Some(
            service_yaml_to_v2::probe(&format!("{at}.startupProbe"), p)
                .map_err(|e| Status::invalid_argument(format!("invalid {}", e.detail)))?,
        ),
    };
    Ok(v2::Container {
        name: c.name.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: env_to_v2(&c.env, &format!("{at}.env"))?,
        resources: (!c.resources.limits.is_empty()).then(|| v2::ResourceRequirements {
            limits: c.resources.limits.clone(),
            ..Default::default()
        }),
        working_dir: c.working_dir.clone(),
        startup_probe,
        ..Default::default()
    })
}

/// v1 env entries as v2's: a value, or a secret reference (`name` the secret, `key` its
/// version).
pub fn env_to_v2(env: &[EnvV1], at: &str) -> Result<Vec<v2::EnvVar>, Status> {
    env.iter()
        .enumerate()
        .map(|(i, e)| {
            let values = match (&e.value, &e.value_from) {
                (
                    _,
                    Some(EnvSourceV1 {
                        secret_key_ref: Some(r),
                    }),
                ) => env_var::Values::ValueSource(v2::EnvVarSource {
                    secret_key_ref: Some(v2::SecretKeySelector {
                        secret: r.name.clone(),
                        version: r.key.clone(),
                    }),
                }),
                (_, Some(_)) => {
                    return Err(bad(
                        &format!("{at}[{i}].valueFrom"),
                        "only secretKeyRef is supported",
                    ))
                }
                (v, None) => env_var::Values::Value(v.clone().unwrap_or_default()),
            };
            Ok(v2::EnvVar {
                name: e.name.clone(),
                values: Some(values),
            })
        })
        .collect()
}

/// A timestamp as v1 spells it (RFC 3339), or nothing.
pub fn time(t: &Option<crate::pb::timestamp::Timestamp>) -> Value {
    t.and_then(|t| t.to_rfc3339().ok())
        .map_or(Value::Null, Value::String)
}

/// The v2 condition as a v1 one: `status` True, False or Unknown, `reason` from the
/// v2 reason enum (e.g. `NonZeroExitCode`, `Cancelled`).
pub fn condition(c: &v2::Condition) -> Value {
    use v2::condition::{Reasons, State};
    let status = match State::try_from(c.state) {
        Ok(State::ConditionSucceeded) => "True",
        Ok(State::ConditionFailed) => "False",
        _ => "Unknown",
    };
    let reason = match c.reasons {
        Some(Reasons::ExecutionReason(r)) => v2::condition::ExecutionReason::try_from(r)
            .ok()
            .filter(|r| *r != v2::condition::ExecutionReason::Undefined)
            .map(|r| format!("{r:?}")),
        Some(Reasons::Reason(r)) => v2::condition::CommonReason::try_from(r)
            .ok()
            .filter(|r| *r != v2::condition::CommonReason::Undefined)
            .map(|r| format!("{r:?}")),
        _ => None,
    };
    let mut v = json!({ "type": c.r#type, "status": status });
    if let Some(r) = reason {
        v["reason"] = r.into();
    }
    if !c.message.is_empty() {
        v["message"] = c.message.clone().into();
    }
    if c.severity == v2::condition::Severity::Error as i32 {
        v["severity"] = "Error".into();
    }
    let t = time(&c.last_transition_time);
    if !t.is_null() {
        v["lastTransitionTime"] = t;
    }
    v
}

/// The v2 task template as v1's task spec.
pub fn task_spec(t: &v2::TaskTemplate) -> Value {
    let containers: Vec<Value> = t
        .containers
        .iter()
        .map(|c| {
            let mut v = json!({ "name": c.name, "image": c.image });
            if !c.command.is_empty() {
                v["command"] = json!(c.command);
            }
            if !c.args.is_empty() {
                v["args"] = json!(c.args);
            }
            if !c.env.is_empty() {
                v["env"] = Value::Array(c.env.iter().map(env_to_v1).collect());
            }
            if let Some(r) = c.resources.as_ref().filter(|r| !r.limits.is_empty()) {
                v["resources"] = json!({ "limits": r.limits });
            }
            if !c.working_dir.is_empty() {
                v["workingDir"] = c.working_dir.clone().into();
            }
            if let Some(p) = &c.startup_probe {
                v["startupProbe"] = json!(service_yaml_export::probe_of(p));
            }
            v
        })
        .collect();
    let mut v = json!({ "containers": containers });
    if let Some(task_template::Retries::MaxRetries(n)) = t.retries {
        v["maxRetries"] = n.into();
    }
    if let Some(d) = &t.timeout {
        v["timeoutSeconds"] = d.seconds.to_string().into();
    }
    if !t.service_account.is_empty() {
        v["serviceAccountName"] = t.service_account.clone().into();
    }
    v
}

fn env_to_v1(e: &v2::EnvVar) -> Value {
    match &e.values {
        Some(env_var::Values::ValueSource(s)) => {
            let r = s.secret_key_ref.clone().unwrap_or_default();
            json!({ "name": e.name, "valueFrom": { "secretKeyRef": { "name": r.secret, "key": r.version } } })
        }
        Some(env_var::Values::Value(v)) => json!({ "name": e.name, "value": v }),
        None => json!({ "name": e.name }),
    }
}

/// Where a v1 resource lives: its namespace (the project) and region.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub project: String,
    pub region: String,
}

/// What v1's object metadata shows of a v2 resource.
pub struct Object<'a> {
    /// The collection in v1 paths: `jobs`, `executions`, `tasks`.
    pub kind_path: &'a str,
    pub short: &'a str,
    pub uid: &'a str,
    pub generation: i64,
    pub etag: &'a str,
    pub create_time: &'a Option<crate::pb::timestamp::Timestamp>,
    pub labels: BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
}

/// Object metadata for a v2 resource, as Cloud Run's v1 fills it (the region as the
/// `cloud.googleapis.com/location` label).
pub fn metadata(place: &Place, o: Object) -> Map<String, Value> {
    let Object {
        kind_path,
        short,
        uid,
        generation,
        etag,
        create_time,
        mut labels,
        annotations,
    } = o;
    labels.insert(REGION_LABEL.into(), place.region.clone());
    let mut m = Map::new();
    m.insert("name".into(), short.into());
    m.insert("namespace".into(), place.project.clone().into());
    m.insert(
        "selfLink".into(),
        format!(
            "/apis/{API_VERSION}/namespaces/{}/{kind_path}/{short}",
            place.project
        )
        .into(),
    );
    m.insert("uid".into(), uid.into());
    m.insert("resourceVersion".into(), etag.into());
    m.insert("generation".into(), generation.into());
    m.insert("creationTimestamp".into(), time(create_time));
    m.insert("labels".into(), json!(labels));
    m.insert("annotations".into(), json!(annotations));
    m
}

/// The stored job as v1 shows it; `execution_count` counts its executions.
pub fn to_v1(job: &v2::Job, place: &Place, execution_count: usize) -> Value {
    let short = crate::daemon::resource::short(&job.name);
    let mut annotations = job.annotations.clone();
    if !job.client.is_empty() {
        annotations.insert(CLIENT_NAME.into(), job.client.clone());
    }
    if !job.client_version.is_empty() {
        annotations.insert(CLIENT_VERSION.into(), job.client_version.clone());
    }
    if !job.creator.is_empty() {
        annotations.insert("run.googleapis.com/creator".into(), job.creator.clone());
    }
    if !job.last_modifier.is_empty() {
        annotations.insert(
            "run.googleapis.com/lastModifier".into(),
            job.last_modifier.clone(),
        );
    }
    let meta = metadata(
        place,
        Object {
            kind_path: "jobs",
            short,
            uid: &job.uid,
            generation: job.generation,
            etag: &job.etag,
            create_time: &job.create_time,
            labels: job.labels.clone(),
            annotations: &annotations,
        },
    );
    let exec = job.template.clone().unwrap_or_default();
    let mut exec_annotations = exec.annotations.clone();
    let deps: BTreeMap<&str, &Vec<String>> = exec
        .template
        .iter()
        .flat_map(|t| &t.containers)
        .filter(|c| !c.depends_on.is_empty())
        .map(|c| (c.name.as_str(), &c.depends_on))
        .collect();
    if !deps.is_empty() {
        exec_annotations.insert(
            CONTAINER_DEPENDENCIES.into(),
            serde_json::to_string(&deps).unwrap_or_default(),
        );
    }
    let mut exec_spec = json!({
        "taskCount": exec.task_count.max(1),
        "template": { "spec": task_spec(&exec.template.unwrap_or_default()) },
    });
    if exec.parallelism != 0 {
        exec_spec["parallelism"] = exec.parallelism.into();
    }
    let mut status = json!({
        "observedGeneration": job.observed_generation,
        "conditions": job.terminal_condition.iter().chain(&job.conditions).map(condition).collect::<Vec<_>>(),
        "executionCount": execution_count,
    });
    if let Some(r) = &job.latest_created_execution {
        let cs = v2::execution_reference::CompletionStatus::try_from(r.completion_status)
            .map_or("COMPLETION_STATUS_UNSPECIFIED", |c| c.as_str_name());
        let mut l = json!({
            "name": crate::daemon::resource::short(&r.name),
            "creationTimestamp": time(&r.create_time),
            "completionStatus": cs,
        });
        let done = time(&r.completion_time);
        if !done.is_null() {
            l["completionTimestamp"] = done;
        }
        status["latestCreatedExecution"] = l;
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "template": {
                "metadata": { "labels": exec.labels, "annotations": exec_annotations },
                "spec": exec_spec,
            }
        },
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::resource::{condition as v2cond, State};

    /// What `gcloud run jobs create j --image IMG --tasks 3` sends (gcloud 528).
    const GCLOUD_CREATE: &str = r#"{"apiVersion": "run.googleapis.com/v1", "kind": "Job", "metadata": {"annotations": {"run.googleapis.com/client-name": "gcloud", "run.googleapis.com/client-version": "528.0.0"}, "labels": {}, "name": "j", "namespace": "p1"}, "spec": {"template": {"metadata": {"annotations": {"run.googleapis.com/client-name": "gcloud", "run.googleapis.com/client-version": "528.0.0"}, "labels": {"client.knative.dev/nonce": "rap_rim_jez"}}, "spec": {"taskCount": 3, "template": {"spec": {"containers": [{"image": "IMG", "name": ""}], "nodeSelector": {}}}}}}, "status": {"latestCreatedExecution": {}}}"#;

    #[test]
    fn gclouds_create_body_maps_to_a_v2_job() {
        let (name, j) = to_v2(GCLOUD_CREATE.as_bytes()).unwrap();
        assert_eq!(name, "j");
        assert_eq!(j.client, "gcloud");
        assert_eq!(j.client_version, "528.0.0");
        assert!(j.annotations.is_empty(), "platform keys are the server's");
        let t = j.template.unwrap();
        assert!(t.labels.is_empty(), "the nonce label is dropped");
        assert_eq!(t.task_count, 3);
        assert_eq!(t.parallelism, 0);
        let task = t.template.unwrap();
        assert_eq!(task.containers.len(), 1);
        assert_eq!(task.containers[0].image, "IMG");
        assert_eq!(task.retries, None);
        assert_eq!(task.timeout, None);
    }

    /// A sidecar's startup probe is kept both ways (it holds back the containers that
    /// depend on it); liveness and readiness probes are refused by field path.
    #[test]
    fn a_sidecars_startup_probe_maps_both_ways_and_other_probes_are_refused() {
        let job = |sidecar: Value| {
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"template": {"spec": {
                "containers": [{"name": "main", "image": "img"}, sidecar]}}}}}})
            .to_string()
        };
        let probe =
            json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 30});
        let body = job(json!({"name": "side", "image": "img", "startupProbe": probe}));
        let (_, j) = to_v2(body.as_bytes()).unwrap();
        let task = j.template.as_ref().unwrap().template.as_ref().unwrap();
        let p = task.containers[1].startup_probe.as_ref().expect("kept");
        assert_eq!((p.period_seconds, p.failure_threshold), (1, 30));
        assert!(
            matches!(&p.probe_type, Some(v2::probe::ProbeType::TcpSocket(t)) if t.port == 8080)
        );
        let back = task_spec(task);
        assert_eq!(back["containers"][1]["startupProbe"], probe);
        assert!(back["containers"][0].get("startupProbe").is_none());

        for (sidecar, field) in [
            (
                json!({"name": "side", "image": "img", "livenessProbe": probe}),
                "containers[1].livenessProbe",
            ),
            (
                json!({"name": "side", "image": "img", "readinessProbe": probe}),
                "containers[1].readinessProbe",
            ),
            (
                json!({"name": "side", "image": "img", "startupProbe": {"tcpSocket": {"port": 1}, "httpGet": {"port": 1}}}),
                "containers[1].startupProbe",
            ),
        ] {
            let e = to_v2(job(sidecar).as_bytes()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
    }

    #[test]
    fn task_spec_fields_map_both_ways() {
        let body = json!({"metadata": {"name": "j", "labels": {"team": "a"}},
            "spec": {"template": {"spec": {"parallelism": 2, "taskCount": 4, "template": {"spec": {
                "maxRetries": 1, "timeoutSeconds": "30", "serviceAccountName": "sa@x",
                "containers": [{"name": "c", "image": "img", "command": ["/bin/sh"], "args": ["-c", "true"],
                    "workingDir": "/w", "resources": {"limits": {"memory": "1Gi", "cpu": "2"}},
                    "env": [{"name": "A", "value": "b"}, {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "latest"}}}]}]}}}}}});
        let (_, mut j) = to_v2(body.to_string().as_bytes()).unwrap();
        assert_eq!(j.labels.get("team").map(String::as_str), Some("a"));
        j.name = "projects/p/locations/r/jobs/j".into();
        j.generation = 2;
        j.observed_generation = 2;
        j.terminal_condition = Some(v2cond("Ready", State::ConditionSucceeded, ""));
        let place = Place {
            project: "p".into(),
            region: "r".into(),
        };
        let v = to_v1(&j, &place, 5);
        assert_eq!(v["metadata"]["name"], "j");
        assert_eq!(v["metadata"]["namespace"], "p");
        assert_eq!(v["metadata"]["generation"], 2);
        assert_eq!(v["metadata"]["labels"][REGION_LABEL], "r");
        assert_eq!(v["metadata"]["labels"]["team"], "a");
        let es = &v["spec"]["template"]["spec"];
        assert_eq!(es["parallelism"], 2);
        assert_eq!(es["taskCount"], 4);
        let ts = &es["template"]["spec"];
        assert_eq!(ts["maxRetries"], 1);
        assert_eq!(ts["timeoutSeconds"], "30");
        assert_eq!(ts["serviceAccountName"], "sa@x");
        let c = &ts["containers"][0];
        assert_eq!(c["command"], json!(["/bin/sh"]));
        assert_eq!(c["args"], json!(["-c", "true"]));
        assert_eq!(c["workingDir"], "/w");
        assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
        assert_eq!(c["env"][0], json!({"name": "A", "value": "b"}));
        assert_eq!(
            c["env"][1]["valueFrom"]["secretKeyRef"],
            json!({"name": "sec", "key": "latest"})
        );
        assert_eq!(v["status"]["observedGeneration"], 2);
        assert_eq!(v["status"]["executionCount"], 5);
        assert_eq!(v["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(v["status"]["conditions"][0]["status"], "True");
        // And back: the view is accepted as a replace body (what gcloud update sends).
        let (_, again) = to_v2(v.to_string().as_bytes()).unwrap();
        assert_eq!(again.template, j.template);
        assert_eq!(again.labels, j.labels, "the region label is the server's");
    }

    #[test]
    fn sidecars_and_their_order_map_both_ways() {
        let body = json!({"apiVersion": "run.googleapis.com/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"metadata": {"annotations": {"run.googleapis.com/container-dependencies": "{\"main\":[\"web\"]}"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "main", "image": "busybox"}, {"name": "web", "image": "busybox"}]}}}}}});
        let (_, j) = to_v2(body.to_string().as_bytes()).unwrap();
        let cs = &j
            .template
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .containers;
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].depends_on, ["web"]);
        assert!(cs[1].depends_on.is_empty());
        let place = Place {
            project: "p".into(),
            region: "r".into(),
        };
        let v1 = to_v1(&j, &place, 0);
        assert_eq!(
            v1["spec"]["template"]["metadata"]["annotations"]
                ["run.googleapis.com/container-dependencies"],
            "{\"main\":[\"web\"]}"
        );
        assert_eq!(
            v1["spec"]["template"]["spec"]["template"]["spec"]["containers"][1]["name"],
            "web"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        for (body, field) in [
            (
                json!({"spec": {"template": {"spec": {"template": {"spec": {"volumes": [{"name": "v"}]}}}}}}),
                "spec.template.spec.template.spec.volumes",
            ),
            (
                json!({"spec": {"template": {"spec": {"template": {"spec": {"containers": [{"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {}}}]}]}}}}}}),
                "spec.template.spec.template.spec.containers[0].env[0].valueFrom",
            ),
            (
                json!({"spec": {"template": {"spec": {"template": {"spec": {"timeoutSeconds": "soon"}}}}}}),
                "spec.template.spec.template.spec.timeoutSeconds",
            ),
        ] {
            let e = to_v2(body.to_string().as_bytes()).unwrap_err();
            assert!(e.message().contains(field), "{}: {}", field, e.message());
        }
    }

    #[test]
    fn conditions_map_to_kubernetes_statuses() {
        use v2::condition::{ExecutionReason, Reasons};
        let mut failed = v2cond("Completed", State::ConditionFailed, "boom");
        failed.reasons = Some(Reasons::ExecutionReason(
            ExecutionReason::NonZeroExitCode as i32,
        ));
        let mut cancelled = v2cond("Completed", State::ConditionFailed, "");
        cancelled.reasons = Some(Reasons::ExecutionReason(ExecutionReason::Cancelled as i32));
        for (c, status, reason) in [
            (v2cond("Ready", State::ConditionSucceeded, ""), "True", None),
            (
                v2cond("Completed", State::ConditionPending, ""),
                "Unknown",
                None,
            ),
            (
                v2cond("Completed", State::ConditionReconciling, ""),
                "Unknown",
                None,
            ),
            (failed, "False", Some("NonZeroExitCode")),
            (cancelled, "False", Some("Cancelled")),
        ] {
            let v = condition(&c);
            assert_eq!(v["status"], status, "{c:?}");
            assert_eq!(v["reason"].as_str(), reason, "{c:?}");
        }
    }
}
