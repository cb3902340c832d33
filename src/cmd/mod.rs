//! The commands, one thin file each (youki's `commands/`): each checks its input once,
//! before containerd is reached, then calls the library. anyhow is allowed here (the edge).
//!
//! - [`serve`]: `runlet serve`, a Cloud Run service in the foreground.
//! - [`job`]: `runlet job execute` and `runlet job executions list|describe`.
//! - [`image`]: `runlet image load|ls|rm`.
//! - [`daemon`]: `runlet daemon`, the long-lived runtime serving the Admin API.
//! - [`setup`]: `runlet setup gcloud`, pointing gcloud at the daemon.
//! - The daemon's clients: [`deploy`], [`services`] (`list|describe|delete`),
//!   [`revisions`] (`list`) and [`status`]; [`api`] reaches the daemon from their flags, and
//!   [`print`] holds what they print (gcloud's shapes).
//!
//! What the commands share: reaching containerd ([`with_containerd`]), the metrics address
//! ([`metrics_listen`]), writing to stdout ([`print()`]), and a revision's flags as given
//! ([`service_flags`], for `serve` and `deploy`).

pub mod api;
pub mod daemon;
pub mod deploy;
pub mod image;
pub mod job;
pub mod jobs;
pub mod print;
pub mod pull_bars;
pub mod revisions;
pub mod secrets;
pub mod serve;
pub mod services;
pub mod setup;
pub mod status;

use std::future::Future;
use std::io::Write;

use anyhow::Result;

use runlet::cli::{GlobalArgs, RevisionArgs};
use runlet::metrics::MetricsListen;
use runlet::runtime::containerd::Containerd;
use runlet::runtime::embedded::{self, Connection};
use runlet::spec::container_flags::ContainerFlags;
use runlet::spec::flags::ServiceFlags;
use runlet::spec::{EnvChanges, EnvFile, SpecError};

/// Connects to containerd (starting a private one when allowed and needed), runs `f`, and
/// stops the private containerd afterwards.
pub async fn with_containerd<F, Fut, T>(global: &GlobalArgs, f: F) -> Result<T>
where
    F: FnOnce(Containerd) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    // Before anything is written to it (the private containerd's files included).
    runlet::state_dir::prepare(&global.state_dir).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "preparing the state dir {} (mode 0700)",
            global.state_dir.display()
        ))
    })?;
    let Connection { client, embedded } = embedded::connect_or_start(
        &global.containerd_address,
        &global.state_dir,
        !global.no_embedded_containerd,
    )
    .await?;
    let result = f(client.clone()).await;
    if let Some(e) = embedded {
        e.stop(&client).await;
    }
    result
}

/// `--metrics-listen`: HOST:PORT, `off`, or not given (the default address).
pub fn metrics_listen(flag: Option<&str>) -> Result<MetricsListen, runlet::spec::SpecError> {
    match flag {
        None => Ok(MetricsListen::Default),
        Some("off") => Ok(MetricsListen::Off),
        Some(text) => text
            .parse()
            .map(MetricsListen::Given)
            .map_err(|_| runlet::spec::SpecError {
                field: "--metrics-listen",
                detail: format!("{text:?} is not HOST:PORT or off"),
            }),
    }
}

/// The revision's flags of `runlet serve` and `runlet deploy`, with their `--image` and
/// `--container` groups, as the spec reads them (each checked by [`ServiceFlags::check`]);
/// the `--env-vars-file`s are read here (a file that cannot be read or is not a YAML map of
/// strings is refused naming the flag, exit 64).
pub fn service_flags(
    image: &str,
    a: &RevisionArgs,
    containers: &[ContainerFlags],
) -> Result<ServiceFlags, SpecError> {
    let containers = group_flags(containers)?;
    Ok(ServiceFlags {
        image: image.to_string(),
        port: a.port,
        set_env_vars: a.container.set_env_vars.clone(),
        env: EnvChanges {
            file: env_file(a.container.env_vars_file.as_deref())?,
            update: a.update_env_vars.clone(),
            remove: a.remove_env_vars.clone(),
            clear: a.clear_env_vars,
            current: Vec::new(),
        },
        command: a.container.command.clone(),
        args: a.container.args.clone(),
        memory: a.memory.clone(),
        cpu: a.cpu.clone(),
        concurrency: a.concurrency,
        timeout: a.timeout.clone(),
        min_instances: a.min_instances,
        max_instances: a.max_instances,
        startup_probe: a.startup_probe.clone(),
        liveness_probe: a.liveness_probe.clone(),
        add_volume: a.add_volume.clone(),
        add_volume_mount: a.add_volume_mount.clone(),
        use_http2: a.use_http2,
        cpu_throttling: if a.cpu_throttling {
            Some(true)
        } else if a.no_cpu_throttling {
            Some(false)
        } else {
            None
        },
        containers,
        secrets: a.container.secrets.flags(),
        execution_environment: a.execution_environment.clone(),
    })
}

/// The `--container` groups with each one's `--env-vars-file` read.
pub fn group_flags(groups: &[ContainerFlags]) -> Result<Vec<ContainerFlags>, SpecError> {
    let mut groups = groups.to_vec();
    for g in &mut groups {
        g.env.file = env_file(g.env_vars_file.as_deref())?;
    }
    Ok(groups)
}

/// Reads `--env-vars-file` (gcloud's YAML map), if given.
pub fn env_file(path: Option<&std::path::Path>) -> Result<Option<EnvFile>, SpecError> {
    let Some(path) = path else { return Ok(None) };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        field: "--env-vars-file",
        detail: format!("cannot read {shown}: {e}"),
    })?;
    Ok(Some(EnvFile {
        vars: runlet::spec::parse_env_file(&shown, &text)?,
        path: shown,
    }))
}

/// Refuses (exit 64, the secret named) references to what the store does not hold, before
/// anything is started; the values read are dropped at once.
pub fn check_secrets(
    b: &runlet::spec::secrets::SecretBindings,
    state_dir: &std::path::Path,
) -> Result<()> {
    let store = runlet::secrets::SecretStore::new(state_dir);
    match runlet::secrets::resolve::check(b, &store) {
        Ok(()) => Ok(()),
        Err(e)
            if e.is_not_found()
                || matches!(e, runlet::secrets::resolve::ResolveError::NotText { .. }) =>
        {
            Err(runlet::spec::SpecError {
                field: "--set-secrets",
                detail: e.to_string(),
            }
            .into())
        }
        Err(e) => Err(anyhow::Error::new(e).context("reading the secret store")),
    }
}

/// Writes to stdout, ignoring a closed pipe (`| head`).
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Resolves at Ctrl-C or SIGTERM (logging which).
pub async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted (Ctrl-C): shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
