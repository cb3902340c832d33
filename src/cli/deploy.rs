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
    /// The image to run (loaded with `runlet image load`).
    #[arg(long)]
    pub image: String,
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
