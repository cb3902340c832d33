//! The checks. A check is named after the clause it exercises (`CLAUSE/name`), says in
//! one line what it verifies, and runs black-box against the runlet under test through a
//! [`Ctx`]: it deploys a service or runs a job with the probe image (by `runlet serve` /
//! `runlet job execute`, or through the Admin API: the check does not know which), talks
//! HTTP to it, and reads what the probe reports from inside. This module holds the
//! [`Check`] type and what checks of several areas share; [`registry`] lists them all, and
//! each area's file holds its checks' bodies.
//!
//! A check passes by returning `Ok(())`; any error is a FAIL with the error as the reason.
//! Checks never skip: the only SKIPs are the parts of clauses that `contract/clauses.toml`
//! gives a reason for.

mod fs;
mod image;
mod jobs;
mod lifecycle;
mod metadata;
mod outbound;
mod port_env;
mod registry;
mod requests;
mod resources;
mod sandbox;
mod sidecars;

pub use registry::all;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::harness::Ctx;
use crate::selftest::Mangle;

/// The future a check runs.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// One conformance check.
#[derive(Clone, Copy)]
pub struct Check {
    /// The contract clause ID it exercises.
    pub clause: &'static str,
    /// Its name within the clause (kebab-case).
    pub name: &'static str,
    /// What it verifies, in one line.
    pub verifies: &'static str,
    pub run: fn(Ctx) -> CheckFuture,
    /// Past this the check FAILs (and its runlets are stopped).
    pub timeout: Duration,
    /// Takes long (tens of seconds): started first so the suite ends sooner.
    pub slow: bool,
    /// The broken-runlet mangling this check must catch (see [`crate::selftest`]).
    pub breaks_with: Option<Mangle>,
}

impl Check {
    pub fn id(&self) -> String {
        format!("{}/{}", self.clause, self.name)
    }

    fn slow(mut self) -> Check {
        self.slow = true;
        self
    }

    fn breaks_with(mut self, m: Mangle) -> Check {
        self.breaks_with = Some(m);
        self
    }
}

/// Builds a [`Check`] from an `async fn(Ctx) -> Result<()>`.
macro_rules! check {
    ($clause:literal, $name:literal, $verifies:literal, $f:path) => {
        $crate::checks::Check {
            clause: $clause,
            name: $name,
            verifies: $verifies,
            run: |ctx| Box::pin($f(ctx)),
            timeout: std::time::Duration::from_secs(120),
            slow: false,
            breaks_with: None,
        }
    };
}
pub(crate) use check;

/// The probe image (loaded by the runner before any check).
pub const PROBE: &str = "probe";
/// The probe image with `USER 65534:65534` and `WorkingDir /tmp`.
pub const PROBE_USER: &str = "probe-user";
/// A static busybox image.
pub const BUSYBOX: &str = "busybox";

/// `report.env[key]` as a string.
pub fn env_var<'a>(report: &'a Value, key: &str) -> Option<&'a str> {
    report["env"][key].as_str()
}

/// `report.files[path]`, which must be there.
pub fn file<'a>(report: &'a Value, path: &str) -> Result<&'a Value> {
    let f = &report["files"][path];
    if f.is_null() {
        return Err(anyhow!("the probe's report has no entry for {path}"));
    }
    Ok(f)
}

/// Reads a number the probe reported as a string or number.
pub fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The memory limit the container reads (cgroup v2 `memory.max` or v1
/// `memory.limit_in_bytes`).
pub fn memory_limit(report: &Value) -> Result<u64> {
    let raw = report["cgroup"]["memory_limit"].as_str().ok_or_else(|| {
        anyhow!(
            "the container cannot read a memory limit (no memory.max or memory.limit_in_bytes): {}",
            report["cgroup"]["files"]
        )
    })?;
    raw.trim()
        .parse()
        .map_err(|_| anyhow!("memory limit {raw:?} is not a number of bytes (unlimited?)"))
}

/// The CPU limit the container reads, in vCPUs (cgroup v2 `cpu.max`, or v1
/// `cpu.cfs_quota_us / cpu.cfs_period_us`).
pub fn cpu_limit(report: &Value) -> Result<f64> {
    let cg = &report["cgroup"];
    if let Some(max) = cg["cpu_max"].as_str() {
        let mut it = max.split_whitespace();
        let (q, p) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        if q == "max" {
            return Err(anyhow!("cpu.max is {max:?}: no CPU limit"));
        }
        let (q, p): (f64, f64) = (
            q.parse().map_err(|_| anyhow!("cpu.max {max:?}"))?,
            p.parse().map_err(|_| anyhow!("cpu.max {max:?}"))?,
        );
        return Ok(q / p);
    }
    let q = num(&cg["cpu_quota_us"]).ok_or_else(|| {
        anyhow!(
            "the container cannot read a CPU limit (no cpu.max or cpu.cfs_quota_us): {}",
            cg["files"]
        )
    })?;
    let p = num(&cg["cpu_period_us"]).ok_or_else(|| anyhow!("no cpu.cfs_period_us"))?;
    if q < 0.0 {
        return Err(anyhow!("cpu.cfs_quota_us is {q}: no CPU limit"));
    }
    Ok(q / p)
}

/// Milliseconds since the Unix epoch, comparable with the probe's timestamps (0 if the clock
/// is before 1970).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds, for messages.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_kebab_case_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for c in all() {
            assert!(
                c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                c.id()
            );
            assert!(
                !c.verifies.is_empty() && !c.verifies.contains('|'),
                "{}",
                c.id()
            );
            assert!(seen.insert(c.id()), "{} twice", c.id());
        }
    }

    #[test]
    fn limits_from_v1_and_v2_reports() {
        let v1 = json!({"cgroup": {"memory_limit": "268435456", "cpu_max": null, "cpu_quota_us": "200000", "cpu_period_us": "100000"}});
        assert_eq!(memory_limit(&v1).unwrap(), 256 << 20);
        assert_eq!(cpu_limit(&v1).unwrap(), 2.0);
        let v2 = json!({"cgroup": {"memory_limit": "536870912", "cpu_max": "50000 100000"}});
        assert_eq!(memory_limit(&v2).unwrap(), 512 << 20);
        assert_eq!(cpu_limit(&v2).unwrap(), 0.5);
        let unlimited = json!({"cgroup": {"memory_limit": "max", "cpu_max": "max 100000"}});
        assert!(memory_limit(&unlimited).is_err());
        assert!(cpu_limit(&unlimited).is_err());
        let v1_unlimited =
            json!({"cgroup": {"cpu_max": null, "cpu_quota_us": "-1", "cpu_period_us": "100000"}});
        assert!(cpu_limit(&v1_unlimited).is_err());
    }
}
