//! Leases: hold content and snapshots that nothing references yet (during an import or an
//! unpack), and expire by themselves if runlet dies before releasing them.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest as LeaseCreateRequest, DeleteRequest as LeaseDeleteRequest,
    Resource,
};

use super::client::{grpc, not_found_ok, Containerd, SNAPSHOTTER};
use crate::runtime::RuntimeError;

/// What a lease can hold by name (containerd's lease resource types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// A blob of the content store, by digest.
    Content,
    /// A committed snapshot of runlet's snapshotter, by name (a chain ID).
    Snapshot,
}

impl Held {
    fn resource_type(self) -> String {
        match self {
            Held::Content => "content".to_string(),
            Held::Snapshot => format!("snapshots/{SNAPSHOTTER}"),
        }
    }
}

/// A lease held while content or snapshots have no other reference; deleted on `release`.
pub struct Lease {
    pub(super) id: String,
}

impl Containerd {
    /// Creates a lease that expires by itself after `ttl` if runlet dies before releasing it.
    pub async fn lease(&self, purpose: &str, ttl: Duration) -> Result<Lease, RuntimeError> {
        let id = format!("runlet-{purpose}-{}", crate::util::random_suffix(10));
        let expire = std::time::SystemTime::now() + ttl;
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.expire".to_string(),
            crate::util::rfc3339(expire),
        );
        LeasesClient::new(self.channel())
            .create(self.req(LeaseCreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(grpc("create lease", &id))?;
        Ok(Lease { id })
    }

    /// Deletes a lease; with `sync` garbage collection runs before this returns.
    pub async fn release(&self, lease: Lease, sync: bool) -> Result<(), RuntimeError> {
        not_found_ok(
            LeasesClient::new(self.channel())
                .delete(self.req(LeaseDeleteRequest {
                    id: lease.id.clone(),
                    sync,
                }))
                .await
                .map_err(grpc("delete lease", &lease.id)),
        )
    }

    /// Adds `id` (a digest or a snapshot name) to `lease`, whether it exists yet or not.
    /// Done before a blob or snapshot found present is relied on: without it, an image
    /// removed meanwhile (`image rm`) lets garbage collection take what this operation is
    /// about to reference.
    pub(super) async fn hold(
        &self,
        lease: &Lease,
        what: Held,
        id: &str,
    ) -> Result<(), RuntimeError> {
        LeasesClient::new(self.channel())
            .add_resource(self.req(AddResourceRequest {
                id: lease.id.clone(),
                resource: Some(Resource {
                    id: id.to_string(),
                    r#type: what.resource_type(),
                }),
            }))
            .await
            .map_err(grpc("add to lease", id))?;
        Ok(())
    }
}
