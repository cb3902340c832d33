//! Draining an instance on its way out: routing stops, in-flight requests may finish
//! (bounded by the request timeout), then the stop sequence runs: SIGTERM and the 10 s
//! grace, or SIGKILL at once for an instance that went over its memory limit (LIFE-9).

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::Instances;
use crate::control::service::instance::Running;
use crate::control::KILL_GRACE;

/// How often draining looks at the instance's in-flight count.
const POLL: Duration = Duration::from_millis(20);

/// The grace between SIGTERM and SIGKILL for an instance: none once it went over its
/// memory limit (it is broken, and its requests were answered 500 already), else 10 s.
pub fn grace(out_of_memory: bool) -> Duration {
    if out_of_memory {
        Duration::ZERO
    } else {
        KILL_GRACE
    }
}

/// Closes the instance's endpoint, waits for its in-flight requests if `drain` (until they
/// end, the instance exits or the request timeout passes), then stops it, with the
/// [`grace`] its state calls for then (an OOM kill during the drain ends it at once: its
/// requests were cut). Returns its id.
pub async fn drain_and_stop<I: Instances>(ctx: &I, running: Running, drain: bool) -> String {
    let id = running.id.clone();
    running.endpoint.close();
    let drain_until = Instant::now() + ctx.spec().timeout;
    while drain
        && running.endpoint.in_flight() > 0
        && running.exit.borrow().is_none()
        && Instant::now() < drain_until
    {
        tokio::time::sleep(POLL).await;
    }
    let grace = grace(running.endpoint.is_out_of_memory());
    if let Some(s) = ctx.stop(running, grace).await {
        if s.killed && !grace.is_zero() {
            info!(instance = %id, "SIGKILL sent {} s after SIGTERM", grace.as_secs());
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_out_of_memory_gets_no_grace() {
        assert_eq!(grace(false), KILL_GRACE);
        assert_eq!(grace(true), Duration::ZERO);
    }
}
