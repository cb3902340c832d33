//! The IAM calls of v1 (`POST /v1/projects/P/locations/R/services/S:getIamPolicy`,
//! `:setIamPolicy`, `:testIamPermissions`; gcloud sends `getIamPolicy` as a GET too).
//! The policy is stored by the daemon (`crate::daemon::iam`) and returned; it is never
//! enforced: locally every caller is allowed, and `testIamPermissions` grants whatever is
//! asked.

use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};
use tonic::Status;

use super::Answer;
use crate::daemon::Daemon;

/// One IAM call on `resource` (a full name whose existence the caller has checked): `verb`
/// is what follows the `:`.
pub(crate) async fn call(
    d: &Arc<Daemon>,
    m: &Method,
    resource: &str,
    verb: &str,
    body: &[u8],
) -> Answer {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Status::invalid_argument(format!("invalid JSON body: {e}")))?
    };
    match (m, verb) {
        (&Method::GET | &Method::POST, "getIamPolicy") => d.get_iam_policy(resource).await,
        (&Method::POST, "setIamPolicy") => {
            let policy = body
                .get("policy")
                .cloned()
                .ok_or_else(|| Status::invalid_argument("policy is required"))?;
            d.set_iam_policy(resource, policy).await
        }
        (&Method::POST, "testIamPermissions") => Ok(granted(&body)),
        _ => Err(Status::not_found(format!(
            "no IAM method {m} :{verb}: allowed getIamPolicy, setIamPolicy, testIamPermissions"
        ))),
    }
}

/// `testIamPermissions`: every permission asked is granted (locally every caller is).
pub(crate) fn granted(body: &Value) -> Value {
    let asked = body.get("permissions").cloned().unwrap_or(json!([]));
    json!({ "permissions": asked })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_asked_is_granted() {
        for (body, want) in [
            (
                json!({"permissions": ["run.services.setIamPolicy"]}),
                json!({"permissions": ["run.services.setIamPolicy"]}),
            ),
            (json!({}), json!({"permissions": []})),
        ] {
            assert_eq!(granted(&body), want);
        }
    }
}
