//! `runlet daemon`: the long-running server of the Cloud Run Admin API, with its durable
//! state ([`store`]) and its one-per-state-dir lock ([`lock`]).

pub mod lock;
pub mod store;
