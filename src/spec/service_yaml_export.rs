//! The Admin API v2's `Service` written as the service.yaml `gcloud run services describe
//! --format export` writes: status, uid, generation and timestamps left out, the platform's
//! annotations for what the service sets. The inverse of [`super::service_yaml_to_v2`]:
//! export → replace → export gives the same text and the same template (tested there).
//!
//! Cloud Run fills its defaults into what it returns (containerConcurrency 80, 300 s,
//! 1 CPU, 512Mi, ...); runlet's daemon keeps unset fields unset, so its export lists only
//! what the service sets and replacing a service with its own export never makes a
//! revision.

use std::collections::BTreeMap;

use super::service_yaml::{
    ContainerYaml, EmptyDirYaml, EnvVarSource, EnvVarYaml, GrpcYaml, HttpGetYaml, HttpHeaderYaml,
    KeyToPath, Metadata, PortOnly, PortYaml, ProbeYaml, Quantity, ResourcesYaml, RevisionSpec,
    SecretKeyRef, SecretVolumeYaml, ServiceSpecYaml, ServiceYaml, Template, Traffic,
    VolumeMountYaml, VolumeYaml, API_VERSION, KIND,
};
use super::service_yaml_annotations as ann;
use crate::pb::run_v2::{self as v2, env_var, probe, volume};

/// `projects/P/locations/R/services/S` → (P, R, S); a bare name is its own S.
fn parts(name: &str) -> (Option<&str>, Option<&str>, &str) {
    let seg: Vec<&str> = name.split('/').collect();
    match seg.as_slice() {
        ["projects", p, "locations", r, "services", s] => (Some(p), Some(r), s),
        _ => (None, None, name),
    }
}

/// The service as a service.yaml.
pub fn export(svc: &v2::Service) -> ServiceYaml {
    let (project, region, name) = parts(&svc.name);
    let mut labels = svc.labels.clone();
    if let Some(r) = region {
        labels.insert(ann::LOCATION_LABEL.into(), r.into());
    }
    let mut annotations = svc.annotations.clone();
    let ingress = match v2::IngressTraffic::try_from(svc.ingress) {
        Ok(v2::IngressTraffic::InternalOnly) => "internal",
        Ok(v2::IngressTraffic::InternalLoadBalancer) => "internal-and-cloud-load-balancing",
        Ok(v2::IngressTraffic::None) => "none",
        // Unset means all, and Cloud Run always writes it.
        _ => "all",
    };
    annotations.insert(ann::INGRESS.into(), ingress.into());
    if !svc.description.is_empty() {
        annotations.insert(ann::DESCRIPTION.into(), svc.description.clone());
    }
    if let Some(s) = &svc.scaling {
        if s.min_instance_count != 0 {
            annotations.insert(
                ann::SERVICE_MIN_SCALE.into(),
                s.min_instance_count.to_string(),
            );
        }
        if s.max_instance_count != 0 {
            annotations.insert(
                ann::SERVICE_MAX_SCALE.into(),
                s.max_instance_count.to_string(),
            );
        }
    }
    let t = svc.template.clone().unwrap_or_default();
    let mut traffic: Vec<Traffic> = svc.traffic.iter().map(traffic_of).collect();
    if traffic.is_empty() {
        traffic.push(Traffic {
            latest_revision: Some(true),
            percent: Some(100),
            ..Default::default()
        });
    }
    ServiceYaml {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: Metadata {
            name: Some(name.to_string()),
            namespace: project.map(str::to_string),
            labels,
            annotations,
            ..Default::default()
        },
        spec: ServiceSpecYaml {
            template: template_of(&t),
            traffic,
        },
        status: None,
    }
}

fn template_of(t: &v2::RevisionTemplate) -> Template {
    let mut annotations = t.annotations.clone();
    if let Some(s) = &t.scaling {
        if s.min_instance_count != 0 {
            annotations.insert(ann::MIN_SCALE.into(), s.min_instance_count.to_string());
        }
        if s.max_instance_count != 0 {
            annotations.insert(ann::MAX_SCALE.into(), s.max_instance_count.to_string());
        }
    }
    if let Some(r) = t.containers.iter().find_map(|c| c.resources.as_ref()) {
        annotations.insert(ann::CPU_THROTTLING.into(), r.cpu_idle.to_string());
    }
    if t.containers
        .iter()
        .any(|c| c.resources.as_ref().is_some_and(|r| r.startup_cpu_boost))
    {
        annotations.insert(ann::STARTUP_CPU_BOOST.into(), "true".into());
    }
    match v2::ExecutionEnvironment::try_from(t.execution_environment) {
        Ok(v2::ExecutionEnvironment::Gen1) => {
            annotations.insert(ann::EXECUTION_ENVIRONMENT.into(), "gen1".into());
        }
        Ok(v2::ExecutionEnvironment::Gen2) => {
            annotations.insert(ann::EXECUTION_ENVIRONMENT.into(), "gen2".into());
        }
        _ => {}
    }
    let deps: BTreeMap<&str, &Vec<String>> = t
        .containers
        .iter()
        .filter(|c| !c.depends_on.is_empty())
        .map(|c| (c.name.as_str(), &c.depends_on))
        .collect();
    if !deps.is_empty() {
        annotations.insert(
            ann::CONTAINER_DEPENDENCIES.into(),
            serde_json::to_string(&deps).unwrap_or_default(),
        );
    }
    if t.session_affinity {
        annotations.insert(ann::SESSION_AFFINITY.into(), "true".into());
    }
    let secs = t.timeout.as_ref().map(|d| d.seconds);
    Template {
        metadata: Metadata {
            name: (!t.revision.is_empty()).then(|| t.revision.clone()),
            labels: t.labels.clone(),
            annotations,
            ..Default::default()
        },
        spec: RevisionSpec {
            container_concurrency: (t.max_instance_request_concurrency != 0)
                .then_some(i64::from(t.max_instance_request_concurrency)),
            timeout_seconds: secs,
            service_account_name: (!t.service_account.is_empty())
                .then(|| t.service_account.clone()),
            containers: t.containers.iter().map(container_of).collect(),
            volumes: t.volumes.iter().map(volume_of).collect(),
        },
    }
}

fn container_of(c: &v2::Container) -> ContainerYaml {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    ContainerYaml {
        name: opt(&c.name),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c
            .env
            .iter()
            .map(|e| match &e.values {
                Some(env_var::Values::ValueSource(src)) => EnvVarYaml {
                    name: e.name.clone(),
                    value: None,
                    value_from: src.secret_key_ref.as_ref().map(|r| EnvVarSource {
                        secret_key_ref: SecretKeyRef {
                            name: r.secret.clone(),
                            key: r.version.clone(),
                        },
                    }),
                },
                Some(env_var::Values::Value(v)) => EnvVarYaml {
                    name: e.name.clone(),
                    value: Some(v.clone()),
                    value_from: None,
                },
                None => EnvVarYaml {
                    name: e.name.clone(),
                    ..Default::default()
                },
            })
            .collect(),
        ports: c
            .ports
            .iter()
            .map(|p| PortYaml {
                name: opt(&p.name),
                container_port: (p.container_port != 0).then_some(i64::from(p.container_port)),
                protocol: None,
            })
            .collect(),
        resources: c
            .resources
            .as_ref()
            .filter(|r| !r.limits.is_empty())
            .map(|r| ResourcesYaml {
                limits: r
                    .limits
                    .iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect(),
            }),
        volume_mounts: c
            .volume_mounts
            .iter()
            .map(|m| VolumeMountYaml {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                sub_path: opt(&m.sub_path),
                read_only: None,
            })
            .collect(),
        startup_probe: c.startup_probe.as_ref().map(probe_of),
        liveness_probe: c.liveness_probe.as_ref().map(probe_of),
        working_dir: opt(&c.working_dir),
    }
}

/// A probe in the YAML shape (job YAML's sidecars write theirs with it too).
pub(crate) fn probe_of(p: &v2::Probe) -> ProbeYaml {
    let nz = |n: i32| (n != 0).then_some(n);
    let mut y = ProbeYaml {
        initial_delay_seconds: nz(p.initial_delay_seconds),
        timeout_seconds: nz(p.timeout_seconds),
        period_seconds: nz(p.period_seconds),
        failure_threshold: nz(p.failure_threshold),
        ..Default::default()
    };
    match &p.probe_type {
        Some(probe::ProbeType::HttpGet(h)) => {
            y.http_get = Some(HttpGetYaml {
                path: (!h.path.is_empty()).then(|| h.path.clone()),
                port: nz(h.port),
                http_headers: h
                    .http_headers
                    .iter()
                    .map(|h| HttpHeaderYaml {
                        name: h.name.clone(),
                        value: h.value.clone(),
                    })
                    .collect(),
            })
        }
        Some(probe::ProbeType::TcpSocket(t)) => y.tcp_socket = Some(PortOnly { port: nz(t.port) }),
        Some(probe::ProbeType::Grpc(g)) => {
            y.grpc = Some(GrpcYaml {
                port: nz(g.port),
                service: (!g.service.is_empty()).then(|| g.service.clone()),
            })
        }
        None => {}
    }
    y
}

fn volume_of(v: &v2::Volume) -> VolumeYaml {
    let mut y = VolumeYaml {
        name: v.name.clone(),
        ..Default::default()
    };
    match &v.volume_type {
        Some(volume::VolumeType::EmptyDir(e)) => {
            y.empty_dir = Some(EmptyDirYaml {
                medium: Some("Memory".into()),
                size_limit: (!e.size_limit.is_empty()).then(|| Quantity(e.size_limit.clone())),
            })
        }
        Some(volume::VolumeType::Secret(s)) => {
            y.secret = Some(SecretVolumeYaml {
                secret_name: s.secret.clone(),
                items: s
                    .items
                    .iter()
                    .map(|it| KeyToPath {
                        key: it.version.clone(),
                        path: it.path.clone(),
                        mode: (it.mode != 0).then_some(it.mode),
                    })
                    .collect(),
                default_mode: (s.default_mode != 0).then_some(s.default_mode),
            })
        }
        // Other kinds are refused at the door; nothing else can be stored.
        _ => {}
    }
    y
}

fn traffic_of(t: &v2::TrafficTarget) -> Traffic {
    let latest = t.r#type == v2::TrafficTargetAllocationType::Latest as i32;
    Traffic {
        latest_revision: latest.then_some(true),
        revision_name: (!t.revision.is_empty()).then(|| t.revision.clone()),
        percent: Some(t.percent),
        tag: (!t.tag.is_empty()).then(|| t.tag.clone()),
        url: None,
    }
}
