//! Prometheus metrics, all registered here under the `runlet_` prefix, and the `/metrics`
//! endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing::{debug, warn};

use crate::accept_retry::AcceptRetry;

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
    /// `runlet_ingress_connections`: client connections open on the ingress.
    pub connections: IntGauge,
    /// `runlet_ingress_connection_limit`: how many may be open (`RUNLET_MAX_CONNECTIONS`).
    pub connection_limit: IntGauge,
    /// `runlet_ingress_connection_limit_waits_total`: accepts that waited for a
    /// connection to close because the limit was reached.
    pub connection_limit_waits: IntCounter,
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
            connections: IntGauge::new(
                "runlet_ingress_connections",
                "Client connections open on the ingress",
            )
            .expect("valid metric"),
            connection_limit: IntGauge::new(
                "runlet_ingress_connection_limit",
                "Client connections the ingress keeps open at most",
            )
            .expect("valid metric"),
            connection_limit_waits: IntCounter::new(
                "runlet_ingress_connection_limit_waits_total",
                "Accepts that waited for a connection to close, the limit being reached",
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
            Box::new(m.connections.clone()),
            Box::new(m.connection_limit.clone()),
            Box::new(m.connection_limit_waits.clone()),
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
/// Where `--metrics-listen` puts the `/metrics` endpoint. The default address may be taken
/// by another runlet on the machine: then runlet goes on without metrics, with a warning; an
/// address the user chose must be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    Off,
    /// `--metrics-listen` not given: [`DEFAULT_LISTEN`].
    Default,
    Given(SocketAddr),
}

/// The metrics address when `--metrics-listen` is not given.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9090,
));

impl MetricsListen {
    /// The address to listen on, if any.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            MetricsListen::Off => None,
            MetricsListen::Default => Some(DEFAULT_LISTEN),
            MetricsListen::Given(a) => Some(a),
        }
    }

    /// Whether failing to listen, with `error`, ends runlet: it does, except when the
    /// default address is already in use.
    pub fn is_fatal(self, error: &std::io::Error) -> bool {
        !(self == MetricsListen::Default && error.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// The metrics endpoint could not listen where it must.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--metrics-listen)")]
pub struct ListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Serves `/metrics` where `listen` says: returns the address, or `None` when off or when
/// the default address is taken (logged as a warning naming the flag).
pub async fn serve_at(
    listen: MetricsListen,
    metrics: Arc<Metrics>,
) -> Result<Option<SocketAddr>, ListenError> {
    let Some(addr) = listen.addr() else {
        return Ok(None);
    };
    match serve(addr, metrics).await {
        Ok(()) => Ok(Some(addr)),
        Err(e) if !listen.is_fatal(&e) => {
            warn!("not serving metrics: {addr}, the default --metrics-listen, is in use (another runlet?); give --metrics-listen HOST:PORT for another address, or off");
            Ok(None)
        }
        Err(source) => Err(ListenError { addr, source }),
    }
}

/// Serves `/metrics` on `addr`.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = Arc::new(tokio::net::TcpListener::bind(addr).await?);
    let accept = move || {
        let l = listener.clone();
        async move { l.accept().await.map(|(s, _)| s) }
    };
    tokio::spawn(accept_loop(accept, move |stream| {
        let metrics = metrics.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
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
    }));
    Ok(())
}

/// Hands every connection `accept` gives to `serve`, forever. A failed accept (out of file
/// descriptors: `EMFILE` fails every call at once) is retried after a growing pause and
/// logged at most every 10 s ([`AcceptRetry`]), not in a loop that takes a core.
async fn accept_loop<S, F, Fut>(mut accept: F, mut serve: impl FnMut(S))
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let mut retry = AcceptRetry::new("metrics listener");
    loop {
        match accept().await {
            Ok(s) => {
                retry.succeeded();
                serve(s)
            }
            Err(e) => retry.failed(&e).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_is_retried_after_a_pause_not_in_a_spin() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let accept = move || {
            let n = counted.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 3 {
                    Ok(n)
                } else {
                    Err(std::io::Error::from_raw_os_error(24)) // EMFILE
                }
            }
        };
        let served = Arc::new(AtomicUsize::new(0));
        let s = served.clone();
        let task = tokio::spawn(accept_loop(accept, move |_| {
            s.fetch_add(1, Ordering::Relaxed);
        }));
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        task.abort();
        // 10 s of failures, the pause doubling from 5 ms to 1 s and starting again after the
        // accept that worked: about 21 tries (a spin makes millions), and that one was served.
        let n = calls.load(Ordering::Relaxed);
        assert!((18..=23).contains(&n), "{n} accepts in 10 s");
        assert_eq!(served.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_the_default_address_in_use_is_let_go() {
        use std::io::{Error, ErrorKind};
        let given = MetricsListen::Given(DEFAULT_LISTEN);
        let table = [
            (MetricsListen::Default, ErrorKind::AddrInUse, false),
            (MetricsListen::Default, ErrorKind::PermissionDenied, true),
            (given, ErrorKind::AddrInUse, true),
            (given, ErrorKind::AddrNotAvailable, true),
        ];
        for (listen, kind, fatal) in table {
            assert_eq!(
                listen.is_fatal(&Error::from(kind)),
                fatal,
                "{listen:?} {kind:?}"
            );
        }
        assert_eq!(
            MetricsListen::Default.addr(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert_eq!(MetricsListen::Off.addr(), None);
    }
}
