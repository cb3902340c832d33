//! The flags that describe a revision, gcloud's names, shared by `runlet serve` and `runlet
//! deploy`: as given ([`ServiceFlags`]), then checked once into [`Checked`]. What `runlet
//! serve` runs ([`Checked::service_spec`]) and what `runlet deploy` sends to the daemon
//! ([`super::to_run_v2`]) both come from a [`Checked`], so a flag means the same to both;
//! the round trip through the Admin API's mapping ([`super::run_v2`]) is tested in
//! `to_run_v2`.

use std::net::SocketAddr;
use std::time::Duration;

use super::container::{self, Sidecars};
use super::container_flags::ContainerFlags;
use super::secrets::{SecretBindings, SecretFlags};
use super::{
    bad, cpu, defaults, duration_in, in_range, memory, probe, service_env, split_list, EnvChanges,
    ExecutionEnvironment, Probe, ServiceSpec, SpecError, VolumeFlags,
};
use crate::image::reference;

/// The revision's flags as given (`None`: not given, Cloud Run's default applies).
#[derive(Debug, Clone, Default)]
pub struct ServiceFlags {
    pub image: String,
    pub port: Option<u16>,
    /// `--set-env-vars`, each in gcloud's list syntax.
    pub set_env_vars: Vec<String>,
    /// `--env-vars-file`, `--update-env-vars`, `--remove-env-vars`, `--clear-env-vars`, and
    /// the variables they change.
    pub env: EnvChanges,
    /// `--command` and `--args`, in gcloud's list syntax.
    pub command: Option<String>,
    pub args: Option<String>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    pub concurrency: Option<usize>,
    pub timeout: Option<String>,
    pub min_instances: Option<usize>,
    pub max_instances: Option<usize>,
    pub startup_probe: Option<String>,
    pub liveness_probe: Option<String>,
    pub add_volume: Vec<String>,
    pub add_volume_mount: Vec<String>,
    pub use_http2: bool,
    /// `--cpu-throttling` (true) or `--no-cpu-throttling` (false); unset is off: on one
    /// machine nobody bills by request (docs/usage.md).
    pub cpu_throttling: Option<bool>,
    /// `--set-secrets`, `--update-secrets`, `--remove-secrets`, `--clear-secrets`.
    pub secrets: SecretFlags,
    /// `--container NAME` groups; when given, the per-container flags above stay unset
    /// and the ingress container is the group with `--port`.
    pub containers: Vec<ContainerFlags>,
    /// `--execution-environment gen1|gen2`.
    pub execution_environment: Option<String>,
}

/// [`ServiceFlags`] checked: each value parsed, with the text the Admin API carries kept
/// where the API has a text field (memory, CPU, image as given).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// As given (the daemon normalises it the same way).
    pub image: String,
    /// Normalised (`docker.io/library/NAME:latest`).
    pub image_ref: String,
    pub port: Option<u16>,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// (as given, bytes).
    pub memory: Option<(String, u64)>,
    /// (as given, CPUs).
    pub cpu: Option<(String, f64)>,
    pub concurrency: Option<usize>,
    pub timeout: Option<Duration>,
    pub min_instances: Option<usize>,
    pub max_instances: Option<usize>,
    pub startup_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    pub volumes: VolumeFlags,
    pub use_http2: bool,
    pub cpu_throttling: bool,
    /// The secret flags applied to none (`runlet serve` and `runlet deploy` describe a
    /// whole revision).
    pub secrets: SecretBindings,
    /// The other containers (`--container` groups besides the ingress one).
    pub sidecars: Sidecars,
    /// `None`: not given (gen2, [`ExecutionEnvironment`]'s default).
    pub execution_environment: Option<ExecutionEnvironment>,
}

impl ServiceFlags {
    /// Checks every flag, refusing the first bad one with its name and what is allowed.
    pub fn check(&self) -> Result<Checked, SpecError> {
        if self.containers.is_empty() {
            self.check_one()
        } else {
            self.check_groups()
        }
    }

    /// With `--container` groups: gcloud's rule first (per-container flags only after a
    /// `--container`), then each group, then the instance's containers together
    /// ([`container::check`]); the ingress group fills the fields a single container has.
    fn check_groups(&self) -> Result<Checked, SpecError> {
        let top = [
            ("--image", !self.image.is_empty()),
            ("--port", self.port.is_some()),
            ("--set-env-vars", !self.set_env_vars.is_empty()),
            ("--command", self.command.is_some()),
            ("--args", self.args.is_some()),
            ("--memory", self.memory.is_some()),
            ("--cpu", self.cpu.is_some()),
            ("--startup-probe", self.startup_probe.is_some()),
            ("--liveness-probe", self.liveness_probe.is_some()),
            ("--add-volume-mount", !self.add_volume_mount.is_empty()),
        ];
        let mut env_given = self.env.given();
        if !self.secrets.is_empty() {
            env_given.push("--set-secrets");
        }
        if let Some(field) = top
            .iter()
            .find(|(_, given)| *given)
            .map(|(f, _)| *f)
            .or(env_given.first().copied())
        {
            return Err(bad(
                field,
                "with --container, container flags may only follow a --container (as gcloud)",
            ));
        }
        // A volume without a size limit may take the whole instance's memory.
        let mut total = 0;
        for g in &self.containers {
            total += match &g.memory {
                Some(m) => memory("--memory", m)?,
                None => defaults::MEMORY,
            };
        }
        let volumes = VolumeFlags::parse(&self.add_volume, &[], total)?.volumes;
        let checked = self
            .containers
            .iter()
            .map(|g| g.check(&volumes))
            .collect::<Result<Vec<_>, _>>()?;
        let list: Vec<_> = checked.iter().map(|c| c.container.clone()).collect();
        let ingress = container::check(&list)?;
        let g = &self.containers[ingress];
        let mut one = self.clone();
        one.containers = Vec::new();
        one.image = g.image.clone().unwrap_or_default();
        one.port = g.port;
        one.set_env_vars = g.set_env_vars.clone();
        one.env = g.env.clone();
        one.secrets = g.secrets.clone();
        one.command = g.command.clone();
        one.args = g.args.clone();
        one.memory = g.memory.clone();
        one.cpu = g.cpu.clone();
        one.startup_probe = g.startup_probe.clone();
        one.liveness_probe = g.liveness_probe.clone();
        one.add_volume_mount = g.add_volume_mount.clone();
        let mut out = one.check_one()?;
        out.volumes = VolumeFlags::parse(&self.add_volume, &g.add_volume_mount, total)?;
        let mut others = list;
        let me = others.remove(ingress);
        out.sidecars = Sidecars {
            ingress_name: me.name,
            ingress_depends_on: me.depends_on,
            ingress_mounts: me.mounts,
            volumes: volumes.iter().map(|v| (v.name.clone(), v.size)).collect(),
            containers: others,
        };
        Ok(out)
    }

    /// One container: the per-container flags apply to it.
    fn check_one(&self) -> Result<Checked, SpecError> {
        let image_ref =
            reference::normalize(&self.image).map_err(|e| bad("--image", e.to_string()))?;
        if self.port == Some(0) {
            return Err(bad("--port", "0 is out of range: allowed 1 to 65535"));
        }
        let timeout = match &self.timeout {
            None => None,
            Some(t) => Some(duration_in("--timeout", t, (1, 3600))?),
        };
        if let Some(c) = self.concurrency {
            in_range("--concurrency", c, 1, 1000)?;
        }
        let max = self.max_instances.unwrap_or(defaults::MAX_INSTANCES);
        in_range("--max-instances", max, 1, 1000)?;
        if let Some(min) = self.min_instances {
            in_range("--min-instances", min, 0, max)?;
        }
        let memory = match &self.memory {
            None => None,
            Some(m) => Some((m.clone(), memory("--memory", m)?)),
        };
        let cpu = match &self.cpu {
            None => None,
            Some(c) => Some((c.clone(), cpu("--cpu", c)?)),
        };
        let port = self.port.unwrap_or(defaults::PORT);
        let probe = |field, text: &Option<String>| {
            text.as_deref()
                .map(|s| probe::parse(field, s, port))
                .transpose()
        };
        let memory_bytes = memory.as_ref().map_or(defaults::MEMORY, |m| m.1);
        let env = service_env(&self.set_env_vars, &self.env)?;
        let mut secrets = SecretBindings::default();
        secrets.apply(&self.secrets.parse()?);
        secrets.check("--set-secrets", &env)?;
        Ok(Checked {
            image: self.image.clone(),
            image_ref,
            port: self.port,
            env,
            command: self.command.as_deref().map(split_list),
            args: self.args.as_deref().map(split_list),
            memory,
            cpu,
            concurrency: self.concurrency,
            timeout,
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            startup_probe: probe("--startup-probe", &self.startup_probe)?,
            liveness_probe: probe("--liveness-probe", &self.liveness_probe)?,
            volumes: VolumeFlags::parse(&self.add_volume, &self.add_volume_mount, memory_bytes)?,
            use_http2: self.use_http2,
            cpu_throttling: self.cpu_throttling.unwrap_or(false),
            secrets,
            sidecars: Sidecars::default(),
            execution_environment: self
                .execution_environment
                .as_deref()
                .map(|t| ExecutionEnvironment::parse("--execution-environment", t))
                .transpose()?,
        })
    }
}

impl Checked {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(defaults::PORT)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory.as_ref().map_or(defaults::MEMORY, |m| m.1)
    }

    pub fn cpus(&self) -> f64 {
        self.cpu.as_ref().map_or(defaults::CPU, |c| c.1)
    }

    /// What `runlet serve` runs: revision `revision` of service `name`, served on `listen`,
    /// with runlet's default idle and start-up timeouts.
    pub fn service_spec(&self, name: &str, revision: &str, listen: SocketAddr) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            revision: revision.to_string(),
            image: self.image_ref.clone(),
            port: self.port(),
            listen,
            env: self.env.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            memory_bytes: self.memory_bytes(),
            cpu: self.cpus(),
            concurrency: self
                .concurrency
                .unwrap_or_else(|| defaults::concurrency(self.cpus())),
            timeout: self.timeout.unwrap_or(defaults::TIMEOUT),
            min_instances: self.min_instances.unwrap_or(0),
            max_instances: self.max_instances.unwrap_or(defaults::MAX_INSTANCES),
            idle_timeout: defaults::IDLE_TIMEOUT,
            startup_timeout: defaults::STARTUP_TIMEOUT,
            use_http2: self.use_http2,
            cpu_throttling: self.cpu_throttling,
            startup_probe: self.startup_probe.clone(),
            liveness_probe: self.liveness_probe.clone(),
            volumes: self.volumes.mounted(),
            secrets: self.secrets.clone(),
            sidecars: self.sidecars.clone(),
            execution_environment: self.execution_environment.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Flags for the probe image, changed by `f` (shared with `to_run_v2`'s tests).
    pub(crate) fn flags(f: impl FnOnce(&mut ServiceFlags)) -> ServiceFlags {
        let mut s = ServiceFlags {
            image: "probe".into(),
            ..Default::default()
        };
        f(&mut s);
        s
    }

    #[test]
    fn unset_flags_take_cloud_runs_defaults() {
        let listen = "127.0.0.1:8080".parse().unwrap();
        let s = flags(|_| {})
            .check()
            .unwrap()
            .service_spec("hello", "hello-1", listen);
        assert_eq!(s.image, "docker.io/library/probe:latest");
        assert_eq!((s.port, s.memory_bytes, s.cpu), (8080, 512 << 20, 1.0));
        assert_eq!(
            (s.concurrency, s.min_instances, s.max_instances),
            (80, 0, 100)
        );
        assert_eq!(s.timeout, Duration::from_secs(300));
        assert!(!s.cpu_throttling);
        // Below one CPU, one request at a time unless --concurrency says otherwise.
        let half = flags(|f| f.cpu = Some("0.5".into())).check().unwrap();
        assert_eq!(half.service_spec("h", "h-1", listen).concurrency, 1);
        let half = flags(|f| {
            f.cpu = Some("500m".into());
            f.concurrency = Some(10)
        })
        .check()
        .unwrap();
        assert_eq!(half.service_spec("h", "h-1", listen).concurrency, 10);
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        type Edit = fn(&mut ServiceFlags);
        let table: Vec<(Edit, &str)> = vec![
            (|f| f.image = "UPPER".into(), "--image"),
            (|f| f.port = Some(0), "--port"),
            (|f| f.timeout = Some("0".into()), "--timeout"),
            (|f| f.timeout = Some("2h".into()), "--timeout"),
            (|f| f.concurrency = Some(0), "--concurrency"),
            (|f| f.max_instances = Some(0), "--max-instances"),
            (|f| f.min_instances = Some(101), "--min-instances"),
            (
                |f| {
                    f.max_instances = Some(2);
                    f.min_instances = Some(3)
                },
                "--min-instances",
            ),
            (|f| f.memory = Some("1Ti".into()), "--memory"),
            (|f| f.cpu = Some("lots".into()), "--cpu"),
            (|f| f.set_env_vars = vec!["PORT=1".into()], "--set-env-vars"),
            (|f| f.startup_probe = Some("x=1".into()), "--startup-probe"),
            (
                |f| f.liveness_probe = Some("x=1".into()),
                "--liveness-probe",
            ),
            (
                |f| f.add_volume = vec!["name=v,type=nfs".into()],
                "--add-volume",
            ),
            (
                |f| f.add_volume_mount = vec!["volume=v,mount-path=/v".into()],
                "--add-volume-mount",
            ),
            (|f| f.secrets.set = vec!["A=a".into()], "--set-secrets"),
            (
                |f| {
                    f.set_env_vars = vec!["A=1".into()];
                    f.secrets.update = vec!["A=a:1".into()]
                },
                "--set-secrets",
            ),
        ];
        for (i, (edit, field)) in table.into_iter().enumerate() {
            let e = flags(edit).check().unwrap_err();
            assert_eq!(e.field, field, "case {i}: {e}");
        }
    }

    fn group(name: &str, port: Option<u16>, deps: &str) -> ContainerFlags {
        ContainerFlags {
            name: name.into(),
            image: Some("busybox".into()),
            port,
            depends_on: if deps.is_empty() {
                vec![]
            } else {
                vec![deps.into()]
            },
            ..Default::default()
        }
    }

    #[test]
    fn execution_environment_flag() {
        let listen = "127.0.0.1:8080".parse().unwrap();
        let spec = |f: ServiceFlags| f.check().map(|c| c.service_spec("s", "s-1", listen));
        let env = |v: &str| flags(|f| f.execution_environment = Some(v.into()));
        assert_eq!(
            spec(flags(|_| {})).unwrap().execution_environment,
            ExecutionEnvironment::Gen2
        );
        assert_eq!(
            spec(env("gen1")).unwrap().execution_environment,
            ExecutionEnvironment::Gen1
        );
        assert_eq!(
            spec(env("gen2")).unwrap().execution_environment,
            ExecutionEnvironment::Gen2
        );
        assert_eq!(
            spec(env("gen3")).unwrap_err().field,
            "--execution-environment"
        );
        // One `--container` group is one container: gen1 takes it.
        let one = ServiceFlags {
            execution_environment: Some("gen1".into()),
            containers: vec![group("app", Some(8080), "")],
            ..Default::default()
        };
        assert_eq!(
            spec(one.clone()).unwrap().execution_environment,
            ExecutionEnvironment::Gen1
        );
        // Sidecars too (as on Cloud Run's gen1): each container is its own gVisor sandbox
        // in the instance's network namespace.
        let mut two = one;
        two.containers.push(group("log", None, ""));
        let s = spec(two).unwrap();
        assert_eq!(s.execution_environment, ExecutionEnvironment::Gen1);
        assert_eq!(s.sidecars.containers.len(), 1);
    }

    #[test]
    fn container_groups_make_the_ingress_container_and_its_sidecars() {
        let listen = "127.0.0.1:8080".parse().unwrap();
        let f = ServiceFlags {
            add_volume: vec!["name=v,type=in-memory".into()],
            containers: vec![
                ContainerFlags {
                    add_volume_mount: vec!["volume=v,mount-path=/log".into()],
                    memory: Some("128Mi".into()),
                    ..group("log", None, "")
                },
                ContainerFlags {
                    image: Some("probe".into()),
                    set_env_vars: vec!["A=1".into()],
                    add_volume_mount: vec!["volume=v,mount-path=/data".into()],
                    ..group("app", Some(8081), "log")
                },
            ],
            ..Default::default()
        };
        let s = f.check().unwrap().service_spec("web", "web-1", listen);
        assert_eq!(
            (s.image.as_str(), s.port),
            ("docker.io/library/probe:latest", 8081)
        );
        assert_eq!(s.env, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(s.sidecars.ingress_name, "app");
        assert_eq!(s.sidecars.ingress_depends_on, vec!["log".to_string()]);
        // A volume without a limit may take the instance's whole memory: 512Mi + 128Mi.
        assert_eq!(s.sidecars.volumes, vec![("v".to_string(), 640 << 20)]);
        let names: Vec<_> = s.containers().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["app", "log"]);
        let log = &s.sidecars.containers[0];
        assert_eq!((log.port, log.memory_bytes), (None, 128 << 20));
        assert_eq!(log.mounts[0].path, "/log");

        type Edit = fn(&mut ServiceFlags);
        let table: Vec<(Edit, &str, &str)> = vec![
            (
                |f| f.image = "probe".into(),
                "--image",
                "may only follow a --container",
            ),
            (
                |f| f.memory = Some("1Gi".into()),
                "--memory",
                "may only follow",
            ),
            (
                |f| f.secrets.set = vec!["A=a:1".into()],
                "--set-secrets",
                "may only follow",
            ),
            (
                |f| f.env.update = vec!["A=1".into()],
                "--update-env-vars",
                "may only follow",
            ),
            (
                |f| {
                    f.containers[0].set_env_vars = vec!["A=1".into()];
                    f.containers[0].secrets.set = vec!["A=a:1".into()]
                },
                "--set-secrets",
                "A is set both as a plain variable and from a secret",
            ),
            (
                |f| f.containers[0].port = Some(9),
                "--port",
                "given on log, app",
            ),
            (
                |f| f.containers[1].port = None,
                "--port",
                "no container has a port",
            ),
            (
                |f| f.containers[0].depends_on = vec!["app".into()],
                "--depends-on",
                "a dependency cycle among log, app",
            ),
            (
                |f| f.containers[1].depends_on = vec!["db".into()],
                "--depends-on",
                "depends on db, which is not defined",
            ),
            (
                |f| f.containers[0].name = "app".into(),
                "--container",
                "container app is given twice",
            ),
            (
                |f| f.containers[0].liveness_probe = Some("httpGet.path=/".into()),
                "--liveness-probe",
                "container log has no --port: its probe must name one",
            ),
            (
                |f| f.containers[0].image = None,
                "--image",
                "container log has no --image",
            ),
        ];
        for (edit, field, detail) in table {
            let mut g = f.clone();
            edit(&mut g);
            let e = g.check().unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.detail.contains(detail), "{e}");
        }
    }
}
