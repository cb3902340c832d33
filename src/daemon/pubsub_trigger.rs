//! The Pub/Sub trigger: a job bound to a pull subscription (annotations
//! `runlet.io/pubsub-*`, [`crate::pubsub::binding`]) runs while the subscription has
//! messages, one task per message, and not at all while it is empty, the way KEDA's queue
//! scalers drive Container Apps Jobs.
//!
//! One loop per bound job: take a free execution slot (at most `max-executions` at once),
//! pull up to [`decide::MAX_BATCH`] messages at once (an empty pull starts nothing and waits
//! longer each time, [`decide::idle_wait`]), and start an execution with one task per
//! message, each task's message in its own read-only file ([`message`]). A driver per
//! execution then follows its tasks in the execution record: it keeps the messages of
//! running tasks leased (`modifyAckDeadline`), and settles each as its task ends
//! ([`decide::disposition`]): acked on success; on a failure after all retries, forwarded
//! to the subscription's dead-letter topic when it has one, and acked; given back
//! (deadline 0) when the task was cancelled. The daemon talks to Pub/Sub; tasks need no
//! client and no route to the host. Delivery is at least once: a daemon that dies
//! mid-execution resumes the execution, but its messages' leases lapse and Pub/Sub
//! delivers them again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{watch, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::{info, warn};

use super::task_inputs::{self, TaskInputs};
use super::Daemon;
use crate::control::job::record::TaskState;
use crate::pb::run_v2 as v2;
use crate::pubsub::binding::{self, Binding};
use crate::pubsub::client::{PubsubMessage, ReceivedMessage};
use crate::pubsub::decide::{self, Disposition};
use crate::pubsub::{message, PubsubClient};

/// The execution annotation listing each task's message id, in task order.
pub const MESSAGE_IDS: &str = "runlet.io/pubsub-message-ids";

/// The running trigger loops, by job full name, and the drivers of their executions.
#[derive(Default)]
pub(crate) struct PubsubTriggers {
    loops: Mutex<BTreeMap<String, Loop>>,
    drivers: TaskTracker,
}

struct Loop {
    binding: Binding,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// Job `job`'s binding, checked at create and update: `INVALID_ARGUMENT` naming the
/// annotation when malformed, `FAILED_PRECONDITION` when the daemon has no Pub/Sub to
/// talk to (`PUBSUB_EMULATOR_HOST` unset).
pub(super) fn check(job: &v2::Job) -> Result<Option<Binding>, Status> {
    let b = binding::from_annotations(&job.annotations)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if b.is_some() {
        PubsubClient::from_env().map_err(|e| {
            Status::failed_precondition(format!(
                "cannot bind the job to {}: {e}",
                binding::SUBSCRIPTION
            ))
        })?;
    }
    Ok(b)
}

impl Daemon {
    /// Makes job `full`'s trigger match `binding`: started, restarted with the new binding,
    /// or stopped (`None`: unbound or deleted). Executions already started run on.
    pub(super) async fn sync_pubsub(&self, full: &str, binding: Option<Binding>) {
        let mut loops = self.pubsub.loops.lock().await;
        if let (Some(l), Some(b)) = (loops.get(full), &binding) {
            if l.binding == *b && !l.handle.is_finished() {
                return;
            }
        }
        if let Some(old) = loops.remove(full) {
            info!(job = %full, subscription = %old.binding.subscription, "Pub/Sub trigger stopped");
            old.stop.cancel();
        }
        let Some(b) = binding else { return };
        let client = match PubsubClient::from_env() {
            Ok(c) => c,
            Err(e) => {
                warn!(job = %full, subscription = %b.subscription, "the job's Pub/Sub trigger cannot run: {e}");
                return;
            }
        };
        info!(job = %full, subscription = %b.subscription, max_executions = b.max_executions, "Pub/Sub trigger started");
        let stop = CancellationToken::new();
        let handle = tokio::spawn(trigger_loop(
            self.me(),
            full.to_string(),
            b.clone(),
            client,
            stop.clone(),
        ));
        loops.insert(
            full.to_string(),
            Loop {
                binding: b,
                stop,
                handle,
            },
        );
    }

    /// Starts the trigger of every stored job that has a binding (the daemon starting).
    pub(super) async fn start_pubsub_triggers(&self) {
        let bound: Vec<(String, Binding)> = {
            let state = self.jobs.state.lock().await;
            state
                .jobs
                .iter()
                .filter_map(
                    |(full, e)| match binding::from_annotations(&e.job.annotations) {
                        Ok(b) => b.map(|b| (full.clone(), b)),
                        Err(err) => {
                            warn!(job = %full, "ignoring the job's Pub/Sub binding: {err}");
                            None
                        }
                    },
                )
                .collect()
        };
        for (full, b) in bound {
            self.sync_pubsub(&full, Some(b)).await;
        }
    }

    /// Stops every trigger loop (no pull after this returns); their executions' drivers
    /// run on until [`wait_pubsub_drivers`](Self::wait_pubsub_drivers).
    pub(super) async fn stop_pubsub_triggers(&self) {
        let loops = std::mem::take(&mut *self.pubsub.loops.lock().await);
        for l in loops.values() {
            l.stop.cancel();
        }
        for (_, l) in loops {
            let _ = l.handle.await;
        }
    }

    /// Waits for the drivers to settle their messages (their executions ended).
    pub(super) async fn wait_pubsub_drivers(&self) {
        self.pubsub.drivers.close();
        self.pubsub.drivers.wait().await;
    }

    /// Starts an execution of job `full` for `batch`, holding `slot` until its driver is done.
    async fn start_batch(
        &self,
        full: &str,
        client: &PubsubClient,
        sub: &str,
        batch: Vec<ReceivedMessage>,
        slot: OwnedSemaphorePermit,
    ) -> Result<(), Status> {
        let ack_ids: Vec<String> = batch.iter().map(|m| m.ack_id.clone()).collect();
        // Leased before anything slow: the subscription's own deadline may be short.
        if let Err(e) = client
            .modify_ack_deadline(sub, &ack_ids, decide::LEASE_SECS)
            .await
        {
            warn!(job = %full, "{}", crate::util::error_chain(&e));
        }
        let dead_letter = match client.subscription(sub).await {
            Ok(s) => s
                .dead_letter_policy
                .map(|p| p.dead_letter_topic)
                .filter(|t| !t.is_empty()),
            Err(e) => {
                warn!(job = %full, "reading the subscription's dead-letter policy: {}", crate::util::error_chain(&e));
                None
            }
        };
        let ids: Vec<&str> = batch
            .iter()
            .map(|m| m.message.message_id.as_str())
            .collect();
        let annotations = HashMap::from([
            (binding::SUBSCRIPTION.to_string(), sub.to_string()),
            (MESSAGE_IDS.to_string(), ids.join(",")),
        ]);
        let write = {
            let (sub, batch) = (sub.to_string(), batch.clone());
            Box::new(move |dir: &std::path::Path| message::write_all(dir, &sub, &batch))
        };
        let req = v2::RunJobRequest {
            name: full.to_string(),
            overrides: Some(v2::run_job_request::Overrides {
                task_count: batch.len() as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let inputs = TaskInputs {
            annotations,
            path: message::PATH.to_string(),
            env: message::ENV.to_string(),
            write,
        };
        let started = match self.start_execution(req, Some(inputs), None).await {
            Ok(s) => s,
            Err(status) => {
                // Given back at once: another try, or another subscriber, gets them.
                let _ = client.modify_ack_deadline(sub, &ack_ids, 0).await;
                return Err(status);
            }
        };
        info!(job = %full, execution = %started.execution, messages = batch.len(), "execution started for Pub/Sub messages");
        let driver = Driver {
            d: self.me(),
            client: client.clone(),
            sub: sub.to_string(),
            dead_letter,
            batch,
            execution: started.execution,
        };
        self.pubsub.drivers.spawn(driver.run(started.ended, slot));
        Ok(())
    }
}

/// Sleeps `d`; true when `stop` came first.
async fn stopped_during(stop: &CancellationToken, d: std::time::Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// One bound job's loop: a free slot, a pull, an execution per non-empty batch.
async fn trigger_loop(
    d: Arc<Daemon>,
    job: String,
    b: Binding,
    client: PubsubClient,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(b.max_executions as usize));
    let sub = b.subscription.as_str();
    let mut idle = None;
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let pulled = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.pull(sub, decide::MAX_BATCH) => r,
        };
        let batch = match pulled {
            Ok(batch) => batch,
            Err(e) => {
                warn!(job = %job, "{}", crate::util::error_chain(&e));
                drop(slot);
                if stopped_during(&stop, decide::ERROR_WAIT).await {
                    return;
                }
                continue;
            }
        };
        if batch.is_empty() {
            // Scale to zero: nothing starts; ask again later, less often while it stays empty.
            drop(slot);
            let wait = decide::idle_wait(idle);
            idle = Some(wait);
            if stopped_during(&stop, wait).await {
                return;
            }
            continue;
        }
        idle = None;
        if stop.is_cancelled() {
            let ids: Vec<String> = batch.into_iter().map(|m| m.ack_id).collect();
            let _ = client.modify_ack_deadline(sub, &ids, 0).await;
            return;
        }
        if let Err(status) = d.start_batch(&job, &client, sub, batch, slot).await {
            warn!(job = %job, "cannot start an execution for Pub/Sub messages (given back): {}", status.message());
            if stopped_during(&stop, decide::ERROR_WAIT).await {
                return;
            }
        }
    }
}

/// Follows one execution's tasks and settles their messages.
struct Driver {
    d: Arc<Daemon>,
    client: PubsubClient,
    sub: String,
    dead_letter: Option<String>,
    batch: Vec<ReceivedMessage>,
    execution: String,
}

/// Rounds a driver keeps trying to settle messages after its execution ended (Pub/Sub
/// unreachable): then the leases lapse and Pub/Sub delivers the messages again.
const ROUNDS_AFTER_END: u32 = 120;

impl Driver {
    async fn run(self, mut ended: watch::Receiver<bool>, slot: OwnedSemaphorePermit) {
        let mut open: Vec<usize> = (0..self.batch.len()).collect();
        let mut renewed = Instant::now();
        let mut rounds_after_end = 0;
        loop {
            let is_ended = *ended.borrow_and_update();
            let states: HashMap<u32, TaskState> = self
                .d
                .records()
                .load(&self.execution)
                .map(|r| r.status.tasks.iter().map(|t| (t.index, t.state)).collect())
                .unwrap_or_default();
            let mut keep = Vec::new();
            let mut settle: Vec<(usize, Disposition)> = Vec::new();
            for &i in &open {
                let state = states
                    .get(&(i as u32))
                    .copied()
                    .unwrap_or(TaskState::Pending);
                match decide::disposition(state, self.dead_letter.is_some()) {
                    // An execution that ended with the task unsettled (its record lost):
                    // the message goes back.
                    Disposition::Keep if is_ended => settle.push((i, Disposition::Release)),
                    Disposition::Keep => keep.push(i),
                    Disposition::Ack if state == TaskState::Failed => {
                        warn!(execution = %self.execution, task = i, message = %self.batch[i].message.message_id, "the task failed after all its retries: its message is acked (the failure is on the execution)");
                        settle.push((i, Disposition::Ack));
                    }
                    other => settle.push((i, other)),
                }
            }
            let done = self.settle(&settle).await;
            open.retain(|i| !done.contains(i));
            if open.is_empty() {
                break;
            }
            if renewed.elapsed() >= decide::RENEW_EVERY && !keep.is_empty() {
                let ids = self.ack_ids(&keep);
                match self
                    .client
                    .modify_ack_deadline(&self.sub, &ids, decide::LEASE_SECS)
                    .await
                {
                    Ok(()) => renewed = Instant::now(),
                    Err(e) => {
                        warn!(execution = %self.execution, "{}", crate::util::error_chain(&e))
                    }
                }
            }
            if is_ended {
                rounds_after_end += 1;
                if rounds_after_end > ROUNDS_AFTER_END {
                    warn!(execution = %self.execution, unsettled = open.len(), "giving up settling Pub/Sub messages: they will be delivered again");
                    break;
                }
                tokio::time::sleep(decide::WATCH_EVERY).await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(decide::WATCH_EVERY) => {}
                    _ = ended.changed() => {}
                }
            }
        }
        task_inputs::remove(&self.d.host.state_dir, &self.execution);
        drop(slot);
    }

    fn ack_ids(&self, tasks: &[usize]) -> Vec<String> {
        tasks
            .iter()
            .map(|&i| self.batch[i].ack_id.clone())
            .collect()
    }

    /// Carries out `todo`; the tasks whose messages are settled.
    async fn settle(&self, todo: &[(usize, Disposition)]) -> Vec<usize> {
        let mut ack = Vec::new();
        let mut release = Vec::new();
        for &(i, what) in todo {
            let id = &self.batch[i].message.message_id;
            match what {
                Disposition::Keep => {}
                Disposition::Ack => ack.push(i),
                Disposition::DeadLetter => {
                    let topic = self.dead_letter.as_deref().unwrap_or_default();
                    match self.forward(i, topic).await {
                        Ok(()) => {
                            warn!(execution = %self.execution, task = i, message = %id, topic, "the task failed after all its retries: its message is forwarded to the dead-letter topic");
                            ack.push(i);
                        }
                        Err(e) => {
                            warn!(execution = %self.execution, "{}", crate::util::error_chain(&e))
                        }
                    }
                }
                Disposition::Release => release.push(i),
            }
        }
        let mut done = Vec::new();
        match self
            .client
            .acknowledge(&self.sub, &self.ack_ids(&ack))
            .await
        {
            Ok(()) => done.extend(ack),
            Err(e) => warn!(execution = %self.execution, "{}", crate::util::error_chain(&e)),
        }
        match self
            .client
            .modify_ack_deadline(&self.sub, &self.ack_ids(&release), 0)
            .await
        {
            Ok(()) => done.extend(release),
            Err(e) => warn!(execution = %self.execution, "{}", crate::util::error_chain(&e)),
        }
        done
    }

    /// Publishes task `i`'s message to `topic`, with the attributes Pub/Sub's own
    /// dead-lettering adds.
    async fn forward(&self, i: usize, topic: &str) -> Result<(), crate::pubsub::PubsubError> {
        let m = &self.batch[i];
        let mut out = PubsubMessage {
            data: m.message.data.clone(),
            attributes: m.message.attributes.clone(),
            ..Default::default()
        };
        out.attributes.insert(
            "CloudPubSubDeadLetterSourceSubscription".into(),
            self.sub.clone(),
        );
        out.attributes.insert(
            "CloudPubSubDeadLetterSourceDeliveryCount".into(),
            m.delivery_attempt.unwrap_or(1).to_string(),
        );
        self.client.publish(topic, &[out]).await
    }
}
