//! The commands, one thin file each (youki's `commands/`): each checks its input once,
//! before containerd is reached, then calls the library. anyhow is allowed here (the edge).
//!
//! - [`serve`]: `runlet serve`, a Cloud Run service in the foreground.
//! - [`job`]: `runlet job execute` and `runlet job executions list|describe`.
//! - [`image`]: `runlet image load|ls|rm`.
//! - [`daemon`]: `runlet daemon`, the long-lived runtime serving the Admin API.
//! - The daemon's clients: [`deploy`], [`services`] (`list|describe|delete`),
//!   [`revisions`] (`list`) and [`status`]; [`api`] reaches the daemon from their flags, and
//!   [`print`] holds what they print (gcloud's shapes).
//!
//! What the commands share: reaching containerd ([`with_containerd`]) and writing to stdout
//! ([`print()`]).

pub mod api;
pub mod daemon;
pub mod deploy;
pub mod image;
pub mod job;
pub mod jobs;
pub mod print;
pub mod revisions;
pub mod serve;
pub mod services;
pub mod status;

use std::future::Future;
use std::io::Write;

use anyhow::Result;

use runlet::cli::GlobalArgs;
use runlet::runtime::containerd::Containerd;
use runlet::runtime::embedded::{self, Connection};

/// Connects to containerd (starting a private one when allowed and needed), runs `f`, and
/// stops the private containerd afterwards.
pub async fn with_containerd<F, Fut, T>(global: &GlobalArgs, f: F) -> Result<T>
where
    F: FnOnce(Containerd) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let Connection { client, embedded } = embedded::connect_or_start(
        &global.containerd_address,
        &global.state_dir,
        !global.no_embedded_containerd,
    )
    .await?;
    let result = f(client.clone()).await;
    if let Some(e) = embedded {
        e.stop(&client).await;
    }
    result
}

/// Writes to stdout, ignoring a closed pipe (`| head`).
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Resolves at Ctrl-C or SIGTERM (logging which).
pub async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted (Ctrl-C): shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
