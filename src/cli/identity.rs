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
    #[arg(long, conflicts_with = "token_key_file")]
    pub token_command: Option<String>,
    /// Service-account key file (JSON, as `gcloud iam service-accounts keys create` writes
    /// it): access tokens are JWTs signed with its key (Google's auth crate, no request to
    /// Google), and its account is the default --service-account.
    #[arg(long, value_name = "PATH")]
    pub token_key_file: Option<std::path::PathBuf>,
}

impl TokenArgs {
    pub fn config(&self) -> crate::metadata::token::TokenConfig {
        crate::metadata::token::TokenConfig::from_flags(
            self.token_command.as_deref(),
            self.token_key_file.as_deref(),
        )
    }
}

/// The `client_email` of a service-account key file, if it can be read.
fn key_file_account(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["client_email"].as_str().map(str::to_string)
}

impl IdentityArgs {
    pub fn config(&self) -> crate::metadata::host::MetaConfig {
        // The key file's account is the one whose tokens instances get.
        let key_account = self
            .token
            .token_key_file
            .as_deref()
            .and_then(key_file_account);
        crate::metadata::host::MetaConfig {
            identity: crate::metadata::Identity::new(
                self.project.as_deref(),
                self.region.as_deref(),
                self.service_account.as_deref().or(key_account.as_deref()),
            ),
            tokens: self.token.config(),
        }
    }
}
