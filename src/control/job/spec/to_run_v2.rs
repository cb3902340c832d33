//! `runlet jobs create|update` and `runlet jobs execute` flags as Admin API values: the
//! flags given set their fields of a `Job` (the rest are kept, so an update changes only
//! what it names), and `execute`'s flags become a `RunJob`'s overrides. Bad values are
//! refused here with the flag named; ranges are the daemon's to check
//! ([`super::run_v2`] names the field).

use super::{bad, check_env_name, task_timeout, JobFlags, DEFAULT_MAIN_NAME};
use crate::pb::run_v2::{self as v2, run_job_request::Overrides};
use crate::spec::container::{self, Container};
use crate::spec::container_flags::{depends_on_list, group_probe, ContainerFlags};
use crate::spec::group_to_run_v2::{apply_group, GroupFields};
use crate::spec::secrets::SecretFlags;
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

/// Sets the fields `f` gives on `job` (creating its template and containers as needed).
/// The flags before the first `--container` edit the main container (the first); each
/// `--container NAME` group edits the container of that name, or adds it (gcloud's
/// `run jobs create|update --container`): on a new job the containers come in the order
/// given, on an update only the flags given change. The plain variables change as
/// gcloud's flags say ([`svc::env_ops`]): `--set-env-vars`, `--env-vars-file` or
/// `--clear-env-vars` replace them, `--remove-env-vars` then `--update-env-vars` change
/// them; secret variables have their own flags. With several containers, the task is
/// checked as `runlet job execute` checks it ([`container::check_job`]), naming the flag
/// and the container.
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
    for v in svc::VolumeFlags::parse(&f.add_volume, &[], u64::MAX)?.volumes {
        task.volumes.retain(|old| old.name != v.name);
        task.volumes.push(svc::to_run_v2::in_memory_volume(&v));
    }
    if task.containers.is_empty() {
        match (f.containers.first(), f.image.is_some()) {
            (Some(first), false) => {
                if let Some(flag) = f.container_flag_given() {
                    return Err(super::containers::given_before(flag, &first.name));
                }
            }
            _ => task.containers.push(v2::Container::default()),
        }
    }
    if !f.containers.is_empty()
        && task.containers[..]
            .first()
            .is_some_and(|c| c.name.is_empty())
    {
        // Several containers are named each; the unnamed one of a single-container job
        // is the main one, as `runlet job execute` names it.
        task.containers[0].name = DEFAULT_MAIN_NAME.to_string();
    }
    if !task.containers.is_empty() {
        edit(task, 0, &Edit::head(f))?;
    }
    for (i, g) in f.containers.iter().enumerate() {
        if f.containers[..i].iter().any(|o| o.name == g.name) {
            return Err(bad(
                "--container",
                format!("container {} is given twice", g.name),
            ));
        }
        if g.port.is_some() {
            return Err(bad(
                "--port",
                format!(
                    "container {}: a task serves nothing; no container of a job has a port",
                    g.name
                ),
            ));
        }
        if g.liveness_probe.is_some() {
            return Err(bad(
                "--liveness-probe",
                format!(
                    "container {}: a job's containers have no liveness probe",
                    g.name
                ),
            ));
        }
        let i = match task.containers.iter().position(|c| c.name == g.name) {
            Some(i) => i,
            None => {
                if g.image.is_none() {
                    return Err(bad(
                        "--image",
                        format!("container {} is new and has no --image", g.name),
                    ));
                }
                task.containers.push(v2::Container {
                    name: g.name.clone(),
                    ..Default::default()
                });
                task.containers.len() - 1
            }
        };
        edit(task, i, &Edit::group(g))?;
        let probe = group_probe("--startup-probe", &g.name, g.startup_probe.as_deref(), 0)?;
        apply_group(
            &mut task.containers[i],
            GroupFields {
                startup_probe: probe.as_ref(),
                depends_on: (!g.depends_on.is_empty()).then(|| depends_on_list(&g.depends_on)),
                ..Default::default()
            },
        );
    }
    if !f.containers.is_empty() || task.containers.len() > 1 {
        container::check_job(&shapes(&task.containers)?)?;
    }
    Ok(())
}

/// What the flags say of one container: the flags before the first `--container` (for
/// the main one) or one group.
struct Edit<'a> {
    image: Option<&'a str>,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    set_env_vars: &'a [String],
    env: &'a svc::EnvChanges,
    secrets: &'a SecretFlags,
    memory: Option<&'a str>,
    cpu: Option<&'a str>,
    mounts: &'a [String],
}

impl<'a> Edit<'a> {
    fn head(f: &'a JobFlags) -> Edit<'a> {
        Edit {
            image: f.image.as_deref(),
            command: f.command.clone(),
            args: f.args.clone(),
            set_env_vars: &f.set_env_vars,
            env: &f.env,
            secrets: &f.secrets,
            memory: f.memory.as_deref(),
            cpu: f.cpu.as_deref(),
            mounts: &f.add_volume_mount,
        }
    }

    fn group(g: &'a ContainerFlags) -> Edit<'a> {
        Edit {
            image: g.image.as_deref(),
            command: g.command.as_deref().map(svc::split_list),
            args: g.args.as_deref().map(svc::split_list),
            set_env_vars: &g.set_env_vars,
            env: &g.env,
            secrets: &g.secrets,
            memory: g.memory.as_deref(),
            cpu: g.cpu.as_deref(),
            mounts: &g.add_volume_mount,
        }
    }
}

/// Sets what `e` gives on the task's container `i` ([`apply_group`]); the rest is kept.
/// Each value is checked first, in the flags' order, naming the flag.
fn edit(task: &mut v2::TaskTemplate, i: usize, e: &Edit) -> Result<(), SpecError> {
    let c = &task.containers[i];
    let env = if !e.set_env_vars.is_empty() || !e.env.given().is_empty() {
        let ops = svc::env_ops(e.set_env_vars, e.env, check_env_name)?;
        Some(ops.apply(&svc::to_run_v2::plain_env(c)))
    } else {
        None
    };
    if let Some(m) = e.memory {
        svc::memory("--memory", m)?;
    }
    if let Some(cpu) = e.cpu {
        svc::cpu("--cpu", cpu)?;
    }
    let mut mounts: Vec<(String, String)> = Vec::new();
    if !e.mounts.is_empty() {
        let vols: Vec<svc::VolumeFlag> = task
            .volumes
            .iter()
            .filter(|v| matches!(v.volume_type, Some(v2::volume::VolumeType::EmptyDir(_))))
            .map(|v| svc::VolumeFlag {
                name: v.name.clone(),
                size_limit: None,
                size: 0,
            })
            .collect();
        for m in e.mounts {
            let m = svc::mount_of(m, &vols)?;
            // A later mount at the same path replaces an earlier one.
            mounts.retain(|(_, path)| *path != m.path);
            mounts.push((m.volume, m.path));
        }
    }
    apply_group(
        &mut task.containers[i],
        GroupFields {
            image: e.image,
            command: e.command.clone(),
            args: e.args.clone(),
            env,
            memory: e.memory,
            cpu: e.cpu,
            mounts,
            ..Default::default()
        },
    );
    let ops = e.secrets.parse()?;
    if !ops.is_empty() {
        // The secret volumes the other containers mount stay.
        let keep: Vec<String> = task
            .containers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, c)| c.volume_mounts.iter().map(|m| m.name.clone()))
            .collect();
        let c = &mut task.containers[i];
        let mut b = secrets_v2::bindings(FIELDS, "", &c.env, &task.volumes, &c.volume_mounts)?;
        b.apply(&ops);
        b.check("--set-secrets", &svc::to_run_v2::plain_env(c))?;
        secrets_v2::replace(c, &mut task.volumes, &b, &keep);
    }
    Ok(())
}

/// The task's containers as far as [`container::check_job`] looks: names, dependencies and
/// startup probes (the flags refuse ports and liveness probes before).
fn shapes(cs: &[v2::Container]) -> Result<Vec<Container>, SpecError> {
    cs.iter()
        .map(|c| {
            Ok(Container {
                name: c.name.clone(),
                depends_on: c.depends_on.clone(),
                startup_probe: c
                    .startup_probe
                    .as_ref()
                    .map(|p| svc::run_v2::probe("--startup-probe", p, 0))
                    .transpose()?,
                ..Default::default()
            })
        })
        .collect()
}

const FIELDS: secrets_v2::Fields = secrets_v2::Fields {
    env: "--update-secrets",
    volumes: "--update-secrets",
    mounts: "--update-secrets",
};

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
            env: svc::to_run_v2::plain_env_vars(&env),
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

    fn group(name: &str, f: fn(&mut ContainerFlags)) -> ContainerFlags {
        let mut g = ContainerFlags {
            name: name.into(),
            ..Default::default()
        };
        f(&mut g);
        g
    }

    fn containers(job: &v2::Job) -> &[v2::Container] {
        &job.template
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .containers
    }

    /// A main container depending on a sidecar with a startup probe.
    fn two_groups() -> Vec<ContainerFlags> {
        vec![
            group("main", |g| {
                g.image = Some("busybox".into());
                g.set_env_vars = vec!["A=1".into()];
                g.depends_on = vec!["side".into()];
                g.memory = Some("256Mi".into());
            }),
            group("side", |g| {
                g.image = Some("probe".into());
                g.args = Some("serve".into());
                g.startup_probe = Some("tcpSocket.port=9000".into());
            }),
        ]
    }

    /// The job `jobs create` makes of [`two_groups`].
    fn two() -> v2::Job {
        let mut job = v2::Job::default();
        apply_flags(&mut job, &tests_flags(|f| f.containers = two_groups())).unwrap();
        job
    }

    fn tests_flags(f: impl FnOnce(&mut JobFlags)) -> JobFlags {
        let mut flags = JobFlags::default();
        f(&mut flags);
        flags
    }

    #[test]
    fn container_groups_define_or_edit_containers_by_name() {
        // (case, the job before, the flags, the containers after as name image args deps env)
        type Row = (&'static str, v2::Job, JobFlags, Vec<&'static str>);
        let show = |c: &v2::Container| {
            let env: Vec<String> = svc::to_run_v2::plain_env(c)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mem = c
                .resources
                .as_ref()
                .and_then(|r| r.limits.get("memory"))
                .cloned()
                .unwrap_or_default();
            let probe = if c.startup_probe.is_some() {
                "probe"
            } else {
                ""
            };
            [
                c.name.clone(),
                c.image.clone(),
                format!("[{}]", c.args.join(",")),
                format!("[{}]", c.depends_on.join(",")),
                format!("[{}]", env.join(",")),
                mem,
                probe.to_string(),
            ]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
        };
        let single = {
            let mut job = v2::Job::default();
            apply_flags(&mut job, &tests_flags(|f| f.image = Some("busybox".into()))).unwrap();
            job
        };
        let table: Vec<Row> = vec![
            (
                "create: the groups in order, the first is main",
                v2::Job::default(),
                tests_flags(|f| f.containers = two_groups()),
                vec![
                    "main busybox [] [side] [A=1] 256Mi",
                    "side probe [serve] [] [] probe",
                ],
            ),
            (
                "create: --image before the groups makes main",
                v2::Job::default(),
                tests_flags(|f| {
                    f.image = Some("app".into());
                    f.args = Some(vec!["run".into()]);
                    f.containers = vec![group("side", |g| g.image = Some("probe".into()))];
                }),
                vec!["main app [run] [] []", "side probe [] [] []"],
            ),
            (
                "update: a group edits its container, only what it gives",
                two(),
                tests_flags(|f| {
                    f.containers = vec![group("side", |g| {
                        g.args = Some("serve,--port,9000".into());
                        g.env.update = vec!["B=2".into()];
                    })]
                }),
                vec![
                    "main busybox [] [side] [A=1] 256Mi",
                    "side probe [serve,--port,9000] [] [B=2] probe",
                ],
            ),
            (
                "update: a new name adds a sidecar",
                two(),
                tests_flags(|f| {
                    f.containers = vec![
                        group("log", |g| g.image = Some("busybox".into())),
                        group("main", |g| g.depends_on = vec!["side,log".into()]),
                    ]
                }),
                vec![
                    "main busybox [] [side,log] [A=1] 256Mi",
                    "side probe [serve] [] [] probe",
                    "log busybox [] [] []",
                ],
            ),
            (
                "update: the flags before --container edit main",
                two(),
                tests_flags(|f| {
                    f.image = Some("app".into());
                    f.containers = vec![group("side", |g| g.memory = Some("1Gi".into()))];
                }),
                vec![
                    "main app [] [side] [A=1] 256Mi",
                    "side probe [serve] [] [] 1Gi probe",
                ],
            ),
            (
                "update: a single-container job's container is main",
                single,
                tests_flags(|f| {
                    f.containers = vec![
                        group("side", |g| g.image = Some("probe".into())),
                        group("main", |g| g.depends_on = vec!["side".into()]),
                    ]
                }),
                vec!["main busybox [] [side] []", "side probe [] [] []"],
            ),
        ];
        for (case, mut job, f, want) in table {
            apply_flags(&mut job, &f).unwrap_or_else(|e| panic!("{case}: {e}"));
            let got: Vec<String> = containers(&job).iter().map(show).collect();
            assert_eq!(got, want, "{case}");
            // What the daemon runs from it: the same containers, main first.
            let spec = super::super::run_v2::job_spec("j", &job, None)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(spec.containers().len(), want.len(), "{case}");
        }
    }

    #[test]
    fn container_groups_are_refused_naming_the_flag_and_the_container() {
        // (case, create or update, the groups' edit, the flag, what the message says)
        type Row = (
            &'static str,
            bool,
            fn(&mut JobFlags),
            &'static str,
            &'static str,
        );
        let table: Vec<Row> = vec![
            (
                "unknown dependency",
                false,
                |f| f.containers[1].depends_on = vec!["db".into()],
                "--depends-on",
                "container side depends on db, which is not defined",
            ),
            (
                "cycle",
                true,
                |f| f.containers = vec![group("side", |g| g.depends_on = vec!["main".into()])],
                "--depends-on",
                "a dependency cycle among main, side",
            ),
            (
                "eleven",
                true,
                |f| {
                    f.containers = (0..9)
                        .map(|i| ContainerFlags {
                            image: Some("busybox".into()),
                            ..group(&format!("s{i}"), |_| {})
                        })
                        .collect()
                },
                "--container",
                "11 containers: a task has 1 to 10",
            ),
            (
                "a port",
                false,
                |f| f.containers[1].port = Some(8080),
                "--port",
                "container side: a task serves nothing",
            ),
            (
                "a liveness probe",
                true,
                |f| {
                    f.containers = vec![group("side", |g| {
                        g.liveness_probe = Some("tcpSocket.port=9000".into())
                    })]
                },
                "--liveness-probe",
                "container side: a job's containers have no liveness probe",
            ),
            (
                "a startup probe on main",
                true,
                |f| {
                    f.containers = vec![group("main", |g| {
                        g.startup_probe = Some("tcpSocket.port=9000".into())
                    })]
                },
                "--startup-probe",
                "container main is the main container",
            ),
            (
                "a sidecar's probe without a port",
                false,
                |f| f.containers[1].startup_probe = Some("httpGet.path=/".into()),
                "--startup-probe",
                "container side has no --port",
            ),
            (
                "a new container without an image",
                true,
                |f| f.containers = vec![group("log", |g| g.args = Some("x".into()))],
                "--image",
                "container log is new and has no --image",
            ),
            (
                "flags before the first group without --image",
                false,
                |f| f.memory = Some("1Gi".into()),
                "--memory",
                "put it after --container main",
            ),
            (
                "a volume the task does not have",
                false,
                |f| f.containers[1].add_volume_mount = vec!["volume=v,mount-path=/v".into()],
                "--add-volume-mount",
                "not defined",
            ),
            (
                "a reserved variable",
                true,
                |f| {
                    f.containers = vec![group("side", |g| {
                        g.env.update = vec!["CLOUD_RUN_TASK_INDEX=1".into()]
                    })]
                },
                "--update-env-vars",
                "reserved",
            ),
            (
                "twice the same name",
                false,
                |f| f.containers[1].name = "main".into(),
                "--container",
                "container main is given twice",
            ),
        ];
        for (case, update, edit, field, detail) in table {
            let mut f = tests_flags(|f| f.containers = two_groups());
            edit(&mut f);
            let mut job = if update { two() } else { v2::Job::default() };
            let e = apply_flags(&mut job, &f).unwrap_err();
            assert_eq!(e.field, field, "{case}: {e}");
            assert!(e.detail.contains(detail), "{case}: {e}");
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
