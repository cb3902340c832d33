//! `runlet job ...` command-line structures (gcloud's flag names).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run one execution of a job in the foreground; exit 0 only if every task succeeded.
    Execute(ExecuteArgs),
    /// Inspect executions (records under --state-dir: this command's and the daemon's,
    /// which `runlet jobs executions` also reads).
    #[command(subcommand)]
    Executions(ExecutionsCommand),
}

/// Numbers and durations are taken as text so that a bad value is refused by runlet with
/// the field name and the allowed range (exit 64), like every other bad input.
#[derive(Debug, Args)]
pub struct ExecuteArgs {
    /// Job name (default: metadata.name of the -f file).
    pub name: Option<String>,
    /// Cloud Run job YAML (apiVersion run.googleapis.com/v1, kind Job); flags given override it.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The image to run (loaded with `runlet image load`).
    #[arg(long)]
    pub image: Option<String>,
    /// Number of tasks, 1-10000 [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    pub tasks: Option<String>,
    /// Tasks running at once at most; 0 or unset: as many as this machine's CPUs and memory allow for --cpu and --memory.
    #[arg(long, allow_hyphen_values = true)]
    pub parallelism: Option<String>,
    /// Retries per failed task, 0-10 [default: 3].
    #[arg(long, allow_hyphen_values = true)]
    pub max_retries: Option<String>,
    /// Time limit per attempt (90s, 10m, 1h; a bare number is seconds), 1s-168h [default: 10m].
    #[arg(long, allow_hyphen_values = true)]
    pub task_timeout: Option<String>,
    #[command(flatten)]
    pub container: super::ContainerArgs,
    #[command(flatten)]
    pub sidecars: SidecarArgs,
    /// Memory limit per task (e.g. 512Mi, 1Gi) [default: 512Mi].
    #[arg(long)]
    pub memory: Option<String>,
    /// vCPUs per task (e.g. 1, 0.5, 2) [default: 1].
    #[arg(long)]
    pub cpu: Option<String>,
    /// gen2 only: Cloud Run's jobs always run in the second generation (runc); gen1
    /// (gVisor) is refused, as Cloud Run does.
    #[arg(long)]
    pub execution_environment: Option<String>,
    #[command(flatten)]
    pub pull: super::registry::PullArgs,
    #[command(flatten)]
    pub identity: super::identity::IdentityArgs,
}

#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// List executions, newest first.
    List {
        /// Only this job's executions.
        job: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one execution: counts, times, and each task's result.
    Describe {
        execution: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// A task's containers besides the flags before the first `--container`: the groups and
/// the in-memory volumes they share (`runlet job execute`, `runlet jobs create|update`).
#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Specifies a container by name (gcloud): the flags following it, up to the next
    /// --container, apply to that container (--image, --command, --args, --set-env-vars and
    /// the other env-vars flags, --memory, --cpu, --startup-probe (sidecars), --add-volume-mount,
    /// --depends-on, --set-secrets and the other secrets flags). Up to 10 containers per task.
    /// The main container (whose exit ends the task) is the one the flags before the first
    /// --container describe when they give --image, else the first --container.
    #[arg(long = "container", value_name = "NAME")]
    pub container_name: Option<String>,
    /// The `--container` groups, taken from the command line before clap sees it
    /// (`Cli::parse_from_args`).
    #[arg(skip)]
    pub containers: Vec<crate::spec::container_flags::ContainerFlags>,
    /// An in-memory volume shared by the task's containers: name=N,type=in-memory[,size-limit=64Mi]; repeatable.
    #[arg(long)]
    pub add_volume: Vec<String>,
    /// Mounts a volume into the main container: volume=N,mount-path=/path; repeatable.
    #[arg(long)]
    pub add_volume_mount: Vec<String>,
}
