//! A runtime's OOM event subscription that outlives the runtime's restarts.
//!
//! containerd's event stream ends when containerd restarts (or its call fails while it is
//! away). [`forward_ooms`] subscribes again until it answers, 100 ms doubling to 5 s
//! between failed tries ([`rewait_after`]), and hands every OOM kill to one receiver for the
//! life of the service. It stops, without a warning, once that receiver is gone: a private
//! containerd is stopped only after the services, so its going away is no failure. The
//! decision is here, apart from the gRPC, so that a scripted source can test it.

use std::future::Future;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::control::sandbox::rewait_after;

/// Subscribes with `subscribe` and sends the id of every container in the stream's OOM
/// events to `tx`; subscribes again whenever the stream ends or the call fails (the error's
/// text is logged once per outage). Returns once `tx`'s receiver is dropped.
pub async fn forward_ooms<F, Fut, S>(mut subscribe: F, tx: mpsc::UnboundedSender<String>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S, String>>,
    S: Stream<Item = String>,
{
    let forward = async {
        let mut failures = 0;
        loop {
            match subscribe().await {
                Ok(stream) => {
                    failures = 0;
                    let mut stream = std::pin::pin!(stream);
                    while let Some(id) = stream.next().await {
                        if tx.send(id).is_err() {
                            return;
                        }
                    }
                    if !tx.is_closed() {
                        tracing::info!("containerd's OOM event stream ended: subscribing again");
                    }
                }
                Err(e) if tx.is_closed() => {
                    tracing::debug!("OOM event subscription ended: {e}");
                    return;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(
                            "subscribing to containerd's OOM events: {e}; trying again until it answers"
                        );
                    }
                    failures += 1;
                }
            }
            tokio::time::sleep(rewait_after(failures)).await;
        }
    };
    tokio::select! {
        _ = forward => {}
        _ = tx.closed() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use futures::stream::{self, BoxStream};
    use tokio::time::Instant;

    use super::*;

    /// What one subscribe call does: fail with a message, or give a stream of these ids
    /// that then ends, or one that stays open after them.
    #[derive(Clone)]
    enum Step {
        Fail(&'static str),
        Ends(Vec<&'static str>),
        Open(Vec<&'static str>),
    }

    type Subscribed = futures::future::Ready<Result<BoxStream<'static, String>, String>>;

    /// A scripted event service: answers subscribe calls in order (the last step again
    /// once the script runs out) and tells the time of each call.
    fn scripted(
        steps: Vec<Step>,
    ) -> (impl FnMut() -> Subscribed, mpsc::UnboundedReceiver<Instant>) {
        let (calls, called) = mpsc::unbounded_channel();
        let mut steps: VecDeque<Step> = steps.into();
        let subscribe = move || {
            let _ = calls.send(Instant::now());
            let step = match steps.len() {
                1 => steps[0].clone(),
                _ => steps.pop_front().unwrap(),
            };
            let ids = |v: Vec<&'static str>| stream::iter(v.into_iter().map(String::from));
            futures::future::ready(match step {
                Step::Fail(e) => Err(e.to_string()),
                Step::Ends(v) => Ok(ids(v).boxed()),
                Step::Open(v) => Ok(ids(v).chain(stream::pending()).boxed()),
            })
        };
        (subscribe, called)
    }

    /// The gaps between the calls so far.
    fn gaps(called: &mut mpsc::UnboundedReceiver<Instant>) -> Vec<Duration> {
        let mut at = Vec::new();
        while let Ok(t) = called.try_recv() {
            at.push(t);
        }
        at.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// containerd restarts twice: the first stream ends after one OOM, the calls fail
    /// while it is away, the next stream brings the next OOMs and ends, the last stays.
    /// Every OOM reaches the receiver; the tries back off from 100 ms.
    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_is_subscribed_again() {
        let (subscribe, mut called) = scripted(vec![
            Step::Ends(vec!["a"]),
            Step::Fail("transport error"),
            Step::Fail("transport error"),
            Step::Ends(vec!["b", "c"]),
            Step::Open(vec!["d"]),
        ]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(forward_ooms(subscribe, tx));
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, ["a", "b", "c", "d"]);
        let ms = Duration::from_millis;
        // Ended: 100 ms; failed once: 200 ms; twice: 400 ms; ended: 100 ms.
        assert_eq!(gaps(&mut called), [ms(100), ms(200), ms(400), ms(100)]);
        // The receiver goes (the service stopped): the forwarding ends, no call after.
        drop(rx);
        tokio::time::timeout(ms(10), task)
            .await
            .expect("ends with its receiver")
            .unwrap();
        assert!(called.try_recv().is_err());
    }

    /// A containerd that stays away is asked again and again, backing off to every 5 s
    /// (no hot loop); the forwarding stops once the receiver goes, even between tries.
    #[tokio::test(start_paused = true)]
    async fn a_runtime_that_stays_away_is_asked_at_most_every_five_seconds() {
        let (subscribe, mut called) = scripted(vec![Step::Fail("connection refused")]);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(forward_ooms(subscribe, tx));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let ms = Duration::from_millis;
        let mut want = vec![ms(200), ms(400), ms(800), ms(1600), ms(3200)];
        want.extend([ms(5000); 10]);
        assert_eq!(gaps(&mut called), want);
        drop(rx);
        tokio::time::timeout(ms(10), task)
            .await
            .expect("ends with its receiver")
            .unwrap();
        assert!(called.try_recv().is_err());
    }
}
