//! Process-wide state shared by the start-up code, the signal handler and
//! the request handlers: timestamps, request counters and the stdin probe.
//!
//! Everything is a lock-free atomic (or a `OnceLock`) in one `static`, so
//! no handle has to be threaded through the code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the start-up read of stdin (fd 0) observed.
#[derive(Debug, Clone)]
pub struct StdinStatus {
    /// `true` when the read returned 0 bytes (EOF).
    pub eof: bool,
    /// Human-readable outcome: `eof`, `data`, `error: ...`.
    pub detail: String,
}

/// Counters and timestamps. A timestamp of 0 means "not yet".
pub struct State {
    pub started_at: AtomicU64,
    pub listening_at: AtomicU64,
    pub sigterm_at: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    requests_total: AtomicU64,
    seq: AtomicU64,
    /// Set by `/unhealthy`: `/healthz` then answers 500 (for liveness probe tests).
    pub unhealthy: std::sync::atomic::AtomicBool,
    pub stdin: OnceLock<StdinStatus>,
}

pub static STATE: State = State {
    started_at: AtomicU64::new(0),
    listening_at: AtomicU64::new(0),
    sigterm_at: AtomicU64::new(0),
    in_flight: AtomicU64::new(0),
    max_in_flight: AtomicU64::new(0),
    requests_total: AtomicU64::new(0),
    seq: AtomicU64::new(0),
    unhealthy: std::sync::atomic::AtomicBool::new(false),
    stdin: OnceLock::new(),
};

/// Snapshot of the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub requests_total: u64,
}

impl State {
    pub fn concurrency(&self) -> Concurrency {
        Concurrency {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
            requests_total: self.requests_total.load(Ordering::SeqCst),
        }
    }

    /// A fresh number, unique within this process (starts at 1).
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Timestamp as `Some(millis)`, or `None` if it was never set.
    pub fn stamp(v: &AtomicU64) -> Option<u64> {
        match v.load(Ordering::SeqCst) {
            0 => None,
            t => Some(t),
        }
    }
}

/// RAII marker for one request in flight. Created when a request arrives;
/// it travels with the response body and is dropped when the body has been
/// fully sent (or the request was abandoned), so streamed responses count
/// for their whole duration.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> InFlight {
        STATE.requests_total.fetch_add(1, Ordering::SeqCst);
        let now = STATE.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        STATE.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        STATE.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_and_max() {
        // Other tests may run concurrently and touch the counters, so only
        // check relations that hold regardless.
        let a = InFlight::enter();
        let b = InFlight::enter();
        let c = STATE.concurrency();
        assert!(c.in_flight >= 2);
        assert!(c.max_in_flight >= c.in_flight);
        assert!(c.requests_total >= 2);
        drop(a);
        drop(b);
        assert!(STATE.concurrency().max_in_flight >= 2);
    }

    #[test]
    fn seq_increases() {
        let a = STATE.next_seq();
        let b = STATE.next_seq();
        assert!(b > a);
    }
}
