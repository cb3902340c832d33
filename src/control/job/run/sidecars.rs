//! An attempt with sidecars (Cloud Run's sidecars in jobs): the in-memory volumes its
//! containers share (one tmpfs each, under the attempt's directory), the sidecars' containers
//! (`ATTEMPT-sN`, joining the main container's network namespace: they reach each other on
//! `localhost`), and the start-up in dependency order: a container starts once those it
//! depends on have started and passed their startup probes (a sidecar without one has
//! started once it runs).
//!
//! How the attempt ends is [`super::watch_attempt`]'s: the main container's exit ends the
//! task and decides its result; sidecars still running then get SIGTERM, SIGKILL after the
//! grace. A sidecar that exits before is logged and does not end the task.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{Attempt, Outcome};
use crate::control::job::Ctx;
use crate::control::logs::Sink;
use crate::control::sandbox::{Plan, Sandbox, SandboxError};
use crate::control::service::probe;
use crate::control::service::sidecars::mount_volumes;
use crate::runtime::network::{Attachment, Network};
use crate::runtime::rootfs::RootFs;
use crate::runtime::{labels, ocispec, ExitStatus, Runtime};
use crate::secrets::SecretStore;
use crate::spec::container::{start_order, Container};

/// The container id of sidecar `i` (1-based, in the order given) of attempt `id`: short,
/// since the attempt's id may be near containerd's limit (see [`super::super::MAX_NAME`]).
pub fn container_id(id: &str, i: usize) -> String {
    format!("{id}-s{i}")
}

/// The ids of the sidecars of attempt `id`.
pub fn ids<R: Runtime, N: Network, F: RootFs>(ctx: &Ctx<R, N, F>, id: &str) -> Vec<String> {
    (1..=ctx.spec.sidecars.containers.len())
        .map(|i| container_id(id, i))
        .collect()
}

/// Whether attempts of this job take the sidecar path (sidecars, or shared volumes).
pub fn applies<R: Runtime, N: Network, F: RootFs>(ctx: &Ctx<R, N, F>) -> bool {
    !ctx.spec.sidecars.is_empty() || !ctx.spec.sidecars.volumes.is_empty()
}

/// What the caller made of the main container, for the sidecars to share.
pub struct Main<'a> {
    pub plan: Plan<'a>,
    pub sink_of: &'a (dyn Fn(&str) -> Sink + Send + Sync),
}

/// Creates the main container (with the shared volumes) and the sidecars, then starts them
/// in dependency order. `boxes` receives each sidecar's sandbox as it is made (the caller
/// removes them whatever happens).
pub async fn create_and_start<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    which: &Attempt<'_>,
    main: Main<'_>,
    sandbox: &mut Sandbox,
    boxes: &mut Vec<Sandbox>,
    mut cancel: watch::Receiver<bool>,
) -> Result<Option<Outcome>, SandboxError> {
    let spec = &ctx.spec;
    let containers = spec.containers();
    let Main { mut plan, sink_of } = main;
    let dir = plan.dir.to_path_buf();
    std::fs::create_dir_all(&dir).map_err(crate::control::sandbox::files(&dir))?;
    crate::control::owner::record(&dir).map_err(crate::control::sandbox::files(&dir))?;
    let shared = mount_volumes(&ctx.rootfs, &dir, &spec.sidecars.volumes)
        .await
        .map_err(crate::control::sandbox::files(&dir))?;
    let shared_of = |c: &Container| -> Vec<(String, String)> {
        c.mounts
            .iter()
            .filter_map(|m| shared.get(&m.volume).map(|h| (m.path.clone(), h.clone())))
            .collect()
    };
    plan.shared = shared_of(&containers[0]);
    let base_labels = plan.labels.clone();
    let labels_of = |name: &str| {
        let mut l = base_labels.clone();
        l.insert(labels::CONTAINER.to_string(), name.to_string());
        l
    };
    plan.labels = labels_of(&containers[0].name);
    let att = sandbox
        .create(&ctx.runtime, &ctx.net, &ctx.rootfs, plan)
        .await?;
    for (i, (c, img)) in containers[1..].iter().zip(&ctx.sidecars).enumerate() {
        let secrets = crate::secrets::resolve(&c.secrets, &SecretStore::new(&ctx.state_dir))
            .map_err(SandboxError::Secrets)?;
        let env = ocispec::env(
            img.image.config.env.as_deref().unwrap_or_default(),
            &[c.env.as_slice(), &secrets.env].concat(),
            &spec.contract_env(which.execution, which.index, which.attempt),
        );
        let sdir = dir.join("containers").join(&c.name);
        let plan = Plan {
            dir: &sdir,
            image: &img.image,
            args: img.argv.clone(),
            env,
            user: img.user.clone(),
            memory_bytes: c.memory_bytes,
            cpu: c.cpu,
            tmpfs: vec![],
            shared: shared_of(c),
            join: Some(att.clone()),
            files: vec![],
            secret_dirs: secrets.dirs,
            labels: labels_of(&c.name),
            sink: sink_of(&c.name),
            extra_hosts: String::new(),
            runtime_binary: None,
        };
        let mut sb = Sandbox::new(&container_id(which.id, i + 1));
        let made = sb.create(&ctx.runtime, &ctx.net, &ctx.rootfs, plan).await;
        boxes.push(sb);
        made?;
    }
    // Checked when the spec was made; one wave of everything if not.
    let waves = start_order(&containers).unwrap_or_else(|_| vec![(0..containers.len()).collect()]);
    let deadline = tokio::time::Instant::now() + spec.task_timeout;
    for wave in waves {
        if *cancel.borrow_and_update() {
            return Ok(Some(Outcome::Cancelled(None)));
        }
        for &i in &wave {
            if i == 0 {
                sandbox.start(ctx.runtime.as_ref()).await?;
            } else {
                boxes[i - 1].start(ctx.runtime.as_ref()).await?;
            }
            info!(container = %containers[i].name, "container started");
        }
        let probes = wave.iter().filter(|&&i| i > 0).filter_map(|&i| {
            let p = containers[i].startup_probe.as_ref()?;
            Some(startup(
                ctx,
                &att,
                &containers[i].name,
                p,
                boxes[i - 1].exit(),
                deadline,
            ))
        });
        if let Err(why) = futures::future::try_join_all(probes).await {
            return Ok(Some(Outcome::RuntimeError(why)));
        }
    }
    Ok(None)
}

/// A sidecar's startup probe, until it passes, fails its threshold, the sidecar exits or
/// the task's time is up; the reason on failure.
async fn startup<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    att: &Attachment,
    name: &str,
    p: &probe::Probe,
    mut exit: watch::Receiver<Option<ExitStatus>>,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let dialer = ctx
        .net
        .dialer(att, 0)
        .map_err(|e| format!("sidecar {name}: reaching its network namespace: {e}"))?;
    let mut next = tokio::time::Instant::now() + p.initial_delay;
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(deadline)) => {}
            _ = exit.changed() => {}
        }
        if let Some(status) = *exit.borrow_and_update() {
            return Err(format!(
                "sidecar {name} exited ({status}) before its startup probe passed"
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "sidecar {name}: the task timeout came before its startup probe passed"
            ));
        }
        next = tokio::time::Instant::now() + p.period;
        match probe::check(p, &dialer).await {
            Ok(()) => {
                info!(container = %name, "startup probe passed");
                return Ok(());
            }
            Err(e) => {
                failures += 1;
                let e = crate::util::error_chain(&e);
                info!(container = %name, "startup probe failed ({failures}/{}): {e}", p.failure_threshold);
                if failures >= p.failure_threshold {
                    return Err(format!(
                        "sidecar {name} failed its startup probe {failures} times: {e}"
                    ));
                }
            }
        }
    }
}

/// Logs each sidecar's exit while the main container runs (a sidecar's end does not end
/// the task); stops when the returned guard is dropped.
pub fn log_exits(names: Vec<(String, watch::Receiver<Option<ExitStatus>>)>) -> Arc<()> {
    let guard = Arc::new(());
    let weak = Arc::downgrade(&guard);
    for (name, mut rx) in names {
        let weak = weak.clone();
        tokio::spawn(async move {
            while weak.strong_count() > 0 {
                if let Some(status) = *rx.borrow_and_update() {
                    if weak.strong_count() > 0 {
                        warn!(container = %name, "sidecar {name} exited ({status}) before the main container; the task goes on");
                    }
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    guard
}

/// The labels every container of an attempt carries.
pub fn attempt_labels(job: &str, which: &Attempt<'_>) -> HashMap<String, String> {
    let mut lbl = HashMap::new();
    lbl.insert(labels::JOB.to_string(), job.to_string());
    lbl.insert(labels::EXECUTION.to_string(), which.execution.to_string());
    lbl.insert(labels::TASK_INDEX.to_string(), which.index.to_string());
    lbl.insert(labels::TASK_ATTEMPT.to_string(), which.attempt.to_string());
    lbl
}
