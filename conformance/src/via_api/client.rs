//! A small client for the Admin API v2's HTTP/JSON mapping: one call, long-running
//! operations, and the service and job calls the API driver makes. Plain HTTP/1.1 (the
//! suite's own client): enough for runlet's daemon; Cloud Run itself needs TLS, which this
//! client does not speak yet (docs/conformance.md).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::http::{self, Request};

/// Where the Admin API is, and under which parent the suite's resources live.
#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: SocketAddr,
    /// `projects/P/locations/R`.
    pub parent: String,
    /// Sent as `Authorization: Bearer TOKEN` when set.
    pub token: Option<String>,
}

/// Google's error shape, as an error: `STATUS (HTTP): message`.
fn api_error(method: &str, path: &str, status: u16, body: &str) -> anyhow::Error {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().map(|j| &j["error"]) {
        Some(e) if e.is_object() => anyhow!(
            "{method} {path}: {} ({status}): {}",
            e["status"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        ),
        _ => anyhow!("{method} {path}: status {status}: {}", body.trim()),
    }
}

impl Client {
    /// `method` on `/v2/PATH`; the JSON answer of a 200.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut req = Request::new(method, &format!("/v2/{path}"))
            .header("Content-Type", "application/json")
            .timeout(Duration::from_secs(60));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = http::send(self.endpoint, &req)
            .await
            .with_context(|| format!("the Admin API at {}", self.endpoint))?;
        if r.status != 200 {
            return Err(api_error(method, path, r.status, &r.text()));
        }
        r.json()
    }

    /// Waits for operation `op` (`:wait` in rounds of 30 s, `limit` in all); returns it done.
    pub async fn wait(&self, op: &Value, limit: Duration) -> Result<Value> {
        if op["done"] == true {
            return Ok(op.clone());
        }
        let name = op["name"]
            .as_str()
            .ok_or_else(|| anyhow!("an operation without a name: {op}"))?;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("operation {name} not done after {} s", limit.as_secs());
            }
            let round = left.min(Duration::from_secs(30));
            let op = self
                .call(
                    "POST",
                    &format!("{name}:wait"),
                    Some(&json!({"timeout": format!("{}s", round.as_secs().max(1))})),
                )
                .await?;
            if op["done"] == true {
                return Ok(op);
            }
        }
    }

    pub fn service_path(&self, name: &str) -> String {
        format!("{}/services/{name}", self.parent)
    }

    pub fn job_path(&self, name: &str) -> String {
        format!("{}/jobs/{name}", self.parent)
    }

    /// CreateService; the operation.
    pub async fn create_service(&self, name: &str, svc: &Value) -> Result<Value> {
        self.call(
            "POST",
            &format!("{}/services?serviceId={name}", self.parent),
            Some(svc),
        )
        .await
    }

    /// DeleteService; the operation.
    pub async fn delete_service(&self, name: &str) -> Result<Value> {
        self.call("DELETE", &self.service_path(name), None).await
    }

    /// CreateJob, waited for; the job.
    pub async fn create_job(&self, name: &str, job: &Value) -> Result<Value> {
        let op = self
            .call(
                "POST",
                &format!("{}/jobs?jobId={name}", self.parent),
                Some(job),
            )
            .await?;
        ok_response(self.wait(&op, Duration::from_secs(60)).await?)
    }

    /// RunJob; the operation (its metadata is the execution).
    pub async fn run_job(&self, name: &str) -> Result<Value> {
        self.call(
            "POST",
            &format!("{}:run", self.job_path(name)),
            Some(&json!({})),
        )
        .await
    }

    /// DeleteJob, waited for.
    pub async fn delete_job(&self, name: &str) -> Result<()> {
        let op = self.call("DELETE", &self.job_path(name), None).await?;
        ok_response(self.wait(&op, Duration::from_secs(60)).await?).map(|_| ())
    }
}

/// A done operation's response, or its error as an error.
pub fn ok_response(op: Value) -> Result<Value> {
    if let Some(e) = op.get("error") {
        bail!(
            "{}",
            e["message"].as_str().unwrap_or("the operation failed")
        );
    }
    Ok(op["response"].clone())
}

/// Is `e` a NOT_FOUND from the API?
pub fn not_found(e: &anyhow::Error) -> bool {
    e.to_string().contains("NOT_FOUND (404)")
}

/// Where a service's URL is served: the address to connect to and the `Host` to send.
/// `NAME.localhost[:PORT]` (runlet's daemon) is on this machine's loopback.
pub async fn url_target(uri: &str) -> Result<(SocketAddr, String)> {
    let rest = uri.strip_prefix("http://").ok_or_else(|| {
        anyhow!("service URL {uri:?}: only http:// URLs can be reached (no TLS client yet)")
    })?;
    let host = rest.split('/').next().unwrap_or(rest).to_string();
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || p.parse::<u16>().is_ok() => (
            n.to_string(),
            p.parse::<u16>()
                .map_err(|_| anyhow!("service URL {uri:?}: bad port"))?,
        ),
        _ => (host.clone(), 80),
    };
    let lower = name.to_ascii_lowercase();
    let addr = if lower == "localhost" || lower.ends_with(".localhost") {
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        tokio::net::lookup_host((name.as_str(), port))
            .await
            .with_context(|| format!("resolving {name}"))?
            .next()
            .ok_or_else(|| anyhow!("{name} has no address"))?
    };
    Ok((addr, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn service_urls_on_loopback() {
        let (addr, host) = url_target("http://svc-a.localhost:8123").await.unwrap();
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 8123)));
        assert_eq!(host, "svc-a.localhost:8123");
        let (addr, host) = url_target("http://svc-a.localhost/").await.unwrap();
        assert_eq!(addr.port(), 80);
        assert_eq!(host, "svc-a.localhost");
        assert!(url_target("https://x.run.app").await.is_err());
    }

    #[test]
    fn errors_in_googles_shape() {
        let e = api_error(
            "GET",
            "p/services/x",
            404,
            r#"{"error":{"code":404,"status":"NOT_FOUND","message":"no x"}}"#,
        );
        assert!(not_found(&e), "{e}");
        assert!(e.to_string().contains("no x"));
        assert!(!not_found(&api_error("GET", "p", 500, "boom")));
    }
}
