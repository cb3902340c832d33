//! The containerd implementation of [`Runtime`](super::Runtime), plus image import, listing
//! and removal.
//!
//! Everything lives in runlet's own containerd namespace. containerd 1.6 has no Transfer
//! service, so import and unpack are done here, client-side: blobs are written with
//! `Content.Write` under a lease (so garbage collection cannot take them half-way), the
//! image is registered with `Images.Create`, and layers are unpacked into the overlayfs
//! snapshotter with `Snapshots.Prepare` + `Diff.Apply` + `Snapshots.Commit`.
//!
//! One concern per file: [`client`] (the connection, namespaced requests, gRPC errors),
//! [`leases`], [`content`] (the content store), [`images`] (import, list, remove, read an
//! image's config and files), [`snapshots`] (unpacking layers), [`pull`] (a registry pull into the store), [`tasks`] (the `Runtime`
//! implementation: containers, tasks, OOM events).

mod client;
mod content;
mod images;
mod leases;
mod pull;
mod push;
mod snapshots;
mod tasks;

pub use client::{Containerd, NAMESPACE, SNAPSHOTTER};
pub use images::ImageUserError;
pub use leases::Lease;
pub use pull::Pulled;
