//! The flags every client of the daemon takes (`runlet deploy`, `services`, `revisions`,
//! `status`): which project and region (the API's parent `projects/P/locations/R`), and how
//! to reach the daemon.

use std::path::PathBuf;

use clap::Args;

/// Where the daemon is and which of its projects and regions to use.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The project of the services (any name: runlet keeps it in resource names only).
    #[arg(long, env = "RUNLET_PROJECT", default_value = "local")]
    pub project: String,
    /// The region of the services (any name, like --project).
    #[arg(long, env = "RUNLET_REGION", default_value = "local")]
    pub region: String,
    /// The daemon's Admin API over TCP (`HOST:PORT` or `http://HOST:PORT`, its
    /// --api-listen) instead of its Unix socket `<state-dir>/runlet.sock`.
    #[arg(long, env = "RUNLET_API")]
    pub api: Option<String>,
    /// A file holding the token to send as `Authorization: Bearer <token>` (the daemon's
    /// --api-token-file); the environment variable RUNLET_API_TOKEN holds the token itself.
    #[arg(long, env = "RUNLET_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
}
