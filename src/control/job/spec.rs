//! A job as runlet runs it: [`JobSpec`], built from Cloud Run's job YAML and/or gcloud-style
//! flags (a flag wins over the file), and refused at the door with the field named and the
//! allowed range. Also the default parallelism runlet applies on one machine.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::image::reference;
use crate::spec::{self as svc, SpecError};

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
}

impl JobSpec {
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
                    containers: vec![ContainerYaml {
                        name: None,
                        image: self.image.clone(),
                        command: self.command.clone(),
                        args: self.args.clone(),
                        env: self
                            .env
                            .iter()
                            .map(|(k, v)| EnvVarYaml {
                                name: k.clone(),
                                value: Some(v.clone()),
                            })
                            .collect(),
                        resources: Some(ResourcesYaml {
                            limits: Some(LimitsYaml {
                                memory: Some(Quantity(self.memory.clone())),
                                cpu: Some(Quantity(self.cpu.clone())),
                            }),
                        }),
                    }],
                },
            },
        }
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
                    metadata: None,
                    spec: self.execution_spec(),
                },
            },
        }
    }
}

// ---- Cloud Run job YAML -----------------------------------------------------------------

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
}

/// `valueFrom` (secrets) is not supported: refused as an unknown field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVarYaml {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
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

// serde_yaml reports an error raised inside a value at the enclosing map's path: name the
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

/// A Kubernetes quantity: YAML writes `cpu: 1` as a number and `cpu: 500m` as a string.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            U(u64),
            F(f64),
        }
        match Raw::deserialize(d) {
            Ok(Raw::S(s)) => Ok(Quantity(s)),
            Ok(Raw::U(n)) => Ok(Quantity(n.to_string())),
            Ok(Raw::F(f)) => Ok(Quantity(f.to_string())),
            Err(_) => Err(serde::de::Error::custom(
                "expected a quantity (e.g. 512Mi, 1, 500m)",
            )),
        }
    }
}

/// Parses Cloud Run job YAML; an unknown field or a wrong type is named with its path.
pub fn parse_yaml(text: &str) -> Result<JobYaml, SpecError> {
    let job: JobYaml = serde_yaml::from_str(text).map_err(|e| bad("job YAML", e.to_string()))?;
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
    let containers = &job.spec.template.spec.template.spec.containers;
    if containers.len() != 1 {
        return Err(bad(
            "job YAML",
            format!(
                "spec.template.spec.template.spec.containers: runlet runs exactly one container per task, found {}",
                containers.len()
            ),
        ));
    }
    Ok(job)
}

// ---- flags + file -> JobSpec --------------------------------------------------------------

/// The `runlet job execute` flags, as given (`None`: not given). Numbers stay text so that a
/// bad value is refused here with the field name, like every other bad input.
#[derive(Debug, Clone, Default)]
pub struct JobFlags {
    pub name: Option<String>,
    pub image: Option<String>,
    pub tasks: Option<String>,
    pub parallelism: Option<String>,
    pub max_retries: Option<String>,
    pub task_timeout: Option<String>,
    pub set_env_vars: Vec<String>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
}

fn parse_u32(field: &'static str, s: &str) -> Result<u32, SpecError> {
    s.trim()
        .parse()
        .map_err(|_| bad(field, format!("{s:?} is not a whole number")))
}

fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

fn check_env_name(field: &'static str, k: &str) -> Result<(), SpecError> {
    if !valid_env_name(k) {
        return Err(bad(
            field,
            format!("{k:?} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"),
        ));
    }
    if RESERVED_ENV.contains(&k) {
        return Err(bad(
            field,
            format!(
                "{k} is reserved: runlet sets it in every task (reserved: {})",
                RESERVED_ENV.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Parses `--set-env-vars K=V,K2=V2` (repeatable; a later value wins; `^DELIM^` first for
/// another delimiter, as gcloud).
pub fn parse_env_flags(items: &[String]) -> Result<Vec<(String, String)>, SpecError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items.iter().flat_map(|s| svc::split_list(s)) {
        let item = item.as_str();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad("--set-env-vars", format!("{item:?} is not KEY=VALUE")))?;
        check_env_name("--set-env-vars", k)?;
        put_env(&mut out, k, v);
    }
    Ok(out)
}

fn put_env(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    }
}

/// Checks a task timeout: whole seconds, 1 s to 168 h.
pub fn task_timeout(field: &'static str, d: Duration) -> Result<Duration, SpecError> {
    if d.subsec_nanos() != 0 {
        return Err(bad(
            field,
            format!("{} s is not a whole number of seconds", d.as_secs_f64()),
        ));
    }
    if d < Duration::from_secs(1) || d > MAX_TASK_TIMEOUT {
        return Err(bad(
            field,
            format!("{} s is out of range: allowed 1s to 168h", d.as_secs_f64()),
        ));
    }
    Ok(d)
}

/// Builds the job from the flags and, with `-f`, the file; a flag given overrides the file,
/// and what neither gives takes Cloud Run's default.
pub fn resolve(flags: &JobFlags, file: Option<&JobYaml>) -> Result<JobSpec, SpecError> {
    let exec = file.map(|f| &f.spec.template.spec);
    let task = exec.map(|e| &e.template.spec);
    let container = task.and_then(|t| t.containers.first());
    let limits = container
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.limits.as_ref());

    let name = match (&flags.name, file.and_then(|f| f.metadata.name.as_ref())) {
        (Some(n), _) => {
            svc::check_name("JOB", n, MAX_NAME)?;
            n.clone()
        }
        (None, Some(n)) => {
            svc::check_name("metadata.name", n, MAX_NAME)?;
            n.clone()
        }
        (None, None) => {
            return Err(bad(
                "JOB",
                "missing: give the job name (runlet job execute JOB --image IMAGE) or metadata.name in -f",
            ))
        }
    };

    let image = match (&flags.image, container.map(|c| &c.image)) {
        (Some(i), _) => normalize_image("--image", i)?,
        (None, Some(i)) => {
            normalize_image("spec.template.spec.template.spec.containers[0].image", i)?
        }
        (None, None) => {
            return Err(bad(
                "--image",
                "missing: give --image IMAGE (loaded with `runlet image load`)",
            ))
        }
    };

    let task_count = match (&flags.tasks, exec.and_then(|e| e.task_count)) {
        (Some(s), _) => svc::in_range("--tasks", parse_u32("--tasks", s)?, 1, MAX_TASKS)?,
        (None, Some(n)) => svc::in_range("spec.template.spec.taskCount", n, 1, MAX_TASKS)?,
        (None, None) => 1,
    };

    // gcloud: "Set to 0 to unset".
    let parallelism = match (&flags.parallelism, exec.and_then(|e| e.parallelism)) {
        (Some(s), _) => svc::in_range(
            "--parallelism",
            parse_u32("--parallelism", s)?,
            0,
            MAX_TASKS,
        )?,
        (None, Some(n)) => svc::in_range("spec.template.spec.parallelism", n, 0, MAX_TASKS)?,
        (None, None) => 0,
    };
    let parallelism = (parallelism > 0).then_some(parallelism);

    let max_retries = match (&flags.max_retries, task.and_then(|t| t.max_retries)) {
        (Some(s), _) => svc::in_range(
            "--max-retries",
            parse_u32("--max-retries", s)?,
            0,
            MAX_RETRIES,
        )?,
        (None, Some(n)) => svc::in_range(
            "spec.template.spec.template.spec.maxRetries",
            n,
            0,
            MAX_RETRIES,
        )?,
        (None, None) => DEFAULT_MAX_RETRIES,
    };

    let task_timeout = match (&flags.task_timeout, task.and_then(|t| t.timeout_seconds)) {
        (Some(s), _) => task_timeout("--task-timeout", svc::parse_duration("--task-timeout", s)?)?,
        (None, Some(n)) => task_timeout(
            "spec.template.spec.template.spec.timeoutSeconds",
            Duration::from_secs(n),
        )?,
        (None, None) => DEFAULT_TASK_TIMEOUT,
    };

    // The file's variables, then the flags' (by name, the flag wins).
    let mut env = Vec::new();
    for var in container.map(|c| c.env.as_slice()).unwrap_or_default() {
        check_env_name(
            "spec.template.spec.template.spec.containers[0].env",
            &var.name,
        )?;
        put_env(&mut env, &var.name, var.value.as_deref().unwrap_or(""));
    }
    for (k, v) in parse_env_flags(&flags.set_env_vars)? {
        put_env(&mut env, &k, &v);
    }

    let command = flags
        .command
        .clone()
        .or_else(|| container.and_then(|c| c.command.clone()));
    let args = flags
        .args
        .clone()
        .or_else(|| container.and_then(|c| c.args.clone()));

    let (memory, memory_bytes) = match (&flags.memory, limits.and_then(|l| l.memory.as_ref())) {
        (Some(m), _) => (m.clone(), svc::memory("--memory", m)?),
        (None, Some(Quantity(m))) => (
            m.clone(),
            svc::memory(
                "spec.template.spec.template.spec.containers[0].resources.limits.memory",
                m,
            )?,
        ),
        (None, None) => (DEFAULT_MEMORY.to_string(), 512 << 20),
    };
    let (cpu, cpu_value) = match (&flags.cpu, limits.and_then(|l| l.cpu.as_ref())) {
        (Some(c), _) => (c.clone(), svc::cpu("--cpu", c)?),
        (None, Some(Quantity(c))) => (
            c.clone(),
            svc::cpu(
                "spec.template.spec.template.spec.containers[0].resources.limits.cpu",
                c,
            )?,
        ),
        (None, None) => (DEFAULT_CPU.to_string(), 1.0),
    };

    Ok(JobSpec {
        name,
        image,
        task_count,
        parallelism,
        max_retries,
        task_timeout,
        env,
        command,
        args,
        memory,
        memory_bytes,
        cpu,
        cpu_value,
    })
}

fn normalize_image(field: &'static str, image: &str) -> Result<String, SpecError> {
    reference::normalize(image).map_err(|e| bad(field, e.to_string()))
}

// ---- parallelism ------------------------------------------------------------------------

/// What the machine has, for the default parallelism.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostResources {
    pub cpus: f64,
    pub memory_bytes: u64,
}

impl HostResources {
    /// CPUs this process may use (affinity and cgroup quota included) and the machine's
    /// total memory (`MemTotal`). Falls back to 1 CPU / 1 GiB when unreadable.
    pub fn detect() -> HostResources {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_mem_total(&m))
            .unwrap_or(1 << 30);
        HostResources { cpus, memory_bytes }
    }
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What a running task costs the machine besides its own memory limit: its containerd shim
/// (about 13 MiB resident) and runlet's bookkeeping.
pub const TASK_OVERHEAD_BYTES: u64 = 16 << 20;

/// How many tasks runlet runs at once when `--parallelism` is unset. Cloud Run runs "as
/// many as the quota allows"; one machine's quota is its CPUs and memory. Tasks beyond
/// `cpus / --cpu` would not get the vCPUs they were promised (RES-1), and tasks beyond
/// `memory / (--memory + overhead)` could together exceed the machine's memory, which ends
/// in the kernel's OOM killer choosing a victim anywhere on the host (containerd included)
/// instead of the one task over its own limit. So: the smaller of the two, at least 1.
pub fn parallelism_cap(cpu: f64, memory_bytes: u64, host: &HostResources) -> u32 {
    let by_cpu = if cpu > 0.0 {
        // A tolerance so that 2 / (2/3) is 3, not 2.9999.
        (host.cpus / cpu + 1e-9).floor()
    } else {
        host.cpus
    };
    let by_mem = host.memory_bytes / memory_bytes.saturating_add(TASK_OVERHEAD_BYTES).max(1);
    let cap = by_cpu.min(by_mem as f64).min(MAX_TASKS as f64);
    (cap as u32).max(1)
}

/// The parallelism an execution runs with: the one asked for, or the machine's cap; never
/// more than there are tasks.
pub fn effective_parallelism(spec: &JobSpec, host: &HostResources) -> u32 {
    let p = spec
        .parallelism
        .unwrap_or_else(|| parallelism_cap(spec.cpu_value, spec.memory_bytes, host));
    p.min(spec.task_count).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(name: &str, image: &str) -> JobFlags {
        JobFlags {
            name: Some(name.into()),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_cloud_runs() {
        let s = resolve(&flags("hello", "probe"), None).unwrap();
        assert_eq!(s.name, "hello");
        assert_eq!(s.image, "docker.io/library/probe:latest");
        assert_eq!(s.task_count, 1);
        assert_eq!(s.parallelism, None);
        assert_eq!(s.max_retries, 3);
        assert_eq!(s.task_timeout, Duration::from_secs(600));
        assert_eq!(s.memory_bytes, 512 << 20);
        assert_eq!(s.cpu_value, 1.0);
        assert!(s.env.is_empty());
    }

    #[test]
    fn bad_flags_name_the_field() {
        type Case = (fn(&mut JobFlags), &'static str, &'static str);
        let table: Vec<Case> = vec![
            (
                |f| f.tasks = Some("0".into()),
                "--tasks",
                "allowed 1 to 10000",
            ),
            (
                |f| f.tasks = Some("10001".into()),
                "--tasks",
                "allowed 1 to 10000",
            ),
            (
                |f| f.tasks = Some("many".into()),
                "--tasks",
                "not a whole number",
            ),
            (
                |f| f.parallelism = Some("-1".into()),
                "--parallelism",
                "not a whole number",
            ),
            (
                |f| f.max_retries = Some("11".into()),
                "--max-retries",
                "allowed 0 to 10",
            ),
            (
                |f| f.task_timeout = Some("0".into()),
                "--task-timeout",
                "1s to 168h",
            ),
            (
                |f| f.task_timeout = Some("169h".into()),
                "--task-timeout",
                "1s to 168h",
            ),
            (
                |f| f.task_timeout = Some("1.5s".into()),
                "--task-timeout",
                "whole number",
            ),
            (
                |f| f.task_timeout = Some("10 minutes".into()),
                "--task-timeout",
                "not a duration",
            ),
            (
                |f| f.memory = Some("lots".into()),
                "--memory",
                "not a memory size",
            ),
            (|f| f.cpu = Some("99".into()), "--cpu", "allowed 0.08 to 8"),
            (
                |f| f.set_env_vars = vec!["CLOUD_RUN_TASK_INDEX=3".into()],
                "--set-env-vars",
                "reserved",
            ),
            (
                |f| f.set_env_vars = vec!["A".into()],
                "--set-env-vars",
                "KEY=VALUE",
            ),
            (|f| f.name = Some("Bad_Name".into()), "JOB", "lowercase"),
            (|f| f.name = Some("a".repeat(50)), "JOB", "1-49"),
            (|f| f.image = Some("UPPER CASE".into()), "--image", ""),
        ];
        for (set, field, needle) in table {
            let mut f = flags("hello", "probe");
            set(&mut f);
            let e = resolve(&f, None).unwrap_err();
            assert_eq!(e.field, field, "{f:?}: {e}");
            assert!(e.detail.contains(needle), "{f:?}: {e}");
        }
        let e = resolve(&JobFlags::default(), None).unwrap_err();
        assert_eq!(e.field, "JOB");
        let e = resolve(
            &JobFlags {
                name: Some("x".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "--image");
    }

    #[test]
    fn durations_and_parallelism_zero_means_unset() {
        for (s, secs) in [("90s", 90), ("10m", 600), ("1h", 3600), ("45", 45)] {
            let mut f = flags("j", "probe");
            f.task_timeout = Some(s.into());
            assert_eq!(
                resolve(&f, None).unwrap().task_timeout,
                Duration::from_secs(secs)
            );
        }
        let mut f = flags("j", "probe");
        f.parallelism = Some("0".into());
        assert_eq!(resolve(&f, None).unwrap().parallelism, None);
        f.parallelism = Some("3".into());
        assert_eq!(resolve(&f, None).unwrap().parallelism, Some(3));
    }

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
    fn yaml_round_trips() {
        let file = parse_yaml(YAML).unwrap();
        let s = resolve(&JobFlags::default(), Some(&file)).unwrap();
        let text = serde_yaml::to_string(&s.to_yaml()).unwrap();
        let again = resolve(&JobFlags::default(), Some(&parse_yaml(&text).unwrap())).unwrap();
        assert_eq!(again, s, "{text}");
        // And from flags alone.
        let mut f = flags("flags-only", "busybox");
        f.tasks = Some("3".into());
        f.set_env_vars = vec!["X=1".into()];
        f.command = Some(vec!["/bin/sh".into()]);
        f.task_timeout = Some("2m".into());
        let s = resolve(&f, None).unwrap();
        let text = serde_yaml::to_string(&s.to_yaml()).unwrap();
        let again = resolve(&JobFlags::default(), Some(&parse_yaml(&text).unwrap())).unwrap();
        assert_eq!(again, s, "{text}");
    }

    #[test]
    fn bad_yaml_names_the_field() {
        let table = [
            (YAML.replace("maxRetries: 1", "maxRetries: 1\n          serviceAccountName: sa"), "spec.template.spec.template.spec: unknown field `serviceAccountName`"),
            (YAML.replace("value: file", "valueFrom: {}"), "spec.template.spec.template.spec.containers[0].env[1]: unknown field `valueFrom`"),
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
            (format!("{YAML}          - image: second\n"), "exactly one container"),
        ];
        for (text, needle) in table {
            let err = parse_yaml(&text).and_then(|f| resolve(&JobFlags::default(), Some(&f)));
            let e = err.expect_err(needle).to_string();
            assert!(e.contains(needle), "want {needle:?} in: {e}");
        }
    }

    #[test]
    fn env_flags_take_gcloud_list_syntax() {
        let env = parse_env_flags(&["A=1,B=2".into(), "^@^C=x,y@A=3".into()]).unwrap();
        let want = [("A", "3"), ("B", "2"), ("C", "x,y")];
        assert_eq!(
            env,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
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

    #[test]
    fn parallelism_cap_follows_cpu_and_memory() {
        let host = |cpus: f64, gib: u64| HostResources {
            cpus,
            memory_bytes: gib << 30,
        };
        let table = [
            // (cpu per task, memory per task, host, cap)
            (1.0, 512u64 << 20, host(2.0, 24), 2), // CPU-bound: 2 cores, 1 vCPU each
            (0.5, 512 << 20, host(2.0, 24), 4),
            (0.08, 512 << 20, host(2.0, 24), 25),
            (2.0 / 3.0, 512 << 20, host(2.0, 24), 3),
            (0.1, 4 << 30, host(16.0, 8), 1),   // memory-bound
            (0.1, 1 << 30, host(16.0, 8), 7),   // 8 GiB / (1 GiB + 16 MiB)
            (4.0, 512 << 20, host(2.0, 24), 1), // never 0
        ];
        for (cpu, mem, h, want) in table {
            assert_eq!(parallelism_cap(cpu, mem, &h), want, "{cpu} {mem} {h:?}");
        }
        let mut f = flags("j", "probe");
        f.tasks = Some("3".into());
        let s = resolve(&f, None).unwrap();
        assert_eq!(
            effective_parallelism(&s, &host(8.0, 24)),
            3,
            "never more than tasks"
        );
        assert_eq!(effective_parallelism(&s, &host(2.0, 24)), 2);
        f.parallelism = Some("10".into());
        let s = resolve(&f, None).unwrap();
        assert_eq!(
            effective_parallelism(&s, &host(1.0, 1)),
            3,
            "explicit wins over the cap"
        );
        assert_eq!(
            parse_mem_total("MemTotal:       24683804 kB\nMemFree: 1 kB\n"),
            Some(24683804 * 1024)
        );
    }
}
