//! `runlet jobs ...`: the daemon's jobs, executions and tasks, printed like gcloud's.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use runlet::api::client::{operation_result, Client};
use runlet::cli::client::ApiArgs;
use runlet::cli::jobs::{ExecuteArgs, ExecutionsCommand, JobArgs, JobsCommand, TasksCommand};
use runlet::cli::services::Format;
use runlet::cli::GlobalArgs;
use runlet::control::job::cron::{self, ScheduleFlags};
use runlet::control::job::spec::to_run_v2::{apply_flags, overrides};
use runlet::control::job::spec::{JobFlags, MAX_NAME};
use runlet::daemon::names::JobName;
use runlet::pb::run_v2 as v2;
use runlet::pubsub::binding as pubsub;
use runlet::spec::{self, SpecError};

use super::print::jobs as show;
use super::{api, print};

/// How often `execute --wait` reads the execution.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(global: &GlobalArgs, c: &JobsCommand) -> Result<i32> {
    match c {
        JobsCommand::Create(a) => put(global, a, false).await,
        JobsCommand::Update(a) => put(global, a, true).await,
        JobsCommand::Describe {
            job,
            format,
            api: a,
        } => {
            let name = job_name(a, job)?;
            let client = api::connect(global, a).await?;
            let j = client.get_job(&name.to_string()).await?;
            print(&render(&j, *format, show::job)?);
            Ok(0)
        }
        JobsCommand::List { api: a } => {
            let parent = api::parent(a)?;
            let client = api::connect(global, a).await?;
            let list = client.list_jobs(&parent.to_string()).await?;
            if list.is_empty() {
                eprintln!("Listed 0 items.");
            } else {
                print(&show::jobs(&list));
            }
            Ok(0)
        }
        JobsCommand::Delete {
            job,
            no_wait,
            api: a,
        } => {
            let name = job_name(a, job)?;
            let client = api::connect(global, a).await?;
            let op = client.delete_job(&name.to_string()).await?;
            if *no_wait {
                print(&format!("Job [{job}] is being deleted.\n"));
                return Ok(0);
            }
            operation_result::<v2::Job>(&client.wait(op).await?)?;
            print(&format!("Deleted job [{job}].\n"));
            Ok(0)
        }
        JobsCommand::Execute(a) => execute(global, a).await,
        JobsCommand::Executions(c) => executions(global, c).await,
    }
}

fn job_name(a: &ApiArgs, job: &str) -> Result<JobName, SpecError> {
    spec::check_name("JOB", job, MAX_NAME)?;
    Ok(JobName {
        parent: api::parent(a)?,
        job: job.to_string(),
    })
}

/// An execution by its id, under any job (`PARENT/jobs/-/executions/E`).
fn execution_name(a: &ApiArgs, execution: &str) -> Result<String, SpecError> {
    if execution.is_empty() || execution.contains('/') {
        return Err(SpecError {
            field: "EXECUTION",
            detail: format!("{execution:?} is not an execution id (JOB-xxxxx)"),
        });
    }
    Ok(format!("{}/jobs/-/executions/{execution}", api::parent(a)?))
}

fn render<T: Serialize>(
    v: &T,
    format: Option<Format>,
    summary: fn(&T) -> String,
) -> Result<String> {
    Ok(match format {
        None => summary(v),
        Some(Format::Json) => serde_json::to_string_pretty(v).context("writing JSON")? + "\n",
        Some(Format::Yaml) => serde_yaml_ng::to_string(v).context("writing YAML")?,
    })
}

/// `runlet jobs create|update`: the flags given, over the current job for an update.
async fn put(global: &GlobalArgs, a: &JobArgs, update: bool) -> Result<i32> {
    let name = job_name(&a.api, &a.job)?;
    if !update && a.image.is_none() && a.sidecars.containers.is_empty() {
        return Err(SpecError {
            field: "--image",
            detail: "missing: a job needs an image (loaded with `runlet image load`)".into(),
        }
        .into());
    }
    let flags = JobFlags {
        name: Some(a.job.clone()),
        image: a.image.clone(),
        tasks: a.tasks.clone(),
        parallelism: a.parallelism.clone(),
        max_retries: a.max_retries.clone(),
        task_timeout: a.task_timeout.clone(),
        set_env_vars: a.container.set_env_vars.clone(),
        env: spec::EnvChanges {
            file: super::env_file(a.container.env_vars_file.as_deref())?,
            update: a.update_env_vars.clone(),
            remove: a.remove_env_vars.clone(),
            clear: a.clear_env_vars,
            current: Vec::new(),
        },
        command: a.container.command.as_deref().map(spec::split_list),
        args: a.container.args.as_deref().map(spec::split_list),
        memory: a.memory.clone(),
        cpu: a.cpu.clone(),
        secrets: a.container.secrets.flags(),
        containers: super::group_flags(&a.sidecars.containers)?,
        add_volume: a.sidecars.add_volume.clone(),
        add_volume_mount: a.sidecars.add_volume_mount.clone(),
    };
    let schedule = ScheduleFlags {
        schedule: a.schedule.schedule.clone(),
        time_zone: a.schedule.time_zone.clone(),
        overlap: a.schedule.schedule_overlap.clone(),
        clear: a.schedule.clear_schedule,
    };
    let apply = |job: &mut v2::Job| -> Result<(), SpecError> {
        apply_flags(job, &flags)?;
        let p = &a.pubsub;
        pubsub::apply_flags(
            &mut job.annotations,
            p.pubsub_subscription.as_deref(),
            p.max_executions.as_deref(),
            p.clear_pubsub_subscription,
        )
    };
    // Checked before the daemon is reached, like every other bad input (a --max-executions
    // alone is checked against the stored job; so are an update's --container groups,
    // which may edit containers the job has).
    if (a.pubsub.max_executions.is_none() || a.pubsub.pubsub_subscription.is_some())
        && (!update || flags.containers.is_empty())
    {
        apply(&mut v2::Job::default())?;
    }
    let mut probe = std::collections::BTreeMap::new();
    if update {
        // An update's job may have a schedule already: checked again on the job read.
        probe.insert(cron::SCHEDULE.to_string(), "* * * * *".to_string());
    }
    cron::apply_flags(&mut probe, &schedule)?;
    let client = api::connect(global, &a.api).await?;
    let op = if update {
        let mut job = client.get_job(&name.to_string()).await?;
        apply(&mut job)?;
        cron::apply_flags(&mut job.annotations, &schedule)?;
        client.update_job(job).await?
    } else {
        let mut job = v2::Job::default();
        apply(&mut job)?;
        cron::apply_flags(&mut job.annotations, &schedule)?;
        client
            .create_job(&name.parent.to_string(), &name.job, job)
            .await?
    };
    operation_result::<v2::Job>(&client.wait(op).await?)?;
    print(&format!(
        "Job [{}] has successfully been {} in project [{}] region [{}].\n",
        a.job,
        if update { "updated" } else { "created" },
        name.parent.project,
        name.parent.location
    ));
    Ok(0)
}

/// `runlet jobs execute`: by default returns once the execution has started; `--wait`
/// follows it to its end.
async fn execute(global: &GlobalArgs, a: &ExecuteArgs) -> Result<i32> {
    let name = job_name(&a.api, &a.job)?;
    let args = a.args.as_deref().map(spec::split_list);
    let o = overrides(
        args.as_deref(),
        &a.update_env_vars,
        a.tasks.as_deref(),
        a.task_timeout.as_deref(),
    )?;
    let client = api::connect(global, &a.api).await?;
    let op = client.run_job(&name.to_string(), o).await?;
    let started: v2::Execution = op
        .metadata
        .as_ref()
        .map(|m| m.unpack())
        .transpose()?
        .unwrap_or_default();
    let id = print::short(&started.name).to_string();
    if a.no_wait {
        print(&format!("Execution [{id}] is being started.\n"));
        return Ok(0);
    }
    print(&format!(
        "Execution [{id}] has successfully started running.\n"
    ));
    if !a.wait {
        print(&format!(
            "View details about this execution by running:\nrunlet jobs executions describe {id}\n"
        ));
        return Ok(0);
    }
    follow(&client, &started.name).await
}

/// Prints the counts as they change until the execution ends; its exit status.
async fn follow(client: &Client, name: &str) -> Result<i32> {
    let mut last = String::new();
    loop {
        let e = client.get_execution(name).await?;
        let line = show::progress(&e);
        if line != last {
            print(&line);
            last = line;
        }
        match show::execution_state(&e) {
            "Succeeded" => {
                print(&format!(
                    "Execution [{}] has successfully completed.\n",
                    print::short(name)
                ));
                return Ok(0);
            }
            "Failed" | "Cancelled" => {
                print(&show::execution(&e));
                return Ok(1);
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

async fn executions(global: &GlobalArgs, c: &ExecutionsCommand) -> Result<i32> {
    match c {
        ExecutionsCommand::List { job, api: a } => {
            let parent = match job {
                Some(j) => job_name(a, j)?.to_string(),
                None => format!("{}/jobs/-", api::parent(a)?),
            };
            let client = api::connect(global, a).await?;
            let list = client.list_executions(&parent).await?;
            if list.is_empty() {
                eprintln!("Listed 0 items.");
            } else {
                print(&show::executions(&list));
            }
        }
        ExecutionsCommand::Describe {
            execution,
            format,
            api: a,
        } => {
            let name = execution_name(a, execution)?;
            let client = api::connect(global, a).await?;
            let e = client.get_execution(&name).await?;
            print(&render(&e, *format, show::execution)?);
        }
        ExecutionsCommand::Cancel {
            execution,
            no_wait,
            api: a,
        } => {
            let name = execution_name(a, execution)?;
            let client = api::connect(global, a).await?;
            let op = client.cancel_execution(&name).await?;
            if *no_wait {
                print(&format!("Execution [{execution}] is being cancelled.\n"));
                return Ok(0);
            }
            operation_result::<v2::Execution>(&client.wait(op).await?)?;
            print(&format!("Execution [{execution}] has been cancelled.\n"));
        }
        ExecutionsCommand::Delete {
            execution,
            no_wait,
            api: a,
        } => {
            let name = execution_name(a, execution)?;
            let client = api::connect(global, a).await?;
            let op = client.delete_execution(&name).await?;
            if *no_wait {
                print(&format!("Execution [{execution}] is being deleted.\n"));
                return Ok(0);
            }
            operation_result::<v2::Execution>(&client.wait(op).await?)?;
            print(&format!("Deleted execution [{execution}].\n"));
        }
        ExecutionsCommand::Tasks(TasksCommand::List { execution, api: a }) => {
            let name = execution_name(a, execution)?;
            let client = api::connect(global, a).await?;
            let list = client.list_tasks(&name).await?;
            if list.is_empty() {
                eprintln!("Listed 0 items.");
            } else {
                print(&show::tasks(&list));
            }
        }
    }
    Ok(0)
}
