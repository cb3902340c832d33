//! `runlet jobs ...`: the daemon's stored jobs, their executions and tasks (gcloud run jobs).
//! `runlet job execute` (singular) is the foreground mode: it defines a job on the command
//! line and runs it in this process; `runlet jobs execute JOB` runs a job stored in the
//! daemon.

use clap::{Args, Subcommand};

use super::client::ApiArgs;
use super::services::Format;

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Create a job in the daemon (it does not run until `runlet jobs execute`); with
    /// `--container NAME` groups, a task of several containers (sidecars).
    Create(JobArgs),
    /// Change a job: only the flags given change; a `--container NAME` group edits that
    /// container, or adds it.
    Update(JobArgs),
    /// Show one job: a summary, or the resource as JSON or YAML.
    Describe {
        job: String,
        #[arg(long, value_enum)]
        format: Option<Format>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the jobs, with their latest execution.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a job and its executions (running ones are cancelled first).
    Delete {
        job: String,
        /// Return once the daemon has accepted the deletion.
        #[arg(long = "async")]
        no_wait: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Run a stored job: start an execution (by default, return once it has started).
    Execute(ExecuteArgs),
    /// The daemon's executions (`runlet job executions` reads the same records, foreground
    /// ones included).
    #[command(subcommand)]
    Executions(ExecutionsCommand),
}

/// `runlet jobs create|update JOB`. Numbers and durations are text, checked by runlet with
/// the flag named.
#[derive(Debug, Args)]
#[command(after_long_help = CONTAINERS_HELP)]
pub struct JobArgs {
    pub job: String,
    /// The image to run (loaded with `runlet image load`); required to create, unless the
    /// first --container gives it.
    #[arg(long)]
    pub image: Option<String>,
    /// Number of tasks, 1-10000 [default: 1].
    #[arg(long, allow_hyphen_values = true)]
    pub tasks: Option<String>,
    /// Tasks running at once at most; 0: as many as this machine allows.
    #[arg(long, allow_hyphen_values = true)]
    pub parallelism: Option<String>,
    /// Retries per failed task, 0-10 [default: 3].
    #[arg(long, allow_hyphen_values = true)]
    pub max_retries: Option<String>,
    /// Time limit per attempt (90s, 10m, 1h), 1s-168h [default: 10m].
    #[arg(long, allow_hyphen_values = true)]
    pub task_timeout: Option<String>,
    #[command(flatten)]
    pub container: super::ContainerArgs,
    #[command(flatten)]
    pub sidecars: super::job::SidecarArgs,
    /// Environment variables to add or change, KEY=VALUE[,...] (update; after
    /// --remove-env-vars).
    #[arg(long = "update-env-vars")]
    pub update_env_vars: Vec<String>,
    /// Environment variables to remove, by name, comma-separated (update).
    #[arg(long = "remove-env-vars", value_name = "KEY")]
    pub remove_env_vars: Vec<String>,
    /// Remove all environment variables (secrets have their own flags).
    #[arg(long = "clear-env-vars")]
    pub clear_env_vars: bool,
    /// Memory limit per task (e.g. 512Mi, 1Gi) [default: 512Mi].
    #[arg(long)]
    pub memory: Option<String>,
    /// vCPUs per task (e.g. 1, 0.5, 2) [default: 1].
    #[arg(long)]
    pub cpu: Option<String>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    #[command(flatten)]
    pub pubsub: super::pubsub::PubsubArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// How `--container` groups change a job (gcloud's `run jobs create|update --container`).
const CONTAINERS_HELP: &str = "Containers (sidecars in jobs):\n  \
    The first container of a task is its main one: its exit ends the task and decides its \
    result; the others are sidecars, stopped when it ends. `create` makes the containers in \
    the order given: the flags before the first --container make the main container (named \
    main) when they give --image, else the first --container is the main one. `update` \
    changes only what a group gives: a group naming a container of the job edits it, a new \
    name adds a sidecar (it needs --image); the flags before the first --container edit the \
    main container. A task serves nothing, so no container takes --port, and none a liveness \
    probe; a sidecar's --startup-probe names its port, and the containers that --depends-on \
    it start once it passed.";

/// A job's schedule: the daemon starts an execution at each due time (Cloud Scheduler's
/// unix-cron; kept as `runlet.io/schedule*` annotations).
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Run on this unix-cron schedule, 5 fields: "*/5 * * * *", "0 9 * * MON-FRI".
    #[arg(long, conflicts_with = "clear_schedule")]
    pub schedule: Option<String>,
    /// The IANA time zone the schedule is read in (Europe/Paris) [default: Etc/UTC].
    #[arg(long, conflicts_with = "clear_schedule")]
    pub time_zone: Option<String>,
    /// A run due while an execution still runs: skip it, or start another [default: skip].
    #[arg(long, conflicts_with = "clear_schedule")]
    pub schedule_overlap: Option<String>,
    /// Remove the schedule (update).
    #[arg(long)]
    pub clear_schedule: bool,
}

/// `runlet jobs execute JOB`: the overrides are gcloud's.
#[derive(Debug, Args)]
pub struct ExecuteArgs {
    pub job: String,
    /// Wait until the execution has ended, showing progress; exit 1 unless it succeeded.
    #[arg(long, conflicts_with = "no_wait")]
    pub wait: bool,
    /// Return as soon as the daemon has accepted the execution.
    #[arg(long = "async")]
    pub no_wait: bool,
    /// This execution's container arguments (replacing the job's), comma-separated.
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Environment variables for this execution, KEY=VALUE[,...] (merged).
    #[arg(long = "update-env-vars")]
    pub update_env_vars: Vec<String>,
    /// This execution's number of tasks.
    #[arg(long, allow_hyphen_values = true)]
    pub tasks: Option<String>,
    /// This execution's time limit per attempt.
    #[arg(long, allow_hyphen_values = true)]
    pub task_timeout: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Subcommand)]
pub enum ExecutionsCommand {
    /// List executions, newest first.
    List {
        /// Only this job's.
        #[arg(long)]
        job: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one execution: counts, times, conditions; or the resource as JSON or YAML.
    Describe {
        execution: String,
        #[arg(long, value_enum)]
        format: Option<Format>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Cancel a running execution (its tasks get SIGTERM, SIGKILL after 10 s).
    Cancel {
        execution: String,
        #[arg(long = "async")]
        no_wait: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete an execution (cancelled first if it runs).
    Delete {
        execution: String,
        #[arg(long = "async")]
        no_wait: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// An execution's tasks.
    #[command(subcommand)]
    Tasks(TasksCommand),
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List an execution's tasks, by index.
    List {
        #[arg(long)]
        execution: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}
