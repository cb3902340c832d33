//! `runlet status`'s flags.

use clap::Args;

use super::client::ApiArgs;

/// The daemon, containerd, and the services at a glance.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}
