//! A Cloud Run `service.yaml`: the Knative `serving.knative.dev/v1` `Service` that `gcloud
//! run services describe --format export` writes and `gcloud run services replace` reads,
//! as serde types, and [`parse`].
//!
//! The types hold the subset runlet maps; every struct denies unknown fields, so a field
//! runlet does not know is refused with its YAML path and the fields allowed there (serde
//! lists them). Output-only parts an export or a `describe` can carry (`status`,
//! `metadata.uid`, ...) are accepted and ignored. What each field means is decided in
//! [`super::service_yaml_to_v2`] (YAML → the Admin API's `Service`, the one mapping both
//! `runlet serve -f` and `runlet services replace` use) and written back by
//! [`super::service_yaml_export`]; annotations are sorted in
//! [`super::service_yaml_annotations`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{bad, SpecError};

pub const API_VERSION: &str = "serving.knative.dev/v1";
pub const KIND: &str = "Service";

type Map = BTreeMap<String, String>;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceYaml {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ServiceSpecYaml,
    /// Output only (a `describe --format yaml` carries it; an export does not): ignored.
    #[serde(default, skip_serializing)]
    pub status: Option<serde_yaml_ng::Value>,
}

/// `metadata` of the service and of its template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The project (number) on Cloud Run: runlet takes the project from `--project`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub labels: Map,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map,
    // Output only, ignored (gcloud's export removes them; a describe keeps them).
    #[serde(default, skip_serializing)]
    pub uid: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing)]
    pub generation: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing)]
    pub resource_version: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing)]
    pub self_link: Option<serde_yaml_ng::Value>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<serde_yaml_ng::Value>,
}

/// `spec`: the revision template and the traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpecYaml {
    pub template: Template,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<Traffic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Template {
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: RevisionSpec,
}

/// `spec.template.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevisionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    pub containers: Vec<ContainerYaml>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeYaml>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVarYaml>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortYaml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesYaml>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMountYaml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<ProbeYaml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbeYaml>,
    /// Mapped, then refused by the template's check (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// A value, or a secret's version (`valueFrom.secretKeyRef`: `name` the secret, or an
/// alias from `run.googleapis.com/secrets`; `key` the version).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarYaml {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarSource {
    pub secret_key_ref: SecretKeyRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    #[serde(default)]
    pub key: String,
}

/// `name`: `http1` or `h2c` (end-to-end HTTP/2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i64>,
    /// Only `TCP` (Knative's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourcesYaml {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeMountYaml {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// Secret mounts are read-only whatever it says; accepted for Knative's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetYaml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<PortOnly>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcYaml>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpGetYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeaderYaml>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpHeaderYaml {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortOnly {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// A volume: in-memory `emptyDir` or `secret` (anything else is an unknown field, refused
/// naming the two allowed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeYaml {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirYaml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeYaml>,
}

/// `medium: Memory` (the only medium Cloud Run has), `sizeLimit` a quantity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmptyDirYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretVolumeYaml {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
}

/// `key`: the secret's version; `path`: the file under the mount path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i32>,
}

/// `spec.traffic[]`: runlet serves the latest revision only (others are refused by the
/// template's check).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Traffic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Output only (a describe's `status.traffic` shape): ignored.
    #[serde(default, skip_serializing)]
    pub url: Option<serde_yaml_ng::Value>,
}

/// A Kubernetes quantity: YAML writes `cpu: 1` as a number and `cpu: 500m` as a string.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            U(u64),
            F(f64),
        }
        match Raw::deserialize(d) {
            Ok(Raw::S(s)) => Ok(Quantity(s)),
            Ok(Raw::U(n)) => Ok(Quantity(n.to_string())),
            Ok(Raw::F(f)) => Ok(Quantity(f.to_string())),
            Err(_) => Err(serde::de::Error::custom(
                "expected a quantity (e.g. 512Mi, 1, 500m)",
            )),
        }
    }
}

/// Refusals of a service.yaml name the field by its YAML path in the detail.
pub const FIELD: &str = "service YAML";

/// Parses a service.yaml; an unknown field or a wrong type is refused with its path.
pub fn parse(text: &str) -> Result<ServiceYaml, SpecError> {
    let svc: ServiceYaml = serde_yaml_ng::from_str(text).map_err(|e| bad(FIELD, e.to_string()))?;
    if svc.api_version != API_VERSION {
        return Err(bad(
            FIELD,
            format!(
                "apiVersion: {:?} is not supported: use {API_VERSION}",
                svc.api_version
            ),
        ));
    }
    if svc.kind != KIND {
        return Err(bad(
            FIELD,
            format!("kind: {:?} is not supported: use {KIND}", svc.kind),
        ));
    }
    Ok(svc)
}

/// The file as YAML text.
pub fn to_text(svc: &ServiceYaml) -> String {
    // Plain data: serialising it cannot fail.
    serde_yaml_ng::to_string(svc).unwrap_or_default()
}
