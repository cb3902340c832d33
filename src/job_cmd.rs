//! The `runlet job` commands (binary-side glue: anyhow allowed here).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tracing::{info, warn};

use runlet::cli::job::{ExecuteArgs, ExecutionsCommand, Format, JobCommand};
use runlet::control::job::record::{self, ExecutionState, RecordStore};
use runlet::control::job::spec::{self as jobspec, HostResources, JobFlags, JobSpec};
use runlet::control::job::{self, Ctx, Line, LineSink};
use runlet::control::KILL_GRACE;
use runlet::runtime::containerd::Containerd;
use runlet::runtime::network::NetConfig;
use runlet::runtime::rootfs::MemoryFs;
use runlet::runtime::{ocispec, Runtime};
use runlet::spec::SpecError;

/// Exit status of an execution that was cancelled (as a shell reports SIGINT).
const EXIT_CANCELLED: i32 = 130;

/// Checks a job command's input without touching containerd (bad input exits 64 before
/// anything is started).
pub fn check(cmd: &JobCommand) -> Result<()> {
    if let JobCommand::Execute(a) = cmd {
        job_spec(a)?;
    }
    Ok(())
}

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
    let flags = JobFlags {
        name: a.name.clone(),
        image: a.image.clone(),
        tasks: a.tasks.clone(),
        parallelism: a.parallelism.clone(),
        max_retries: a.max_retries.clone(),
        task_timeout: a.task_timeout.clone(),
        set_env_vars: a.set_env_vars.clone(),
        command: a.command.as_deref().map(runlet::spec::split_list),
        args: a.args.as_deref().map(runlet::spec::split_list),
        memory: a.memory.clone(),
        cpu: a.cpu.clone(),
    };
    jobspec::resolve(&flags, file.as_ref())
}

/// Runs a job command; returns the process exit code.
pub async fn run(client: Containerd, cmd: &JobCommand, state_dir: &Path) -> Result<i32> {
    // Validate before touching anything.
    let plan = match cmd {
        JobCommand::Execute(a) => Plan::Execute(Box::new(job_spec(a)?)),
        JobCommand::Executions(c) => Plan::Executions(c),
    };
    let store = RecordStore::new(state_dir);
    let net = NetConfig::new();
    let recovered = job::recover(&client, &net, &MemoryFs, &store, state_dir)
        .await
        .context("cleaning up after an earlier runlet")?;
    for e in &recovered.executions {
        warn!(execution = %e, "marked failed: it was running when its runlet exited");
    }
    match plan {
        Plan::Execute(spec) => execute(client, net, *spec, &store, state_dir).await,
        Plan::Executions(ExecutionsCommand::List { job, format }) => {
            let (mut records, errors) = store.list();
            for e in errors {
                warn!("{e}");
            }
            if let Some(job) = job {
                records.retain(|r| r.job() == job);
            }
            let text = match format {
                Format::Table => record::list_table(&records),
                Format::Json => serde_json::to_string_pretty(&records)? + "\n",
                Format::Yaml => serde_yaml::to_string(&records)?,
            };
            print(&text);
            Ok(0)
        }
        Plan::Executions(ExecutionsCommand::Describe { execution, format }) => {
            let rec = store.load(execution)?;
            let text = match format {
                Format::Table => record::describe(&rec),
                Format::Json => serde_json::to_string_pretty(&rec)? + "\n",
                Format::Yaml => serde_yaml::to_string(&rec)?,
            };
            print(&text);
            Ok(0)
        }
    }
}

enum Plan<'a> {
    Execute(Box<JobSpec>),
    Executions(&'a ExecutionsCommand),
}

/// Writes to stdout, ignoring a closed pipe (`| head`).
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

async fn execute(
    client: Containerd,
    net: NetConfig,
    spec: JobSpec,
    store: &RecordStore,
    state_dir: &Path,
) -> Result<i32> {
    net.check()?;
    let image = client.resolve_image(&spec.image).await?;
    let user = crate::image_user(&client, &image).await?;
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

    let how = match spec.parallelism {
        Some(_) => String::new(),
        None => format!(
            " (unset: this machine's cap for --cpu {} and --memory {})",
            spec.cpu, spec.memory
        ),
    };
    print(&format!(
        "Execution [{name}] of job [{}] started: {} task(s), parallelism {parallelism}{how}, max retries {}, task timeout {}s\n",
        spec.name,
        spec.task_count,
        spec.max_retries,
        spec.task_timeout.as_secs()
    ));

    let sink: LineSink = Arc::new(|l: &Line<'_>| {
        let line = format!("[task {} attempt {}] {}\n", l.index, l.attempt, l.text);
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
        state_dir: state_dir.to_path_buf(),
        sink,
        kill_grace: KILL_GRACE,
    });
    let rec = job::execute(ctx, store, &name, parallelism, cancel).await?;
    let verdict = match rec.status.state {
        ExecutionState::Succeeded => "succeeded",
        ExecutionState::Failed => "failed",
        ExecutionState::Cancelled => "was cancelled",
        ExecutionState::Running => "is still running",
    };
    print(&format!(
        "\nExecution [{name}] {verdict}: {}\n{}",
        record::counts(&rec),
        record::describe(&rec)
    ));
    Ok(match rec.status.state {
        ExecutionState::Succeeded => 0,
        ExecutionState::Cancelled => EXIT_CANCELLED,
        _ => 1,
    })
}
