//! Startup and liveness probe definitions (contract LIFE-2), parsed from gcloud's flag
//! syntax: `--startup-probe=httpGet.path=/ready,httpGet.port=8080,periodSeconds=1,failureThreshold=5`,
//! `tcpSocket.port=8080`, `grpc.port=8080,grpc.service=NAME`, plus `initialDelaySeconds`,
//! `timeoutSeconds`. Running a probe is the control path's business (`control::service::probe`).

use std::time::Duration;

use super::list::key_values;
use super::{bad, SpecError};

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Http { path: String, port: u16 },
    Tcp { port: u16 },
    Grpc { port: u16, service: String },
}

/// A configured probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

impl Probe {
    /// Cloud Run's defaults: a TCP check of `port` every 10 s, 1 s to answer, 3 failures.
    pub fn tcp(port: u16) -> Probe {
        Probe {
            action: Action::Tcp { port },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
        }
    }
}

/// Which of gcloud's three probe kinds a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    HttpGet,
    TcpSocket,
    Grpc,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::HttpGet => "httpGet",
            Kind::TcpSocket => "tcpSocket",
            Kind::Grpc => "grpc",
        }
    }
}

const KEYS: &str = "httpGet.path, httpGet.port, tcpSocket.port, grpc.port, grpc.service, initialDelaySeconds, periodSeconds, timeoutSeconds, failureThreshold";

/// Parses gcloud's probe flag; `port` is the container port used when none is given.
pub fn parse(field: &'static str, s: &str, port: u16) -> Result<Probe, SpecError> {
    let mut kind: Option<Kind> = None;
    let mut path = "/".to_string();
    let mut probe_port = port;
    let mut service = String::new();
    let mut p = Probe::tcp(port);
    let secs = |k: &str, v: &str, lo: u64, hi: u64| -> Result<u64, SpecError> {
        let n: u64 = v
            .parse()
            .map_err(|_| bad(field, format!("{k}={v:?} is not a whole number of seconds")))?;
        if n < lo || n > hi {
            return Err(bad(
                field,
                format!("{k}={n} is out of range: allowed {lo} to {hi}"),
            ));
        }
        Ok(n)
    };
    for (k, v) in key_values(field, s)? {
        let key_kind = match k {
            "httpGet.path" | "httpGet.port" => Some(Kind::HttpGet),
            "tcpSocket.port" => Some(Kind::TcpSocket),
            "grpc.port" | "grpc.service" => Some(Kind::Grpc),
            _ => None,
        };
        if let Some(want) = key_kind {
            match kind {
                Some(had) if had != want => {
                    return Err(bad(
                        field,
                        format!(
                            "a probe has one of httpGet, tcpSocket or grpc; got both {} and {}",
                            had.name(),
                            want.name()
                        ),
                    ))
                }
                _ => kind = Some(want),
            }
        }
        match k {
            "httpGet.path" => {
                if !v.starts_with('/') {
                    return Err(bad(field, format!("httpGet.path={v:?} must start with /")));
                }
                path = v.to_string();
            }
            "httpGet.port" | "tcpSocket.port" | "grpc.port" => {
                probe_port = v
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(field, format!("{k}={v:?} is not a port (1-65535)")))?;
            }
            "grpc.service" => service = v.to_string(),
            "initialDelaySeconds" => p.initial_delay = Duration::from_secs(secs(k, v, 0, 240)?),
            "periodSeconds" => p.period = Duration::from_secs(secs(k, v, 1, 240)?),
            "timeoutSeconds" => p.timeout = Duration::from_secs(secs(k, v, 1, 240)?),
            "failureThreshold" => p.failure_threshold = secs(k, v, 1, 100)? as u32,
            other => {
                return Err(bad(
                    field,
                    format!("unknown key {other:?}; allowed: {KEYS}"),
                ))
            }
        }
    }
    p.action = match kind {
        Some(Kind::HttpGet) => Action::Http {
            path,
            port: probe_port,
        },
        Some(Kind::Grpc) => Action::Grpc {
            port: probe_port,
            service,
        },
        Some(Kind::TcpSocket) | None => Action::Tcp { port: probe_port },
    };
    if p.timeout > p.period {
        return Err(bad(
            field,
            format!(
                "timeoutSeconds ({}) must not exceed periodSeconds ({})",
                p.timeout.as_secs(),
                p.period.as_secs()
            ),
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gcloud_probe_flags() {
        let p = parse("--startup-probe", "httpGet.path=/ready,httpGet.port=9000,initialDelaySeconds=2,periodSeconds=5,timeoutSeconds=3,failureThreshold=4", 8080).unwrap();
        assert_eq!(
            p.action,
            Action::Http {
                path: "/ready".into(),
                port: 9000
            }
        );
        assert_eq!(
            (p.initial_delay, p.period, p.timeout, p.failure_threshold),
            (
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(3),
                4
            )
        );
        let actions = [
            ("tcpSocket.port=81", Action::Tcp { port: 81 }),
            (
                "httpGet.path=/x",
                Action::Http {
                    path: "/x".into(),
                    port: 8080,
                },
            ),
            (
                "grpc.service=svc",
                Action::Grpc {
                    port: 8080,
                    service: "svc".into(),
                },
            ),
            (
                "grpc.port=9090",
                Action::Grpc {
                    port: 9090,
                    service: String::new(),
                },
            ),
            ("periodSeconds=1", Action::Tcp { port: 8080 }),
            ("", Action::Tcp { port: 8080 }),
        ];
        for (s, want) in actions {
            assert_eq!(parse("f", s, 8080).unwrap().action, want, "{s}");
        }
        assert_eq!(parse("f", "", 8080).unwrap(), Probe::tcp(8080));
    }

    #[test]
    fn refuses_bad_probe_flags_naming_the_key() {
        for (s, needle) in [
            ("httpGet.path=x", "must start with /"),
            ("nonsense=1", "unknown key \"nonsense\""),
            ("periodSeconds=0", "periodSeconds=0 is out of range"),
            (
                "failureThreshold=101",
                "failureThreshold=101 is out of range",
            ),
            ("timeoutSeconds=1.5", "not a whole number"),
            ("tcpSocket.port=http", "not a port"),
            ("grpc.port=0", "not a port"),
            (
                "httpGet.path=/,tcpSocket.port=1",
                "got both httpGet and tcpSocket",
            ),
            ("grpc.service=s,httpGet.port=1", "got both grpc and httpGet"),
            ("periodSeconds=1,timeoutSeconds=2", "must not exceed"),
            ("novalue", "not KEY=VALUE"),
        ] {
            let e = parse("--liveness-probe", s, 8080).unwrap_err();
            assert_eq!(e.field, "--liveness-probe");
            assert!(e.detail.contains(needle), "{s}: {}", e.detail);
        }
    }
}
