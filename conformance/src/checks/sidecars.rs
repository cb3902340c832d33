//! Instances with sidecars (PORT-1 `sidecars`, PORT-3 `absent-in-sidecars`, LIFE-4): gcloud's
//! `--container NAME` groups, the ingress container the one with `--port`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use super::{BUSYBOX, PROBE};
use crate::harness::Ctx;

/// A busybox sidecar that runs `script` (with `sh -c`).
fn busybox<'a>(name: &'a str, script: &'a str) -> Vec<&'a str> {
    vec![
        "--container",
        name,
        "--image",
        BUSYBOX,
        "--command",
        "/bin/sh",
        "--args",
        script,
    ]
}

pub(super) async fn sidecars(ctx: Ctx) -> Result<()> {
    let mut args = vec!["--container", "app", "--image", PROBE, "--port", "8080"];
    args.extend(busybox(
        "side",
        "^@^-c@trap 'exit 0' TERM; while :; do sleep 1; done",
    ));
    let s = ctx.serve(&args).await?;
    s.report().await?;
    let ids = ctx.containers().await?;
    ensure!(
        ids.len() == 2,
        "{} containers for one instance with one sidecar, want 2: {ids:?}",
        ids.len()
    );
    Ok(())
}

pub(super) async fn absent_in_sidecars(ctx: Ctx) -> Result<()> {
    let mut args = vec![
        "--add-volume",
        "name=shared,type=in-memory,size-limit=1Mi",
        "--container",
        "app",
        "--image",
        PROBE,
        "--port",
        "8080",
        "--add-volume-mount",
        "volume=shared,mount-path=/shared",
    ];
    args.extend(busybox(
        "side",
        "^@^-c@env > /shared/env.tmp && busybox mv /shared/env.tmp /shared/env; trap 'exit 0' TERM; while :; do sleep 1; done",
    ));
    args.extend(["--add-volume-mount", "volume=shared,mount-path=/shared"]);
    let s = ctx.serve(&args).await?;
    // The sidecar writes its environment into the shared volume; the ingress container
    // (the probe) reads it back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let env = loop {
        let r = s.report_at("/readfile?path=/shared/env").await?;
        if let Some(text) = r["contents"].as_str() {
            break text.to_string();
        }
        if Instant::now() > deadline {
            bail!("the sidecar's environment never appeared in the shared volume: {r}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        !env.lines().any(|l| l.starts_with("PORT=")),
        "the sidecar has PORT: {env}"
    );
    ensure!(
        env.lines().any(|l| l == format!("K_SERVICE={}", s.service)),
        "the sidecar has no K_SERVICE={}: {env}",
        s.service
    );
    Ok(())
}

/// The ingress container (a probe) fetches the sidecar's report from localhost when it
/// starts and exits if it cannot; the sidecar (another probe) listens only 2 s after its
/// start. So the instance is ready only if the ingress container started after the
/// sidecar's startup probe passed. The probe is the client rather than busybox: under
/// gen1's gVisor, busybox `wget` and `nc` fail at random (see the probe's fetch.rs).
pub(super) async fn start_order(ctx: Ctx) -> Result<()> {
    let args = vec![
        "--container",
        "app",
        "--image",
        PROBE,
        "--set-env-vars",
        "PROBE_FETCH_AT_START=http://127.0.0.1:8080/",
        "--port",
        "8081",
        "--depends-on",
        "report",
        "--container",
        "report",
        "--image",
        PROBE,
        "--set-env-vars",
        "PROBE_LISTEN_DELAY_MS=2000",
        "--startup-probe",
        "tcpSocket.port=8080,periodSeconds=1,failureThreshold=20",
    ];
    let s = ctx.serve(&args).await?;
    let r = s.report_at("/fetched").await?;
    ensure!(
        r["env"]["K_SERVICE"] == s.service.as_str(),
        "the ingress container did not get the sidecar's report: {r}"
    );
    Ok(())
}
