//! `runlet revisions list`: the daemon's revisions (gcloud run revisions).

use clap::Subcommand;

use super::client::ApiArgs;

#[derive(Debug, Subcommand)]
pub enum RevisionsCommand {
    /// List revisions, newest first.
    List {
        /// Only this service's revisions.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}
