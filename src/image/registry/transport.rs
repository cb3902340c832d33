//! Which scheme a registry is reached with: Docker's rule. HTTPS always, except for
//! registries on the loopback (`localhost`, `127.0.0.0/8`, `::1`) and those named with
//! `--insecure-registry`; for those HTTPS is tried first and plain HTTP is the fallback,
//! taken only when the server did not answer in TLS ([`https_failure`]).

use std::error::Error;
use std::net::IpAddr;

/// How a registry may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HTTPS only.
    Https,
    /// HTTPS if it answers, else plain HTTP.
    HttpsThenHttp,
}

/// The registry host of a normalised reference (`localhost:5000/app:1` → `localhost:5000`).
pub fn registry_host(normalized: &str) -> &str {
    normalized.split('/').next().unwrap_or(normalized)
}

/// The host without its port (`[::1]:5000` → `::1`, `localhost:5000` → `localhost`).
fn host_only(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// Decides the scheme for `host` (`HOST[:PORT]`) given the `--insecure-registry` list.
pub fn scheme_for(host: &str, insecure: &[String]) -> Scheme {
    let name = host_only(host);
    let loopback = name == "localhost"
        || name
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    let listed = insecure.iter().any(|i| i == host || i == name);
    if loopback || listed {
        Scheme::HttpsThenHttp
    } else {
        Scheme::Https
    }
}

/// What a failed HTTPS request says about the server, read from its error chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpsFailure {
    /// No TLS came back: nothing listening, the connection closed, or an answer that is not
    /// TLS records (a plain-HTTP server's `400`). Plain HTTP may be tried where allowed.
    NotTls,
    /// The server spoke TLS, with a certificate runlet does not trust (unknown issuer,
    /// expired, not for this name).
    Untrusted(String),
    /// The server spoke TLS and the handshake failed otherwise (an alert, no common
    /// protocol version or cipher).
    Handshake(String),
}

/// Reads `e` for the TLS error under it. rustls's error sits in an `io::Error` (tokio-rustls)
/// wrapped in a second one (hyper-rustls), and an `io::Error`'s `source()` skips the error
/// it wraps: so each `io::Error` is opened with `get_ref` as well as followed by `source`.
pub fn https_failure(e: &(dyn Error + 'static)) -> HttpsFailure {
    let mut todo: Vec<&(dyn Error + 'static)> = vec![e];
    while let Some(err) = todo.pop() {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return match tls {
                // The bytes that came back are not TLS records.
                rustls::Error::InvalidMessage(_) => HttpsFailure::NotTls,
                rustls::Error::InvalidCertificate(_) => HttpsFailure::Untrusted(tls.to_string()),
                other => HttpsFailure::Handshake(other.to_string()),
            };
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            todo.push(inner);
        }
        if let Some(next) = err.source() {
            todo.push(next);
        }
    }
    HttpsFailure::NotTls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        let insecure = vec!["reg.lan:5000".to_string(), "10.0.0.9".to_string()];
        let table = [
            ("localhost:5000", Scheme::HttpsThenHttp),
            ("localhost", Scheme::HttpsThenHttp),
            ("127.0.0.1:5000", Scheme::HttpsThenHttp),
            ("127.8.9.1:443", Scheme::HttpsThenHttp),
            ("[::1]:5000", Scheme::HttpsThenHttp),
            ("reg.lan:5000", Scheme::HttpsThenHttp),
            ("reg.lan:5001", Scheme::Https),
            ("10.0.0.9:5000", Scheme::HttpsThenHttp),
            ("128.0.0.1:5000", Scheme::Https),
            ("docker.io", Scheme::Https),
            ("gcr.io", Scheme::Https),
            ("localhost.evil.com:5000", Scheme::Https),
        ];
        for (host, want) in table {
            assert_eq!(scheme_for(host, &insecure), want, "{host}");
        }
    }

    #[test]
    fn hosts_of_references() {
        assert_eq!(registry_host("localhost:5000/app:1"), "localhost:5000");
        assert_eq!(registry_host("docker.io/library/app:1"), "docker.io");
    }

    /// An error that shows only its own text and hides what it wraps, as reqwest's and
    /// hyper's do in `source()`.
    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn Error + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.1)
        }
    }

    /// The chain reqwest 0.13 gives for a failed handshake: reqwest's error, hyper-util's,
    /// hyper-rustls's `io::Error::other` around tokio-rustls's `io::Error` around rustls's.
    fn reqwest_like(tls: rustls::Error) -> Wrap {
        let tokio_rustls = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let hyper_rustls = std::io::Error::other(tokio_rustls);
        Wrap(
            "error sending request",
            Box::new(Wrap("client error (Connect)", Box::new(hyper_rustls))),
        )
    }

    #[test]
    fn only_an_answer_that_is_not_tls_allows_plain_http() {
        use rustls::{CertificateError, Error as Tls, InvalidMessage};
        let untrusted =
            |c: CertificateError| HttpsFailure::Untrusted(Tls::InvalidCertificate(c).to_string());
        let table: [(Wrap, HttpsFailure); 8] = [
            (
                reqwest_like(Tls::InvalidCertificate(CertificateError::UnknownIssuer)),
                untrusted(CertificateError::UnknownIssuer),
            ),
            (
                reqwest_like(Tls::InvalidCertificate(CertificateError::Expired)),
                untrusted(CertificateError::Expired),
            ),
            (
                reqwest_like(Tls::InvalidCertificate(CertificateError::NotValidForName)),
                untrusted(CertificateError::NotValidForName),
            ),
            (
                reqwest_like(Tls::AlertReceived(
                    rustls::AlertDescription::ProtocolVersion,
                )),
                HttpsFailure::Handshake(
                    Tls::AlertReceived(rustls::AlertDescription::ProtocolVersion).to_string(),
                ),
            ),
            // A plain-HTTP server answers the ClientHello with "HTTP/1.1 400".
            (
                reqwest_like(Tls::InvalidMessage(InvalidMessage::InvalidContentType)),
                HttpsFailure::NotTls,
            ),
            (
                Wrap(
                    "error sending request",
                    Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                ),
                HttpsFailure::NotTls,
            ),
            (
                Wrap(
                    "error sending request",
                    Box::new(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                ),
                HttpsFailure::NotTls,
            ),
            // rustls's error directly in the chain.
            (
                Wrap(
                    "error sending request",
                    Box::new(Tls::InvalidCertificate(CertificateError::UnknownIssuer)),
                ),
                untrusted(CertificateError::UnknownIssuer),
            ),
        ];
        for (e, want) in table {
            assert_eq!(https_failure(&e), want, "{e:?}");
        }
    }
}
