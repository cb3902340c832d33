//! The `runlet job` commands (binary-side glue: anyhow allowed here).

use std::path::Path;

use anyhow::Result;
use runlet::cli::job::JobCommand;
use runlet::runtime::containerd::Containerd;

/// Runs a job command; returns the process exit code.
pub async fn run(_client: Containerd, _cmd: &JobCommand, _state_dir: &Path) -> Result<i32> {
    anyhow::bail!("not implemented yet")
}
