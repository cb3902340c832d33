//! Which service a request is for. A [`Route`] is one service's (one revision's) way in, as
//! the control path publishes it: its settings, its snapshot of instances, its demand. A
//! [`RouteTable`] is the set of routes the ingress serves, published by the control path as
//! a `watch::Sender<Arc<RouteTable>>`: either one route that every request takes, `Host`
//! unread (`runlet serve`), or routes by host, `SERVICE.localhost[:port]` reaching service
//! SERVICE ([`RouteTable::lookup`]). A request that names no route is [`Unrouted`] (404).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::admission::Demand;
use super::endpoint::Snapshot;

/// One service's ingress settings.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// The service's name: its metrics' `service` label, and its host name in a table by
    /// host (`SERVICE.localhost`).
    pub service: String,
    pub concurrency: usize,
    /// How long a request waits for capacity before 429/503 (LIFE-3).
    pub hold: Duration,
    /// Request timeout from receipt (RESP-1).
    pub timeout: Duration,
    /// Largest number of waiting requests; beyond it requests are refused at once.
    pub max_queue: usize,
    /// Largest request body passed on, in bytes; a larger one gets 413 (see
    /// [`body_limit`]). `None`: no limit.
    pub max_body: Option<u64>,
}

/// Cloud Run's request body limit: "32 MiB if using an HTTP/1 server".
pub const DEFAULT_MAX_BODY: u64 = 32 << 20;

/// The request body limit of a service whose container gets HTTP/2 (`use_http2`) or
/// HTTP/1.1, given the limit set for runlet (`--max-request-body-size`, `None` for
/// unlimited): Cloud Run has none for an HTTP/2 server.
pub fn body_limit(use_http2: bool, set: Option<u64>) -> Option<u64> {
    if use_http2 {
        None
    } else {
        set
    }
}

/// One service's (revision's) way in: the ingress admits a request routed here against
/// `snapshot` with `cfg`'s limits, and reports its wait in `demand`. A request keeps the
/// route it was given until it ends, whatever table replaces this one meanwhile.
pub struct Route {
    pub cfg: IngressConfig,
    pub snapshot: watch::Receiver<Snapshot>,
    pub demand: Arc<Demand>,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The routes the ingress serves. Replaced whole by the control path (a rollout publishes
/// a table whose route for the service is the new revision's).
pub struct RouteTable {
    routes: Routes,
}

enum Routes {
    /// Every request goes here; `Host` is not read.
    Single(Arc<Route>),
    ByHost {
        /// By service name, lower case.
        by_name: HashMap<String, Arc<Route>>,
        /// The names, sorted and joined, for the 404 text.
        deployed: Arc<str>,
    },
}

/// Why a request has no route: what it asked for, and what is deployed (the 404's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrouted {
    pub asked: Asked,
    /// The deployed services' names, sorted, joined with `", "`; empty when none.
    pub deployed: Arc<str>,
}

/// What an unrouted request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// No `Host` (nor authority).
    NoHost,
    /// A host that is not `NAME.localhost` (an IP literal, another domain), as sent (cut
    /// to [`SHOWN`] bytes).
    Host(String),
    /// `NAME.localhost` with no service NAME, NAME as sent (cut to [`SHOWN`] bytes).
    Service(String),
}

/// Most bytes of a client's host kept for the 404 text.
const SHOWN: usize = 100;

/// The longest service name looked up (Cloud Run's limit is 49 characters).
const MAX_NAME: usize = 63;

impl RouteTable {
    /// Every request goes to `route`, whatever its `Host` (`runlet serve`).
    pub fn single(route: Arc<Route>) -> Self {
        RouteTable {
            routes: Routes::Single(route),
        }
    }

    /// Requests go by host: `SERVICE.localhost[:port]` to the route whose `cfg.service` is
    /// SERVICE (ASCII case-insensitive). Of two routes with the same service, the later
    /// is kept.
    pub fn by_host(routes: impl IntoIterator<Item = Arc<Route>>) -> Self {
        let by_name: HashMap<String, Arc<Route>> = routes
            .into_iter()
            .map(|r| (r.cfg.service.to_ascii_lowercase(), r))
            .collect();
        let mut names: Vec<&str> = by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        let deployed = names.join(", ").into();
        RouteTable {
            routes: Routes::ByHost { by_name, deployed },
        }
    }

    /// The route for a request whose host (the `Host` header, or the URI's or HTTP/2's
    /// `:authority`) is `authority`. A single route takes every request without reading
    /// it; by host, the host part (port stripped, ASCII case-insensitive, one trailing
    /// dot allowed) must be `NAME.localhost` for a deployed service NAME.
    pub fn lookup(&self, authority: Option<&[u8]>) -> Result<&Arc<Route>, Unrouted> {
        let (by_name, deployed) = match &self.routes {
            Routes::Single(route) => return Ok(route),
            Routes::ByHost { by_name, deployed } => (by_name, deployed),
        };
        let unrouted = |asked| Unrouted {
            asked,
            deployed: deployed.clone(),
        };
        let Some(authority) = authority.filter(|a| !a.is_empty()) else {
            return Err(unrouted(Asked::NoHost));
        };
        let Some(name) = service_name(authority) else {
            return Err(unrouted(Asked::Host(shown(authority))));
        };
        // Lower-cased on the stack: the names in the table are.
        let mut lower = [0u8; MAX_NAME];
        let found = lower.get_mut(..name.len()).and_then(|buf| {
            for (to, from) in buf.iter_mut().zip(name) {
                *to = from.to_ascii_lowercase();
            }
            let name = std::str::from_utf8(buf).ok()?;
            by_name.get(name)
        });
        found.ok_or_else(|| unrouted(Asked::Service(shown(name))))
    }

    /// Every route in the table.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> + '_ {
        let (single, by_name) = match &self.routes {
            Routes::Single(route) => (Some(route), None),
            Routes::ByHost { by_name, .. } => (None, Some(by_name.values())),
        };
        single.into_iter().chain(by_name.into_iter().flatten())
    }

    /// The route every request takes, for a table made by [`RouteTable::single`].
    pub fn single_route(&self) -> Option<&Arc<Route>> {
        match &self.routes {
            Routes::Single(route) => Some(route),
            Routes::ByHost { .. } => None,
        }
    }

    /// The identities ([`route_key`]) of the table's routes.
    pub(super) fn keys(&self) -> HashSet<usize> {
        self.routes().map(route_key).collect()
    }
}

/// A route's identity while it is alive (whoever holds its `Arc` keeps its address from
/// being reused).
pub(super) fn route_key(route: &Arc<Route>) -> usize {
    Arc::as_ptr(route) as usize
}

/// NAME, when `authority`'s host is `NAME.localhost` (port stripped, case-insensitive, one
/// trailing dot allowed). An IP literal, another domain, an empty NAME or a port that is
/// not digits: none.
fn service_name(authority: &[u8]) -> Option<&[u8]> {
    const SUFFIX: &[u8] = b".localhost";
    // A bracketed IPv6 literal is never NAME.localhost; otherwise the host ends at the
    // first colon.
    if authority.first() == Some(&b'[') {
        return None;
    }
    let host = match authority.iter().position(|&b| b == b':') {
        Some(colon) => {
            let port = &authority[colon + 1..];
            if !port.iter().all(u8::is_ascii_digit) {
                return None;
            }
            &authority[..colon]
        }
        None => authority,
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    let at = host.len().checked_sub(SUFFIX.len())?;
    let (name, suffix) = host.split_at(at);
    (suffix.eq_ignore_ascii_case(SUFFIX) && !name.is_empty()).then_some(name)
}

/// A client's bytes for the 404 text: at most [`SHOWN`] of them, as text.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]).into_owned()
}

impl fmt::Display for Unrouted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.asked {
            Asked::NoHost => write!(
                f,
                "no host named (services are reached at SERVICE.localhost)"
            )?,
            Asked::Host(host) => write!(
                f,
                "no service for host {host:?} (services are reached at SERVICE.localhost)"
            )?,
            Asked::Service(name) => write!(f, "no service {name:?} here")?,
        }
        if self.deployed.is_empty() {
            write!(f, "; no services are deployed")
        } else {
            write!(f, "; deployed: {}", self.deployed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_limit_holds_for_http1_containers_only() {
        // (--use-http2, --max-request-body-size) -> the limit
        let table = [
            (false, Some(DEFAULT_MAX_BODY), Some(32 << 20)),
            (false, None, None),
            (true, Some(DEFAULT_MAX_BODY), None),
            (true, Some(5), None),
        ];
        for (http2, set, want) in table {
            assert_eq!(body_limit(http2, set), want, "{http2} {set:?}");
        }
    }

    fn route(service: &str) -> Arc<Route> {
        Arc::new(Route {
            cfg: IngressConfig {
                service: service.into(),
                concurrency: 1,
                hold: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                max_queue: 1,
                max_body: None,
            },
            snapshot: watch::channel(Snapshot::default()).1,
            demand: Arc::default(),
        })
    }

    /// The service a lookup found, or what the 404 says.
    fn looked_up(table: &RouteTable, authority: Option<&str>) -> Result<String, String> {
        table
            .lookup(authority.map(str::as_bytes))
            .map(|r| r.cfg.service.clone())
            .map_err(|u| u.to_string())
    }

    #[test]
    fn hosts_name_services() {
        let table = RouteTable::by_host([route("a"), route("hello-world"), route("b2")]);
        let found = |s: &str| Ok(s.to_string());
        let none = |asked: &str| Err(format!("{asked}; deployed: a, b2, hello-world"));
        let other = |host: &str| {
            none(&format!(
                "no service for host {host:?} (services are reached at SERVICE.localhost)"
            ))
        };
        let table_rows = [
            (Some("a.localhost"), found("a")),
            (Some("a.localhost:8080"), found("a")),
            (Some("a.localhost:"), found("a")),
            (Some("hello-world.localhost:80"), found("hello-world")),
            (Some("A.LocalHost"), found("a")),
            (Some("Hello-World.LOCALHOST:9"), found("hello-world")),
            (Some("a.localhost."), found("a")),
            (Some("a.localhost.:8080"), found("a")),
            (Some("b2.localhost"), found("b2")),
            (
                None,
                none("no host named (services are reached at SERVICE.localhost)"),
            ),
            (
                Some(""),
                none("no host named (services are reached at SERVICE.localhost)"),
            ),
            (Some("c.localhost"), none("no service \"c\" here")),
            (Some("C.localhost:1"), none("no service \"C\" here")),
            (Some("a.b.localhost"), none("no service \"a.b\" here")),
            (Some("localhost"), other("localhost")),
            (Some("localhost:8080"), other("localhost:8080")),
            (Some(".localhost"), other(".localhost")),
            (Some("a.localhost.."), other("a.localhost..")),
            (Some("a.localhost:http"), other("a.localhost:http")),
            (Some("a.localhostx"), other("a.localhostx")),
            (Some("a"), other("a")),
            (Some("a.example.com"), other("a.example.com")),
            (Some("127.0.0.1:8080"), other("127.0.0.1:8080")),
            (Some("10.209.0.1"), other("10.209.0.1")),
            (Some("[::1]:8080"), other("[::1]:8080")),
            (Some("[a.localhost]"), other("[a.localhost]")),
            (Some("u@a.localhost"), none("no service \"u@a\" here")),
        ];
        for (authority, want) in table_rows {
            assert_eq!(looked_up(&table, authority), want, "{authority:?}");
        }
    }

    #[test]
    fn a_name_too_long_for_any_service_is_unrouted_and_shown_cut() {
        let table = RouteTable::by_host([route("a")]);
        let long = format!("{}.localhost", "x".repeat(500));
        let err = table.lookup(Some(long.as_bytes())).unwrap_err();
        assert_eq!(err.asked, Asked::Service("x".repeat(SHOWN)));
        let err = table.lookup(Some("y".repeat(500).as_bytes())).unwrap_err();
        assert_eq!(err.asked, Asked::Host("y".repeat(SHOWN)));
    }

    #[test]
    fn with_nothing_deployed_the_404_says_so() {
        let table = RouteTable::by_host([]);
        assert_eq!(
            looked_up(&table, Some("foo.localhost")),
            Err("no service \"foo\" here; no services are deployed".into())
        );
        assert_eq!(table.routes().count(), 0);
    }

    #[test]
    fn a_single_route_takes_every_request_unread() {
        let table = RouteTable::single(route("only"));
        for authority in [None, Some("other.localhost"), Some("[::1]"), Some("\u{1}")] {
            assert_eq!(
                looked_up(&table, authority),
                Ok("only".into()),
                "{authority:?}"
            );
        }
        assert_eq!(table.routes().count(), 1);
        assert!(table.single_route().is_some());
    }

    #[test]
    fn of_two_routes_for_one_service_the_later_is_kept() {
        let (old, new) = (route("a"), route("a"));
        let table = RouteTable::by_host([old, new.clone()]);
        let found = table.lookup(Some(b"a.localhost")).unwrap();
        assert!(Arc::ptr_eq(found, &new));
        assert_eq!(table.keys(), HashSet::from([route_key(&new)]));
    }
}
