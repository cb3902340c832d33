//! Prometheus metrics, all registered here under the `runlet_` prefix, and the `/metrics`
//! endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing::{debug, warn};

/// Every metric runlet exports.
pub struct Metrics {
    pub registry: Registry,
    /// `runlet_requests_total{service,code_class}`
    pub requests: IntCounterVec,
    /// `runlet_request_duration_seconds{service}`
    pub latency: HistogramVec,
    /// `runlet_queue_wait_seconds{service}`
    pub queue_wait: HistogramVec,
    /// `runlet_refusals_total{service,reason}`
    pub refusals: IntCounterVec,
    /// `runlet_instances{service,state}`
    pub instances: IntGaugeVec,
    /// `runlet_instance_starts_total{service,result}`
    pub starts: IntCounterVec,
    /// `runlet_instance_startup_seconds{service}`
    pub startup: HistogramVec,
    /// `runlet_oom_kills_total{service}`
    pub ooms: IntCounterVec,
    /// `runlet_queue_depth{service}`: requests waiting for an instance.
    pub queue_depth: IntGaugeVec,
    /// `runlet_instance_in_flight{service,instance}`
    pub in_flight: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0,
        ];
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "runlet_requests_total",
                    "Requests answered, by status code class",
                ),
                &["service", "code_class"],
            )
            .expect("valid metric"),
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "runlet_request_duration_seconds",
                    "Time from receipt to response headers",
                )
                .buckets(buckets.clone()),
                &["service"],
            )
            .expect("valid metric"),
            queue_wait: HistogramVec::new(
                HistogramOpts::new(
                    "runlet_queue_wait_seconds",
                    "Time requests were held waiting for an instance",
                )
                .buckets(buckets.clone()),
                &["service"],
            )
            .expect("valid metric"),
            refusals: IntCounterVec::new(
                Opts::new(
                    "runlet_refusals_total",
                    "Requests refused by runlet, by reason",
                ),
                &["service", "reason"],
            )
            .expect("valid metric"),
            instances: IntGaugeVec::new(
                Opts::new("runlet_instances", "Instances by state"),
                &["service", "state"],
            )
            .expect("valid metric"),
            starts: IntCounterVec::new(
                Opts::new(
                    "runlet_instance_starts_total",
                    "Instance start-ups, by result",
                ),
                &["service", "result"],
            )
            .expect("valid metric"),
            startup: HistogramVec::new(
                HistogramOpts::new(
                    "runlet_instance_startup_seconds",
                    "Time from create to ready",
                )
                .buckets(buckets),
                &["service"],
            )
            .expect("valid metric"),
            ooms: IntCounterVec::new(
                Opts::new(
                    "runlet_oom_kills_total",
                    "Instances ended for exceeding their memory limit",
                ),
                &["service"],
            )
            .expect("valid metric"),
            queue_depth: IntGaugeVec::new(
                Opts::new("runlet_queue_depth", "Requests waiting for an instance"),
                &["service"],
            )
            .expect("valid metric"),
            in_flight: IntGaugeVec::new(
                Opts::new(
                    "runlet_instance_in_flight",
                    "Requests in flight per instance",
                ),
                &["service", "instance"],
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.latency.clone()),
            Box::new(m.queue_wait.clone()),
            Box::new(m.refusals.clone()),
            Box::new(m.instances.clone()),
            Box::new(m.starts.clone()),
            Box::new(m.startup.clone()),
            Box::new(m.ooms.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.in_flight.clone()),
        ] {
            m.registry.register(c).expect("metric registered once");
        }
        Arc::new(m)
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            warn!("encoding metrics: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let resp = if req.uri().path() == "/metrics" {
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(metrics.render())))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"see /metrics\n")))
                        };
                        Ok::<_, Infallible>(resp.unwrap_or_default())
                    }
                });
            tokio::spawn(async move {
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok(())
}
