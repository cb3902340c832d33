//! The metadata server (META-1, META-2). The probe has no HTTP client, so the busybox image
//! asks: at start-up it fetches each value from `metadata.google.internal` into a file,
//! then serves the files. Its request leaves the instance only through runlet's DNAT.

use anyhow::{ensure, Context, Result};

use super::BUSYBOX;
use crate::harness::Ctx;

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

pub(super) async fn values(ctx: Ctx) -> Result<()> {
    let s = serve_fetched(
        &ctx,
        &[
            "--project",
            "conf-proj",
            "--region",
            "europe-west1",
            "--token-command",
            "echo conf-token",
        ],
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
    ensure!(get("/project").await? == "conf-proj", "project-id");
    ensure!(
        number.len() == 12 && number.bytes().all(|b| b.is_ascii_digit()),
        "numeric-project-id {number:?}"
    );
    ensure!(
        get("/region").await? == format!("projects/{number}/regions/europe-west1"),
        "region"
    );
    ensure!(
        get("/zone")
            .await?
            .starts_with(&format!("projects/{number}/zones/europe-west1-")),
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
        token.contains("\"access_token\":\"conf-token\""),
        "token {token:?}"
    );
    Ok(())
}
