//! `runlet secrets ...` (gcloud secrets' verbs and flags) and the secret flags of a
//! container (`--set-secrets` and its siblings), shared by `serve`, `deploy`, `job execute`
//! and `jobs create|update`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Secrets as env vars or files (gcloud's flags): `ENV=SECRET:VERSION` or
/// `/dir/file=SECRET:VERSION`; VERSION a number or `latest`; SECRET a name in the project
/// or `projects/P/secrets/S`.
#[derive(Debug, Args, Default, Clone)]
pub struct SecretArgs {
    /// Secrets to set, all others removed: ENV=SECRET:VERSION or /dir/file=SECRET:VERSION
    /// (a read-only in-memory file); comma-separated, repeatable.
    #[arg(long = "set-secrets", value_name = "KEY=SECRET:VERSION")]
    pub set_secrets: Vec<String>,
    /// Secrets to add or change (applied after --remove-secrets).
    #[arg(long = "update-secrets", value_name = "KEY=SECRET:VERSION")]
    pub update_secrets: Vec<String>,
    /// Secrets to remove, by variable name or file path.
    #[arg(long = "remove-secrets", value_name = "KEY")]
    pub remove_secrets: Vec<String>,
    /// Remove all secrets.
    #[arg(long = "clear-secrets")]
    pub clear_secrets: bool,
}

impl SecretArgs {
    pub fn flags(&self) -> crate::spec::secrets::SecretFlags {
        crate::spec::secrets::SecretFlags {
            set: self.set_secrets.clone(),
            update: self.update_secrets.clone(),
            remove: self.remove_secrets.clone(),
            clear: self.clear_secrets,
        }
    }
}

/// The project of `runlet secrets` (as `gcloud --project`).
#[derive(Debug, Args)]
pub struct ProjectArg {
    /// The project the secret is in (`projects/P/secrets/...`).
    #[arg(long, env = "RUNLET_PROJECT", default_value = "local")]
    pub project: String,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Create a secret, with its first version from --data-file.
    Create {
        secret: String,
        /// The first version's value: a file, or - for stdin.
        #[arg(long, value_name = "PATH")]
        data_file: Option<PathBuf>,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// List the project's secrets.
    List {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Delete a secret and all its versions.
    Delete {
        secret: String,
        /// Accepted for gcloud's sake: runlet does not prompt.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// A secret's versions.
    #[command(subcommand)]
    Versions(VersionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum VersionsCommand {
    /// Add a version to a secret.
    Add {
        secret: String,
        /// The value: a file, or - for stdin.
        #[arg(long, value_name = "PATH")]
        data_file: PathBuf,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// List a secret's versions.
    List {
        secret: String,
        #[command(flatten)]
        project: ProjectArg,
    },
}
