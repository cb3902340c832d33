//! Services: a service keeps a set of instances of one revision in line with the
//! autoscaler's decisions, publishes the routable ones to the ingress, and runs the stop
//! sequence on scale-in, crashes and shutdown.
//!
//! - [`instance`]: one instance's life: launch in a [`Sandbox`](crate::control::sandbox::Sandbox),
//!   start-up probe, endpoint, stop.
//! - [`probe`]: running startup and liveness probes (TCP, HTTP, gRPC) against an instance.
//! - [`throttle`]: `--cpu-throttling`, the ingress's idle hook over the cgroup's CPU quota.
//! - [`controller`]: the [`Controller`] that reacts to instance events and reconciles the
//!   instance set with [`super::autoscale::decide`]; [`run`] drives it until shutdown.
//! - [`backoff`]: how long to wait before the next start after failed ones (a plain function).
//! - [`liveness`]: the liveness probe loop of one ready instance.
//! - [`drain`]: draining an instance, then its stop sequence.
//! - [`leftovers`]: removing what an earlier runlet left of the service in containerd.
//!
//! This file holds [`Instances`], the boundary between the controller and the instances it
//! runs: [`Ctx`] over a real runtime, or the scripted fake in `fake.rs` under paused time.

pub mod backoff;
pub mod controller;
pub mod drain;
#[cfg(test)]
mod fake;
pub mod instance;
pub mod leftovers;
pub mod liveness;
pub mod probe;
pub mod sidecars;
pub mod throttle;

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Stopped;
use crate::runtime::{Runtime, RuntimeError};
use crate::spec::ServiceSpec;
use instance::{Ctx, Running, StartError};

pub use backoff::start_backoff;
pub use controller::{run, Controller};
pub use leftovers::clean_leftovers;

/// What the controller needs to run instances: [`Ctx`] over a real runtime, or a scripted
/// fake in tests of the controller's timing.
pub trait Instances: Send + Sync + 'static {
    fn spec(&self) -> &ServiceSpec;
    /// Creates and starts an instance and waits until it is ready.
    fn launch(&self, id: &str) -> impl Future<Output = Result<Running, StartError>> + Send;
    /// Stops an instance (the stop sequence, SIGKILL `grace` after SIGTERM, or at once if
    /// zero) and removes everything of it.
    fn stop(
        &self,
        running: Running,
        grace: Duration,
    ) -> impl Future<Output = Option<Stopped>> + Send;
    /// The ids of containers the kernel's OOM killer hit, as they happen.
    fn oom_events(
        &self,
    ) -> impl Future<Output = Result<mpsc::UnboundedReceiver<String>, RuntimeError>> + Send;
    /// Whether the container's last exit was an OOM kill.
    fn oom_killed(&self, id: &str) -> impl Future<Output = bool> + Send;
}

impl<R: Runtime> Instances for Ctx<R> {
    fn spec(&self) -> &ServiceSpec {
        &self.spec
    }
    async fn launch(&self, id: &str) -> Result<Running, StartError> {
        Ctx::launch(self, id).await
    }
    async fn stop(&self, running: Running, grace: Duration) -> Option<Stopped> {
        Ctx::stop(self, running, grace).await
    }
    async fn oom_events(&self) -> Result<mpsc::UnboundedReceiver<String>, RuntimeError> {
        self.runtime.oom_events().await
    }
    async fn oom_killed(&self, id: &str) -> bool {
        self.runtime.oom_killed(id).await
    }
}
