//! Pub/Sub for the daemon's event trigger: a job bound to a pull subscription runs one task
//! per message (`crate::daemon::pubsub_trigger` is the loop).
//!
//! - [`binding`]: the `runlet.io/pubsub-*` annotations on a job, checked.
//! - [`client`]: the Pub/Sub REST API (pull, acknowledge, modifyAckDeadline, get
//!   subscription, publish), over plain HTTP to the emulator at `PUBSUB_EMULATOR_HOST`.
//! - [`decide`]: the decisions, as plain functions: what to do with a task's message, idle
//!   backoff; the batch size and lease.
//! - [`message`]: the file a task reads its message from.

pub mod binding;
pub mod client;
pub mod decide;
pub mod message;

pub use binding::Binding;
pub use client::{PubsubClient, PubsubError};
