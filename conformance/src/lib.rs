//! runlet's conformance suite and its tooling.
//!
//! * [`contract`]: the contract clauses as data (`contract/clauses.toml`, embedded).
//! * [`checks`]: the checks, each named after the clause it exercises.
//! * [`harness`]: driving the runtime from outside, by either driver (serve, jobs,
//!   shutdown, containerd); [`via_api`]: the API driver's Admin API client and daemon.
//! * [`http`]: the HTTP/1.1 and h2c clients the checks talk with (from the test-support
//!   crate, shared with runlet's integration tests).
//! * [`runner`]: selection, parallel runs, cleanup; [`report`]: table, JSON, docs.
//! * [`selftest`]: the deliberately broken runlet the checks must catch.
//! * [`imagebuild`]: deterministic builder for the OCI / docker-save image archives the
//!   checks load into runlet; [`local_registry`]: a registry on loopback for the checks
//!   that pull.

// A separate program that drives or serves runlet from outside and measures it by the wall
// clock: clippy.toml's ban on std's Instant and Mutex (for runlet's own, virtual-time code)
// does not apply here.
#![allow(clippy::disallowed_types)]

pub mod checks;
pub mod contract;
pub mod harness;
pub use runlet_test_support::http;
pub mod imagebuild;
pub mod local_registry;
pub mod report;
pub mod runner;
pub mod selftest;
pub mod via_api;
