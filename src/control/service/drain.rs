//! Draining an instance on its way out: routing stops, in-flight requests may finish
//! (bounded by the request timeout), then the stop sequence runs.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::Instances;
use crate::control::service::instance::Running;
use crate::control::KILL_GRACE;

/// How often draining looks at the instance's in-flight count.
const POLL: Duration = Duration::from_millis(20);

/// Closes the instance's endpoint, waits for its in-flight requests if `drain` (until they
/// end, the instance exits or the request timeout passes), then stops it. Returns its id.
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
    if let Some(s) = ctx.stop(running).await {
        if s.killed {
            info!(instance = %id, "SIGKILL sent {} s after SIGTERM", KILL_GRACE.as_secs());
        }
    }
    id
}
