//! The `runlet job execute` flags ([`JobFlags`]) and [`resolve`]: flags over the `-f` file
//! over Cloud Run's defaults, each value checked with the field named.

use std::time::Duration;

use super::yaml::{JobYaml, LimitsYaml, Quantity};
use super::yaml_secrets;
use super::{
    bad, JobSpec, DEFAULT_CPU, DEFAULT_MAX_RETRIES, DEFAULT_MEMORY, DEFAULT_TASK_TIMEOUT, MAX_NAME,
    MAX_RETRIES, MAX_TASKS, MAX_TASK_TIMEOUT, RESERVED_ENV,
};
use crate::image::reference;
use crate::spec::secrets::{SecretBindings, SecretFlags};
use crate::spec::{self as svc, SpecError};

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
    /// `--env-vars-file` (`runlet job execute`, `runlet jobs create|update`) and, for
    /// `runlet jobs update`, `--update-env-vars`, `--remove-env-vars`, `--clear-env-vars`.
    pub env: svc::EnvChanges,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub memory: Option<String>,
    pub cpu: Option<String>,
    /// `--set-secrets`, `--update-secrets`, `--remove-secrets`, `--clear-secrets`: applied
    /// to the file's secrets.
    pub secrets: SecretFlags,
    /// `--container NAME` groups (sidecars in jobs; see [`super::containers`]).
    pub containers: Vec<crate::spec::container_flags::ContainerFlags>,
    /// `--add-volume` (in-memory volumes of the task) and the main container's
    /// `--add-volume-mount`.
    pub add_volume: Vec<String>,
    pub add_volume_mount: Vec<String>,
}

impl JobFlags {
    /// The first flag given before any `--container` that describes a container (all but
    /// `--image`, which names the main one): with groups and no `--image` there, it has
    /// no container to apply to.
    pub fn container_flag_given(&self) -> Option<&'static str> {
        let given = [
            ("--command", self.command.is_some()),
            ("--args", self.args.is_some()),
            ("--set-env-vars", !self.set_env_vars.is_empty()),
            ("--memory", self.memory.is_some()),
            ("--cpu", self.cpu.is_some()),
            ("--add-volume-mount", !self.add_volume_mount.is_empty()),
            ("--set-secrets", !self.secrets.is_empty()),
        ];
        self.env
            .given()
            .first()
            .copied()
            .or_else(|| given.iter().find(|g| g.1).map(|g| g.0))
    }
}

fn parse_u32(field: &'static str, s: &str) -> Result<u32, SpecError> {
    s.trim()
        .parse()
        .map_err(|_| bad(field, format!("{s:?} is not a whole number")))
}

/// A task's variable name: valid and not one runlet sets in every task.
pub(crate) fn check_env_name(field: &'static str, k: &str) -> Result<(), SpecError> {
    svc::check_env_name(field, k)?;
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
    svc::parse_env_list(items, |k| check_env_name("--set-env-vars", k))
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
    if !flags.containers.is_empty() {
        return super::containers::resolve_groups(flags, file);
    }
    if !flags.add_volume.is_empty() || !flags.add_volume_mount.is_empty() {
        return Err(bad(
            "--add-volume",
            "an in-memory volume is shared between a task's containers: give --container groups too",
        ));
    }
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

    let task_count = TASKS.count(
        &flags.tasks,
        exec.and_then(|e| e.task_count),
        1,
        (1, MAX_TASKS),
    )?;
    // gcloud: "Set to 0 to unset".
    let parallelism = PARALLELISM.count(
        &flags.parallelism,
        exec.and_then(|e| e.parallelism),
        0,
        (0, MAX_TASKS),
    )?;
    let parallelism = (parallelism > 0).then_some(parallelism);
    let max_retries = MAX_RETRIES_FIELD.count(
        &flags.max_retries,
        task.and_then(|t| t.max_retries),
        DEFAULT_MAX_RETRIES,
        (0, MAX_RETRIES),
    )?;

    let task_timeout = match (&flags.task_timeout, task.and_then(|t| t.timeout_seconds)) {
        (Some(s), _) => task_timeout(
            "--task-timeout",
            svc::duration_in("--task-timeout", s, (1, MAX_TASK_TIMEOUT.as_secs()))?,
        )?,
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
        if var.value_from.is_none() {
            put_env(&mut env, &var.name, var.value.as_deref().unwrap_or(""));
        }
    }
    // `--set-env-vars` or `--env-vars-file` (one of them, as gcloud): over the file's.
    let given =
        match svc::env_ops(&flags.set_env_vars, &flags.env, check_env_name)? {
            svc::EnvOps::Replace(vars) => vars,
            svc::EnvOps::Change { .. } => return Err(bad(
                "--update-env-vars",
                "not a flag of `runlet job execute`: --set-env-vars changes the file's variables",
            )),
        };
    for (k, v) in given {
        put_env(&mut env, &k, &v);
    }
    // The file's secrets, then the flags' (`--set-secrets` replaces them, as gcloud).
    let mut secrets = match (container, task) {
        (Some(c), Some(t)) => yaml_secrets::bindings(c, &t.volumes)?,
        _ => SecretBindings::default(),
    };
    let ops = flags.secrets.parse()?;
    for (k, _) in &ops.put {
        if !k.starts_with('/') {
            check_env_name("--set-secrets", k)?;
        }
    }
    secrets.apply(&ops);
    secrets.check("--set-secrets", &env)?;

    let command = flags
        .command
        .clone()
        .or_else(|| container.and_then(|c| c.command.clone()));
    let args = flags
        .args
        .clone()
        .or_else(|| container.and_then(|c| c.args.clone()));

    let file_limits = |q: fn(&LimitsYaml) -> Option<&Quantity>| limits.and_then(q);
    let (memory, memory_bytes) = MEMORY.quantity(
        &flags.memory,
        file_limits(|l| l.memory.as_ref()),
        DEFAULT_MEMORY,
        svc::memory,
    )?;
    let (cpu, cpu_value) = CPU.quantity(
        &flags.cpu,
        file_limits(|l| l.cpu.as_ref()),
        DEFAULT_CPU,
        svc::cpu,
    )?;

    let sidecars = match file {
        Some(f) => super::containers::from_yaml(f, memory_bytes)?,
        None => Default::default(),
    };
    let spec = JobSpec {
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
        secrets,
        sidecars,
    };
    if !spec.sidecars.is_empty() {
        crate::spec::container::check_job(&spec.containers())?;
    }
    Ok(spec)
}

/// A setting that a flag or the file gives: the flag's name and the file's path, the names
/// an error uses.
struct Field {
    flag: &'static str,
    path: &'static str,
}

const TASKS: Field = Field::new("--tasks", "spec.template.spec.taskCount");
const PARALLELISM: Field = Field::new("--parallelism", "spec.template.spec.parallelism");
const MAX_RETRIES_FIELD: Field = Field::new(
    "--max-retries",
    "spec.template.spec.template.spec.maxRetries",
);
const MEMORY: Field = Field::new(
    "--memory",
    "spec.template.spec.template.spec.containers[0].resources.limits.memory",
);
const CPU: Field = Field::new(
    "--cpu",
    "spec.template.spec.template.spec.containers[0].resources.limits.cpu",
);

impl Field {
    const fn new(flag: &'static str, path: &'static str) -> Field {
        Field { flag, path }
    }

    /// A whole number in `lo..=hi`: the flag's if given, else the file's, else `default`.
    fn count(
        &self,
        flag: &Option<String>,
        file: Option<u32>,
        default: u32,
        (lo, hi): (u32, u32),
    ) -> Result<u32, SpecError> {
        match (flag, file) {
            (Some(s), _) => svc::in_range(self.flag, parse_u32(self.flag, s)?, lo, hi),
            (None, Some(n)) => svc::in_range(self.path, n, lo, hi),
            (None, None) => Ok(default),
        }
    }

    /// A resource limit: the flag's if given, else the file's, else `default`; as given
    /// (`512Mi`) and as parsed.
    fn quantity<T>(
        &self,
        flag: &Option<String>,
        file: Option<&Quantity>,
        default: &str,
        parse: fn(&'static str, &str) -> Result<T, SpecError>,
    ) -> Result<(String, T), SpecError> {
        let (field, value) = match (flag, file) {
            (Some(v), _) => (self.flag, v.as_str()),
            (None, Some(Quantity(v))) => (self.path, v.as_str()),
            (None, None) => (self.flag, default),
        };
        Ok((value.to_string(), parse(field, value)?))
    }
}

fn normalize_image(field: &'static str, image: &str) -> Result<String, SpecError> {
    reference::normalize(image).map_err(|e| bad(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::flags;
    use super::*;

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

    /// Sets one flag (named as the error names its field) to `value`.
    fn set(f: &mut JobFlags, flag: &str, value: &str) {
        let v = Some(value.to_string());
        match flag {
            "JOB" => f.name = v,
            "--image" => f.image = v,
            "--tasks" => f.tasks = v,
            "--parallelism" => f.parallelism = v,
            "--max-retries" => f.max_retries = v,
            "--task-timeout" => f.task_timeout = v,
            "--memory" => f.memory = v,
            "--cpu" => f.cpu = v,
            "--set-env-vars" => f.set_env_vars = vec![value.to_string()],
            other => panic!("no flag {other}"),
        }
    }

    #[test]
    fn bad_flags_name_the_field() {
        let long_name = "a".repeat(50);
        // (flag, value, in the message)
        let table = [
            ("--tasks", "0", "allowed 1 to 10000"),
            ("--tasks", "10001", "allowed 1 to 10000"),
            ("--tasks", "many", "not a whole number"),
            ("--parallelism", "-1", "not a whole number"),
            ("--max-retries", "11", "allowed 0 to 10"),
            ("--task-timeout", "0", "1s to 168h"),
            ("--task-timeout", "169h", "1s to 168h"),
            ("--task-timeout", "1.5s", "whole number"),
            ("--task-timeout", "10 minutes", "not a duration"),
            ("--memory", "lots", "not a memory size"),
            ("--cpu", "99", "allowed 0.08 to 8"),
            ("--set-env-vars", "CLOUD_RUN_TASK_INDEX=3", "reserved"),
            ("--set-env-vars", "A", "KEY=VALUE"),
            ("JOB", "Bad_Name", "lowercase"),
            ("JOB", &long_name, "1-49"),
            ("--image", "UPPER CASE", ""),
        ];
        for (flag, value, needle) in table {
            let mut f = flags("hello", "probe");
            set(&mut f, flag, value);
            let e = resolve(&f, None).unwrap_err();
            assert_eq!(e.field, flag, "{f:?}: {e}");
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

    #[test]
    fn env_flags_take_gcloud_list_syntax() {
        let env = parse_env_flags(&["A=1,B=2".into(), "^@^C=x,y@A=3".into()]).unwrap();
        let want = [("A", "3"), ("B", "2"), ("C", "x,y")];
        assert_eq!(
            env,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
    }
}
