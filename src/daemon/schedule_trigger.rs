//! The schedule trigger: one task that starts an execution of each job with a schedule
//! (`runlet.io/schedule`, [`cron`]) at each due time, on the same engine as `RunJob`, the
//! execution marked `runlet.io/triggered-by: schedule`.
//!
//! It sleeps until the earliest next due time of all jobs (at most a minute, so a wall
//! clock set forward or back is noticed), or until a job is created, changed or deleted.
//! When it wakes it takes the decisions of [`cron`]: the run due now is the latest due
//! time after the last one fired, so runs missed while the daemon was down (or the machine
//! asleep) are not replayed, except the most recent one; a run due while an execution of
//! the job still runs is skipped (logged) unless the job says `runlet.io/schedule-overlap:
//! start`. The last fire time is stored per job (kind [`KIND`]) before the execution
//! starts, so each due time starts at most one execution, also across a restart; a
//! changed schedule or time zone starts afresh from the time of the change.
//!
//! The loop reads the time through a [`Clock`] and the jobs through [`ScheduledJobs`], so
//! its tests run it under paused tokio time against a scripted set of jobs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::store::Store;
use super::Daemon;
use crate::control::job::cron::{self, Fire, Schedule};
use crate::pb::run_v2 as v2;

/// The store's kind for the last fire times, by job.
pub(super) const KIND: &str = "schedule-fired";
/// The longest sleep between two looks at the clock.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The wall clock (due times are wall-clock times in a zone).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        SystemTime::now().into()
    }
}

/// What the trigger needs of the jobs.
pub trait ScheduledJobs: Send + Sync + 'static {
    /// Every job with a schedule, by full name.
    fn schedules(&self) -> impl Future<Output = Vec<(String, Schedule)>> + Send;
    /// Whether an execution of `job` is running.
    fn running(&self, job: &str) -> impl Future<Output = bool> + Send;
    /// Starts an execution of `job`; its name, or why it could not start.
    fn start(&self, job: &str) -> impl Future<Output = Result<String, String>> + Send;
}

/// What is stored of a job's schedule: the schedule it is about, and when it was set and
/// last fired (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fired {
    schedule: String,
    time_zone: String,
    armed_ms: i64,
    last_fired_ms: Option<i64>,
}

impl Fired {
    fn new(s: &Schedule, now: DateTime<Utc>) -> Fired {
        Fired {
            schedule: s.expr.clone(),
            time_zone: s.zone.name().to_string(),
            armed_ms: now.timestamp_millis(),
            last_fired_ms: None,
        }
    }

    fn is_for(&self, s: &Schedule) -> bool {
        self.schedule == s.expr && self.time_zone == s.zone.name()
    }

    /// Due times after this one are still to run.
    fn since(&self) -> DateTime<Utc> {
        let ms = self
            .last_fired_ms
            .unwrap_or(self.armed_ms)
            .max(self.armed_ms);
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }
}

/// The trigger loop's parts.
pub struct Trigger<J, C> {
    pub jobs: J,
    pub clock: C,
    pub store: Arc<Store>,
    /// Notified when a job is created, changed or deleted.
    pub changed: Arc<Notify>,
    pub stop: CancellationToken,
}

impl<J: ScheduledJobs, C: Clock> Trigger<J, C> {
    /// Runs until `stop` is cancelled.
    pub async fn run(self) {
        let mut fired: BTreeMap<String, Fired> = match self.store.list(KIND) {
            Ok(l) => l.into_iter().collect(),
            Err(e) => {
                warn!(
                    "reading the schedules' last fire times: {}",
                    crate::util::Chain(&e)
                );
                BTreeMap::new()
            }
        };
        while !self.stop.is_cancelled() {
            let wake = self.look(&mut fired).await;
            let now = self.clock.now();
            let nap = wake
                .and_then(|w| (w - now).to_std().ok())
                .unwrap_or(if wake.is_some() {
                    Duration::ZERO
                } else {
                    MAX_SLEEP
                })
                .min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = self.changed.notified() => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// Starts the runs due now; the next due time of any job.
    async fn look(&self, fired: &mut BTreeMap<String, Fired>) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let schedules = self.jobs.schedules().await;
        let gone: Vec<String> = fired
            .keys()
            .filter(|k| !schedules.iter().any(|(j, _)| j == *k))
            .cloned()
            .collect();
        for job in gone {
            fired.remove(&job);
            if let Err(e) = self.store.delete(KIND, &job) {
                warn!(
                    job,
                    "forgetting the schedule's last fire time: {}",
                    crate::util::Chain(&e)
                );
            }
        }
        let mut wake: Option<DateTime<Utc>> = None;
        for (job, s) in &schedules {
            let f = fired
                .entry(job.clone())
                .or_insert_with(|| Fired::new(s, now));
            if !f.is_for(s) {
                *f = Fired::new(s, now);
            }
            if let Some(at) = cron::due(s, f.since(), now) {
                if self.stop.is_cancelled() {
                    return None;
                }
                f.last_fired_ms = Some(at.timestamp_millis());
                self.save(job, f);
                self.fire(job, s, at, now).await;
            } else if f.last_fired_ms.is_none() {
                // Armed: stored so a restart before the first run still knows since when.
                self.save(job, f);
            }
            if let Some(next) = cron::next_wake(s, f.since(), now) {
                wake = Some(wake.map_or(next, |w| w.min(next)));
            }
        }
        wake
    }

    async fn fire(&self, job: &str, s: &Schedule, at: DateTime<Utc>, now: DateTime<Utc>) {
        let late_s = (now - at).num_seconds();
        match cron::on_due(s.overlap, self.jobs.running(job).await) {
            Fire::SkipOverlap => info!(
                job,
                due = %at,
                "an execution of the job is still running: the scheduled run is skipped ({}: skip)",
                cron::OVERLAP
            ),
            Fire::Start => match self.jobs.start(job).await {
                Ok(execution) => {
                    info!(job, execution, due = %at, late_s, "scheduled execution started")
                }
                Err(e) => warn!(job, due = %at, "the scheduled execution could not start: {e}"),
            },
        }
    }

    fn save(&self, job: &str, f: &Fired) {
        let stored: Option<Fired> = self.store.get(KIND, job).ok().flatten();
        if stored.as_ref() == Some(f) {
            return;
        }
        if let Err(e) = self.store.put(KIND, job, f) {
            warn!(
                job,
                "storing the schedule's last fire time: {}",
                crate::util::Chain(&e)
            );
        }
    }
}

/// The daemon's jobs, for the trigger (weakly held: the trigger ends with the daemon).
struct DaemonJobs(Weak<Daemon>);

impl ScheduledJobs for DaemonJobs {
    async fn schedules(&self) -> Vec<(String, Schedule)> {
        let Some(d) = self.0.upgrade() else {
            return Vec::new();
        };
        let state = d.jobs.state.lock().await;
        state
            .jobs
            .iter()
            .filter_map(
                |(name, e)| match Schedule::from_annotations(&e.job.annotations) {
                    Ok(s) => s.map(|s| (name.clone(), s)),
                    Err(err) => {
                        warn!(job = %name, "the job's schedule is not used: {err}");
                        None
                    }
                },
            )
            .collect()
    }

    async fn running(&self, job: &str) -> bool {
        let Some(d) = self.0.upgrade() else {
            return false;
        };
        let state = d.jobs.state.lock().await;
        state
            .jobs
            .get(job)
            .is_some_and(|e| e.executions.values().any(|x| x.running.is_some()))
    }

    async fn start(&self, job: &str) -> Result<String, String> {
        let d = self.0.upgrade().ok_or("the daemon is gone")?;
        let req = v2::RunJobRequest {
            name: job.to_string(),
            ..Default::default()
        };
        let started = d
            .start_execution(req, None, Some("schedule"))
            .await
            .map_err(|s| s.message().to_string())?;
        Ok(started.execution)
    }
}

impl Daemon {
    /// Starts the schedule trigger (it ends when the daemon shuts down).
    pub(super) fn start_schedule_trigger(&self) {
        let trigger = Trigger {
            jobs: DaemonJobs(self.me.clone()),
            clock: SystemClock,
            store: self.store.clone(),
            changed: self.jobs.schedules_changed.clone(),
            stop: self.shutdown.clone(),
        };
        self.jobs.runs.spawn(trigger.run());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::job::cron::{OVERLAP, SCHEDULE, TIME_ZONE};
    use tokio::sync::Mutex;
    use tokio::time::Instant;

    /// Wall time that moves with tokio's (paused) clock.
    struct TestClock {
        base: DateTime<Utc>,
        start: Instant,
    }

    impl TestClock {
        fn at(rfc3339: &str) -> TestClock {
            TestClock {
                base: at(rfc3339),
                start: Instant::now(),
            }
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            self.base + chrono::Duration::from_std(self.start.elapsed()).unwrap()
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[derive(Default)]
    struct Script {
        /// Annotations by job.
        jobs: BTreeMap<String, BTreeMap<String, String>>,
        running: bool,
        /// (job, the time of the start, by the test clock's base + elapsed).
        started: Vec<(String, Duration)>,
    }

    /// Scripted jobs: what they are, whether one runs; records the starts.
    #[derive(Clone)]
    struct Fake {
        script: Arc<Mutex<Script>>,
        start: Instant,
    }

    impl ScheduledJobs for Fake {
        async fn schedules(&self) -> Vec<(String, Schedule)> {
            let s = self.script.lock().await;
            s.jobs
                .iter()
                .filter_map(|(j, a)| {
                    Schedule::from_annotations(a)
                        .unwrap()
                        .map(|s| (j.clone(), s))
                })
                .collect()
        }
        async fn running(&self, _job: &str) -> bool {
            self.script.lock().await.running
        }
        async fn start(&self, job: &str) -> Result<String, String> {
            let mut s = self.script.lock().await;
            s.started.push((job.to_string(), self.start.elapsed()));
            Ok(format!("{job}-x"))
        }
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    struct Running {
        fake: Fake,
        changed: Arc<Notify>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    /// Starts the trigger at wall time `now` over `store`, with `jobs`.
    fn start(store: &Arc<Store>, now: &str, jobs: &[(&str, &[(&str, &str)])]) -> Running {
        let script = Script {
            jobs: jobs
                .iter()
                .map(|(j, a)| (j.to_string(), annotations(a)))
                .collect(),
            ..Default::default()
        };
        let fake = Fake {
            script: Arc::new(Mutex::new(script)),
            start: Instant::now(),
        };
        let changed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let trigger = Trigger {
            jobs: fake.clone(),
            clock: TestClock::at(now),
            store: store.clone(),
            changed: changed.clone(),
            stop: stop.clone(),
        };
        let task = tokio::spawn(trigger.run());
        Running {
            fake,
            changed,
            stop,
            task,
        }
    }

    impl Running {
        async fn started(&self) -> Vec<(String, u64)> {
            self.fake
                .script
                .lock()
                .await
                .started
                .iter()
                .map(|(j, d)| (j.clone(), d.as_millis() as u64))
                .collect()
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.unwrap();
        }
    }

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        (dir, store)
    }

    const EVERY_MINUTE: &[(&str, &str)] = &[(SCHEDULE, "* * * * *")];

    fn j(job: &str, ms: u64) -> (String, u64) {
        (job.to_string(), ms)
    }

    #[tokio::test(start_paused = true)]
    async fn each_due_time_starts_one_execution_on_time() {
        let (_dir, store) = store();
        let r = start(&store, "2026-12-03T10:00:30Z", &[("a", EVERY_MINUTE)]);
        tokio::time::sleep(Duration::from_secs(190)).await;
        // 10:01, 10:02, 10:03: 30 s, 90 s, 150 s in.
        assert_eq!(
            r.started().await,
            vec![j("a", 30_000), j("a", 90_000), j("a", 150_000)]
        );
        r.stop().await;
        let f: Fired = store.get(KIND, "a").unwrap().unwrap();
        assert_eq!(
            f.last_fired_ms,
            Some(at("2026-12-03T10:03:00Z").timestamp_millis())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_runs_only_the_most_recent_missed_run() {
        let (_dir, store) = store();
        let r = start(
            &store,
            "2026-12-03T10:04:30Z",
            &[("a", &[(SCHEDULE, "*/5 * * * *")])],
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(r.started().await, vec![j("a", 30_000)]);
        r.stop().await;
        // Down from 10:05:30 to 11:03:10: 11 runs missed; the one of 11:00 starts at
        // once, then 11:05 on time.
        let r = start(
            &store,
            "2026-12-03T11:03:10Z",
            &[("a", &[(SCHEDULE, "*/5 * * * *")])],
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(r.started().await, vec![j("a", 0), j("a", 110_000)]);
        r.stop().await;
        // A restart with nothing missed starts nothing.
        let r = start(
            &store,
            "2026-12-03T11:05:20Z",
            &[("a", &[(SCHEDULE, "*/5 * * * *")])],
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(r.started().await, vec![]);
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_schedule_set_before_a_restart_fires_its_missed_first_run() {
        let (_dir, store) = store();
        let r = start(
            &store,
            "2026-12-03T10:00:10Z",
            &[("a", &[(SCHEDULE, "0 * * * *")])],
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        r.stop().await;
        let r = start(
            &store,
            "2026-12-03T12:30:00Z",
            &[("a", &[(SCHEDULE, "0 * * * *")])],
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(r.started().await, vec![j("a", 0)]);
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_due_while_one_runs_is_skipped_unless_the_job_says_start() {
        let (_dir, store) = store();
        let start_too: &[(&str, &str)] = &[(SCHEDULE, "* * * * *"), (OVERLAP, "start")];
        let r = start(
            &store,
            "2026-12-03T10:00:30Z",
            &[("skips", EVERY_MINUTE), ("starts", start_too)],
        );
        r.fake.script.lock().await.running = true;
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(
            r.started().await,
            vec![j("starts", 30_000), j("starts", 90_000)]
        );
        // Skipped runs are not made up for when the running one ends.
        r.fake.script.lock().await.running = false;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let started = r.started().await;
        assert_eq!(started.len(), 4, "{started:?}");
        assert_eq!(started[2..].iter().filter(|(j, _)| j == "skips").count(), 1);
        assert!(started.contains(&j("skips", 150_000)), "{started:?}");
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_seen_at_once_and_a_cleared_schedule_is_forgotten() {
        let (_dir, store) = store();
        let r = start(&store, "2026-12-03T10:00:30Z", &[]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Set at 10:00:35 in Paris: every minute still, first at 10:01:00.
        r.fake.script.lock().await.jobs.insert(
            "a".into(),
            annotations(&[(SCHEDULE, "* * * * *"), (TIME_ZONE, "Europe/Paris")]),
        );
        r.changed.notify_one();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(r.started().await, vec![j("a", 30_000)]);
        assert!(store.get::<Fired>(KIND, "a").unwrap().is_some());
        r.fake.script.lock().await.jobs.clear();
        r.changed.notify_one();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(r.started().await, vec![j("a", 30_000)]);
        assert!(store.get::<Fired>(KIND, "a").unwrap().is_none());
        r.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_schedule_starts_afresh() {
        let (_dir, store) = store();
        let r = start(
            &store,
            "2026-12-03T10:00:30Z",
            &[("a", &[(SCHEDULE, "0 * * * *")])],
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        r.stop().await;
        // The schedule changed while the daemon was down: its runs count from the start.
        let r = start(
            &store,
            "2026-12-03T12:30:30Z",
            &[("a", &[(SCHEDULE, "15 * * * *")])],
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(r.started().await, vec![]);
        r.stop().await;
    }
}
