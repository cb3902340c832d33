//! Adoption on restart, service side: containerd is the source of truth, so what an earlier
//! runlet left of this service (containers found by the service label, whose owner is gone:
//! [`crate::control::owner`]) is removed before the first instance starts. A live owner's
//! containers (the daemon's service of the same name, another `runlet serve`) are left alone.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};

use crate::control::owner::{self, Owner, Verdict};

use crate::control::sandbox::{self, Sandbox};
use crate::control::service::instance::Ctx;
use crate::control::stop_container;
use crate::runtime::network::Network;
use crate::runtime::rootfs::{MemoryFs, RootFs};
use crate::runtime::{labels, Runtime};

/// SIGKILL follows SIGTERM this soon for a leftover: nothing routes to it any more.
const LEFTOVER_GRACE: Duration = Duration::from_secs(1);

/// Removes what an earlier runlet left of this service (containers found by label), and
/// what any gone runlet left under the state dir's `instances/` before a container existed
/// ([`release_orphans`]).
pub async fn clean_leftovers<R: Runtime>(ctx: &Ctx<R>) {
    remove_containers(ctx).await;
    release_orphans(ctx.runtime.as_ref(), &ctx.net, &ctx.rootfs, &ctx.state_dir).await;
}

/// The containers part of [`clean_leftovers`].
async fn remove_containers<R: Runtime>(ctx: &Ctx<R>) {
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

/// Whether `me` releases an instance directory it finds: one whose container exists is the
/// containers' business (adopted, removed with it, or left); one without an owner file is
/// being made right now (or by a runlet before owner files) and is left; otherwise it goes
/// when its owner is gone, or is `me` (a restarted daemon, or a `runlet serve` at its start,
/// which made nothing yet). `alive` is whether `recorded` still runs.
pub fn release_dir(me: &Owner, recorded: Option<&Owner>, alive: bool, has_container: bool) -> bool {
    if has_container {
        return false;
    }
    match recorded {
        None => false,
        Some(theirs) => owner::verdict(me, Some(theirs), alive, true) != Verdict::Leave,
    }
}

/// Releases what runlets that died before their instances' containers existed left under
/// `<state-dir>/instances/`: network namespace and address, root fs mount, files
/// ([`sandbox::release`], as a normal stop does). Call it before this process makes any
/// instance. Returns the ids released.
pub async fn release_orphans<R: Runtime>(
    runtime: &R,
    net: &impl Network,
    rootfs: &impl RootFs,
    state_dir: &Path,
) -> Vec<String> {
    let instances = state_dir.join("instances");
    let Ok(entries) = std::fs::read_dir(&instances) else {
        return Vec::new();
    };
    let containers: HashSet<String> = match runtime.list().await {
        Ok(list) => list.into_iter().map(|c| c.id).collect(),
        Err(e) => {
            warn!("listing containers to find orphaned instances: {e}");
            return Vec::new();
        }
    };
    let mut released = Vec::new();
    for e in entries.filter_map(Result::ok) {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let id = e.file_name().to_string_lossy().into_owned();
        let dir = e.path();
        let recorded = owner::recorded(&dir);
        let alive = recorded.as_ref().is_some_and(Owner::is_alive);
        if release_dir(
            owner::current(),
            recorded.as_ref(),
            alive,
            containers.contains(&id),
        ) {
            warn!(instance = %id, "releasing an instance whose runlet died before its container existed");
            sandbox::release(net, rootfs, &id, &dir).await;
            released.push(id);
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{Call, FakeRuntime};

    #[test]
    fn which_instance_dirs_are_released() {
        let daemon = Owner::Daemon("/var/lib/runlet".into());
        let serve = Owner::Process { pid: 10, start: 1 };
        let other = Owner::Process { pid: 11, start: 2 };
        let table = [
            // me, recorded, alive, has container → released
            (&daemon, Some(&daemon), true, false, true),
            (&daemon, Some(&daemon), true, true, false),
            (&daemon, Some(&serve), false, false, true),
            (&daemon, Some(&serve), true, false, false),
            (&daemon, Some(&serve), false, true, false),
            (&daemon, None, false, false, false),
            (&serve, Some(&serve), true, false, true),
            (&serve, Some(&daemon), false, false, true),
            (&serve, Some(&daemon), true, false, false),
            (&serve, Some(&other), false, false, true),
            (&serve, Some(&other), true, false, false),
            (&serve, None, false, false, false),
        ];
        for (i, (me, recorded, alive, has_container, want)) in table.into_iter().enumerate() {
            assert_eq!(
                release_dir(me, recorded, alive, has_container),
                want,
                "case {i}"
            );
        }
    }

    #[tokio::test]
    async fn orphans_of_gone_owners_are_released_and_the_rest_left() {
        let state = tempfile::tempdir().unwrap();
        let instances = state.path().join("instances");
        let gone = Owner::Process {
            pid: std::process::id(),
            start: u64::MAX,
        };
        // A live daemon of another state dir: its lock is held.
        let other = tempfile::tempdir().unwrap();
        let lock = std::fs::File::create(other.path().join(owner::DAEMON_LOCK_FILE)).unwrap();
        let _held =
            nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        let live = Owner::Daemon(other.path().to_path_buf());
        let dirs = [
            ("gone-1", Some(gone.label())),
            ("mine-1", Some(owner::current().label())),
            ("live-1", Some(live.label())),
            ("unowned-1", None),
            ("running-1", Some(gone.label())),
        ];
        for (id, label) in &dirs {
            let dir = instances.join(id);
            std::fs::create_dir_all(dir.join("rootfs")).unwrap();
            if let Some(l) = label {
                std::fs::write(dir.join(owner::OWNER_FILE), l).unwrap();
            }
        }
        let rt = FakeRuntime::new();
        let mut sb = Sandbox::new("running-1");
        let image = crate::image::ImageInfo::default();
        let plan_dir = state.path().join("elsewhere");
        sb.create(
            &std::sync::Arc::new(rt.clone()),
            &rt.network(),
            &rt.root_fs(),
            crate::control::sandbox::Plan {
                dir: &plan_dir,
                image: &image,
                args: vec![],
                env: vec![],
                user: Default::default(),
                memory_bytes: 1 << 20,
                cpu: 1.0,
                tmpfs: vec![],
                secret_dirs: vec![],
                shared: vec![],
                join: None,
                files: vec![],
                labels: Default::default(),
                sink: std::sync::Arc::new(|_, _| {}),
                extra_hosts: String::new(),
                runtime_binary: None,
            },
        )
        .await
        .unwrap();
        let before = rt.calls().await.len();

        let mut released = release_orphans(&rt, &rt.network(), &rt.root_fs(), state.path()).await;
        released.sort();
        assert_eq!(released, ["gone-1", "mine-1"]);
        let mut left: Vec<String> = std::fs::read_dir(&instances)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["live-1", "running-1", "unowned-1"]);
        let calls = rt.calls().await.split_off(before);
        for id in ["gone-1", "mine-1"] {
            assert!(calls.contains(&Call::Detach(id.into())), "{calls:?}");
            assert!(
                calls.contains(&Call::Unmount(instances.join(id).join("rootfs"))),
                "{calls:?}"
            );
        }
        assert_eq!(calls.len(), 4, "{calls:?}");
    }
}
