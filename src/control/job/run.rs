//! Running an execution: the loop that starts attempts as the [`Scheduler`] allows and
//! records their ends, the life of one attempt's container, and recovery of what a runlet
//! that died left behind.
//!
//! An attempt: its container (a [`Sandbox`]: files dir, network namespace, FIFOs, OCI spec
//! with the ENV-J1 variables and no `PORT` (nobody waits for a port, JOB-2), in-memory root
//! fs, create, exit watcher) → start → race the exit against the task timeout and the
//! cancellation. Timeout and cancellation both run [`stop_container`] (SIGTERM, SIGKILL
//! after the grace). Then, always: [`Sandbox::remove`] (delete, FIFOs), after which the
//! outcome is reported (the next attempt may start), then [`sandbox::release`] (network,
//! root fs, files), which the execution waits for before it ends.

use crate::control::owner::{self, Verdict};
use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, info_span, warn, Instrument};

use super::record::{ExecutionRecord, ExecutionState};
use super::schedule::{Action, Outcome, Scheduler};
use super::store::{ExecutionLock, RecordStore};
use super::{container_id, execution_of, tasks_dir, Ctx, JobError, Line};
use crate::control::logs::Sink;
use crate::control::sandbox::{self, Plan, Sandbox, SandboxError};
use crate::control::stop_container;
use crate::runtime::network::Network;
use crate::runtime::rootfs::RootFs;
use crate::runtime::{labels, ocispec, Runtime};
use crate::secrets::SecretStore;

struct AttemptDone {
    index: u32,
    attempt: u32,
    outcome: Outcome,
}

/// Runs execution `name` of `ctx.spec` to its end: every task succeeded or failed, or, once
/// `cancel` resolves, every running attempt stopped and every pending task cancelled. The
/// record is saved when the execution starts and after every change; the execution's lock
/// is held until the final record is saved.
pub async fn execute<R: Runtime, N: Network, F: RootFs>(
    ctx: Arc<Ctx<R, N, F>>,
    store: &RecordStore,
    name: &str,
    parallelism: u32,
    cancel: impl Future<Output = ()>,
) -> Result<ExecutionRecord, JobError> {
    let span = info_span!("execution", job = %ctx.spec.name, execution = %name);
    let lock = store.lock(name)?;
    let rec = ExecutionRecord::new(&ctx.spec, name, parallelism, SystemTime::now());
    let sched = Scheduler::new(ctx.spec.task_count, parallelism, ctx.spec.max_retries);
    let result = run_loop(ctx, store, rec, sched, Vec::new(), cancel)
        .instrument(span)
        .await;
    finish_lock(lock, &result);
    result
}

/// Takes over execution `rec` where a runlet that died left it (the daemon, restarted),
/// holding its `lock`: attempts the record says are running are adopted (their containers
/// still run under containerd's shims: their exit is watched and recorded, retries follow
/// as usual); one whose container is gone or cannot be adopted counts as a failed attempt.
/// Pending tasks start as the parallelism allows. Runs to the end like [`execute`].
pub async fn resume<R: Runtime, N: Network, F: RootFs>(
    ctx: Arc<Ctx<R, N, F>>,
    store: &RecordStore,
    rec: ExecutionRecord,
    lock: ExecutionLock,
    cancel: impl Future<Output = ()>,
) -> Result<ExecutionRecord, JobError> {
    let span = info_span!("execution", job = %ctx.spec.name, execution = %rec.name());
    let phases = rec.phases();
    let adopt: Vec<(u32, u32)> = phases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            super::schedule::TaskPhase::Running { attempt } => Some((i as u32, *attempt)),
            _ => None,
        })
        .collect();
    let sched = Scheduler::resume(rec.status.parallelism, ctx.spec.max_retries, phases);
    info!(execution = %rec.name(), adopting = adopt.len(), "resuming the execution");
    let result = run_loop(ctx, store, rec, sched, adopt, cancel)
        .instrument(span)
        .await;
    finish_lock(lock, &result);
    result
}

fn finish_lock(lock: ExecutionLock, result: &Result<ExecutionRecord, JobError>) {
    match result {
        // The final record is saved: the lock file has no further use.
        Ok(_) => lock.release(),
        // Leave the record as it is; dropping the lock lets the next runlet job command
        // find the execution abandoned and clean up.
        Err(_) => drop(lock),
    }
}

/// Runs the execution `rec` starts, saving `rec` as it goes.
async fn run_loop<R: Runtime, N: Network, F: RootFs>(
    ctx: Arc<Ctx<R, N, F>>,
    store: &RecordStore,
    mut rec: ExecutionRecord,
    mut sched: Scheduler,
    adopt: Vec<(u32, u32)>,
    cancel: impl Future<Output = ()>,
) -> Result<ExecutionRecord, JobError> {
    let spec = ctx.spec.clone();
    let t0 = Instant::now();
    let parallelism = rec.status.parallelism;
    store.save(&rec).await?;
    info!(
        tasks = spec.task_count,
        parallelism,
        max_retries = spec.max_retries,
        "execution started"
    );
    let execution: Arc<str> = Arc::from(rec.name());
    let (tx, mut rx) = mpsc::unbounded_channel::<AttemptDone>();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let mut first_start: Vec<Option<Instant>> = vec![None; spec.task_count as usize];
    let mut cancelled = false;
    // Every attempt's task, which ends once its network and files are released.
    let mut attempts = JoinSet::new();
    tokio::pin!(cancel);
    // Attempts a runlet that died left running: watched to their end as if started here.
    for (index, attempt) in adopt {
        let span = info_span!("task", index, attempt);
        let (ctx, execution, cancel_rx, tx) = (
            ctx.clone(),
            execution.clone(),
            cancel_rx.clone(),
            tx.clone(),
        );
        attempts.spawn(
            async move {
                let id = container_id(&execution, index, attempt);
                let which = Attempt {
                    execution: &execution,
                    id: &id,
                    index,
                    attempt,
                };
                let outcome = adopt_attempt(&ctx, &which, cancel_rx).await;
                let _ = tx.send(AttemptDone {
                    index,
                    attempt,
                    outcome,
                });
                release_attempt(&ctx, &id).await;
            }
            .instrument(span),
        );
    }
    loop {
        let starts = sched.start_ready();
        for &(index, attempt) in &starts {
            if let Some(slot) = first_start.get_mut(index as usize) {
                slot.get_or_insert_with(Instant::now);
            }
            rec.attempt_started(index, attempt, SystemTime::now());
        }
        // One durable write per turn, before anything new starts: it holds every result
        // reported so far, so a crash from here on loses none of them.
        if let Err(e) = store.save(&rec).await {
            warn!(
                "cannot save the execution record: {}",
                crate::util::error_chain(&e)
            );
        }
        for (index, attempt) in starts {
            let span = info_span!("task", index, attempt);
            let (ctx, execution, cancel_rx, tx) = (
                ctx.clone(),
                execution.clone(),
                cancel_rx.clone(),
                tx.clone(),
            );
            attempts.spawn(
                async move {
                    let id = container_id(&execution, index, attempt);
                    let which = Attempt {
                        execution: &execution,
                        id: &id,
                        index,
                        attempt,
                    };
                    let outcome = run_attempt(&ctx, &which, cancel_rx).await;
                    // The container is gone: report now, so the next attempt need not wait
                    // for the network and files to be released.
                    let _ = tx.send(AttemptDone {
                        index,
                        attempt,
                        outcome,
                    });
                    release_attempt(&ctx, &id).await;
                }
                .instrument(span),
            );
        }
        if sched.is_done() {
            break;
        }
        tokio::select! {
            _ = &mut cancel, if !cancelled => {
                cancelled = true;
                info!(running = sched.running(), "cancelling: stopping running tasks (SIGTERM, SIGKILL after {} s)", ctx.kill_grace.as_secs());
                let _ = cancel_tx.send(true);
                let now = SystemTime::now();
                for index in sched.cancel() {
                    rec.task_cancelled(index, now);
                }
            }
            Some(done) = rx.recv() => {
                on_done(&mut sched, &mut rec, &first_start, done);
                // Take every other report already there, so one save covers them all.
                while let Ok(done) = rx.try_recv() {
                    on_done(&mut sched, &mut rec, &first_start, done);
                }
            }
        }
    }
    // Nothing of the execution is left when it ends.
    while attempts.join_next().await.is_some() {}
    rec.finish(cancelled, SystemTime::now(), t0.elapsed());
    store.save(&rec).await?;
    info!(state = ?rec.status.state, "execution ended");
    Ok(rec)
}

fn on_done(
    sched: &mut Scheduler,
    rec: &mut ExecutionRecord,
    first_start: &[Option<Instant>],
    done: AttemptDone,
) {
    let AttemptDone {
        index,
        attempt,
        outcome,
    } = done;
    let action = match sched.finished(index, &outcome) {
        Ok(a) => a,
        Err(e) => {
            warn!("ignoring an attempt report: {e}");
            return;
        }
    };
    let elapsed = first_start
        .get(index as usize)
        .copied()
        .flatten()
        .map(|t| t.elapsed())
        .unwrap_or_default();
    rec.attempt_finished(index, &outcome, action, SystemTime::now(), elapsed);
    match action {
        Action::Succeed => info!(index, attempt, "task succeeded"),
        Action::Retry { attempt: next } => {
            warn!(
                index,
                attempt, "attempt failed ({outcome}); retrying as attempt {next}"
            )
        }
        Action::Fail => warn!(index, attempt, "task failed ({outcome}); no retries left"),
        Action::Cancel => info!(index, attempt, "task cancelled ({outcome})"),
    }
}

/// Which attempt of which task.
struct Attempt<'a> {
    execution: &'a str,
    /// Its container's id ([`container_id`]).
    id: &'a str,
    index: u32,
    attempt: u32,
}

/// One attempt, from nothing to its outcome: whatever happens, the container is gone and its
/// output passed on when this returns; [`release_attempt`] removes the rest.
async fn run_attempt<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    which: &Attempt<'_>,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    let mut sandbox = Sandbox::new(which.id);
    let mut sidecar_boxes = Vec::new();
    let outcome = match attempt_body(ctx, which, cancel, &mut sandbox, &mut sidecar_boxes).await {
        Ok(o) => o,
        Err(e) => {
            // An attempt's record keeps the whole story: the error and its causes.
            let e = crate::util::error_chain(&e);
            warn!(container = %which.id, "attempt could not run: {e}");
            Outcome::RuntimeError(e)
        }
    };
    remove_all(ctx, which.id, sandbox, sidecar_boxes).await;
    outcome
}

/// Removes the attempt's containers: any still running (an attempt that failed to start)
/// stopped first, sidecars before the main container.
async fn remove_all<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    id: &str,
    sandbox: Sandbox,
    sidecar_boxes: Vec<Sandbox>,
) {
    if sidecars::applies(ctx) {
        let mut ids = sidecars::ids(ctx, id);
        ids.push(id.to_string());
        crate::control::service::sidecars::stop_all(ctx.runtime.as_ref(), &ids, ctx.kill_grace)
            .await;
    }
    for sb in sidecar_boxes {
        sb.remove(ctx.runtime.as_ref()).await;
    }
    sandbox.remove(ctx.runtime.as_ref()).await;
}

/// Removes what [`run_attempt`] leaves of attempt `id` (its container deleted): the network
/// namespace and address, the root filesystem's memory mount, the files.
async fn release_attempt<R: Runtime, N: Network, F: RootFs>(ctx: &Ctx<R, N, F>, id: &str) {
    sandbox::release(&ctx.net, &ctx.rootfs, id, &ctx.task_dir(id)).await;
}

async fn attempt_body<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    which: &Attempt<'_>,
    mut cancel: watch::Receiver<bool>,
    sandbox: &mut Sandbox,
    sidecar_boxes: &mut Vec<Sandbox>,
) -> Result<Outcome, SandboxError> {
    let spec = &ctx.spec;
    let &Attempt {
        execution,
        id,
        index,
        attempt,
    } = which;
    let with_sidecars = sidecars::applies(ctx);
    let main_name = spec.containers()[0].name.clone();
    let sink = attempt_sink(
        ctx,
        index,
        attempt,
        if with_sidecars { &main_name } else { "" },
    );
    let cfg = &ctx.image.config;
    // Secret values are read now, for this attempt only (never kept in the spec or record).
    let secrets = crate::secrets::resolve(&spec.secrets, &SecretStore::new(&ctx.state_dir))
        .map_err(SandboxError::Secrets)?;
    let mut env = ocispec::env(
        cfg.env.as_deref().unwrap_or_default(),
        &[spec.env.as_slice(), &secrets.env].concat(),
        &spec.contract_env(execution, index, attempt),
    );
    let mut files = Vec::new();
    if let Some(f) = &ctx.task_file {
        let (var, mount) = f.for_task(index);
        env.push(var);
        files.push(mount);
    }
    let lbl = sidecars::attempt_labels(&spec.name, which);
    let dir = ctx.task_dir(id);
    let plan = Plan {
        dir: &dir,
        image: &ctx.image,
        args: ctx.argv.clone(),
        env,
        user: ctx.user.clone(),
        memory_bytes: spec.memory_bytes,
        cpu: spec.cpu_value,
        tmpfs: vec![],
        shared: vec![],
        join: None,
        files,
        secret_dirs: secrets.dirs,
        labels: lbl,
        sink,
        extra_hosts: String::new(),
        runtime_binary: None,
    };
    if with_sidecars {
        let sink_of = |name: &str| attempt_sink(ctx, index, attempt, name);
        let main = sidecars::Main {
            plan,
            sink_of: &sink_of,
        };
        if let Some(early) =
            sidecars::create_and_start(ctx, which, main, sandbox, sidecar_boxes, cancel.clone())
                .await?
        {
            return Ok(early);
        }
        info!(container = %id, containers = 1 + sidecar_boxes.len(), "attempt started");
        let names = spec.sidecars.containers.iter().map(|c| c.name.clone());
        let _logging =
            sidecars::log_exits(names.zip(sidecar_boxes.iter().map(Sandbox::exit)).collect());
        return watch_attempt(ctx, id, sandbox, cancel).await;
    }
    sandbox
        .create(&ctx.runtime, &ctx.net, &ctx.rootfs, plan)
        .await?;
    if *cancel.borrow_and_update() {
        return Ok(Outcome::Cancelled(None));
    }
    sandbox.start(ctx.runtime.as_ref()).await?;
    info!(container = %id, "attempt started");
    watch_attempt(ctx, id, sandbox, cancel).await
}

/// Where an attempt's output lines go: the context's sink, with the task index and attempt.
fn attempt_sink<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    index: u32,
    attempt: u32,
    container: &str,
) -> Sink {
    let out = ctx.sink.clone();
    let container = container.to_string();
    Arc::new(move |stream: &str, text: &str| {
        out(&Line {
            index,
            attempt,
            container: &container,
            stream,
            text,
        })
    })
}

/// An attempt that an earlier runlet started, taken over: its output FIFOs reopened and its
/// exit watched, as [`run_attempt`] does for one started here. Its container gone (or its
/// files) makes a failed attempt.
async fn adopt_attempt<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    which: &Attempt<'_>,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    let id = which.id;
    let main_name = if sidecars::applies(ctx) {
        ctx.spec.containers()[0].name.clone()
    } else {
        String::new()
    };
    let sink = attempt_sink(ctx, which.index, which.attempt, &main_name);
    let known = match ctx.runtime.list().await {
        Ok(list) => list.iter().any(|c| c.id == id),
        Err(e) => {
            warn!(container = %id, "listing containers to adopt: {e}");
            false
        }
    };
    let adopted = if known {
        Sandbox::adopt(&ctx.runtime, id, &ctx.task_dir(id), sink).map_err(|e| e.to_string())
    } else {
        Err("its container is gone".to_string())
    };
    let mut sandbox = match adopted {
        Ok(s) => s,
        Err(e) => {
            warn!(container = %id, "cannot adopt the attempt: {e}");
            if known {
                let _ = stop_container(ctx.runtime.as_ref(), id, Duration::from_secs(1)).await;
                let _ = ctx.runtime.delete(id).await;
            }
            return Outcome::RuntimeError(format!(
                "runlet exited during this attempt and could not adopt it: {e}"
            ));
        }
    };
    info!(container = %id, "adopted a running attempt");
    if let Err(e) = ctx.net.readopt(id).await {
        warn!(container = %id, "the adopted attempt cannot reach the metadata server: {e}");
    }
    // Its sidecars still run under their shims: stopped with the main container (their
    // output from here on is not followed).
    let outcome = match watch_attempt(ctx, id, &mut sandbox, cancel).await {
        Ok(o) => o,
        Err(e) => Outcome::RuntimeError(crate::util::error_chain(&e)),
    };
    remove_all(ctx, id, sandbox, Vec::new()).await;
    if sidecars::applies(ctx) {
        for sid in sidecars::ids(ctx, id) {
            if let Err(e) = ctx.runtime.delete(&sid).await {
                warn!(container = %sid, "deleting an adopted sidecar: {e}");
            }
        }
    }
    outcome
}

/// Races a started attempt's exit against the task timeout and the cancellation; a timeout
/// or a cancellation stops it (SIGTERM, SIGKILL after the grace).
async fn watch_attempt<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    id: &str,
    sandbox: &mut Sandbox,
    mut cancel: watch::Receiver<bool>,
) -> Result<Outcome, SandboxError> {
    let spec = &ctx.spec;
    let others = sidecars::ids(ctx, id);
    tokio::select! {
        r = sandbox.exited() => {
            let status = r?;
            // Ask before the delete: the counter lives in the container's cgroup.
            let outcome = if status.code != 0 && ctx.runtime.oom_killed(id).await {
                Outcome::OutOfMemory(status)
            } else {
                Outcome::Exited(status)
            };
            if !others.is_empty() {
                info!(container = %id, "the main container exited ({status}): stopping the sidecars (SIGTERM, SIGKILL in {} s)", ctx.kill_grace.as_secs());
                crate::control::service::sidecars::stop_all(ctx.runtime.as_ref(), &others, ctx.kill_grace).await;
            }
            Ok(outcome)
        }
        _ = tokio::time::sleep(spec.task_timeout) => {
            warn!(container = %id, "task timeout ({} s) reached: SIGTERM, SIGKILL in {} s", spec.task_timeout.as_secs(), ctx.kill_grace.as_secs());
            Ok(Outcome::TimedOut(stop_task(ctx, id, &others).await?))
        }
        _ = cancelled(&mut cancel) => {
            Ok(Outcome::Cancelled(stop_task(ctx, id, &others).await?))
        }
    }
}

/// Stops every container of an attempt at once (SIGTERM, SIGKILL after the grace); the
/// main container's exit.
async fn stop_task<R: Runtime, N: Network, F: RootFs>(
    ctx: &Ctx<R, N, F>,
    id: &str,
    others: &[String],
) -> Result<Option<crate::runtime::ExitStatus>, SandboxError> {
    if others.is_empty() {
        let stopped = stop_container(ctx.runtime.as_ref(), id, ctx.kill_grace)
            .await
            .map_err(SandboxError::Stop)?;
        return Ok(stopped.exit);
    }
    let ids: Vec<String> = std::iter::once(id.to_string())
        .chain(others.iter().cloned())
        .collect();
    Ok(
        crate::control::service::sidecars::stop_all(ctx.runtime.as_ref(), &ids, ctx.kill_grace)
            .await
            .and_then(|s| s.exit),
    )
}

async fn cancelled(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What [`recover`] cleaned up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Executions found running with no runlet behind them, now marked failed.
    pub executions: Vec<String>,
    /// Containers of such executions, now removed.
    pub containers: Vec<String>,
}

/// Cleans up after runlets that died mid-execution (run at the start of every `runlet job`
/// command). An execution is abandoned when its record (in this state dir) says running
/// and nobody holds its lock; containers of executions that ended are leftovers too. Its leftover containers (found by the `runlet.io/execution` label) are stopped
/// with a short grace and removed with their network namespaces and files, and its record
/// is marked failed: finished tasks keep their results, running ones become failed,
/// pending ones cancelled. Executions owned by a live runlet are not touched.
pub async fn recover<R: Runtime>(
    runtime: &R,
    net: &impl Network,
    rootfs: &impl RootFs,
    store: &RecordStore,
    state_dir: &Path,
) -> Result<Recovered, JobError> {
    let mut out = Recovered::default();
    let (records, errors) = store.list();
    for e in errors {
        warn!("{}", crate::util::error_chain(&e));
    }
    let mut claimed = Vec::new();
    // A daemon's executions are its own to resume after a restart: never marked here.
    for r in records
        .iter()
        .filter(|r| r.status.state == ExecutionState::Running && !r.daemon_owned())
    {
        let Some(lock) = store.try_claim(r.name())? else {
            continue;
        };
        // Read again under the lock: the owner may have finished since the listing.
        match store.load(r.name()) {
            Ok(fresh) if fresh.status.state == ExecutionState::Running => {
                claimed.push((fresh, lock))
            }
            _ => lock.release(),
        }
    }
    let claimed_names: HashSet<String> =
        claimed.iter().map(|(r, _)| r.name().to_string()).collect();
    let ended: HashSet<&str> = records
        .iter()
        .filter(|r| r.status.state != ExecutionState::Running)
        .map(|r| r.name())
        .collect();
    // Only executions recorded in this state dir: containerd's namespace may be shared by
    // runlets with other state dirs, whose executions are none of this runlet's business.
    // (A record is written before any container or file of its execution exists.)
    let abandoned = |execution: &str| {
        claimed_names.contains(execution)
            || (ended.contains(execution) && !store.is_live(execution))
    };

    let mut leftovers: Vec<String> = Vec::new();
    for c in runtime.list().await? {
        if let Some(execution) = c.labels.get(labels::EXECUTION) {
            if owner::verdict_on(&c.labels, abandoned(execution)) == Verdict::Remove {
                leftovers.push(c.id);
            }
        }
    }
    // Attempt directories without a container: a runlet died between network and create.
    if let Ok(dirs) = std::fs::read_dir(tasks_dir(state_dir)) {
        for d in dirs.filter_map(Result::ok) {
            let id = d.file_name().to_string_lossy().into_owned();
            if let Some(execution) = execution_of(&id) {
                if abandoned(execution) && !leftovers.contains(&id) {
                    leftovers.push(id);
                }
            }
        }
    }
    let removals = leftovers.iter().map(|id| async move {
        warn!(container = %id, "removing a task container an earlier runlet left behind");
        if let Err(e) = stop_container(runtime, id, Duration::from_secs(1)).await {
            warn!(container = %id, "stopping: {e}");
        }
        sandbox::release(net, rootfs, id, &tasks_dir(state_dir).join(id)).await;
    });
    futures::future::join_all(removals).await;
    out.containers = leftovers;

    for (mut rec, lock) in claimed {
        warn!(execution = %rec.name(), "execution was running when its runlet exited: marking it failed");
        rec.mark_abandoned(SystemTime::now());
        store.save(&rec).await?;
        lock.release();
        out.executions.push(rec.name().to_string());
    }
    Ok(out)
}

mod sidecars;

#[cfg(test)]
mod tests;
