//! `runlet daemon`'s control plane: the services it holds, their revisions and rollouts, the
//! operations the Admin API returns, and what keeps them across restarts. The API's
//! transports (`crate::api`) call into [`Daemon`]; the data path meets it only through the
//! [`RouteTable`](crate::ingress::RouteTable) it publishes.
//!
//! - [`core`]: the [`Daemon`] and its state; loading, resuming and shutting down.
//! - `services`: the Admin API's calls on services and revisions.
//! - `rollout`: starting a new revision, switching traffic to it, retiring the old one.
//! - [`revision`]: one running revision (first instance, controller, route).
//! - [`listener`]: a service's own address (annotation `runlet.io/listen`).
//! - [`resource`]: the resources' output fields (conditions, uri, etag), plain functions.
//! - [`operations`]: long-running operations, waited on and stored.
//! - [`names`]: resource names, parsed and checked.
//! - `paging`: list pages and tokens.
//! - [`store`]: durable records (atomic writes); [`lock`]: one daemon per state dir;
//!   [`hosts`]: the `/etc/hosts` block that makes `SERVICE.localhost` resolve.

pub mod core;
pub mod hosts;
pub mod listener;
pub mod lock;
pub mod names;
pub mod operations;
mod paging;
pub mod resource;
pub mod revision;
mod rollout;
mod services;
pub mod store;

pub use self::core::Daemon;
