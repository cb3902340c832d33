//! The cap on client connections open on the ingress, process-wide (file descriptors are):
//! an accept loop takes a permit before it accepts, so once the cap is reached new
//! connections wait in the listen backlog until one closes, rather than runlet failing
//! `accept` with `EMFILE` (and the instances' connections, the state files and containerd's
//! with it). Waiting is logged (at most every [`WARN_EVERY`]) and counted
//! (`runlet_ingress_connection_limit_waits_total`); the connections open are a gauge
//! (`runlet_ingress_connections`).
//!
//! A connection upgraded to a tunnel (WebSocket) keeps its place until the tunnel closes:
//! hyper's connection future ends at the upgrade, so the tunnel holds a share of the
//! connection's [`Permit`] (see `tunnel.rs`).
//!
//! The cap is `RUNLET_MAX_CONNECTIONS`, else [`default_limit`] of the open-file limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::metrics::Metrics;

/// At most one warning about the cap this often.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Descriptors kept for everything that is not a client connection (listeners, containerd,
/// state files, the metrics and API listeners), at most.
const RESERVE: u64 = 1024;

/// The fewest connections the default allows.
const MIN_LIMIT: u64 = 64;

/// How many client connections may be open, given the soft open-file limit: a reserve is
/// kept (a quarter of the limit, at most [`RESERVE`]), and each client connection is
/// counted twice, since one in use holds a connection to an instance too.
pub fn default_limit(nofile: u64) -> usize {
    let reserve = (nofile / 4).min(RESERVE);
    let limit = (nofile.saturating_sub(reserve) / 2).max(MIN_LIMIT);
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// The cap: `RUNLET_MAX_CONNECTIONS` if set to a positive number, else [`default_limit`] of
/// the current soft `RLIMIT_NOFILE`.
pub fn max_connections() -> usize {
    std::env::var("RUNLET_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| {
            let nofile = crate::fdlimit::current().map_or(1024, |(soft, _)| soft);
            default_limit(nofile)
        })
}

/// The permits, one per connection, shared by every ingress thread of the process.
struct Global {
    permits: Arc<Semaphore>,
    limit: usize,
    /// When the last warning was logged (ms since `epoch`; `u64::MAX`: never).
    warned_at: AtomicU64,
    /// Waits since the last warning.
    waits: AtomicU64,
    epoch: tokio::time::Instant,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        // Semaphore's own maximum is usize::MAX >> 3.
        let limit = max_connections().min(Semaphore::MAX_PERMITS);
        Global {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            warned_at: AtomicU64::new(u64::MAX),
            waits: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
        }
    })
}

/// Whether a warning is due at `now_ms`, the last one having been at `last_ms`
/// (`u64::MAX`: none yet).
fn warn_due(last_ms: u64, now_ms: u64) -> bool {
    last_ms == u64::MAX || now_ms.saturating_sub(last_ms) >= WARN_EVERY.as_millis() as u64
}

/// One accept loop's handle on the cap.
pub(super) struct ConnLimit {
    global: &'static Global,
    open: IntGauge,
    waited: IntCounter,
}

/// A connection's place under the cap, given back when its last clone is dropped: the
/// connection's task holds one, and the tunnel of an upgraded connection another.
#[derive(Clone)]
pub(super) struct Permit {
    _held: Arc<Held>,
}

struct Held {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl ConnLimit {
    pub(super) fn new(metrics: &Metrics) -> Self {
        let global = global();
        metrics
            .connection_limit
            .set(i64::try_from(global.limit).unwrap_or(i64::MAX));
        ConnLimit {
            global,
            open: metrics.connections.clone(),
            waited: metrics.connection_limit_waits.clone(),
        }
    }

    /// A permit for the next connection, waiting (logged and counted) while the cap is
    /// reached.
    pub(super) async fn acquire(&self) -> OwnedSemaphorePermit {
        let permits = &self.global.permits;
        if let Ok(p) = permits.clone().try_acquire_owned() {
            return p;
        }
        self.waited.inc();
        self.warn();
        permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// `permit` now held by an accepted connection, until the returned value is dropped.
    pub(super) fn open(&self, permit: OwnedSemaphorePermit) -> Permit {
        self.open.inc();
        Permit {
            _held: Arc::new(Held {
                _permit: permit,
                open: self.open.clone(),
            }),
        }
    }

    fn warn(&self) {
        let g = self.global;
        let waits = g.waits.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(g.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = g.warned_at.load(Ordering::Relaxed);
        if warn_due(last, now)
            && g.warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            g.waits.store(0, Ordering::Relaxed);
            warn!(
                limit = g.limit,
                "{waits} new client connection(s) wait: {} connections are open, the most runlet keeps (RUNLET_MAX_CONNECTIONS, else from the open-file limit)",
                g.limit
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_keeps_a_reserve_and_two_descriptors_a_connection() {
        let table = [
            (0, 64),
            (256, 96),
            (1024, 384),
            (4096, 1536),
            (20_000, 9488),
            (1_048_576, 523_776),
        ];
        for (nofile, want) in table {
            assert_eq!(default_limit(nofile), want, "{nofile}");
        }
    }

    #[test]
    fn a_warning_at_most_every_ten_seconds() {
        let table = [
            (u64::MAX, 0, true),
            (u64::MAX, 5, true),
            (0, 9_999, false),
            (0, 10_000, true),
            (5_000, 4_000, false),
        ];
        for (last, now, due) in table {
            assert_eq!(warn_due(last, now), due, "{last} {now}");
        }
    }
}
