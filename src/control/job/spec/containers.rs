//! Sidecars in jobs: a task's containers from `runlet job execute`'s `--container NAME`
//! groups and from the job YAML's `containers[]` (with the `container-dependencies`
//! annotation, in-memory `emptyDir` volumes and a sidecar's `startupProbe`), checked with
//! [`container::check_job`](crate::spec::container::check_job).
//!
//! The main container is the first one: the flags before the first `--container` when they
//! give `--image` (named [`DEFAULT_MAIN_NAME`]), else the first `--container` group; in
//! YAML, `containers[0]`. The decisions about which container is main and how a task ends
//! are in docs/architecture.md ("Sidecars in jobs").

use std::collections::BTreeMap;

use super::yaml::{JobYaml, TaskSpecYaml};
use super::{bad, check_env_name, resolve, JobFlags, JobSpec, DEFAULT_MAIN_NAME};
use crate::spec::container::{self, Container, Mount, Sidecars};
use crate::spec::probe::Probe;
use crate::spec::run_v2_containers::{job_yaml_field, F};
use crate::spec::{self as svc, SpecError, VolumeFlags};

/// The annotation naming each container's dependencies (a JSON map of name to names).
pub const CONTAINER_DEPENDENCIES: &str = "run.googleapis.com/container-dependencies";

/// A job from flags with `--container` groups (no `-f` beside them).
pub(super) fn resolve_groups(
    flags: &JobFlags,
    file: Option<&JobYaml>,
) -> Result<JobSpec, SpecError> {
    if file.is_some() {
        return Err(bad(
            "--container",
            "give a task's containers in the -f file or with --container, not both",
        ));
    }
    let mut head = flags.clone();
    head.containers = Vec::new();
    head.add_volume = Vec::new();
    head.add_volume_mount = Vec::new();
    let (main_name, main_deps, main_mounts, groups) = if flags.image.is_some() {
        (
            DEFAULT_MAIN_NAME.to_string(),
            Vec::new(),
            flags.add_volume_mount.clone(),
            &flags.containers[..],
        )
    } else {
        let first = &flags.containers[0];
        if let Some(flag) = flags.container_flag_given() {
            return Err(given_before(flag, &first.name));
        }
        if first.port.is_some() {
            return Err(bad(
                "--port",
                "a task serves nothing: no container of a job has a port",
            ));
        }
        head.image = first.image.clone();
        head.command = first.command.as_deref().map(svc::split_list);
        head.args = first.args.as_deref().map(svc::split_list);
        head.set_env_vars = first.set_env_vars.clone();
        head.env = first.env.clone();
        head.memory = first.memory.clone();
        head.cpu = first.cpu.clone();
        head.secrets = first.secrets.clone();
        if head.image.is_none() {
            return Err(bad(
                "--image",
                format!("container {} has no --image", first.name),
            ));
        }
        let deps = first
            .depends_on
            .iter()
            .flat_map(|d| svc::split_list(d))
            .filter(|d| !d.is_empty())
            .collect();
        (
            first.name.clone(),
            deps,
            first.add_volume_mount.clone(),
            &flags.containers[1..],
        )
    };
    let mut spec = resolve(&head, None)?;
    // In-memory volumes are bounded by the task's memory: every container's together.
    let mut task_memory = spec.memory_bytes;
    for g in groups {
        if let Some(m) = &g.memory {
            task_memory += svc::memory("--memory", m)?;
        } else {
            task_memory += svc::defaults::MEMORY;
        }
    }
    let vols = VolumeFlags::parse(&flags.add_volume, &main_mounts, task_memory)?;
    let mut sidecars = Vec::new();
    for g in groups {
        let c = g.check(&vols.volumes)?.container;
        for (k, _) in &c.env {
            check_env_name("--set-env-vars", k)?;
        }
        sidecars.push(c);
    }
    spec.sidecars = Sidecars {
        ingress_name: main_name,
        ingress_depends_on: main_deps,
        ingress_mounts: vols
            .mounts
            .iter()
            .map(|m| Mount {
                volume: m.volume.clone(),
                path: m.path.clone(),
            })
            .collect(),
        volumes: vols
            .volumes
            .iter()
            .map(|v| (v.name.clone(), v.size))
            .collect(),
        containers: sidecars,
    };
    container::check_job(&spec.containers())?;
    Ok(spec)
}

/// A container flag given before the first `--container` where no `--image` makes a main
/// container of them.
pub(super) fn given_before(flag: &'static str, first: &str) -> SpecError {
    bad(
        flag,
        format!(
            "given before the first --container but no --image there: put it after --container {first} (the main container)"
        ),
    )
}

const DEPS_FIELD: &str =
    "spec.template.metadata.annotations[run.googleapis.com/container-dependencies]";
const CONTAINERS: &str = "spec.template.spec.template.spec.containers";
const VOLUMES: &str = "spec.template.spec.template.spec.volumes";

/// The file's sidecars (containers after the first), its in-memory volumes and the
/// dependencies of its annotation; the main container's fields are [`resolve`]'s.
pub(super) fn from_yaml(file: &JobYaml, main_memory: u64) -> Result<Sidecars, SpecError> {
    let task = &file.spec.template.spec.template.spec;
    let deps: BTreeMap<String, Vec<String>> = match file
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.get(CONTAINER_DEPENDENCIES))
    {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            bad(
                DEPS_FIELD,
                format!("not a JSON map of container name to names ({e})"),
            )
        })?,
        None => BTreeMap::new(),
    };
    let mut sidecars = Vec::new();
    let mut task_memory = main_memory;
    for (i, c) in task.containers.iter().enumerate().skip(1) {
        let name = c.name.clone().ok_or_else(|| {
            bad(
                CONTAINERS,
                format!(
                    "container {} has no name: a task with several containers names each",
                    c.image
                ),
            )
        })?;
        let image = crate::image::reference::normalize(&c.image)
            .map_err(|e| bad(CONTAINERS, format!("{name}: image: {e}")))?;
        let mut env = Vec::new();
        for var in &c.env {
            check_env_name(CONTAINERS, &var.name)?;
            if var.value_from.is_none() {
                env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
            }
        }
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        let memory = limits
            .and_then(|l| l.memory.as_ref())
            .map_or(super::DEFAULT_MEMORY, |q| q.0.as_str());
        let cpu = limits
            .and_then(|l| l.cpu.as_ref())
            .map_or(super::DEFAULT_CPU, |q| q.0.as_str());
        let memory_bytes = svc::memory(CONTAINERS, memory)?;
        task_memory += memory_bytes;
        sidecars.push(Container {
            name: name.clone(),
            image,
            port: None,
            command: c.command.clone(),
            args: c.args.clone(),
            env,
            memory_bytes,
            cpu: svc::cpu(CONTAINERS, cpu)?,
            startup_probe: startup_probe(i, c, &name)?,
            liveness_probe: None,
            mounts: mounts(task, c)?,
            depends_on: deps.get(&name).cloned().unwrap_or_default(),
            secrets: super::yaml_secrets::bindings(c, &task.volumes)?,
        });
    }
    let main = task.containers.first();
    if let Some(c) = main {
        startup_probe(0, c, c.name.as_deref().unwrap_or(super::DEFAULT_MAIN_NAME))?;
    }
    // Kept as given (none: the default name, written back as none).
    let main_name = main.and_then(|c| c.name.clone()).unwrap_or_default();
    if task.containers.len() > 1 && main.is_some_and(|c| c.name.is_none()) {
        return Err(bad(
            CONTAINERS,
            "containers[0] has no name: a task with several containers names each",
        ));
    }
    let volumes = task
        .volumes
        .iter()
        .filter_map(|v| v.empty_dir.as_ref().map(|e| (v, e)))
        .map(|(v, e)| {
            if e.medium.as_deref().is_some_and(|m| m != "Memory") {
                return Err(bad(
                    VOLUMES,
                    format!("{}: emptyDir medium must be Memory", v.name),
                ));
            }
            let size = match &e.size_limit {
                None => task_memory,
                Some(q) => svc::memory(VOLUMES, &q.0)?.min(task_memory),
            };
            Ok((v.name.clone(), size))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sidecars {
        ingress_name: main_name.clone(),
        ingress_depends_on: deps.get(&main_name).cloned().unwrap_or_default(),
        ingress_mounts: match main {
            Some(c) => mounts(task, c)?,
            None => Vec::new(),
        },
        volumes,
        containers: sidecars,
    })
}

/// Container `i`'s startup probe, mapped and checked as the Admin API's is (values in
/// range, a port named); refused on the main container (`i` 0), and liveness and readiness
/// probes on any container, as the Admin API refuses them.
fn startup_probe(
    i: usize,
    c: &super::ContainerYaml,
    name: &str,
) -> Result<Option<Probe>, SpecError> {
    if c.liveness_probe.is_some() || c.readiness_probe.is_some() {
        let f = if c.liveness_probe.is_some() {
            F::LivenessProbe
        } else {
            F::ReadinessProbe
        };
        return Err(bad(
            job_yaml_field(i, f),
            "liveness and readiness probes are not allowed on a job's containers; leave them unset",
        ));
    }
    let Some(p) = &c.startup_probe else {
        return Ok(None);
    };
    let field = job_yaml_field(i, F::StartupProbe);
    if i == 0 {
        return Err(bad(
            field,
            format!("container {name} is the main container (the first): nothing waits for it, so it has no startup probe (a sidecar may); leave it unset"),
        ));
    }
    // The YAML shape as the API's (one of httpGet, tcpSocket, grpc), then its values.
    let api = svc::service_yaml_to_v2::probe(field, p).map_err(|e| {
        let detail = e.detail.strip_prefix(field).unwrap_or(&e.detail);
        bad(field, detail.trim_start_matches(": "))
    })?;
    let probe = svc::run_v2::probe(field, &api, 0)?;
    if svc::run_v2::action_port(&probe.action) == 0 {
        return Err(bad(
            field,
            format!("container {name}: its probe must name a port (tcpSocket.port, httpGet.port or grpc.port)"),
        ));
    }
    Ok(Some(probe))
}

/// A container's mounts of the task's in-memory volumes (secret ones are its secrets).
fn mounts(task: &TaskSpecYaml, c: &super::ContainerYaml) -> Result<Vec<Mount>, SpecError> {
    Ok(c.volume_mounts
        .iter()
        .filter(|m| {
            task.volumes
                .iter()
                .any(|v| v.name == m.name && v.empty_dir.is_some())
        })
        .map(|m| Mount {
            volume: m.name.clone(),
            path: m.mount_path.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::tests::flags;
    use super::*;

    use crate::spec::container_flags::ContainerFlags;

    fn group(name: &str, image: &str) -> ContainerFlags {
        ContainerFlags {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn which_container_is_main() {
        // --image before the first --container: that one, named "main".
        let mut f = flags("j", "busybox");
        f.containers = vec![group("side", "busybox")];
        let spec = resolve(&f, None).unwrap();
        let names: Vec<String> = spec.containers().into_iter().map(|c| c.name).collect();
        assert_eq!(names, s(&["main", "side"]));
        // No --image before: the first group.
        let mut f = flags("j", "x");
        f.image = None;
        f.containers = vec![
            ContainerFlags {
                depends_on: vec!["side".into()],
                args: Some("a,b".into()),
                ..group("first", "probe")
            },
            group("side", "busybox"),
        ];
        let spec = resolve(&f, None).unwrap();
        assert_eq!(spec.image, "docker.io/library/probe:latest");
        assert_eq!(spec.args, Some(s(&["a", "b"])));
        assert_eq!(spec.sidecars.ingress_name, "first");
        assert_eq!(spec.sidecars.ingress_depends_on, s(&["side"]));
        assert_eq!(spec.sidecars.containers[0].name, "side");
        // A single container: no sidecars.
        assert!(resolve(&flags("j", "probe"), None)
            .unwrap()
            .sidecars
            .is_empty());
    }

    #[test]
    fn refusals_name_the_flag() {
        type Edit = Box<dyn Fn(&mut JobFlags)>;
        let table: Vec<(&str, Edit, &str)> = vec![
            (
                "unknown dependency",
                Box::new(|f| f.containers[0].depends_on = vec!["db".into()]),
                "container side depends on db, which is not defined",
            ),
            (
                "cycle",
                Box::new(|f| {
                    f.containers[0].depends_on = vec!["other".into()];
                    f.containers[1].depends_on = vec!["side".into()];
                }),
                "a dependency cycle among side, other",
            ),
            (
                "eleven",
                Box::new(|f| {
                    f.containers = (0..10)
                        .map(|i| group(&format!("s{i}"), "busybox"))
                        .collect()
                }),
                "11 containers: a task has 1 to 10",
            ),
            (
                "a port",
                Box::new(|f| f.containers[0].port = Some(8080)),
                "no container of a job has a port",
            ),
            (
                "reserved env",
                Box::new(|f| f.containers[0].set_env_vars = vec!["CLOUD_RUN_TASK_INDEX=1".into()]),
                "reserved",
            ),
            (
                "unknown volume",
                Box::new(|f| {
                    f.containers[0].add_volume_mount = vec!["volume=v,mount-path=/v".into()]
                }),
                "not defined",
            ),
            (
                "flags before the first group without --image",
                Box::new(|f| {
                    f.image = None;
                    f.memory = Some("1Gi".into());
                }),
                "put it after --container side",
            ),
            (
                "same name as main",
                Box::new(|f| f.containers[1].name = "main".into()),
                "container main is given twice",
            ),
        ];
        for (name, edit, want) in table {
            let mut f = flags("j", "busybox");
            f.containers = vec![group("side", "busybox"), group("other", "busybox")];
            edit(&mut f);
            let e = resolve(&f, None).unwrap_err();
            assert!(e.detail.contains(want), "{name}: {e}");
        }
    }

    #[test]
    fn shared_volumes_are_sized_by_the_task() {
        let mut f = flags("j", "busybox");
        f.add_volume = vec!["name=shared,type=in-memory".into()];
        f.add_volume_mount = vec!["volume=shared,mount-path=/shared".into()];
        f.containers = vec![ContainerFlags {
            add_volume_mount: vec!["volume=shared,mount-path=/data".into()],
            ..group("side", "busybox")
        }];
        let spec = resolve(&f, None).unwrap();
        assert_eq!(
            spec.sidecars.volumes,
            vec![("shared".to_string(), 1024 << 20)]
        );
        assert_eq!(spec.sidecars.ingress_mounts[0].path, "/shared");
        assert_eq!(spec.sidecars.containers[0].mounts[0].path, "/data");
    }
}
