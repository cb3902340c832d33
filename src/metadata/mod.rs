//! The metadata server every instance and job task finds at
//! `http://metadata.google.internal/computeMetadata/v1/` (`169.254.169.254:80`), as on
//! Cloud Run: project, region, instance id, service account, access and ID tokens.
//!
//! It runs inside each runlet process, on the bridge's gateway address at a port of its
//! own ([`server::start`]); inside each instance's network namespace a DNAT rule
//! ([`crate::runtime::isolation::metadata_dnat`]) sends `169.254.169.254:80` there. It knows
//! which instance asks by the source address, registered when the instance's network is
//! attached ([`Registry`]). It is a separate listener: the request data path does not see it.
//!
//! - [`answer`]: the request (path, query, headers) to the answer, plain functions;
//! - [`server`]: the listener and HTTP glue;
//! - [`token`]: access tokens from a configured command (`--token-command`);
//! - [`idtoken`]: ID tokens signed with runlet's own RS256 key, and their JWKS.

pub mod answer;
pub mod host;
pub mod idtoken;
pub mod server;
pub mod token;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

/// The project used when none is given (`--project`).
pub const DEFAULT_PROJECT: &str = "runlet-local";
/// The region used when none is given (`--region`).
pub const DEFAULT_REGION: &str = "us-central1";
/// The scopes the default service account reports.
pub const SCOPES: &[&str] = &["https://www.googleapis.com/auth/cloud-platform"];

/// Who an instance is: its project, region and service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub project_id: String,
    pub region: String,
    pub service_account: String,
}

impl Identity {
    /// An identity from optional flags; the service account defaults to Cloud Run's default,
    /// the Compute Engine default service account `NUMBER-compute@developer.gserviceaccount.com`.
    pub fn new(project: Option<&str>, region: Option<&str>, service_account: Option<&str>) -> Self {
        let project_id = project
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_PROJECT)
            .to_string();
        let region = region
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_REGION)
            .to_string();
        let service_account = match service_account.filter(|s| !s.is_empty()) {
            Some(s) => s.to_string(),
            None => format!(
                "{}-compute@developer.gserviceaccount.com",
                numeric_project_id(&project_id)
            ),
        };
        Identity {
            project_id,
            region,
            service_account,
        }
    }

    /// The project and region of a resource name (`projects/P/locations/L/...`), if it has
    /// them.
    pub fn from_resource(name: &str, service_account: &str) -> Self {
        let parts: Vec<&str> = name.split('/').collect();
        let project = (parts.first() == Some(&"projects"))
            .then(|| parts.get(1).copied())
            .flatten();
        let region = (parts.get(2) == Some(&"locations"))
            .then(|| parts.get(3).copied())
            .flatten();
        Identity::new(project, region, Some(service_account))
    }
}

/// The first 8 bytes of SHA-256 of `domain:text`, as a number.
fn hash64(domain: &str, text: &str) -> u64 {
    let d = Sha256::digest(format!("{domain}:{text}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The project number: a 12-digit number derived from the project id (the first 8 bytes
/// of SHA-256 of `runlet-project:ID`, reduced to 100000000000..=999999999999), the same
/// on every machine and run.
pub fn numeric_project_id(project_id: &str) -> u64 {
    100_000_000_000 + hash64("runlet-project", project_id) % 900_000_000_000
}

/// An instance's id: a 19-digit number derived from its container id (unique per
/// instance and job task attempt), as Compute Engine's ids look.
pub fn instance_id(container_id: &str) -> u64 {
    1_000_000_000_000_000_000 + hash64("runlet-instance", container_id) % 8_000_000_000_000_000_000
}

/// An instance the server answers: its container id and identity.
#[derive(Debug, Clone)]
pub struct Instance {
    pub container_id: String,
    pub identity: Arc<Identity>,
}

/// Instances by their bridge address (the source address of their requests).
#[derive(Debug, Default)]
pub struct Registry {
    by_ip: RwLock<HashMap<Ipv4Addr, Instance>>,
}

impl Registry {
    pub async fn insert(&self, ip: Ipv4Addr, inst: Instance) {
        self.by_ip.write().await.insert(ip, inst);
    }

    /// Forgets container `id` (whatever its address).
    pub async fn remove(&self, container_id: &str) {
        self.by_ip
            .write()
            .await
            .retain(|_, i| i.container_id != container_id);
    }

    pub async fn get(&self, ip: Ipv4Addr) -> Option<Instance> {
        self.by_ip.read().await.get(&ip).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_shaped_like_googles() {
        let n = numeric_project_id("my-project");
        assert_eq!(n, numeric_project_id("my-project"));
        assert_ne!(n, numeric_project_id("other-project"));
        assert_eq!(n.to_string().len(), 12);
        assert_eq!(instance_id("svc-00001-abc-x1").to_string().len(), 19);
        assert_ne!(
            instance_id("svc-00001-abc-x1"),
            instance_id("svc-00001-abc-x2")
        );
    }

    #[test]
    fn identities_from_flags_and_resource_names() {
        let d = Identity::new(None, None, None);
        assert_eq!(d.project_id, "runlet-local");
        assert_eq!(d.region, "us-central1");
        assert_eq!(
            d.service_account,
            format!(
                "{}-compute@developer.gserviceaccount.com",
                numeric_project_id("runlet-local")
            )
        );
        let r = Identity::from_resource(
            "projects/p1/locations/europe-west1/services/s",
            "sa@p1.iam.gserviceaccount.com",
        );
        assert_eq!(
            (
                r.project_id.as_str(),
                r.region.as_str(),
                r.service_account.as_str()
            ),
            ("p1", "europe-west1", "sa@p1.iam.gserviceaccount.com")
        );
        let bad = Identity::from_resource("weird", "");
        assert_eq!(bad.project_id, "runlet-local");
    }
}
