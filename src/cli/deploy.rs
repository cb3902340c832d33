//! `runlet deploy`'s flags: gcloud run deploy's names for what a revision runs.

use clap::Args;

use super::client::ApiArgs;
use super::RevisionArgs;

/// Create or update a service on the daemon, and wait until its new revision serves.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service's name (lowercase letters, digits and hyphens; it is served at
    /// http://SERVICE.localhost:PORT).
    pub service: String,
    /// The image to run (loaded with `runlet image load`, or pulled by a daemon started
    /// with --pull); with --container, each container's --image follows its --container
    /// instead.
    #[arg(long)]
    pub image: Option<String>,
    /// Specifies a container by name (gcloud), as `runlet serve --container`: the flags
    /// following it, up to the next --container, apply to that container (--image, --port
    /// on the ingress container only, --command, --args, --set-env-vars and the other
    /// env-vars flags, --memory, --cpu, --startup-probe, --liveness-probe,
    /// --add-volume-mount, --depends-on). Up to 10; flags that are not per-container come
    /// before the first --container.
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// The `--container` groups, taken from the command line before clap sees it
    /// (`Cli::parse_from_args`).
    #[arg(skip)]
    pub containers: Vec<crate::spec::container_flags::ContainerFlags>,
    /// Where the service is also reached, besides http://SERVICE.localhost:PORT on the
    /// daemon's --listen: HOST:PORT, served by the daemon for this service alone (sets the
    /// annotation runlet.io/listen).
    #[arg(long)]
    pub listen: Option<String>,
    #[command(flatten)]
    pub revision: RevisionArgs,
    /// Return once the daemon has accepted the deployment, without waiting for it.
    #[arg(long = "async")]
    pub no_wait: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}
