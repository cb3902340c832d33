//! One container's life on this host, the same for a service instance and a job attempt.
//!
//! [`Sandbox::create`]: files dir and its owner file ([`super::owner::record`]) → network
//! namespace ([`Network::attach`]) → output FIFOs → `/etc` files → OCI spec → labels → in-memory root fs ([`RootFs::mount`]) →
//! `Runtime::create` → exit watcher (before the start, so an instant exit is seen).
//! [`Sandbox::start`]: `Runtime::start`. What comes between (a start-up probe, a task
//! timeout) is the caller's.
//!
//! The way back is two steps, so a job can report an attempt's end before the slower part:
//! [`Sandbox::remove`] (delete the container, pass on its last output), then [`release`]
//! (network, root fs, files). Both are safe on what was never made or is already gone, and
//! stopping a running container first is [`super::stop_container`]'s job.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use super::crash_hook;
use super::logs::{Pipes, Sink};
use crate::image::ImageInfo;
use crate::runtime::network::{self, Attachment, NetError, Network};
use crate::runtime::ocispec::{self, SpecError};
use crate::runtime::rootfs::RootFs;
use crate::runtime::{labels, ContainerSpec, ExitStatus, OciRuntime, Runtime, RuntimeError};
use crate::secrets::{self, resolve::SecretDir};

/// What went wrong, by the step that was being done (the cause is the error's source).
#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("reading the container's secrets")]
    Secrets(#[source] crate::secrets::resolve::ResolveError),
    #[error("creating the container's files in {}", .0.display())]
    Files(std::path::PathBuf, #[source] io::Error),
    #[error(transparent)]
    Gvisor(#[from] crate::runtime::gvisor::GvisorError),
    #[error("attaching the container's network")]
    Network(#[from] NetError),
    #[error("building the container's OCI spec")]
    Spec(#[from] SpecError),
    #[error("mounting the container's in-memory root filesystem")]
    RootFs(#[source] io::Error),
    #[error("creating the container")]
    Create(#[source] RuntimeError),
    #[error("starting the container")]
    Start(#[source] RuntimeError),
    #[error("waiting for the container's exit")]
    Wait(#[source] RuntimeError),
    #[error("lost track of the container's exit")]
    WatcherGone,
    #[error("stopping the container")]
    Stop(#[source] RuntimeError),
}

/// What a container is made of, decided by the caller (service instance or job attempt).
pub struct Plan<'a> {
    /// Where its files go (FIFOs, `/etc` files, the root fs mount); [`release`] removes it.
    pub dir: &'a Path,
    pub image: &'a ImageInfo,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Numeric user and group.
    pub user: crate::runtime::passwd::ImageUser,
    pub memory_bytes: u64,
    pub cpu: f64,
    /// In-memory volumes: (mount path, size in bytes).
    pub tmpfs: Vec<(String, u64)>,
    /// In-memory volumes shared with other containers of the instance: (mount path,
    /// directory on the host), bind-mounted read-write.
    pub shared: Vec<(String, String)>,
    /// The network namespace to join (another container of the instance made it); `None`:
    /// this container's own, made here ([`Network::attach`]) and its id's.
    pub join: Option<Attachment>,
    /// Host files bind-mounted read-only: (path in the container, path on the host).
    pub files: Vec<(String, String)>,
    /// Secret directories, written on the root fs's tmpfs and bind-mounted read-only
    /// ([`crate::secrets::files`]).
    pub secret_dirs: Vec<SecretDir>,
    /// The caller's labels; [`labels::MANAGED`] and [`labels::NETNS`] are added.
    pub labels: HashMap<String, String>,
    /// Where the container's output lines go.
    pub sink: Sink,
    /// Lines to end the container's `/etc/hosts` with (the daemon's services).
    pub extra_hosts: String,
    /// The OCI runtime binary instead of runc: gen1's gVisor wrapper
    /// ([`crate::runtime::gvisor::install`]); `None`: runc (gen2).
    pub runtime_binary: Option<std::path::PathBuf>,
}

/// Time spent in each step of [`Sandbox::create`] and [`Sandbox::start`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Files dir and network namespace.
    pub network: Duration,
    /// `Runtime::create` (snapshot, container, task).
    pub create: Duration,
    /// `Runtime::start`.
    pub start: Duration,
}

/// The task that waits for a container's exit.
type Watcher = JoinHandle<Result<ExitStatus, RuntimeError>>;

/// One container and what runlet holds of it: its output pipes and its exit watcher.
pub struct Sandbox {
    id: String,
    pipes: Option<Pipes>,
    watcher: Option<Watcher>,
    exit: watch::Receiver<Option<ExitStatus>>,
    pub timings: Timings,
}

impl Sandbox {
    /// Sandbox `id`, nothing of it made yet.
    pub fn new(id: &str) -> Sandbox {
        Sandbox {
            id: id.to_string(),
            pipes: None,
            watcher: None,
            exit: watch::channel(None).1,
            timings: Timings::default(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Becomes `Some` when the container's main process exits.
    pub fn exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    /// Makes the container, up to and not including its start; returns its network
    /// attachment. On error, what was made stays for [`remove`](Self::remove) and
    /// [`release`] to undo.
    pub async fn create<R: Runtime>(
        &mut self,
        runtime: &Arc<R>,
        net: &impl Network,
        rootfs: &impl RootFs,
        plan: Plan<'_>,
    ) -> Result<Attachment, SandboxError> {
        let t0 = Instant::now();
        let id = self.id.clone();
        let dir = plan.dir;
        std::fs::create_dir_all(dir).map_err(files(dir))?;
        // First, so that a runlet that dies before the container exists leaves a leftover
        // with an owner ([`crate::control::service::leftovers::release_orphans`]).
        super::owner::record(dir).map_err(files(dir))?;
        let att = match plan.join {
            Some(att) => att,
            None => {
                let att = net.attach(&id).await?;
                crash_hook::after(crash_hook::Step::NetworkAttach);
                att
            }
        };
        self.timings.network = t0.elapsed();
        let pipes = self
            .pipes
            .insert(Pipes::open(&dir.join("io"), plan.sink).map_err(files(dir))?);
        let (stdout, stderr) = (
            pipes.stdout.display().to_string(),
            pipes.stderr.display().to_string(),
        );
        // The instance's hostname: the id of whoever made the network namespace.
        let hostname = ocispec::hostname(&att.id);
        let etc = network::write_etc_files(
            &dir.join("etc"),
            &hostname,
            att.ip.as_deref(),
            &plan.extra_hosts,
        )
        .map_err(files(dir))?;
        let netns = att.netns.display().to_string();
        let secret_binds = secrets::files::binds(&dir.join("rootfs"), &plan.secret_dirs);
        let oci = ocispec::build(&ocispec::SpecInput {
            id: id.clone(),
            hostname,
            args: plan.args,
            env: plan.env,
            cwd: ocispec::working_dir(&plan.image.config),
            uid: plan.user.uid,
            gid: plan.user.gid,
            additional_gids: plan.user.additional_gids,
            memory_bytes: plan.memory_bytes,
            cpu: plan.cpu,
            netns: Some(netns.clone()),
            etc_files: etc
                .into_iter()
                .chain(plan.files)
                .chain(secret_binds)
                .collect(),
            tmpfs: plan.tmpfs,
            shared: plan.shared,
        })?;
        let mut lbl = plan.labels;
        lbl.insert(labels::MANAGED.to_string(), "true".to_string());
        lbl.insert(labels::NETNS.to_string(), netns);
        lbl.insert(labels::OWNER.to_string(), super::owner::current().label());
        // The root filesystem's writable layer lives in memory (FS-2): writes count against
        // the container's memory limit.
        let upper = rootfs
            .mount(&dir.join("rootfs"), plan.memory_bytes)
            .await
            .map_err(SandboxError::RootFs)?;
        crash_hook::after(crash_hook::Step::RootFsMount);
        secrets::files::write(&dir.join("rootfs"), &plan.secret_dirs).map_err(files(dir))?;
        let t_create = Instant::now();
        runtime
            .create(&ContainerSpec {
                id: id.clone(),
                image: plan.image.clone(),
                oci_spec: oci,
                labels: lbl,
                stdout,
                stderr,
                upper_dir: Some(upper.display().to_string()),
                // runsc keeps its state in the container's own directory (see
                // [`OciRuntime::root`]), removed with it by [`release`].
                oci_runtime: plan.runtime_binary.map(|p| OciRuntime {
                    binary: p.display().to_string(),
                    root: dir.join("runsc").display().to_string(),
                }),
            })
            .await
            .map_err(SandboxError::Create)?;
        self.timings.create = t_create.elapsed();
        let (watcher, exit) = watch_exit(runtime.clone(), id);
        self.watcher = Some(watcher);
        self.exit = exit;
        Ok(att)
    }

    /// Takes over container `id`, which runs already (made by an earlier run of this
    /// daemon): its output FIFOs in `dir` are read again and its exit is watched.
    pub fn adopt<R: Runtime>(
        runtime: &Arc<R>,
        id: &str,
        dir: &Path,
        sink: Sink,
    ) -> Result<Sandbox, SandboxError> {
        let pipes = Pipes::reattach(&dir.join("io"), sink).map_err(files(dir))?;
        let (watcher, exit) = watch_exit(runtime.clone(), id.to_string());
        Ok(Sandbox {
            id: id.to_string(),
            pipes: Some(pipes),
            watcher: Some(watcher),
            exit,
            timings: Timings::default(),
        })
    }

    /// Starts the created container.
    pub async fn start<R: Runtime>(&mut self, runtime: &R) -> Result<(), SandboxError> {
        let t = Instant::now();
        runtime.start(&self.id).await.map_err(SandboxError::Start)?;
        self.timings.start = t.elapsed();
        Ok(())
    }

    /// Resolves when the container's main process has exited.
    pub async fn exited(&mut self) -> Result<ExitStatus, SandboxError> {
        let Some(watcher) = self.watcher.as_mut() else {
            return Err(SandboxError::WatcherGone);
        };
        match watcher.await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(SandboxError::Wait(e)),
            Err(_) => Err(SandboxError::WatcherGone),
        }
    }

    /// Deletes the container (stop it first if it may still run) and passes on what it
    /// wrote last.
    pub async fn remove<R: Runtime>(mut self, runtime: &R) {
        if let Err(e) = runtime.delete(&self.id).await {
            warn!(container = %self.id, "deleting the container: {e}");
        }
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(p) = self.pipes.take() {
            p.close().await;
        }
    }
}

/// [`SandboxError::Files`] for files under `dir`: the error names where it could not write
/// (a full state dir says which).
pub fn files(dir: &Path) -> impl FnOnce(io::Error) -> SandboxError + '_ {
    move |e| SandboxError::Files(dir.to_path_buf(), e)
}

/// Watches for the exit of container `id` from now on: the returned handle ends with it,
/// the receiver becomes `Some` with it.
fn watch_exit<R: Runtime>(
    runtime: Arc<R>,
    id: String,
) -> (Watcher, watch::Receiver<Option<ExitStatus>>) {
    let (tx, rx) = watch::channel(None);
    let watcher = tokio::spawn(async move {
        let mut failures = 0;
        loop {
            let r = runtime.wait(&id).await;
            match &r {
                Ok(status) => {
                    let _ = tx.send(Some(*status));
                }
                Err(e) if e.is_not_found() => {}
                // containerd restarting: the call broke, the container (its shim) lives on.
                // Ask again once it answers, or the exit would never be seen.
                Err(e) if !tx.is_closed() => {
                    if failures == 0 {
                        warn!(container = %id, "waiting for exit: {e}; asking again until containerd answers");
                    }
                    tokio::time::sleep(rewait_after(failures)).await;
                    failures += 1;
                    continue;
                }
                Err(e) => warn!(container = %id, "waiting for exit: {e}"),
            }
            return r;
        }
    });
    (watcher, rx)
}

/// How long to wait before asking containerd for an exit again after `failures` failed
/// waits in a row: 100 ms doubled each time, at most 5 s (a containerd restart takes a
/// second or two; one that stays away is not asked in a hot loop).
pub fn rewait_after(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(2u64.saturating_pow(failures.min(10))))
        .min(Duration::from_secs(5))
}

/// Removes what is left of container `id` once it is deleted: its network namespace and
/// address, its root filesystem's memory, its files in `dir`. For an instance with
/// sidecars, also their root filesystems (`dir/containers/NAME/rootfs`) and the shared
/// in-memory volumes (`dir/volumes/NAME`), so a leftover's are released too.
pub async fn release(net: &impl Network, rootfs: &impl RootFs, id: &str, dir: &Path) {
    net.detach(id).await;
    rootfs.unmount(&dir.join("rootfs")).await;
    for (sub, inner) in [("containers", "rootfs"), ("volumes", "")] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            rootfs.unmount(&e.path().join(inner)).await;
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
pub(crate) mod tests {
    //! A sandbox's life on the fake runtime, network and root fs, asserting the call order.
    use super::*;

    #[test]
    fn waits_are_asked_again_sooner_then_later() {
        let table: &[(u32, u64)] = &[
            (0, 100),
            (1, 200),
            (2, 400),
            (5, 3_200),
            (6, 5_000),
            (u32::MAX, 5_000),
        ];
        for &(failures, ms) in table {
            assert_eq!(
                rewait_after(failures),
                Duration::from_millis(ms),
                "{failures}"
            );
        }
    }
    use crate::runtime::fake::{Call, FakeRuntime, FAKE_IP};

    /// A wait for the exit that breaks (containerd restarting under it) is made again, so
    /// the exit that follows is still seen: the fault suite found the watch ending for good
    /// (tests/faults.rs, the containerd restart).
    #[tokio::test(start_paused = true)]
    async fn a_broken_exit_wait_is_made_again_and_the_exit_still_seen() {
        let rt = Arc::new(FakeRuntime::new());
        rt.exit_on(&[9]).await;
        rt.started("c1", Default::default()).await;
        rt.break_waits(3).await;
        let (_watcher, mut exit) = watch_exit(rt.clone(), "c1".to_string());
        tokio::time::sleep(Duration::from_secs(2)).await;
        rt.kill("c1", 9, false).await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), exit.wait_for(Option::is_some))
            .await
            .expect("the exit after broken waits was not seen");
        assert_eq!(*seen.unwrap(), Some(ExitStatus { code: 137 }));
    }

    /// What [`Sandbox::create`] of `id` in `dir` records, in order.
    pub(crate) fn made(id: &str, dir: &Path) -> Vec<Call> {
        vec![
            Call::Attach(id.to_string()),
            Call::Mount(dir.join("rootfs")),
            Call::Create(id.to_string()),
        ]
    }

    /// What [`release`] of `id` in `dir` records, in order.
    pub(crate) fn released(id: &str, dir: &Path) -> Vec<Call> {
        vec![
            Call::Detach(id.to_string()),
            Call::Unmount(dir.join("rootfs")),
        ]
    }

    fn plan<'a>(dir: &'a Path, image: &'a ImageInfo) -> Plan<'a> {
        let mut labels = HashMap::new();
        labels.insert(labels::JOB.to_string(), "hello".to_string());
        Plan {
            dir,
            image,
            args: vec!["/probe".into()],
            env: vec!["A=1".into()],
            user: crate::runtime::passwd::ImageUser::ids(1000, 1000),
            memory_bytes: 256 << 20,
            cpu: 1.0,
            tmpfs: vec![],
            shared: vec![],
            join: None,
            files: vec![],
            secret_dirs: vec![],
            labels,
            sink: Arc::new(|_, _| {}),
            extra_hosts: String::new(),
            runtime_binary: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sandbox_is_made_started_watched_removed_and_released_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c1");
        let rt = FakeRuntime::new();
        rt.exit_after(Duration::from_secs(1), 3).await;
        let (runtime, net, rootfs) = (Arc::new(rt.clone()), rt.network(), rt.root_fs());
        let image = ImageInfo::default();
        let mut sb = Sandbox::new("c1");
        let att = sb
            .create(&runtime, &net, &rootfs, plan(&dir, &image))
            .await
            .unwrap();
        assert_eq!(att.ip.as_deref(), Some(FAKE_IP));
        let hosts = std::fs::read_to_string(dir.join("etc/hosts")).unwrap();
        assert!(hosts.contains(FAKE_IP), "{hosts}");
        let spec = rt.spec("c1").await.unwrap();
        assert_eq!(spec.labels[labels::MANAGED], "true");
        assert_eq!(spec.labels[labels::JOB], "hello");
        assert_eq!(spec.labels[labels::NETNS], "/run/netns/runlet-c1");
        let mut exit = sb.exit();
        sb.start(runtime.as_ref()).await.unwrap();
        assert_eq!(sb.exited().await.unwrap(), ExitStatus { code: 3 });
        assert_eq!(*exit.borrow_and_update(), Some(ExitStatus { code: 3 }));
        sb.remove(runtime.as_ref()).await;
        release(&net, &rootfs, "c1", &dir).await;
        assert!(!dir.exists());
        let c1 = || "c1".to_string();
        let life = [Call::Start(c1()), Call::Delete(c1())];
        assert_eq!(
            rt.calls().await,
            [made("c1", &dir), life.to_vec(), released("c1", &dir)].concat()
        );
    }

    /// The owner is on disk before the network is touched: a runlet that dies in between
    /// leaves a directory whose owner the next one can judge.
    #[tokio::test(start_paused = true)]
    async fn the_owner_is_recorded_before_the_network_is_attached() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c3");
        let rt = FakeRuntime::new();
        rt.fail_attaches().await;
        let (runtime, net, rootfs) = (Arc::new(rt.clone()), rt.network(), rt.root_fs());
        let image = ImageInfo::default();
        let mut sb = Sandbox::new("c3");
        let err = sb
            .create(&runtime, &net, &rootfs, plan(&dir, &image))
            .await
            .unwrap_err();
        assert!(matches!(err, SandboxError::Network(_)), "{err}");
        assert_eq!(
            crate::control::owner::recorded(&dir).as_ref(),
            Some(crate::control::owner::current())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_failed_create_made_is_undone_by_remove_and_release() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c2");
        let rt = FakeRuntime::new();
        rt.fail_creates().await;
        let (runtime, net, rootfs) = (Arc::new(rt.clone()), rt.network(), rt.root_fs());
        let image = ImageInfo::default();
        let mut sb = Sandbox::new("c2");
        let err = sb
            .create(&runtime, &net, &rootfs, plan(&dir, &image))
            .await
            .unwrap_err();
        // The message says what was being done; the cause is the source, not repeated.
        assert_eq!(err.to_string(), "creating the container");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(cause, "create c2: scripted failure");
        assert!(matches!(sb.exited().await, Err(SandboxError::WatcherGone)));
        sb.remove(runtime.as_ref()).await;
        release(&net, &rootfs, "c2", &dir).await;
        assert!(!dir.exists());
        assert_eq!(
            rt.calls().await,
            [
                made("c2", &dir),
                vec![Call::Delete("c2".into())],
                released("c2", &dir)
            ]
            .concat()
        );
    }
}
