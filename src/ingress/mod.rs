//! The data path: accept HTTP/1.1 and HTTP/2 (cleartext) requests, check headers, wait for
//! an instance with free capacity, forward, stream the response back.
//!
//! The ingress never talks to containerd, and imports nothing from [`crate::runtime`]. It
//! reads a [`Snapshot`] of routable instances that the control path publishes through a
//! `watch` channel, and reports demand back through [`Demand`] (atomics and a `Notify`); it
//! reaches instances through the [`crate::dial::Dial`] each [`Endpoint`] carries, and tells
//! whoever cares (CPU throttling) when an instance goes idle through an [`IdleHook`]. Every
//! refusal becomes a status in one place, [`refusal::Refusal::response`].
//!
//! A request's way through, one file a step:
//! - `worker.rs`: the worker threads, one per listener, each accepting connections and
//!   keeping its own state;
//! - `downstream.rs`: the client side of a connection (heads read and answered here, or the
//!   connection handed to hyper);
//! - `proxy.rs`: one request from its headers to its response, cut at the request deadline;
//! - `admission.rs`: a slot on an instance, or the wait for one (hold time, queue, demand);
//! - `endpoint.rs`: an instance as the data path sees it, and the snapshot of them;
//! - `upstream.rs`, `upstream_h1.rs`: the connections to an instance;
//! - `tunnel.rs`: WebSocket (upgraded) connections;
//! - `headers.rs`, `raw.rs`: header rules, and heads kept as the bytes read;
//! - `refusal.rs`: what a refused or failed request gets;
//! - `body.rs`: the body types passed along.

mod admission;
mod body;
mod downstream;
mod endpoint;
pub mod headers;
mod proxy;
pub mod raw;
pub mod refusal;
mod tunnel;
pub mod upstream;
pub mod upstream_h1;
mod worker;

pub use admission::{hold_for, Demand};
pub use body::{BoxError, ClientBody, ProxyBody};
pub use endpoint::{Death, Endpoint, IdleHook, Snapshot};
pub use proxy::{Answer, ClientRequest, CutAtDeadline, DeadlineBody};
pub use worker::{bind, default_workers, serve, start, Ingress, IngressConfig};
