//! What a listener does when `accept` fails: the ingress workers and the metrics listener
//! share it. A failed accept (out of file descriptors: `EMFILE` fails every call at once
//! until one is freed) is retried after a pause that doubles from 5 ms to 1 s (Go's
//! `net/http` server does the same) and goes back to 5 ms after an accept that works, so a
//! short shortage costs little and a long one neither spins a core nor floods the log: the
//! first failure is logged at once, later ones at most every 10 s, with how many there were.

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

/// The first pause after a failed accept.
pub const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);
/// At most one log line per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The pause after a failed accept that follows a pause of `prev` (`None`: the last accept
/// worked).
pub fn next_pause(prev: Option<Duration>) -> Duration {
    prev.map_or(FIRST_PAUSE, |p| (p * 2).min(MAX_PAUSE))
}

/// Whether a failure at `now` is logged, the last line having been written at `last`.
pub fn log_now(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|l| now.duration_since(l) >= LOG_EVERY)
}

/// One listener's retry state.
pub struct AcceptRetry {
    what: &'static str,
    pause: Option<Duration>,
    last_log: Option<Instant>,
    /// Failures since the last log line.
    unlogged: u64,
    /// Log lines written.
    logged: u64,
}

impl AcceptRetry {
    /// `what` names the listener in the log (`ingress`, `metrics listener`).
    pub fn new(what: &'static str) -> Self {
        AcceptRetry {
            what,
            pause: None,
            last_log: None,
            unlogged: 0,
            logged: 0,
        }
    }

    /// An accept worked: the next failure pauses [`FIRST_PAUSE`] again.
    pub fn succeeded(&mut self) {
        self.pause = None;
    }

    /// An accept failed with `e`: logs it if it is time (see the module comment) and pauses.
    pub async fn failed(&mut self, e: &std::io::Error) {
        let pause = next_pause(self.pause);
        self.pause = Some(pause);
        self.unlogged += 1;
        let now = Instant::now();
        if log_now(self.last_log, now) {
            let what = self.what;
            match self.unlogged {
                1 => warn!("{what}: accept: {e}; trying again in {pause:?}"),
                n => warn!("{what}: accept: {e} ({n} failed accepts since the last report); trying again in {pause:?}"),
            }
            self.last_log = Some(now);
            self.unlogged = 0;
            self.logged += 1;
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_from_5_ms_to_1_s() {
        let mut p = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let next = next_pause(p);
            seen.push(next.as_millis());
            p = Some(next);
        }
        assert_eq!(seen, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_logged_at_once_then_at_most_every_10_s() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (last log, now) -> log?
        let table = [
            (None, t0, true),
            (Some(t0), t0, false),
            (Some(t0), t0 + s(9), false),
            (Some(t0), t0 + s(10), true),
            (Some(t0), t0 + s(60), true),
        ];
        for (last, now, want) in table {
            assert_eq!(log_now(last, now), want, "{last:?} {now:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_shortage_neither_spins_nor_floods_the_log_and_a_success_resets_the_pause() {
        let mut r = AcceptRetry::new("test");
        let emfile = std::io::Error::from_raw_os_error(24);
        let start = Instant::now();
        let mut tries = 0;
        while start.elapsed() < Duration::from_secs(60) {
            r.failed(&emfile).await;
            tries += 1;
        }
        // 5 ms doubling to 1 s: 8 short pauses (1.275 s), then one a second.
        assert!((65..=70).contains(&tries), "{tries} tries in 60 s");
        // At once, then every 10 s: 6 or 7 lines for 60 s of failures.
        assert!((6..=7).contains(&r.logged), "{} log lines", r.logged);
        assert_eq!(r.pause, Some(MAX_PAUSE));
        r.succeeded();
        let before = Instant::now();
        r.failed(&emfile).await;
        assert_eq!(before.elapsed(), FIRST_PAUSE);
    }
}
