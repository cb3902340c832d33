//! The Admin API v2's `Service` (its `RevisionTemplate`) as a [`ServiceSpec`]: what the
//! daemon runs for a revision. Every field runlet honours is mapped; a field it cannot honour
//! is refused, naming it, where ignoring it would change behaviour (a VPC
//! connector, a traffic split), and accepted where Cloud Run treats it as a hint
//! (`startupCpuBoost`, `serviceAccount`). Defaults are Cloud Run's.

use std::net::SocketAddr;
use std::time::Duration;

use super::probe::{Action, Probe};
use super::{
    bad, check_env_name, cpu, in_range, memory, secrets_v2, ServiceSpec, SpecError, RESERVED_ENV,
};
use crate::image::reference;
use crate::pb::run_v2::{self as v2, env_var, probe, volume};

use super::defaults::{self, IDLE_TIMEOUT, STARTUP_TIMEOUT, TIMEOUT as DEFAULT_TIMEOUT};

/// The spec of revision `revision` of service `name` (its short id), from the resource.
pub fn service_spec(
    name: &str,
    revision: &str,
    svc: &v2::Service,
    listen: SocketAddr,
) -> Result<ServiceSpec, SpecError> {
    check_service(svc)?;
    let t = svc
        .template
        .as_ref()
        .ok_or_else(|| bad("service.template", "is required"))?;
    check_template(t)?;
    let c = match t.containers.as_slice() {
        [c] => c,
        [] => {
            return Err(bad(
                "service.template.containers",
                "one container is required",
            ))
        }
        _ => {
            return Err(bad(
                "service.template.containers",
                "more than one container (sidecars) is not supported yet: give one",
            ))
        }
    };
    check_container(c)?;
    if c.image.is_empty() {
        return Err(bad("service.template.containers[0].image", "is required"));
    }
    let image = reference::normalize(&c.image)
        .map_err(|e| bad("service.template.containers[0].image", e.to_string()))?;
    let (port, use_http2) = port(c)?;
    let (memory_bytes, cpu_count, cpu_throttling) = resources(c)?;
    let (min_instances, max_instances) = scaling(svc, t)?;
    let concurrency = match t.max_instance_request_concurrency {
        0 => defaults::concurrency(cpu_count),
        n => in_range("service.template.maxInstanceRequestConcurrency", n, 1, 1000)? as usize,
    };
    let timeout = match &t.timeout {
        None => DEFAULT_TIMEOUT,
        Some(d) => {
            let secs = d.seconds as f64 + d.nanos as f64 / 1e9;
            in_range("service.template.timeout", secs, 1.0, 3600.0)?;
            Duration::from_secs_f64(secs)
        }
    };
    let probe =
        |field, p: &Option<v2::Probe>| p.as_ref().map(|p| probe(field, p, port)).transpose();
    let list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    Ok(ServiceSpec {
        name: name.to_string(),
        revision: revision.to_string(),
        image,
        port,
        listen,
        env: env(c)?,
        command: list(&c.command),
        args: list(&c.args),
        memory_bytes,
        cpu: cpu_count,
        concurrency,
        timeout,
        min_instances,
        max_instances,
        idle_timeout: IDLE_TIMEOUT,
        startup_timeout: STARTUP_TIMEOUT,
        use_http2,
        cpu_throttling,
        startup_probe: probe(
            "service.template.containers[0].startupProbe",
            &c.startup_probe,
        )?,
        liveness_probe: probe(
            "service.template.containers[0].livenessProbe",
            &c.liveness_probe,
        )?,
        volumes: volumes(t, c, memory_bytes)?,
        secrets: {
            let b = secrets_v2::bindings(
                SECRET_FIELDS,
                secrets_v2::project_of(&svc.name),
                &c.env,
                &t.volumes,
                &c.volume_mounts,
            )?;
            b.check("service.template.containers[0]", &env(c)?)?;
            b
        },
        sidecars: Default::default(),
        execution_environment: super::ExecutionEnvironment::from_v2(
            "service.template.executionEnvironment",
            t.execution_environment,
        )?,
    })
}

const SECRET_FIELDS: secrets_v2::Fields = secrets_v2::Fields {
    env: "service.template.containers[0].env",
    volumes: "service.template.volumes",
    mounts: "service.template.containers[0].volumeMounts",
};

/// Label and annotation keys under these prefixes are the platform's, refused from users.
const RESERVED_PREFIXES: &[&str] = &[
    "run.googleapis.com",
    "cloud.googleapis.com",
    "serving.knative.dev",
    "autoscaling.knative.dev",
];

pub(crate) fn check_keys<'a>(
    field: &'static str,
    keys: impl Iterator<Item = &'a String>,
) -> Result<(), SpecError> {
    for k in keys {
        let prefix = k.split_once('/').map_or("", |(p, _)| p);
        if RESERVED_PREFIXES.contains(&prefix) {
            return Err(bad(
                field,
                format!(
                    "{k:?} is under a reserved prefix ({}); these are set by the platform",
                    RESERVED_PREFIXES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Service-level settings runlet cannot honour.
fn check_service(svc: &v2::Service) -> Result<(), SpecError> {
    check_keys("service.labels", svc.labels.keys())?;
    check_keys("service.annotations", svc.annotations.keys())?;
    if svc.description.chars().count() > 512 {
        return Err(bad("service.description", "is longer than 512 characters"));
    }
    for (i, t) in svc.traffic.iter().enumerate() {
        let latest = t.r#type == v2::TrafficTargetAllocationType::Latest as i32;
        if !(latest && t.percent == 100 && t.tag.is_empty()) || i > 0 {
            return Err(bad(
                "service.traffic",
                "traffic splitting and tags are not supported yet; allowed: empty, or one target of type LATEST with percent 100",
            ));
        }
    }
    Ok(())
}

fn check_template(t: &v2::RevisionTemplate) -> Result<(), SpecError> {
    check_keys("service.template.labels", t.labels.keys())?;
    check_keys("service.template.annotations", t.annotations.keys())?;
    if t.vpc_access.is_some() {
        return Err(bad(
            "service.template.vpcAccess",
            "VPC access is not available on one machine: instances reach the host's network through NAT; leave it unset",
        ));
    }
    if !t.encryption_key.is_empty() {
        return Err(bad(
            "service.template.encryptionKey",
            "customer-managed encryption keys are not supported; leave it unset",
        ));
    }
    if t.session_affinity {
        return Err(bad(
            "service.template.sessionAffinity",
            "session affinity is not supported yet; leave it false",
        ));
    }
    if t.node_selector.is_some() {
        return Err(bad(
            "service.template.nodeSelector",
            "GPU node selection is not supported; leave it unset",
        ));
    }
    Ok(())
}

/// Container fields runlet cannot honour yet.
fn check_container(c: &v2::Container) -> Result<(), SpecError> {
    let refuse = |field, what: &str| {
        Err(bad(
            field,
            format!("{what} is not supported yet; leave it unset"),
        ))
    };
    if !c.working_dir.is_empty() {
        return refuse(
            "service.template.containers[0].workingDir",
            "a working directory",
        );
    }
    if !c.depends_on.is_empty() {
        return refuse(
            "service.template.containers[0].dependsOn",
            "container dependencies",
        );
    }
    if c.readiness_probe.is_some() {
        return refuse(
            "service.template.containers[0].readinessProbe",
            "a readiness probe",
        );
    }
    Ok(())
}

/// The ingress port and whether it speaks h2c: `ports[0]`, default 8080 / http1.
fn port(c: &v2::Container) -> Result<(u16, bool), SpecError> {
    const FIELD: &str = "service.template.containers[0].ports";
    match c.ports.as_slice() {
        [] => Ok((defaults::PORT, false)),
        [p] => {
            let port = match p.container_port {
                0 => defaults::PORT,
                n => in_range(FIELD, n, 1, 65535)? as u16,
            };
            let h2 = match p.name.as_str() {
                "" | "http1" => false,
                "h2c" => true,
                other => {
                    return Err(bad(
                        FIELD,
                        format!("name {other:?} is not allowed: allowed http1, h2c"),
                    ))
                }
            };
            Ok((port, h2))
        }
        _ => Err(bad(FIELD, "at most one port may be given")),
    }
}

/// (memory bytes, CPUs, CPU throttled outside requests). Without `resources`, Cloud Run's
/// defaults: 512Mi, 1 CPU, CPU only during requests.
fn resources(c: &v2::Container) -> Result<(u64, f64, bool), SpecError> {
    let Some(r) = &c.resources else {
        return Ok((defaults::MEMORY, defaults::CPU, true));
    };
    let mut mem = defaults::MEMORY;
    let mut cpus = defaults::CPU;
    for (k, v) in &r.limits {
        match k.as_str() {
            "memory" => mem = memory("service.template.containers[0].resources.limits.memory", v)?,
            "cpu" => cpus = cpu("service.template.containers[0].resources.limits.cpu", v)?,
            other => {
                return Err(bad(
                    "service.template.containers[0].resources.limits",
                    format!("{other:?} is not supported: allowed cpu, memory"),
                ))
            }
        }
    }
    Ok((mem, cpus, r.cpu_idle))
}

/// (min, max) instances: the revision's scaling, raised by the service's minimum; manual
/// scaling fixes both.
fn scaling(svc: &v2::Service, t: &v2::RevisionTemplate) -> Result<(usize, usize), SpecError> {
    let (mut min, mut max) = match &t.scaling {
        None => (0, defaults::MAX_INSTANCES as i32),
        Some(s) => (
            s.min_instance_count,
            if s.max_instance_count == 0 {
                defaults::MAX_INSTANCES as i32
            } else {
                s.max_instance_count
            },
        ),
    };
    if let Some(s) = &svc.scaling {
        if s.scaling_mode == v2::service_scaling::ScalingMode::Manual as i32 {
            let n = in_range(
                "service.scaling.manualInstanceCount",
                s.manual_instance_count.unwrap_or(0),
                0,
                1000,
            )?;
            (min, max) = (n, n.max(1));
        } else {
            min = min.max(s.min_instance_count);
            if s.max_instance_count > 0 {
                max = max.min(s.max_instance_count);
            }
        }
    }
    let max = in_range("service.template.scaling.maxInstanceCount", max, 1, 1000)?;
    let min = in_range("service.template.scaling.minInstanceCount", min, 0, max)?;
    Ok((min as usize, max as usize))
}

fn env(c: &v2::Container) -> Result<Vec<(String, String)>, SpecError> {
    const FIELD: &str = "service.template.containers[0].env";
    let mut out: Vec<(String, String)> = Vec::new();
    for e in &c.env {
        check_env_name(FIELD, &e.name)?;
        if RESERVED_ENV.contains(&e.name.as_str()) {
            return Err(bad(
                FIELD,
                format!(
                    "{} is reserved: runlet sets it (reserved: {})",
                    e.name,
                    RESERVED_ENV.join(", ")
                ),
            ));
        }
        let value = match &e.values {
            None => String::new(),
            Some(env_var::Values::Value(v)) => v.clone(),
            // A secret's reference: the container's secrets (see `secrets_v2`).
            Some(env_var::Values::ValueSource(_)) => continue,
        };
        match out.iter_mut().find(|(k, _)| *k == e.name) {
            Some(slot) => slot.1 = value,
            None => out.push((e.name.clone(), value)),
        }
    }
    Ok(out)
}

fn probe(field: &'static str, p: &v2::Probe, port: u16) -> Result<Probe, SpecError> {
    let secs =
        |what: &str, v: i32, default: u64, lo: i32, hi: i32| -> Result<Duration, SpecError> {
            if v == 0 {
                return Ok(Duration::from_secs(default));
            }
            if v < lo || v > hi {
                return Err(bad(
                    field,
                    format!("{what}={v} is out of range: allowed {lo} to {hi}"),
                ));
            }
            Ok(Duration::from_secs(v as u64))
        };
    let probe_port = |p: i32| -> Result<u16, SpecError> {
        match p {
            0 => Ok(port),
            1..=65535 => Ok(p as u16),
            _ => Err(bad(
                field,
                format!("port {p} is out of range: allowed 1 to 65535"),
            )),
        }
    };
    let action = match &p.probe_type {
        None => Action::Tcp { port },
        Some(probe::ProbeType::HttpGet(h)) => {
            if !h.http_headers.is_empty() {
                return Err(bad(
                    field,
                    "httpGet.httpHeaders is not supported yet; leave it empty",
                ));
            }
            let path = if h.path.is_empty() {
                "/".to_string()
            } else {
                h.path.clone()
            };
            if !path.starts_with('/') {
                return Err(bad(
                    field,
                    format!("httpGet.path={path:?} must start with /"),
                ));
            }
            Action::Http {
                path,
                port: probe_port(h.port)?,
            }
        }
        Some(probe::ProbeType::TcpSocket(t)) => Action::Tcp {
            port: probe_port(t.port)?,
        },
        Some(probe::ProbeType::Grpc(g)) => Action::Grpc {
            port: probe_port(g.port)?,
            service: g.service.clone(),
        },
    };
    Ok(Probe {
        action,
        initial_delay: secs("initialDelaySeconds", p.initial_delay_seconds, 0, 0, 240)?,
        period: secs("periodSeconds", p.period_seconds, 10, 1, 240)?,
        timeout: secs("timeoutSeconds", p.timeout_seconds, 1, 1, 240)?,
        failure_threshold: match p.failure_threshold {
            0 => 3,
            n => in_range(field, n, 1, 100)? as u32,
        },
    })
}

/// In-memory volumes mounted by the container: (mount path, size limit).
fn volumes(
    t: &v2::RevisionTemplate,
    c: &v2::Container,
    memory: u64,
) -> Result<Vec<(String, u64)>, SpecError> {
    const VOLS: &str = "service.template.volumes";
    const MOUNTS: &str = "service.template.containers[0].volumeMounts";
    let mut sizes: Vec<(&str, u64)> = Vec::new();
    let mut secret_vols: Vec<&str> = Vec::new();
    for v in &t.volumes {
        if sizes.iter().any(|(n, _)| *n == v.name) || secret_vols.contains(&v.name.as_str()) {
            return Err(bad(VOLS, format!("volume {} is defined twice", v.name)));
        }
        match &v.volume_type {
            Some(volume::VolumeType::EmptyDir(e)) => {
                if e.medium != v2::empty_dir_volume_source::Medium::Memory as i32
                    && e.medium != v2::empty_dir_volume_source::Medium::Unspecified as i32
                {
                    return Err(bad(VOLS, format!("{}: emptyDir medium must be MEMORY", v.name)));
                }
                let size = if e.size_limit.is_empty() {
                    memory
                } else {
                    crate::util::parse_memory(&e.size_limit)
                        .filter(|s| *s > 0)
                        .ok_or_else(|| bad(VOLS, format!("{}: sizeLimit {:?} is not a size (e.g. 64Mi)", v.name, e.size_limit)))?
                };
                sizes.push((&v.name, size.min(memory)));
            }
            // Mounted as the container's secrets (see `secrets_v2`).
            Some(volume::VolumeType::Secret(_)) => secret_vols.push(&v.name),
            _ => {
                return Err(bad(
                    VOLS,
                    format!("{}: only in-memory emptyDir and secret volumes are supported (Cloud SQL, NFS and GCS are not yet)", v.name),
                ))
            }
        }
    }
    c.volume_mounts
        .iter()
        .filter(|m| !secret_vols.contains(&m.name.as_str()))
        .map(|m| {
            if !m.sub_path.is_empty() {
                return Err(bad(
                    MOUNTS,
                    format!("{}: subPath is not supported yet", m.name),
                ));
            }
            if !m.mount_path.starts_with('/') {
                return Err(bad(
                    MOUNTS,
                    format!("{}: mountPath {:?} must be absolute", m.name, m.mount_path),
                ));
            }
            let size = sizes
                .iter()
                .find(|(n, _)| *n == m.name)
                .map(|(_, s)| *s)
                .ok_or_else(|| {
                    bad(
                        MOUNTS,
                        format!("{} is not a volume of the template", m.name),
                    )
                })?;
            Ok((m.mount_path.clone(), size))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(c: v2::Container) -> v2::Service {
        v2::Service {
            template: Some(v2::RevisionTemplate {
                containers: vec![c],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn image(i: &str) -> v2::Container {
        v2::Container {
            image: i.into(),
            ..Default::default()
        }
    }

    fn spec(s: &v2::Service) -> Result<ServiceSpec, SpecError> {
        service_spec(
            "hello",
            "hello-00001-abc",
            s,
            "127.0.0.1:8080".parse().unwrap(),
        )
    }

    #[test]
    fn defaults_are_cloud_runs() {
        let s = spec(&svc(image("probe:latest"))).unwrap();
        assert_eq!(s.image, "docker.io/library/probe:latest");
        assert_eq!((s.port, s.use_http2), (8080, false));
        assert_eq!(
            (s.memory_bytes, s.cpu, s.cpu_throttling),
            (512 << 20, 1.0, true)
        );
        assert_eq!(
            (s.concurrency, s.min_instances, s.max_instances),
            (80, 0, 100)
        );
        assert_eq!(s.timeout, Duration::from_secs(300));
        assert_eq!((s.command.clone(), s.args.clone()), (None, None));
        assert_eq!(s.revision, "hello-00001-abc");
    }

    #[test]
    fn fields_map() {
        let mut c = image("probe:1");
        c.command = vec!["/probe".into()];
        c.args = vec!["-x".into()];
        c.env = vec![v2::EnvVar {
            name: "A".into(),
            values: Some(env_var::Values::Value("1".into())),
        }];
        c.ports = vec![v2::ContainerPort {
            name: "h2c".into(),
            container_port: 9000,
        }];
        c.resources = Some(v2::ResourceRequirements {
            limits: [
                ("memory".to_string(), "1Gi".to_string()),
                ("cpu".into(), "2".into()),
            ]
            .into(),
            cpu_idle: false,
            ..Default::default()
        });
        c.startup_probe = Some(v2::Probe {
            period_seconds: 1,
            probe_type: Some(probe::ProbeType::HttpGet(v2::HttpGetAction {
                path: "/ready".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        c.volume_mounts = vec![v2::VolumeMount {
            name: "m".into(),
            mount_path: "/cache".into(),
            ..Default::default()
        }];
        let mut s = svc(c);
        let t = s.template.as_mut().unwrap();
        t.max_instance_request_concurrency = 5;
        t.timeout = Some(pbjson_types::Duration {
            seconds: 60,
            nanos: 0,
        });
        t.scaling = Some(v2::RevisionScaling {
            min_instance_count: 1,
            max_instance_count: 3,
        });
        t.volumes = vec![v2::Volume {
            name: "m".into(),
            volume_type: Some(volume::VolumeType::EmptyDir(v2::EmptyDirVolumeSource {
                medium: v2::empty_dir_volume_source::Medium::Memory as i32,
                size_limit: "64Mi".into(),
            })),
        }];
        let s = spec(&s).unwrap();
        assert_eq!(s.command, Some(vec!["/probe".to_string()]));
        assert_eq!(s.args, Some(vec!["-x".to_string()]));
        assert_eq!(s.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!((s.port, s.use_http2), (9000, true));
        assert_eq!(
            (s.memory_bytes, s.cpu, s.cpu_throttling),
            (1 << 30, 2.0, false)
        );
        assert_eq!((s.concurrency, s.min_instances, s.max_instances), (5, 1, 3));
        assert_eq!(s.timeout, Duration::from_secs(60));
        let p = s.startup_probe.unwrap();
        assert_eq!(
            p.action,
            Action::Http {
                path: "/ready".into(),
                port: 9000
            }
        );
        assert_eq!((p.period, p.failure_threshold), (Duration::from_secs(1), 3));
        assert_eq!(s.volumes, vec![("/cache".to_string(), 64 << 20)]);
    }

    #[test]
    fn refusals_name_the_field() {
        let with = |f: Edit| {
            let mut s = svc(image("probe"));
            f(&mut s);
            spec(&s).unwrap_err().field
        };
        fn c0(s: &mut v2::Service) -> &mut v2::Container {
            &mut s.template.as_mut().unwrap().containers[0]
        }
        type Edit = fn(&mut v2::Service);
        let table: Vec<(Edit, &str)> = vec![
            (|s| s.template = None, "service.template"),
            (
                |s| c0(s).image.clear(),
                "service.template.containers[0].image",
            ),
            (
                |s| {
                    let c = c0(s).clone();
                    s.template.as_mut().unwrap().containers.push(c)
                },
                "service.template.containers",
            ),
            (
                |s| {
                    c0(s).env = vec![v2::EnvVar {
                        name: "PORT".into(),
                        values: None,
                    }]
                },
                "service.template.containers[0].env",
            ),
            (
                |s| {
                    c0(s).env = vec![v2::EnvVar {
                        name: "S".into(),
                        values: Some(env_var::Values::ValueSource(Default::default())),
                    }]
                },
                "service.template.containers[0].env",
            ),
            (
                |s| c0(s).working_dir = "/x".into(),
                "service.template.containers[0].workingDir",
            ),
            (
                |s| {
                    c0(s).resources = Some(v2::ResourceRequirements {
                        limits: [("memory".to_string(), "1Ti".to_string())].into(),
                        ..Default::default()
                    })
                },
                "service.template.containers[0].resources.limits.memory",
            ),
            (
                |s| {
                    c0(s).ports = vec![v2::ContainerPort {
                        name: "http2".into(),
                        container_port: 1,
                    }]
                },
                "service.template.containers[0].ports",
            ),
            (
                |s| {
                    s.template.as_mut().unwrap().timeout = Some(pbjson_types::Duration {
                        seconds: 3601,
                        nanos: 0,
                    })
                },
                "service.template.timeout",
            ),
            (
                |s| {
                    s.template.as_mut().unwrap().scaling = Some(v2::RevisionScaling {
                        min_instance_count: 5,
                        max_instance_count: 2,
                    })
                },
                "service.template.scaling.minInstanceCount",
            ),
            (
                |s| s.template.as_mut().unwrap().vpc_access = Some(Default::default()),
                "service.template.vpcAccess",
            ),
            (
                |s| {
                    s.labels.insert("run.googleapis.com/x".into(), "y".into());
                },
                "service.labels",
            ),
            (
                |s| {
                    s.traffic = vec![v2::TrafficTarget {
                        r#type: 2,
                        revision: "r".into(),
                        percent: 50,
                        ..Default::default()
                    }]
                },
                "service.traffic",
            ),
            (
                |s| {
                    c0(s).volume_mounts = vec![v2::VolumeMount {
                        name: "nope".into(),
                        mount_path: "/x".into(),
                        ..Default::default()
                    }]
                },
                "service.template.containers[0].volumeMounts",
            ),
        ];
        for (i, (f, want)) in table.into_iter().enumerate() {
            assert_eq!(with(f), want, "case {i}");
        }
    }
}
