//! The ingress port and the service environment (PORT-1..2, ENV-S1).

use anyhow::{ensure, Result};

use super::{env_var, PROBE};
use crate::harness::Ctx;

pub(super) async fn one_container_per_instance(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    s.report().await?;
    let ids = ctx.containers().await?;
    ensure!(
        ids.len() == 1,
        "{} containers for one instance: {ids:?}",
        ids.len()
    );
    Ok(())
}

pub(super) async fn default_port_8080(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let r = s.report().await?;
    ensure!(
        env_var(&r, "PORT") == Some("8080"),
        "PORT is {}, want \"8080\"",
        r["env"]["PORT"]
    );
    ensure!(
        s.output().contains("probe: listening on 0.0.0.0:8080"),
        "the probe did not log listening on 0.0.0.0:8080"
    );
    Ok(())
}

pub(super) async fn configured_port(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--port", "8801"]).await?;
    s.report().await?;
    ensure!(
        s.output().contains("probe: listening on 0.0.0.0:8801"),
        "the probe did not listen on 0.0.0.0:8801: {}",
        s.output()
            .lines()
            .find(|l| l.contains("probe: listening on"))
            .unwrap_or("(no listening line in runlet's log)")
    );
    Ok(())
}

pub(super) async fn port_equals_configured(ctx: Ctx) -> Result<()> {
    let r = ctx
        .serve(&["--image", PROBE, "--port", "8801"])
        .await?
        .report()
        .await?;
    ensure!(
        env_var(&r, "PORT") == Some("8801"),
        "PORT is {}, want \"8801\"",
        r["env"]["PORT"]
    );
    Ok(())
}

pub(super) async fn k_vars_match_names(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let r = s.report().await?;
    ensure!(
        s.service == ctx.name(),
        "runlet reports service {:?}, want {:?}",
        s.service,
        ctx.name()
    );
    for (k, want) in [
        ("K_SERVICE", s.service.as_str()),
        ("K_CONFIGURATION", s.service.as_str()),
        ("K_REVISION", s.revision.as_str()),
    ] {
        ensure!(
            env_var(&r, k) == Some(want),
            "{k} is {}, want {want:?}",
            r["env"][k]
        );
    }
    Ok(())
}
