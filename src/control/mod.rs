//! The control path: one container lifecycle for instances and job attempts ([`sandbox`]),
//! instances (create, probe, stop), the autoscaler's decisions, the service controller that
//! ties them to the data path's snapshot and demand, and jobs.

pub mod autoscale;
pub mod crash_hook;
pub mod job;
pub mod logs;
pub mod owner;
pub mod sandbox;
pub mod service;

use std::time::Duration;

use tracing::{info, warn};

use crate::runtime::{ExitStatus, Runtime, RuntimeError};

/// SIGKILL follows SIGTERM after this long (LIFE-8).
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// How a stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub exit: Option<ExitStatus>,
    /// True when SIGTERM was not enough and SIGKILL was sent.
    pub killed: bool,
}

/// The stop sequence, one function for scale-in, failures and shutdown (LIFE-7, LIFE-8):
/// SIGTERM to the main process, up to `grace` for it to exit, then SIGKILL to every
/// process, then delete task, container and snapshot. What is already gone counts as done.
/// A zero `grace` sends SIGKILL at once, with no SIGTERM: for an instance that went over
/// its memory limit (LIFE-9), whose requests were already answered.
///
/// The caller has already stopped routing to the instance and let in-flight requests end.
pub async fn stop_container<R: Runtime>(
    runtime: &R,
    id: &str,
    grace: Duration,
) -> Result<Stopped, RuntimeError> {
    // Subscribe to the exit before signalling, so it cannot be missed.
    let wait = runtime.wait(id);
    tokio::pin!(wait);
    let mut killed = false;
    let exit = if grace.is_zero() {
        killed = true;
        sigkill(runtime, id, wait).await?
    } else {
        match runtime.kill(id, 15, false).await {
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                warn!(container = id, "SIGTERM failed: {e}");
                None
            }
            Ok(()) => {
                tokio::select! {
                    r = &mut wait => r.ok(),
                    _ = tokio::time::sleep(grace) => {
                        info!(container = id, "still running {}s after SIGTERM: sending SIGKILL", grace.as_secs());
                        killed = true;
                        sigkill(runtime, id, wait).await?
                    }
                }
            }
        }
    };
    runtime.delete(id).await?;
    Ok(Stopped { exit, killed })
}

/// SIGKILL to every process of container `id`, then up to 30 s for `wait` (its exit).
async fn sigkill<R: Runtime>(
    runtime: &R,
    id: &str,
    wait: std::pin::Pin<&mut impl std::future::Future<Output = Result<ExitStatus, RuntimeError>>>,
) -> Result<Option<ExitStatus>, RuntimeError> {
    match runtime.kill(id, 9, true).await {
        Ok(()) => Ok(tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .ok()
            .and_then(|r| r.ok())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{Call, FakeRuntime};
    use crate::runtime::ContainerSpec;

    async fn created(rt: &FakeRuntime, id: &str) {
        let spec = ContainerSpec {
            id: id.into(),
            image: Default::default(),
            oci_spec: serde_json::Value::Null,
            labels: Default::default(),
            stdout: String::new(),
            stderr: String::new(),
            upper_dir: None,
            runtime_binary: None,
        };
        rt.create(&spec).await.unwrap();
        rt.start(id).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn sigkill_comes_exactly_after_the_grace_when_sigterm_is_ignored() {
        let rt = FakeRuntime::new();
        created(&rt, "c1").await;
        let t0 = tokio::time::Instant::now();
        let stopped = stop_container(&rt, "c1", KILL_GRACE).await.unwrap();
        assert_eq!(t0.elapsed(), KILL_GRACE);
        assert!(stopped.killed);
        assert_eq!(stopped.exit, Some(ExitStatus { code: 137 }));
        let calls = rt.calls().await;
        assert_eq!(
            &calls[2..],
            &[
                Call::Kill {
                    id: "c1".into(),
                    signal: 15,
                    all: false
                },
                Call::Kill {
                    id: "c1".into(),
                    signal: 9,
                    all: true
                },
                Call::Delete("c1".into()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_that_handles_sigterm_is_not_killed() {
        let rt = FakeRuntime::new();
        rt.exit_on(&[15]).await;
        created(&rt, "c2").await;
        let t0 = tokio::time::Instant::now();
        let stopped = stop_container(&rt, "c2", KILL_GRACE).await.unwrap();
        assert!(t0.elapsed() < Duration::from_millis(1));
        assert!(!stopped.killed);
        assert_eq!(stopped.exit, Some(ExitStatus { code: 143 }));
        assert!(!rt.calls().await.contains(&Call::Kill {
            id: "c2".into(),
            signal: 9,
            all: true
        }));
    }

    #[tokio::test(start_paused = true)]
    async fn no_grace_means_sigkill_at_once_without_sigterm() {
        let rt = FakeRuntime::new();
        created(&rt, "c3").await;
        let t0 = tokio::time::Instant::now();
        let stopped = stop_container(&rt, "c3", Duration::ZERO).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(stopped.killed);
        assert_eq!(stopped.exit, Some(ExitStatus { code: 137 }));
        let calls = rt.calls().await;
        assert_eq!(
            &calls[2..],
            &[
                Call::Kill {
                    id: "c3".into(),
                    signal: 9,
                    all: true
                },
                Call::Delete("c3".into()),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_what_is_gone_succeeds() {
        let rt = FakeRuntime::new();
        let stopped = stop_container(&rt, "nothing", KILL_GRACE).await.unwrap();
        assert_eq!(
            stopped,
            Stopped {
                exit: None,
                killed: false
            }
        );
        assert_eq!(
            rt.calls().await.last(),
            Some(&Call::Delete("nothing".into()))
        );
    }
}
