//! The metadata server's flags (`runlet serve`, `runlet job execute`).

use clap::Args;

/// Who instances are, as the metadata server tells them (metadata.google.internal).
#[derive(Debug, Clone, Args, Default)]
pub struct IdentityArgs {
    /// Project id instances see on the metadata server [default: runlet-local].
    #[arg(long)]
    pub project: Option<String>,
    /// Region instances see on the metadata server [default: us-central1].
    #[arg(long)]
    pub region: Option<String>,
    /// Service account email instances see [default: NUMBER-compute@developer.gserviceaccount.com,
    /// NUMBER the project number].
    #[arg(long)]
    pub service_account: Option<String>,
    #[command(flatten)]
    pub token: TokenArgs,
}

/// Where access tokens come from.
#[derive(Debug, Clone, Args, Default)]
pub struct TokenArgs {
    /// Command (run with sh -c) printing an access token or Google's token JSON, served as
    /// the service account's token, e.g. "gcloud auth print-access-token"; without it the
    /// token endpoint answers 404.
    #[arg(long)]
    pub token_command: Option<String>,
}

impl IdentityArgs {
    pub fn config(&self) -> crate::metadata::host::MetaConfig {
        crate::metadata::host::MetaConfig {
            identity: crate::metadata::Identity::new(
                self.project.as_deref(),
                self.region.as_deref(),
                self.service_account.as_deref(),
            ),
            token_command: self.token.token_command.clone(),
        }
    }
}
