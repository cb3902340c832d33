//! The typed, validated description of a service, built from flags (gcloud's names) and
//! refused at the door with the field name and the allowed values when it is wrong.
//!
//! This module owns the [`ServiceSpec`] model and [`SpecError`]; each kind of flag value
//! is parsed in its own file: names, lists and `KEY=VALUE` items, environment variables,
//! quantities (durations, ranges, memory, CPU), volumes, and probes. Nothing here runs
//! anything: probe execution lives in `control`.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

pub mod container;
pub mod container_flags;
mod env;
pub mod execution;
pub mod flags;
pub mod group_to_run_v2;
mod list;
mod name;
pub mod probe;
mod quantity;
pub mod run_v2;
pub mod run_v2_containers;
pub mod secrets;
pub mod secrets_v2;
pub mod service_yaml;
pub mod service_yaml_annotations;
pub mod service_yaml_export;
pub mod service_yaml_to_v2;
pub mod to_run_v2;
mod volume;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod service_yaml_tests;

pub use container::{Container, Sidecars};
pub use env::{
    check_env_name, env_ops, parse_env_file, parse_env_list, parse_env_list_as, parse_env_vars,
    service_env, EnvChanges, EnvFile, EnvOps, RESERVED_ENV,
};
pub use execution::ExecutionEnvironment;
pub use list::split_list;
pub use name::{check_name, name_from_image, revision_name};
pub use probe::Probe;
pub use quantity::{body_size, cpu, duration_in, in_range, memory, parse_duration};
pub use volume::{mount_of, volumes, MountFlag, VolumeFlag, VolumeFlags};

/// Cloud Run's defaults for what a revision leaves unset; `runlet serve`'s flag defaults, the
/// Admin API's template mapping ([`run_v2`]) and `runlet deploy`'s flags ([`flags`]) use them.
pub mod defaults {
    use std::time::Duration;

    /// The container's port (`PORT`).
    pub const PORT: u16 = 8080;
    /// Memory per instance.
    pub const MEMORY: u64 = 512 << 20;
    /// CPUs per instance.
    pub const CPU: f64 = 1.0;
    /// The request timeout.
    pub const TIMEOUT: Duration = Duration::from_secs(300);
    /// How long an instance may take to listen (contract LIFE-1).
    pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(240);
    /// How long an idle instance above the minimum is kept (runlet's `--idle-timeout`).
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
    /// Instances at most.
    pub const MAX_INSTANCES: usize = 100;

    /// Requests per instance when unset: 80, but 1 below one CPU (Cloud Run requires
    /// concurrency 1 there).
    pub fn concurrency(cpu: f64) -> usize {
        if cpu >= 1.0 {
            80
        } else {
            1
        }
    }
}

/// A flag value refused, naming the flag and what is allowed.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid {field}: {detail}")]
pub struct SpecError {
    pub field: &'static str,
    pub detail: String,
}

fn bad(field: &'static str, detail: impl Into<String>) -> SpecError {
    SpecError {
        field,
        detail: detail.into(),
    }
}

/// A service as runlet runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub revision: String,
    pub image: String,
    pub port: u16,
    pub listen: SocketAddr,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub memory_bytes: u64,
    pub cpu: f64,
    pub concurrency: usize,
    pub timeout: Duration,
    pub min_instances: usize,
    pub max_instances: usize,
    pub idle_timeout: Duration,
    pub startup_timeout: Duration,
    pub use_http2: bool,
    /// `--cpu-throttling`: an instance with no request in flight keeps 1% of a CPU.
    pub cpu_throttling: bool,
    /// A configured startup probe; without one, the ingress port accepting TCP means ready.
    pub startup_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    /// In-memory volumes mounted into the container: (mount path, size limit in bytes).
    pub volumes: Vec<(String, u64)>,
    /// Secrets, by reference (read from the store when an instance is created).
    pub secrets: secrets::SecretBindings,
    /// The instance's other containers (empty: a single-container service).
    pub sidecars: Sidecars,
    /// gen2 (runc) or gen1 (gVisor).
    pub execution_environment: ExecutionEnvironment,
}

impl ServiceSpec {
    /// The environment of the ingress container (ENV-S1).
    pub fn contract_env(&self) -> Vec<(String, String)> {
        vec![
            ("PORT".into(), self.port.to_string()),
            ("K_SERVICE".into(), self.name.clone()),
            ("K_REVISION".into(), self.revision.clone()),
            ("K_CONFIGURATION".into(), self.name.clone()),
        ]
    }

    /// The environment of a sidecar: the ingress container's but `PORT` (PORT-3).
    pub fn sidecar_env(&self) -> Vec<(String, String)> {
        vec![
            ("K_SERVICE".into(), self.name.clone()),
            ("K_REVISION".into(), self.revision.clone()),
            ("K_CONFIGURATION".into(), self.name.clone()),
        ]
    }

    /// Every container of an instance, the ingress container first.
    pub fn containers(&self) -> Vec<Container> {
        let name = if self.sidecars.ingress_name.is_empty() {
            container::DEFAULT_INGRESS_NAME.to_string()
        } else {
            self.sidecars.ingress_name.clone()
        };
        let ingress = Container {
            name,
            image: self.image.clone(),
            port: Some(self.port),
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            memory_bytes: self.memory_bytes,
            cpu: self.cpu,
            startup_probe: self.startup_probe.clone(),
            liveness_probe: self.liveness_probe.clone(),
            mounts: self.sidecars.ingress_mounts.clone(),
            depends_on: self.sidecars.ingress_depends_on.clone(),
            secrets: self.secrets.clone(),
        };
        std::iter::once(ingress)
            .chain(self.sidecars.containers.iter().cloned())
            .collect()
    }
}
