//! Which scheme a registry is reached with: Docker's rule. HTTPS always, except for
//! registries on the loopback (`localhost`, `127.0.0.0/8`, `::1`) and those named with
//! `--insecure-registry`; for those HTTPS is tried first and plain HTTP is the fallback.

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
}
