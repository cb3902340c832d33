//! Adoption on restart, service side: containerd is the source of truth, so what an earlier
//! runlet left of this service (containers found by the service label, whose owner is gone:
//! [`crate::control::owner`]) is removed before the first instance starts. A live owner's
//! containers (the daemon's service of the same name, another `runlet serve`) are left alone.

use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};

use crate::control::owner::{self, Verdict};

use crate::control::sandbox::{self, Sandbox};
use crate::control::service::instance::Ctx;
use crate::control::stop_container;
use crate::runtime::network::Network;
use crate::runtime::rootfs::MemoryFs;
use crate::runtime::{labels, Runtime};

/// SIGKILL follows SIGTERM this soon for a leftover: nothing routes to it any more.
const LEFTOVER_GRACE: Duration = Duration::from_secs(1);

/// Removes what an earlier runlet left of this service (containers found by label).
pub async fn clean_leftovers<R: Runtime>(ctx: &Ctx<R>) {
    let Ok(list) = ctx.runtime.list().await else {
        return;
    };
    for c in list {
        if c.labels.get(labels::SERVICE) != Some(&ctx.spec.name) {
            continue;
        }
        match owner::verdict_on(&c.labels, true) {
            Verdict::Remove => {
                warn!(container = %c.id, "removing a container an earlier runlet left behind");
                remove(ctx.runtime.as_ref(), &ctx.net, &ctx.state_dir, &c.id).await;
            }
            Verdict::Adopt | Verdict::Leave => info!(
                container = %c.id,
                owner = c.labels.get(labels::OWNER).map_or("", |s| s.as_str()),
                "leaving a container of the same service name: its runlet is running"
            ),
        }
    }
}

/// Stops a leftover instance container and removes everything of it: container, network
/// namespace and address, files under `state_dir`.
pub async fn remove<R: Runtime>(runtime: &R, net: &impl Network, state_dir: &Path, id: &str) {
    let _ = stop_container(runtime, id, LEFTOVER_GRACE).await;
    Sandbox::new(id).remove(runtime).await;
    sandbox::release(net, &MemoryFs, id, &state_dir.join("instances").join(id)).await;
}
