//! What a runlet process sets up before its first instance: its metadata server, the
//! isolation rules with the ports it serves on the gateway, and the network that sends
//! instances to the server. Kept alive by [`Guard`] for the process's life.

use std::sync::Arc;

use thiserror::Error;

use super::server::{self, MetaServer, ServerError};
use super::token::{KeyFileError, TokenConfig, TokenSource};
use super::{Identity, Registry};
use crate::runtime::isolation::{self, IsolationError, Registration};
use crate::runtime::network::{MetaHook, NetConfig, GATEWAY};

#[derive(Debug, Error)]
pub enum SetupError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
}

/// The metadata flags of `runlet serve` / `runlet job execute` / `runlet daemon`.
#[derive(Debug, Clone, Default)]
pub struct MetaConfig {
    pub identity: Identity,
    /// `--token-command` / `--token-key-file`.
    pub tokens: TokenConfig,
}

impl Default for Identity {
    fn default() -> Self {
        Identity::new(None, None, None)
    }
}

/// Holds the metadata server and this process's isolation registration; dropping it stops
/// the server and leaves ([`Registration::leave`]).
pub struct Guard {
    pub server: MetaServer,
    _registration: Registration,
}

/// Starts the metadata server, installs the isolation rules (the server's port and
/// `extra_ports` allowed on the gateway) and returns `net` wired to the server.
pub async fn secure(
    net: NetConfig,
    cfg: MetaConfig,
    extra_ports: &[u16],
) -> Result<(NetConfig, Guard), SetupError> {
    let registry = Arc::new(Registry::default());
    let tokens = TokenSource::from_config(&cfg.tokens)?;
    let server = server::start(GATEWAY, registry.clone(), tokens)?;
    let mut ports = vec![server.port];
    ports.extend_from_slice(extra_ports);
    let bridge = net.bridge.clone();
    let registration =
        tokio::task::spawn_blocking(move || isolation::install(&bridge, GATEWAY, &ports))
            .await
            .map_err(|e| IsolationError {
                detail: e.to_string(),
            })??;
    let net = net.with_metadata(MetaHook {
        port: server.port,
        registry,
        identity: Arc::new(cfg.identity),
    });
    Ok((
        net,
        Guard {
            server,
            _registration: registration,
        },
    ))
}
