//! Command-line structures (clap) only; turning them into typed specs happens in the
//! binary's `cmd` modules.
//!
//! Two kinds of commands: `runlet serve` and `runlet job execute` run in the foreground (the
//! service or job lives as long as the command); `runlet deploy`, `runlet services`, `runlet
//! revisions` and `runlet status` are clients of `runlet daemon` ([`client::ApiArgs`]).

pub mod client;
pub mod daemon;
pub mod deploy;
pub mod identity;
pub mod job;
pub mod jobs;
pub mod pubsub;
pub mod registry;
pub mod revisions;
pub mod secrets;
pub mod services;
pub mod setup;
pub mod status;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "runlet",
    version,
    about = "Run Cloud Run services and jobs on one Linux machine, on containerd",
    long_about = "Run Cloud Run services and jobs on one Linux machine, on containerd.\n\n\
        In the foreground: `runlet serve` (a service until Ctrl-C) and `runlet job execute` (a job \
        to its end). With the daemon: `runlet daemon` runs services and serves the Cloud Run Admin \
        API v2; `runlet deploy`, `runlet services`, `runlet revisions` and `runlet status` talk to it."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags every command takes: where containerd and runlet's state are, and logging.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// containerd's socket. When nothing answers there, runlet starts a private containerd under --state-dir.
    #[arg(
        long,
        global = true,
        env = "RUNLET_CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_address: String,
    /// Where runlet keeps its state (private containerd, instance files, CNI allocations).
    #[arg(
        long,
        global = true,
        env = "RUNLET_STATE_DIR",
        default_value = "/var/lib/runlet"
    )]
    pub state_dir: PathBuf,
    /// Never start a private containerd; fail if nothing answers at --containerd-address.
    #[arg(long, global = true, env = "RUNLET_NO_EMBEDDED_CONTAINERD")]
    pub no_embedded_containerd: bool,
    /// Log filter (e.g. info, debug, runlet=debug).
    #[arg(long, global = true, env = "RUNLET_LOG", default_value = "info")]
    pub log_level: String,
    /// runlet's log: text, or json (Cloud Logging structured entries, one a line).
    #[arg(
        long,
        global = true,
        env = "RUNLET_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::log_format::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve an image as a Cloud Run service, in the foreground (until Ctrl-C).
    Serve(Box<ServeArgs>),
    /// Manage runlet's image store.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run Cloud Run jobs, in the foreground (`runlet jobs` is the daemon's).
    #[command(subcommand)]
    Job(job::JobCommand),
    /// The daemon's jobs: create, update, describe, list, delete, execute; their executions
    /// and tasks (`runlet job execute` runs one in the foreground instead).
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Run the long-lived runtime serving the Cloud Run Admin API v2 (services and jobs); `runlet
    /// deploy`, `runlet services`, `runlet revisions` and `runlet status` talk to it.
    Daemon(daemon::DaemonArgs),
    /// Deploy a service to the daemon (create or update it), like `gcloud run deploy`.
    Deploy(Box<deploy::DeployArgs>),
    /// List, describe or delete the daemon's services.
    #[command(subcommand)]
    Services(services::ServicesCommand),
    /// List the daemon's revisions.
    #[command(subcommand)]
    Revisions(revisions::RevisionsCommand),
    /// Whether the daemon and containerd answer, and the services at a glance.
    Status(status::StatusArgs),
    /// The local secret store (Secret Manager's names): create, list, delete secrets and
    /// add versions; containers get them with --set-secrets.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Point other tools at the daemon: `runlet setup gcloud`.
    #[command(subcommand)]
    Setup(setup::SetupCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The image to serve (loaded with `runlet image load`); with --container, each
    /// container's --image follows its --container instead.
    #[arg(long)]
    pub image: Option<String>,
    /// A service.yaml (the Knative Service `gcloud run services describe --format export`
    /// writes): the service, its containers and settings come from the file, and the flags
    /// that describe a revision (--image, --port, --set-env-vars, --memory, ...) are
    /// refused beside it, as `gcloud run services replace` takes none; --listen, the
    /// timeouts of this machine, metrics, pull and identity flags still apply.
    #[arg(long = "file", short = 'f', value_name = "SERVICE_YAML")]
    pub file: Option<PathBuf>,
    /// Specifies a container by name (gcloud): the flags following it, up to the next
    /// --container, apply to that container (--image, --port on the ingress container only,
    /// --command, --args, --set-env-vars and the other env-vars flags, --memory, --cpu,
    /// --startup-probe, --liveness-probe, --add-volume-mount, --depends-on). Up to 10;
    /// flags that are not per-container come before the first --container.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// The `--container` groups, taken from the command line before clap sees it
    /// ([`Cli::parse_from_args`]).
    #[arg(skip)]
    pub containers: Vec<crate::spec::container_flags::ContainerFlags>,
    /// Service name (default: derived from the image name).
    #[arg(long)]
    pub service: Option<String>,
    /// Where runlet accepts requests for the service.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub revision: RevisionArgs,
    #[command(flatten)]
    pub pull: registry::PullArgs,
    /// Idle instances above --min-instances are stopped after this long (at most 15m).
    #[arg(long, default_value = "15m")]
    pub idle_timeout: String,
    /// How long an instance may take to listen (at most 240s).
    #[arg(long, default_value = "240s")]
    pub startup_timeout: String,
    /// Largest request body passed to a container served over HTTP/1 (Cloud Run's limit:
    /// 32 MiB; none with --use-http2), in bytes (or with Ki/Mi/Gi) or "unlimited"; a larger
    /// body gets 413.
    #[arg(long, value_name = "BYTES|unlimited", default_value = "32Mi")]
    pub max_request_body_size: String,
    /// Prometheus metrics address (`/metrics`), HOST:PORT; "off" disables it. Default
    /// 127.0.0.1:9090, skipped with a warning when another process has it.
    #[arg(long, value_name = "HOST:PORT|off")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub identity: identity::IdentityArgs,
}

/// What a revision runs and how it scales, gcloud run deploy's names: the same flags for
/// `runlet serve` and `runlet deploy` (`spec::flags::ServiceFlags` once parsed). Unset
/// means Cloud Run's default, the one each help text names.
#[derive(Debug, Args)]
pub struct RevisionArgs {
    /// The port the container listens on; passed as PORT [default: 8080].
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub container: ContainerArgs,
    /// Environment variables to add or change, KEY=VALUE[,...] (after --remove-env-vars):
    /// `runlet deploy` changes the current revision's; repeatable.
    #[arg(long = "update-env-vars", value_name = "KEY=VALUE")]
    pub update_env_vars: Vec<String>,
    /// Environment variables to remove, by name, comma-separated; repeatable.
    #[arg(long = "remove-env-vars", value_name = "KEY")]
    pub remove_env_vars: Vec<String>,
    /// Remove all environment variables (secrets have their own flags).
    #[arg(long = "clear-env-vars")]
    pub clear_env_vars: bool,
    /// Memory limit per instance (e.g. 512Mi, 1Gi) [default: 512Mi].
    #[arg(long)]
    pub memory: Option<String>,
    /// vCPUs per instance (e.g. 1, 0.5, 2) [default: 1].
    #[arg(long)]
    pub cpu: Option<String>,
    /// Requests in flight per instance at most (1-1000) [default: 80; 1 below one CPU].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Request timeout (1s-3600s), counted from receipt [default: 300].
    #[arg(long)]
    pub timeout: Option<String>,
    /// Instances kept running even with no traffic [default: 0].
    #[arg(long)]
    pub min_instances: Option<usize>,
    /// Instances at most [default: 100].
    #[arg(long)]
    pub max_instances: Option<usize>,
    /// Startup probe, gcloud syntax: httpGet.path=/ready,periodSeconds=1,failureThreshold=5
    /// (or tcpSocket.port=N, grpc.port=N[,grpc.service=S]; initialDelaySeconds, timeoutSeconds).
    #[arg(long)]
    pub startup_probe: Option<String>,
    /// Liveness probe, same syntax; an instance failing it is replaced.
    #[arg(long)]
    pub liveness_probe: Option<String>,
    /// An in-memory volume: name=N,type=in-memory[,size-limit=64Mi]; repeatable.
    #[arg(long)]
    pub add_volume: Vec<String>,
    /// Mounts a volume: volume=N,mount-path=/path; repeatable.
    #[arg(long)]
    pub add_volume_mount: Vec<String>,
    /// Send requests to the container as HTTP/2 cleartext (h2c).
    #[arg(long)]
    pub use_http2: bool,
    /// Throttle an instance's CPU (to 1% of a CPU) while no request is in flight, as Cloud
    /// Run does with request-based billing. Off by default on one machine: see docs/usage.md.
    #[arg(long, overrides_with = "no_cpu_throttling")]
    pub cpu_throttling: bool,
    /// Give instances their full CPU all the time (the default).
    #[arg(long, overrides_with = "cpu_throttling")]
    pub no_cpu_throttling: bool,
    /// gen2: containers run with runc, full Linux (the default). gen1: under gVisor's runsc
    /// (must be installed), which emulates Linux and does not implement every system call.
    #[arg(long, value_name = "gen1|gen2")]
    pub execution_environment: Option<String>,
}

/// What to run in the container and with which environment: the same flags for a service
/// and a job.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// Environment variables, KEY=VALUE[,KEY=VALUE...] (`^DELIM^` first for another
    /// delimiter, as gcloud); repeatable.
    #[arg(long = "set-env-vars")]
    pub set_env_vars: Vec<String>,
    /// A YAML file of environment variables (`NAME: "value"`, values quoted strings, as
    /// gcloud); all others removed, like --set-env-vars.
    #[arg(long = "env-vars-file", value_name = "FILE_PATH")]
    pub env_vars_file: Option<PathBuf>,
    /// Replaces the image's entrypoint; comma-separated (`^DELIM^a,b DELIM c` for another
    /// delimiter, as gcloud).
    #[arg(long, allow_hyphen_values = true)]
    pub command: Option<String>,
    /// Replaces the image's CMD; comma-separated (`^DELIM^a,b DELIM c` for another
    /// delimiter, as gcloud).
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    #[command(flatten)]
    pub secrets: secrets::SecretArgs,
}

/// The flags of one `--container NAME` group (gcloud's container flags).
#[derive(Debug, Parser)]
#[command(name = "--container NAME", no_binary_name = true)]
pub struct ContainerGroupArgs {
    /// The container's image.
    #[arg(long)]
    pub image: Option<String>,
    /// The ingress container's port (only one container has one).
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long = "set-env-vars")]
    pub set_env_vars: Vec<String>,
    #[arg(long = "env-vars-file", value_name = "FILE_PATH")]
    pub env_vars_file: Option<PathBuf>,
    #[arg(long = "update-env-vars")]
    pub update_env_vars: Vec<String>,
    #[arg(long = "remove-env-vars")]
    pub remove_env_vars: Vec<String>,
    #[arg(long = "clear-env-vars")]
    pub clear_env_vars: bool,
    #[arg(long, allow_hyphen_values = true)]
    pub command: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub cpu: Option<String>,
    #[arg(long)]
    pub startup_probe: Option<String>,
    #[arg(long)]
    pub liveness_probe: Option<String>,
    #[arg(long)]
    pub add_volume_mount: Vec<String>,
    #[command(flatten)]
    pub secrets: secrets::SecretArgs,
    /// Containers that must have started (passed their startup probe) before this one.
    #[arg(long)]
    pub depends_on: Vec<String>,
}

impl ContainerGroupArgs {
    fn flags(self, name: String) -> crate::spec::container_flags::ContainerFlags {
        crate::spec::container_flags::ContainerFlags {
            name,
            image: self.image,
            port: self.port,
            set_env_vars: self.set_env_vars,
            env_vars_file: self.env_vars_file,
            env: crate::spec::EnvChanges {
                update: self.update_env_vars,
                remove: self.remove_env_vars,
                clear: self.clear_env_vars,
                ..Default::default()
            },
            command: self.command,
            args: self.args,
            memory: self.memory,
            cpu: self.cpu,
            startup_probe: self.startup_probe,
            liveness_probe: self.liveness_probe,
            add_volume_mount: self.add_volume_mount,
            secrets: self.secrets.flags(),
            depends_on: self.depends_on,
        }
    }
}

impl Cli {
    /// Parses a command line, `--container NAME` groups included: clap parses what comes
    /// before the first `--container`, each group is parsed on its own
    /// ([`ContainerGroupArgs`]) and given to the command that takes them: `runlet serve`,
    /// `runlet deploy`, `runlet job execute`, `runlet jobs create|update`.
    pub fn parse_from_args(args: Vec<String>) -> Result<Cli, clap::Error> {
        use clap::CommandFactory;
        let (head, groups) = crate::spec::container_flags::split_groups(&args);
        let mut cli = Cli::try_parse_from(head)?;
        if groups.is_empty() {
            return Ok(cli);
        }
        let containers = match &mut cli.command {
            Command::Serve(serve) => &mut serve.containers,
            Command::Deploy(deploy) => &mut deploy.containers,
            Command::Job(job::JobCommand::Execute(exec)) => &mut exec.sidecars.containers,
            Command::Jobs(jobs::JobsCommand::Create(a) | jobs::JobsCommand::Update(a)) => {
                &mut a.sidecars.containers
            }
            _ => return Err(Cli::command().error(
                clap::error::ErrorKind::UnknownArgument,
                "--container is for `runlet serve`, `runlet deploy`, `runlet job execute` and `runlet jobs create|update` only",
            )),
        };
        for (name, rest) in groups {
            let group = ContainerGroupArgs::try_parse_from(rest)?;
            containers.push(group.flags(name));
        }
        Ok(cli)
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an image archive (OCI layout tar or `docker save` tar).
    Load {
        file: PathBuf,
        /// Name the image (needed when the archive names none).
        #[arg(long)]
        tag: Option<String>,
        /// Print no progress.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Pull an image from its registry into the store (Docker Registry v2 / OCI).
    Pull {
        /// The image, e.g. localhost:5000/app:tag or registry/app@sha256:...
        image: String,
        /// Print only the summary.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        registry: registry::RegistryArgs,
    },
    /// Push an image from the store to a registry (its linux/amd64 manifest and blobs).
    Push {
        /// The image in the store, e.g. localhost:5000/app:tag.
        image: String,
        /// Push under another name (another registry, repository or tag).
        #[arg(long = "as", value_name = "TARGET")]
        target: Option<String>,
        /// Print only the summary.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        registry: registry::RegistryArgs,
    },
    /// List images.
    Ls,
    /// Remove images.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::parse_from_args(line.split(' ').map(str::to_string).collect())
    }

    #[test]
    fn jobs_create_and_update_take_container_groups() {
        for verb in ["create", "update"] {
            let cli = parse(&format!(
                "runlet jobs {verb} j --tasks 2 --container main --image busybox --depends-on side \
                 --container side --image probe --startup-probe tcpSocket.port=9000 --memory 1Gi"
            ))
            .unwrap();
            let Command::Jobs(jobs::JobsCommand::Create(a) | jobs::JobsCommand::Update(a)) =
                cli.command
            else {
                panic!("{verb}: not jobs {verb}")
            };
            assert_eq!((a.job.as_str(), a.tasks.as_deref()), ("j", Some("2")));
            assert_eq!(
                a.image, None,
                "{verb}: --image after --container is the group's"
            );
            let names: Vec<&str> = a
                .sidecars
                .containers
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(names, ["main", "side"], "{verb}");
            assert_eq!(a.sidecars.containers[0].depends_on, ["side"]);
            assert_eq!(a.sidecars.containers[1].image.as_deref(), Some("probe"));
            assert_eq!(a.sidecars.containers[1].memory.as_deref(), Some("1Gi"));
        }
        // Job-wide flags inside a group are refused by the group's parser, as for serve.
        let e =
            parse("runlet jobs create j --container main --image busybox --tasks 2").unwrap_err();
        assert!(e.to_string().contains("--tasks"), "{e}");
        // Other commands still refuse --container, naming those that take it.
        let e = parse("runlet jobs delete j --container main").unwrap_err();
        assert!(e.to_string().contains("`runlet jobs create|update`"), "{e}");
    }
}
