//! A revision the daemon runs: its first instance started (the check that the revision can
//! serve, as a Cloud Run deployment makes), its service controller, and the ingress route
//! that leads to it. [`RevisionRun::retire`] ends it after traffic has moved on: requests
//! already admitted or waiting finish, then every instance drains and stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::control::autoscale::Policy;
use crate::control::service::instance::Ctx;
use crate::control::service::sidecars::SidecarImage;
use crate::control::{stop_container, KILL_GRACE};
use crate::image::registry::RegistryError;
use crate::ingress::{Demand, IngressConfig, Route, Snapshot};
use crate::metrics::Metrics;
use crate::runtime::containerd::Containerd;
use crate::runtime::network::NetConfig;
use crate::runtime::rootfs::MemoryFs;
use crate::runtime::RuntimeError;
use crate::spec::ServiceSpec;
use crate::util::Chain;

/// How long a request may wait for capacity (contract LIFE-3).
const HOLD: Duration = Duration::from_secs(10);

/// What every revision the daemon runs shares.
#[derive(Clone)]
pub struct Host {
    pub runtime: Arc<Containerd>,
    pub net: NetConfig,
    pub state_dir: std::path::PathBuf,
    pub metrics: Arc<Metrics>,
    /// The services as `/etc/hosts` lines for new instances (set by `Daemon::load`).
    pub peers: Option<watch::Receiver<Arc<str>>>,
    /// The request body limit for services served over HTTP/1 (`--max-request-body-size`).
    pub max_body: Option<u64>,
    /// When an image not in the store is pulled (`runlet daemon --pull`), and how
    /// registries are reached.
    pub pull: crate::image::registry::PullPolicy,
    pub registry: crate::image::registry::RegistryOptions,
}

impl Host {
    /// The image `name`, pulled first when `--pull` says so (each layer logged).
    pub async fn image(
        &self,
        name: &str,
    ) -> Result<crate::image::ImageInfo, crate::image::registry::RegistryError> {
        self.runtime
            .resolve_or_pull(
                name,
                self.pull,
                &self.registry,
                &crate::image::registry::LogPullProgress { image: name },
                &CancellationToken::new(),
            )
            .await
    }
}

/// What an operation says when image `image` (`of`: which container, or empty) cannot be
/// had: not in the store (and not pulled), or the pull's error, which names the registry
/// and carries its answer.
pub(super) fn image_failure(image: &str, of: &str, e: &RegistryError) -> String {
    match e {
        RegistryError::Store(RuntimeError::ImageNotFound { .. }) => format!(
            "Image '{image}'{of} not found: load it first (runlet image load FILE) or let the daemon pull it (--pull)."
        ),
        RegistryError::Store(_) => format!("Image '{image}'{of} could not be read: {}", Chain(e)),
        _ => format!("Image '{image}'{of} could not be pulled: {}", Chain(e)),
    }
}

/// Why a revision did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStarted {
    /// It cannot run: the message the operation and the service's condition carry.
    Failed(String),
    /// The daemon is stopping: the first instance was stopped and removed before it was
    /// ready; the rollout is for the restarted daemon to do.
    Stopping,
}

impl From<String> for NotStarted {
    fn from(m: String) -> Self {
        NotStarted::Failed(m)
    }
}

/// A running revision.
pub struct RevisionRun {
    pub revision: String,
    /// Where the ingress sends this revision's requests.
    pub route: Arc<Route>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RevisionRun {
    /// Resolves every container's image, starts the first instance and the controller.
    /// Instances in `adopt` (left running by this daemon before a restart) are taken over
    /// first; only when none answers is a first instance started. `stopping` cancelled
    /// while that instance starts stops and removes it ([`NotStarted::Stopping`]): a
    /// start-up may take minutes, a shutdown must not wait for it.
    pub async fn start(
        host: &Host,
        spec: ServiceSpec,
        identity: crate::metadata::Identity,
        adopt: Vec<String>,
        stopping: &CancellationToken,
    ) -> Result<RevisionRun, NotStarted> {
        let (image, user) = resolve(host, &spec.image, None).await?;
        let mut sidecar_images = Vec::new();
        for c in &spec.sidecars.containers {
            let (image, user) = resolve(host, &c.image, Some(&c.name)).await?;
            sidecar_images.push(SidecarImage { image, user });
        }
        let spec = Arc::new(spec);
        let span = tracing::info_span!("service", service = %spec.name, revision = %spec.revision);
        let ctx = Arc::new(Ctx {
            runtime: host.runtime.clone(),
            // Its instances are the service's project, region and service account on the
            // metadata server.
            net: host.net.with_identity(identity),
            rootfs: MemoryFs,
            spec: spec.clone(),
            image,
            user,
            state_dir: host.state_dir.clone(),
            peers: host.peers.clone(),
            sidecar_images,
        });
        let mut initial = Vec::new();
        for id in adopt {
            match ctx.adopt(&id).instrument(span.clone()).await {
                Ok(r) => initial.push(r),
                Err(e) => {
                    info!(parent: &span, instance = %id, "not adopted, removed: {}", Chain(&e))
                }
            }
        }
        if initial.is_empty() {
            let first_id = format!("{}-{}", spec.revision, crate::util::random_suffix(5));
            info!(parent: &span, instance = %first_id, image = %spec.image, "starting the first instance");
            let launch = ctx.launch(&first_id).instrument(span.clone());
            let first = tokio::select! {
                r = launch => r
                    .map_err(|e| format!("The first instance failed to start: {}", Chain(&e)))?,
                () = stopping.cancelled() => {
                    // The launch is dropped where it was: the stop sequence and the
                    // removal take whatever of the instance exists.
                    info!(parent: &span, instance = %first_id, "daemon stopping: the first instance is stopped and removed");
                    if let Err(e) = stop_container(host.runtime.as_ref(), &first_id, KILL_GRACE).await {
                        warn!(parent: &span, instance = %first_id, "stopping: {e}");
                    }
                    ctx.teardown(&first_id, None).await;
                    return Err(NotStarted::Stopping);
                }
            };
            initial.push(first);
        }
        let demand = Arc::new(Demand::default());
        let (snap_tx, snap_rx) = watch::channel(Snapshot::default());
        let route = Arc::new(Route {
            cfg: IngressConfig {
                service: spec.name.clone(),
                concurrency: spec.concurrency,
                hold: HOLD,
                timeout: spec.timeout,
                max_queue: 10_000,
                max_body: crate::ingress::body_limit(spec.use_http2, host.max_body),
            },
            snapshot: snap_rx,
            demand: demand.clone(),
        });
        let policy = Policy {
            min_instances: spec.min_instances,
            max_instances: spec.max_instances,
            concurrency: spec.concurrency,
            idle_timeout: spec.idle_timeout,
        };
        let (stop, stop_rx) = watch::channel(false);
        let metrics = host.metrics.clone();
        let task = tokio::spawn(
            async move {
                crate::control::service::run(
                    ctx,
                    policy,
                    demand,
                    snap_tx,
                    metrics,
                    initial,
                    stopped(stop_rx),
                )
                .await
            }
            .instrument(span),
        );
        Ok(RevisionRun {
            revision: spec.revision.clone(),
            route,
            stop,
            task,
        })
    }

    /// Ends the revision once no request waits on its route any more (bounded by the hold
    /// time); its controller drains every instance (in-flight requests finish), then runs
    /// the stop sequence (SIGTERM, SIGKILL after 10 s).
    pub async fn retire(self) {
        let waited = tokio::time::timeout(HOLD + Duration::from_secs(1), async {
            while self.route.demand.queued.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_err() {
            info!(revision = %self.revision, "requests still waiting on a retired revision");
        }
        self.stop.send_replace(true);
        let _ = self.task.await;
        info!(revision = %self.revision, "revision retired: its instances are stopped");
    }
}

/// The image of a container (`sidecar`: its name, for a sidecar), pulled first when the
/// daemon's `--pull` says so, and the user it runs as.
async fn resolve(
    host: &Host,
    image: &str,
    sidecar: Option<&str>,
) -> Result<(crate::image::ImageInfo, crate::runtime::passwd::ImageUser), NotStarted> {
    let of = sidecar.map_or(String::new(), |n| format!(" (container {n})"));
    let info = host
        .image(image)
        .await
        .map_err(|e| image_failure(image, &of, &e))?;
    let user = host
        .runtime
        .image_user(&info)
        .await
        .map_err(|e| format!("Image '{image}'{of}: {}", Chain(&e)))?;
    Ok((info, user))
}

/// Resolves once `rx` turns true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
