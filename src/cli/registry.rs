//! Registry flags: how registries are reached (`image pull|push`), and with `--pull` when an
//! image named by `serve`, `job execute` or the daemon is pulled.

use std::path::PathBuf;

use clap::Args;

use crate::image::registry::{PullPolicy, RegistryOptions};

/// How registries are reached.
#[derive(Debug, Args, Clone, Default)]
pub struct RegistryArgs {
    /// A registry reached over plain HTTP when it does not speak HTTPS (loopback registries
    /// always are), HOST:PORT; repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// A PEM file of CA certificates trusted for registries besides the system roots;
    /// repeatable.
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// Registry credentials (containers-auth.json `auths`), looked at before the docker
    /// config ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long, env = "REGISTRY_AUTH_FILE", value_name = "FILE")]
    pub registry_auth_file: Option<PathBuf>,
}

impl RegistryArgs {
    pub fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure_registry.clone(),
            ca_files: self.registry_ca.clone(),
            auth_file: self.registry_auth_file.clone(),
        }
    }
}

/// When an image named by the command is pulled, and how registries are reached.
#[derive(Debug, Args, Clone, Default)]
pub struct PullArgs {
    /// Pull the image from its registry when it is not in the store (missing), every time
    /// (always), or never.
    #[arg(long, value_enum, env = "RUNLET_PULL", default_value = "missing")]
    pub pull: PullPolicy,
    #[command(flatten)]
    pub registry: RegistryArgs,
}
