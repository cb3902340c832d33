//! A service's own address: besides Host routing on the daemon's shared `--listen`, a
//! service whose annotation `runlet.io/listen` says `HOST:PORT` (what `runlet deploy
//! --listen` sets) is also served there, every request taking its route with no `Host`
//! read, as `runlet serve --listen` does. The address is bound when a create or update asks
//! for it, so a bad or taken address is refused at the door; an update that changes or
//! removes it closes the old one; a delete and a shutdown close it; a restart binds it again.
//! Each listener runs its own ingress threads ([`crate::ingress::start`]) over a
//! [`RouteTable::single`] that the daemon republishes when the serving revision changes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;
use tracing::info;

use crate::ingress::{self, Ingress, Route, RouteTable};
use crate::metrics::Metrics;
use crate::pb::run_v2 as v2;

/// The annotation that gives a service its own address.
pub const ANNOTATION: &str = "runlet.io/listen";

/// The field a refusal names.
const FIELD: &str = "service.annotations[\"runlet.io/listen\"]";

/// The address `svc` asks for (`None` without the annotation), or INVALID_ARGUMENT naming
/// the annotation when it is not `HOST:PORT` with a port.
pub fn wanted(svc: &v2::Service) -> Result<Option<SocketAddr>, Status> {
    let Some(text) = svc.annotations.get(ANNOTATION) else {
        return Ok(None);
    };
    parse(text).map(Some).map_err(Status::invalid_argument)
}

/// `HOST:PORT` as an address, or why not (the message names the field).
fn parse(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid {FIELD}: {text:?} is not HOST:PORT (e.g. 127.0.0.1:9001)"))?;
    if addr.port() == 0 {
        return Err(format!(
            "invalid {FIELD}: {text:?} has port 0: name the port (it must stay the same across restarts)"
        ));
    }
    Ok(addr)
}

/// The address bound, its ingress threads not started yet (dropping it closes it).
pub struct Bound {
    pub addr: SocketAddr,
    listeners: Vec<Vec<std::net::TcpListener>>,
}

/// Binds `addr` for a service; FAILED_PRECONDITION naming the address when the system
/// refuses it (in use, not a local address).
pub fn bind(addr: SocketAddr) -> Result<Bound, Status> {
    let listeners = ingress::bind(&[addr], ingress::default_workers()).map_err(|e| {
        Status::failed_precondition(format!("cannot listen on {addr} ({FIELD}): {}", e.source))
    })?;
    Ok(Bound { addr, listeners })
}

/// The refusal when `addr` is already another of the daemon's services' address.
pub fn taken(addr: SocketAddr, other: &str) -> Status {
    Status::failed_precondition(format!(
        "cannot listen on {addr} ({FIELD}): it is the address of service {other}"
    ))
}

/// A service's own address, served.
pub struct ServiceListener {
    pub addr: SocketAddr,
    routes: watch::Sender<Arc<RouteTable>>,
    stop: watch::Sender<bool>,
    ingress: Ingress,
}

impl Bound {
    /// Starts serving on the address for service `name` (no route until
    /// [`ServiceListener::publish`] gives one: 404 meanwhile).
    pub fn start(self, name: &str, metrics: Arc<Metrics>) -> std::io::Result<ServiceListener> {
        let (routes, routes_rx) = watch::channel(no_route());
        let (stop, stop_rx) = watch::channel(false);
        let span = tracing::info_span!("ingress", service = %name, listen = %self.addr);
        let ingress = ingress::start(self.listeners, routes_rx, metrics, stop_rx, span)?;
        info!(service = %name, listen = %self.addr, "serving the service on its own address");
        Ok(ServiceListener {
            addr: self.addr,
            routes,
            stop,
            ingress,
        })
    }
}

impl ServiceListener {
    /// Sends the requests to `route` (the serving revision's), or refuses them (404) when
    /// no revision serves.
    pub fn publish(&self, route: Option<&Arc<Route>>) {
        self.routes.send_if_modified(|table| {
            if table.single_route().map(Arc::as_ptr) == route.map(Arc::as_ptr) {
                return false;
            }
            *table = match route {
                Some(r) => Arc::new(RouteTable::single(r.clone())),
                None => no_route(),
            };
            true
        });
    }

    /// Stops accepting now; the future returned ends once the requests in flight have.
    pub fn close(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.stop.send_replace(true);
        let addr = self.addr;
        let ingress = self.ingress;
        async move {
            ingress.join().await;
            info!(listen = %addr, "closed a service's own address");
        }
    }
}

fn no_route() -> Arc<RouteTable> {
    Arc::new(RouteTable::by_host(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(value: Option<&str>) -> v2::Service {
        let mut s = v2::Service::default();
        if let Some(v) = value {
            s.annotations.insert(ANNOTATION.into(), v.into());
        }
        s
    }

    #[test]
    fn wanted_addresses() {
        // (annotation, the address or a part of the refusal)
        type Case<'a> = (Option<&'a str>, Result<Option<&'a str>, &'a str>);
        let table: &[Case] = &[
            (None, Ok(None)),
            (Some("127.0.0.1:9001"), Ok(Some("127.0.0.1:9001"))),
            (Some(" [::1]:9001 "), Ok(Some("[::1]:9001"))),
            (Some("0.0.0.0:80"), Ok(Some("0.0.0.0:80"))),
            (Some("localhost:9001"), Err("is not HOST:PORT")),
            (Some("9001"), Err("is not HOST:PORT")),
            (Some(""), Err("is not HOST:PORT")),
            (Some("127.0.0.1:0"), Err("port 0")),
            (Some("127.0.0.1:70000"), Err("is not HOST:PORT")),
        ];
        for (value, want) in table {
            let got = wanted(&svc(*value));
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w.map(|a| a.parse().unwrap()), "{value:?}"),
                (Err(part), Err(s)) => {
                    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{value:?}");
                    assert!(s.message().contains(FIELD), "{}", s.message());
                    assert!(s.message().contains(part), "{}", s.message());
                }
                (w, g) => panic!("{value:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_address_in_use_is_a_failed_precondition_naming_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = bind(addr).err().expect("in use");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains(&addr.to_string()), "{}", e.message());
        let e = taken(addr, "projects/p/locations/l/services/other");
        assert!(e.message().contains("services/other"), "{}", e.message());
    }
}
