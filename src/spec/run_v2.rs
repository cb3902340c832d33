//! The Admin API v2's `Service` (its `RevisionTemplate`) as a [`ServiceSpec`]: what the
//! daemon runs for a revision. Every field runlet honours is mapped; a field it cannot honour
//! is refused, naming it, where ignoring it would change behaviour (a VPC
//! connector, a traffic split), and accepted where Cloud Run treats it as a hint
//! (`startupCpuBoost`, `serviceAccount`). Defaults are Cloud Run's.

use std::net::SocketAddr;
use std::time::Duration;

use super::container::{self, Container, Mount};
use super::probe::{Action, Probe};
use super::run_v2_containers::{self, field, F};
use super::{
    bad, check_env_name, cpu, in_range, memory, secrets_v2, ServiceSpec, Sidecars, SpecError,
    RESERVED_ENV,
};
use crate::image::reference;
use crate::pb::run_v2::{self as v2, env_var, probe, volume};

use super::defaults::{self, IDLE_TIMEOUT, STARTUP_TIMEOUT, TIMEOUT as DEFAULT_TIMEOUT};

/// The spec of revision `revision` of service `name` (its short id), from the resource.
/// With several containers, the ingress container (the one with `ports`) fills the fields a
/// single container has and the others become [`Sidecars`], the model `runlet serve
/// --container` builds.
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
    let ingress = run_v2_containers::ingress(&t.containers)?;
    for (i, c) in t.containers.iter().enumerate() {
        check_container(i, c)?;
    }
    let i = ingress;
    let c = &t.containers[i];
    let image = image(i, c)?;
    let (port, use_http2) = port(i, c)?;
    let (memory_bytes, cpu_count, cpu_throttling) = resources(i, c)?;
    let several = t.containers.len() > 1;
    // A volume without a size limit may take the instance's memory: every container's.
    let instance_memory = if several {
        let mut total = 0;
        for (j, o) in t.containers.iter().enumerate() {
            total += resources(j, o)?.0;
        }
        total
    } else {
        memory_bytes
    };
    let vols = template_volumes(t, instance_memory)?;
    let ingress_mounts = mounts(i, c, &vols)?;
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
    let sidecars = if several {
        Sidecars {
            ingress_name: c.name.clone(),
            ingress_depends_on: c.depends_on.clone(),
            ingress_mounts: ingress_mounts.clone(),
            volumes: vols.sizes.clone(),
            containers: t
                .containers
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, o)| sidecar(j, o, &vols, secrets_v2::project_of(&svc.name), &t.volumes))
                .collect::<Result<_, _>>()?,
        }
    } else {
        Sidecars::default()
    };
    Ok(ServiceSpec {
        name: name.to_string(),
        revision: revision.to_string(),
        image,
        port,
        listen,
        env: env(i, c)?,
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
        startup_probe: probe(field(i, F::StartupProbe), &c.startup_probe)?,
        liveness_probe: probe(field(i, F::LivenessProbe), &c.liveness_probe)?,
        volumes: ingress_mounts
            .iter()
            .map(|m| (m.path.clone(), vols.size(&m.volume)))
            .collect(),
        secrets: {
            let fields = secrets_v2::Fields {
                env: field(i, F::Env),
                volumes: VOLS,
                mounts: field(i, F::VolumeMounts),
            };
            let b = secrets_v2::bindings(
                fields,
                secrets_v2::project_of(&svc.name),
                &c.env,
                &t.volumes,
                &c.volume_mounts,
            )?;
            b.check(
                CONTAINER_FIELDS[i.min(CONTAINER_FIELDS.len() - 1)],
                &env(i, c)?,
            )?;
            b
        },
        sidecars,
        execution_environment: super::ExecutionEnvironment::from_v2(
            "service.template.executionEnvironment",
            t.execution_environment,
        )?,
    })
}

/// `service.template.containers[i]`, for refusals about a container as a whole.
const CONTAINER_FIELDS: [&str; container::MAX_CONTAINERS] = [
    "service.template.containers[0]",
    "service.template.containers[1]",
    "service.template.containers[2]",
    "service.template.containers[3]",
    "service.template.containers[4]",
    "service.template.containers[5]",
    "service.template.containers[6]",
    "service.template.containers[7]",
    "service.template.containers[8]",
    "service.template.containers[9]",
];

const VOLS: &str = "service.template.volumes";

fn list(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn image(i: usize, c: &v2::Container) -> Result<String, SpecError> {
    if c.image.is_empty() {
        return Err(bad(field(i, F::Image), "is required"));
    }
    reference::normalize(&c.image).map_err(|e| bad(field(i, F::Image), e.to_string()))
}

/// Container `i`, a sidecar: what it runs, with no port; its probes name a port; its
/// secrets (variables, files of the template's secret volumes it mounts) as the ingress
/// container's.
fn sidecar(
    i: usize,
    c: &v2::Container,
    vols: &Vols,
    project: &str,
    volumes: &[v2::Volume],
) -> Result<Container, SpecError> {
    let secrets = {
        let fields = secrets_v2::Fields {
            env: field(i, F::Env),
            volumes: VOLS,
            mounts: field(i, F::VolumeMounts),
        };
        let b = secrets_v2::bindings(fields, project, &c.env, volumes, &c.volume_mounts)?;
        b.check(
            CONTAINER_FIELDS[i.min(CONTAINER_FIELDS.len() - 1)],
            &env(i, c)?,
        )?;
        b
    };
    let (memory_bytes, cpu, _) = resources(i, c)?;
    let sidecar_probe = |f: &'static str, p: &Option<v2::Probe>| -> Result<_, SpecError> {
        p.as_ref()
            .map(|p| {
                portless_probe(f, p, || format!(
                    "container {} is a sidecar and has no port: its probe must name one (tcpSocket.port, httpGet.port or grpc.port)",
                    c.name
                ))
            })
            .transpose()
    };
    let startup_probe = sidecar_probe(field(i, F::StartupProbe), &c.startup_probe)?;
    let liveness_probe = sidecar_probe(field(i, F::LivenessProbe), &c.liveness_probe)?;
    Ok(Container {
        name: c.name.clone(),
        image: image(i, c)?,
        port: None,
        command: list(&c.command),
        args: list(&c.args),
        env: env(i, c)?,
        memory_bytes,
        cpu,
        startup_probe,
        liveness_probe,
        mounts: mounts(i, c, vols)?,
        depends_on: c.depends_on.clone(),
        secrets,
    })
}

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
fn check_container(i: usize, c: &v2::Container) -> Result<(), SpecError> {
    let refuse = |field, what: &str| {
        Err(bad(
            field,
            format!("{what} is not supported yet; leave it unset"),
        ))
    };
    if !c.working_dir.is_empty() {
        return refuse(field(i, F::WorkingDir), "a working directory");
    }
    if c.readiness_probe.is_some() {
        return refuse(field(i, F::ReadinessProbe), "a readiness probe");
    }
    Ok(())
}

/// The probe of a container without a port (a sidecar's): it must name a port; `refusal`
/// says so when it does not.
pub(crate) fn portless_probe(
    field: &'static str,
    p: &v2::Probe,
    refusal: impl FnOnce() -> String,
) -> Result<Probe, SpecError> {
    let p = probe(field, p, 0)?;
    if action_port(&p.action) == 0 {
        return Err(bad(field, refusal()));
    }
    Ok(p)
}

pub(crate) fn action_port(a: &Action) -> u16 {
    match a {
        Action::Http { port, .. } | Action::Tcp { port } | Action::Grpc { port, .. } => *port,
    }
}

/// The ingress port and whether it speaks h2c: `ports[0]`, default 8080 / http1.
fn port(i: usize, c: &v2::Container) -> Result<(u16, bool), SpecError> {
    let field = field(i, F::Ports);
    match c.ports.as_slice() {
        [] => Ok((defaults::PORT, false)),
        [p] => {
            let port = match p.container_port {
                0 => defaults::PORT,
                n => in_range(field, n, 1, 65535)? as u16,
            };
            let h2 = match p.name.as_str() {
                "" | "http1" => false,
                "h2c" => true,
                other => {
                    return Err(bad(
                        field,
                        format!("name {other:?} is not allowed: allowed http1, h2c"),
                    ))
                }
            };
            Ok((port, h2))
        }
        _ => Err(bad(field, "at most one port may be given")),
    }
}

/// (memory bytes, CPUs, CPU throttled outside requests). Without `resources`, Cloud Run's
/// defaults: 512Mi, 1 CPU, CPU only during requests.
fn resources(i: usize, c: &v2::Container) -> Result<(u64, f64, bool), SpecError> {
    let Some(r) = &c.resources else {
        return Ok((defaults::MEMORY, defaults::CPU, true));
    };
    let mut mem = defaults::MEMORY;
    let mut cpus = defaults::CPU;
    for (k, v) in &r.limits {
        match k.as_str() {
            "memory" => mem = memory(field(i, F::Memory), v)?,
            "cpu" => cpus = cpu(field(i, F::Cpu), v)?,
            other => {
                return Err(bad(
                    field(i, F::Limits),
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

fn env(i: usize, c: &v2::Container) -> Result<Vec<(String, String)>, SpecError> {
    plain_env(field(i, F::Env), &c.env, RESERVED_ENV, "runlet sets it")
}

/// The plain variables of `vars` (a secret's reference is the container's secrets, see
/// `secrets_v2`), the last of a name winning. Refused, naming `field`: a bad name, or one
/// of `reserved`, which `sets` says who sets (a service's and a job's lists differ).
pub(crate) fn plain_env(
    field: &'static str,
    vars: &[v2::EnvVar],
    reserved: &[&str],
    sets: &str,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in vars {
        check_env_name(field, &e.name)?;
        if reserved.contains(&e.name.as_str()) {
            return Err(bad(
                field,
                format!(
                    "{} is reserved: {sets} (reserved: {})",
                    e.name,
                    reserved.join(", ")
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

pub(crate) fn probe(field: &'static str, p: &v2::Probe, port: u16) -> Result<Probe, SpecError> {
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

/// The template's volumes: the in-memory ones with their sizes (a size limit, at most
/// `memory`: the instance's), and the names of the secret ones.
#[derive(Debug, Default)]
struct Vols {
    sizes: Vec<(String, u64)>,
    secret: Vec<String>,
}

impl Vols {
    fn size(&self, name: &str) -> u64 {
        self.sizes
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, s)| *s)
    }
}

fn template_volumes(t: &v2::RevisionTemplate, memory: u64) -> Result<Vols, SpecError> {
    let mut vols = Vols::default();
    for v in &t.volumes {
        if vols.sizes.iter().any(|(n, _)| *n == v.name) || vols.secret.contains(&v.name) {
            return Err(bad(VOLS, format!("volume {} is defined twice", v.name)));
        }
        match &v.volume_type {
            Some(volume::VolumeType::EmptyDir(e)) => {
                if e.medium != v2::empty_dir_volume_source::Medium::Memory as i32
                    && e.medium != v2::empty_dir_volume_source::Medium::Unspecified as i32
                {
                    return Err(bad(VOLS, format!("{}: emptyDir medium must be MEMORY", v.name)));
                }
                let size = in_memory_size(VOLS, &v.name, &e.size_limit, memory)?;
                vols.sizes.push((v.name.clone(), size));
            }
            // Mounted as the container's secrets (see `secrets_v2`).
            Some(volume::VolumeType::Secret(_)) => vols.secret.push(v.name.clone()),
            _ => {
                return Err(bad(
                    VOLS,
                    format!("{}: only in-memory emptyDir and secret volumes are supported (Cloud SQL, NFS and GCS are not yet)", v.name),
                ))
            }
        }
    }
    Ok(vols)
}

/// An in-memory volume's size: its `sizeLimit`, at most (and by default) `memory`, the
/// memory of the instance or task that holds it.
pub(crate) fn in_memory_size(
    field: &'static str,
    name: &str,
    size_limit: &str,
    memory: u64,
) -> Result<u64, SpecError> {
    if size_limit.is_empty() {
        return Ok(memory);
    }
    let size = crate::util::parse_memory(size_limit)
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            bad(
                field,
                format!("{name}: sizeLimit {size_limit:?} is not a size (e.g. 64Mi)"),
            )
        })?;
    Ok(size.min(memory))
}

/// Container `i`'s mounts of in-memory volumes (secret volumes are `secrets_v2`'s).
fn mounts(i: usize, c: &v2::Container, vols: &Vols) -> Result<Vec<Mount>, SpecError> {
    let field = field(i, F::VolumeMounts);
    c.volume_mounts
        .iter()
        .filter(|m| !vols.secret.contains(&m.name))
        .map(|m| {
            if !m.sub_path.is_empty() {
                return Err(bad(
                    field,
                    format!("{}: subPath is not supported yet", m.name),
                ));
            }
            if !m.mount_path.starts_with('/') {
                return Err(bad(
                    field,
                    format!("{}: mountPath {:?} must be absolute", m.name, m.mount_path),
                ));
            }
            if !vols.sizes.iter().any(|(n, _)| *n == m.name) {
                return Err(bad(
                    field,
                    format!("{} is not a volume of the template", m.name),
                ));
            }
            Ok(Mount {
                volume: m.name.clone(),
                path: m.mount_path.clone(),
            })
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
                "service.template.containers[0].name",
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

    /// An ingress container `app` (with a port) and a sidecar `log`.
    fn two() -> v2::Service {
        let mut log = image("busybox");
        log.name = "log".into();
        let mut app = image("probe");
        app.name = "app".into();
        app.ports = vec![v2::ContainerPort::default()];
        let mut s = svc(log);
        let t = s.template.as_mut().unwrap();
        t.containers.push(app);
        t.volumes = vec![v2::Volume {
            name: "shared".into(),
            volume_type: Some(volume::VolumeType::EmptyDir(Default::default())),
        }];
        s
    }

    #[test]
    fn several_containers_map_to_sidecars() {
        let mut s = two();
        let t = s.template.as_mut().unwrap();
        let mount = |path: &str| v2::VolumeMount {
            name: "shared".into(),
            mount_path: path.into(),
            ..Default::default()
        };
        let log = &mut t.containers[0];
        log.command = vec!["/bin/sh".into()];
        log.args = vec!["-c".into(), "sleep 1d".into()];
        log.env = vec![v2::EnvVar {
            name: "A".into(),
            values: Some(env_var::Values::Value("1".into())),
        }];
        log.resources = Some(v2::ResourceRequirements {
            limits: [("memory".to_string(), "128Mi".to_string())].into(),
            ..Default::default()
        });
        log.startup_probe = Some(v2::Probe {
            probe_type: Some(probe::ProbeType::TcpSocket(v2::TcpSocketAction {
                port: 9000,
            })),
            ..Default::default()
        });
        log.volume_mounts = vec![mount("/logs")];
        let app = &mut t.containers[1];
        app.depends_on = vec!["log".into()];
        app.volume_mounts = vec![mount("/shared")];
        let got = spec(&s).unwrap();
        assert_eq!(got.image, "docker.io/library/probe:latest");
        assert_eq!((got.port, got.memory_bytes), (8080, 512 << 20));
        // A volume without a size limit may take the instance's memory: 512Mi + 128Mi.
        let instance = (512 << 20) + (128 << 20);
        assert_eq!(got.volumes, vec![("/shared".to_string(), instance)]);
        let sc = &got.sidecars;
        assert_eq!(sc.ingress_name, "app");
        assert_eq!(sc.ingress_depends_on, vec!["log".to_string()]);
        assert_eq!(
            sc.ingress_mounts,
            vec![Mount {
                volume: "shared".into(),
                path: "/shared".into()
            }]
        );
        assert_eq!(sc.volumes, vec![("shared".to_string(), instance)]);
        assert_eq!(
            sc.containers,
            vec![Container {
                name: "log".into(),
                image: "docker.io/library/busybox:latest".into(),
                port: None,
                command: Some(vec!["/bin/sh".into()]),
                args: Some(vec!["-c".into(), "sleep 1d".into()]),
                env: vec![("A".into(), "1".into())],
                memory_bytes: 128 << 20,
                cpu: 1.0,
                startup_probe: Some(Probe {
                    action: Action::Tcp { port: 9000 },
                    initial_delay: Duration::ZERO,
                    period: Duration::from_secs(10),
                    timeout: Duration::from_secs(1),
                    failure_threshold: 3,
                }),
                liveness_probe: None,
                mounts: vec![Mount {
                    volume: "shared".into(),
                    path: "/logs".into()
                }],
                depends_on: vec![],
                secrets: Default::default(),
            }]
        );
        assert_eq!(got.containers().len(), 2);
        // One container keeps the single-container shape, named or not.
        let mut one = svc(image("probe"));
        one.template.as_mut().unwrap().containers[0].name = "app".into();
        assert_eq!(spec(&one).unwrap().sidecars, Sidecars::default());
    }

    #[test]
    fn container_refusals_name_the_container() {
        type Edit = fn(&mut [v2::Container]);
        let table: Vec<(Edit, &str, &str)> = vec![
            (
                |c| c[0].image.clear(),
                "service.template.containers[0].image",
                "is required",
            ),
            (
                |c| c[0].depends_on = vec!["db".into()],
                "service.template.containers[0].dependsOn",
                "\"db\" is not a container of the template",
            ),
            (
                |c| {
                    c[0].depends_on = vec!["app".into()];
                    c[1].depends_on = vec!["log".into()];
                },
                "service.template.containers[0].dependsOn",
                "a dependency cycle among log, app",
            ),
            (
                |c| c[0].ports = vec![v2::ContainerPort::default()],
                "service.template.containers[1].ports",
                "containers log and app both do",
            ),
            (
                |c| c[1].ports.clear(),
                "service.template.containers",
                "exactly one container (the ingress container) must declare ports",
            ),
            (
                |c| c[0].name.clear(),
                "service.template.containers[0].name",
                "is required when the template has more than one container",
            ),
            (
                |c| c[0].name = "app".into(),
                "service.template.containers[1].name",
                "given twice",
            ),
            (
                |c| c[0].liveness_probe = Some(Default::default()),
                "service.template.containers[0].livenessProbe",
                "its probe must name one",
            ),
            (
                |c| c[0].startup_probe = Some(Default::default()),
                "service.template.containers[0].startupProbe",
                "its probe must name one",
            ),
            (
                |c| {
                    c[0].startup_probe = Some(v2::Probe {
                        probe_type: Some(probe::ProbeType::HttpGet(Default::default())),
                        ..Default::default()
                    })
                },
                "service.template.containers[0].startupProbe",
                "its probe must name one",
            ),
            (
                |c| {
                    c[0].resources = Some(v2::ResourceRequirements {
                        limits: [("memory".to_string(), "lots".to_string())].into(),
                        ..Default::default()
                    })
                },
                "service.template.containers[0].resources.limits.memory",
                "",
            ),
            (
                |c| {
                    c[1].resources = Some(v2::ResourceRequirements {
                        limits: [("gpu".to_string(), "1".to_string())].into(),
                        ..Default::default()
                    })
                },
                "service.template.containers[1].resources.limits",
                "allowed cpu, memory",
            ),
            (
                |c| {
                    c[0].env = vec![v2::EnvVar {
                        name: "PORT".into(),
                        values: None,
                    }]
                },
                "service.template.containers[0].env",
                "PORT is reserved",
            ),
            (
                |c| {
                    let secret = v2::EnvVar {
                        name: "S".into(),
                        values: Some(env_var::Values::ValueSource(v2::EnvVarSource {
                            secret_key_ref: Some(v2::SecretKeySelector {
                                secret: "s".into(),
                                version: "1".into(),
                            }),
                        })),
                    };
                    let plain = v2::EnvVar {
                        name: "S".into(),
                        values: Some(env_var::Values::Value("x".into())),
                    };
                    c[0].env = vec![secret, plain]
                },
                "service.template.containers[0]",
                "S is set both as a plain variable and from a secret",
            ),
            (
                |c| {
                    c[0].volume_mounts = vec![v2::VolumeMount {
                        name: "nope".into(),
                        mount_path: "/x".into(),
                        ..Default::default()
                    }]
                },
                "service.template.containers[0].volumeMounts",
                "nope is not a volume of the template",
            ),
            (
                |c| c[1].readiness_probe = Some(Default::default()),
                "service.template.containers[1].readinessProbe",
                "not supported yet",
            ),
            (
                |c| c[0].working_dir = "/x".into(),
                "service.template.containers[0].workingDir",
                "not supported yet",
            ),
        ];
        for (i, (edit, field, detail)) in table.into_iter().enumerate() {
            let mut s = two();
            edit(&mut s.template.as_mut().unwrap().containers);
            let e = spec(&s).unwrap_err();
            assert_eq!(e.field, field, "case {i}: {e}");
            assert!(e.detail.contains(detail), "case {i}: {e}");
        }
        // A sidecar's secrets: a variable and a secret volume it mounts (not the ingress
        // container's).
        let mut s = two();
        let t = s.template.as_mut().unwrap();
        t.volumes.push(v2::Volume {
            name: "key".into(),
            volume_type: Some(volume::VolumeType::Secret(v2::SecretVolumeSource {
                secret: "k".into(),
                ..Default::default()
            })),
        });
        t.containers[0].volume_mounts = vec![v2::VolumeMount {
            name: "key".into(),
            mount_path: "/key".into(),
            ..Default::default()
        }];
        t.containers[0].env = vec![crate::spec::secrets_v2::env_var(
            "TOKEN",
            &crate::spec::secrets::SecretRef {
                secret: "tok".into(),
                version: crate::spec::secrets::Version::Latest,
            },
        )];
        let spec = spec(&s).unwrap();
        assert!(spec.secrets.is_empty(), "{:?}", spec.secrets);
        let log = &spec.sidecars.containers[0].secrets;
        assert_eq!(log.env[0].0, "TOKEN");
        assert_eq!(
            log.files.iter().map(|f| f.key()).collect::<Vec<_>>(),
            ["/key/k"]
        );
        assert!(spec.sidecars.containers[0].env.is_empty());
    }
}
