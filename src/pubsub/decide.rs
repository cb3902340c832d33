//! The trigger's decisions, as plain functions: what becomes of a task's message as its
//! task goes, how long to wait while the subscription is empty; and their constants.

use std::time::Duration;

use crate::control::job::record::TaskState;

/// Messages per execution at most (one task each).
pub const MAX_BATCH: u32 = 10;
/// While a task runs, its message's ack deadline is kept this far ahead...
pub const LEASE_SECS: u32 = 60;
/// ...renewed this often.
pub const RENEW_EVERY: Duration = Duration::from_secs(20);
/// How often a running execution's tasks are looked at (acks follow their ends).
pub const WATCH_EVERY: Duration = Duration::from_millis(500);
/// The first wait after an empty pull; it doubles up to [`IDLE_MAX`].
pub const IDLE_MIN: Duration = Duration::from_millis(250);
pub const IDLE_MAX: Duration = Duration::from_secs(2);
/// The wait after a failed Pub/Sub call (the emulator down, say).
pub const ERROR_WAIT: Duration = Duration::from_secs(5);

/// The wait before the next pull after an empty one: [`IDLE_MIN`] after a pull that found
/// messages (`previous` `None`), doubling to [`IDLE_MAX`].
pub fn idle_wait(previous: Option<Duration>) -> Duration {
    match previous {
        None => IDLE_MIN,
        Some(d) => (d * 2).clamp(IDLE_MIN, IDLE_MAX),
    }
}

/// What becomes of a message, given its task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The task has not ended: keep the message (its deadline renewed).
    Keep,
    /// Done with it: the task succeeded, or failed after all its retries with nowhere to
    /// forward it (a nacked message would come back forever). The failure is on the
    /// execution.
    Ack,
    /// The task failed after all its retries and the subscription has a dead-letter topic:
    /// publish the message there, then ack it.
    DeadLetter,
    /// The task was cancelled (the execution cancelled, the daemon stopping): give the
    /// message back for another delivery.
    Release,
}

pub fn disposition(task: TaskState, dead_letter_topic: bool) -> Disposition {
    match task {
        TaskState::Pending | TaskState::Running => Disposition::Keep,
        TaskState::Succeeded => Disposition::Ack,
        TaskState::Failed if dead_letter_topic => Disposition::DeadLetter,
        TaskState::Failed => Disposition::Ack,
        TaskState::Cancelled => Disposition::Release,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions() {
        use Disposition::*;
        use TaskState::*;
        let table = [
            (Pending, false, Keep),
            (Running, true, Keep),
            (Succeeded, false, Ack),
            (Succeeded, true, Ack),
            (Failed, false, Ack),
            (Failed, true, DeadLetter),
            (Cancelled, false, Release),
            (Cancelled, true, Release),
        ];
        for (state, dl, want) in table {
            assert_eq!(disposition(state, dl), want, "{state:?} dead letter {dl}");
        }
    }

    #[test]
    fn idle_waits_double_to_the_cap_and_reset() {
        let ms = Duration::from_millis;
        let table = [
            (None, ms(250)),
            (Some(ms(250)), ms(500)),
            (Some(ms(1000)), ms(2000)),
            (Some(ms(2000)), ms(2000)),
            (Some(ms(1)), ms(250)),
        ];
        for (prev, want) in table {
            assert_eq!(idle_wait(prev), want, "{prev:?}");
        }
    }
}
