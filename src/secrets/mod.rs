//! Secrets: a local secret store keyed like Secret Manager
//! (`projects/P/secrets/S/versions/N`) under `<state-dir>/secrets/` ([`store`]), and what a
//! container gets from it when it is created ([`resolve`]): the values of the references a
//! spec holds ([`crate::spec::secrets`]), as environment variables or as read-only files on
//! the instance's tmpfs ([`files`]).
//!
//! Values exist only in the store's files and, briefly, in runlet's memory while a container
//! is made: specs, records, the daemon's store and every output hold references. The
//! `runlet secrets` commands write the store directly (under an flock), not through the
//! daemon: Secret Manager is not part of the Cloud Run Admin API the daemon serves, the
//! store is plain files that `runlet serve` and `runlet job execute` read without a daemon,
//! and the daemon only reads it, each time a container is created.

pub mod files;
pub mod resolve;
pub mod store;

pub use resolve::{resolve, Resolved};
pub use store::{SecretError, SecretStore, VersionInfo};
