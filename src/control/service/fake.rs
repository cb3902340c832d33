//! A scripted [`Instances`] for tests of the controller's timing under paused tokio time:
//! launches take a set time and succeed or fail, and every launch and stop is recorded with
//! the (virtual) time it happened.
// The fake's bookkeeping is a few pushes under a lock never held across an await.
#![allow(clippy::disallowed_types)]

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Instances;
use crate::control::service::instance::{Running, StartError};
use crate::control::Stopped;
use crate::runtime::{ExitStatus, RuntimeError};
use crate::spec::ServiceSpec;

pub struct Fake {
    pub spec: ServiceSpec,
    pub launch_takes: Duration,
    /// Every launch fails (the container "exits with code 5" during start-up).
    pub fail: bool,
    pub launched: StdMutex<Vec<(String, Instant)>>,
    /// Every stop: the instance, when, and the grace it was given before SIGKILL.
    pub stopped: StdMutex<Vec<(String, Instant, Duration)>>,
    /// One sender per ready instance, in launch order: sending an exit status "exits" it.
    pub exits: StdMutex<Vec<watch::Sender<Option<ExitStatus>>>>,
    oom_tx: StdMutex<Option<mpsc::UnboundedSender<String>>>,
}

impl Fake {
    pub fn new(spec: ServiceSpec, launch_takes: Duration, fail: bool) -> Fake {
        Fake {
            spec,
            launch_takes,
            fail,
            launched: StdMutex::new(vec![]),
            stopped: StdMutex::new(vec![]),
            exits: StdMutex::new(vec![]),
            oom_tx: StdMutex::new(None),
        }
    }

    /// Reports an OOM kill in instance `id` (its main process lives on), as the runtime's
    /// OOM events do.
    pub fn oom(&self, id: &str) {
        if let Some(tx) = &*self.oom_tx.lock().unwrap() {
            let _ = tx.send(id.to_string());
        }
    }
}

impl Instances for Fake {
    fn spec(&self) -> &ServiceSpec {
        &self.spec
    }
    async fn launch(&self, id: &str) -> Result<Running, StartError> {
        self.launched
            .lock()
            .unwrap()
            .push((id.to_string(), Instant::now()));
        tokio::time::sleep(self.launch_takes).await;
        if self.fail {
            return Err(StartError::Exited(ExitStatus { code: 5 }));
        }
        let (r, tx) = Running::without_container(id);
        self.exits.lock().unwrap().push(tx);
        Ok(r)
    }
    async fn stop(&self, running: Running, grace: Duration) -> Option<Stopped> {
        self.stopped
            .lock()
            .unwrap()
            .push((running.id, Instant::now(), grace));
        None
    }
    async fn oom_events(&self) -> Result<mpsc::UnboundedReceiver<String>, RuntimeError> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.oom_tx.lock().unwrap() = Some(tx);
        Ok(rx)
    }
    async fn oom_killed(&self, _: &str) -> bool {
        false
    }
}
