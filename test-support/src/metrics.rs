//! Reading runlet's metrics listener (`--metrics-listen`, Prometheus text): a test's
//! evidence of what runlet's data path holds, such as the requests in flight.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::http::{self, Request};

/// The sum of `metric`'s samples with the label `service="SERVICE"` (0 when none).
pub fn sum_for_service(text: &str, metric: &str, service: &str) -> f64 {
    let label = format!("service=\"{service}\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|rest| rest.split_once('}'))
        .filter(|(labels, _)| labels.split(',').any(|l| l == label))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// The requests runlet has in flight on `service`'s instances
/// (`runlet_instance_in_flight`).
pub fn instance_in_flight(text: &str, service: &str) -> u64 {
    sum_for_service(text, "runlet_instance_in_flight", service) as u64
}

/// `GET /metrics` from a metrics listener.
pub async fn scrape(addr: SocketAddr) -> Result<String> {
    let r = http::send(
        addr,
        &Request::get("/metrics").timeout(Duration::from_secs(10)),
    )
    .await?;
    ensure!(
        r.status == 200,
        "GET /metrics from {addr}: status {}",
        r.status
    );
    Ok(r.text())
}

/// Waits until runlet has at least `n` requests in flight on `service` (by its metric);
/// returns whether it did within `limit`.
pub async fn wait_in_flight(
    addr: SocketAddr,
    service: &str,
    n: u64,
    limit: Duration,
) -> Result<bool> {
    let seen = crate::wait::poll(limit, Duration::from_millis(20), || async {
        let text = scrape(addr).await?;
        Ok::<_, anyhow::Error>((instance_in_flight(&text, service) >= n).then_some(()))
    })
    .await?;
    Ok(seen.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_summed_over_the_service_instances_only() {
        let text = "# HELP runlet_instance_in_flight x\n\
            # TYPE runlet_instance_in_flight gauge\n\
            runlet_instance_in_flight{instance=\"a-00001-x\",service=\"a\"} 1\n\
            runlet_instance_in_flight{instance=\"a-00001-y\",service=\"a\"} 2\n\
            runlet_instance_in_flight{instance=\"ab-00001-z\",service=\"ab\"} 5\n\
            runlet_instance_in_flight_other{service=\"a\"} 7\n";
        for (service, want) in [("a", 3), ("ab", 5), ("b", 0)] {
            assert_eq!(instance_in_flight(text, service), want, "{service}");
        }
    }
}
