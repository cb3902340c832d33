//! Cloud Run's job YAML (`kind: Job` of `run.googleapis.com/v1`), the subset runlet runs:
//! the schema, [`parse_yaml`], and a [`JobSpec`] written back in that shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::yaml_secrets::{self, EmptyDirYaml, EnvVarSourceYaml, VolumeMountYaml, VolumeYaml};
use super::{bad, JobSpec, API_VERSION};
use crate::spec::SpecError;

impl JobSpec {
    /// The execution part of the job in Cloud Run's shape (`spec.template.spec` of a Job,
    /// `spec` of an Execution).
    pub fn execution_spec(&self) -> ExecutionSpecYaml {
        ExecutionSpecYaml {
            task_count: Some(self.task_count),
            parallelism: self.parallelism,
            template: TaskTemplateYaml {
                metadata: None,
                spec: TaskSpecYaml {
                    max_retries: Some(self.max_retries),
                    timeout_seconds: Some(self.task_timeout.as_secs()),
                    volumes: self.volumes_yaml(),
                    containers: std::iter::once(ContainerYaml {
                        name: (!self.sidecars.ingress_name.is_empty())
                            .then(|| self.sidecars.ingress_name.clone()),
                        image: self.image.clone(),
                        command: self.command.clone(),
                        args: self.args.clone(),
                        env: self
                            .env
                            .iter()
                            .map(|(k, v)| EnvVarYaml {
                                name: k.clone(),
                                value: Some(v.clone()),
                                value_from: None,
                            })
                            .chain(yaml_secrets::env_yaml(&self.secrets))
                            .collect(),
                        volume_mounts: mounts_yaml(&self.sidecars.ingress_mounts)
                            .chain(yaml_secrets::mounts_yaml(&self.secrets))
                            .collect(),
                        resources: Some(ResourcesYaml {
                            limits: Some(LimitsYaml {
                                memory: Some(Quantity(self.memory.clone())),
                                cpu: Some(Quantity(self.cpu.clone())),
                            }),
                        }),
                        startup_probe: None,
                        liveness_probe: None,
                        readiness_probe: None,
                    })
                    .chain(self.sidecars.containers.iter().map(sidecar_yaml))
                    .collect(),
                },
            },
        }
    }

    /// The in-memory volumes, then the main container's secret volumes.
    fn volumes_yaml(&self) -> Vec<VolumeYaml> {
        self.sidecars
            .volumes
            .iter()
            .map(|(name, size)| VolumeYaml {
                name: name.clone(),
                secret: None,
                empty_dir: Some(EmptyDirYaml {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity(bytes_quantity(*size))),
                }),
            })
            .chain(yaml_secrets::volumes_yaml(&self.secrets))
            .collect()
    }

    /// The dependencies annotation's value, if any container has dependencies.
    fn dependencies_yaml(&self) -> Option<String> {
        let deps: BTreeMap<String, Vec<String>> = self
            .containers()
            .into_iter()
            .filter(|c| !c.depends_on.is_empty())
            .map(|c| (c.name, c.depends_on))
            .collect();
        (!deps.is_empty()).then(|| serde_json::to_string(&deps).unwrap_or_default())
    }

    /// The job as Cloud Run job YAML (what `-f` reads).
    pub fn to_yaml(&self) -> JobYaml {
        JobYaml {
            api_version: API_VERSION.into(),
            kind: "Job".into(),
            metadata: MetadataYaml {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: JobSpecYaml {
                template: ExecutionTemplateYaml {
                    metadata: self.dependencies_yaml().map(|d| MetadataYaml {
                        annotations: [(super::CONTAINER_DEPENDENCIES.to_string(), d)].into(),
                        ..Default::default()
                    }),
                    spec: self.execution_spec(),
                },
            },
        }
    }
}

/// Bytes as a quantity: whole mebibytes as `NMi`, else bytes.
fn bytes_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

fn mounts_yaml(
    mounts: &[crate::spec::container::Mount],
) -> impl Iterator<Item = VolumeMountYaml> + '_ {
    mounts.iter().map(|m| VolumeMountYaml {
        name: m.volume.clone(),
        mount_path: m.path.clone(),
    })
}

/// A sidecar in the job YAML's shape, its startup probe with every value explicit (its
/// secret files are not written back: only the main container's are; its secret variables
/// are).
fn sidecar_yaml(c: &crate::spec::container::Container) -> ContainerYaml {
    ContainerYaml {
        name: Some(c.name.clone()),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c
            .env
            .iter()
            .map(|(k, v)| EnvVarYaml {
                name: k.clone(),
                value: Some(v.clone()),
                value_from: None,
            })
            .chain(yaml_secrets::env_yaml(&c.secrets))
            .collect(),
        volume_mounts: mounts_yaml(&c.mounts).collect(),
        resources: Some(ResourcesYaml {
            limits: Some(LimitsYaml {
                memory: Some(Quantity(bytes_quantity(c.memory_bytes))),
                cpu: Some(Quantity(c.cpu.to_string())),
            }),
        }),
        startup_probe: c.startup_probe.as_ref().map(|p| {
            crate::spec::service_yaml_export::probe_of(&crate::spec::to_run_v2::probe_of(p))
        }),
        liveness_probe: None,
        readiness_probe: None,
    }
}

/// `kind: Job` of `run.googleapis.com/v1`, the subset runlet runs. Anything else is refused
/// with its path (`deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobYaml {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: MetadataYaml,
    pub spec: JobSpecYaml,
}

/// Labels and annotations are accepted (gcloud's exports carry them) and not acted on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetadataYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// gcloud exports put the project number here; runlet has no projects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobSpecYaml {
    pub template: ExecutionTemplateYaml,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecutionTemplateYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataYaml>,
    pub spec: ExecutionSpecYaml,
}

/// `taskCount`, `parallelism` and the task template: a Job's `spec.template.spec`, and the
/// `spec` of an execution record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecutionSpecYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_count: Option<u32>,
    /// 0 or absent: unset (as many as allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    pub template: TaskTemplateYaml,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskTemplateYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataYaml>,
    pub spec: TaskSpecYaml,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskSpecYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub containers: Vec<ContainerYaml>,
    /// Secret volumes (the only kind runlet's jobs take).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeYaml>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVarYaml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesYaml>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMountYaml>,
    /// A sidecar's startup probe: what depends on it starts once it passed. It must name a
    /// port; the main container (the first) has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<ProbeYaml>,
    /// Read only to be refused with their path: a job's containers have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ProbeYaml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ProbeYaml>,
}

/// A value, or `valueFrom.secretKeyRef` (a secret's version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarYaml {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSourceYaml>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourcesYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsYaml>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsYaml {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "memory_quantity"
    )]
    pub memory: Option<Quantity>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "cpu_quantity"
    )]
    pub cpu: Option<Quantity>,
}

// serde_yaml_ng reports an error raised inside a value at the enclosing map's path: name the
// key in the message.
fn memory_quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Quantity>, D::Error> {
    Quantity::deserialize(d)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("memory: {e}")))
}

fn cpu_quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Quantity>, D::Error> {
    Quantity::deserialize(d)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("cpu: {e}")))
}

/// A Kubernetes quantity and a probe: the ones service.yaml reads.
pub use crate::spec::service_yaml::{ProbeYaml, Quantity};

/// The annotation that names the execution environment (jobs: gen2 only).
pub const EXECUTION_ENVIRONMENT: &str = "run.googleapis.com/execution-environment";

/// Parses Cloud Run job YAML; an unknown field or a wrong type is named with its path.
pub fn parse_yaml(text: &str) -> Result<JobYaml, SpecError> {
    let job: JobYaml = serde_yaml_ng::from_str(text).map_err(|e| bad("job YAML", e.to_string()))?;
    if job.api_version != API_VERSION {
        return Err(bad(
            "job YAML",
            format!(
                "apiVersion: {:?} is not supported: use {API_VERSION}",
                job.api_version
            ),
        ));
    }
    if job.kind != "Job" {
        return Err(bad(
            "job YAML",
            format!("kind: {:?} is not supported: use Job", job.kind),
        ));
    }
    // The execution template's annotation gcloud exports (`gen2` for every job).
    if let Some(env) = job
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.get(EXECUTION_ENVIRONMENT))
    {
        let field = "spec.template.metadata.annotations[run.googleapis.com/execution-environment]";
        crate::spec::execution::job_environment(
            field,
            crate::spec::ExecutionEnvironment::parse(field, env)?,
        )?;
    }
    let containers = &job.spec.template.spec.template.spec.containers;
    if containers.is_empty() || containers.len() > crate::spec::container::MAX_CONTAINERS {
        return Err(bad(
            "job YAML",
            format!(
                "spec.template.spec.template.spec.containers: a task has 1 to {} containers (its main container and its sidecars), found {}",
                crate::spec::container::MAX_CONTAINERS,
                containers.len()
            ),
        ));
    }
    for v in &job.spec.template.spec.template.spec.volumes {
        if v.secret.is_some() == v.empty_dir.is_some() {
            return Err(bad(
                "spec.template.spec.template.spec.volumes",
                format!(
                    "{}: give secret or emptyDir (medium Memory), one of them",
                    v.name
                ),
            ));
        }
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::flags;
    use super::super::{resolve, JobFlags};
    use super::*;

    const YAML: &str = r#"
apiVersion: run.googleapis.com/v1
kind: Job
metadata:
  name: from-file
  namespace: '123456789'
  labels:
    team: data
  annotations:
    run.googleapis.com/launch-stage: BETA
spec:
  template:
    metadata:
      annotations:
        run.googleapis.com/execution-environment: gen2
    spec:
      taskCount: 4
      parallelism: 2
      template:
        spec:
          maxRetries: 1
          timeoutSeconds: 90
          containers:
          - name: job
            image: probe
            command: [/probe]
            args: [job]
            env:
            - name: A
              value: from-file
            - name: B
              value: file
            resources:
              limits:
                memory: 256Mi
                cpu: 1
"#;

    #[test]
    fn yaml_maps_to_the_spec_and_flags_override_it() {
        let file = parse_yaml(YAML).unwrap();
        let s = resolve(&JobFlags::default(), Some(&file)).unwrap();
        assert_eq!(s.name, "from-file");
        assert_eq!(s.image, "docker.io/library/probe:latest");
        assert_eq!(s.task_count, 4);
        assert_eq!(s.parallelism, Some(2));
        assert_eq!(s.max_retries, 1);
        assert_eq!(s.task_timeout, Duration::from_secs(90));
        assert_eq!(s.command, Some(vec!["/probe".to_string()]));
        assert_eq!(s.args, Some(vec!["job".to_string()]));
        assert_eq!(
            s.env,
            vec![
                ("A".into(), "from-file".into()),
                ("B".into(), "file".into())
            ]
        );
        assert_eq!(s.memory_bytes, 256 << 20);
        assert_eq!(s.cpu, "1");

        // Precedence: a flag given wins, a flag not given leaves the file's value.
        let over = JobFlags {
            name: Some("renamed".into()),
            tasks: Some("6".into()),
            max_retries: Some("0".into()),
            set_env_vars: vec!["A=from-flag".into()],
            args: Some(vec!["job".into(), "x".into()]),
            cpu: Some("2".into()),
            ..Default::default()
        };
        let s = resolve(&over, Some(&file)).unwrap();
        assert_eq!(s.name, "renamed");
        assert_eq!(s.task_count, 6);
        assert_eq!(s.parallelism, Some(2), "from the file");
        assert_eq!(s.max_retries, 0);
        assert_eq!(s.task_timeout, Duration::from_secs(90), "from the file");
        assert_eq!(
            s.env,
            vec![
                ("A".into(), "from-flag".into()),
                ("B".into(), "file".into())
            ]
        );
        assert_eq!(s.args, Some(vec!["job".to_string(), "x".to_string()]));
        assert_eq!(s.command, Some(vec!["/probe".to_string()]));
        assert_eq!(s.cpu_value, 2.0);
        assert_eq!(s.memory_bytes, 256 << 20, "from the file");
    }

    #[test]
    fn yaml_with_sidecars_round_trips() {
        let text = YAML.replace(
            "        run.googleapis.com/execution-environment: gen2\n",
            "        run.googleapis.com/execution-environment: gen2\n        run.googleapis.com/container-dependencies: '{\"job\":[\"web\"]}'\n",
        ) + "          - name: web\n            image: busybox\n            volumeMounts: [{name: shared, mountPath: /s}]\n";
        let text = text.replace(
            "          containers:",
            "          volumes: [{name: shared, emptyDir: {medium: Memory, sizeLimit: 8Mi}}]\n          containers:",
        );
        let s = resolve(&JobFlags::default(), Some(&parse_yaml(&text).unwrap())).unwrap();
        let names: Vec<String> = s.containers().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["job", "web"]);
        assert_eq!(s.sidecars.ingress_depends_on, ["web"]);
        assert_eq!(s.sidecars.volumes, [("shared".to_string(), 8 << 20)]);
        assert_eq!(s.sidecars.containers[0].mounts[0].path, "/s");
        let out = serde_yaml_ng::to_string(&s.to_yaml()).unwrap();
        let again = resolve(&JobFlags::default(), Some(&parse_yaml(&out).unwrap())).unwrap();
        assert_eq!(again, s, "{out}");
        // Refused, naming what is wrong.
        for (bad, want) in [
            (
                text.replace("[\"web\"]", "[\"nope\"]"),
                "container job depends on nope, which is not defined",
            ),
            (
                text.replace(
                    "{\"job\":[\"web\"]}",
                    "{\"job\":[\"web\"],\"web\":[\"job\"]}",
                ),
                "a dependency cycle among job, web",
            ),
            (
                text.replace("- name: web\n", "- name: job\n"),
                "container job is given twice",
            ),
        ] {
            let e = parse_yaml(&bad)
                .and_then(|f| resolve(&JobFlags::default(), Some(&f)))
                .unwrap_err();
            assert!(e.detail.contains(want), "want {want:?}: {e}");
        }
    }

    /// [`YAML`] with a sidecar `web` that the main container `job` depends on, given
    /// `main_extra` and `web_extra` (lines of each container, e.g. a probe).
    fn with_sidecar(main_extra: &str, web_extra: &str) -> String {
        let text = YAML.replace(
            "        run.googleapis.com/execution-environment: gen2\n",
            "        run.googleapis.com/execution-environment: gen2\n        run.googleapis.com/container-dependencies: '{\"job\":[\"web\"]}'\n",
        );
        let text = text.replace(
            "            args: [job]\n",
            &format!("            args: [job]\n{main_extra}"),
        );
        format!("{text}          - name: web\n            image: probe\n{web_extra}")
    }

    #[test]
    fn a_sidecars_startup_probe_maps_as_the_api_maps_it_and_round_trips() {
        use crate::spec::probe::{Action, Probe};
        let secs = Duration::from_secs;
        let table: Vec<(&str, Probe)> = vec![
            (
                "{tcpSocket: {port: 8081}, periodSeconds: 1, failureThreshold: 10}",
                Probe {
                    period: secs(1),
                    failure_threshold: 10,
                    ..Probe::tcp(8081)
                },
            ),
            (
                "{httpGet: {path: /ready, port: 9000}, initialDelaySeconds: 2, timeoutSeconds: 3}",
                Probe {
                    action: Action::Http {
                        path: "/ready".into(),
                        port: 9000,
                    },
                    initial_delay: secs(2),
                    timeout: secs(3),
                    ..Probe::tcp(0)
                },
            ),
            (
                "{httpGet: {port: 9000}}",
                Probe {
                    action: Action::Http {
                        path: "/".into(),
                        port: 9000,
                    },
                    ..Probe::tcp(0)
                },
            ),
            (
                "{grpc: {port: 50051, service: health}}",
                Probe {
                    action: Action::Grpc {
                        port: 50051,
                        service: "health".into(),
                    },
                    ..Probe::tcp(0)
                },
            ),
        ];
        for (probe, want) in table {
            let text = with_sidecar("", &format!("            startupProbe: {probe}\n"));
            let s = resolve(&JobFlags::default(), Some(&parse_yaml(&text).unwrap()))
                .unwrap_or_else(|e| panic!("{probe}: {e}"));
            assert_eq!(s.sidecars.ingress_depends_on, ["web"], "{probe}");
            assert_eq!(
                s.sidecars.containers[0].startup_probe.as_ref(),
                Some(&want),
                "{probe}"
            );
            // Written back (what `to_yaml` and the execution records hold), read back the same.
            let out = serde_yaml_ng::to_string(&s.to_yaml()).unwrap();
            assert!(out.contains("startupProbe:"), "{out}");
            let again = resolve(&JobFlags::default(), Some(&parse_yaml(&out).unwrap())).unwrap();
            assert_eq!(again, s, "{out}");
        }
    }

    #[test]
    fn bad_probes_are_refused_with_their_yaml_path() {
        const AT: &str = "spec.template.spec.template.spec.containers";
        let probe = "startupProbe: {tcpSocket: {port: 8081}}";
        let table = [
            (
                format!("            {probe}\n"),
                String::new(),
                format!("{AT}[0].startupProbe: container job is the main container (the first): nothing waits for it"),
            ),
            (
                String::new(),
                "            livenessProbe: {tcpSocket: {port: 8081}}\n".to_string(),
                format!("{AT}[1].livenessProbe: liveness and readiness probes are not allowed on a job's containers"),
            ),
            (
                "            readinessProbe: {tcpSocket: {port: 8081}}\n".to_string(),
                String::new(),
                format!("{AT}[0].readinessProbe: liveness and readiness probes are not allowed"),
            ),
            (
                String::new(),
                "            startupProbe: {tcpSocket: {}}\n".to_string(),
                format!("{AT}[1].startupProbe: container web: its probe must name a port"),
            ),
            (
                String::new(),
                "            startupProbe: {periodSeconds: 1}\n".to_string(),
                format!("{AT}[1].startupProbe: container web: its probe must name a port"),
            ),
            (
                String::new(),
                "            startupProbe: {tcpSocket: {port: 1}, httpGet: {port: 1}}\n".to_string(),
                format!("{AT}[1].startupProbe: give one of httpGet, tcpSocket, grpc"),
            ),
            (
                String::new(),
                "            startupProbe: {tcpSocket: {port: 8081}, periodSeconds: 500}\n".to_string(),
                format!("{AT}[1].startupProbe: periodSeconds=500 is out of range: allowed 1 to 240"),
            ),
            (
                String::new(),
                "            startupProbe: {tcpSocket: {port: 70000}}\n".to_string(),
                format!("{AT}[1].startupProbe: port 70000 is out of range"),
            ),
            (
                String::new(),
                "            startupProbe: {httpGet: {path: ready, port: 1}}\n".to_string(),
                format!("{AT}[1].startupProbe: httpGet.path=\"ready\" must start with /"),
            ),
            (
                String::new(),
                "            startupProbe: {exec: {command: [x]}}\n".to_string(),
                "startupProbe: unknown field `exec`".to_string(),
            ),
        ];
        for (main, web, want) in table {
            let text = with_sidecar(&main, &web);
            let e = parse_yaml(&text)
                .and_then(|f| resolve(&JobFlags::default(), Some(&f)))
                .expect_err(&want)
                .to_string();
            assert!(e.contains(&want), "want {want:?} in: {e}");
        }
    }

    #[test]
    fn yaml_round_trips() {
        let file = parse_yaml(YAML).unwrap();
        let s = resolve(&JobFlags::default(), Some(&file)).unwrap();
        let text = serde_yaml_ng::to_string(&s.to_yaml()).unwrap();
        let again = resolve(&JobFlags::default(), Some(&parse_yaml(&text).unwrap())).unwrap();
        assert_eq!(again, s, "{text}");
        // And from flags alone.
        let mut f = flags("flags-only", "busybox");
        f.tasks = Some("3".into());
        f.set_env_vars = vec!["X=1".into()];
        f.command = Some(vec!["/bin/sh".into()]);
        f.task_timeout = Some("2m".into());
        let s = resolve(&f, None).unwrap();
        let text = serde_yaml_ng::to_string(&s.to_yaml()).unwrap();
        let again = resolve(&JobFlags::default(), Some(&parse_yaml(&text).unwrap())).unwrap();
        assert_eq!(again, s, "{text}");
    }

    const SECRETS: &str = r#"
          volumes:
          - name: api
            secret:
              secretName: api-key
              items:
              - key: "1"
                path: key
              - key: latest
                path: sub/new
          - name: whole
            secret:
              secretName: projects/p1/secrets/cert
          containers:
          - image: probe
            env:
            - name: PLAIN
              value: x
            - name: DB
              valueFrom:
                secretKeyRef:
                  name: db
                  key: latest
            volumeMounts:
            - name: api
              mountPath: /secrets/api
            - name: whole
              mountPath: /certs
"#;

    fn with_secrets() -> String {
        let head = YAML.split("          containers:").next().unwrap();
        format!("{head}{}", SECRETS.trim_start_matches('\n'))
    }

    #[test]
    fn secrets_map_as_references_and_round_trip() {
        use crate::spec::secrets::{SecretFlags, Version};
        let file = parse_yaml(&with_secrets()).unwrap();
        let s = resolve(&JobFlags::default(), Some(&file)).unwrap();
        assert_eq!(s.env, vec![("PLAIN".into(), "x".into())]);
        assert_eq!(s.secrets.env.len(), 1);
        assert_eq!(s.secrets.env[0].1.version, Version::Latest);
        let keys: Vec<String> = s.secrets.files.iter().map(|f| f.key()).collect();
        assert_eq!(
            keys,
            ["/secrets/api/key", "/secrets/api/sub/new", "/certs/cert"]
        );
        // Written back (what execution records hold): references, read back the same.
        let text = serde_yaml_ng::to_string(&s.to_yaml()).unwrap();
        assert!(text.contains("secretKeyRef"), "{text}");
        let again = resolve(&JobFlags::default(), Some(&parse_yaml(&text).unwrap())).unwrap();
        assert_eq!(again, s, "{text}");
        // Flags change the file's secrets.
        let over = JobFlags {
            secrets: SecretFlags {
                remove: vec!["DB,/certs/cert".into()],
                update: vec!["NEW=n:2".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let s = resolve(&over, Some(&file)).unwrap();
        assert_eq!(s.secrets.env[0].0, "NEW");
        assert_eq!(s.secrets.files.len(), 2);
        let clear = JobFlags {
            secrets: SecretFlags {
                clear: true,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(resolve(&clear, Some(&file)).unwrap().secrets.is_empty());
    }

    #[test]
    fn the_execution_environment_annotation_is_gen2_for_jobs() {
        assert!(parse_yaml(YAML).is_ok());
        let gen1 = YAML.replace("execution-environment: gen2", "execution-environment: gen1");
        let e = parse_yaml(&gen1).unwrap_err();
        assert!(e.field.contains("execution-environment"), "{e}");
        assert!(e.detail.contains("gen2"), "{e}");
        let bad = YAML.replace("execution-environment: gen2", "execution-environment: gen9");
        assert!(parse_yaml(&bad).is_err());
    }

    #[test]
    fn bad_yaml_names_the_field() {
        let table = [
            (YAML.replace("maxRetries: 1", "maxRetries: 1\n          serviceAccountName: sa"), "spec.template.spec.template.spec: unknown field `serviceAccountName`"),
            (YAML.replace("value: file", "valueFrom: {}"), "spec.template.spec.template.spec.containers[0].env[1].valueFrom: missing field `secretKeyRef`"),
            (YAML.replace("value: file", "valueFrom: {secretKeyRef: {name: s, key: x}}"), "version \"x\" is not latest or a number"),
            (YAML.replace("value: file", "value: v\n              valueFrom: {secretKeyRef: {name: s, key: '1'}}"), "not both"),
            (YAML.replace("          containers:", "          volumes: [{name: m, nfs: {}}]\n          containers:"), "unknown field `nfs`"),
            (YAML.replace("            resources:", "            volumeMounts: [{name: nov, mountPath: /x}]\n            resources:"), "nov is not a volume"),
            (YAML.replace("taskCount: 4", "taskCount: -4"), "spec.template.spec.taskCount"),
            (YAML.replace("taskCount: 4", "taskCount: 0"), "spec.template.spec.taskCount: 0 is out of range"),
            (YAML.replace("maxRetries: 1", "maxRetries: 20"), "spec.template.spec.template.spec.maxRetries: 20 is out of range"),
            (YAML.replace("timeoutSeconds: 90", "timeoutSeconds: 0"), "spec.template.spec.template.spec.timeoutSeconds"),
            (YAML.replace("memory: 256Mi", "memory: lots"), "resources.limits.memory"),
            (YAML.replace("cpu: 1", "cpu: [1]"), "spec.template.spec.template.spec.containers[0].resources.limits: cpu: expected a quantity"),
            (YAML.replace("kind: Job", "kind: Service"), "kind"),
            (YAML.replace("run.googleapis.com/v1\n", "serving.knative.dev/v1\n"), "apiVersion"),
            (YAML.replace("name: A", "name: CLOUD_RUN_JOB"), "reserved"),
            (YAML.replace("  name: from-file", "  name: From_File"), "metadata.name"),
            (YAML.replace("spec:\n  template:", "spec:\n  bogus: 1\n  template:"), "spec: unknown field `bogus`"),
            (YAML.replace("          - name: job\n", "          - name: job\n            ports: [{containerPort: 8080}]\n"), "unknown field `ports`"),
            (format!("{YAML}          - image: second\n"), "has no name"),
        ];
        for (text, needle) in table {
            let err = parse_yaml(&text).and_then(|f| resolve(&JobFlags::default(), Some(&f)));
            let e = err.expect_err(needle).to_string();
            assert!(e.contains(needle), "want {needle:?} in: {e}");
        }
    }
}
