//! The start-up backoff: after failed starts, the controller waits before the next one, so a
//! revision that cannot start is retried without a hot loop.

use std::time::Duration;

/// How long to wait before the next start after `failures` failed starts in a row: 500 ms
/// doubled per failure (so 1 s after the first), at most 60 s.
pub fn start_backoff(failures: u32) -> Duration {
    Duration::from_millis(500 * 2u64.saturating_pow(failures.min(7))).min(Duration::from_secs(60))
}

/// An instance that exits this soon after it became ready counts as a crash for the
/// backoff, as a failed start does: a container that passes its start-up probe and dies
/// at once, again and again, is not restarted as fast as launches go.
pub const EARLY_EXIT: Duration = Duration::from_secs(10);

/// Whether an instance that exited after being ready for `lived` exited early.
pub fn exited_early(lived: Duration) -> bool {
    lived < EARLY_EXIT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_within_ten_seconds_of_ready_are_early() {
        for (ms, early) in [
            (0, true),
            (1_300, true),
            (9_999, true),
            (10_000, false),
            (600_000, false),
        ] {
            assert_eq!(exited_early(Duration::from_millis(ms)), early, "{ms} ms");
        }
    }

    #[test]
    fn doubles_from_one_second_up_to_a_minute() {
        let table: &[(u32, u64)] = &[
            (0, 500),
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (5, 16_000),
            (6, 32_000),
            (7, 60_000),
            (8, 60_000),
            (30, 60_000),
            (u32::MAX, 60_000),
        ];
        for &(failures, ms) in table {
            assert_eq!(
                start_backoff(failures),
                Duration::from_millis(ms),
                "after {failures} failures"
            );
        }
    }
}
