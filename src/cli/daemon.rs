//! `runlet daemon`'s flags.

use std::path::PathBuf;

use clap::Args;

/// Run the long-lived runtime that serves the Cloud Run Admin API v2.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// When a service's or job's image is pulled, and how registries are reached.
    #[command(flatten)]
    pub pull: super::registry::PullArgs,
    /// Where services are served, routed by Host (`SERVICE.localhost[:PORT]`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the Admin API (gRPC and HTTP/JSON on one port) is served; "off" for the Unix
    /// socket only (<state-dir>/runlet.sock, always served). A non-loopback address needs
    /// --api-token-file.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub api_listen: String,
    /// A file holding the token every API call must carry as `Authorization: Bearer
    /// <token>`; required for a non-loopback --api-listen.
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// Largest request body passed to a container served over HTTP/1 (Cloud Run's limit:
    /// 32 MiB; none with --use-http2), in bytes (or with Ki/Mi/Gi) or "unlimited"; a larger
    /// body gets 413.
    #[arg(long, value_name = "BYTES|unlimited", default_value = "32Mi")]
    pub max_request_body_size: String,
    /// Do not keep `SERVICE.localhost` lines in /etc/hosts.
    #[arg(long)]
    pub no_manage_hosts: bool,
    /// Prometheus metrics address (`/metrics`), HOST:PORT; "off" disables it. Default
    /// 127.0.0.1:9090, skipped with a warning when another process has it.
    #[arg(long, value_name = "HOST:PORT|off")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub token: super::identity::TokenArgs,
}
