//! Service instance lifecycle (LIFE-1..3, LIFE-5..8): scaling, start-up, queueing, CPU
//! while serving, idling, shutdown and signals. Instance counts are read from containerd.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Result};
use tokio::time::Instant;

use super::jobs::sigterm_at;
use super::{cpu_limit, now_millis, num, secs, PROBE};
use crate::harness::{Ctx, Exited, Served};
use crate::http::{Request, Response};

/// Sends `n` requests at once; returns the responses (in order).
async fn burst(s: &Served, n: usize, path: &str) -> Result<Vec<Response>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let target = s.target();
        let req = Request::get(path).timeout(Duration::from_secs(60));
        tasks.push(tokio::spawn(async move { target.send(&req).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(|e| anyhow!("request task: {e}"))??);
    }
    Ok(out)
}

fn hostnames(responses: &[Response]) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    for r in responses {
        ensure!(r.status == 200, "status {}: {}", r.status, r.brief());
        let j = r.json()?;
        set.insert(j["hostname"].as_str().unwrap_or("?").to_string());
    }
    Ok(set)
}

pub(super) async fn scales_out_under_load(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&[
            "--image",
            PROBE,
            "--concurrency",
            "1",
            "--max-instances",
            "3",
        ])
        .await?;
    let hosts = hostnames(&burst(&s, 3, "/?sleep=3000").await?)?;
    ensure!(
        hosts.len() >= 2,
        "3 simultaneous requests with --concurrency 1 were all served by {hosts:?}"
    );
    Ok(())
}

pub(super) async fn scales_in_to_min_instances(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&[
            "--image",
            PROBE,
            "--concurrency",
            "1",
            "--max-instances",
            "3",
            "--min-instances",
            "1",
            "--idle-timeout",
            "2s",
        ])
        .await?;
    let hosts = hostnames(&burst(&s, 3, "/?sleep=2000").await?)?;
    ensure!(
        hosts.len() >= 2,
        "the burst did not scale out (served by {hosts:?})"
    );
    ctx.wait_containers(|n| n == 1, Duration::from_secs(20))
        .await
        .map_err(|e| anyhow!("scaling in to --min-instances 1: {e}"))?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let n = ctx.containers().await?.len();
    ensure!(
        n == 1,
        "{n} instance(s) 4 s after reaching min-instances, want 1 kept"
    );
    Ok(())
}

pub(super) async fn scales_to_zero_and_back(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&["--image", PROBE, "--idle-timeout", "2s"])
        .await?;
    let first = s.report().await?;
    ctx.wait_no_containers("scaling in to zero with no traffic")
        .await?;
    let again = s.get_within("/", 30).await?;
    ensure!(
        again.status == 200,
        "the request after scaling to zero got {}: {}",
        again.status,
        again.brief()
    );
    let j = again.json()?;
    ensure!(
        j["hostname"] != first["hostname"],
        "the same instance ({}) answered after scaling to zero",
        j["hostname"]
    );
    Ok(())
}

pub(super) async fn waits_for_listen(ctx: Ctx) -> Result<()> {
    let r = ctx
        .serve(&[
            "--image",
            PROBE,
            "--set-env-vars",
            "PROBE_LISTEN_DELAY_MS=3000",
        ])
        .await?
        .report()
        .await?;
    let (started, listening) = (num(&r["started_at"]), num(&r["listening_at"]));
    let (Some(started), Some(listening)) = (started, listening) else {
        bail!("the probe did not report its start and listen times");
    };
    ensure!(
        listening - started >= 3000.0,
        "the probe listened {} ms after starting, want >= 3000",
        listening - started
    );
    Ok(())
}

/// Runs `runlet serve ARGS` that must fail on its own; returns how it ended.
async fn serve_fails(ctx: &Ctx, args: &[&str], timeout: Duration) -> Result<Exited> {
    let e = ctx.serve_fails(args, timeout).await?;
    ensure!(
        !e.timed_out,
        "runlet serve {} was still running after {}: {}",
        args.join(" "),
        secs(timeout),
        e.tail(4)
    );
    ensure!(
        !e.success(),
        "runlet serve {} exited 0: {}",
        args.join(" "),
        e.tail(4)
    );
    ensure!(
        !e.output.contains("is serving at"),
        "runlet serve {} said it was serving: {}",
        args.join(" "),
        e.tail(4)
    );
    Ok(e)
}

/// [`serve_fails`] (within 30 s) with an error containing `needle`; `what` says what the
/// error must do, for the message.
async fn serve_fails_saying(ctx: &Ctx, args: &[&str], needle: &str, what: &str) -> Result<()> {
    let e = serve_fails(ctx, args, Duration::from_secs(30)).await?;
    ensure!(
        e.output.contains(needle),
        "the error does not {what}: {}",
        e.tail(3)
    );
    Ok(())
}

pub(super) async fn never_listening_fails(ctx: Ctx) -> Result<()> {
    let e = serve_fails(
        &ctx,
        &[
            "--image",
            PROBE,
            "--startup-timeout",
            "4s",
            "--set-env-vars",
            "PROBE_NEVER_LISTEN=1",
        ],
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        e.output.contains("8080") && e.output.to_lowercase().contains("listen"),
        "the error does not say the container did not listen on 8080: {}",
        e.tail(3)
    );
    Ok(())
}

pub(super) async fn exit_at_startup_clear_error(ctx: Ctx) -> Result<()> {
    let e = serve_fails(
        &ctx,
        &["--image", PROBE, "--set-env-vars", "PROBE_EXIT_CODE=5"],
        Duration::from_secs(30),
    )
    .await?;
    let lower = e.output.to_lowercase();
    ensure!(
        lower.contains("exit code 5")
            || lower.contains("exit status 5")
            || lower.contains("exited with code 5"),
        "the error does not give the exit code 5: {}",
        e.tail(3)
    );
    Ok(())
}

pub(super) async fn missing_image_clear_error(ctx: Ctx) -> Result<()> {
    // On a registry on loopback where nothing listens (port 9, discard): a runtime that
    // pulls missing images (the API driver's daemon) fails at once, and no traffic leaves
    // this machine.
    let image = format!("127.0.0.1:9/never-loaded-{}:v9", ctx.name());
    let named = format!("never-loaded-{}", ctx.name());
    serve_fails_saying(&ctx, &["--image", &image], &named, "name the image").await
}

pub(super) async fn startup_timeout_at_most_4m(ctx: Ctx) -> Result<()> {
    serve_fails_saying(
        &ctx,
        &["--image", PROBE, "--startup-timeout", "241s"],
        "--startup-timeout",
        "name --startup-timeout",
    )
    .await
}

pub(super) async fn idle_timeout_at_most_15m(ctx: Ctx) -> Result<()> {
    serve_fails_saying(
        &ctx,
        &["--image", PROBE, "--idle-timeout", "16m"],
        "--idle-timeout",
        "name --idle-timeout",
    )
    .await
}

async fn one_busy_then(ctx: &Ctx, busy_ms: u64) -> Result<(Response, Response)> {
    let s = ctx
        .serve_with_metrics(&[
            "--image",
            PROBE,
            "--concurrency",
            "1",
            "--max-instances",
            "1",
        ])
        .await?;
    let busy = s.spawn_get(&format!("/?sleep={busy_ms}"), 60);
    // The instance's one slot is taken (the probe cannot be asked: it would be held too).
    s.wait_in_flight(1).await?;
    let held = s.get_within("/", 60).await?;
    let busy = busy.await.map_err(|e| anyhow!("request task: {e}"))??;
    Ok((busy, held))
}

pub(super) async fn held_while_busy(ctx: Ctx) -> Result<()> {
    let (busy, held) = one_busy_then(&ctx, 4000).await?;
    ensure!(busy.status == 200, "the busy request got {}", busy.status);
    ensure!(
        held.status == 200,
        "the held request got {} after {}: {}",
        held.status,
        secs(held.head_after),
        held.brief()
    );
    ensure!(
        held.head_after >= Duration::from_millis(2500),
        "the held request was answered after {}, before the busy one ended: did it overlap?",
        secs(held.head_after)
    );
    Ok(())
}

pub(super) async fn hold_expires_after_10s(ctx: Ctx) -> Result<()> {
    let (_, held) = one_busy_then(&ctx, 15000).await?;
    ensure!(
        held.status != 200,
        "the held request got 200 after {}; want a refusal after 10 s",
        secs(held.head_after)
    );
    ensure!(
        held.head_after >= Duration::from_millis(9000)
            && held.head_after <= Duration::from_millis(12500),
        "the held request was refused ({}) after {}, want 10 s",
        held.status,
        secs(held.head_after)
    );
    ensure!(
        held.status == 429 || held.status == 503,
        "the held request got {}, want 429 (or 503)",
        held.status
    );
    Ok(())
}

pub(super) async fn held_through_slow_startup(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&[
            "--image",
            PROBE,
            "--idle-timeout",
            "1s",
            "--set-env-vars",
            "PROBE_LISTEN_DELAY_MS=12000",
        ])
        .await?;
    ctx.wait_no_containers("waiting for the idle instance to go (--idle-timeout 1s)")
        .await?;
    let r = s.get_within("/", 60).await?;
    ensure!(
        r.status == 200,
        "status {} after {}: a request waiting for a start-up that takes 12 s (like every start-up of this service) was not held through it: {}",
        r.status,
        secs(r.head_after),
        r.brief()
    );
    ensure!(
        r.head_after >= Duration::from_secs(11),
        "served after {}, before the 12 s start-up could have finished",
        secs(r.head_after)
    );
    Ok(())
}

pub(super) async fn cpu_during_request(ctx: Ctx) -> Result<()> {
    cpu_while_serving(ctx, &[]).await
}

/// With `--cpu-throttling` an idle instance keeps 1% of a CPU; a request must bring the
/// full quota back before the container sees it.
pub(super) async fn cpu_during_request_throttled(ctx: Ctx) -> Result<()> {
    cpu_while_serving(ctx, &["--cpu-throttling"]).await
}

async fn cpu_while_serving(ctx: Ctx, extra: &[&str]) -> Result<()> {
    let mut args = vec!["--image", PROBE];
    args.extend_from_slice(extra);
    let s = ctx.serve(&args).await?;
    let busy = s.spawn_get("/?sleep=2000", 30);
    let (r, answered) = s
        .wait_probe_in_flight(2)
        .await
        .map_err(|e| anyhow!("the slow request was not in flight during the check: {e}"))?;
    ensure!(
        answered < Duration::from_secs(2),
        "the container took {} to answer while serving",
        secs(answered)
    );
    let cpu = if ctx.gen1() {
        // gVisor shows no cgroup files inside: read the sandbox's cgroup on the host, where
        // the quota (and any freezing) applies.
        host_cpu_while_serving(&ctx).await?
    } else {
        let v1 = s
            .report_at("/readfile?path=/sys/fs/cgroup/freezer/freezer.state")
            .await?;
        let v2 = s
            .report_at("/readfile?path=/sys/fs/cgroup/cgroup.freeze")
            .await?;
        not_frozen(v1["contents"].as_str(), v2["contents"].as_str())?;
        cpu_limit(&r)?
    };
    ensure!(
        cpu >= 0.99,
        "the CPU limit while serving is {cpu} vCPU, want the configured 1"
    );
    let b = busy.await.map_err(|e| anyhow!("request task: {e}"))??;
    ensure!(b.status == 200, "the slow request got {}", b.status);
    Ok(())
}

/// Fails if the cgroup v1 `freezer.state` or v2 `cgroup.freeze` (whichever was read) says
/// frozen.
fn not_frozen(v1: Option<&str>, v2: Option<&str>) -> Result<()> {
    match (v1, v2) {
        (Some(st), _) => ensure!(
            st.trim() == "THAWED",
            "freezer.state is {st:?} while serving"
        ),
        (None, Some(f)) => ensure!(f.trim() == "0", "cgroup.freeze is {f:?} while serving"),
        (None, None) => {}
    }
    Ok(())
}

/// Under gen1: the CPU limit of this check's one instance as its host cgroup holds it (in
/// vCPUs), after checking that the cgroup is not frozen.
async fn host_cpu_while_serving(ctx: &Ctx) -> Result<f64> {
    let ids = ctx.containers().await?;
    ensure!(
        ids.len() == 1,
        "want one instance's container, found {ids:?}"
    );
    let id = &ids[0];
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    let cpu = ctx.host_cgroup(id, "cpu").await?;
    if cpu.join("cpu.max").exists() {
        not_frozen(None, read(cpu.join("cgroup.freeze")).as_deref())?;
    } else {
        let freezer = ctx.host_cgroup(id, "freezer").await?;
        not_frozen(read(freezer.join("freezer.state")).as_deref(), None)?;
    }
    let report = serde_json::json!({
        "cgroup": {
            "cpu_max": read(cpu.join("cpu.max")).map(|t| t.trim().to_string()),
            "cpu_quota_us": read(cpu.join("cpu.cfs_quota_us")).map(|t| t.trim().to_string()),
            "cpu_period_us": read(cpu.join("cpu.cfs_period_us")).map(|t| t.trim().to_string()),
            "files": cpu.display().to_string(),
        }
    });
    cpu_limit(&report).map_err(|e| anyhow!("{id}'s host cgroup {}: {e}", cpu.display()))
}

pub(super) async fn idle_instance_stopped(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&["--image", PROBE, "--idle-timeout", "3s"])
        .await?;
    s.report().await?;
    let after = ctx
        .wait_no_containers("waiting for the idle instance to stop")
        .await?;
    ensure!(
        after >= Duration::from_millis(2500),
        "the instance was stopped {} after its last request, before --idle-timeout 3s",
        secs(after)
    );
    ensure!(
        after <= Duration::from_secs(15),
        "the idle instance took {} to go",
        secs(after)
    );
    Ok(())
}

pub(super) async fn in_flight_finish_on_shutdown(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let busy = s.spawn_get("/?sleep=3000", 30);
    s.wait_probe_in_flight(2).await?;
    s.interrupt();
    // Routing stops when the service's controller says it is draining (or DeleteService
    // has answered).
    s.wait_shutdown_began(Duration::from_secs(10)).await?;
    let late = s.get_within("/", 15).await;
    let busy = busy.await.map_err(|e| anyhow!("request task: {e}"))?;
    let exited = s.wait(Duration::from_secs(40)).await;
    let busy = busy.map_err(|e| anyhow!("the in-flight request failed: {e:#}"))?;
    ensure!(
        busy.status == 200 && busy.complete,
        "the in-flight request got {} (complete body: {}, {:?}) when runlet was stopped during it",
        busy.status,
        busy.complete,
        busy.end_error
    );
    busy.json()?;
    if let Ok(r) = late {
        ensure!(
            r.status != 200,
            "a request sent after shutdown began was served (200)"
        );
    }
    ensure!(
        exited.success(),
        "runlet did not stop cleanly: {} {}",
        exited.describe_code(),
        exited.tail(3)
    );
    Ok(())
}

pub(super) async fn sigterm_then_sigkill_after_10s(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&["--image", PROBE, "--set-env-vars", "PROBE_IGNORE_SIGTERM=1"])
        .await?;
    s.report().await?;
    let asked = now_millis();
    s.interrupt();
    let e = s.wait(Duration::from_secs(60)).await;
    let ended = now_millis();
    let Some(term) = sigterm_at(&e.output) else {
        bail!("the container never logged a SIGTERM: {}", e.tail(4));
    };
    let to_term = Duration::from_millis(term.saturating_sub(asked));
    ensure!(
        to_term < Duration::from_secs(3),
        "SIGTERM came {} after the shutdown began",
        secs(to_term)
    );
    let to_end = Duration::from_millis(ended.saturating_sub(term));
    ensure!(
        to_end >= Duration::from_millis(9500) && to_end <= Duration::from_secs(25),
        "runlet ended {} after the SIGTERM; want SIGKILL after the 10 s grace",
        secs(to_end)
    );
    ensure!(
        e.success(),
        "runlet did not stop cleanly: {} {}",
        e.describe_code(),
        e.tail(3)
    );
    Ok(())
}

pub(super) async fn sigterm_grace_used(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&[
            "--image",
            PROBE,
            "--set-env-vars",
            "PROBE_SIGTERM_EXIT_DELAY_MS=3000",
        ])
        .await?;
    s.report().await?;
    let t0 = Instant::now();
    s.interrupt();
    let e = s.wait(Duration::from_secs(60)).await;
    let took = t0.elapsed();
    ensure!(
        e.output.contains("exiting with code 0 after SIGTERM"),
        "the container was not allowed to exit on its own after SIGTERM: {}",
        e.tail(4)
    );
    ensure!(
        took >= Duration::from_millis(2800) && took < Duration::from_millis(9500),
        "runlet took {} to stop a container that exits 3 s after SIGTERM",
        secs(took)
    );
    Ok(())
}
