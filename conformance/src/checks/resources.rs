//! Resources (RES-1..3) and the memory limit's consequences (LIFE-9): the limits the
//! container reads from its cgroup (v1 or v2), that it cannot change them, what happens
//! below and above the memory limit (in the main process or a child), and per-instance
//! concurrency.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use tokio::time::Instant;

use super::{cpu_limit, memory_limit, PROBE};
use crate::harness::{Ctx, Served};
use crate::http::Request;

pub(super) async fn cpu_limit_visible(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--cpu", "2"]).await?;
    let cpu = cpu_limit(&s.report().await?)?;
    ensure!((cpu - 2.0).abs() < 0.01, "CPU limit {cpu}, want 2");
    Ok(())
}

pub(super) async fn default_one_vcpu(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let cpu = cpu_limit(&s.report().await?)?;
    ensure!((cpu - 1.0).abs() < 0.01, "CPU limit {cpu}, want 1");
    Ok(())
}

pub(super) async fn memory_limit_visible(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--memory", "256Mi"]).await?;
    let m = visible_memory_limit(&ctx, &s).await?;
    ensure!(m == 256 << 20, "memory limit {m}, want {}", 256u64 << 20);
    Ok(())
}

pub(super) async fn default_512mi(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let m = visible_memory_limit(&ctx, &s).await?;
    ensure!(m == 512 << 20, "memory limit {m}, want {}", 512u64 << 20);
    Ok(())
}

/// The memory limit the container reads: its cgroup's; under gen1, where gVisor shows no
/// cgroup files, the machine size gVisor shows instead (`MemTotal` of `/proc/meminfo`,
/// which runsc sets from the sandbox's cgroup limit, and which runtimes without a cgroup
/// limit to read, like the JVM's, take as the machine's memory).
async fn visible_memory_limit(ctx: &Ctx, s: &Served) -> Result<u64> {
    if !ctx.gen1() {
        return memory_limit(&s.report().await?);
    }
    let f = s.report_at("/readfile?path=/proc/meminfo").await?;
    let text = f["contents"]
        .as_str()
        .ok_or_else(|| anyhow!("/proc/meminfo is not readable: {f}"))?;
    meminfo_total(text).ok_or_else(|| anyhow!("no MemTotal in /proc/meminfo: {text:?}"))
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub fn meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut f = line.split_whitespace().skip(1);
    let n: u64 = f.next()?.parse().ok()?;
    match f.next() {
        Some("kB") => Some(n * 1024),
        None => Some(n),
        Some(_) => None,
    }
}

pub(super) async fn limits_read_only(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let r = s.report().await?;
    ensure!(
        r["cgroup"]["memory_limit_files"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "no memory limit file to test"
    );
    ensure!(
        r["cgroup"]["memory_limit_writable"] == false,
        "the container can open its memory limit for writing ({})",
        r["cgroup"]["memory_limit_files"]
    );
    // mountinfo: "id parent maj:min root mount-point options - fstype source super-options".
    let mut cgroup_mounts = 0;
    for line in r["mounts"].as_array().into_iter().flatten() {
        let l = line.as_str().unwrap_or("");
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = l.split(" - ").nth(1).and_then(|s| s.split(' ').next());
        if f.len() > 5 && matches!(fstype, Some("cgroup") | Some("cgroup2")) {
            cgroup_mounts += 1;
            ensure!(
                f[5].split(',').any(|o| o == "ro"),
                "cgroup mount {} is writable: {l}",
                f[4]
            );
        }
    }
    ensure!(
        cgroup_mounts > 0,
        "no cgroup filesystem is mounted in the container"
    );
    Ok(())
}

pub(super) async fn alloc_below_limit_200(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--memory", "256Mi"]).await?;
    let r = s.get_within("/?alloc=100", 60).await?;
    ensure!(
        r.status == 200,
        "allocating 100 MiB under 256 MiB: status {}: {}",
        r.status,
        r.brief()
    );
    ensure!(
        r.json()?["alloc"]["mib"] == 100,
        "the probe did not report the allocation"
    );
    Ok(())
}

pub(super) async fn alloc_above_limit_refused(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--memory", "128Mi"]).await?;
    let r = s.get_within("/?alloc=512", 60).await?;
    ensure!(
        r.status != 200,
        "allocating and touching 512 MiB under a 128 MiB limit succeeded"
    );
    Ok(())
}

pub(super) async fn over_memory_limit_500(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--memory", "128Mi"]).await?;
    // A bystander in flight on the same instance must end with 500 too.
    let bystander = s.spawn_get("/?sleep=5000", 60);
    s.wait_probe_in_flight(2).await?;
    let r = s.get_within("/?alloc=512", 60).await?;
    let b = bystander.await.map_err(|e| anyhow!("request task: {e}"))?;
    let b = match b {
        Ok(b) => format!("status {}", b.status),
        Err(e) => format!("no response ({e:#})"),
    };
    ensure!(
        r.status == 500 && b == "status 500",
        "allocating 512 MiB under 128 MiB: status {} ({}); the request in flight beside it: {b}; want 500 for both",
        r.status,
        r.brief()
    );
    Ok(())
}

/// The probe as a server whose main process ignores SIGTERM (as one finishing its requests
/// would): a termination with the usual SIGTERM and 10 s grace would let the request run
/// on, so only an instance cut at once passes.
const CHILD_OOM_SERVE: [&str; 6] = [
    "--image",
    PROBE,
    "--memory",
    "128Mi",
    "--set-env-vars",
    "PROBE_IGNORE_SIGTERM=1",
];

/// How soon after the child's OOM kill its instance's requests must end: well under the
/// 10 s SIGTERM grace.
const CHILD_OOM_PROMPT: Duration = Duration::from_secs(5);

pub(super) async fn child_over_memory_limit_500(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&CHILD_OOM_SERVE).await?;
    // A bystander in flight on the same instance must end with 500 too.
    let bystander = s.spawn_get("/?sleep=8000", 60);
    s.wait_probe_in_flight(2).await?;
    // The main process holds the request for 8 s while its child allocates 512 MiB.
    let r = s.get_within("/?child_alloc=512&sleep=8000", 60).await?;
    let b = bystander.await.map_err(|e| anyhow!("request task: {e}"))?;
    let b = match b {
        Ok(b) => format!(
            "status {} after {:.1} s",
            b.status,
            b.end_after.as_secs_f64()
        ),
        Err(e) => format!("no response ({e:#})"),
    };
    ensure!(
        r.status == 500 && r.end_after < CHILD_OOM_PROMPT,
        "a child allocating 512 MiB under 128 MiB: status {} after {:.1} s ({}); want 500 within {} s",
        r.status,
        r.end_after.as_secs_f64(),
        r.brief(),
        CHILD_OOM_PROMPT.as_secs()
    );
    ensure!(
        b.starts_with("status 500"),
        "the request in flight beside it: {b}; want 500"
    );
    Ok(())
}

pub(super) async fn child_over_memory_limit_cuts_stream(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&CHILD_OOM_SERVE).await?;
    // The head and a first chunk go out at once; the child allocates 1 s later.
    let r = s
        .get_within(
            "/?child_alloc=512&child_after=1000&flush_then_sleep=8000",
            60,
        )
        .await?;
    ensure!(
        r.status == 200 && r.head_after < Duration::from_secs(1),
        "status {} after {:.1} s, want 200 at once (the headers are flushed before the child allocates)",
        r.status,
        r.head_after.as_secs_f64()
    );
    let body = r.text();
    ensure!(
        body.contains("\"started\":true"),
        "the first chunk is missing: {body:?}"
    );
    ensure!(
        !r.complete && !body.contains("done"),
        "the body ended normally after {:.1} s ({body:?}); want it cut when the child went over the memory limit",
        r.end_after.as_secs_f64()
    );
    ensure!(
        r.end_after < CHILD_OOM_PROMPT,
        "the body was cut after {:.1} s, want within {} s",
        r.end_after.as_secs_f64(),
        CHILD_OOM_PROMPT.as_secs()
    );
    Ok(())
}

pub(super) async fn concurrency_1_no_overlap(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--concurrency", "1"]).await?;
    let until = Instant::now() + Duration::from_secs(20);
    let mut clients = Vec::new();
    for _ in 0..5 {
        let target = s.target();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while Instant::now() < until {
                let r = target
                    .send(&Request::get("/?sleep=200").timeout(Duration::from_secs(30)))
                    .await;
                seen.push(r);
            }
            seen
        }));
    }
    // Per instance: the most requests it saw at once.
    let mut most: BTreeMap<String, u64> = BTreeMap::new();
    let (mut ok, mut errors) = (0, Vec::new());
    for c in clients {
        for r in c.await.map_err(|e| anyhow!("client task: {e}"))? {
            match r {
                Ok(r) if r.status == 200 => {
                    ok += 1;
                    let j = r.json()?;
                    let c = &j["concurrency"];
                    let seen = c["in_flight"]
                        .as_u64()
                        .unwrap_or(0)
                        .max(c["max_in_flight"].as_u64().unwrap_or(0));
                    let host = j["hostname"].as_str().unwrap_or("?").to_string();
                    let e = most.entry(host).or_default();
                    *e = (*e).max(seen);
                }
                Ok(r) => errors.push(format!("status {}", r.status)),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    let overlaps: Vec<String> = most
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(h, n)| format!("{h} had {n} at once"))
        .collect();
    ensure!(
        overlaps.is_empty(),
        "requests overlapped inside {} of {} instance(s): {}",
        overlaps.len(),
        most.len(),
        overlaps.join("; ")
    );
    errors.sort();
    errors.dedup();
    ensure!(
        errors.is_empty(),
        "{} of {} requests failed: {}",
        errors.len(),
        errors.len() + ok,
        errors.join("; ")
    );
    ensure!(ok >= 20, "only {ok} requests were served in 20 s");
    Ok(())
}

pub(super) async fn default_concurrent(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&["--image", PROBE, "--max-instances", "1"])
        .await?;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let target = s.target();
        tasks.push(tokio::spawn(async move {
            target
                .send(&Request::get("/?sleep=2000").timeout(Duration::from_secs(30)))
                .await
        }));
    }
    let mut max = 0;
    for t in tasks {
        let r = t.await.map_err(|e| anyhow!("request task: {e}"))??;
        ensure!(r.status == 200, "status {}: {}", r.status, r.brief());
        max = max.max(
            r.json()?["concurrency"]["max_in_flight"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    ensure!(
        max >= 2,
        "4 simultaneous requests never overlapped in the instance (max in flight {max})"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::meminfo_total;

    #[test]
    fn meminfo_total_reads_kibibytes() {
        let table = [
            (
                "MemTotal:         262144 kB\nMemFree: 1 kB\n",
                Some(256u64 << 20),
            ),
            ("MemFree: 1 kB\nMemTotal: 524288 kB\n", Some(512u64 << 20)),
            ("MemTotal: 100\n", Some(100)),
            ("MemTotal: 1 MB\n", None),
            ("MemFree: 1 kB\n", None),
        ];
        for (text, want) in table {
            assert_eq!(meminfo_total(text), want, "{text:?}");
        }
    }
}
