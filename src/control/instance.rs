//! One service instance: network, container, start-up probe, and teardown.
//!
//! Create: network namespace (CNI) → /etc files → FIFOs → OCI spec → `Runtime::create` →
//! `Runtime::start` → TCP probe of the ingress port from inside the namespace, until it
//! accepts (ready), the container exits (failed, with its exit code) or the start-up window
//! ends (failed). Teardown: [`super::stop_container`], then the network and files.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::logs::{Pipes, Sink};
use super::probe;
use super::{stop_container, Stopped, KILL_GRACE};
use crate::dial::Dial;
use crate::image::ImageInfo;
use crate::ingress::Endpoint;
use crate::runtime::cgroup::CpuThrottle;
use crate::runtime::network::{self, NetConfig, NetnsDialer};
use crate::runtime::{labels, ocispec, ContainerSpec, ExitStatus, Runtime, RuntimeError};
use crate::spec::ServiceSpec;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("the container exited during start-up with {0}")]
    Exited(ExitStatus),
    #[error("the container did not listen on port {port} within {secs} s")]
    Timeout { port: u16, secs: u64 },
    #[error("{0}")]
    Probe(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] network::NetError),
    #[error(transparent)]
    Spec(#[from] ocispec::SpecError),
    #[error("instance files: {0}")]
    Io(#[from] std::io::Error),
}

/// What every instance of a service shares.
pub struct Ctx<R: Runtime> {
    pub runtime: Arc<R>,
    pub net: NetConfig,
    pub spec: Arc<ServiceSpec>,
    pub image: ImageInfo,
    /// Numeric user and group resolved from the image's `User`.
    pub user: (u32, u32),
    pub state_dir: PathBuf,
}

/// Start-up time by phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    pub network: Duration,
    pub create: Duration,
    pub start: Duration,
    pub probe: Duration,
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "network {:.1} ms, create {:.1} ms, start {:.1} ms, first successful probe {:.1} ms",
            ms(self.network),
            ms(self.create),
            ms(self.start),
            ms(self.probe)
        )
    }
}

/// A started, listening instance.
pub struct Running {
    pub id: String,
    pub endpoint: Arc<Endpoint>,
    /// Reaches the instance's ports (liveness probes).
    pub dialer: Option<Arc<NetnsDialer>>,
    /// Becomes `Some` when the container's main process exits.
    pub exit: watch::Receiver<Option<ExitStatus>>,
    pub startup: Duration,
    /// Where the start-up time went: network, create (snapshot, container, task), start,
    /// and the wait for the first successful probe.
    pub phases: Phases,
    pipes: Option<Pipes>,
}

impl Running {
    /// An instance with no container behind it (a fake's): its endpoint accepts no
    /// connection; the returned sender ends it.
    pub fn without_container(id: &str) -> (Running, watch::Sender<Option<ExitStatus>>) {
        let (tx, rx) = watch::channel(None);
        let running = Running {
            id: id.to_string(),
            endpoint: Arc::new(Endpoint::new(id.to_string(), 8080, Arc::new(NoDial), false)),
            dialer: None,
            exit: rx,
            startup: Duration::ZERO,
            phases: Phases::default(),
            pipes: None,
        };
        (running, tx)
    }
}

impl<R: Runtime> Ctx<R> {
    fn dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("instances").join(id)
    }

    /// Creates and starts instance `id` and waits until it listens.
    pub async fn launch(&self, id: &str) -> Result<Running, StartError> {
        let t0 = Instant::now();
        let spec = &self.spec;
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir)?;
        let att = self.net.attach(id).await?;
        let t_net = t0.elapsed();
        let pipes = {
            let id = id.to_string();
            let sink: Sink = Arc::new(
                move |stream, line| info!(target: "runlet::container", instance = %id, stream, "{line}"),
            );
            Pipes::open(&dir.join("io"), sink)?
        };
        let mut running = Running {
            id: id.to_string(),
            endpoint: Arc::new(Endpoint::new(
                id.to_string(),
                spec.port,
                Arc::new(NoDial),
                spec.use_http2,
            )),
            dialer: None,
            exit: watch::channel(None).1,
            startup: Duration::ZERO,
            phases: Phases::default(),
            pipes: Some(pipes),
        };
        running.phases.network = t_net;
        match self.create_and_start(id, &att, &mut running, t0).await {
            Ok(()) => Ok(running),
            Err(e) => {
                // A container that is still running (never listened, failed its probe)
                // gets the same stop sequence as any other.
                if let Err(stop_err) = stop_container(self.runtime.as_ref(), id, KILL_GRACE).await {
                    warn!(instance = id, "stopping a failed instance: {stop_err}");
                }
                self.teardown(id, running.pipes.take()).await;
                Err(e)
            }
        }
    }

    async fn create_and_start(
        &self,
        id: &str,
        att: &network::Attachment,
        running: &mut Running,
        t0: Instant,
    ) -> Result<(), StartError> {
        let spec = &self.spec;
        let cfg = &self.image.config;
        let args = ocispec::argv(
            &self.image.name,
            cfg,
            spec.command.as_deref(),
            spec.args.as_deref(),
        )?;
        let env = ocispec::env(
            cfg.env.as_deref().unwrap_or_default(),
            &spec.env,
            &spec.contract_env(),
        );
        let hostname = ocispec::hostname(id);
        let etc =
            network::write_etc_files(&self.dir(id).join("etc"), &hostname, att.ip.as_deref())?;
        let oci = ocispec::build(&ocispec::SpecInput {
            id: id.to_string(),
            hostname,
            args,
            env,
            cwd: ocispec::working_dir(cfg),
            uid: self.user.0,
            gid: self.user.1,
            memory_bytes: spec.memory_bytes,
            cpu: spec.cpu,
            netns: Some(att.netns.display().to_string()),
            etc_files: etc,
            tmpfs: spec.volumes.clone(),
        })?;
        let mut lbl = HashMap::new();
        lbl.insert(labels::MANAGED.to_string(), "true".to_string());
        lbl.insert(labels::SERVICE.to_string(), spec.name.clone());
        lbl.insert(labels::REVISION.to_string(), spec.revision.clone());
        lbl.insert(labels::INSTANCE.to_string(), id.to_string());
        lbl.insert(labels::CONTAINER.to_string(), "ingress".to_string());
        lbl.insert(labels::NETNS.to_string(), att.netns.display().to_string());
        let pipes = running
            .pipes
            .as_ref()
            .ok_or_else(|| std::io::Error::other("pipes closed"))?;
        let upper = mount_memory_fs(&self.dir(id).join("rootfs"), spec.memory_bytes)?;
        let cspec = ContainerSpec {
            id: id.to_string(),
            image: self.image.clone(),
            oci_spec: oci,
            labels: lbl,
            stdout: pipes.stdout.display().to_string(),
            stderr: pipes.stderr.display().to_string(),
            upper_dir: Some(upper.display().to_string()),
        };
        let t_before_create = Instant::now();
        self.runtime.create(&cspec).await?;
        running.phases.create = t_before_create.elapsed();
        // Watch for the exit before starting, so an instant crash is seen.
        let (exit_tx, exit_rx) = watch::channel(None);
        let rt = self.runtime.clone();
        let wid = id.to_string();
        tokio::spawn(async move {
            match rt.wait(&wid).await {
                Ok(status) => {
                    let _ = exit_tx.send(Some(status));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => warn!(instance = %wid, "waiting for exit: {e}"),
            }
        });
        running.exit = exit_rx.clone();
        let t_before_start = Instant::now();
        self.runtime.start(id).await?;
        running.phases.start = t_before_start.elapsed();
        let t_before_probe = Instant::now();
        let dialer = Arc::new(NetnsDialer::new(&att.netns, spec.port)?);
        self.probe(dialer.as_ref(), exit_rx, t0).await?;
        let mut endpoint = Endpoint::new(id.to_string(), spec.port, dialer.clone(), spec.use_http2);
        if spec.cpu_throttling {
            endpoint = endpoint.with_idle_hook(CpuThrottle::for_container(id, spec.cpu));
        }
        running.endpoint = Arc::new(endpoint);
        // Idle until the first request: throttled now (full CPU during start-up, LIFE-5).
        running.endpoint.sync_idle_hook();
        running.dialer = Some(dialer);
        running.startup = t0.elapsed();
        running.phases.probe = t_before_probe.elapsed();
        Ok(())
    }

    /// The default start-up probe: the ingress port accepts a TCP connection (LIFE-2).
    async fn probe(
        &self,
        dialer: &NetnsDialer,
        mut exit: watch::Receiver<Option<ExitStatus>>,
        t0: Instant,
    ) -> Result<(), StartError> {
        let deadline = t0 + self.spec.startup_timeout;
        if let Some(p) = &self.spec.startup_probe {
            return self.configured_probe(p, dialer, exit, deadline).await;
        }
        let mut delay = Duration::from_millis(2);
        loop {
            if let Some(status) = *exit.borrow_and_update() {
                return Err(StartError::Exited(status));
            }
            if dialer.dial().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Timeout {
                    port: self.spec.port,
                    secs: self.spec.startup_timeout.as_secs(),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = exit.changed() => {}
            }
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// A configured startup probe: after the initial delay, every period, until it passes,
    /// fails `failureThreshold` times in a row, the container exits, or the window ends.
    async fn configured_probe(
        &self,
        p: &probe::Probe,
        dialer: &NetnsDialer,
        mut exit: watch::Receiver<Option<ExitStatus>>,
        deadline: Instant,
    ) -> Result<(), StartError> {
        let mut next = Instant::now() + p.initial_delay;
        let mut failures = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(deadline)) => {}
                _ = exit.changed() => {}
            }
            if let Some(status) = *exit.borrow_and_update() {
                return Err(StartError::Exited(status));
            }
            if Instant::now() >= deadline {
                return Err(StartError::Timeout {
                    port: self.spec.port,
                    secs: self.spec.startup_timeout.as_secs(),
                });
            }
            next = Instant::now() + p.period;
            match probe::check(p, dialer).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    failures += 1;
                    info!(
                        "startup probe failed ({failures}/{}): {e}",
                        p.failure_threshold
                    );
                    if failures >= p.failure_threshold {
                        return Err(StartError::Probe(format!(
                            "the startup probe failed {failures} times; last: {e}"
                        )));
                    }
                }
            }
        }
    }

    /// Stops the container (SIGTERM, SIGKILL after 10 s) and removes everything of `id`.
    pub async fn stop(&self, mut running: Running) -> Option<Stopped> {
        // Full CPU to shut down in.
        running.endpoint.release_idle_hook();
        let stopped = match stop_container(self.runtime.as_ref(), &running.id, KILL_GRACE).await {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(instance = %running.id, "stopping: {e}");
                None
            }
        };
        self.teardown(&running.id, running.pipes.take()).await;
        stopped
    }

    /// Removes container, network and files of `id`; safe on partial state.
    pub async fn teardown(&self, id: &str, pipes: Option<Pipes>) {
        if let Err(e) = self.runtime.delete(id).await {
            warn!(instance = id, "deleting container: {e}");
        }
        if let Some(p) = pipes {
            p.close().await;
        }
        self.net.detach(id).await;
        let rootfs = self.dir(id).join("rootfs");
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(self.dir(id));
    }
}

/// Mounts a tmpfs of `size` bytes at `dir` with `upper/` and `work/` in it: the writable
/// layer of the instance's root filesystem. tmpfs pages are charged to the memory cgroup of
/// the process that writes them, so root filesystem writes count against the instance's
/// memory limit (FS-2) and vanish with the instance (FS-3).
pub fn mount_memory_fs(dir: &std::path::Path, size: u64) -> std::io::Result<PathBuf> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(dir)?;
    let opts = format!("size={size},mode=0755");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some(opts.as_str()),
    )
    .map_err(std::io::Error::from)?;
    std::fs::create_dir_all(dir.join("upper"))?;
    std::fs::create_dir_all(dir.join("work"))?;
    Ok(dir.to_path_buf())
}

/// A dialer for an instance that is not ready yet.
struct NoDial;
impl Dial for NoDial {
    fn dial(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<tokio::net::TcpStream>> + Send + '_>,
    > {
        Box::pin(async { Err(std::io::Error::other("instance not ready")) })
    }
}
