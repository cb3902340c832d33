//! The body types the data path passes along: the client's request body, and the response
//! body a client gets.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;

/// Body errors end the response abruptly (the connection is closed, never left hanging).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a response to a client.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A client's request body: none (`Left`: a request read by `downstream.rs`), or
/// hyper's (`Right`).
pub type ClientBody = Either<Empty<Bytes>, Incoming>;
