//! `runlet daemon`: the long-running server of the Cloud Run Admin API, with its durable
//! state ([`store`]), its one-per-state-dir lock ([`lock`]) and the host names it keeps
//! resolvable ([`hosts`]).

pub mod hosts;
pub mod lock;
pub mod store;
