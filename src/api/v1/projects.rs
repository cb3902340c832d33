//! `GET /v1/projects/P`: the Resource Manager's project, as much of it as gcloud asks.
//! `gcloud run services replace` looks up the project's number when the file names a
//! namespace; `runlet setup gcloud` points `api_endpoint_overrides/cloudresourcemanager`
//! here. runlet has no project numbers: the number is derived from the id, stable.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A stable 12-digit project number for a project id.
pub(crate) fn number(project: &str) -> String {
    let d = Sha256::digest(project.as_bytes());
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    format!("{}", 100_000_000_000 + n % 900_000_000_000)
}

pub(crate) fn project(id: &str) -> Value {
    json!({
        "projectId": id,
        "projectNumber": number(id),
        "name": id,
        "lifecycleState": "ACTIVE",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_twelve_digits() {
        for id in ["proj1", "my-project", "p"] {
            let n = number(id);
            assert_eq!(n.len(), 12, "{n}");
            assert_eq!(n, number(id));
            assert_eq!(project(id)["projectNumber"], n);
        }
        assert_ne!(number("a"), number("b"));
    }
}
