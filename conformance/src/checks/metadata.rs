//! The metadata server (META-1, META-2). The probe has no HTTP client, so the busybox image
//! asks: at start-up it fetches each value from `metadata.google.internal` into a file,
//! then serves the files. Its request leaves the instance only through runlet's DNAT.

use anyhow::{ensure, Context, Result};

use super::BUSYBOX;
use crate::harness::Ctx;
/// The token the suite's token command prints (`runlet serve --token-command`, and the
/// daemon the suite starts).
use crate::via_api::daemon::TOKEN;

const MD: &str = "http://metadata.google.internal/computeMetadata/v1";

/// Serves busybox with `fetches` (file name, path under computeMetadata/v1, header?) done
/// first; returns the served instance.
async fn serve_fetched(
    ctx: &Ctx,
    extra: &[&str],
    fetches: &[(&str, &str, bool)],
) -> Result<crate::harness::Served> {
    let mut script = String::new();
    for (file, path, header) in fetches {
        let h = if *header {
            "--header 'Metadata-Flavor: Google' "
        } else {
            ""
        };
        script.push_str(&format!(
            "busybox timeout 10 wget -O /tmp/{file} {h}'{MD}/{path}' >/tmp/{file}.err 2>&1; "
        ));
    }
    script.push_str("exec httpd -f -p 8080 -h /tmp");
    let args = format!("^|^-c|{script}");
    let mut full = vec!["--image", BUSYBOX, "--command", "/bin/sh", "--args", &args];
    full.extend_from_slice(extra);
    ctx.serve(&full).await
}

pub(super) async fn flavor_required(ctx: Ctx) -> Result<()> {
    let s = serve_fetched(
        &ctx,
        &[],
        &[
            ("with", "project/project-id", true),
            ("without", "project/project-id", false),
        ],
    )
    .await?;
    let with = s.get("/with").await?;
    ensure!(
        with.status == 200 && !with.text().trim().is_empty(),
        "with Metadata-Flavor: {} {:?}",
        with.status,
        with.brief()
    );
    let err = s.get("/without.err").await?.text();
    ensure!(
        err.contains("403"),
        "without Metadata-Flavor, wget said {err:?} (want 403)"
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
    let s = serve_fetched(
        &ctx,
        &flags,
        &[
            ("project", "project/project-id", true),
            ("number", "project/numeric-project-id", true),
            ("region", "instance/region", true),
            ("zone", "instance/zone", true),
            ("id", "instance/id", true),
            ("email", "instance/service-accounts/default/email", true),
            ("token", "instance/service-accounts/default/token", true),
        ],
    )
    .await?;
    let get = |p: &'static str| {
        let s = &s;
        async move {
            s.get(p)
                .await
                .map(|r| r.text().trim().to_string())
                .with_context(|| p)
        }
    };
    let number = get("/number").await?;
    let got = get("/project").await?;
    ensure!(got == project, "project-id {got:?}, want {project:?}");
    ensure!(
        number.len() == 12 && number.bytes().all(|b| b.is_ascii_digit()),
        "numeric-project-id {number:?}"
    );
    ensure!(
        get("/region").await? == format!("projects/{number}/regions/{region}"),
        "region"
    );
    ensure!(
        get("/zone")
            .await?
            .starts_with(&format!("projects/{number}/zones/{region}-")),
        "zone"
    );
    let id = get("/id").await?;
    ensure!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "instance id {id:?}"
    );
    ensure!(
        get("/email").await? == format!("{number}-compute@developer.gserviceaccount.com"),
        "email"
    );
    let token = get("/token").await?;
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
