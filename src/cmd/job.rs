//! `runlet job execute` and `runlet job executions list|describe`. The job (flags and/or
//! `-f job.yaml`) is resolved once, before containerd is reached; bad input exits 64.

mod table;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::{info, warn};

use runlet::cli::job::{ExecuteArgs, ExecutionsCommand, Format, JobCommand};
use runlet::cli::GlobalArgs;
use runlet::control::job::spec::{self as jobspec, HostResources, JobFlags, JobSpec};
use runlet::control::job::{self, Ctx, ExecutionState, Line, LineSink, RecordStore};
use runlet::control::KILL_GRACE;
use runlet::runtime::containerd::Containerd;
use runlet::runtime::network::NetConfig;
use runlet::runtime::ocispec;
use runlet::runtime::rootfs::MemoryFs;
use runlet::spec::SpecError;

use super::{print, with_containerd};

/// Exit status of an execution that was cancelled (as a shell reports SIGINT).
const EXIT_CANCELLED: i32 = 130;

/// A job command with its input checked.
enum Plan<'a> {
    Execute(Box<JobSpec>, runlet::cli::registry::PullArgs),
    Executions(&'a ExecutionsCommand),
}

/// Runs a job command; returns the process exit code.
pub async fn run(global: &GlobalArgs, cmd: &JobCommand) -> Result<i32> {
    // Bad input is refused before containerd is reached (or started).
    let plan = match cmd {
        JobCommand::Execute(a) => {
            let spec = job_spec(a)?;
            super::check_secrets(&spec.secrets, &global.state_dir)?;
            Plan::Execute(Box::new(spec), a.pull.clone())
        }
        JobCommand::Executions(c) => Plan::Executions(c),
    };
    let meta = match cmd {
        JobCommand::Execute(a) => a.identity.config(),
        JobCommand::Executions(_) => Default::default(),
    };
    if matches!(plan, Plan::Execute(..)) {
        runlet::fdlimit::raise();
    }
    let state_dir = global.state_dir.as_path();
    with_containerd(global, |client| async move {
        let store = RecordStore::new(state_dir);
        let net = NetConfig::new();
        let recovered = job::recover(&client, &net, &MemoryFs, &store, state_dir)
            .await
            .context("cleaning up after an earlier runlet")?;
        for e in &recovered.executions {
            warn!(execution = %e, "marked failed: it was running when its runlet exited");
        }
        if !recovered.executions.is_empty() {
            // The killed runlet's isolation port rule goes with its tasks.
            let pruned = tokio::task::spawn_blocking(runlet::runtime::isolation::prune).await;
            if let Ok(Err(e)) = pruned {
                warn!("removing a dead runlet's isolation rules: {e}");
            }
        }
        match plan {
            Plan::Execute(spec, pull) => {
                execute(client, net, *spec, &pull, meta, &store, state_dir).await
            }
            Plan::Executions(c) => {
                print(&executions(c, &store)?);
                Ok(0)
            }
        }
    })
    .await
}

/// The job from the flags and, with `-f`, the file.
fn job_spec(a: &ExecuteArgs) -> Result<JobSpec, SpecError> {
    let file = match &a.file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| SpecError {
                field: "-f",
                detail: format!("cannot read {}: {e}", p.display()),
            })?;
            Some(jobspec::parse_yaml(&text)?)
        }
        None => None,
    };
    if let Some(env) = &a.execution_environment {
        let field = "--execution-environment";
        runlet::spec::execution::job_environment(
            field,
            runlet::spec::ExecutionEnvironment::parse(field, env)?,
        )?;
    }
    let flags = JobFlags {
        name: a.name.clone(),
        image: a.image.clone(),
        tasks: a.tasks.clone(),
        parallelism: a.parallelism.clone(),
        max_retries: a.max_retries.clone(),
        task_timeout: a.task_timeout.clone(),
        set_env_vars: a.container.set_env_vars.clone(),
        env: runlet::spec::EnvChanges {
            file: super::env_file(a.container.env_vars_file.as_deref())?,
            ..Default::default()
        },
        command: a.container.command.as_deref().map(runlet::spec::split_list),
        args: a.container.args.as_deref().map(runlet::spec::split_list),
        memory: a.memory.clone(),
        cpu: a.cpu.clone(),
        secrets: a.container.secrets.flags(),
        containers: super::group_flags(&a.sidecars.containers)?,
        add_volume: a.sidecars.add_volume.clone(),
        add_volume_mount: a.sidecars.add_volume_mount.clone(),
    };
    jobspec::resolve(&flags, file.as_ref())
}

/// `runlet job executions list|describe` as text.
fn executions(cmd: &ExecutionsCommand, store: &RecordStore) -> Result<String> {
    match cmd {
        ExecutionsCommand::List { job, format } => {
            let (mut records, errors) = store.list();
            for e in errors {
                warn!("{}", runlet::util::error_chain(&e));
            }
            if let Some(job) = job {
                records.retain(|r| r.job() == job);
            }
            render(records.as_slice(), *format, table::list)
        }
        ExecutionsCommand::Describe { execution, format } => {
            let rec = store.load(execution)?;
            render(&rec, *format, table::describe)
        }
    }
}

/// `value` as a table, JSON or YAML.
fn render<T: Serialize + ?Sized>(
    value: &T,
    format: Format,
    table: fn(&T) -> String,
) -> Result<String> {
    Ok(match format {
        Format::Table => table(value),
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(value)?,
    })
}

async fn execute(
    client: Containerd,
    net: NetConfig,
    spec: JobSpec,
    pull: &runlet::cli::registry::PullArgs,
    meta: runlet::metadata::host::MetaConfig,
    store: &RecordStore,
    state_dir: &Path,
) -> Result<i32> {
    net.check()?;
    // Isolation rules and the metadata server, before any task (dropped last).
    let (net, _sandboxing) = runlet::metadata::host::secure(net, meta, &[])
        .await
        .context("setting up network isolation and the metadata server")?;
    let image = super::image::resolve_or_pull(&client, &spec.image, pull).await?;
    let user = client.image_user(&image).await?;
    let argv = ocispec::argv(
        &image.name,
        &image.config,
        spec.command.as_deref(),
        spec.args.as_deref(),
    )
    .map_err(|e| SpecError {
        field: "--command",
        detail: e.to_string(),
    })?;
    let mut sidecars = Vec::new();
    for c in &spec.sidecars.containers {
        let image = super::image::resolve_or_pull(&client, &c.image, pull).await?;
        let user = client.image_user(&image).await?;
        let argv = ocispec::argv(
            &image.name,
            &image.config,
            c.command.as_deref(),
            c.args.as_deref(),
        )
        .map_err(|e| SpecError {
            field: "--command",
            detail: format!("container {}: {e}", c.name),
        })?;
        sidecars.push(job::TaskContainer { image, user, argv });
    }
    let parallelism = jobspec::effective_parallelism(&spec, &HostResources::detect());
    let name = job::execution_name(&spec.name);

    // Catch Ctrl-C and SIGTERM from here on: the first one cancels the execution, which
    // then stops its tasks (SIGTERM, SIGKILL after 10 s) and removes them.
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the Ctrl-C handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let cancel = async move {
        tokio::select! {
            _ = int.recv() => info!("interrupted (Ctrl-C): cancelling the execution"),
            _ = term.recv() => info!("SIGTERM: cancelling the execution"),
        }
    };

    print(&table::started(&name, &spec, parallelism));
    let sink: LineSink = Arc::new(|l: &Line<'_>| {
        let line = if l.container.is_empty() {
            format!("[task {} attempt {}] {}\n", l.index, l.attempt, l.text)
        } else {
            format!(
                "[task {} attempt {} {}] {}\n",
                l.index, l.attempt, l.container, l.text
            )
        };
        if l.stream == "stderr" {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        } else {
            print(&line);
        }
    });
    let ctx = Arc::new(Ctx {
        runtime: Arc::new(client),
        net,
        rootfs: MemoryFs,
        spec: Arc::new(spec),
        image,
        user,
        argv,
        sidecars,
        state_dir: state_dir.to_path_buf(),
        sink,
        kill_grace: KILL_GRACE,
        task_file: None,
    });
    let rec = job::execute(ctx, store, &name, parallelism, cancel).await?;
    print(&table::finished(&rec));
    Ok(match rec.status.state {
        ExecutionState::Succeeded => 0,
        ExecutionState::Cancelled => EXIT_CANCELLED,
        _ => 1,
    })
}
