//! `runlet daemon`'s control plane: the services it holds, their revisions and rollouts, the
//! operations the Admin API returns, and what keeps them across restarts. The API's
//! transports (`crate::api`) call into [`Daemon`]; the data path meets it only through the
//! [`RouteTable`](crate::ingress::RouteTable) it publishes.
//!
//! - [`core`]: the [`Daemon`] and its state; loading, resuming and shutting down.
//! - `services`: the Admin API's calls on services and revisions.
//! - `rollout`: starting a new revision, switching traffic to it, retiring the old one.
//! - `jobs`: the Admin API's calls on jobs; `executions`: running them on the job engine,
//!   and the calls on executions and tasks; [`job_view`]: their output fields, read from
//!   the engine's execution records; `schedule_trigger`: starting executions of jobs with
//!   a schedule at their due times.
//! - `pubsub_trigger`: jobs bound to a Pub/Sub pull subscription, run one task per message;
//!   `task_inputs`: the per-task files a trigger hands an execution.
//! - [`revision`]: one running revision (first instance, controller, route).
//! - [`listener`]: a service's own address (annotation `runlet.io/listen`).
//! - [`resource`]: the resources' output fields (conditions, uri, etag), plain functions.
//! - [`operations`]: long-running operations, waited on and stored.
//! - `iam`: the IAM policies the v1 API's `getIamPolicy` / `setIamPolicy` store (never
//!   enforced: locally every caller is allowed).
//! - [`names`]: resource names, parsed and checked.
//! - `paging`: list pages and tokens.
//! - [`store`]: durable records (atomic writes); [`lock`]: one daemon per state dir;
//!   [`hosts`]: the `/etc/hosts` block that makes `SERVICE.localhost` resolve.

pub mod core;
mod executions;
pub mod hosts;
mod iam;
pub mod job_view;
mod jobs;
pub mod listener;
pub mod lock;
pub mod names;
pub mod operations;
mod paging;
mod pubsub_trigger;
pub mod resource;
pub mod revision;
mod rollout;
mod schedule_trigger;
mod services;
pub mod store;
mod task_inputs;

pub use self::core::Daemon;
