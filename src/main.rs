//! The `runlet` command: flags → typed spec → run. Bad input exits 64 with the field named.

mod job_cmd;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::sync::watch;
use tracing::info;

use runlet::cli::{Cli, Command, ImageCommand, ServeArgs};
use runlet::control::autoscale::Policy;
use runlet::control::instance::Ctx;
use runlet::image::archive::{self, Progress};
use runlet::image::reference;
use runlet::ingress::{self, Demand, IngressConfig, Snapshot};
use runlet::metrics::Metrics;
use runlet::runtime::containerd::Containerd;
use runlet::runtime::embedded::{self, Connection};
use runlet::runtime::network::NetConfig;
use runlet::runtime::{ocispec, Runtime};
use runlet::spec::{self, probe, ServiceSpec, SpecError};

/// mimalloc rather than glibc's malloc: the data path allocates a few small buffers per
/// request (header maps, the request's task), and glibc's malloc and free were 9% of the
/// daemon's CPU under load (perf, see docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for bad input (EX_USAGE).
const EXIT_USAGE: i32 = 64;

/// An error and its causes, `: `-separated, leaving out a cause whose text the message
/// before it already ends with (many errors print their source themselves).
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if out != text && !out.ends_with(&format!(": {text}")) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("RUNLET_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runlet: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        match run(cli).await {
            Ok(code) => code,
            Err(e) => {
                let usage = e.downcast_ref::<SpecError>().is_some();
                eprintln!("runlet: error: {}", report(&e));
                if usage {
                    EXIT_USAGE
                } else {
                    1
                }
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Job(ref cmd) => {
            // Bad input is refused before containerd is reached (or started).
            job_cmd::check(cmd)?;
            let state_dir = cli.state_dir.clone();
            let mut code = 0;
            let code_ref = &mut code;
            with_containerd(&cli, |c| async move {
                *code_ref = job_cmd::run(c, cmd, &state_dir).await?;
                Ok(())
            })
            .await?;
            Ok(code)
        }
        Command::Serve(ref args) => {
            let spec = service_spec(args)?;
            with_containerd(&cli, |c| {
                serve(c, spec, cli.state_dir.clone(), args.metrics_listen.clone())
            })
            .await
            .map(|()| 0)
        }
        Command::Image(ImageCommand::Load {
            ref file,
            ref tag,
            quiet,
        }) => {
            // Everything is read and checked before containerd is touched.
            let mut progress = Printer::new(quiet);
            let plan = archive::plan_import(file, tag.as_deref(), &mut progress)?;
            progress.done();
            with_containerd(&cli, |c| async move {
                let mut progress = Printer::new(quiet);
                let names = c.import(&plan, &mut progress).await?;
                progress.done();
                for n in names {
                    println!("Loaded image: {n}");
                }
                Ok(())
            })
            .await
            .map(|()| 0)
        }
        Command::Image(ImageCommand::Ls) => with_containerd(&cli, |c| async move {
            let images = c.list_images().await?;
            println!("{:<60} {:<20} {:>10}", "IMAGE", "DIGEST", "SIZE");
            for i in images {
                let short = i
                    .digest
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect::<String>();
                println!("{:<60} sha256:{:<13} {:>10}", i.name, short, human(i.size));
            }
            Ok(())
        })
        .await
        .map(|()| 0),
        Command::Image(ImageCommand::Rm { ref images }) => {
            let names: Vec<String> = images
                .iter()
                .map(|i| reference::normalize(i))
                .collect::<Result<_, _>>()?;
            with_containerd(&cli, |c| async move {
                for n in names {
                    c.remove_image(&n).await?;
                    println!("Deleted: {n}");
                }
                Ok(())
            })
            .await
            .map(|()| 0)
        }
    }
}

/// Connects to containerd (starting a private one when allowed and needed), runs `f`, and
/// stops the private containerd afterwards.
async fn with_containerd<F, Fut>(cli: &Cli, f: F) -> Result<()>
where
    F: FnOnce(Containerd) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let Connection { client, embedded } = embedded::connect_or_start(
        &cli.containerd_address,
        &cli.state_dir,
        !cli.no_embedded_containerd,
    )
    .await?;
    let result = f(client.clone()).await;
    if let Some(e) = embedded {
        e.stop(&client).await;
    }
    result
}

fn service_spec(a: &ServeArgs) -> Result<ServiceSpec, SpecError> {
    let image = reference::normalize(&a.image).map_err(|e| SpecError {
        field: "--image",
        detail: e.to_string(),
    })?;
    let name = match &a.service {
        Some(n) => {
            spec::check_name("--service", n, 49)?;
            n.clone()
        }
        None => spec::name_from_image(&image),
    };
    let listen = a.listen.parse().map_err(|_| SpecError {
        field: "--listen",
        detail: format!("{:?} is not HOST:PORT (e.g. 127.0.0.1:8080)", a.listen),
    })?;
    if a.port == 0 {
        return Err(SpecError {
            field: "--port",
            detail: "0 is out of range: allowed 1 to 65535".into(),
        });
    }
    let timeout = spec::parse_duration("--timeout", &a.timeout)?;
    spec::in_range("--timeout", timeout.as_secs_f64(), 1.0, 3600.0)?;
    let idle = spec::parse_duration("--idle-timeout", &a.idle_timeout)?;
    spec::in_range("--idle-timeout", idle.as_secs_f64(), 0.0, 900.0)?;
    let startup = spec::parse_duration("--startup-timeout", &a.startup_timeout)?;
    spec::in_range("--startup-timeout", startup.as_secs_f64(), 1.0, 240.0)?;
    spec::in_range("--concurrency", a.concurrency, 1, 1000)?;
    spec::in_range("--max-instances", a.max_instances, 1, 1000)?;
    spec::in_range("--min-instances", a.min_instances, 0, a.max_instances)?;
    let memory = spec::memory("--memory", &a.memory)?;
    Ok(ServiceSpec {
        revision: spec::revision_name(&name),
        name,
        image,
        port: a.port,
        listen,
        env: spec::parse_env_vars(&a.set_env_vars)?,
        command: a.command.as_deref().map(spec::split_list),
        args: a.args.as_deref().map(spec::split_list),
        memory_bytes: memory,
        cpu: spec::cpu("--cpu", &a.cpu)?,
        concurrency: a.concurrency,
        timeout,
        min_instances: a.min_instances,
        max_instances: a.max_instances,
        idle_timeout: idle,
        startup_timeout: startup,
        use_http2: a.use_http2,
        cpu_throttling: a.cpu_throttling,
        volumes: spec::volumes(&a.add_volume, &a.add_volume_mount, memory)?,
        startup_probe: a
            .startup_probe
            .as_deref()
            .map(|s| probe::parse("--startup-probe", s, a.port))
            .transpose()?,
        liveness_probe: a
            .liveness_probe
            .as_deref()
            .map(|s| probe::parse("--liveness-probe", s, a.port))
            .transpose()?,
    })
}

async fn serve(
    c: Containerd,
    spec: ServiceSpec,
    state_dir: std::path::PathBuf,
    metrics_listen: String,
) -> Result<()> {
    let net = NetConfig::new();
    net.check()?;
    let image = c.resolve_image(&spec.image).await?;
    let user = image_user(&c, &image).await?;
    let listeners = ingress::bind(spec.listen, ingress::default_workers())
        .with_context(|| format!("cannot listen on {} (--listen)", spec.listen))?;
    let metrics = Metrics::new();
    if metrics_listen != "off" {
        let addr = metrics_listen.parse().map_err(|_| SpecError {
            field: "--metrics-listen",
            detail: format!("{metrics_listen:?} is not HOST:PORT or off"),
        })?;
        runlet::metrics::serve(addr, metrics.clone())
            .await
            .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
    }
    let spec = Arc::new(spec);
    let ctx = Arc::new(Ctx {
        runtime: Arc::new(c.clone()),
        net,
        spec: spec.clone(),
        image,
        user,
        state_dir,
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
    };
    let policy = Policy {
        min_instances: spec.min_instances,
        max_instances: spec.max_instances,
        concurrency: spec.concurrency,
        idle_timeout: spec.idle_timeout,
    };
    let ingress = ingress::start(
        listeners,
        cfg,
        snap_rx,
        demand.clone(),
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

/// The numeric user and group to run an image as: its `User`, numeric, or a name looked up
/// in the image's own /etc/passwd and /etc/group. Shared by services and jobs.
pub(crate) async fn image_user(
    c: &Containerd,
    image: &runlet::image::ImageInfo,
) -> Result<(u32, u32)> {
    let field = image.config.user.clone().unwrap_or_default();
    if field.is_empty() || field.split(':').all(|p| p.parse::<u32>().is_ok()) {
        return Ok(ocispec::resolve_user(&image.name, &field, None, None)?);
    }
    let files = c
        .read_image_files(image, &["/etc/passwd", "/etc/group"])
        .await?;
    let text = |i: usize| {
        files
            .get(i)
            .cloned()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    Ok(ocispec::resolve_user(
        &image.name,
        &field,
        text(0).as_deref(),
        text(1).as_deref(),
    )?)
}

async fn changed(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("interrupted (Ctrl-C): shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}

fn human(n: i64) -> String {
    let n = n as f64;
    if n >= (1 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1 << 20) as f64 {
        format!("{:.1} MiB", n / (1u64 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// Prints progress of long work to stderr: a line at most every 10% for large inputs.
struct Printer {
    quiet: bool,
    last: Option<(String, u64)>,
}

impl Printer {
    fn new(quiet: bool) -> Self {
        Printer { quiet, last: None }
    }
    fn done(&mut self) {
        self.last = None;
    }
}

impl Progress for Printer {
    fn step(&mut self, what: &str, done: u64, total: u64) {
        if self.quiet || total < (8 << 20) || total == 0 {
            return;
        }
        let pct = done.saturating_mul(100) / total;
        let bucket = pct / 10 * 10;
        let new = match &self.last {
            Some((w, b)) => w != what || *b != bucket,
            None => true,
        };
        if new {
            eprintln!(
                "{what}: {bucket:>3}% ({} of {})",
                human(done as i64),
                human(total as i64)
            );
            self.last = Some((what.to_string(), bucket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn a_cause_the_message_already_shows_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x: {source}")]
        struct Shown {
            source: std::io::Error,
        }
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Shown { source: io() });
        assert_eq!(report(&e), "cannot read x: no such file");
        let e = anyhow::Error::new(io()).context("loading image");
        assert_eq!(report(&e), "loading image: no such file");
        // Only a whole `: cause` at the end counts as shown.
        let e = anyhow::Error::new(std::io::Error::other("file")).context("no such file");
        assert_eq!(report(&e), "no such file: file");
    }
}
