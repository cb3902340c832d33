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
        let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let mut snaps = SnapshotsClient::new(self.channel());
        for (i, ((desc, diff_id), chain)) in layers.iter().zip(&chains).enumerate() {
            if self.snapshot_exists(chain).await? {
                continue;
            }
            let parent = if i == 0 {
                String::new()
            } else {
                chains[i - 1].clone()
            };
            let key = format!("extract-{} {chain}", crate::util::random_suffix(8));
            let mounts = snaps
                .prepare(self.req_lease(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
                .map_err(grpc("prepare snapshot", chain))?
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
            let applied = match applied {
                Ok(r) => r.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
                Err(s) => {
                    let _ = snaps
                        .remove(self.req(RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key: key.clone(),
                        }))
                        .await;
                    return Err(grpc("apply layer", desc.digest().to_string())(s));
                }
            };
            if &applied != diff_id {
                let _ = snaps
                    .remove(self.req(RemoveSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                    }))
                    .await;
                return Err(RuntimeError::Other {
                    op: "apply layer",
                    id: desc.digest().to_string(),
                    detail: format!("unpacked to {applied}, expected {diff_id}"),
                });
            }
            match snaps
                .commit(self.req_lease(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => {
                    let _ = snaps
                        .remove(self.req(RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key,
                        }))
                        .await;
                }
                Err(s) => return Err(grpc("commit snapshot", chain)(s)),
            }
        }
        chains.last().cloned().ok_or_else(|| RuntimeError::Other {
            op: "unpack",
            id: String::new(),
            detail: "image has no layers".into(),
        })
    }
}
