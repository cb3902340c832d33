//! IAM policies of the daemon's resources (services; jobs use the same calls), as the
//! Admin API v1's `getIamPolicy` / `setIamPolicy` keep them: one record per resource in
//! the store (kind [`KIND`], keyed by the resource's full name), deleted with the service.
//!
//! Locally every caller is allowed: a policy is stored and returned so that `gcloud run
//! deploy --allow-unauthenticated` and `gcloud run services add-iam-policy-binding` work
//! and read back what they set, but runlet never enforces it (its ingress serves every
//! request, as a service with `allUsers` as invoker would).

use base64::Engine;
use sha2::{Digest, Sha256};
use tonic::Status;

use super::Daemon;

/// The store's kind for policies.
pub const KIND: &str = "iam";

/// The etag Google's APIs give a policy with no bindings.
pub const EMPTY_ETAG: &str = "ACAB";

/// The policy's etag: a hash of its content (without the etag), base64 as Google writes it.
pub fn etag_of(policy: &serde_json::Value) -> String {
    let mut p = policy.clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("etag");
    }
    let digest = Sha256::digest(serde_json::to_vec(&p).unwrap_or_default());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

/// The policy to store for `given` (a `setIamPolicy` body's `policy`), checking its etag
/// against the `current` one's; `version` 1 when unset.
pub fn next_policy(
    current: Option<&serde_json::Value>,
    mut given: serde_json::Value,
) -> Result<serde_json::Value, Status> {
    let Some(o) = given.as_object_mut() else {
        return Err(Status::invalid_argument("policy: expected a JSON object"));
    };
    let have = current
        .and_then(|c| c.get("etag"))
        .and_then(|e| e.as_str())
        .unwrap_or(EMPTY_ETAG);
    if let Some(e) = o.get("etag").and_then(|e| e.as_str()) {
        if !e.is_empty() && e != have {
            return Err(Status::aborted(format!(
                "policy.etag {e} does not match the current policy's ({have}): there were concurrent policy changes; read the policy again and retry"
            )));
        }
    }
    o.entry("version").or_insert(1.into());
    let etag = etag_of(&given);
    given["etag"] = etag.into();
    Ok(given)
}

impl Daemon {
    /// The policy of `resource` (its full name): the stored one, or an empty policy.
    pub async fn get_iam_policy(&self, resource: &str) -> Result<serde_json::Value, Status> {
        Ok(self
            .stored_policy(resource)?
            .unwrap_or_else(|| serde_json::json!({ "etag": EMPTY_ETAG })))
    }

    /// Stores `policy` as the policy of `resource` (its full name) and returns it with its
    /// new etag.
    pub async fn set_iam_policy(
        &self,
        resource: &str,
        policy: serde_json::Value,
    ) -> Result<serde_json::Value, Status> {
        let current = self.stored_policy(resource)?;
        let next = next_policy(current.as_ref(), policy)?;
        self.put(KIND, resource, &next)?;
        Ok(next)
    }

    fn stored_policy(&self, resource: &str) -> Result<Option<serde_json::Value>, Status> {
        self.store
            .get(KIND, resource)
            .map_err(|e| Status::internal(format!("reading the policy of {resource}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_and_etags() {
        let p = json!({"bindings": [{"role": "roles/run.invoker", "members": ["allUsers"]}]});
        // The first set: no etag, or the empty policy's.
        let first = next_policy(None, p.clone()).unwrap();
        assert_eq!(first["version"], 1);
        assert_eq!(first["etag"], etag_of(&first));
        let with_empty = json!({"bindings": [], "etag": EMPTY_ETAG});
        assert!(next_policy(None, with_empty).is_ok());
        // A later set must carry the current etag (or none).
        let mut again = p.clone();
        again["etag"] = first["etag"].clone();
        assert!(next_policy(Some(&first), again).is_ok());
        let mut stale = p.clone();
        stale["etag"] = "AAAA".into();
        assert_eq!(
            next_policy(Some(&first), stale).unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert!(next_policy(None, json!([])).is_err());
        // The etag follows the content.
        assert_ne!(etag_of(&first), etag_of(&json!({"bindings": []})));
    }
}
