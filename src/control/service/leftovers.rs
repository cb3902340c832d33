//! Adoption on restart, service side: containerd is the source of truth, so what an earlier
//! runlet left of this service (containers found by the service label) is removed before the
//! first instance starts.

use std::time::Duration;

use tracing::warn;

use crate::control::service::instance::Ctx;
use crate::control::stop_container;
use crate::runtime::{labels, Runtime};

/// SIGKILL follows SIGTERM this soon for a leftover: nothing routes to it any more.
const LEFTOVER_GRACE: Duration = Duration::from_secs(1);

/// Removes what an earlier runlet left of this service (containers found by label).
pub async fn clean_leftovers<R: Runtime>(ctx: &Ctx<R>) {
    let Ok(list) = ctx.runtime.list().await else {
        return;
    };
    for c in list {
        if c.labels.get(labels::SERVICE) == Some(&ctx.spec.name) {
            warn!(container = %c.id, "removing a container an earlier runlet left behind");
            let _ = stop_container(ctx.runtime.as_ref(), &c.id, LEFTOVER_GRACE).await;
            ctx.teardown(&c.id, None).await;
        }
    }
}
