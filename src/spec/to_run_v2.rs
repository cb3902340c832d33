//! `runlet deploy`'s flags as the Admin API v2's `Service`: the template's one container
//! (image, command, args, env, port, resources, probes, volume mounts), its volumes, scaling,
//! timeout and concurrency. The inverse of [`super::run_v2`] for what flags can say: a flag
//! not given leaves its field unset, so the daemon applies the same default the flag has
//! (tested below by the round trip flags → `Service` → [`ServiceSpec`](super::ServiceSpec),
//! against what `runlet serve` builds from the same flags).

use super::container_flags::CheckedContainer;
use super::flags::{Checked, ServiceFlags};
use super::group_to_run_v2::{apply_group, GroupFields};
use super::probe::{Action, Probe};
use super::SpecError;
use crate::pb::run_v2::{self as v2, empty_dir_volume_source::Medium, env_var, probe, volume};

/// The `Service` `runlet deploy` sends for `flags` (its `name` is the caller's to set).
/// With `--container` groups, the ingress container comes first (named, with its
/// `dependsOn`), then the others in the order given, each with its fields as given.
pub fn service(flags: &ServiceFlags) -> Result<v2::Service, SpecError> {
    let checked = flags.check()?;
    let mut svc = service_of(&checked);
    if flags.containers.is_empty() {
        return Ok(svc);
    }
    let t = svc.template.as_mut().expect("service_of sets the template");
    let s = &checked.sidecars;
    t.containers[0].name = s.ingress_name.clone();
    t.containers[0].depends_on = s.ingress_depends_on.clone();
    for g in flags.containers.iter().filter(|g| g.name != s.ingress_name) {
        let g = g.check(&checked.volumes.volumes)?;
        let mut c = sidecar_of(&g, checked.cpu_throttling);
        // Its secrets: variables, and secret volumes of its own beside the others'.
        let b = &g.container.secrets;
        let taken: Vec<String> = t.volumes.iter().map(|v| v.name.clone()).collect();
        let (vols, mounts) = super::secrets_v2::volumes(b, &taken);
        t.volumes.extend(vols);
        c.volume_mounts.extend(mounts);
        c.env
            .extend(b.env.iter().map(|(k, r)| super::secrets_v2::env_var(k, r)));
        t.containers.push(c);
    }
    Ok(svc)
}

/// A sidecar's container: what its `--container` group gave.
fn sidecar_of(g: &CheckedContainer, cpu_idle: bool) -> v2::Container {
    let c = &g.container;
    let mut out = v2::Container {
        name: c.name.clone(),
        ..Default::default()
    };
    apply_group(
        &mut out,
        GroupFields {
            image: Some(&g.image),
            command: c.command.clone(),
            args: c.args.clone(),
            env: Some(c.env.clone()),
            memory: g.memory.as_ref().map(|(text, _)| text.as_str()),
            cpu: g.cpu.as_ref().map(|(text, _)| text.as_str()),
            mounts: c
                .mounts
                .iter()
                .map(|m| (m.volume.clone(), m.path.clone()))
                .collect(),
            startup_probe: c.startup_probe.as_ref(),
            liveness_probe: c.liveness_probe.as_ref(),
            depends_on: Some(c.depends_on.clone()),
        },
    );
    // Limits given: the instance's CPU throttling with them.
    if let Some(r) = &mut out.resources {
        r.cpu_idle = cpu_idle;
    }
    out
}

/// Plain variables as the API carries them (the inverse of [`plain_env`]).
pub fn plain_env_vars(pairs: &[(String, String)]) -> Vec<v2::EnvVar> {
    pairs
        .iter()
        .map(|(k, v)| v2::EnvVar {
            name: k.clone(),
            values: Some(env_var::Values::Value(v.clone())),
        })
        .collect()
}

/// A mount of an in-memory volume as the API carries it.
pub fn volume_mount(volume: &str, path: &str) -> v2::VolumeMount {
    v2::VolumeMount {
        name: volume.to_string(),
        mount_path: path.to_string(),
        sub_path: String::new(),
    }
}

/// The `Service` of flags already checked.
pub fn service_of(f: &Checked) -> v2::Service {
    let mut container = v2::Container::default();
    apply_group(
        &mut container,
        GroupFields {
            image: Some(&f.image),
            command: f.command.clone(),
            args: f.args.clone(),
            env: Some(f.env.clone()),
            memory: f.memory.as_ref().map(|(text, _)| text.as_str()),
            cpu: f.cpu.as_ref().map(|(text, _)| text.as_str()),
            mounts: f
                .volumes
                .mounts
                .iter()
                .map(|m| (m.volume.clone(), m.path.clone()))
                .collect(),
            startup_probe: f.startup_probe.as_ref(),
            liveness_probe: f.liveness_probe.as_ref(),
            depends_on: None,
        },
    );
    // Always there: without it the API means Cloud Run's CPU throttling, which runlet
    // leaves off unless asked (`cpu_idle`).
    container
        .resources
        .get_or_insert_with(Default::default)
        .cpu_idle = f.cpu_throttling;
    if f.port.is_some() || f.use_http2 {
        container.ports = vec![v2::ContainerPort {
            name: if f.use_http2 { "h2c" } else { "http1" }.into(),
            container_port: i32::from(f.port()),
        }];
    }
    let scaling = (f.min_instances.is_some() || f.max_instances.is_some()).then(|| {
        v2::RevisionScaling {
            min_instance_count: f.min_instances.unwrap_or(0) as i32,
            // 0: unset (the API's default).
            max_instance_count: f.max_instances.unwrap_or(0) as i32,
        }
    });
    let template = v2::RevisionTemplate {
        containers: vec![container],
        volumes: f.volumes.volumes.iter().map(in_memory_volume).collect(),
        scaling,
        timeout: f.timeout.map(|d| pbjson_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        max_instance_request_concurrency: f.concurrency.unwrap_or(0) as i32,
        // Unset (0): the daemon's default, gen2, as `runlet serve`'s.
        execution_environment: f.execution_environment.map_or(0, |e| e.to_v2() as i32),
        ..Default::default()
    };
    let mut template = template;
    super::secrets_v2::replace(
        &mut template.containers[0],
        &mut template.volumes,
        &f.secrets,
        &[],
    );
    v2::Service {
        template: Some(template),
        client: "runlet".into(),
        client_version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// Gives each container's `--update-env-vars`/`--remove-env-vars` the plain variables it
/// has in `current` (the service as the daemon has it), as gcloud changes the current
/// revision's: the ingress container for the flags without `--container`, a group's
/// container by name (a new container has none). Other flags describe the template anew.
pub fn with_current_env(flags: &mut ServiceFlags, current: &v2::Service) {
    let Some(t) = &current.template else { return };
    if flags.containers.is_empty() {
        let ingress = t
            .containers
            .iter()
            .find(|c| !c.ports.is_empty())
            .or(t.containers.first());
        flags.env.current = ingress.map(plain_env).unwrap_or_default();
    }
    for g in &mut flags.containers {
        g.env.current = t
            .containers
            .iter()
            .find(|c| c.name == g.name)
            .map(plain_env)
            .unwrap_or_default();
    }
}

/// A container's plain variables (those not from a secret), as the API carries them:
/// what `--update-env-vars` and `--remove-env-vars` change.
pub fn plain_env(c: &v2::Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .filter_map(|e| match &e.values {
            Some(env_var::Values::Value(v)) => Some((e.name.clone(), v.clone())),
            None => Some((e.name.clone(), String::new())),
            Some(env_var::Values::ValueSource(_)) => None,
        })
        .collect()
}

/// An `--add-volume` (in-memory) as the template's volume.
pub fn in_memory_volume(v: &super::VolumeFlag) -> v2::Volume {
    v2::Volume {
        name: v.name.clone(),
        volume_type: Some(volume::VolumeType::EmptyDir(v2::EmptyDirVolumeSource {
            medium: Medium::Memory as i32,
            size_limit: v.size_limit.clone().unwrap_or_default(),
        })),
    }
}

/// A probe as the API spells it, every value explicit (ports included).
pub fn probe_of(p: &Probe) -> v2::Probe {
    let secs = |d: std::time::Duration| d.as_secs() as i32;
    v2::Probe {
        initial_delay_seconds: secs(p.initial_delay),
        timeout_seconds: secs(p.timeout),
        period_seconds: secs(p.period),
        failure_threshold: p.failure_threshold as i32,
        probe_type: Some(match &p.action {
            Action::Http { path, port } => probe::ProbeType::HttpGet(v2::HttpGetAction {
                path: path.clone(),
                http_headers: Vec::new(),
                port: i32::from(*port),
            }),
            Action::Tcp { port } => probe::ProbeType::TcpSocket(v2::TcpSocketAction {
                port: i32::from(*port),
            }),
            Action::Grpc { port, service } => probe::ProbeType::Grpc(v2::GrpcAction {
                port: i32::from(*port),
                service: service.clone(),
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::container_flags::ContainerFlags;
    use crate::spec::flags::tests::flags;
    use crate::spec::run_v2::service_spec;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Flag sets covering every flag and the defaults between them.
    fn table() -> Vec<(&'static str, ServiceFlags)> {
        vec![
            ("no flags", flags(|_| {})),
            (
                "env, command, args",
                flags(|f| {
                    f.set_env_vars = strings(&["A=1,B=x=y", "^@^C=a,b@A=2"]);
                    f.command = Some("/probe,--flag".into());
                    f.args = Some("^;^a,b;c".into());
                }),
            ),
            ("empty args", flags(|f| f.args = Some(String::new()))),
            (
                "resources and scaling",
                flags(|f| {
                    f.memory = Some("1Gi".into());
                    f.cpu = Some("2".into());
                    f.concurrency = Some(5);
                    f.timeout = Some("90s".into());
                    f.min_instances = Some(1);
                    f.max_instances = Some(3);
                    f.cpu_throttling = Some(true);
                }),
            ),
            ("min only", flags(|f| f.min_instances = Some(2))),
            ("max only", flags(|f| f.max_instances = Some(7))),
            (
                "below one CPU",
                flags(|f| {
                    f.cpu = Some("500m".into());
                    f.memory = Some("256Mi".into());
                }),
            ),
            ("no throttling", flags(|f| f.cpu_throttling = Some(false))),
            (
                "gen1",
                flags(|f| f.execution_environment = Some("gen1".into())),
            ),
            (
                "gen2",
                flags(|f| f.execution_environment = Some("gen2".into())),
            ),
            (
                "fractional timeout",
                flags(|f| f.timeout = Some("1.5".into())),
            ),
            (
                "port and h2c",
                flags(|f| {
                    f.port = Some(9000);
                    f.use_http2 = true;
                }),
            ),
            ("h2c on the default port", flags(|f| f.use_http2 = true)),
            ("port only", flags(|f| f.port = Some(3000))),
            (
                "probes",
                flags(|f| {
                    f.port = Some(9000);
                    f.startup_probe = Some(
                        "httpGet.path=/ready,initialDelaySeconds=2,periodSeconds=5,timeoutSeconds=3,failureThreshold=4"
                            .into(),
                    );
                    f.liveness_probe = Some("tcpSocket.port=81,periodSeconds=1".into());
                }),
            ),
            (
                "grpc probe",
                flags(|f| f.liveness_probe = Some("grpc.service=health".into())),
            ),
            (
                "empty probe",
                flags(|f| f.startup_probe = Some(String::new())),
            ),
            (
                "volumes",
                flags(|f| {
                    f.memory = Some("1Gi".into());
                    f.add_volume = strings(&[
                        "name=cache,type=in-memory,size-limit=64Mi",
                        "name=big,type=in-memory,size-limit=8Gi",
                        "name=plain,type=in-memory",
                    ]);
                    f.add_volume_mount = strings(&[
                        "volume=cache,mount-path=/cache",
                        "volume=big,mount-path=/big",
                        "volume=cache,mount-path=/again",
                    ]);
                }),
            ),
            (
                "a volume without a mount",
                flags(|f| f.add_volume = strings(&["name=unused,type=in-memory"])),
            ),
            (
                "secrets",
                flags(|f| {
                    f.secrets.set = strings(&[
                        "A=a:1,B=projects/p/secrets/b:latest",
                        "/s/api/key=k:2,/s/api/old=k:1,/certs/tls=c:latest",
                    ]);
                    f.add_volume = strings(&["name=secret-1,type=in-memory"]);
                    f.add_volume_mount = strings(&["volume=secret-1,mount-path=/m"]);
                }),
            ),
            (
                "qualified image",
                flags(|f| f.image = "example.com/a/b:v1".into()),
            ),
            (
                "sidecars",
                flags(|f| {
                    f.image = String::new();
                    f.add_volume = strings(&[
                        "name=shared,type=in-memory,size-limit=32Mi",
                        "name=all,type=in-memory",
                    ]);
                    f.containers = vec![
                        ContainerFlags {
                            name: "log".into(),
                            image: Some("busybox".into()),
                            command: Some("/bin/sh".into()),
                            args: Some("^@^-c@sleep 1d".into()),
                            set_env_vars: strings(&["A=1"]),
                            memory: Some("128Mi".into()),
                            cpu: Some("500m".into()),
                            startup_probe: Some("tcpSocket.port=9000".into()),
                            add_volume_mount: strings(&["volume=shared,mount-path=/s"]),
                            depends_on: strings(&["db"]),
                            ..Default::default()
                        },
                        ContainerFlags {
                            name: "app".into(),
                            image: Some("probe".into()),
                            port: Some(8081),
                            memory: Some("1Gi".into()),
                            liveness_probe: Some("httpGet.path=/".into()),
                            add_volume_mount: strings(&[
                                "volume=shared,mount-path=/shared",
                                "volume=all,mount-path=/all",
                            ]),
                            depends_on: strings(&["log,db"]),
                            ..Default::default()
                        },
                        ContainerFlags {
                            name: "db".into(),
                            image: Some("example.com/db:1".into()),
                            ..Default::default()
                        },
                    ];
                }),
            ),
            (
                "sidecars with secrets and liveness probes",
                flags(|f| {
                    f.image = String::new();
                    f.containers = vec![
                        ContainerFlags {
                            name: "app".into(),
                            image: Some("probe".into()),
                            port: Some(8080),
                            secrets: crate::spec::secrets::SecretFlags {
                                set: strings(&["A=a:1,/s/app/key=k:2"]),
                                ..Default::default()
                            },
                            ..Default::default()
                        },
                        ContainerFlags {
                            name: "proxy".into(),
                            image: Some("busybox".into()),
                            liveness_probe: Some("tcpSocket.port=9000".into()),
                            secrets: crate::spec::secrets::SecretFlags {
                                set: strings(&["B=b:latest,/s/proxy/cert=c:1,/s/proxy/key=c:2"]),
                                ..Default::default()
                            },
                            ..Default::default()
                        },
                    ];
                }),
            ),
        ]
    }

    /// What the daemon runs from the `Service` `runlet deploy` sends is what `runlet serve`
    /// runs from the same flags.
    #[test]
    fn round_trip_through_the_api_gives_the_same_spec() {
        let listen = "127.0.0.1:8080".parse().unwrap();
        for (case, f) in table() {
            let checked = f.check().unwrap_or_else(|e| panic!("{case}: {e}"));
            let want = checked.service_spec("hello", "hello-00001-abc", listen);
            let svc = service(&f).unwrap_or_else(|e| panic!("{case}: {e}"));
            let got = service_spec("hello", "hello-00001-abc", &svc, listen)
                .unwrap_or_else(|e| panic!("{case}: the daemon refuses it: {e}"));
            assert_eq!(got, want, "{case}");
            // And the Service survives proto3 JSON (what `describe --format json` shows).
            let json = serde_json::to_string(&svc).unwrap();
            let back: v2::Service = serde_json::from_str(&json).unwrap();
            assert_eq!(back, svc, "{case}");
        }
    }

    #[test]
    fn fields_map() {
        let svc = service(&flags(|f| {
            f.set_env_vars = strings(&["A=1"]);
            f.memory = Some("1Gi".into());
            f.port = Some(9000);
            f.use_http2 = true;
            f.startup_probe = Some("httpGet.path=/ready".into());
            f.add_volume = strings(&["name=m,type=in-memory,size-limit=64Mi"]);
            f.add_volume_mount = strings(&["volume=m,mount-path=/m"]);
            f.max_instances = Some(3);
            f.timeout = Some("1m".into());
        }))
        .unwrap();
        let t = svc.template.unwrap();
        let c = &t.containers[0];
        assert_eq!(c.image, "probe");
        assert_eq!(
            c.env,
            vec![v2::EnvVar {
                name: "A".into(),
                values: Some(env_var::Values::Value("1".into()))
            }]
        );
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.limits.get("memory").map(String::as_str), Some("1Gi"));
        assert_eq!(r.limits.get("cpu"), None);
        assert!(!r.cpu_idle);
        assert_eq!(
            c.ports,
            vec![v2::ContainerPort {
                name: "h2c".into(),
                container_port: 9000
            }]
        );
        let p = c.startup_probe.as_ref().unwrap();
        assert_eq!(
            p.probe_type,
            Some(probe::ProbeType::HttpGet(v2::HttpGetAction {
                path: "/ready".into(),
                http_headers: vec![],
                port: 9000
            }))
        );
        assert_eq!((p.period_seconds, p.failure_threshold), (10, 3));
        assert_eq!(c.volume_mounts[0].name, "m");
        assert_eq!(
            t.volumes[0].volume_type,
            Some(volume::VolumeType::EmptyDir(v2::EmptyDirVolumeSource {
                medium: Medium::Memory as i32,
                size_limit: "64Mi".into()
            }))
        );
        assert_eq!(
            t.scaling,
            Some(v2::RevisionScaling {
                min_instance_count: 0,
                max_instance_count: 3
            })
        );
        assert_eq!(t.timeout.map(|d| d.seconds), Some(60));
        assert_eq!(t.max_instance_request_concurrency, 0);
        // Unset flags stay unset: the daemon's defaults apply.
        let bare = service(&flags(|_| {})).unwrap().template.unwrap();
        assert_eq!(bare.scaling, None);
        assert_eq!(bare.timeout, None);
        assert!(bare.containers[0].ports.is_empty());
        assert!(bare.containers[0].command.is_empty());
    }

    #[test]
    fn refused_flags_reach_no_service() {
        let e = service(&flags(|f| f.memory = Some("2Ti".into()))).unwrap_err();
        assert_eq!(e.field, "--memory");
    }

    #[test]
    fn env_changes_start_from_the_current_service() {
        let plain = |k: &str, v: &str| v2::EnvVar {
            name: k.into(),
            values: Some(env_var::Values::Value(v.into())),
        };
        let secret = |k: &str| v2::EnvVar {
            name: k.into(),
            values: Some(env_var::Values::ValueSource(Default::default())),
        };
        let current = v2::Service {
            template: Some(v2::RevisionTemplate {
                containers: vec![
                    v2::Container {
                        name: "log".into(),
                        env: vec![plain("L", "1")],
                        ..Default::default()
                    },
                    v2::Container {
                        name: "app".into(),
                        ports: vec![v2::ContainerPort::default()],
                        env: vec![plain("A", "1"), secret("S"), plain("B", "2")],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // One container: the ingress one's plain variables (a secret has its own flags).
        let mut f = flags(|f| f.env.update = strings(&["B=3,C=4"]));
        with_current_env(&mut f, &current);
        assert_eq!(f.env.current, pairs(&[("A", "1"), ("B", "2")]));
        let c = &service(&f).unwrap().template.unwrap().containers[0];
        let env: Vec<_> = c
            .env
            .iter()
            .map(|e| match &e.values {
                Some(env_var::Values::Value(v)) => (e.name.as_str(), v.as_str()),
                _ => (e.name.as_str(), "?"),
            })
            .collect();
        assert_eq!(env, [("A", "1"), ("B", "3"), ("C", "4")]);
        // Groups: by name; a new container starts with none.
        let mut g = ServiceFlags {
            containers: vec![
                ContainerFlags {
                    name: "app".into(),
                    port: Some(8080),
                    ..Default::default()
                },
                ContainerFlags {
                    name: "log".into(),
                    ..Default::default()
                },
                ContainerFlags {
                    name: "new".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        with_current_env(&mut g, &current);
        let currents: Vec<_> = g.containers.iter().map(|c| c.env.current.clone()).collect();
        assert_eq!(
            currents,
            [
                pairs(&[("A", "1"), ("B", "2")]),
                pairs(&[("L", "1")]),
                vec![]
            ]
        );
    }
}
