//! The Admin API v2's `Job` (its `ExecutionTemplate`), with a `RunJob` call's overrides, as
//! a [`JobSpec`]: what the daemon runs for one execution. Mapped: `template.taskCount`,
//! `template.parallelism`, `template.template.maxRetries`, `template.template.timeout`,
//! the container's image, command, args, env and `resources.limits`; labels and annotations
//! are kept (platform prefixes refused). A field runlet cannot honour is refused, naming its
//! path, where ignoring it would change behaviour (volumes other than secrets, VPC access,
//! sidecars); secrets are kept as references;
//! hints (`serviceAccount`, `executionEnvironment`) are accepted. Defaults are Cloud Run's.

use std::time::Duration;

use super::{
    bad, task_timeout, JobSpec, DEFAULT_CPU, DEFAULT_MAX_RETRIES, DEFAULT_MEMORY,
    DEFAULT_TASK_TIMEOUT, MAX_NAME, MAX_RETRIES, MAX_TASKS, RESERVED_ENV,
};
use crate::image::reference;
use crate::pb::run_v2::run_job_request::{overrides::ContainerOverride, Overrides};
use crate::pb::run_v2::{self as v2, task_template, volume};
use crate::spec::container::{Container, Mount, Sidecars};
use crate::spec::run_v2_containers::{job_field, F};
use crate::spec::{self as svc, secrets_v2, SpecError};

/// The spec of job `id` (its short id) from the resource, with `overrides` (a `RunJob`'s)
/// applied: args replace the container's, env merges by name, task count and timeout
/// replace.
pub fn job_spec(
    id: &str,
    job: &v2::Job,
    overrides: Option<&Overrides>,
) -> Result<JobSpec, SpecError> {
    svc::check_name("job_id", id, MAX_NAME)?;
    svc::run_v2::check_keys("job.labels", job.labels.keys())?;
    svc::run_v2::check_keys("job.annotations", job.annotations.keys())?;
    let exec = job
        .template
        .as_ref()
        .ok_or_else(|| bad("job.template", "is required"))?;
    svc::run_v2::check_keys("job.template.labels", exec.labels.keys())?;
    svc::run_v2::check_keys("job.template.annotations", exec.annotations.keys())?;
    let task = exec
        .template
        .as_ref()
        .ok_or_else(|| bad("job.template.template", "is required"))?;
    check_task(task)?;
    let cs = task.containers.as_slice();
    let c = match cs {
        [] => {
            return Err(bad(
                "job.template.template.containers",
                "one container is required",
            ))
        }
        [c, ..] if cs.len() <= crate::spec::container::MAX_CONTAINERS => c,
        _ => {
            return Err(bad(
                "job.template.template.containers",
                format!(
                    "{} containers: a task has 1 to {} (its main container and its sidecars)",
                    cs.len(),
                    crate::spec::container::MAX_CONTAINERS
                ),
            ))
        }
    };
    for (i, c) in cs.iter().enumerate() {
        check_container(i, c)?;
    }
    if c.image.is_empty() {
        return Err(bad(
            "job.template.template.containers[0].image",
            "is required",
        ));
    }
    let image = reference::normalize(&c.image)
        .map_err(|e| bad("job.template.template.containers[0].image", e.to_string()))?;

    let mut task_count = match exec.task_count {
        0 => 1,
        n => svc::in_range("job.template.taskCount", n, 1, MAX_TASKS as i32)? as u32,
    };
    let parallelism = match exec.parallelism {
        0 => None,
        n => Some(svc::in_range("job.template.parallelism", n, 0, MAX_TASKS as i32)? as u32),
    };
    let max_retries = match task.retries {
        None => DEFAULT_MAX_RETRIES,
        Some(task_template::Retries::MaxRetries(n)) => {
            svc::in_range("job.template.template.maxRetries", n, 0, MAX_RETRIES as i32)? as u32
        }
    };
    let mut timeout = match &task.timeout {
        None => DEFAULT_TASK_TIMEOUT,
        Some(d) => task_timeout("job.template.template.timeout", duration(d)?)?,
    };
    let mut env = env_vars("job.template.template.containers[0].env", &c.env)?;
    let list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let mut args = list(&c.args);

    if let Some(o) = overrides {
        for (k, co) in o.container_overrides.iter().enumerate() {
            let Some(i) = cs
                .iter()
                .position(|c| co.name == c.name || (k == 0 && co.name.is_empty()))
            else {
                return Err(bad(
                    "overrides.containerOverrides",
                    format!("no container named {:?} in the job", co.name),
                ));
            };
            if i > 0 {
                // A sidecar's: applied once the sidecars are mapped.
                continue;
            }
            apply_override(co, &mut args, &mut env)?;
        }
        if o.task_count != 0 {
            task_count =
                svc::in_range("overrides.taskCount", o.task_count, 1, MAX_TASKS as i32)? as u32;
        }
        if let Some(d) = &o.timeout {
            timeout = task_timeout("overrides.timeout", duration(d)?)?;
        }
    }

    let (memory, memory_bytes, cpu, cpu_value) = resources(0, c)?;
    let secrets = secrets_v2::bindings(
        SECRET_FIELDS,
        secrets_v2::project_of(&job.name),
        &c.env,
        &task.volumes,
        &c.volume_mounts,
    )?;
    if let Some(m) = c
        .volume_mounts
        .iter()
        .find(|m| !task.volumes.iter().any(|v| v.name == m.name))
    {
        return Err(bad(
            SECRET_FIELDS.mounts,
            format!("{} is not a volume of the task template", m.name),
        ));
    }
    secrets.check("job.template.template.containers[0]", &env)?;
    let sidecars = sidecars(job, task, memory_bytes, overrides)?;
    let spec = JobSpec {
        name: id.to_string(),
        image,
        task_count,
        parallelism,
        max_retries,
        task_timeout: timeout,
        env,
        command: list(&c.command),
        args,
        memory,
        memory_bytes,
        cpu,
        cpu_value,
        secrets,
        sidecars,
    };
    if !spec.sidecars.is_empty() {
        crate::spec::container::check_job(&spec.containers())?;
    }
    Ok(spec)
}

/// The task's sidecars (containers after the first), its in-memory volumes and the main
/// container's dependencies and mounts; a `RunJob`'s overrides naming a sidecar applied.
fn sidecars(
    job: &v2::Job,
    task: &v2::TaskTemplate,
    main_memory: u64,
    overrides: Option<&Overrides>,
) -> Result<Sidecars, SpecError> {
    let cs = &task.containers;
    if cs.len() > 1 {
        for (i, c) in cs.iter().enumerate() {
            if c.name.is_empty() {
                return Err(bad(
                    job_field(i, F::Name),
                    "is required when the task has more than one container",
                ));
            }
        }
    }
    svc::run_v2_containers::dependencies(cs, job_field)?;
    let mut containers = Vec::new();
    let mut task_memory = main_memory;
    for (i, c) in cs.iter().enumerate().skip(1) {
        let (_, memory_bytes, _, cpu) = resources(i, c)?;
        task_memory += memory_bytes;
        let mut env = env_vars(job_field(i, F::Env), &c.env)?;
        let mut args = (!c.args.is_empty()).then(|| c.args.clone());
        if let Some(co) = overrides
            .into_iter()
            .flat_map(|o| &o.container_overrides)
            .find(|co| co.name == c.name)
        {
            apply_override(co, &mut args, &mut env)?;
        }
        let fields = secrets_v2::Fields {
            env: job_field(i, F::Env),
            volumes: SECRET_FIELDS.volumes,
            mounts: job_field(i, F::VolumeMounts),
        };
        let secrets = secrets_v2::bindings(
            fields,
            secrets_v2::project_of(&job.name),
            &c.env,
            &task.volumes,
            &c.volume_mounts,
        )?;
        let startup_probe = c
            .startup_probe
            .as_ref()
            .map(|p| {
                svc::run_v2::portless_probe(job_field(i, F::StartupProbe), p, || {
                    format!("container {}: its probe must name a port (tcpSocket.port, httpGet.port or grpc.port)", c.name)
                })
            })
            .transpose()?;
        containers.push(Container {
            name: c.name.clone(),
            image: reference::normalize(&c.image)
                .map_err(|e| bad(job_field(i, F::Image), e.to_string()))?,
            port: None,
            command: (!c.command.is_empty()).then(|| c.command.clone()),
            args,
            env,
            memory_bytes,
            cpu,
            startup_probe,
            liveness_probe: None,
            mounts: mounts(i, c, task)?,
            depends_on: c.depends_on.clone(),
            secrets,
        });
    }
    let mut volumes = Vec::new();
    for v in &task.volumes {
        if let Some(volume::VolumeType::EmptyDir(e)) = &v.volume_type {
            let size = svc::run_v2::in_memory_size(
                "job.template.template.volumes",
                &v.name,
                &e.size_limit,
                task_memory,
            )?;
            volumes.push((v.name.clone(), size));
        }
    }
    let main = &cs[0];
    Ok(Sidecars {
        ingress_name: if main.name.is_empty() {
            super::DEFAULT_MAIN_NAME.to_string()
        } else {
            main.name.clone()
        },
        ingress_depends_on: main.depends_on.clone(),
        ingress_mounts: mounts(0, main, task)?,
        volumes,
        containers,
    })
}

/// Container `i`'s mounts of the task's in-memory volumes (secret ones are its secrets).
fn mounts(i: usize, c: &v2::Container, task: &v2::TaskTemplate) -> Result<Vec<Mount>, SpecError> {
    let mut out = Vec::new();
    for m in &c.volume_mounts {
        let Some(v) = task.volumes.iter().find(|v| v.name == m.name) else {
            return Err(bad(
                job_field(i, F::VolumeMounts),
                format!("{} is not a volume of the task template", m.name),
            ));
        };
        if matches!(v.volume_type, Some(volume::VolumeType::EmptyDir(_))) {
            if !m.mount_path.starts_with('/') {
                return Err(bad(
                    job_field(i, F::VolumeMounts),
                    format!("{}: mountPath {:?} must be absolute", m.name, m.mount_path),
                ));
            }
            out.push(Mount {
                volume: m.name.clone(),
                path: m.mount_path.clone(),
            });
        }
    }
    Ok(out)
}

const SECRET_FIELDS: secrets_v2::Fields = secrets_v2::Fields {
    env: "job.template.template.containers[0].env",
    volumes: "job.template.template.volumes",
    mounts: "job.template.template.containers[0].volumeMounts",
};

fn duration(d: &pbjson_types::Duration) -> Result<Duration, SpecError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(bad("job.template.template.timeout", "must not be negative"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Task-level settings runlet cannot honour.
fn check_task(t: &v2::TaskTemplate) -> Result<(), SpecError> {
    let field = "job.template.template.executionEnvironment";
    crate::spec::execution::job_environment(
        field,
        crate::spec::ExecutionEnvironment::from_v2(field, t.execution_environment)?,
    )?;
    if let Some(v) = t.volumes.iter().find(|v| {
        !secrets_v2::is_secret_volume(v)
            && !matches!(
                &v.volume_type,
                Some(volume::VolumeType::EmptyDir(e))
                    if e.medium == v2::empty_dir_volume_source::Medium::Memory as i32
                        || e.medium == v2::empty_dir_volume_source::Medium::Unspecified as i32
            )
    }) {
        return Err(bad(
            "job.template.template.volumes",
            format!(
                "{}: only secret and in-memory emptyDir volumes are supported for jobs yet",
                v.name
            ),
        ));
    }
    if t.vpc_access.is_some() {
        return Err(bad(
            "job.template.template.vpcAccess",
            "VPC access is not available on one machine: tasks reach the host's network through NAT; leave it unset",
        ));
    }
    if !t.encryption_key.is_empty() {
        return Err(bad(
            "job.template.template.encryptionKey",
            "customer-managed encryption keys are not supported; leave it unset",
        ));
    }
    if t.node_selector.is_some() {
        return Err(bad(
            "job.template.template.nodeSelector",
            "GPU node selection is not supported; leave it unset",
        ));
    }
    Ok(())
}

/// Container fields runlet cannot honour for a task.
fn check_container(i: usize, c: &v2::Container) -> Result<(), SpecError> {
    if !c.working_dir.is_empty() {
        return Err(bad(
            job_field(i, F::WorkingDir),
            "a working directory is not supported yet; leave it unset",
        ));
    }
    if !c.ports.is_empty() {
        return Err(bad(
            job_field(i, F::Ports),
            "a task serves nothing: no container of a job has a port",
        ));
    }
    if c.liveness_probe.is_some() || c.readiness_probe.is_some() {
        return Err(bad(
            job_field(i, F::LivenessProbe),
            "liveness and readiness probes are not allowed on a job's containers; leave them unset",
        ));
    }
    if i == 0 && c.startup_probe.is_some() {
        return Err(bad(
            job_field(i, F::StartupProbe),
            "the main container (the first) has no startup probe: nothing waits for it (a sidecar may have one); leave it unset",
        ));
    }
    Ok(())
}

/// (memory as given, bytes, CPU as given, CPUs): `resources.limits`, Cloud Run's defaults
/// where unset.
fn resources(i: usize, c: &v2::Container) -> Result<(String, u64, String, f64), SpecError> {
    let field = job_field(i, F::Limits);
    let mut memory = DEFAULT_MEMORY.to_string();
    let mut cpu = DEFAULT_CPU.to_string();
    if let Some(r) = &c.resources {
        for (k, v) in &r.limits {
            match k.as_str() {
                "memory" => memory = v.clone(),
                "cpu" => cpu = v.clone(),
                other => {
                    return Err(bad(
                        field,
                        format!("{other:?} is not supported: allowed cpu, memory"),
                    ))
                }
            }
        }
    }
    let bytes = svc::memory(job_field(i, F::Memory), &memory)?;
    let cpus = svc::cpu(job_field(i, F::Cpu), &cpu)?;
    Ok((memory, bytes, cpu, cpus))
}

/// A `RunJob` container override on its container's args and variables: `clearArgs` or
/// `args` replace the args, `env` sets the variables it names (the main container's and a
/// sidecar's alike).
fn apply_override(
    co: &ContainerOverride,
    args: &mut Option<Vec<String>>,
    env: &mut Vec<(String, String)>,
) -> Result<(), SpecError> {
    if co.clear_args {
        *args = None;
    } else if !co.args.is_empty() {
        *args = Some(co.args.clone());
    }
    for (k, v) in env_vars("overrides.containerOverrides.env", &co.env)? {
        match env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    Ok(())
}

/// A job's plain variables ([`svc::run_v2::plain_env`], with the job's reserved names).
fn env_vars(field: &'static str, vars: &[v2::EnvVar]) -> Result<Vec<(String, String)>, SpecError> {
    svc::run_v2::plain_env(field, vars, RESERVED_ENV, "runlet sets it in every task")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::run_v2::env_var;
    use crate::pb::run_v2::run_job_request::overrides::ContainerOverride;

    fn var(k: &str, v: &str) -> v2::EnvVar {
        v2::EnvVar {
            name: k.into(),
            values: Some(env_var::Values::Value(v.into())),
        }
    }

    pub(crate) fn job(image: &str) -> v2::Job {
        v2::Job {
            template: Some(v2::ExecutionTemplate {
                task_count: 4,
                parallelism: 2,
                template: Some(v2::TaskTemplate {
                    containers: vec![v2::Container {
                        image: image.into(),
                        args: vec!["a".into()],
                        env: vec![var("A", "1"), var("B", "2")],
                        ..Default::default()
                    }],
                    retries: Some(task_template::Retries::MaxRetries(1)),
                    timeout: Some(pbjson_types::Duration {
                        seconds: 30,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fields_map_with_cloud_run_defaults() {
        let s = job_spec("hello", &job("busybox"), None).unwrap();
        assert_eq!(s.image, "docker.io/library/busybox:latest");
        assert_eq!(
            (s.task_count, s.parallelism, s.max_retries),
            (4, Some(2), 1)
        );
        assert_eq!(s.task_timeout, Duration::from_secs(30));
        assert_eq!(s.args.as_deref(), Some(&["a".to_string()][..]));
        assert_eq!((s.memory.as_str(), s.cpu.as_str()), ("512Mi", "1"));

        let mut bare = job("busybox");
        let t = bare.template.as_mut().unwrap();
        (t.task_count, t.parallelism) = (0, 0);
        let tt = t.template.as_mut().unwrap();
        (tt.retries, tt.timeout) = (None, None);
        let s = job_spec("hello", &bare, None).unwrap();
        assert_eq!((s.task_count, s.parallelism, s.max_retries), (1, None, 3));
        assert_eq!(s.task_timeout, Duration::from_secs(600));
    }

    #[test]
    fn overrides_replace_args_count_timeout_and_merge_env() {
        let o = Overrides {
            container_overrides: vec![ContainerOverride {
                args: vec!["x".into(), "y".into()],
                env: vec![var("B", "3"), var("C", "4")],
                ..Default::default()
            }],
            task_count: 2,
            timeout: Some(pbjson_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        };
        let s = job_spec("hello", &job("busybox"), Some(&o)).unwrap();
        assert_eq!(s.task_count, 2);
        assert_eq!(s.task_timeout, Duration::from_secs(5));
        assert_eq!(s.args, Some(vec!["x".to_string(), "y".to_string()]));
        let env: Vec<(&str, &str)> = s
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("A", "1"), ("B", "3"), ("C", "4")]);
        let clear = Overrides {
            container_overrides: vec![ContainerOverride {
                clear_args: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            job_spec("hello", &job("busybox"), Some(&clear))
                .unwrap()
                .args,
            None
        );
    }

    #[test]
    fn refusals_name_the_field() {
        type Change = Box<dyn Fn(&mut v2::Job)>;
        let table: Vec<(&str, Change)> = vec![
            ("job.template", Box::new(|j| j.template = None)),
            (
                "job.template.taskCount",
                Box::new(|j| j.template.as_mut().unwrap().task_count = 10_001),
            ),
            (
                "job.template.template.maxRetries",
                Box::new(|j| {
                    j.template
                        .as_mut()
                        .unwrap()
                        .template
                        .as_mut()
                        .unwrap()
                        .retries = Some(task_template::Retries::MaxRetries(11))
                }),
            ),
            (
                "job.template.template.timeout",
                Box::new(|j| {
                    j.template
                        .as_mut()
                        .unwrap()
                        .template
                        .as_mut()
                        .unwrap()
                        .timeout = Some(pbjson_types::Duration {
                        seconds: 0,
                        nanos: 0,
                    })
                }),
            ),
            (
                "job.template.template.containers",
                Box::new(|j| {
                    j.template
                        .as_mut()
                        .unwrap()
                        .template
                        .as_mut()
                        .unwrap()
                        .containers
                        .clear()
                }),
            ),
            (
                "job.template.template.containers[0].env",
                Box::new(|j| {
                    j.template
                        .as_mut()
                        .unwrap()
                        .template
                        .as_mut()
                        .unwrap()
                        .containers[0]
                        .env
                        .push(var("CLOUD_RUN_TASK_INDEX", "1"))
                }),
            ),
            (
                "job.template.template.containers[0].dependsOn",
                Box::new(|j| {
                    j.template
                        .as_mut()
                        .unwrap()
                        .template
                        .as_mut()
                        .unwrap()
                        .containers[0]
                        .depends_on = vec!["nope".into()]
                }),
            ),
            (
                "job.labels",
                Box::new(|j| {
                    j.labels.insert("run.googleapis.com/x".into(), "y".into());
                }),
            ),
        ];
        for (field, change) in table {
            let mut j = job("busybox");
            change(&mut j);
            let e = job_spec("hello", &j, None).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        assert_eq!(
            job_spec("Hello", &job("busybox"), None).unwrap_err().field,
            "job_id"
        );
    }
}
