//! One routable instance as the data path sees it ([`Endpoint`]: its address, its in-flight
//! count, this thread's connections to it, why it died, its [`IdleHook`]), and the
//! [`Snapshot`] of them that the control path publishes.
//!
//! Why it died is a `watch` the control path sets and the data path reads, never a call the
//! other way: a forwarded request that fails asks it whether to answer 500 (out of memory)
//! or 502 (a crash), and every request in flight selects on [`Endpoint::out_of_memory`],
//! so an OOM kill ends them all with 500 at once, a response already streaming cut
//! (LIFE-9), even while the instance's main process lives on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::body::ClientBody;
use super::upstream::Upstream;
use super::worker::{self, MAX_WORKERS};
use crate::dial::Dial;

/// Why an instance stopped serving; set by the control path, read when a forwarded request
/// fails, to tell an out-of-memory kill (500, LIFE-9) from a crash (502). An out-of-memory
/// kill also ends every request in flight on the instance at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    OutOfMemory,
    Exited(String),
}

/// Told when an instance goes idle (no request in flight) or busy; `--cpu-throttling`
/// implements it (the runtime's CPU quota writer). Called at the transitions only, never
/// once per request.
pub trait IdleHook: Send + Sync + 'static {
    /// The in-flight count went 0→1 or 1→0, or the instance became ready. `idle` says
    /// whether no request is in flight now: read under the hook's own lock, whichever of
    /// two racing transitions acts last acts on what is true now.
    fn sync(&self, idle: &dyn Fn() -> bool);
    /// The instance is being stopped: undo what the hook did, for good.
    fn release(&self);
}

/// One routable instance, as the data path sees it.
pub struct Endpoint {
    pub instance: String,
    /// `127.0.0.1:PORT`: the instance's own loopback, reached inside its namespace.
    pub(super) authority: http::uri::Authority,
    pub(super) in_flight: AtomicUsize,
    /// Set when the instance is being stopped: no new request takes it, whatever snapshot
    /// the request read.
    pub(super) closed: AtomicBool,
    pub(super) http2: bool,
    dialer: Arc<dyn Dial>,
    /// One connection pool per ingress worker thread, made on first use: a request and the
    /// upstream connection it uses are driven by the same thread, with no cross-thread
    /// wake-up (measured: a third of the proxy's CPU per request).
    upstreams: [OnceLock<Upstream<ClientBody>>; MAX_WORKERS + 1],
    death: watch::Sender<Option<Death>>,
    /// Told of idle/busy transitions (`--cpu-throttling`); none costs nothing.
    idle_hook: Option<Box<dyn IdleHook>>,
}

impl Endpoint {
    pub fn new(instance: String, port: u16, dialer: Arc<dyn Dial>, http2: bool) -> Self {
        let authority = http::uri::Authority::try_from(format!("127.0.0.1:{port}"))
            .unwrap_or_else(|_| http::uri::Authority::from_static("127.0.0.1"));
        Endpoint {
            instance,
            authority,
            in_flight: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            http2,
            dialer,
            upstreams: Default::default(),
            death: watch::channel(None).0,
            idle_hook: None,
        }
    }

    /// Tells `hook` whenever the instance goes idle or busy (`--cpu-throttling`).
    pub fn with_idle_hook(mut self, hook: impl IdleHook) -> Self {
        self.idle_hook = Some(Box::new(hook));
        self
    }

    /// Tells the idle hook whether a request is in flight now. Called at the 0→1 and 1→0
    /// transitions (and by the control path once the instance is ready).
    pub fn sync_idle_hook(&self) {
        if let Some(hook) = &self.idle_hook {
            hook.sync(&|| self.in_flight.load(Ordering::SeqCst) == 0);
        }
    }

    /// Releases the idle hook for good (the instance is being stopped).
    pub fn release_idle_hook(&self) {
        if let Some(hook) = &self.idle_hook {
            hook.release();
        }
    }

    /// This thread's connections to the instance.
    #[inline]
    pub(super) fn upstream(&self) -> &Upstream<ClientBody> {
        self.upstreams[worker::index()]
            .get_or_init(|| Upstream::new(self.dialer.clone(), self.authority.clone(), self.http2))
    }

    /// Records why the instance died, and closes it to new requests. The first cause wins,
    /// except that an out-of-memory kill replaces a cause found before it (an instance
    /// being drained after a failed liveness probe can still go over its memory limit):
    /// then every request in flight on it ends with 500 at once, a response already
    /// streaming is cut, and a WebSocket tunnel closed (LIFE-9).
    pub fn mark_dead(&self, cause: Death) {
        self.close();
        self.death.send_if_modified(|cur| {
            let replace = matches!(
                (&*cur, &cause),
                (None, _) | (Some(Death::Exited(_)), Death::OutOfMemory)
            );
            if replace {
                *cur = Some(cause);
            }
            replace
        });
    }

    /// Whether the instance was marked out of memory.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(*self.death.borrow(), Some(Death::OutOfMemory))
    }

    /// Resolves once the instance is marked out of memory (at once if it already is): a
    /// request in flight on it selects on this to end with 500 (LIFE-9). Costs a
    /// subscription to the `watch`, no call to the control path.
    pub(super) async fn out_of_memory(&self) {
        let mut rx = self.death.subscribe();
        if rx
            .wait_for(|d| matches!(d, Some(Death::OutOfMemory)))
            .await
            .is_err()
        {
            // The sender lives in `self`: it cannot be gone while this borrows it.
            std::future::pending::<()>().await;
        }
    }

    /// The cause of death, waiting up to `until` for the control path to learn it.
    pub(super) async fn death_by(&self, until: Instant) -> Option<Death> {
        let mut rx = self.death.subscribe();
        let found = tokio::time::timeout_at(until, rx.wait_for(|d| d.is_some()))
            .await
            .map(|r| r.map(|d| d.clone()));
        match found {
            Ok(Ok(d)) => d,
            _ => None,
        }
    }

    /// Takes no new requests from now on; requests already in flight finish. (After this,
    /// `in_flight` only goes down.)
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> usize {
        // SeqCst: read after `close`, it sees every request that did not see the mark.
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// The set of instances requests may go to. Published by the control path.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Instances being started (requests may wait for them).
    pub starting: usize,
    /// True when no more instances can be started.
    pub at_max: bool,
    /// Set when the latest start-up failed: waiting requests get 503 with this reason.
    pub failed_start: Option<String>,
    /// The service's average observed instance start-up time.
    pub avg_startup: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::Loopback;

    fn endpoint() -> Endpoint {
        let nowhere = "127.0.0.1:9".parse().unwrap();
        Endpoint::new("i".into(), 9, Arc::new(Loopback(nowhere)), false)
    }

    #[test]
    fn the_first_cause_of_death_wins_but_an_out_of_memory_kill_replaces_an_exit() {
        let exited = || Death::Exited("exit code 1".into());
        let table = [
            (vec![exited()], Some(exited())),
            (vec![Death::OutOfMemory], Some(Death::OutOfMemory)),
            (vec![exited(), Death::OutOfMemory], Some(Death::OutOfMemory)),
            (vec![Death::OutOfMemory, exited()], Some(Death::OutOfMemory)),
        ];
        for (marks, want) in table {
            let e = endpoint();
            for m in marks.clone() {
                e.mark_dead(m);
            }
            assert_eq!(*e.death.borrow(), want, "{marks:?}");
            assert!(e.closed.load(Ordering::SeqCst), "{marks:?}: closed");
            assert_eq!(e.is_out_of_memory(), want == Some(Death::OutOfMemory));
        }
    }

    #[tokio::test]
    async fn requests_waiting_on_an_endpoint_learn_of_an_out_of_memory_kill_at_once() {
        let e = Arc::new(endpoint());
        let waiting = tokio::spawn({
            let e = e.clone();
            async move { e.out_of_memory().await }
        });
        e.mark_dead(Death::Exited("liveness probe failed".into()));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "an exit is not an OOM kill");
        e.mark_dead(Death::OutOfMemory);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken by the mark")
            .unwrap();
        // One that starts waiting after the mark returns at once.
        tokio::time::timeout(Duration::from_millis(10), e.out_of_memory())
            .await
            .expect("already marked");
    }
}
