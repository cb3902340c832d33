//! The metadata server (META-1, META-2). The probe asks it from inside the instance
//! (`/fetch`): each request goes to `metadata.google.internal:80`, the name runlet puts in
//! the instance's `/etc/hosts`, and leaves the instance only through runlet's DNAT.
//!
//! The probe rather than busybox: under gen1 (gVisor's host networking, Debian's 2022 runsc)
//! busybox `wget` fails every request with "Resource temporarily unavailable", and `nc` and
//! `httpd` now and then (see the probe's fetch.rs).

use anyhow::{anyhow, ensure, Result};

use super::PROBE;
use crate::harness::{Ctx, Served};
/// The token the suite's token command prints (`runlet serve --token-command`, and the
/// daemon the suite starts).
use crate::via_api::daemon::TOKEN;

/// GETs `computeMetadata/v1/PATH` from inside the probe's instance, with the
/// `Metadata-Flavor: Google` header or without; returns the status and body.
async fn ask(s: &Served, path: &str, flavor: bool) -> Result<(u16, String)> {
    let header = if flavor {
        "&header=Metadata-Flavor:%20Google"
    } else {
        ""
    };
    let r = s
        .get(&format!(
            "/fetch?url=http://metadata.google.internal:80/computeMetadata/v1/{path}{header}"
        ))
        .await?;
    let v = r.json()?;
    match v["status"].as_u64() {
        Some(status) if r.status == 200 => Ok((
            status as u16,
            v["body"].as_str().unwrap_or_default().to_string(),
        )),
        _ => Err(anyhow!("{path}: the probe could not ask: {v}")),
    }
}

pub(super) async fn flavor_required(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE]).await?;
    let (status, body) = ask(&s, "project/project-id", true).await?;
    ensure!(
        status == 200 && !body.trim().is_empty(),
        "with Metadata-Flavor: {status} {body:?}"
    );
    let (status, body) = ask(&s, "project/project-id", false).await?;
    ensure!(
        status == 403,
        "without Metadata-Flavor: {status} {body:?} (want 403)"
    );
    Ok(())
}

/// Who the check's instance is: with the CLI driver, `runlet serve`'s flags say; with the
/// API driver, the service's parent (`projects/P/locations/R`) does, as on Cloud Run.
fn expected_identity(ctx: &Ctx) -> (String, String, Vec<String>) {
    match &ctx.env.api {
        None => {
            let flags = [
                "--project",
                "conf-proj",
                "--region",
                "europe-west1",
                "--token-command",
            ];
            let mut v: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
            v.push(format!("echo {TOKEN}"));
            ("conf-proj".into(), "europe-west1".into(), v)
        }
        Some(t) => {
            let parts: Vec<&str> = t.client.parent.split('/').collect();
            let (p, r) = (parts.get(1), parts.get(3));
            (
                p.copied().unwrap_or_default().into(),
                r.copied().unwrap_or_default().into(),
                Vec::new(),
            )
        }
    }
}

pub(super) async fn values(ctx: Ctx) -> Result<()> {
    let (project, region, flags) = expected_identity(&ctx);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut args = vec!["--image", PROBE];
    args.extend_from_slice(&flags);
    let s = ctx.serve(&args).await?;
    let get = |path: &'static str| {
        let s = &s;
        async move {
            match ask(s, path, true).await? {
                (200, body) => Ok(body.trim().to_string()),
                (status, body) => Err(anyhow!("{path}: {status} {body:?}")),
            }
        }
    };
    let number = get("project/numeric-project-id").await?;
    let got = get("project/project-id").await?;
    ensure!(got == project, "project-id {got:?}, want {project:?}");
    ensure!(
        number.len() == 12 && number.bytes().all(|b| b.is_ascii_digit()),
        "numeric-project-id {number:?}"
    );
    ensure!(
        get("instance/region").await? == format!("projects/{number}/regions/{region}"),
        "region"
    );
    ensure!(
        get("instance/zone")
            .await?
            .starts_with(&format!("projects/{number}/zones/{region}-")),
        "zone"
    );
    let id = get("instance/id").await?;
    ensure!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "instance id {id:?}"
    );
    ensure!(
        get("instance/service-accounts/default/email").await?
            == format!("{number}-compute@developer.gserviceaccount.com"),
        "email"
    );
    let token = get("instance/service-accounts/default/token").await?;
    ensure!(
        // With the API driver the endpoint's own token source decides the value (the
        // daemon the suite starts prints TOKEN; Cloud Run mints a real one).
        match ctx.env.api {
            None => token.contains(&format!("\"access_token\":\"{TOKEN}\"")),
            Some(_) =>
                token.contains("\"access_token\":\"") && !token.contains("\"access_token\":\"\""),
        },
        "token {token:?}"
    );
    Ok(())
}
