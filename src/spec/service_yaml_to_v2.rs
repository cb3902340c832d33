//! A service.yaml as the Admin API v2's `Service`: the one mapping `runlet serve -f` (then
//! [`super::run_v2`], as the daemon does) and `runlet services replace` (sent to the
//! daemon) share, as Cloud Run maps its v1 resource to v2. Annotations become the fields
//! they configure ([`super::service_yaml_annotations`]); what the YAML shape can get wrong
//! is refused here with the YAML path; the values themselves are checked by
//! [`super::run_v2`], whose field paths [`yaml_path`] turns back into YAML paths.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::service_yaml::{
    ContainerYaml, EnvVarYaml, Metadata, ProbeYaml, ServiceYaml, Traffic, VolumeYaml, FIELD,
};
use super::service_yaml_annotations::{self as ann, Meaning};
use super::{bad, check_name, ServiceSpec, SpecError};
use crate::pb::run_v2::{self as v2, empty_dir_volume_source::Medium, env_var, probe, volume};

/// A service.yaml mapped: the `Service` (its `name` is the caller's to set: the short name
/// is `name`), and the keys accepted with no local effect, for the user to see once.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub name: String,
    pub service: v2::Service,
    pub no_local_effect: Vec<String>,
}

fn refuse(path: impl std::fmt::Display, detail: impl std::fmt::Display) -> SpecError {
    bad(FIELD, format!("{path}: {detail}"))
}

/// The file's `Service`.
pub fn service(y: &ServiceYaml) -> Result<Mapped, SpecError> {
    let name = y
        .metadata
        .name
        .clone()
        .ok_or_else(|| refuse("metadata.name", "is required"))?;
    check_name("metadata.name", &name, 49).map_err(|e| refuse("metadata.name", e.detail))?;
    let mut notes = Vec::new();
    let mut svc = v2::Service {
        client: "runlet".into(),
        client_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    svc.labels = labels(&y.metadata);
    for (k, v) in &y.metadata.annotations {
        let path = format!("metadata.annotations[{k}]");
        match ann::service(k) {
            Meaning::User => {
                svc.annotations.insert(k.clone(), v.clone());
            }
            Meaning::OutputOnly => {}
            Meaning::Refused(why) => return Err(refuse(path, why)),
            Meaning::NoLocalEffect => notes.push(path),
            Meaning::Mapped => match k.as_str() {
                ann::INGRESS => {
                    svc.ingress = ingress(&path, v)? as i32;
                    notes.push(path);
                }
                ann::DESCRIPTION => svc.description = v.clone(),
                ann::SERVICE_MIN_SCALE => {
                    svc.scaling
                        .get_or_insert_with(Default::default)
                        .min_instance_count = count(&path, v)?
                }
                ann::SERVICE_MAX_SCALE => {
                    svc.scaling
                        .get_or_insert_with(Default::default)
                        .max_instance_count = count(&path, v)?
                }
                _ => unreachable!("every mapped service annotation is handled"),
            },
        }
    }
    svc.template = Some(template(y, &mut notes)?);
    svc.traffic = y
        .spec
        .traffic
        .iter()
        .enumerate()
        .map(|(i, t)| traffic(i, t))
        .collect::<Result<_, _>>()?;
    Ok(Mapped {
        name,
        service: svc,
        no_local_effect: notes,
    })
}

/// What `runlet serve -f` runs: the file mapped, then checked and resolved as the daemon
/// does, refusals named by their YAML path.
pub fn service_spec(m: &Mapped, listen: SocketAddr) -> Result<ServiceSpec, SpecError> {
    let revision = match m.service.template.as_ref().map(|t| t.revision.as_str()) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => super::revision_name(&m.name),
    };
    super::run_v2::service_spec(&m.name, &revision, &m.service, listen).map_err(from_v2_error)
}

/// A refusal of [`super::run_v2`] with its field named as the YAML names it.
pub fn from_v2_error(e: SpecError) -> SpecError {
    refuse(yaml_path(e.field), e.detail)
}

/// The YAML path of an Admin API field path (`service.template.containers[0].env` →
/// `spec.template.spec.containers[0].env`).
pub fn yaml_path(v2_field: &str) -> String {
    const TABLE: &[(&str, &str)] = &[
        (
            "service.template.maxInstanceRequestConcurrency",
            "spec.template.spec.containerConcurrency",
        ),
        (
            "service.template.timeout",
            "spec.template.spec.timeoutSeconds",
        ),
        (
            "service.template.scaling.maxInstanceCount",
            "spec.template.metadata.annotations[autoscaling.knative.dev/maxScale]",
        ),
        (
            "service.template.scaling.minInstanceCount",
            "spec.template.metadata.annotations[autoscaling.knative.dev/minScale]",
        ),
        (
            "service.template.sessionAffinity",
            "spec.template.metadata.annotations[run.googleapis.com/sessionAffinity]",
        ),
        ("service.template.labels", "spec.template.metadata.labels"),
        (
            "service.template.annotations",
            "spec.template.metadata.annotations",
        ),
        ("service.template.", "spec.template.spec."),
        ("service.template", "spec.template"),
        ("service.labels", "metadata.labels"),
        ("service.annotations", "metadata.annotations"),
        (
            "service.scaling",
            "metadata.annotations[run.googleapis.com/minScale]",
        ),
        ("service.traffic", "spec.traffic"),
        ("service.", ""),
    ];
    for (from, to) in TABLE {
        if let Some(rest) = v2_field.strip_prefix(from) {
            let rest = rest.replace(".dependsOn", " (run.googleapis.com/container-dependencies)");
            return format!("{to}{rest}");
        }
    }
    v2_field.to_string()
}

fn labels(m: &Metadata) -> BTreeMap<String, String> {
    m.labels
        .iter()
        .filter(|(k, _)| !ann::label_is_output(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn ingress(path: &str, v: &str) -> Result<v2::IngressTraffic, SpecError> {
    Ok(match v {
        "all" => v2::IngressTraffic::All,
        "internal" => v2::IngressTraffic::InternalOnly,
        "internal-and-cloud-load-balancing" => v2::IngressTraffic::InternalLoadBalancer,
        "none" => v2::IngressTraffic::None,
        _ => {
            return Err(refuse(
                path,
                format!("{v:?}: allowed all, internal, internal-and-cloud-load-balancing, none"),
            ))
        }
    })
}

fn count(path: &str, v: &str) -> Result<i32, SpecError> {
    v.parse::<i32>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| refuse(path, format!("{v:?} is not a count (0 or more)")))
}

/// `true` or `false`, in any case: gcloud writes `run.googleapis.com/startup-cpu-boost:
/// 'True'`.
fn boolean(path: &str, v: &str) -> Result<bool, SpecError> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(refuse(path, format!("{v:?}: allowed 'true', 'false'"))),
    }
}

/// The template's annotations that apply to every container.
#[derive(Default)]
struct PerContainer {
    cpu_throttling: Option<bool>,
    startup_cpu_boost: bool,
    depends_on: BTreeMap<String, Vec<String>>,
    /// `run.googleapis.com/secrets`: alias → `projects/P/secrets/S`.
    aliases: BTreeMap<String, String>,
}

fn template(y: &ServiceYaml, notes: &mut Vec<String>) -> Result<v2::RevisionTemplate, SpecError> {
    let tm = &y.spec.template.metadata;
    let ts = &y.spec.template.spec;
    let mut t = v2::RevisionTemplate {
        revision: tm.name.clone().unwrap_or_default(),
        labels: labels(tm),
        ..Default::default()
    };
    let mut per = PerContainer::default();
    for (k, v) in &tm.annotations {
        let path = format!("spec.template.metadata.annotations[{k}]");
        match ann::template(k) {
            Meaning::User => {
                t.annotations.insert(k.clone(), v.clone());
            }
            Meaning::OutputOnly => {}
            Meaning::Refused(why) => return Err(refuse(path, why)),
            Meaning::NoLocalEffect => notes.push(path),
            Meaning::Mapped => match k.as_str() {
                ann::MIN_SCALE => {
                    t.scaling.get_or_insert_with(Default::default).min_instance_count =
                        count(&path, v)?
                }
                ann::MAX_SCALE => {
                    t.scaling.get_or_insert_with(Default::default).max_instance_count =
                        count(&path, v)?
                }
                ann::CPU_THROTTLING => per.cpu_throttling = Some(boolean(&path, v)?),
                ann::STARTUP_CPU_BOOST => per.startup_cpu_boost = boolean(&path, v)?,
                ann::SESSION_AFFINITY => t.session_affinity = boolean(&path, v)?,
                ann::EXECUTION_ENVIRONMENT => {
                    t.execution_environment = match v.as_str() {
                        "gen1" => v2::ExecutionEnvironment::Gen1,
                        "gen2" => v2::ExecutionEnvironment::Gen2,
                        _ => return Err(refuse(path, format!("{v:?}: allowed gen1, gen2"))),
                    } as i32
                }
                ann::CONTAINER_DEPENDENCIES => {
                    per.depends_on = serde_json::from_str(v).map_err(|_| {
                        refuse(
                            &path,
                            format!("{v:?} is not a JSON object of container names to lists of names, e.g. {{\"app\":[\"proxy\"]}}"),
                        )
                    })?
                }
                ann::SECRETS => per.aliases = aliases(&path, v)?,
                _ => unreachable!("every mapped template annotation is handled"),
            },
        }
    }
    if let Some(n) = ts.container_concurrency {
        t.max_instance_request_concurrency = i32::try_from(n).map_err(|_| {
            refuse(
                "spec.template.spec.containerConcurrency",
                format!("{n} is out of range: allowed 1 to 1000"),
            )
        })?;
    }
    if let Some(s) = ts.timeout_seconds {
        t.timeout = Some(pbjson_types::Duration {
            seconds: s,
            nanos: 0,
        });
    }
    t.service_account = ts.service_account_name.clone().unwrap_or_default();
    if ts.containers.is_empty() {
        return Err(refuse(
            "spec.template.spec.containers",
            "one container is required",
        ));
    }
    let with_ports: Vec<usize> = (0..ts.containers.len())
        .filter(|i| !ts.containers[*i].ports.is_empty())
        .collect();
    if ts.containers.len() > 1 {
        match with_ports.as_slice() {
            [_] => {}
            [] => {
                return Err(refuse(
                    "spec.template.spec.containers",
                    "with several containers, the ingress container must declare its port (ports: [{containerPort: N}])",
                ))
            }
            [_, second, ..] => {
                return Err(refuse(
                    format!("spec.template.spec.containers[{second}].ports"),
                    "only the ingress container may declare a port",
                ))
            }
        }
    }
    let names: Vec<&str> = ts
        .containers
        .iter()
        .filter_map(|c| c.name.as_deref())
        .collect();
    for (from, deps) in &per.depends_on {
        for n in std::iter::once(from).chain(deps) {
            if !names.contains(&n.as_str()) {
                return Err(refuse(
                    format!(
                        "spec.template.metadata.annotations[{}]",
                        ann::CONTAINER_DEPENDENCIES
                    ),
                    format!(
                        "{n} is not the name of a container (named: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    t.containers = ts
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| container(i, c, &per))
        .collect::<Result<_, _>>()?;
    t.volumes = ts
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| volume(i, v, &per.aliases))
        .collect::<Result<_, _>>()?;
    Ok(t)
}

/// `ALIAS:projects/P/secrets/S[,...]`.
fn aliases(path: &str, v: &str) -> Result<BTreeMap<String, String>, SpecError> {
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            item.trim()
                .split_once(':')
                .filter(|(a, s)| !a.is_empty() && s.starts_with("projects/"))
                .map(|(a, s)| (a.to_string(), s.to_string()))
                .ok_or_else(|| {
                    refuse(
                        path,
                        format!("{item:?} is not ALIAS:projects/PROJECT/secrets/SECRET"),
                    )
                })
        })
        .collect()
}

fn secret_name(aliases: &BTreeMap<String, String>, name: &str) -> String {
    aliases
        .get(name)
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

fn container(i: usize, c: &ContainerYaml, per: &PerContainer) -> Result<v2::Container, SpecError> {
    let at = format!("spec.template.spec.containers[{i}]");
    let name = c.name.clone().unwrap_or_default();
    let resources =
        if c.resources.is_some() || per.cpu_throttling.is_some() || per.startup_cpu_boost {
            Some(v2::ResourceRequirements {
                limits: c
                    .resources
                    .iter()
                    .flat_map(|r| r.limits.iter())
                    .map(|(k, q)| (k.clone(), q.0.clone()))
                    .collect(),
                // Cloud Run's default: CPU only during requests.
                cpu_idle: per.cpu_throttling.unwrap_or(true),
                startup_cpu_boost: per.startup_cpu_boost,
            })
        } else {
            None
        };
    let mut ports = Vec::new();
    for (j, p) in c.ports.iter().enumerate() {
        let path = format!("{at}.ports[{j}]");
        if let Some(proto) = p.protocol.as_deref().filter(|p| *p != "TCP") {
            return Err(refuse(path, format!("protocol {proto:?}: allowed TCP")));
        }
        let port = match p.container_port {
            None => 0,
            Some(n) => i32::try_from(n)
                .ok()
                .filter(|n| (1..=65535).contains(n))
                .ok_or_else(|| refuse(&path, format!("containerPort {n}: allowed 1 to 65535")))?,
        };
        ports.push(v2::ContainerPort {
            name: p.name.clone().unwrap_or_default(),
            container_port: port,
        });
    }
    Ok(v2::Container {
        name: name.clone(),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c
            .env
            .iter()
            .map(|e| env(&at, e, &per.aliases))
            .collect::<Result<_, _>>()?,
        resources,
        ports,
        volume_mounts: c
            .volume_mounts
            .iter()
            .map(|m| v2::VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                sub_path: m.sub_path.clone().unwrap_or_default(),
            })
            .collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        startup_probe: c
            .startup_probe
            .as_ref()
            .map(|p| probe(&format!("{at}.startupProbe"), p))
            .transpose()?,
        liveness_probe: c
            .liveness_probe
            .as_ref()
            .map(|p| probe(&format!("{at}.livenessProbe"), p))
            .transpose()?,
        depends_on: per.depends_on.get(&name).cloned().unwrap_or_default(),
        ..Default::default()
    })
}

fn env(
    at: &str,
    e: &EnvVarYaml,
    aliases: &BTreeMap<String, String>,
) -> Result<v2::EnvVar, SpecError> {
    let values = match (&e.value, &e.value_from) {
        (Some(_), Some(_)) => {
            return Err(refuse(
                format!("{at}.env[{}]", e.name),
                "give value or valueFrom, not both",
            ))
        }
        (Some(v), None) => Some(env_var::Values::Value(v.clone())),
        (None, None) => None,
        (None, Some(src)) => Some(env_var::Values::ValueSource(v2::EnvVarSource {
            secret_key_ref: Some(v2::SecretKeySelector {
                secret: secret_name(aliases, &src.secret_key_ref.name),
                version: src.secret_key_ref.key.clone(),
            }),
        })),
    };
    Ok(v2::EnvVar {
        name: e.name.clone(),
        values,
    })
}

/// A probe as the API spells it (job YAML's sidecars map theirs with it too); `path`
/// names it in a refusal.
pub(crate) fn probe(path: &str, p: &ProbeYaml) -> Result<v2::Probe, SpecError> {
    let kinds = [
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.grpc.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(refuse(path, "give one of httpGet, tcpSocket, grpc"));
    }
    let probe_type = if let Some(h) = &p.http_get {
        Some(probe::ProbeType::HttpGet(v2::HttpGetAction {
            path: h.path.clone().unwrap_or_default(),
            port: h.port.unwrap_or(0),
            http_headers: h
                .http_headers
                .iter()
                .map(|h| v2::HttpHeader {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
        }))
    } else if let Some(t) = &p.tcp_socket {
        Some(probe::ProbeType::TcpSocket(v2::TcpSocketAction {
            port: t.port.unwrap_or(0),
        }))
    } else {
        p.grpc.as_ref().map(|g| {
            probe::ProbeType::Grpc(v2::GrpcAction {
                port: g.port.unwrap_or(0),
                service: g.service.clone().unwrap_or_default(),
            })
        })
    };
    Ok(v2::Probe {
        initial_delay_seconds: p.initial_delay_seconds.unwrap_or(0),
        timeout_seconds: p.timeout_seconds.unwrap_or(0),
        period_seconds: p.period_seconds.unwrap_or(0),
        failure_threshold: p.failure_threshold.unwrap_or(0),
        probe_type,
    })
}

fn volume(
    i: usize,
    v: &VolumeYaml,
    aliases: &BTreeMap<String, String>,
) -> Result<v2::Volume, SpecError> {
    let path = format!("spec.template.spec.volumes[{i}]");
    let volume_type = match (&v.empty_dir, &v.secret) {
        (Some(e), None) => {
            match e.medium.as_deref() {
                None | Some("Memory") => {}
                Some(m) => {
                    return Err(refuse(
                        format!("{path}.emptyDir.medium"),
                        format!("{m:?}: allowed Memory (runlet's emptyDir volumes are in memory)"),
                    ))
                }
            }
            volume::VolumeType::EmptyDir(v2::EmptyDirVolumeSource {
                medium: Medium::Memory as i32,
                size_limit: e
                    .size_limit
                    .as_ref()
                    .map(|q| q.0.clone())
                    .unwrap_or_default(),
            })
        }
        (None, Some(s)) => volume::VolumeType::Secret(v2::SecretVolumeSource {
            secret: secret_name(aliases, &s.secret_name),
            items: s
                .items
                .iter()
                .map(|it| v2::VersionToPath {
                    path: it.path.clone(),
                    version: it.key.clone(),
                    mode: it.mode.unwrap_or(0),
                })
                .collect(),
            default_mode: s.default_mode.unwrap_or(0),
        }),
        _ => {
            return Err(refuse(
                path,
                format!("volume {}: give one of emptyDir, secret", v.name),
            ))
        }
    };
    Ok(v2::Volume {
        name: v.name.clone(),
        volume_type: Some(volume_type),
    })
}

fn traffic(i: usize, t: &Traffic) -> Result<v2::TrafficTarget, SpecError> {
    let latest = t.latest_revision.unwrap_or(false);
    let revision = t.revision_name.clone().unwrap_or_default();
    // Exactly one of the two.
    let named = !revision.is_empty();
    if latest == named {
        return Err(refuse(
            format!("spec.traffic[{i}]"),
            "give latestRevision: true or a revisionName",
        ));
    }
    Ok(v2::TrafficTarget {
        r#type: if latest {
            v2::TrafficTargetAllocationType::Latest
        } else {
            v2::TrafficTargetAllocationType::Revision
        } as i32,
        revision,
        percent: t.percent.unwrap_or(0),
        tag: t.tag.clone().unwrap_or_default(),
    })
}
