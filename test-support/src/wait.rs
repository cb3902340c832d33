//! Waiting for evidence: a condition checked again and again until it holds or a deadline
//! passes, so that a test never assumes that something has happened after a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// Whether `f` comes true within `limit` (checked every 20 ms), for blocking tests.
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `check` every `every` until it gives `Some` (returned) or `limit` has passed
/// (`Ok(None)`); an error from `check` ends the wait at once.
pub async fn poll<T, E, F, Fut>(
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(Some(v));
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_sees_a_condition_come_true_and_gives_up() {
        let mut n = 0;
        assert!(within(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert!(!within(Duration::from_millis(50), || false));
    }

    #[tokio::test(start_paused = true)]
    async fn poll_returns_the_value_or_none_after_the_limit() {
        let mut n = 0;
        let got: Result<_, ()> = poll(Duration::from_secs(5), Duration::from_millis(10), || {
            n += 1;
            let v = (n == 4).then_some(n);
            async move { Ok(v) }
        })
        .await;
        assert_eq!(got, Ok(Some(4)));
        let none: Result<Option<()>, ()> = poll(
            Duration::from_secs(1),
            Duration::from_millis(100),
            || async { Ok(None) },
        )
        .await;
        assert_eq!(none, Ok(None));
        let err: Result<Option<()>, &str> = poll(
            Duration::from_secs(1),
            Duration::from_millis(100),
            || async { Err("x") },
        )
        .await;
        assert_eq!(err, Err("x"));
    }
}
