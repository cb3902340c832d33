//! Admission: a request takes a [`Slot`] on the least-loaded instance with room
//! ([`try_acquire`]), or waits for one up to the hold time ([`acquire`], LIFE-3), counted in
//! the [`Demand`] the control path reads to scale out. The slot holds the capacity until the
//! response ends. (knative's queue `breaker.go` plays this part there.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::endpoint::{Endpoint, Snapshot};
use super::lane::Lane;
use super::refusal::Refusal;

/// How long a request may wait for a slot (LIFE-3): the base hold (10 s); while an instance
/// is starting, at least the service's average start-up time, with a margin for a start a
/// bit slower than average (1.5 × the average + 1 s). Always also bounded by the request's
/// own deadline.
pub fn hold_for(base: Duration, starting: bool, avg_startup: Option<Duration>) -> Duration {
    match (starting, avg_startup) {
        (true, Some(avg)) => base.max(avg * 3 / 2 + Duration::from_secs(1)),
        _ => base,
    }
}

/// Demand, reported by the data path to the control path without a call.
#[derive(Default)]
pub struct Demand {
    pub queued: AtomicUsize,
    /// Woken when a request has to wait (so the control path can scale out).
    pub wake: Notify,
    /// Woken when a request finishes (capacity freed).
    released: Notify,
}

/// Releases an instance slot when dropped, so every exit path frees it.
pub(super) struct Slot {
    pub(super) endpoint: Arc<Endpoint>,
    demand: Arc<Demand>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SeqCst with the `queued` load below and the waiter's `queued` increment and
        // `in_flight` load: either the waiter sees the freed slot or this sees the waiter.
        if self.endpoint.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.endpoint.sync_idle_hook();
        }
        // Only waiters need the wake-up (and notify_waiters takes a lock). A waiter counts
        // itself in `queued` before it looks for a slot, so it cannot miss this.
        if self.demand.queued.load(Ordering::SeqCst) > 0 {
            self.demand.released.notify_waiters();
        }
    }
}

/// Takes a slot on the least-loaded endpoint with free capacity (no allocation: this runs
/// for every request).
pub(super) fn try_acquire(
    snapshot: &Snapshot,
    concurrency: usize,
    demand: &Arc<Demand>,
) -> Option<Slot> {
    loop {
        let best = snapshot
            .endpoints
            .iter()
            .filter(|e| !e.closed.load(Ordering::SeqCst))
            .map(|e| (e, e.in_flight.load(Ordering::SeqCst)))
            .filter(|(_, n)| *n < concurrency)
            .min_by_key(|(_, n)| *n)?;
        let (e, cur) = best;
        if e.in_flight
            .compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let slot = Slot {
                endpoint: e.clone(),
                demand: demand.clone(),
            };
            // SeqCst with `close`: either the control path sees this request in flight
            // and waits for it, or this sees the endpoint closed and lets it go.
            if e.closed.load(Ordering::SeqCst) {
                drop(slot);
                continue;
            }
            if cur == 0 {
                e.sync_idle_hook();
            }
            return Some(slot);
        }
        // Raced with another request: look again.
    }
}

/// Waits for a slot on `lane`'s route: held while instances start, up to the hold time
/// (LIFE-3).
pub(super) async fn acquire(lane: &Lane, deadline: Instant) -> Result<Slot, Refusal> {
    if let Some(s) = lane.try_acquire_cached() {
        return Ok(s);
    }
    let mut snap_rx = lane.route.snapshot.clone();
    let queued = lane.route.demand.queued.fetch_add(1, Ordering::SeqCst) + 1;
    struct Unqueue<'a>(&'a Demand);
    impl Drop for Unqueue<'_> {
        fn drop(&mut self) {
            self.0.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _unqueue = Unqueue(&lane.route.demand);
    if queued > lane.cfg().max_queue {
        return Err(Refusal::QueueFull);
    }
    lane.route.demand.wake.notify_one();
    let started = Instant::now();
    loop {
        let hold_until = {
            let snap = snap_rx.borrow();
            (started + hold_for(lane.cfg().hold, snap.starting > 0, snap.avg_startup)).min(deadline)
        };
        let released = lane.route.demand.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        {
            let snap = snap_rx.borrow_and_update();
            if let Some(s) = try_acquire(&snap, lane.cfg().concurrency, &lane.route.demand) {
                lane.queue_wait.observe(started.elapsed().as_secs_f64());
                return Ok(s);
            }
            if let Some(reason) = &snap.failed_start {
                if snap.endpoints.is_empty() && snap.starting == 0 {
                    return Err(Refusal::StartFailed(reason.clone()));
                }
            }
        }
        tokio::select! {
            _ = &mut released => {}
            r = snap_rx.changed() => if r.is_err() { return Err(Refusal::NoInstance) },
            _ = tokio::time::sleep_until(hold_until) => {
                if hold_until >= deadline {
                    return Err(Refusal::Timeout);
                }
                let snap = snap_rx.borrow();
                return Err(if snap.at_max { Refusal::RateExceeded } else { Refusal::NoInstance });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::Dial;
    use crate::ingress::IdleHook;
    use std::future::Future;
    use std::pin::Pin;

    #[test]
    fn hold_times() {
        let ten = Duration::from_secs(10);
        let table = [
            (false, None, ten),
            (true, None, ten),
            (true, Some(Duration::from_secs(2)), ten),
            (true, Some(Duration::from_secs(6)), ten),
            (true, Some(Duration::from_secs(12)), Duration::from_secs(19)),
            (true, Some(Duration::from_secs(30)), Duration::from_secs(46)),
            (false, Some(Duration::from_secs(30)), ten),
        ];
        for (starting, avg, want) in table {
            assert_eq!(
                hold_for(ten, starting, avg),
                want,
                "starting={starting} avg={avg:?}"
            );
        }
    }

    struct Nowhere;
    impl Dial for Nowhere {
        fn dial(
            &self,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<tokio::net::TcpStream>> + Send + '_>>
        {
            Box::pin(async { Err(std::io::Error::other("nowhere")) })
        }
    }

    fn endpoint(name: &str) -> Endpoint {
        Endpoint::new(name.into(), 8080, Arc::new(Nowhere), false)
    }

    #[test]
    fn requests_go_to_the_least_loaded_open_endpoint_with_room() {
        let (a, b) = (Arc::new(endpoint("a")), Arc::new(endpoint("b")));
        let snap = Snapshot {
            endpoints: vec![a.clone(), b.clone()],
            ..Default::default()
        };
        let demand = Arc::new(Demand::default());
        let take = || try_acquire(&snap, 2, &demand);
        let s1 = take().unwrap();
        let s2 = take().unwrap();
        assert_ne!(
            s1.endpoint.instance, s2.endpoint.instance,
            "least loaded first"
        );
        let s3 = take().unwrap();
        let s4 = take().unwrap();
        assert!(take().is_none(), "concurrency 2 on both");
        drop((s1, s2, s3, s4));
        // A closed endpoint (being stopped) takes nothing, even from a snapshot that still
        // lists it.
        a.close();
        let held = [take().unwrap(), take().unwrap()];
        assert!(take().is_none(), "b is full and a is closed");
        assert_eq!((a.in_flight(), b.in_flight()), (0, 2));
        drop(held);
    }

    /// Records what the hook was told: `Some(idle)` per sync, `None` for release.
    struct Recorder(std::sync::mpsc::Sender<Option<bool>>);

    impl IdleHook for Recorder {
        fn sync(&self, idle: &dyn Fn() -> bool) {
            self.0.send(Some(idle())).unwrap();
        }
        fn release(&self) {
            self.0.send(None).unwrap();
        }
    }

    #[test]
    fn the_idle_hook_is_told_exactly_at_the_idle_and_busy_transitions() {
        let (tx, told) = std::sync::mpsc::channel();
        let e = Arc::new(endpoint("i").with_idle_hook(Recorder(tx)));
        let snap = Snapshot {
            endpoints: vec![e.clone()],
            ..Default::default()
        };
        let demand = Arc::new(Demand::default());
        e.sync_idle_hook();
        let a = try_acquire(&snap, 80, &demand).unwrap();
        let b = try_acquire(&snap, 80, &demand).unwrap();
        drop(a);
        drop(b);
        e.release_idle_hook();
        let want = [Some(true), Some(false), Some(true), None];
        let got: Vec<_> = told.try_iter().collect();
        assert_eq!(got, want, "ready, first request, idle again, stopping");
    }
}
