//! Everything runlet needs from a container runtime, behind one trait.
//!
//! [`Runtime`] is implemented by [`containerd::Containerd`] (the real one, over gRPC) and by
//! [`fake::FakeRuntime`] (scripted, records calls; for tests of control-path decisions).
//! The ingress never imports this module, nor this module the ingress: the data path only
//! sees the dialers ([`crate::dial`]) the control path publishes, and tells an
//! [`crate::ingress::IdleHook`] (the control path's CPU throttling, over
//! [`cgroup::CpuQuota`]) when an instance goes idle or busy.

pub mod cgroup;
pub mod containerd;
pub mod embedded;
pub mod events;
pub mod fake;
pub mod gvisor;
pub mod hardening;
pub mod isolation;
pub mod netns_dir;
pub mod network;
pub mod ocispec;
pub mod passwd;
pub mod rootfs;
pub mod seccomp;

use std::collections::HashMap;
use std::future::Future;

use thiserror::Error;

use crate::image::ImageInfo;

/// Label keys runlet puts on every container it creates; containerd's labels are the
/// source of truth for what runlet owns.
pub mod labels {
    pub const MANAGED: &str = "runlet.io/managed";
    pub const SERVICE: &str = "runlet.io/service";
    pub const REVISION: &str = "runlet.io/revision";
    pub const INSTANCE: &str = "runlet.io/instance";
    pub const CONTAINER: &str = "runlet.io/container";
    pub const NETNS: &str = "runlet.io/netns";
    pub const JOB: &str = "runlet.io/job";
    pub const EXECUTION: &str = "runlet.io/execution";
    pub const TASK_INDEX: &str = "runlet.io/task-index";
    pub const TASK_ATTEMPT: &str = "runlet.io/task-attempt";
    /// Which runlet made the container (`control::owner`).
    pub const OWNER: &str = "runlet.io/owner";
}

/// Errors from the runtime, with the operation and object they concern.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot reach containerd at {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("image {name} is not in runlet's image store; load it first with `runlet image load FILE` (see `runlet image ls`)")]
    ImageNotFound { name: String },
    #[error("{op} {id}: not found")]
    NotFound { op: &'static str, id: String },
    #[error("containerd {op} {id}: {status}")]
    Grpc {
        op: &'static str,
        id: String,
        status: Box<tonic::Status>,
    },
    #[error("{op} {id}: {detail}")]
    Other {
        op: &'static str,
        id: String,
        detail: String,
    },
}

impl RuntimeError {
    pub fn is_not_found(&self) -> bool {
        match self {
            RuntimeError::NotFound { .. } | RuntimeError::ImageNotFound { .. } => true,
            RuntimeError::Grpc { status, .. } => status.code() == tonic::Code::NotFound,
            _ => false,
        }
    }
}

/// What it takes to create one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub id: String,
    pub image: ImageInfo,
    /// The OCI runtime spec, as JSON.
    pub oci_spec: serde_json::Value,
    pub labels: HashMap<String, String>,
    /// FIFO paths for the container's stdout and stderr (already created and opened).
    pub stdout: String,
    pub stderr: String,
    /// When set, the root filesystem's writable layer (overlay upper and work dirs) goes
    /// here instead of the snapshotter's directory: on a tmpfs, writes then count against
    /// the container's memory (contract FS-2).
    pub upper_dir: Option<String>,
    /// The OCI runtime containerd's runc shim runs instead of `runc` (gVisor for gen1);
    /// `None`: runc (gen2).
    pub oci_runtime: Option<OciRuntime>,
}

/// An OCI runtime other than runc, run by containerd's runc shim (its `BinaryName` and
/// `Root` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRuntime {
    /// The binary (the gVisor wrapper of [`gvisor::install`]).
    pub binary: String,
    /// The runtime's state directory for this container alone. runsc looks a container up
    /// by id *prefix* among those in its root, so with one shared root an instance `X` and
    /// its sidecar `X-side` are "ambiguous" to it, and `runsc delete X` fails while exiting
    /// 0; a root per container leaves runsc one container to find.
    pub root: String,
}

/// How a container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: u32,
}

impl ExitStatus {
    /// The signal that killed the process, if it died of one (exit status 128 + n).
    pub fn signal(&self) -> Option<u32> {
        (self.code > 128 && self.code < 128 + 65).then(|| self.code - 128)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.signal() {
            Some(9) => write!(f, "killed by SIGKILL (exit status {})", self.code),
            Some(15) => write!(f, "killed by SIGTERM (exit status {})", self.code),
            Some(s) => write!(f, "killed by signal {s} (exit status {})", self.code),
            None => write!(f, "exit code {}", self.code),
        }
    }
}

/// A container runlet finds in the runtime (used to adopt or clean up after a restart).
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub labels: HashMap<String, String>,
}

/// The container runtime as the control path sees it. Every call is idempotent where the
/// runtime allows it: deleting what is already gone succeeds.
pub trait Runtime: Send + Sync + 'static {
    /// Looks an image up in the store (unpacking it if its snapshot is missing).
    fn resolve_image(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ImageInfo, RuntimeError>> + Send;
    /// Creates the root filesystem, the container and its task (not started); returns the pid.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<u32, RuntimeError>> + Send;
    /// Starts a created task.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Resolves when the task's main process has exited.
    fn wait(&self, id: &str) -> impl Future<Output = Result<ExitStatus, RuntimeError>> + Send;
    /// Sends `signal` to the main process, or to every process of the container with `all`.
    fn kill(
        &self,
        id: &str,
        signal: u32,
        all: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Deletes the task, the container and its snapshot; what is already gone is skipped.
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Lists runlet's containers.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;
    /// A stream of container ids whose memory cgroup hit its limit and had a process
    /// OOM-killed (the main process, or a child while the main one keeps running).
    fn oom_events(
        &self,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::UnboundedReceiver<String>, RuntimeError>> + Send;
    /// True when the kernel's OOM killer killed a process of container `id` (it went over
    /// its memory limit). Ask after the exit and before `delete`, while the container's
    /// cgroup still exists. A runtime that cannot tell answers false.
    fn oom_killed(&self, id: &str) -> impl Future<Output = bool> + Send {
        let _ = id;
        async { false }
    }
}
