//! `runlet jobs create|update` and `runlet jobs execute` flags as Admin API values: the
//! flags given set their fields of a `Job` (the rest are kept, so an update changes only
//! what it names), and `execute`'s flags become a `RunJob`'s overrides. Bad values are
//! refused here with the flag named; ranges are the daemon's to check
//! ([`super::run_v2`] names the field).

use super::{bad, check_env_name, task_timeout, JobFlags};
use crate::pb::run_v2::{self as v2, run_job_request::Overrides};
use crate::spec::{self as svc, secrets_v2, SpecError};

fn int(field: &'static str, s: &str) -> Result<i32, SpecError> {
    s.trim()
        .parse()
        .map_err(|_| bad(field, format!("{s:?} is not a whole number")))
}

fn duration(field: &'static str, s: &str) -> Result<pbjson_types::Duration, SpecError> {
    let d = task_timeout(field, svc::parse_duration(field, s)?)?;
    Ok(pbjson_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: 0,
    })
}

fn env_vars(pairs: Vec<(String, String)>) -> Vec<v2::EnvVar> {
    pairs
        .into_iter()
        .map(|(k, v)| v2::EnvVar {
            name: k,
            values: Some(v2::env_var::Values::Value(v)),
        })
        .collect()
}

/// Sets the fields `f` gives on `job` (creating its template and container as needed). The
/// plain variables change as gcloud's flags say ([`svc::env_ops`]): `--set-env-vars`,
/// `--env-vars-file` or `--clear-env-vars` replace them, `--remove-env-vars` then
/// `--update-env-vars` change them; secret variables have their own flags.
pub fn apply_flags(job: &mut v2::Job, f: &JobFlags) -> Result<(), SpecError> {
    let exec = job.template.get_or_insert_with(Default::default);
    if let Some(t) = &f.tasks {
        exec.task_count = int("--tasks", t)?;
    }
    if let Some(p) = &f.parallelism {
        exec.parallelism = int("--parallelism", p)?;
    }
    let task = exec.template.get_or_insert_with(Default::default);
    if let Some(r) = &f.max_retries {
        task.retries = Some(v2::task_template::Retries::MaxRetries(int(
            "--max-retries",
            r,
        )?));
    }
    if let Some(t) = &f.task_timeout {
        task.timeout = Some(duration("--task-timeout", t)?);
    }
    if task.containers.is_empty() {
        task.containers.push(v2::Container::default());
    }
    let c = &mut task.containers[0];
    if let Some(i) = &f.image {
        c.image = i.clone();
    }
    if let Some(cmd) = &f.command {
        c.command = cmd.clone();
    }
    if let Some(a) = &f.args {
        c.args = a.clone();
    }
    if !f.set_env_vars.is_empty() || !f.env.given().is_empty() {
        let ops = svc::env_ops(&f.set_env_vars, &f.env, check_env_name)?;
        let current: Vec<(String, String)> = c
            .env
            .iter()
            .filter_map(|e| match &e.values {
                Some(v2::env_var::Values::ValueSource(_)) => None,
                Some(v2::env_var::Values::Value(v)) => Some((e.name.clone(), v.clone())),
                None => Some((e.name.clone(), String::new())),
            })
            .collect();
        // Plain variables only: secrets have their own flags (as gcloud).
        c.env
            .retain(|e| matches!(e.values, Some(v2::env_var::Values::ValueSource(_))));
        c.env.extend(env_vars(ops.apply(&current)));
    }
    let ops = f.secrets.parse()?;
    if !ops.is_empty() {
        let mut b = secrets_v2::bindings(FIELDS, "", &c.env, &task.volumes, &c.volume_mounts)?;
        b.apply(&ops);
        b.check("--set-secrets", &plain_env(c))?;
        secrets_v2::replace(c, &mut task.volumes, &b);
    }
    let c = &mut task.containers[0];
    if let Some(m) = &f.memory {
        svc::memory("--memory", m)?;
        limits(c).insert("memory".into(), m.clone());
    }
    if let Some(cpu) = &f.cpu {
        svc::cpu("--cpu", cpu)?;
        limits(c).insert("cpu".into(), cpu.clone());
    }
    Ok(())
}

const FIELDS: secrets_v2::Fields = secrets_v2::Fields {
    env: "--update-secrets",
    volumes: "--update-secrets",
    mounts: "--update-secrets",
};

/// The container's plain variables (names only matter here).
fn plain_env(c: &v2::Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .filter(|e| !matches!(e.values, Some(v2::env_var::Values::ValueSource(_))))
        .map(|e| (e.name.clone(), String::new()))
        .collect()
}

fn limits(c: &mut v2::Container) -> &mut std::collections::BTreeMap<String, String> {
    &mut c.resources.get_or_insert_with(Default::default).limits
}

/// `runlet jobs execute`'s overrides: `--args` replaces the container's, `--update-env-vars`
/// merges, `--tasks` and `--task-timeout` replace; `None` when none is given.
pub fn overrides(
    args: Option<&[String]>,
    update_env: &[String],
    tasks: Option<&str>,
    timeout: Option<&str>,
) -> Result<Option<Overrides>, SpecError> {
    let env = svc::parse_env_list(update_env, |k| svc::check_env_name("--update-env-vars", k))?;
    let mut o = Overrides::default();
    if args.is_some() || !env.is_empty() {
        o.container_overrides = vec![v2::run_job_request::overrides::ContainerOverride {
            args: args.map(<[String]>::to_vec).unwrap_or_default(),
            clear_args: args.is_some_and(<[String]>::is_empty),
            env: env_vars(env),
            ..Default::default()
        }];
    }
    if let Some(t) = tasks {
        o.task_count = int("--tasks", t)?;
    }
    if let Some(t) = timeout {
        o.timeout = Some(duration("--task-timeout", t)?);
    }
    Ok((o != Overrides::default()).then_some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_only_what_they_name() {
        let mut job = v2::Job::default();
        let f = JobFlags {
            image: Some("busybox".into()),
            tasks: Some("4".into()),
            parallelism: Some("2".into()),
            max_retries: Some("1".into()),
            task_timeout: Some("90s".into()),
            set_env_vars: vec!["A=1,B=2".into()],
            args: Some(vec!["x".into()]),
            memory: Some("1Gi".into()),
            ..Default::default()
        };
        apply_flags(&mut job, &f).unwrap();
        let spec = super::super::run_v2::job_spec("hello", &job, None).unwrap();
        assert_eq!(
            (spec.task_count, spec.parallelism, spec.max_retries),
            (4, Some(2), 1)
        );
        assert_eq!(spec.task_timeout.as_secs(), 90);
        assert_eq!(spec.memory, "1Gi");
        // An update naming one thing keeps the rest.
        let g = JobFlags {
            tasks: Some("6".into()),
            env: svc::EnvChanges {
                update: vec!["B=3".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        apply_flags(&mut job, &g).unwrap();
        let spec = super::super::run_v2::job_spec("hello", &job, None).unwrap();
        assert_eq!((spec.task_count, spec.parallelism), (6, Some(2)));
        assert_eq!(
            spec.env,
            [("A".into(), "1".into()), ("B".into(), "3".into())]
        );
        assert_eq!(spec.args, Some(vec!["x".to_string()]));
        let bad = JobFlags {
            tasks: Some("many".into()),
            ..Default::default()
        };
        assert_eq!(apply_flags(&mut job, &bad).unwrap_err().field, "--tasks");
    }

    #[test]
    fn env_flags_change_the_stored_jobs_variables() {
        let secret = v2::EnvVar {
            name: "S".into(),
            values: Some(v2::env_var::Values::ValueSource(Default::default())),
        };
        let mut job = v2::Job::default();
        let env = |f: fn(&mut svc::EnvChanges)| {
            let mut e = svc::EnvChanges::default();
            f(&mut e);
            JobFlags {
                env: e,
                ..Default::default()
            }
        };
        let names = |job: &v2::Job| -> Vec<String> {
            let c = &job
                .template
                .as_ref()
                .unwrap()
                .template
                .as_ref()
                .unwrap()
                .containers[0];
            c.env.iter().map(|e| e.name.clone()).collect()
        };
        apply_flags(
            &mut job,
            &JobFlags {
                set_env_vars: vec!["A=1,B=2,C=3".into()],
                ..Default::default()
            },
        )
        .unwrap();
        job.template
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .containers[0]
            .env
            .push(secret);
        apply_flags(&mut job, &env(|e| e.remove = vec!["A,C".into()])).unwrap();
        assert_eq!(names(&job), ["S", "B"]);
        apply_flags(
            &mut job,
            &env(|e| {
                e.file = Some(svc::EnvFile {
                    path: "f".into(),
                    vars: vec![("F".into(), "x".into())],
                })
            }),
        )
        .unwrap();
        assert_eq!(names(&job), ["S", "F"]);
        apply_flags(&mut job, &env(|e| e.clear = true)).unwrap();
        assert_eq!(names(&job), ["S"]);
        for (f, field) in [
            (
                env(|e| e.update = vec!["CLOUD_RUN_TASK_INDEX=1".into()]),
                "--update-env-vars",
            ),
            (
                env(|e| {
                    e.clear = true;
                    e.remove = vec!["A".into()]
                }),
                "--clear-env-vars",
            ),
        ] {
            assert_eq!(apply_flags(&mut job, &f).unwrap_err().field, field);
        }
    }

    #[test]
    fn execute_flags_as_overrides() {
        assert_eq!(overrides(None, &[], None, None).unwrap(), None);
        let o = overrides(Some(&["a".into()]), &["K=V".into()], Some("3"), Some("1m"))
            .unwrap()
            .unwrap();
        assert_eq!(o.task_count, 3);
        assert_eq!(o.timeout.unwrap().seconds, 60);
        assert_eq!(o.container_overrides[0].args, ["a"]);
        assert_eq!(o.container_overrides[0].env[0].name, "K");
        assert_eq!(
            overrides(None, &[], None, Some("0s")).unwrap_err().field,
            "--task-timeout"
        );
    }
}
