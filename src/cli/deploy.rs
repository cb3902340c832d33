//! `runlet deploy`'s flags: gcloud run deploy's names for what a revision runs.

use clap::Args;

use super::client::ApiArgs;
use super::ContainerArgs;

/// Create or update a service on the daemon, and wait until its new revision serves.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service's name (lowercase letters, digits and hyphens; it is served at
    /// http://SERVICE.localhost:PORT).
    pub service: String,
    /// The image to run (loaded with `runlet image load`).
    #[arg(long)]
    pub image: String,
    /// The port the container listens on; passed as PORT [default: 8080].
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub container: ContainerArgs,
    /// Memory limit per instance (e.g. 512Mi, 1Gi) [default: 512Mi].
    #[arg(long)]
    pub memory: Option<String>,
    /// vCPUs per instance (e.g. 1, 0.5, 2) [default: 1].
    #[arg(long)]
    pub cpu: Option<String>,
    /// Requests in flight per instance at most (1-1000) [default: 80; 1 below one CPU].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Request timeout (1s-3600s), counted from receipt [default: 300].
    #[arg(long)]
    pub timeout: Option<String>,
    /// Instances kept running even with no traffic [default: 0].
    #[arg(long)]
    pub min_instances: Option<usize>,
    /// Instances at most [default: 100].
    #[arg(long)]
    pub max_instances: Option<usize>,
    /// Startup probe, gcloud syntax: httpGet.path=/ready,periodSeconds=1,failureThreshold=5
    /// (or tcpSocket.port=N, grpc.port=N[,grpc.service=S]; initialDelaySeconds, timeoutSeconds).
    #[arg(long)]
    pub startup_probe: Option<String>,
    /// Liveness probe, same syntax; an instance failing it is replaced.
    #[arg(long)]
    pub liveness_probe: Option<String>,
    /// An in-memory volume: name=N,type=in-memory[,size-limit=64Mi]; repeatable.
    #[arg(long)]
    pub add_volume: Vec<String>,
    /// Mounts a volume: volume=N,mount-path=/path; repeatable.
    #[arg(long)]
    pub add_volume_mount: Vec<String>,
    /// Send requests to the container as HTTP/2 cleartext (h2c).
    #[arg(long)]
    pub use_http2: bool,
    /// Throttle an instance's CPU (to 1% of a CPU) while no request is in flight, as Cloud
    /// Run does with request-based billing. Off by default on one machine: see docs/usage.md.
    #[arg(long, overrides_with = "no_cpu_throttling")]
    pub cpu_throttling: bool,
    /// Give instances their full CPU all the time (the default).
    #[arg(long, overrides_with = "cpu_throttling")]
    pub no_cpu_throttling: bool,
    /// Return once the daemon has accepted the deployment, without waiting for it.
    #[arg(long = "async")]
    pub no_wait: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}
