//! What an instance with sidecars adds to a single container's life: the sidecars' ids and
//! images, the in-memory volumes they share (one tmpfs per volume on the host, bind-mounted
//! into each container that mounts it), one exit for the whole instance (any container
//! exiting ends it, as on Cloud Run), and the stop of every container at once.
//!
//! The ingress container keeps the instance's id, network namespace and files directory;
//! a sidecar is container `INSTANCE-NAME`, joins that namespace (they reach each other on
//! `localhost`) and keeps its files under `instances/INSTANCE/containers/NAME`.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::control::{stop_container, Stopped};
use crate::image::ImageInfo;
use crate::runtime::rootfs::RootFs;
use crate::runtime::{ExitStatus, Runtime};

/// A sidecar's image, resolved once for every instance of the revision.
#[derive(Debug, Clone)]
pub struct SidecarImage {
    pub image: ImageInfo,
    /// The user, group and supplementary groups from the image's `User`.
    pub user: crate::runtime::passwd::ImageUser,
}

/// The container id of sidecar `name` of instance `instance`.
pub fn container_id(instance: &str, name: &str) -> String {
    format!("{instance}-{name}")
}

/// Mounts one tmpfs per volume under `dir/volumes/NAME` (at most its size; pages are
/// charged to the memory cgroup of the container that writes them) and returns, by volume
/// name, the directory to bind-mount: its `upper/`, open to every user (mode 1777, like
/// Cloud Run's in-memory volumes), since containers of the instance may run as different
/// users.
pub async fn mount_volumes(
    rootfs: &impl RootFs,
    dir: &Path,
    volumes: &[(String, u64)],
) -> io::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (name, size) in volumes {
        let at = rootfs.mount(&dir.join("volumes").join(name), *size).await?;
        let shared = at.join("upper");
        std::fs::create_dir_all(&shared)?;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777))?;
        out.insert(name.clone(), shared.display().to_string());
    }
    Ok(out)
}

/// One exit for the instance: becomes `Some` with the first container's exit status, and
/// logs which container it was (the instance ends with it).
pub fn any_exit(
    mut exits: Vec<(String, watch::Receiver<Option<ExitStatus>>)>,
) -> watch::Receiver<Option<ExitStatus>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut waits: Vec<_> = exits
            .iter_mut()
            .map(|(name, rx)| {
                Box::pin(async move {
                    let status = *rx.wait_for(Option::is_some).await.ok()?;
                    Some((name.clone(), status?))
                })
            })
            .collect();
        // A watcher gone without a status (its container removed) is not an exit.
        while !waits.is_empty() {
            let (first, _, rest) = futures::future::select_all(waits).await;
            if let Some((name, status)) = first {
                info!(container = %name, "container {name} exited with {status}: the instance ends");
                let _ = tx.send(Some(status));
                return;
            }
            waits = rest;
        }
    });
    rx
}

/// The stop sequence for every container of the instance at once: SIGTERM to each,
/// SIGKILL `grace` later to those still running, then delete. Returns the first id's
/// (the ingress container's) result.
pub async fn stop_all<R: Runtime>(runtime: &R, ids: &[String], grace: Duration) -> Option<Stopped> {
    let stops = ids
        .iter()
        .map(|id| async move { (id, stop_container(runtime, id, grace).await) });
    let mut first = None;
    for (i, (id, r)) in futures::future::join_all(stops)
        .await
        .into_iter()
        .enumerate()
    {
        match r {
            Ok(s) if i == 0 => first = Some(s),
            Ok(_) => {}
            Err(e) => warn!(container = %id, "stopping: {e}"),
        }
    }
    first
}
