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
use crate::spec::ServiceSpec;

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
        match self.create_and_start(&mut sandbox, t0).await {
            Ok(mut running) => {
                running.sandbox = Some(Box::new(sandbox));
                Ok(running)
            }
            Err(e) => {
                // A container that is still running (never listened, failed its probe)
                // gets the same stop sequence as any other.
                if let Err(stop_err) = stop_container(self.runtime.as_ref(), id, KILL_GRACE).await {
                    warn!(instance = id, "stopping a failed instance: {stop_err}");
                }
                self.teardown(id, Some(sandbox)).await;
                Err(e)
            }
        }
    }

    async fn create_and_start(
        &self,
        sandbox: &mut Sandbox,
        t0: Instant,
    ) -> Result<Running, StartError> {
        let spec = &self.spec;
        let id = sandbox.id().to_string();
        let cfg = &self.image.config;
        let args = ocispec::argv(
            &self.image.name,
            cfg,
            spec.command.as_deref(),
            spec.args.as_deref(),
        )
        .map_err(SandboxError::from)?;
        let env = ocispec::env(
            cfg.env.as_deref().unwrap_or_default(),
            &spec.env,
            &spec.contract_env(),
        );
        let mut lbl = HashMap::new();
        lbl.insert(labels::SERVICE.to_string(), spec.name.clone());
        lbl.insert(labels::REVISION.to_string(), spec.revision.clone());
        lbl.insert(labels::INSTANCE.to_string(), id.clone());
        lbl.insert(labels::CONTAINER.to_string(), "ingress".to_string());
        let sink = log_sink(&id);
        let dir = self.dir(&id);
        let plan = Plan {
            dir: &dir,
            image: &self.image,
            args,
            env,
            user: self.user.clone(),
            memory_bytes: spec.memory_bytes,
            cpu: spec.cpu,
            tmpfs: spec.volumes.clone(),
            files: vec![],
            labels: lbl,
            sink,
            extra_hosts: self
                .peers
                .as_ref()
                .map(|p| p.borrow().to_string())
                .unwrap_or_default(),
        };
        let att = sandbox
            .create(&self.runtime, &self.net, &self.rootfs, plan)
            .await?;
        sandbox.start(self.runtime.as_ref()).await?;
        let t_before_probe = Instant::now();
        let dialer = Arc::new(
            self.net
                .dialer(&att, spec.port)
                .map_err(StartError::Dialer)?,
        );
        self.probe(dialer.as_ref(), sandbox.exit(), t0).await?;
        let endpoint = self.endpoint(&id, &dialer);
        let t = sandbox.timings;
        Ok(Running {
            id,
            endpoint,
            dialer: Some(dialer),
            exit: sandbox.exit(),
            startup: t0.elapsed(),
            phases: Phases {
                network: t.network,
                create: t.create,
                start: t.start,
                probe: t_before_probe.elapsed(),
            },
            sandbox: None,
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
    /// `kill -9`): its output and exit are watched again, and it must still accept a
    /// connection on its port within [`ADOPT_PROBE`]. No cold start: it serves at once.
    pub async fn adopt(&self, id: &str) -> Result<Running, StartError> {
        let sandbox = Sandbox::adopt(&self.runtime, id, &self.dir(id), log_sink(id))?;
        let att = crate::runtime::network::Attachment {
            id: id.to_string(),
            netns: NetConfig::netns_path(id),
            ip: None,
        };
        let dialer = Arc::new(
            self.net
                .dialer(&att, self.spec.port)
                .map_err(StartError::Dialer)?,
        );
        let mut exit = sandbox.exit();
        let alive = tokio::time::timeout(ADOPT_PROBE, async {
            loop {
                if let Some(status) = *exit.borrow_and_update() {
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
            if let Err(stop_err) = stop_container(self.runtime.as_ref(), id, KILL_GRACE).await {
                warn!(
                    instance = id,
                    "stopping an instance that could not be adopted: {stop_err}"
                );
            }
            self.teardown(id, Some(sandbox)).await;
            return Err(e);
        }
        info!(instance = id, "adopted a running instance");
        Ok(Running {
            id: id.to_string(),
            endpoint: self.endpoint(id, &dialer),
            dialer: Some(dialer),
            exit: sandbox.exit(),
            startup: Duration::ZERO,
            phases: Phases::default(),
            sandbox: Some(Box::new(sandbox)),
        })
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
        let stopped = match stop_container(self.runtime.as_ref(), &running.id, grace).await {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(instance = %running.id, "stopping: {e}");
                None
            }
        };
        self.teardown(&running.id, running.sandbox.take().map(|b| *b))
            .await;
        stopped
    }

    /// Removes container, network and files of `id`; safe on partial state.
    pub async fn teardown(&self, id: &str, sandbox: Option<Sandbox>) {
        let sandbox = sandbox.unwrap_or_else(|| Sandbox::new(id));
        sandbox.remove(self.runtime.as_ref()).await;
        sandbox::release(&self.net, &self.rootfs, id, &self.dir(id)).await;
    }
}

/// How long an adopted instance has to accept a connection again.
const ADOPT_PROBE: Duration = Duration::from_secs(5);

/// Where an instance's output lines go: the log, tagged with the instance.
fn log_sink(id: &str) -> Sink {
    let id = id.to_string();
    Arc::new(
        move |stream, line| info!(target: "runlet::container", instance = %id, stream, "{line}"),
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
        }
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
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
}
