//! The one place where a refused or failed request becomes an HTTP status and body.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::body::ProxyBody;
use super::route::Unrouted;
use super::upstream::UpstreamError;

/// Why a request did not get the instance's response.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("bad request header: {0}")]
    BadHeader(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request head too large (more than 64 KiB or 100 header fields)")]
    HeadTooLarge,
    /// The request body is larger than the service's limit (Cloud Run: 32 MiB for an
    /// HTTP/1 container).
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("the request head did not arrive within 30 s")]
    HeadTimeout,
    /// The host names no deployed service (routing by host).
    #[error("{0}")]
    UnknownHost(Unrouted),
    #[error(
        "held for the hold time with every instance busy and the service at its maximum instances"
    )]
    RateExceeded,
    #[error("no instance became available within the hold time")]
    NoInstance,
    #[error("the wait queue is full")]
    QueueFull,
    #[error("the instance failed to start: {0}")]
    StartFailed(String),
    #[error("the request timeout was reached before the instance answered")]
    Timeout,
    #[error("the instance ran out of memory and was terminated")]
    OutOfMemory,
    #[error("the instance exited ({0}) before it answered")]
    Exited(String),
    #[error("the instance broke the connection or sent a malformed response")]
    Upstream(#[source] UpstreamError),
}

impl Refusal {
    /// A short label for logs and the `runlet_refusals_total` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadHeader(_) => "bad_header",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Malformed(_) => "malformed",
            Refusal::HeadTooLarge => "head_too_large",
            Refusal::BodyTooLarge(_) => "body_too_large",
            Refusal::HeadTimeout => "head_timeout",
            Refusal::UnknownHost(_) => "unknown_host",
            Refusal::RateExceeded => "rate_exceeded",
            Refusal::NoInstance => "no_instance",
            Refusal::QueueFull => "queue_full",
            Refusal::StartFailed(_) => "start_failed",
            Refusal::Timeout => "timeout",
            Refusal::OutOfMemory => "out_of_memory",
            Refusal::Exited(_) | Refusal::Upstream(_) => "upstream",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadHeader(_) | Refusal::BadRequest(_) | Refusal::Malformed(_) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::UnknownHost(_) => StatusCode::NOT_FOUND,
            Refusal::RateExceeded => StatusCode::TOO_MANY_REQUESTS,
            Refusal::NoInstance | Refusal::QueueFull | Refusal::StartFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::OutOfMemory => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::Exited(_) | Refusal::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn body(&self) -> String {
        match self {
            Refusal::BadHeader(d) => format!("Bad Request: {d}.\n"),
            Refusal::BadRequest(d) => format!("Bad Request: {d}.\n"),
            Refusal::Malformed(d) => format!("Bad Request: malformed request: {d}.\n"),
            Refusal::HeadTooLarge => "Request Header Fields Too Large: at most 64 KiB and 100 fields.\n".into(),
            Refusal::BodyTooLarge(n) => format!("Payload Too Large: the request body is larger than {n} bytes.\n"),
            Refusal::HeadTimeout => "Request Timeout: the request head did not arrive within 30 s.\n".into(),
            Refusal::UnknownHost(u) => format!("Not Found: {u}.\n"),
            Refusal::RateExceeded => "Rate exceeded.\n".into(),
            Refusal::NoInstance => "Service Unavailable: no instance is available to serve the request.\n".into(),
            Refusal::QueueFull => "Service Unavailable: too many requests are waiting for an instance.\n".into(),
            // The reason (containerd's and runc's text, paths and all) is for runlet's log only.
            Refusal::StartFailed(_) => "Service Unavailable: the instance could not start; see runlet's log.\n".into(),
            Refusal::Timeout => "Gateway Timeout: the request timeout was reached.\n".into(),
            Refusal::OutOfMemory => "Internal Server Error: the instance exceeded its memory limit and was terminated.\n".into(),
            Refusal::Exited(_) | Refusal::Upstream(_) => "Bad Gateway: the instance closed the connection or sent an invalid response.\n".into(),
        }
    }

    /// The refusal followed by its causes, for the log.
    pub fn with_causes(&self) -> impl std::fmt::Display + '_ {
        crate::util::Chain(self)
    }

    pub fn response(&self) -> Response<ProxyBody> {
        let mut r = Response::new(
            Full::new(Bytes::from(self.body()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::route::Asked;
    use crate::ingress::upstream_h1::H1Error;

    #[test]
    fn statuses() {
        let table = [
            (Refusal::BadHeader("x".into()), 400),
            (Refusal::Malformed("invalid token".into()), 400),
            (Refusal::HeadTooLarge, 431),
            (Refusal::BodyTooLarge(32 << 20), 413),
            (Refusal::HeadTimeout, 408),
            (
                Refusal::UnknownHost(Unrouted {
                    asked: Asked::NoHost,
                    deployed: "".into(),
                }),
                404,
            ),
            (Refusal::RateExceeded, 429),
            (Refusal::NoInstance, 503),
            (Refusal::QueueFull, 503),
            (Refusal::StartFailed("exit code 5".into()), 503),
            (Refusal::Timeout, 504),
            (Refusal::OutOfMemory, 500),
            (Refusal::Exited("exit code 1".into()), 502),
            (Refusal::Upstream(H1Error::ClosedBeforeResponse.into()), 502),
        ];
        for (r, code) in table {
            assert_eq!(r.response().status().as_u16(), code, "{r:?}");
        }
    }

    #[test]
    fn a_start_failure_tells_the_client_nothing_of_containerd_and_the_log_everything() {
        let why = "creating the task: runc create failed: unable to start container process: \
                   exec: \"/srv/app\": stat /srv/app: no such file or directory";
        let r = Refusal::StartFailed(why.into());
        assert_eq!(
            r.body(),
            "Service Unavailable: the instance could not start; see runlet's log.\n"
        );
        assert!(r.with_causes().to_string().contains(why));
    }

    #[test]
    fn the_log_names_each_cause_once() {
        let io = std::io::Error::other("connection refused");
        let r = Refusal::Upstream(H1Error::Connect(io).into());
        assert_eq!(
            r.with_causes().to_string(),
            "the instance broke the connection or sent a malformed response: \
             connecting to the instance: connection refused"
        );
    }
}
