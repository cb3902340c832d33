//! Unpacking layers into the snapshotter: one committed snapshot per layer, named by its
//! chain ID, so images that share layers share snapshots.

use std::collections::HashMap;

use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::tonic::Code;
use oci_spec::image::Descriptor;

use super::client::{found, grpc, Containerd, SNAPSHOTTER};
use super::images::pb_descriptor;
use super::leases::Held;
use super::Lease;
use crate::image::chain_ids;
use crate::runtime::RuntimeError;

impl Containerd {
    pub(super) async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        let answer = SnapshotsClient::new(self.channel())
            .stat(self.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await;
        found(answer, "stat snapshot", key)
    }

    /// Unpacks layers into committed snapshots named by chain ID; returns the top chain ID.
    pub(super) async fn unpack(
        &self,
        lease: &Lease,
        layers: &[(Descriptor, String)],
    ) -> Result<String, RuntimeError> {
        let chains = layer_chains(layers);
        for i in 0..layers.len() {
            self.unpack_layer(lease, layers, &chains, i).await?;
        }
        top_chain(&chains)
    }

    /// Unpacks layer `i` of `layers` over the snapshot of the ones below it (already
    /// committed), unless its snapshot exists.
    pub(super) async fn unpack_layer(
        &self,
        lease: &Lease,
        layers: &[(Descriptor, String)],
        chains: &[String],
        i: usize,
    ) -> Result<(), RuntimeError> {
        let ((desc, diff_id), chain) = (&layers[i], &chains[i]);
        // Held before it is looked for: a snapshot found present may belong only to an
        // image being removed, and this image is about to stand on it.
        self.hold(lease, Held::Snapshot, chain).await?;
        if self.snapshot_exists(chain).await? {
            return Ok(());
        }
        let parent = if i == 0 {
            String::new()
        } else {
            chains[i - 1].clone()
        };
        let key = format!("extract-{} {chain}", crate::util::random_suffix(8));
        let applied = self.apply_layer(lease, desc, &key, parent).await?;
        if &applied != diff_id {
            self.remove_active(&key).await;
            return Err(RuntimeError::Other {
                op: "apply layer",
                id: desc.digest().to_string(),
                detail: format!("unpacked to {applied}, expected {diff_id}"),
            });
        }
        self.commit_layer(lease, &key, chain).await
    }

    /// Unpacks layers whose diff_ids are not known (a schema-1 image's): each is applied,
    /// and what containerd reports it unpacked to is its diff_id, which names the next
    /// snapshot's chain. Returns the top chain ID and the diff_ids. Unlike [`Self::unpack`]
    /// nothing can be skipped before applying, so a second pull applies again (and drops
    /// the duplicate snapshot).
    pub(super) async fn unpack_discovering(
        &self,
        lease: &Lease,
        layers: &[Descriptor],
    ) -> Result<(String, Vec<String>), RuntimeError> {
        let mut diff_ids = Vec::with_capacity(layers.len());
        let mut parent = String::new();
        for desc in layers {
            let key = format!(
                "extract-{} {}",
                crate::util::random_suffix(8),
                desc.digest()
            );
            let applied = self.apply_layer(lease, desc, &key, parent.clone()).await?;
            diff_ids.push(applied);
            let chain = chain_ids(&diff_ids).pop().unwrap_or_default();
            self.commit_layer(lease, &key, &chain).await?;
            parent = chain;
        }
        if parent.is_empty() {
            return Err(RuntimeError::Other {
                op: "unpack",
                id: String::new(),
                detail: "image has no layers".into(),
            });
        }
        Ok((parent, diff_ids))
    }

    /// Prepares the active snapshot `key` over `parent` and applies `desc` into it; returns
    /// the digest of what was unpacked (the layer's diff_id). On failure the active snapshot
    /// is removed.
    async fn apply_layer(
        &self,
        lease: &Lease,
        desc: &Descriptor,
        key: &str,
        parent: String,
    ) -> Result<String, RuntimeError> {
        let mounts = SnapshotsClient::new(self.channel())
            .prepare(self.req_lease(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                    parent,
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(grpc("prepare snapshot", key))?
            .into_inner()
            .mounts;
        let applied = DiffClient::new(self.channel())
            .apply(self.req_lease(
                ApplyRequest {
                    diff: Some(pb_descriptor(desc)),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            ))
            .await;
        match applied {
            Ok(r) => Ok(r.into_inner().applied.map(|d| d.digest).unwrap_or_default()),
            Err(s) => {
                self.remove_active(key).await;
                Err(grpc("apply layer", desc.digest().to_string())(s))
            }
        }
    }

    /// Commits the active snapshot `key` as `chain`; when another unpack committed that
    /// chain first, the active one is dropped.
    async fn commit_layer(
        &self,
        lease: &Lease,
        key: &str,
        chain: &str,
    ) -> Result<(), RuntimeError> {
        match SnapshotsClient::new(self.channel())
            .commit(self.req_lease(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain.to_string(),
                    key: key.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                self.remove_active(key).await;
                Ok(())
            }
            Err(s) => Err(grpc("commit snapshot", chain)(s)),
        }
    }

    async fn remove_active(&self, key: &str) {
        let _ = SnapshotsClient::new(self.channel())
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await;
    }
}

/// The chain IDs of `layers` (descriptor, diff_id), bottom first.
pub(super) fn layer_chains(layers: &[(Descriptor, String)]) -> Vec<String> {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    chain_ids(&diff_ids)
}

/// The top chain ID: the snapshot an image stands on.
pub(super) fn top_chain(chains: &[String]) -> Result<String, RuntimeError> {
    chains.last().cloned().ok_or_else(|| RuntimeError::Other {
        op: "unpack",
        id: String::new(),
        detail: "image has no layers".into(),
    })
}
