//! `runlet daemon`: the long-running server of the Cloud Run Admin API, with its durable
//! state ([`store`]).

pub mod store;
