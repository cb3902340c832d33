//! What runlet's integration tests (`tests/`) and its conformance suite (`conformance/`)
//! share when they drive a runlet from outside, kept once (linkerd's `app/test` crate is
//! the model):
//!
//! * [`http`]: the raw HTTP/1.1 client (bytes sent as given, timings, cut bodies seen) and
//!   the h2c client, async and blocking.
//! * [`lines`]: a child process's output collected line by line, ANSI colours removed.
//! * [`wait`]: waiting for evidence (a condition polled until a deadline) instead of sleeping.
//! * [`metrics`]: reading runlet's Prometheus text (`runlet_instance_in_flight`, ...).
//! * [`net`]: a free local port.
//! * [`names`]: whether a resource's name belongs to one test (a needle at a name's start).

// Test code that drives a separate process and measures it by the wall clock: clippy.toml's
// ban on std's Instant and Mutex (for runlet's own, virtual-time code) does not apply here.
#![allow(clippy::disallowed_types)]

pub mod http;
pub mod lines;
pub mod metrics;
pub mod names;
pub mod net;
pub mod wait;

pub use lines::{strip_ansi, tail, Lines};
pub use net::free_port;
pub use wait::{poll, within};
