//! `runlet services list|describe|replace|delete`: the daemon's services (gcloud run
//! services).

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
        /// as YAML; `export`: the service.yaml gcloud's `--format export` writes (Knative
        /// `serving.knative.dev/v1`), which `runlet services replace`, `runlet serve -f`,
        /// `gcloud run services replace` and `kubectl apply` read. Without it, a summary.
        #[arg(long, value_enum)]
        format: Option<ServiceFormat>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create or update a service from a service.yaml, like `gcloud run services replace`:
    /// the file says everything (what it leaves out takes Cloud Run's default); a file
    /// whose template is unchanged makes no new revision.
    Replace {
        /// The service.yaml (`-` for standard input).
        file: std::path::PathBuf,
        /// Return once the daemon has accepted the change, without waiting for the rollout.
        #[arg(long = "async")]
        no_wait: bool,
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

/// `runlet services describe`'s forms: [`Format`]'s and gcloud's `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceFormat {
    Json,
    Yaml,
    Export,
}
