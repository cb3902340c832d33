//! `runlet serve`: the flags (or a service.yaml, `-f`) become a [`ServiceSpec`] (bad input
//! exits 64 before containerd is reached), then the first instance starts, the ingress and the service controller run
//! until Ctrl-C or SIGTERM, and everything of the service is removed.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tracing::info;

use runlet::cli::{GlobalArgs, ServeArgs};
use runlet::control::autoscale::Policy;
use runlet::control::service::instance::Ctx;
use runlet::control::service::sidecars::SidecarImage;
use runlet::ingress::{self, Demand, IngressConfig, Route, RouteTable, Snapshot};
use runlet::metrics::{Metrics, MetricsListen};
use runlet::runtime::containerd::Containerd;
use runlet::runtime::network::NetConfig;
use runlet::runtime::rootfs::MemoryFs;
use runlet::spec::{self, service_yaml, service_yaml_to_v2, ServiceSpec, SpecError};

use super::{metrics_listen, wait_for_signal, with_containerd};

/// `runlet serve` with its input checked.
struct Input {
    spec: ServiceSpec,
    metrics: MetricsListen,
    /// `--max-request-body-size`.
    max_body: Option<u64>,
    pull: runlet::cli::registry::PullArgs,
    /// `--project`, `--region`, `--service-account`, `--token-command`.
    meta: runlet::metadata::host::MetaConfig,
}

pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> Result<i32> {
    let (spec, account) = match &args.file {
        Some(file) => from_file(args, file)?,
        None => (service_spec(args)?, None),
    };
    // The file's serviceAccountName is who instances are, unless --service-account says.
    let mut identity = args.identity.clone();
    if identity.service_account.is_none() {
        identity.service_account = account;
    }
    let input = Input {
        spec,
        metrics: metrics_listen(args.metrics_listen.as_deref())?,
        max_body: spec::body_size("--max-request-body-size", &args.max_request_body_size)?,
        pull: args.pull.clone(),
        meta: identity.config(),
    };
    // Every container's (the ingress container's are `spec.secrets`).
    for c in input.spec.containers() {
        super::check_secrets(&c.secrets, &global.state_dir)?;
    }
    if let Some(p) = &args.identity.project {
        runlet::log_format::set_project(p);
    }
    if input.spec.execution_environment == spec::ExecutionEnvironment::Gen1 {
        // Before anything starts: a missing runsc is named at once, not per instance.
        runlet::runtime::gvisor::install(&global.state_dir)?;
    }
    runlet::fdlimit::raise();
    let state_dir = global.state_dir.clone();
    with_containerd(global, |c| serve(c, input, state_dir)).await?;
    Ok(0)
}

/// `runlet serve -f service.yaml`: the service from the file (mapped as `runlet services
/// replace` maps it, then resolved as the daemon resolves a template), and its
/// `serviceAccountName`. The flags that describe a revision are refused beside the file:
/// `gcloud run services replace` takes the file alone, and a flag quietly winning over a
/// file the user may also send to Cloud Run would make the two run different services.
fn from_file(a: &ServeArgs, file: &std::path::Path) -> Result<(ServiceSpec, Option<String>)> {
    if let Some(flag) = revision_flags_given(a).first() {
        return Err(SpecError {
            field: flag,
            detail: "cannot be given with -f: the service.yaml describes the revision; edit the file (flags allowed with -f: --listen, --idle-timeout, --startup-timeout, --max-request-body-size, --metrics-listen, the pull and identity flags)".into(),
        }
        .into());
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let m = service_yaml_to_v2::service(&service_yaml::parse(&text)?)?;
    warn_no_local_effect(&m.no_local_effect);
    let listen = a.listen.parse().map_err(|_| SpecError {
        field: "--listen",
        detail: format!("{:?} is not HOST:PORT (e.g. 127.0.0.1:8080)", a.listen),
    })?;
    let mut spec = service_yaml_to_v2::service_spec(&m, listen)?;
    spec.idle_timeout = spec::duration_in("--idle-timeout", &a.idle_timeout, (0, 900))?;
    spec.startup_timeout = spec::duration_in("--startup-timeout", &a.startup_timeout, (1, 240))?;
    let account = m
        .service
        .template
        .map(|t| t.service_account)
        .filter(|s| !s.is_empty());
    Ok((spec, account))
}

/// Lists, once, the keys of a service.yaml accepted with no effect on one machine.
pub fn warn_no_local_effect(keys: &[String]) {
    if !keys.is_empty() {
        eprintln!(
            "Warning: these settings configure Google Cloud's infrastructure and have no effect on runlet: {}",
            keys.join(", ")
        );
    }
}

/// The revision flags given on the command line (refused beside `-f`).
fn revision_flags_given(a: &ServeArgs) -> Vec<&'static str> {
    let r = &a.revision;
    let c = &r.container;
    [
        ("--image", a.image.is_some()),
        (
            "--container",
            !a.containers.is_empty() || a.container.is_some(),
        ),
        ("--service", a.service.is_some()),
        ("--port", r.port.is_some()),
        ("--set-env-vars", !c.set_env_vars.is_empty()),
        ("--env-vars-file", c.env_vars_file.is_some()),
        ("--update-env-vars", !r.update_env_vars.is_empty()),
        ("--remove-env-vars", !r.remove_env_vars.is_empty()),
        ("--clear-env-vars", r.clear_env_vars),
        ("--command", c.command.is_some()),
        ("--args", c.args.is_some()),
        ("--set-secrets", !c.secrets.set_secrets.is_empty()),
        ("--update-secrets", !c.secrets.update_secrets.is_empty()),
        ("--remove-secrets", !c.secrets.remove_secrets.is_empty()),
        ("--clear-secrets", c.secrets.clear_secrets),
        ("--memory", r.memory.is_some()),
        ("--cpu", r.cpu.is_some()),
        ("--concurrency", r.concurrency.is_some()),
        ("--timeout", r.timeout.is_some()),
        ("--min-instances", r.min_instances.is_some()),
        ("--max-instances", r.max_instances.is_some()),
        ("--startup-probe", r.startup_probe.is_some()),
        ("--liveness-probe", r.liveness_probe.is_some()),
        ("--add-volume", !r.add_volume.is_empty()),
        ("--add-volume-mount", !r.add_volume_mount.is_empty()),
        ("--use-http2", r.use_http2),
        ("--cpu-throttling", r.cpu_throttling),
        ("--no-cpu-throttling", r.no_cpu_throttling),
    ]
    .into_iter()
    .filter(|(_, given)| *given)
    .map(|(f, _)| f)
    .collect()
}

fn service_spec(a: &ServeArgs) -> Result<ServiceSpec, SpecError> {
    if a.image.is_none() && a.containers.is_empty() {
        return Err(SpecError {
            field: "--image",
            detail: "is required (or --container NAME --image IMAGE ...)".into(),
        });
    }
    let flags = super::service_flags(
        a.image.as_deref().unwrap_or_default(),
        &a.revision,
        &a.containers,
    )?;
    let flags = flags.check()?;
    let name = match &a.service {
        Some(n) => {
            spec::check_name("--service", n, 49)?;
            n.clone()
        }
        None => spec::name_from_image(&flags.image_ref),
    };
    let listen = a.listen.parse().map_err(|_| SpecError {
        field: "--listen",
        detail: format!("{:?} is not HOST:PORT (e.g. 127.0.0.1:8080)", a.listen),
    })?;
    let idle = spec::duration_in("--idle-timeout", &a.idle_timeout, (0, 900))?;
    let startup = spec::duration_in("--startup-timeout", &a.startup_timeout, (1, 240))?;
    let mut spec = flags.service_spec(&name, &spec::revision_name(&name), listen);
    spec.idle_timeout = idle;
    spec.startup_timeout = startup;
    Ok(spec)
}

async fn serve(c: Containerd, input: Input, state_dir: PathBuf) -> Result<()> {
    let Input {
        spec,
        metrics: metrics_addr,
        max_body,
        meta,
        pull,
    } = input;
    let net = NetConfig::new();
    net.check()?;
    // Isolation rules and the metadata server, before any instance (dropped last).
    let (net, _sandboxing) = runlet::metadata::host::secure(net, meta, &[])
        .await
        .context("setting up network isolation and the metadata server")?;
    let image = super::image::resolve_or_pull(&c, &spec.image, &pull).await?;
    let user = c.image_user(&image).await?;
    let mut sidecar_images = Vec::new();
    for s in &spec.sidecars.containers {
        let image = super::image::resolve_or_pull(&c, &s.image, &pull).await?;
        let user = c.image_user(&image).await?;
        sidecar_images.push(SidecarImage { image, user });
    }
    let listeners = ingress::bind(&[spec.listen], ingress::default_workers())
        .map_err(|e| e.source)
        .with_context(|| format!("cannot listen on {} (--listen)", spec.listen))?;
    let metrics = Metrics::new();
    runlet::metrics::serve_at(metrics_addr, metrics.clone()).await?;
    let spec = Arc::new(spec);
    let ctx = Arc::new(Ctx {
        runtime: Arc::new(c.clone()),
        net,
        rootfs: MemoryFs,
        spec: spec.clone(),
        image,
        user,
        state_dir,
        peers: None,
        sidecar_images,
    });
    runlet::control::service::clean_leftovers(&ctx).await;

    let service_span =
        tracing::info_span!("service", service = %spec.name, revision = %spec.revision);
    let _enter = service_span.enter();
    // Like a Cloud Run deployment, check the revision can start before serving.
    let first_id = format!("{}-{}", spec.revision, runlet::util::random_suffix(5));
    info!(instance = %first_id, image = %spec.image, "starting the first instance");
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let first = tokio::select! {
        r = ctx.launch(&first_id) => r.with_context(|| format!("revision {} failed to start", spec.revision))?,
        _ = changed(stop_rx.clone()) => { info!("interrupted before the first instance was ready"); ctx.teardown(&first_id, None).await; return Ok(()) }
    };
    println!(
        "Service [{}] revision [{}] is serving at http://{}",
        spec.name, spec.revision, spec.listen
    );
    let _ = std::io::stdout().flush();

    let demand = Arc::new(Demand::default());
    let (snap_tx, snap_rx) = watch::channel(Snapshot::default());
    let cfg = IngressConfig {
        service: spec.name.clone(),
        concurrency: spec.concurrency,
        hold: Duration::from_secs(10),
        timeout: spec.timeout,
        max_queue: 10_000,
        max_body: ingress::body_limit(spec.use_http2, max_body),
    };
    let policy = Policy {
        min_instances: spec.min_instances,
        max_instances: spec.max_instances,
        concurrency: spec.concurrency,
        idle_timeout: spec.idle_timeout,
    };
    // One service: every request takes its route, whatever its Host. The sender stays
    // for the ingress's life (the table never changes).
    let route = Arc::new(Route {
        cfg,
        snapshot: snap_rx,
        demand: demand.clone(),
    });
    let (_routes_tx, routes) = watch::channel(Arc::new(RouteTable::single(route)));
    let ingress = ingress::start(
        listeners,
        routes,
        metrics.clone(),
        stop_rx.clone(),
        service_span.clone(),
    )
    .context("cannot start the ingress threads")?;
    runlet::control::service::run(
        ctx.clone(),
        policy,
        demand,
        snap_tx,
        metrics,
        vec![first],
        changed(stop_rx),
    )
    .await;
    ingress.join().await;
    signals.abort();
    info!(
        "stopped; nothing of service {} is left in containerd",
        spec.name
    );
    Ok(())
}

/// Resolves once `rx` turns true (never, if its sender is gone first).
async fn changed(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
