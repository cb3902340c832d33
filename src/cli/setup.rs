//! `runlet setup`'s flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Point gcloud at runlet's daemon: a gcloud configuration (no credentials, the
    /// project and region, `api_endpoint_overrides/run http://runlet:PORT/`) made active,
    /// and the host names `runlet` and `R-runlet` in /etc/hosts; `gcloud run deploy`,
    /// `services replace`, ... then work against the daemon unchanged.
    Gcloud(GcloudArgs),
}

#[derive(Debug, Args)]
pub struct GcloudArgs {
    /// The gcloud configuration to create or update (and activate).
    #[arg(long, default_value = "runlet")]
    pub configuration: String,
    /// The daemon's API port (its --api-listen).
    #[arg(long, default_value_t = 8090)]
    pub api_port: u16,
    /// The project gcloud names (core/project; runlet's namespace).
    #[arg(long, env = "RUNLET_PROJECT", default_value = "local")]
    pub project: String,
    /// A region: the first is the configuration's run/region; each gets a host name
    /// R-runlet. Repeat for more.
    #[arg(long = "region", default_value = "us-central1")]
    pub regions: Vec<String>,
    /// The hosts file to edit.
    #[arg(long, default_value = "/etc/hosts")]
    pub hosts_file: PathBuf,
    /// Remove the host names and the configuration instead (activating `default` if it
    /// was active).
    #[arg(long)]
    pub undo: bool,
}
