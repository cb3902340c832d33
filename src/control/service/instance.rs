//! One service instance: its container (a [`Sandbox`]), start-up probe, and teardown.
//!
//! Create: the sandbox ([`Sandbox::create`]: files, network namespace, FIFOs, OCI spec,
//! in-memory root fs, container) → start → TCP probe of the ingress port from inside the
//! namespace, until it accepts (ready), the container exits (failed, with its exit code) or
//! the start-up window ends (failed). Teardown: [`crate::control::stop_container`], then
//! [`Sandbox::remove`] and [`sandbox::release`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::probe;
use super::sidecars::{self, SidecarImage};
use super::throttle::CpuThrottle;
use crate::control::logs::Sink;
use crate::control::sandbox::{self, Plan, Sandbox, SandboxError};
use crate::control::{stop_container, Stopped, KILL_GRACE};
use crate::dial::Dial;
use crate::image::ImageInfo;
use crate::ingress::Endpoint;
use crate::runtime::network::{NetConfig, NetnsDialer, Network};
use crate::runtime::rootfs::{MemoryFs, RootFs};
use crate::runtime::{labels, ocispec, ExitStatus, Runtime};
use crate::secrets::SecretStore;
use crate::spec::{container, ExecutionEnvironment, ServiceSpec};

/// Why an instance did not become ready.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("the container exited during start-up with {0}")]
    Exited(ExitStatus),
    #[error("the container did not listen on port {port} within {secs} s")]
    Timeout { port: u16, secs: u64 },
    #[error("the startup probe failed {failures} times, the last time")]
    Probe {
        failures: u32,
        #[source]
        last: probe::ProbeError,
    },
    #[error("opening a dialer into the instance's network namespace")]
    Dialer(#[source] std::io::Error),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// What every instance of a service shares.
pub struct Ctx<R: Runtime, N: Network = NetConfig, F: RootFs = MemoryFs> {
    pub runtime: Arc<R>,
    pub net: N,
    /// Where each instance's root filesystem's writable layer lives (in memory).
    pub rootfs: F,
    pub spec: Arc<ServiceSpec>,
    pub image: ImageInfo,
    /// Numeric user and group resolved from the image's `User`.
    pub user: crate::runtime::passwd::ImageUser,
    pub state_dir: PathBuf,
    /// The daemon's services as `/etc/hosts` lines for new instances (`None` outside the
    /// daemon).
    pub peers: Option<watch::Receiver<Arc<str>>>,
    /// The images of `spec.sidecars.containers`, in their order.
    pub sidecar_images: Vec<SidecarImage>,
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
    /// Boxed: a `Running` travels in the controller's events.
    sandbox: Option<Box<Sandbox>>,
    /// The sidecars' containers, in `spec.sidecars.containers`'s order.
    sidecars: Vec<Sandbox>,
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
            sandbox: None,
            sidecars: Vec::new(),
        };
        (running, tx)
    }
}

impl<R: Runtime, N: Network, F: RootFs> Ctx<R, N, F> {
    fn dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("instances").join(id)
    }

    /// Creates and starts instance `id` and waits until it listens.
    pub async fn launch(&self, id: &str) -> Result<Running, StartError> {
        let t0 = Instant::now();
        let mut sandbox = Sandbox::new(id);
        let mut sidecars = Vec::new();
        match self.create_and_start(&mut sandbox, &mut sidecars, t0).await {
            Ok(mut running) => {
                running.sandbox = Some(Box::new(sandbox));
                running.sidecars = sidecars;
                Ok(running)
            }
            Err(e) => {
                // A container that is still running (never listened, failed its probe)
                // gets the same stop sequence as any other.
                if self.spec.sidecars.is_empty() {
                    if let Err(stop_err) =
                        stop_container(self.runtime.as_ref(), id, KILL_GRACE).await
                    {
                        warn!(instance = id, "stopping a failed instance: {stop_err}");
                    }
                } else {
                    sidecars::stop_all(self.runtime.as_ref(), &self.container_ids(id), KILL_GRACE)
                        .await;
                }
                self.teardown_all(id, Some(sandbox), sidecars).await;
                Err(e)
            }
        }
    }

    /// The ids of instance `id`'s containers, the ingress container's first.
    fn container_ids(&self, id: &str) -> Vec<String> {
        std::iter::once(id.to_string())
            .chain(
                self.spec
                    .sidecars
                    .containers
                    .iter()
                    .map(|c| sidecars::container_id(id, &c.name)),
            )
            .collect()
    }

    /// Creates every container of the instance (the ingress container first: it makes the
    /// network namespace the sidecars join), then starts them in dependency order, a
    /// container once those it depends on passed their startup probes; ready once every
    /// container passed its own.
    async fn create_and_start(
        &self,
        sandbox: &mut Sandbox,
        sidecar_boxes: &mut Vec<Sandbox>,
        t0: Instant,
    ) -> Result<Running, StartError> {
        let spec = &self.spec;
        let id = sandbox.id().to_string();
        let dir = self.dir(&id);
        let containers = spec.containers();
        let extra_hosts = self
            .peers
            .as_ref()
            .map(|p| p.borrow().to_string())
            .unwrap_or_default();
        let shared = if spec.sidecars.is_empty() {
            HashMap::new()
        } else {
            std::fs::create_dir_all(&dir).map_err(crate::control::sandbox::files(&dir))?;
            crate::control::owner::record(&dir).map_err(crate::control::sandbox::files(&dir))?;
            sidecars::mount_volumes(&self.rootfs, &dir, &spec.sidecars.volumes)
                .await
                .map_err(crate::control::sandbox::files(&dir))?
        };
        let shared_of = |c: &container::Container| -> Vec<(String, String)> {
            c.mounts
                .iter()
                .filter_map(|m| shared.get(&m.volume).map(|h| (m.path.clone(), h.clone())))
                .collect()
        };
        let labels_of = |name: &str| {
            let mut lbl = HashMap::new();
            lbl.insert(labels::SERVICE.to_string(), spec.name.clone());
            lbl.insert(labels::REVISION.to_string(), spec.revision.clone());
            lbl.insert(labels::INSTANCE.to_string(), id.clone());
            lbl.insert(labels::CONTAINER.to_string(), name.to_string());
            lbl
        };
        let cfg = &self.image.config;
        let args = ocispec::argv(
            &self.image.name,
            cfg,
            spec.command.as_deref(),
            spec.args.as_deref(),
        )
        .map_err(SandboxError::from)?;
        // Secret values are read now, for this container only (never kept in the spec).
        let secrets = crate::secrets::resolve(&spec.secrets, &SecretStore::new(&self.state_dir))
            .map_err(SandboxError::Secrets)?;
        let env = ocispec::env(
            cfg.env.as_deref().unwrap_or_default(),
            &[spec.env.as_slice(), &secrets.env].concat(),
            &spec.contract_env(),
        );
        // gen1: the runc shim runs gVisor's runsc (through runlet's wrapper) instead of runc.
        let runtime_binary = match spec.execution_environment {
            ExecutionEnvironment::Gen1 => {
                Some(crate::runtime::gvisor::install(&self.state_dir).map_err(SandboxError::from)?)
            }
            ExecutionEnvironment::Gen2 => None,
        };
        let ingress = &containers[0];
        let plan = Plan {
            dir: &dir,
            image: &self.image,
            args,
            env,
            user: self.user.clone(),
            memory_bytes: spec.memory_bytes,
            cpu: spec.cpu,
            // A single container's volumes are its own tmpfs mounts; shared ones are
            // bind-mounted.
            tmpfs: if spec.sidecars.is_empty() {
                spec.volumes.clone()
            } else {
                Vec::new()
            },
            shared: shared_of(ingress),
            join: None,
            files: vec![],
            secret_dirs: secrets.dirs,
            labels: labels_of(&ingress.name),
            sink: log_sink(&id, &ingress.name),
            extra_hosts: extra_hosts.clone(),
            runtime_binary: runtime_binary.clone(),
        };
        let att = sandbox
            .create(&self.runtime, &self.net, &self.rootfs, plan)
            .await?;
        for (c, img) in containers[1..].iter().zip(&self.sidecar_images) {
            let cfg = &img.image.config;
            let args = ocispec::argv(
                &img.image.name,
                cfg,
                c.command.as_deref(),
                c.args.as_deref(),
            )
            .map_err(SandboxError::from)?;
            // Read now, for this container only, as the ingress container's.
            let secrets = crate::secrets::resolve(&c.secrets, &SecretStore::new(&self.state_dir))
                .map_err(SandboxError::Secrets)?;
            let env = ocispec::env(
                cfg.env.as_deref().unwrap_or_default(),
                &[c.env.as_slice(), &secrets.env].concat(),
                &spec.sidecar_env(),
            );
            let sdir = dir.join("containers").join(&c.name);
            let plan = Plan {
                dir: &sdir,
                image: &img.image,
                args,
                env,
                user: img.user.clone(),
                memory_bytes: c.memory_bytes,
                cpu: c.cpu,
                tmpfs: Vec::new(),
                shared: shared_of(c),
                join: Some(att.clone()),
                files: vec![],
                secret_dirs: secrets.dirs,
                labels: labels_of(&c.name),
                sink: log_sink(&id, &c.name),
                extra_hosts: extra_hosts.clone(),
                runtime_binary: runtime_binary.clone(),
            };
            let mut sb = Sandbox::new(&sidecars::container_id(&id, &c.name));
            let made = sb
                .create(&self.runtime, &self.net, &self.rootfs, plan)
                .await;
            sidecar_boxes.push(sb);
            made?;
        }
        let dialer = Arc::new(
            self.net
                .dialer(&att, spec.port)
                .map_err(StartError::Dialer)?,
        );
        let exit = if sidecar_boxes.is_empty() {
            sandbox.exit()
        } else {
            let named = containers
                .iter()
                .map(|c| c.name.clone())
                .zip(std::iter::once(sandbox.exit()).chain(sidecar_boxes.iter().map(Sandbox::exit)))
                .collect();
            sidecars::any_exit(named)
        };
        // Checked when the spec was made; one wave of everything if not.
        let waves = container::start_order(&containers)
            .unwrap_or_else(|_| vec![(0..containers.len()).collect()]);
        let mut t_before_probe = None;
        for wave in waves {
            for &i in &wave {
                if i == 0 {
                    sandbox.start(self.runtime.as_ref()).await?;
                } else {
                    sidecar_boxes[i - 1].start(self.runtime.as_ref()).await?;
                }
                if !sidecar_boxes.is_empty() {
                    info!(instance = %id, container = %containers[i].name, "container started");
                }
            }
            t_before_probe.get_or_insert_with(Instant::now);
            let probes = wave.iter().map(|&i| {
                let (exit, dialer) = (exit.clone(), dialer.clone());
                let c = &containers[i];
                async move {
                    match (i, &c.startup_probe) {
                        (0, _) => self.probe(dialer.as_ref(), exit, t0).await,
                        (_, Some(p)) => {
                            let deadline = t0 + spec.startup_timeout;
                            self.configured_probe(p, dialer.as_ref(), exit, deadline)
                                .await
                        }
                        // A sidecar without a startup probe has started once it runs.
                        (_, None) => Ok(()),
                    }
                }
            });
            futures::future::try_join_all(probes).await?;
        }
        let endpoint = self.endpoint(&id, &dialer);
        let t = sandbox.timings;
        Ok(Running {
            id,
            endpoint,
            dialer: Some(dialer),
            exit,
            startup: t0.elapsed(),
            phases: Phases {
                network: t.network,
                create: t.create,
                start: t.start,
                probe: t_before_probe.map_or(Duration::ZERO, |t| t.elapsed()),
            },
            sandbox: None,
            sidecars: Vec::new(),
        })
    }

    /// The data path's view of a ready instance; idle until its first request, so throttled
    /// now under `--cpu-throttling` (full CPU during start-up, LIFE-5).
    fn endpoint(&self, id: &str, dialer: &Arc<NetnsDialer>) -> Arc<Endpoint> {
        let spec = &self.spec;
        let mut endpoint = Endpoint::new(id.to_string(), spec.port, dialer.clone(), spec.use_http2);
        if spec.cpu_throttling {
            endpoint = endpoint.with_idle_hook(CpuThrottle::for_container(id, spec.cpu));
        }
        let endpoint = Arc::new(endpoint);
        endpoint.sync_idle_hook();
        endpoint
    }

    /// Takes over instance `id`, which an earlier run of this daemon left running (after a
    /// `kill -9`): the output and exit of each of its containers (the ingress container and
    /// its sidecars) are watched again, and it must still accept a connection on its port
    /// within [`ADOPT_PROBE`]. No cold start: it serves at once. One container of it gone
    /// (or not taken over) and the whole instance is stopped and replaced.
    pub async fn adopt(&self, id: &str) -> Result<Running, StartError> {
        let sandbox = match Sandbox::adopt(
            &self.runtime,
            id,
            &self.dir(id),
            log_sink(id, &self.ingress_name()),
        ) {
            Ok(s) => s,
            Err(e) => {
                self.stop_unadopted(id, None, Vec::new()).await;
                return Err(e.into());
            }
        };
        let mut sidecars = Vec::new();
        for c in &self.spec.sidecars.containers {
            let sid = sidecars::container_id(id, &c.name);
            let sdir = self.dir(id).join("containers").join(&c.name);
            match Sandbox::adopt(&self.runtime, &sid, &sdir, log_sink(id, &c.name)) {
                Ok(sb) => sidecars.push(sb),
                Err(e) => {
                    self.stop_unadopted(id, Some(sandbox), sidecars).await;
                    return Err(e.into());
                }
            }
        }
        let att = crate::runtime::network::Attachment {
            id: id.to_string(),
            netns: NetConfig::netns_path(id),
            ip: None,
        };
        let dialer = match self.net.dialer(&att, self.spec.port) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                self.stop_unadopted(id, Some(sandbox), sidecars).await;
                return Err(StartError::Dialer(e));
            }
        };
        let exit = if sidecars.is_empty() {
            sandbox.exit()
        } else {
            let named = std::iter::once((self.ingress_name(), sandbox.exit()))
                .chain(
                    self.spec
                        .sidecars
                        .containers
                        .iter()
                        .map(|c| c.name.clone())
                        .zip(sidecars.iter().map(Sandbox::exit)),
                )
                .collect();
            sidecars::any_exit(named)
        };
        let mut watch = exit.clone();
        let alive = tokio::time::timeout(ADOPT_PROBE, async {
            loop {
                if let Some(status) = *watch.borrow_and_update() {
                    return Err(StartError::Exited(status));
                }
                if dialer.dial().await.is_ok() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or(Err(StartError::Timeout {
            port: self.spec.port,
            secs: ADOPT_PROBE.as_secs(),
        }));
        if let Err(e) = alive {
            self.stop_unadopted(id, Some(sandbox), sidecars).await;
            return Err(e);
        }
        info!(
            instance = id,
            containers = 1 + sidecars.len(),
            "adopted a running instance"
        );
        // Its namespace's DNAT still names the previous process's metadata port, and this
        // process's server does not know its address yet.
        if let Err(e) = self.net.readopt(id).await {
            warn!(
                instance = id,
                "the adopted instance cannot reach the metadata server: {e}"
            );
        }
        Ok(Running {
            id: id.to_string(),
            endpoint: self.endpoint(id, &dialer),
            dialer: Some(dialer),
            exit,
            startup: Duration::ZERO,
            phases: Phases::default(),
            sandbox: Some(Box::new(sandbox)),
            sidecars,
        })
    }

    /// The ingress container's name, as its log lines carry it.
    fn ingress_name(&self) -> String {
        if self.spec.sidecars.is_empty() {
            container::DEFAULT_INGRESS_NAME.to_string()
        } else {
            self.spec.sidecars.ingress_name.clone()
        }
    }

    /// Stops and removes every container of an instance that could not be adopted.
    async fn stop_unadopted(&self, id: &str, sandbox: Option<Sandbox>, held: Vec<Sandbox>) {
        // Each failure to stop is logged, naming the container.
        sidecars::stop_all(self.runtime.as_ref(), &self.container_ids(id), KILL_GRACE).await;
        self.teardown_all(id, sandbox, held).await;
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
                        "startup probe failed ({failures}/{}): {}",
                        p.failure_threshold,
                        crate::util::error_chain(&e)
                    );
                    if failures >= p.failure_threshold {
                        return Err(StartError::Probe { failures, last: e });
                    }
                }
            }
        }
    }

    /// Stops the container (SIGTERM, SIGKILL after `grace`: 10 s but for an instance out of
    /// memory) and removes everything of `id`.
    pub async fn stop(&self, mut running: Running, grace: Duration) -> Option<Stopped> {
        // Full CPU to shut down in.
        running.endpoint.release_idle_hook();
        let stopped = if self.spec.sidecars.is_empty() {
            match stop_container(self.runtime.as_ref(), &running.id, grace).await {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(instance = %running.id, "stopping: {e}");
                    None
                }
            }
        } else {
            // Every container at once: SIGTERM to all, SIGKILL `grace` later.
            sidecars::stop_all(
                self.runtime.as_ref(),
                &self.container_ids(&running.id),
                grace,
            )
            .await
        };
        let sidecar_boxes = std::mem::take(&mut running.sidecars);
        self.teardown_all(
            &running.id,
            running.sandbox.take().map(|b| *b),
            sidecar_boxes,
        )
        .await;
        stopped
    }

    /// Removes containers, network and files of `id`; safe on partial state.
    pub async fn teardown(&self, id: &str, sandbox: Option<Sandbox>) {
        self.teardown_all(id, sandbox, Vec::new()).await
    }

    /// [`teardown`](Self::teardown) with the sidecars' sandboxes runlet holds (those it
    /// does not hold are removed by id).
    async fn teardown_all(&self, id: &str, sandbox: Option<Sandbox>, mut held: Vec<Sandbox>) {
        for sid in self.container_ids(id).into_iter().skip(1) {
            let sb = match held.iter().position(|s| s.id() == sid) {
                Some(i) => held.swap_remove(i),
                None => Sandbox::new(&sid),
            };
            sb.remove(self.runtime.as_ref()).await;
        }
        let sandbox = sandbox.unwrap_or_else(|| Sandbox::new(id));
        sandbox.remove(self.runtime.as_ref()).await;
        sandbox::release(&self.net, &self.rootfs, id, &self.dir(id)).await;
    }
}

/// How long an adopted instance has to accept a connection again.
const ADOPT_PROBE: Duration = Duration::from_secs(5);

/// Where a container's output lines go: the log, tagged with the instance and the
/// container's name.
fn log_sink(id: &str, container: &str) -> Sink {
    let (id, container) = (id.to_string(), container.to_string());
    Arc::new(
        move |stream, line| info!(target: "runlet::container", instance = %id, container = %container, stream, "{line}"),
    )
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

#[cfg(test)]
mod tests {
    //! A whole launch on the fake runtime, network and root fs: the fake network's dialer
    //! reaches the host's loopback, where the test plays the instance.
    use super::*;
    use crate::control::sandbox::tests::{made, released};
    use crate::runtime::fake::{Call, FakeNetwork, FakeRootFs, FakeRuntime};

    /// A failed startup probe keeps the probe's own error as its cause, so the log line and
    /// the 503 body a waiting request gets say why the last try failed, down to the OS error.
    #[test]
    fn a_failed_startup_probe_keeps_the_last_failure_and_its_cause() {
        let e = StartError::Probe {
            failures: 3,
            last: probe::ProbeError::Connect {
                port: 8080,
                source: std::io::Error::from_raw_os_error(nix::errno::Errno::ENETUNREACH as i32),
            },
        };
        let told = crate::util::error_chain(&e);
        assert!(
            told.starts_with(
                "the startup probe failed 3 times, the last time: connecting to port 8080: "
            ),
            "{told}"
        );
        assert!(told.contains("unreachable"), "the OS error is told: {told}");
    }

    fn ctx(
        rt: &FakeRuntime,
        port: u16,
        dir: &std::path::Path,
    ) -> Ctx<FakeRuntime, FakeNetwork, FakeRootFs> {
        let spec = ServiceSpec {
            name: "svc".into(),
            revision: "svc-00001-abc".into(),
            image: "probe".into(),
            port,
            listen: "127.0.0.1:8080".parse().unwrap(),
            env: vec![],
            command: Some(vec!["/probe".into()]),
            args: None,
            memory_bytes: 256 << 20,
            cpu: 1.0,
            concurrency: 1,
            timeout: Duration::from_secs(300),
            min_instances: 0,
            max_instances: 1,
            idle_timeout: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(5),
            use_http2: false,
            cpu_throttling: false,
            startup_probe: None,
            liveness_probe: None,
            volumes: vec![],
            secrets: Default::default(),
            sidecars: Default::default(),
            execution_environment: Default::default(),
        };
        Ctx {
            runtime: Arc::new(rt.clone()),
            net: rt.network(),
            rootfs: rt.root_fs(),
            spec: Arc::new(spec),
            image: Default::default(),
            user: Default::default(),
            state_dir: dir.to_path_buf(),
            peers: None,
            sidecar_images: Vec::new(),
        }
    }

    /// A port nothing listens on (bound, read, let go).
    fn unused_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn an_instance_is_ready_once_its_port_accepts_and_stops_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rt = FakeRuntime::new();
        rt.exit_on(&[15]).await;
        let c = ctx(&rt, port, tmp.path());
        let running = c.launch("svc-1").await.unwrap();
        assert!(running.dialer.is_some());
        let spec = rt.spec("svc-1").await.unwrap();
        assert_eq!(spec.labels[labels::SERVICE], "svc");
        assert_eq!(spec.labels[labels::INSTANCE], "svc-1");
        assert_eq!(spec.labels[labels::CONTAINER], "ingress");
        assert_eq!(spec.labels[labels::MANAGED], "true");
        let stopped = c.stop(running, KILL_GRACE).await.unwrap();
        assert_eq!(stopped.exit, Some(ExitStatus { code: 143 }));
        let (id, dir) = ("svc-1".to_string(), c.dir("svc-1"));
        let stop = [
            Call::Start(id.clone()),
            Call::Kill {
                id: id.clone(),
                signal: 15,
                all: false,
            },
            // The stop sequence's delete, then the teardown's.
            Call::Delete(id.clone()),
            Call::Delete(id.clone()),
        ];
        assert_eq!(
            rt.calls().await,
            [made(&id, &dir), stop.to_vec(), released(&id, &dir)].concat()
        );
        assert!(!c.dir("svc-1").exists());
    }

    #[tokio::test]
    async fn an_exit_during_start_up_fails_the_launch_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let port = unused_port();
        let rt = FakeRuntime::new();
        rt.exit_after(Duration::from_millis(20), 5).await;
        let c = ctx(&rt, port, tmp.path());
        let err = c.launch("svc-2").await.err().unwrap();
        assert!(
            matches!(err, StartError::Exited(ExitStatus { code: 5 })),
            "{err}"
        );
        let calls = rt.calls().await;
        assert!(
            calls.ends_with(&released("svc-2", &c.dir("svc-2"))),
            "{calls:?}"
        );
        assert!(rt.list().await.unwrap().is_empty());
        assert!(!c.dir("svc-2").exists());
    }

    /// LIFE-1/LIFE-2: an instance that never listens fails its launch after the default
    /// start-up limit, 4 minutes (paused time), with the port and the limit named, and
    /// leaves nothing.
    #[tokio::test(start_paused = true)]
    async fn an_instance_that_never_listens_fails_after_four_minutes_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let port = unused_port();
        let rt = FakeRuntime::new();
        rt.exit_on(&[15, 9]).await;
        let mut c = ctx(&rt, port, tmp.path());
        let mut spec = (*c.spec).clone();
        spec.startup_timeout = crate::spec::defaults::STARTUP_TIMEOUT;
        c.spec = Arc::new(spec);
        let t0 = Instant::now();
        let err = c.launch("svc-3").await.err().unwrap();
        let took = t0.elapsed();
        assert!(
            matches!(err, StartError::Timeout { port: p, secs: 240 } if p == port),
            "{err}"
        );
        assert!(
            took >= Duration::from_secs(240) && took < Duration::from_secs(241),
            "{took:?}"
        );
        assert!(err.to_string().contains("within 240 s"), "{err}");
        assert!(rt.list().await.unwrap().is_empty());
        assert!(!c.dir("svc-3").exists());
    }

    /// `ctx` with two sidecars: `proxy` (its startup probe a TCP check of `proxy_port`),
    /// which the ingress container depends on, and `log`; an in-memory volume mounted in
    /// the ingress container and `proxy`.
    fn with_sidecars(
        rt: &FakeRuntime,
        port: u16,
        proxy_port: u16,
        dir: &std::path::Path,
    ) -> Ctx<FakeRuntime, FakeNetwork, FakeRootFs> {
        use crate::spec::container::{Container, Mount};
        let mut c = ctx(rt, port, dir);
        let sidecar = |name: &str| Container {
            name: name.into(),
            image: "busybox".into(),
            command: Some(vec!["/bin/sh".into()]),
            env: vec![("SIDE".into(), name.into())],
            memory_bytes: 64 << 20,
            cpu: 0.5,
            ..Default::default()
        };
        let mut proxy = sidecar("proxy");
        proxy.startup_probe = Some(probe::Probe {
            period: Duration::from_millis(50),
            failure_threshold: 1000,
            ..probe::Probe::tcp(proxy_port)
        });
        let shared = |path: &str| Mount {
            volume: "v".into(),
            path: path.into(),
        };
        proxy.mounts = vec![shared("/shared")];
        let mut spec = (*c.spec).clone();
        spec.sidecars = crate::spec::Sidecars {
            ingress_name: "app".into(),
            ingress_depends_on: vec!["proxy".into()],
            ingress_mounts: vec![shared("/data")],
            volumes: vec![("v".into(), 1 << 20)],
            containers: vec![proxy, sidecar("log")],
        };
        c.spec = Arc::new(spec);
        let image = SidecarImage {
            image: ImageInfo {
                name: "busybox".into(),
                ..Default::default()
            },
            user: Default::default(),
        };
        c.sidecar_images = vec![image.clone(), image];
        c
    }

    fn env_of(spec: &crate::runtime::ContainerSpec) -> Vec<String> {
        spec.oci_spec["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    fn bind_source(spec: &crate::runtime::ContainerSpec, dest: &str) -> String {
        let mounts = spec.oci_spec["mounts"].as_array().unwrap();
        let m = mounts.iter().find(|m| m["destination"] == dest).unwrap();
        m["source"].as_str().unwrap().to_string()
    }

    /// Start order: `proxy` and `log` first; the ingress container once `proxy` passed its
    /// startup probe. Sidecars join the ingress container's network namespace, get no
    /// PORT, share the volume's one directory; any container's exit ends the instance.
    #[tokio::test]
    async fn sidecars_start_before_their_dependents_and_share_the_instance() {
        let tmp = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy_port = unused_port();
        let rt = FakeRuntime::new();
        rt.exit_on(&[15]).await;
        let c = Arc::new(with_sidecars(&rt, port, proxy_port, tmp.path()));
        let launch = tokio::spawn({
            let c = c.clone();
            async move { c.launch("svc-1").await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let calls = rt.calls().await;
        let started =
            |calls: &[Call], id: &str| calls.iter().position(|c| *c == Call::Start(id.to_string()));
        assert!(started(&calls, "svc-1-proxy").is_some(), "{calls:?}");
        assert!(started(&calls, "svc-1-log").is_some(), "{calls:?}");
        assert_eq!(started(&calls, "svc-1"), None, "waits for proxy: {calls:?}");
        // The proxy listens: its probe passes, the ingress container starts.
        let _proxy = std::net::TcpListener::bind(("127.0.0.1", proxy_port)).unwrap();
        let running = launch.await.unwrap().unwrap();
        let calls = rt.calls().await;
        assert!(started(&calls, "svc-1-proxy") < started(&calls, "svc-1"));
        // One network namespace (the ingress container's), made once.
        let attaches: Vec<_> = calls
            .iter()
            .filter(|c| matches!(c, Call::Attach(_)))
            .collect();
        assert_eq!(attaches, [&Call::Attach("svc-1".into())]);
        let app = rt.spec("svc-1").await.unwrap();
        let proxy = rt.spec("svc-1-proxy").await.unwrap();
        assert_eq!(app.labels[labels::CONTAINER], "app");
        assert_eq!(proxy.labels[labels::CONTAINER], "proxy");
        assert_eq!(proxy.labels[labels::INSTANCE], "svc-1");
        assert_eq!(proxy.labels[labels::NETNS], app.labels[labels::NETNS]);
        assert!(env_of(&app).contains(&format!("PORT={port}")));
        let side = env_of(&proxy);
        assert!(!side.iter().any(|e| e.starts_with("PORT=")), "{side:?}");
        assert!(side.contains(&"K_SERVICE=svc".to_string()), "{side:?}");
        assert!(side.contains(&"SIDE=proxy".to_string()), "{side:?}");
        assert_eq!(
            bind_source(&app, "/data"),
            bind_source(&proxy, "/shared"),
            "one directory for the volume"
        );
        assert_eq!(proxy.oci_spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        // The log sidecar exits: the instance ends.
        let mut exit = running.exit.clone();
        rt.exit("svc-1-log", 1).await;
        let status = *exit.wait_for(Option::is_some).await.unwrap();
        assert_eq!(status, Some(ExitStatus { code: 1 }));
        c.stop(running, KILL_GRACE).await;
        let calls = rt.calls().await;
        for id in ["svc-1", "svc-1-proxy", "svc-1-log"] {
            let term = Call::Kill {
                id: id.into(),
                signal: 15,
                all: false,
            };
            assert!(calls.contains(&term), "{id}: {calls:?}");
        }
        let dir = c.dir("svc-1");
        assert!(
            calls.contains(&Call::Unmount(dir.join("volumes/v"))),
            "{calls:?}"
        );
        assert!(
            calls.contains(&Call::Unmount(dir.join("containers/proxy/rootfs"))),
            "{calls:?}"
        );
        assert!(!dir.exists());
    }

    /// Stop: SIGTERM to every container at once, SIGKILL exactly 10 s later to those that
    /// ignored it.
    #[tokio::test(start_paused = true)]
    async fn stopping_an_instance_signals_all_its_containers_together() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = FakeRuntime::new();
        let c = with_sidecars(&rt, 1, 1, tmp.path());
        let ids = ["svc-1", "svc-1-proxy", "svc-1-log"];
        for id in ids {
            rt.started(id, Default::default()).await;
        }
        let (running, _exit) = Running::without_container("svc-1");
        let t0 = Instant::now();
        let stopped = c.stop(running, KILL_GRACE).await.unwrap();
        assert_eq!(t0.elapsed(), KILL_GRACE);
        assert!(stopped.killed);
        let kills: Vec<(String, u32)> = rt
            .calls()
            .await
            .into_iter()
            .filter_map(|c| match c {
                Call::Kill { id, signal, .. } => Some((id, signal)),
                _ => None,
            })
            .collect();
        let signals: Vec<u32> = kills.iter().map(|k| k.1).collect();
        assert_eq!(signals, [15, 15, 15, 9, 9, 9], "{kills:?}");
        for id in ids {
            assert!(kills.contains(&(id.to_string(), 15)), "{kills:?}");
        }
    }
}
