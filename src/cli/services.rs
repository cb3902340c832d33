//! `runlet services list|describe|delete`: reading and deleting the daemon's services
//! (gcloud run services).

use clap::{Subcommand, ValueEnum};

use super::client::ApiArgs;

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// List the services, with their URL and whether they are ready.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show one service: a summary, or the resource as JSON or YAML.
    Describe {
        service: String,
        /// `json`: the resource in proto3 JSON (as the REST API returns it); `yaml`: the same
        /// as YAML. Without it, a summary.
        #[arg(long, value_enum)]
        format: Option<Format>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a service: its revisions stop (requests in flight finish) and are removed.
    Delete {
        service: String,
        /// Return once the daemon has accepted the deletion, without waiting for it.
        #[arg(long = "async")]
        no_wait: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// A resource's machine-readable forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}
