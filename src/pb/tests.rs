//! The generated API against Google's published one: protobuf bytes and proto3 JSON round
//! trips, JSON's spellings, `Any` by `@type`, and a table of names, field numbers and HTTP
//! routes copied from googleapis f8291d2 (checked there by `proto/tools/check_subset.py`).

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{json, Value};

use super::any::{operation_json, Any, AnyError, KNOWN_TYPES};
use super::enum_numbers::{enums_to_numbers, to_json_with_enum_numbers};
use super::field_mask::FieldMask;
use super::longrunning::{operation, Operation};
use super::run_v2::*;
use super::timestamp::Timestamp;
use super::{rpc, FILE_DESCRIPTOR_SET};

fn timestamp(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

fn seconds(seconds: i64) -> pbjson_types::Duration {
    pbjson_types::Duration { seconds, nanos: 0 }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// 2024-05-01T12:00:00Z.
const MAY_FIRST: i64 = 1_714_564_800;

/// A Service with most of what runlet reads and writes set.
fn service() -> Service {
    let container = Container {
        name: "app".into(),
        image: "example.com/hello:1".into(),
        command: vec!["/hello".into()],
        args: vec!["--port".into(), "8080".into()],
        env: vec![
            EnvVar {
                name: "GREETING".into(),
                values: Some(env_var::Values::Value("hi".into())),
            },
            EnvVar {
                name: "TOKEN".into(),
                values: Some(env_var::Values::ValueSource(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        secret: "token".into(),
                        version: "latest".into(),
                    }),
                })),
            },
        ],
        resources: Some(ResourceRequirements {
            limits: labels(&[("cpu", "1"), ("memory", "512Mi")]),
            cpu_idle: true,
            startup_cpu_boost: false,
        }),
        ports: vec![ContainerPort {
            name: "http1".into(),
            container_port: 8080,
        }],
        volume_mounts: vec![VolumeMount {
            name: "scratch".into(),
            mount_path: "/scratch".into(),
            sub_path: String::new(),
        }],
        working_dir: "/srv".into(),
        liveness_probe: Some(Probe {
            period_seconds: 10,
            failure_threshold: 3,
            probe_type: Some(probe::ProbeType::HttpGet(HttpGetAction {
                path: "/healthz".into(),
                http_headers: vec![HttpHeader {
                    name: "X-Probe".into(),
                    value: "1".into(),
                }],
                port: 8080,
            })),
            ..Default::default()
        }),
        startup_probe: Some(Probe {
            initial_delay_seconds: 1,
            timeout_seconds: 2,
            probe_type: Some(probe::ProbeType::TcpSocket(TcpSocketAction { port: 8080 })),
            ..Default::default()
        }),
        ..Default::default()
    };
    Service {
        name: "projects/p/locations/l/services/hello".into(),
        uid: "6c0e0a6e-0000-4000-8000-000000000001".into(),
        generation: 7,
        labels: labels(&[("team", "web")]),
        create_time: Some(timestamp(MAY_FIRST)),
        update_time: Some(Timestamp {
            seconds: MAY_FIRST + 60,
            nanos: 500_000_000,
        }),
        ingress: IngressTraffic::All as i32,
        template: Some(RevisionTemplate {
            revision: "hello-00007-abc".into(),
            scaling: Some(RevisionScaling {
                min_instance_count: 0,
                max_instance_count: 100,
            }),
            timeout: Some(seconds(300)),
            containers: vec![container],
            volumes: vec![Volume {
                name: "scratch".into(),
                volume_type: Some(volume::VolumeType::EmptyDir(EmptyDirVolumeSource {
                    medium: empty_dir_volume_source::Medium::Memory as i32,
                    size_limit: "64Mi".into(),
                })),
            }],
            execution_environment: ExecutionEnvironment::Gen2 as i32,
            max_instance_request_concurrency: 80,
            ..Default::default()
        }),
        traffic: vec![TrafficTarget {
            r#type: TrafficTargetAllocationType::Latest as i32,
            percent: 100,
            ..Default::default()
        }],
        scaling: Some(ServiceScaling {
            min_instance_count: 1,
            scaling_mode: service_scaling::ScalingMode::Automatic as i32,
            manual_instance_count: Some(0),
            ..Default::default()
        }),
        observed_generation: 7,
        terminal_condition: Some(Condition {
            r#type: "Ready".into(),
            state: condition::State::ConditionSucceeded as i32,
            last_transition_time: Some(timestamp(MAY_FIRST)),
            ..Default::default()
        }),
        conditions: vec![Condition {
            r#type: "RoutesReady".into(),
            state: condition::State::ConditionPending as i32,
            message: "waiting".into(),
            severity: condition::Severity::Info as i32,
            reasons: Some(condition::Reasons::RevisionReason(
                condition::RevisionReason::Pending as i32,
            )),
            ..Default::default()
        }],
        latest_ready_revision: "projects/p/locations/l/services/hello/revisions/hello-00007-abc"
            .into(),
        uri: "http://127.0.0.1:8080".into(),
        reconciling: false,
        etag: "\"7\"".into(),
        ..Default::default()
    }
}

/// Every object key in `json` (map keys, which are user data, excluded by the caller).
fn keys(json: &Value, skip_children_of: &[&str], out: &mut Vec<String>) {
    match json {
        Value::Object(object) => {
            for (key, value) in object {
                out.push(key.clone());
                if !skip_children_of.contains(&key.as_str()) {
                    keys(value, skip_children_of, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, skip_children_of, out)),
        _ => {}
    }
}

#[test]
fn service_round_trips_through_protobuf_bytes() {
    let original = service();
    let bytes = original.encode_to_vec();
    assert_eq!(
        Service::decode(bytes.as_slice()).expect("decodes"),
        original
    );
}

#[test]
fn service_round_trips_through_json() {
    let original = service();
    let text = serde_json::to_string(&original).expect("serializes");
    let back: Service = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, original);
}

#[test]
fn json_out_follows_the_proto3_mapping() {
    let json = serde_json::to_value(service()).expect("serializes");
    // 64-bit integers are strings, 32-bit ones numbers
    assert_eq!(json["generation"], json!("7"));
    assert_eq!(json["observedGeneration"], json!("7"));
    assert_eq!(json["template"]["maxInstanceRequestConcurrency"], json!(80));
    // Duration and Timestamp
    assert_eq!(json["template"]["timeout"], json!("300s"));
    assert_eq!(json["createTime"], json!("2024-05-01T12:00:00Z"));
    assert_eq!(json["updateTime"], json!("2024-05-01T12:01:00.500Z"));
    // enums by name, nested ones too
    assert_eq!(json["ingress"], json!("INGRESS_TRAFFIC_ALL"));
    assert_eq!(
        json["template"]["executionEnvironment"],
        json!("EXECUTION_ENVIRONMENT_GEN2")
    );
    assert_eq!(
        json["traffic"][0]["type"],
        json!("TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST")
    );
    assert_eq!(
        json["terminalCondition"]["state"],
        json!("CONDITION_SUCCEEDED")
    );
    assert_eq!(json["conditions"][0]["revisionReason"], json!("PENDING"));
    assert_eq!(json["scaling"]["scalingMode"], json!("AUTOMATIC"));
    // oneofs by their field's name, optional scalars present even at zero
    assert_eq!(
        json["template"]["containers"][0]["env"][0]["value"],
        json!("hi")
    );
    assert_eq!(
        json["template"]["containers"][0]["env"][1]["valueSource"]["secretKeyRef"]["secret"],
        json!("token")
    );
    assert_eq!(
        json["template"]["containers"][0]["livenessProbe"]["httpGet"]["path"],
        json!("/healthz")
    );
    assert_eq!(
        json["template"]["containers"][0]["startupProbe"]["tcpSocket"]["port"],
        json!(8080)
    );
    assert_eq!(json["scaling"]["manualInstanceCount"], json!(0));
    // defaults are left out
    assert!(json.get("description").is_none());
    assert!(json.get("reconciling").is_none());
    assert!(json["scaling"].get("maxInstanceCount").is_none());
    // every field name is lowerCamelCase
    let mut all = Vec::new();
    keys(&json, &["labels", "limits", "annotations"], &mut all);
    let snake: Vec<&String> = all.iter().filter(|k| k.contains('_')).collect();
    assert!(snake.is_empty(), "snake_case keys in JSON out: {snake:?}");
    assert!(all.iter().any(|k| k == "latestReadyRevision"));
    assert_eq!(
        json["template"]["containers"][0]["resources"]["limits"]["memory"],
        json!("512Mi")
    );
}

#[test]
fn json_in_accepts_snake_case_numeric_enums_and_int64_either_way() {
    let text = r#"{
        "name": "projects/p/locations/l/services/hello",
        "generation": 3,
        "observed_generation": "3",
        "ingress": 2,
        "create_time": "2024-05-01T12:00:00Z",
        "template": {
            "max_instance_request_concurrency": 10,
            "timeout": "1.5s",
            "execution_environment": "EXECUTION_ENVIRONMENT_GEN1",
            "containers": [{"image": "hello", "startup_probe": {"tcp_socket": {"port": 80}}}]
        },
        "traffic": [{"type": 2, "revision": "hello-00001-abc", "percent": 100}],
        "terminalCondition": {"type": "Ready", "state": 3, "execution_reason": "CANCELLED"}
    }"#;
    let got: Service = serde_json::from_str(text).expect("parses");
    let want = Service {
        name: "projects/p/locations/l/services/hello".into(),
        generation: 3,
        observed_generation: 3,
        ingress: IngressTraffic::InternalOnly as i32,
        create_time: Some(timestamp(MAY_FIRST)),
        template: Some(RevisionTemplate {
            max_instance_request_concurrency: 10,
            timeout: Some(pbjson_types::Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
            execution_environment: ExecutionEnvironment::Gen1 as i32,
            containers: vec![Container {
                image: "hello".into(),
                startup_probe: Some(Probe {
                    probe_type: Some(probe::ProbeType::TcpSocket(TcpSocketAction { port: 80 })),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        traffic: vec![TrafficTarget {
            r#type: TrafficTargetAllocationType::Revision as i32,
            revision: "hello-00001-abc".into(),
            percent: 100,
            ..Default::default()
        }],
        terminal_condition: Some(Condition {
            r#type: "Ready".into(),
            state: condition::State::ConditionFailed as i32,
            reasons: Some(condition::Reasons::ExecutionReason(
                condition::ExecutionReason::Cancelled as i32,
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(got, want);
}

#[test]
fn json_in_refuses_unknown_fields_and_enum_names() {
    let cases = [
        r#"{"noSuchField": 1}"#,
        r#"{"ingress": "INGRESS_TRAFFIC_SOMETIMES"}"#,
        r#"{"generation": "seven"}"#,
        r#"{"template": {"timeout": "300"}}"#,
    ];
    for text in cases {
        assert!(serde_json::from_str::<Service>(text).is_err(), "{text}");
    }
}

#[test]
fn request_json_reads_update_mask_and_ids() {
    let text = r#"{"service": {"template": {}}, "updateMask": "template.containers,traffic",
                   "validateOnly": true, "allowMissing": true}"#;
    let request: UpdateServiceRequest = serde_json::from_str(text).expect("parses");
    assert_eq!(
        request.update_mask,
        Some(FieldMask {
            paths: vec!["template.containers".into(), "traffic".into()]
        })
    );
    assert!(request.validate_only && request.allow_missing);
    let create: CreateServiceRequest =
        serde_json::from_str(r#"{"parent": "projects/p/locations/l", "serviceId": "hello"}"#)
            .expect("parses");
    assert_eq!(create.service_id, "hello");
}

fn done_operation(result: operation::Result) -> Operation {
    Operation {
        name: "projects/p/locations/l/operations/op-1".into(),
        metadata: Some(Any::pack(&service())),
        done: true,
        result: Some(result),
    }
}

#[test]
fn operation_json_renders_any_by_type() {
    let op = done_operation(operation::Result::Response(Any::pack(&service())));
    let json = operation_json(&op).expect("renders");
    assert_eq!(
        json["name"],
        json!("projects/p/locations/l/operations/op-1")
    );
    assert_eq!(json["done"], json!(true));
    for part in ["metadata", "response"] {
        assert_eq!(
            json[part]["@type"],
            json!("type.googleapis.com/google.cloud.run.v2.Service")
        );
        assert_eq!(
            json[part]["name"],
            json!("projects/p/locations/l/services/hello")
        );
        assert_eq!(json[part]["generation"], json!("7"));
        assert_eq!(json[part]["template"]["timeout"], json!("300s"));
        assert!(json[part].get("typeUrl").is_none() && json[part].get("value").is_none());
    }
    // and back: Operation JSON parses into the same Operation
    let back: Operation = serde_json::from_value(json).expect("parses");
    assert_eq!(back, op);
    let response = match back.result {
        Some(operation::Result::Response(any)) => any,
        other => panic!("response expected, got {other:?}"),
    };
    assert_eq!(response.unpack::<Service>().expect("a Service"), service());
}

#[test]
fn operation_json_renders_errors_and_pending() {
    let failed = done_operation(operation::Result::Error(rpc::Status {
        code: 5,
        message: "service hello not found".into(),
        details: vec![],
    }));
    let json = operation_json(&failed).expect("renders");
    assert_eq!(
        json["error"],
        json!({"code": 5, "message": "service hello not found"})
    );
    assert!(json.get("response").is_none());

    let pending = Operation {
        name: "projects/p/locations/l/operations/op-2".into(),
        metadata: Some(Any::pack(&Job::default())),
        done: false,
        result: None,
    };
    let json = operation_json(&pending).expect("renders");
    assert_eq!(
        json,
        json!({
            "name": "projects/p/locations/l/operations/op-2",
            "metadata": {"@type": "type.googleapis.com/google.cloud.run.v2.Job"},
        })
    );
}

#[test]
fn any_refuses_what_it_cannot_map() {
    let stranger = Any {
        type_url: "type.googleapis.com/google.cloud.run.v2.Task".into(),
        value: Task::default().encode_to_vec(),
    };
    let op = done_operation(operation::Result::Response(stranger.clone()));
    assert!(matches!(operation_json(&op), Err(AnyError::Json { .. })));
    assert!(matches!(
        stranger.to_json(),
        Err(AnyError::UnknownType { .. })
    ));
    assert!(matches!(
        Any::pack(&service()).unpack::<Job>(),
        Err(AnyError::WrongType { .. })
    ));
    let garbage = Any {
        type_url: "type.googleapis.com/google.cloud.run.v2.Service".into(),
        value: vec![0xff, 0xff, 0xff],
    };
    assert!(matches!(garbage.to_json(), Err(AnyError::Decode { .. })));
    for text in [r#"{"name": "x"}"#, r#"{"@type": 7}"#, r#"[]"#] {
        assert!(serde_json::from_str::<Any>(text).is_err(), "{text}");
    }
    // the empty Any is `{}` both ways
    assert_eq!(
        serde_json::to_value(Any::default()).expect("renders"),
        json!({})
    );
    assert_eq!(
        serde_json::from_str::<Any>("{}").expect("parses"),
        Any::default()
    );
}

#[test]
fn every_known_type_crosses_json() {
    let samples = [
        Any::pack(&service()),
        Any::pack(&Revision {
            name: "r".into(),
            ..Default::default()
        }),
        Any::pack(&Job {
            name: "j".into(),
            ..Default::default()
        }),
        Any::pack(&Execution {
            name: "e".into(),
            task_count: 3,
            ..Default::default()
        }),
        Any {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: vec![],
        },
    ];
    let names: Vec<&str> = samples.iter().map(Any::full_name).collect();
    assert_eq!(names, KNOWN_TYPES);
    for any in samples {
        let json = any.to_json().expect("renders");
        assert_eq!(json["@type"], json!(any.type_url));
        assert_eq!(Any::from_json(json).expect("parses"), any);
    }
}

#[test]
fn enums_as_numbers_on_request() {
    let json = to_json_with_enum_numbers(&service()).expect("renders");
    assert_eq!(json["ingress"], json!(1));
    assert_eq!(json["template"]["executionEnvironment"], json!(2));
    assert_eq!(
        json["template"]["volumes"][0]["emptyDir"]["medium"],
        json!(1)
    );
    assert_eq!(json["traffic"][0]["type"], json!(1));
    assert_eq!(json["terminalCondition"]["state"], json!(4));
    assert_eq!(json["conditions"][0]["severity"], json!(3));
    assert_eq!(json["conditions"][0]["revisionReason"], json!(1));
    assert_eq!(json["scaling"]["scalingMode"], json!(1));
    // strings that are not enums stay strings
    assert_eq!(json["terminalCondition"]["type"], json!("Ready"));
    assert_eq!(json["generation"], json!("7"));
    // numbers parse back to the same message
    assert_eq!(
        serde_json::from_value::<Service>(json).expect("parses"),
        service()
    );

    // through an Operation's Any, by "@type"
    let op = done_operation(operation::Result::Response(Any::pack(&service())));
    let mut json = operation_json(&op).expect("renders");
    enums_to_numbers(&mut json, "google.longrunning.Operation").expect("known message");
    assert_eq!(json["response"]["ingress"], json!(1));
    assert_eq!(json["metadata"]["traffic"][0]["type"], json!(1));

    // lists, and a message that is not ours
    let list = ListServicesResponse {
        services: vec![service(), service()],
        ..Default::default()
    };
    let json = to_json_with_enum_numbers(&list).expect("renders");
    assert_eq!(json["services"][1]["ingress"], json!(1));
    assert!(enums_to_numbers(&mut json!({}), "google.cloud.run.v2.Nope").is_err());
}

/// The number of the first field in an encoded message.
fn first_field_number(bytes: &[u8]) -> u64 {
    let key = prost::encoding::decode_varint(&mut &bytes[..]).expect("a key");
    key >> 3
}

#[test]
fn field_numbers_match_the_published_ones() {
    // (what, encoded message with only that field set, number in googleapis f8291d2)
    let table: Vec<(&str, Vec<u8>, u64)> = vec![
        (
            "Service.generation",
            Service {
                generation: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            4,
        ),
        (
            "Service.ingress",
            Service {
                ingress: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            15,
        ),
        (
            "Service.template",
            Service {
                template: Some(RevisionTemplate::default()),
                ..Default::default()
            }
            .encode_to_vec(),
            18,
        ),
        (
            "Service.uri",
            Service {
                uri: "u".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            36,
        ),
        (
            "Service.reconciling",
            Service {
                reconciling: true,
                ..Default::default()
            }
            .encode_to_vec(),
            98,
        ),
        (
            "Service.etag",
            Service {
                etag: "e".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            99,
        ),
        (
            "RevisionTemplate.timeout",
            RevisionTemplate {
                timeout: Some(seconds(1)),
                ..Default::default()
            }
            .encode_to_vec(),
            8,
        ),
        (
            "RevisionTemplate.max_instance_request_concurrency",
            RevisionTemplate {
                max_instance_request_concurrency: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            15,
        ),
        (
            "Container.readiness_probe",
            Container {
                readiness_probe: Some(Probe::default()),
                ..Default::default()
            }
            .encode_to_vec(),
            14,
        ),
        (
            "Container.depends_on",
            Container {
                depends_on: vec!["a".into()],
                ..Default::default()
            }
            .encode_to_vec(),
            12,
        ),
        (
            "ContainerPort.container_port",
            ContainerPort {
                container_port: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            3,
        ),
        (
            "Revision.max_instance_request_concurrency",
            Revision {
                max_instance_request_concurrency: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            34,
        ),
        (
            "Condition.execution_reason",
            Condition {
                reasons: Some(condition::Reasons::ExecutionReason(2)),
                ..Default::default()
            }
            .encode_to_vec(),
            11,
        ),
        (
            "Job.run_execution_token",
            Job {
                create_execution: Some(job::CreateExecution::RunExecutionToken("t".into())),
                ..Default::default()
            }
            .encode_to_vec(),
            27,
        ),
        (
            "TaskTemplate.max_retries",
            TaskTemplate {
                retries: Some(task_template::Retries::MaxRetries(0)),
                ..Default::default()
            }
            .encode_to_vec(),
            3,
        ),
        (
            "Execution.cancelled_count",
            Execution {
                cancelled_count: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            24,
        ),
        (
            "Task.index",
            Task {
                index: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            24,
        ),
        (
            "Task.scheduled_time",
            Task {
                scheduled_time: Some(timestamp(1)),
                ..Default::default()
            }
            .encode_to_vec(),
            34,
        ),
        (
            "DeleteJobRequest.validate_only",
            DeleteJobRequest {
                validate_only: true,
                ..Default::default()
            }
            .encode_to_vec(),
            3,
        ),
        (
            "DeleteJobRequest.etag",
            DeleteJobRequest {
                etag: "e".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            4,
        ),
        (
            "UpdateServiceRequest.update_mask",
            UpdateServiceRequest {
                update_mask: Some(FieldMask::default()),
                ..Default::default()
            }
            .encode_to_vec(),
            2,
        ),
        (
            "RunJobRequest.Overrides.timeout",
            run_job_request::Overrides {
                timeout: Some(seconds(1)),
                ..Default::default()
            }
            .encode_to_vec(),
            4,
        ),
        (
            "ListOperationsRequest.name",
            super::longrunning::ListOperationsRequest {
                name: "n".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            4,
        ),
        (
            "Operation.response",
            Operation {
                result: Some(operation::Result::Response(Any::default())),
                ..Default::default()
            }
            .encode_to_vec(),
            5,
        ),
        (
            "WaitOperationRequest.timeout",
            super::longrunning::WaitOperationRequest {
                timeout: Some(seconds(1)),
                ..Default::default()
            }
            .encode_to_vec(),
            2,
        ),
    ];
    for (what, bytes, number) in table {
        assert_eq!(first_field_number(&bytes), number, "{what}");
    }
    // a tag byte, spelled out once: field 4, varint
    assert_eq!(
        Service {
            generation: 1,
            ..Default::default()
        }
        .encode_to_vec(),
        [0x20, 0x01]
    );
}

#[test]
fn enum_values_match_the_published_ones() {
    let table: &[(&str, i32, i32)] = &[
        ("INGRESS_TRAFFIC_NONE", IngressTraffic::None as i32, 4),
        (
            "EXECUTION_ENVIRONMENT_GEN2",
            ExecutionEnvironment::Gen2 as i32,
            2,
        ),
        (
            "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            TrafficTargetAllocationType::Revision as i32,
            2,
        ),
        (
            "CONDITION_SUCCEEDED",
            condition::State::ConditionSucceeded as i32,
            4,
        ),
        ("WARNING", condition::Severity::Warning as i32, 2),
        (
            "NON_ZERO_EXIT_CODE",
            condition::ExecutionReason::NonZeroExitCode as i32,
            2,
        ),
        ("RETIRED", condition::RevisionReason::Retired as i32, 3),
        (
            "CONTAINER_MISSING",
            condition::CommonReason::ContainerMissing as i32,
            6,
        ),
        (
            "EXECUTION_CANCELLED",
            execution_reference::CompletionStatus::ExecutionCancelled as i32,
            5,
        ),
        ("MANUAL", service_scaling::ScalingMode::Manual as i32, 2),
    ];
    for (name, value, number) in table {
        assert_eq!(value, number, "{name}");
    }
    assert_eq!(IngressTraffic::All.as_str_name(), "INGRESS_TRAFFIC_ALL");
}

/// Services and their methods, as googleapis f8291d2 names them (IAM methods left out).
const SERVICES: &[(&str, &[&str])] = &[
    (
        "google.cloud.run.v2.Services",
        &[
            "CreateService",
            "GetService",
            "ListServices",
            "UpdateService",
            "DeleteService",
        ],
    ),
    (
        "google.cloud.run.v2.Revisions",
        &["GetRevision", "ListRevisions", "DeleteRevision"],
    ),
    (
        "google.cloud.run.v2.Jobs",
        &[
            "CreateJob",
            "GetJob",
            "ListJobs",
            "UpdateJob",
            "DeleteJob",
            "RunJob",
        ],
    ),
    (
        "google.cloud.run.v2.Executions",
        &[
            "GetExecution",
            "ListExecutions",
            "DeleteExecution",
            "CancelExecution",
        ],
    ),
    ("google.cloud.run.v2.Tasks", &["GetTask", "ListTasks"]),
    (
        "google.longrunning.Operations",
        &[
            "ListOperations",
            "GetOperation",
            "DeleteOperation",
            "CancelOperation",
            "WaitOperation",
        ],
    ),
];

#[test]
fn services_and_methods_match_the_published_names() {
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let methods = service.method.iter().map(|m| m.name().to_owned()).collect();
            found.push((format!("{}.{}", file.package(), service.name()), methods));
        }
    }
    found.sort();
    let mut want: Vec<(String, Vec<String>)> = SERVICES
        .iter()
        .map(|(s, ms)| {
            (
                (*s).to_owned(),
                ms.iter().map(|m| (*m).to_owned()).collect(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(found, want);

    // the gRPC service names the generated servers answer to
    use tonic::server::NamedService;
    struct Stub;
    impl services_server::Services for Stub {}
    impl revisions_server::Revisions for Stub {}
    impl jobs_server::Jobs for Stub {}
    impl executions_server::Executions for Stub {}
    impl tasks_server::Tasks for Stub {}
    impl super::longrunning::operations_server::Operations for Stub {}
    let names = [
        services_server::ServicesServer::<Stub>::NAME,
        revisions_server::RevisionsServer::<Stub>::NAME,
        jobs_server::JobsServer::<Stub>::NAME,
        executions_server::ExecutionsServer::<Stub>::NAME,
        tasks_server::TasksServer::<Stub>::NAME,
        super::longrunning::operations_server::OperationsServer::<Stub>::NAME,
    ];
    let want: Vec<&str> = SERVICES.iter().map(|(s, _)| *s).collect();
    assert_eq!(names.as_slice(), want.as_slice());
}

/// Methods and their HTTP bindings in googleapis f8291d2 (the `google.api.http` option, and
/// for Operations Cloud Run's run_v2.yaml): (file, method, verb, path, body).
const ROUTES: &[(&str, &str, &str, &str, Option<&str>)] = &[
    (
        "service",
        "CreateService",
        "post",
        "/v2/{parent=projects/*/locations/*}/services",
        Some("service"),
    ),
    (
        "service",
        "GetService",
        "get",
        "/v2/{name=projects/*/locations/*/services/*}",
        None,
    ),
    (
        "service",
        "ListServices",
        "get",
        "/v2/{parent=projects/*/locations/*}/services",
        None,
    ),
    (
        "service",
        "UpdateService",
        "patch",
        "/v2/{service.name=projects/*/locations/*/services/*}",
        Some("service"),
    ),
    (
        "service",
        "DeleteService",
        "delete",
        "/v2/{name=projects/*/locations/*/services/*}",
        None,
    ),
    (
        "revision",
        "GetRevision",
        "get",
        "/v2/{name=projects/*/locations/*/services/*/revisions/*}",
        None,
    ),
    (
        "revision",
        "ListRevisions",
        "get",
        "/v2/{parent=projects/*/locations/*/services/*}/revisions",
        None,
    ),
    (
        "revision",
        "DeleteRevision",
        "delete",
        "/v2/{name=projects/*/locations/*/services/*/revisions/*}",
        None,
    ),
    (
        "job",
        "CreateJob",
        "post",
        "/v2/{parent=projects/*/locations/*}/jobs",
        Some("job"),
    ),
    (
        "job",
        "GetJob",
        "get",
        "/v2/{name=projects/*/locations/*/jobs/*}",
        None,
    ),
    (
        "job",
        "ListJobs",
        "get",
        "/v2/{parent=projects/*/locations/*}/jobs",
        None,
    ),
    (
        "job",
        "UpdateJob",
        "patch",
        "/v2/{job.name=projects/*/locations/*/jobs/*}",
        Some("job"),
    ),
    (
        "job",
        "DeleteJob",
        "delete",
        "/v2/{name=projects/*/locations/*/jobs/*}",
        None,
    ),
    (
        "job",
        "RunJob",
        "post",
        "/v2/{name=projects/*/locations/*/jobs/*}:run",
        Some("*"),
    ),
    (
        "execution",
        "GetExecution",
        "get",
        "/v2/{name=projects/*/locations/*/jobs/*/executions/*}",
        None,
    ),
    (
        "execution",
        "ListExecutions",
        "get",
        "/v2/{parent=projects/*/locations/*/jobs/*}/executions",
        None,
    ),
    (
        "execution",
        "DeleteExecution",
        "delete",
        "/v2/{name=projects/*/locations/*/jobs/*/executions/*}",
        None,
    ),
    (
        "execution",
        "CancelExecution",
        "post",
        "/v2/{name=projects/*/locations/*/jobs/*/executions/*}:cancel",
        Some("*"),
    ),
    (
        "task",
        "GetTask",
        "get",
        "/v2/{name=projects/*/locations/*/jobs/*/executions/*/tasks/*}",
        None,
    ),
    (
        "task",
        "ListTasks",
        "get",
        "/v2/{parent=projects/*/locations/*/jobs/*/executions/*}/tasks",
        None,
    ),
];

const OPERATION_ROUTES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "GetOperation",
        "get",
        "/v2/{name=projects/*/locations/*/operations/*}",
        None,
    ),
    (
        "ListOperations",
        "get",
        "/v2/{name=projects/*/locations/*}/operations",
        None,
    ),
    (
        "DeleteOperation",
        "delete",
        "/v2/{name=projects/*/locations/*/operations/*}",
        None,
    ),
    (
        "WaitOperation",
        "post",
        "/v2/{name=projects/*/locations/*/operations/*}:wait",
        Some("*"),
    ),
];

fn proto_text(file: &str) -> &'static str {
    match file {
        "service" => include_str!("../../proto/google/cloud/run/v2/service.proto"),
        "revision" => include_str!("../../proto/google/cloud/run/v2/revision.proto"),
        "job" => include_str!("../../proto/google/cloud/run/v2/job.proto"),
        "execution" => include_str!("../../proto/google/cloud/run/v2/execution.proto"),
        "task" => include_str!("../../proto/google/cloud/run/v2/task.proto"),
        other => panic!("no proto file {other}"),
    }
}

/// The text of `rpc Method(...) ... { ... }` up to its closing brace at two spaces.
fn rpc_block<'a>(text: &'a str, method: &str) -> &'a str {
    let start = text
        .find(&format!("  rpc {method}("))
        .unwrap_or_else(|| panic!("rpc {method} missing"));
    let rest = &text[start..];
    let end = rest
        .find("\n  }\n")
        .unwrap_or_else(|| panic!("rpc {method} unterminated"));
    &rest[..end]
}

#[test]
fn http_routes_match_the_published_ones() {
    for (file, method, verb, path, body) in ROUTES {
        let block = rpc_block(proto_text(file), method);
        // the primary binding is the first verb in the option, before any additional_bindings
        let http = block
            .split("option (google.api.http) = {")
            .nth(1)
            .unwrap_or_else(|| panic!("{method} has no google.api.http"));
        let primary = http.split("additional_bindings").next().unwrap_or(http);
        assert!(
            primary.contains(&format!("{verb}: \"{path}\"")),
            "{method}: {verb} {path} in\n{primary}"
        );
        match body {
            Some(body) => assert!(
                primary.contains(&format!("body: \"{body}\"")),
                "{method} body"
            ),
            None => assert!(!primary.contains("body:"), "{method} has no body"),
        }
    }
    let yaml = include_str!("../../proto/google/cloud/run/v2/run_v2.yaml");
    for (method, verb, path, body) in OPERATION_ROUTES {
        let rule = yaml
            .split("- selector: ")
            .find(|rule| rule.starts_with(&format!("google.longrunning.Operations.{method}\n")))
            .unwrap_or_else(|| panic!("no http rule for {method}"));
        assert!(
            rule.contains(&format!("{verb}: '{path}'")),
            "{method}: {rule}"
        );
        assert_eq!(rule.contains("body: '*'"), body.is_some(), "{method} body");
    }
}
