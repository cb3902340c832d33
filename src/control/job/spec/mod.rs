//! A job as runlet runs it: [`JobSpec`], built from Cloud Run's job YAML and/or gcloud-style
//! flags (a flag wins over the file), and refused at the door with the field named and the
//! allowed range.
//!
//! - `yaml`: the Cloud Run job YAML schema (`-f`), parsed and written.
//! - `flags`: the `runlet job execute` flags, and resolving flags over the file into a spec.
//! - `parallelism`: the default parallelism runlet applies on one machine.
//! - [`run_v2`]: the Admin API's `Job` (and a `RunJob`'s overrides) as a spec: what the
//!   daemon runs; [`to_run_v2`]: `runlet jobs` flags as a `Job` and as overrides.

mod containers;
mod flags;
mod parallelism;
pub mod run_v2;
pub mod to_run_v2;
mod yaml;
mod yaml_secrets;

use std::time::Duration;

use crate::spec::container::{Container, Sidecars};
use crate::spec::SpecError;

pub use containers::CONTAINER_DEPENDENCIES;
pub(crate) use flags::check_env_name;
pub use flags::{parse_env_flags, resolve, task_timeout, JobFlags};
pub use parallelism::{effective_parallelism, parallelism_cap, HostResources, TASK_OVERHEAD_BYTES};
pub use yaml::{
    parse_yaml, ContainerYaml, EnvVarYaml, ExecutionSpecYaml, ExecutionTemplateYaml, JobSpecYaml,
    JobYaml, LimitsYaml, MetadataYaml, Quantity, ResourcesYaml, TaskSpecYaml, TaskTemplateYaml,
};
pub use yaml_secrets::{
    EmptyDirYaml, EnvVarSourceYaml, KeyToPathYaml, SecretKeyRefYaml, SecretVolumeYaml,
    VolumeMountYaml, VolumeYaml,
};

/// Names runlet sets in every task's container (ENV-J1); a user may not set them.
pub const RESERVED_ENV: &[&str] = &[
    "CLOUD_RUN_JOB",
    "CLOUD_RUN_EXECUTION",
    "CLOUD_RUN_TASK_INDEX",
    "CLOUD_RUN_TASK_ATTEMPT",
    "CLOUD_RUN_TASK_COUNT",
];
pub const MAX_TASKS: u32 = 10_000;
pub const MAX_RETRIES: u32 = 10;
pub const DEFAULT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(600);
/// Cloud Run's longest task timeout (7 days).
pub const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(168 * 3600);
/// A job name is at most this long: the execution adds 6 characters, a task's container id
/// another `-<index>-<attempt>` (up to 9), and containerd refuses ids over 76 characters.
pub const MAX_NAME: usize = 49;
pub const DEFAULT_MEMORY: &str = "512Mi";
pub const DEFAULT_CPU: &str = "1";
pub const API_VERSION: &str = "run.googleapis.com/v1";

fn bad(field: &'static str, detail: impl Into<String>) -> SpecError {
    SpecError {
        field,
        detail: detail.into(),
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    /// Normalised image reference (`docker.io/library/probe:latest`).
    pub image: String,
    pub task_count: u32,
    /// `None`: as many as the machine allows (see [`parallelism_cap`]).
    pub parallelism: Option<u32>,
    pub max_retries: u32,
    pub task_timeout: Duration,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// The memory limit as given (e.g. `512Mi`) and in bytes.
    pub memory: String,
    pub memory_bytes: u64,
    /// The vCPU limit as given (e.g. `1`, `500m`) and as a number.
    pub cpu: String,
    pub cpu_value: f64,
    /// Secrets, by reference (read from the store when an attempt's container is created).
    pub secrets: crate::spec::secrets::SecretBindings,
    /// What a task with sidecars adds (Cloud Run's sidecars in jobs): the main container's
    /// name, dependencies and mounts (`ingress_*`), the in-memory volumes, the sidecars.
    /// Empty for a single-container job. The fields above are the main container's.
    pub sidecars: Sidecars,
}

/// The main container's name when a job with sidecars gives none (`--image` before the
/// first `--container`).
pub const DEFAULT_MAIN_NAME: &str = "main";

impl JobSpec {
    /// Every container of a task, the main one first (see [`crate::spec::container::check_job`]).
    pub fn containers(&self) -> Vec<Container> {
        let main = Container {
            name: if self.sidecars.ingress_name.is_empty() {
                DEFAULT_MAIN_NAME.to_string()
            } else {
                self.sidecars.ingress_name.clone()
            },
            image: self.image.clone(),
            port: None,
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            memory_bytes: self.memory_bytes,
            cpu: self.cpu_value,
            startup_probe: None,
            liveness_probe: None,
            mounts: self.sidecars.ingress_mounts.clone(),
            depends_on: self.sidecars.ingress_depends_on.clone(),
            secrets: self.secrets.clone(),
        };
        std::iter::once(main)
            .chain(self.sidecars.containers.iter().cloned())
            .collect()
    }

    /// A task's memory: every container's limit together (what the parallelism counts).
    pub fn task_memory_bytes(&self) -> u64 {
        self.memory_bytes
            + self
                .sidecars
                .containers
                .iter()
                .map(|c| c.memory_bytes)
                .sum::<u64>()
    }

    /// A task's vCPUs: every container's together.
    pub fn task_cpu(&self) -> f64 {
        self.cpu_value + self.sidecars.containers.iter().map(|c| c.cpu).sum::<f64>()
    }

    /// The variables runlet adds to the container of one task attempt (ENV-J1). No `PORT`:
    /// a task serves nothing (JOB-2).
    pub fn contract_env(&self, execution: &str, index: u32, attempt: u32) -> Vec<(String, String)> {
        vec![
            ("CLOUD_RUN_JOB".into(), self.name.clone()),
            ("CLOUD_RUN_EXECUTION".into(), execution.to_string()),
            ("CLOUD_RUN_TASK_INDEX".into(), index.to_string()),
            ("CLOUD_RUN_TASK_ATTEMPT".into(), attempt.to_string()),
            ("CLOUD_RUN_TASK_COUNT".into(), self.task_count.to_string()),
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Flags naming a job and its image, nothing else.
    pub(crate) fn flags(name: &str, image: &str) -> JobFlags {
        JobFlags {
            name: Some(name.into()),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    #[test]
    fn contract_env_has_no_port() {
        let mut f = flags("hello", "probe");
        f.tasks = Some("4".into());
        let s = resolve(&f, None).unwrap();
        let env = s.contract_env("hello-abcde", 2, 1);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CLOUD_RUN_JOB"), Some("hello"));
        assert_eq!(get("CLOUD_RUN_EXECUTION"), Some("hello-abcde"));
        assert_eq!(get("CLOUD_RUN_TASK_INDEX"), Some("2"));
        assert_eq!(get("CLOUD_RUN_TASK_ATTEMPT"), Some("1"));
        assert_eq!(get("CLOUD_RUN_TASK_COUNT"), Some("4"));
        assert_eq!(get("PORT"), None);
    }
}
