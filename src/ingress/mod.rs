//! The data path: accept HTTP/1.1 and HTTP/2 (cleartext) requests, route each to its
//! service, check headers, wait for an instance with free capacity, forward, stream the
//! response back.
//!
//! The ingress never talks to containerd, and imports nothing from [`crate::runtime`]. It
//! reads a [`RouteTable`] that the control path publishes through a `watch` channel: one
//! [`Route`] every request takes, `Host` unread (`runlet serve`), or a route per service by
//! host (`SERVICE.localhost[:port]`; any other host gets 404 naming the services). A route
//! carries its service's [`IngressConfig`], the [`Snapshot`] of its routable instances
//! (another `watch`), and the [`Demand`] the data path reports back (atomics and a
//! `Notify`). A request keeps the route it was given until it ends: a rollout publishes a
//! table with the new revision's route, and what the old one admitted finishes there. The
//! ingress reaches instances through the [`crate::dial::Dial`] each [`Endpoint`] carries,
//! and tells whoever cares (CPU throttling) when an instance goes idle through an
//! [`IdleHook`]. Every refusal becomes a status in one place, [`refusal::Refusal::response`].
//!
//! A request's way through, one file a step:
//! - `worker.rs`: the worker threads, one per group of listeners (one per address), each
//!   accepting connections and keeping its own state;
//! - `route.rs`: which route a request takes (the table, the lookup by host);
//! - `lane.rs`: a route's state on one worker thread (its copy of the snapshot, its
//!   metrics), made on first use and let go when the route leaves the table;
//! - `downstream.rs`: the client side of a connection (heads read and answered here, or the
//!   connection handed to hyper);
//! - `proxy.rs`: one request from its headers to its response: routed, then cut at the
//!   request deadline; `h2_deadline.rs`: the same deadline for an HTTP/2 response the
//!   client stalls through flow control;
//! - `admission.rs`: a slot on an instance, or the wait for one (hold time, queue, demand);
//! - `endpoint.rs`: an instance as the data path sees it, and the snapshot of them;
//! - `upstream.rs`, `upstream_h1.rs`: the connections to an instance;
//! - `tunnel.rs`: WebSocket (upgraded) connections;
//! - `headers.rs`, `raw.rs`: header rules, and heads kept as the bytes read;
//! - `refusal.rs`: what a refused or failed request gets;
//! - `body.rs`: the body types passed along.

mod admission;
mod body;
mod conn_limit;
#[cfg(test)]
mod differential_tests;
mod downstream;
mod endpoint;
mod h2_deadline;
mod head_timer;
pub mod headers;
mod lane;
#[cfg(test)]
mod loopback_tests;
mod proxy;
pub mod raw;
pub mod refusal;
mod route;
mod tunnel;
pub mod upstream;
pub mod upstream_h1;
mod worker;

pub use admission::{hold_for, Demand};
pub use body::{BoxError, ClientBody, Limited, ProxyBody};
pub use conn_limit::{default_limit, max_connections};
pub use endpoint::{Death, Endpoint, IdleHook, Snapshot};
pub use proxy::{Answer, ClientRequest, CutAtDeadline, DeadlineBody};
pub use route::{body_limit, Asked, IngressConfig, Route, RouteTable, Unrouted, DEFAULT_MAX_BODY};
pub use worker::{bind, default_workers, serve, start, BindError, Ingress};
