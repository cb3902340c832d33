//! runlet: a Cloud Run-compatible, single-node container runtime driving containerd.
//!
//! Two paths meet in one place. The data path ([`ingress`]) takes requests, holds them
//! while instances start, and forwards them; it never calls containerd. The control path
//! ([`control`]) creates, probes, scales and stops instances through the [`runtime::Runtime`]
//! trait, and publishes the set of routable instances to the data path.

pub mod accept_retry;
pub mod api;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod dial;
pub mod fdlimit;
pub mod image;
pub mod ingress;
pub mod log_format;
pub mod metadata;
pub mod metrics;
pub mod pb;
pub mod private_file;
pub mod pubsub;
pub mod runtime;
pub mod secrets;
pub mod setup;
pub mod spec;
pub mod state_dir;
pub mod util;
