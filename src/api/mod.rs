//! The API runlet's daemon serves: the Cloud Run Admin API v2 (services, revisions) and
//! `google.longrunning.Operations`, over gRPC and over HTTP/JSON, on one port and on a Unix
//! socket. The handlers are thin: each turns a request into a call on the
//! [`Daemon`](crate::daemon::Daemon) and its answer back.
//!
//! - [`grpc`]: the tonic services (the generated traits in [`crate::pb`]).
//! - [`rest`]: the HTTP/JSON routes of the same calls (the `google.api.http` rules), proto3's
//!   JSON mapping, and Google's error shape.
//! - [`v1`]: the Admin API v1 gcloud speaks (Knative-shaped services, revisions, IAM), a
//!   view of the same resources; the region comes from the request's `Host`.
//! - [`listen`]: one listener for both (gRPC by `content-type`), the Unix socket, and the
//!   bearer token a non-loopback listener requires.
//! - [`client`]: the other end, for the CLI's client commands and the tests.

pub mod client;
mod client_jobs;
pub mod grpc;
pub mod listen;
pub mod rest;
pub mod v1;
pub mod v1_jobs;
