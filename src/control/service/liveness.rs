//! The liveness probe of one ready instance: runs until the probe fails `failureThreshold`
//! times in a row; the controller then replaces the instance.

use crate::control::service::probe::{self, Probe};
use crate::runtime::network::NetnsDialer;

/// Runs a liveness probe until it fails `failureThreshold` times in a row; returns why.
pub async fn until_failed(p: &Probe, dialer: &NetnsDialer) -> String {
    tokio::time::sleep(p.initial_delay).await;
    let mut failures = 0;
    loop {
        match probe::check(p, dialer).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= p.failure_threshold {
                    return format!(
                        "{failures} failures in a row; last: {}",
                        crate::util::error_chain(&e)
                    );
                }
            }
        }
        tokio::time::sleep(p.period).await;
    }
}
