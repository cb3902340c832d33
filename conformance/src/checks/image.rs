//! Images (IMG-1..3) and file names (NAME-1): what an image carries is honoured, the
//! accepted archive formats load and serve, and bad images are refused at load time.

use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::json;

use super::{BUSYBOX, PROBE, PROBE_USER};
use crate::harness::{require_file, Ctx};
use crate::local_registry::LocalRegistry;

const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) async fn busybox_base_image(ctx: Ctx) -> Result<()> {
    let s = ctx
        .serve(&[
            "--image",
            BUSYBOX,
            "--command",
            "/bin/httpd",
            "--args",
            "-f,-p,8080,-h,/etc",
        ])
        .await?;
    let r = s.get("/passwd").await?;
    ensure!(
        r.status == 200 && r.text().contains("root:x:0:0"),
        "GET /passwd from busybox httpd: status {}, body {:?}",
        r.status,
        r.brief()
    );
    Ok(())
}

pub(super) async fn command_and_args(ctx: Ctx) -> Result<()> {
    let r = ctx
        .serve(&[
            "--image",
            PROBE,
            "--command",
            "/probe",
            "--args",
            "first,second arg,--flag=x",
        ])
        .await?
        .report()
        .await?;
    let want = json!(["/probe", "first", "second arg", "--flag=x"]);
    ensure!(r["argv"] == want, "argv is {}, want {want}", r["argv"]);
    Ok(())
}

pub(super) async fn args_keep_entrypoint(ctx: Ctx) -> Result<()> {
    let s = ctx.serve(&["--image", PROBE, "--args", "one,two"]).await?;
    let r = s.report().await?;
    let want = json!(["/probe", "one", "two"]);
    ensure!(
        r["argv"] == want,
        "argv is {}, want {want} (the image's Entrypoint is /probe)",
        r["argv"]
    );
    Ok(())
}

pub(super) async fn workdir_from_image(ctx: Ctx) -> Result<()> {
    let r = ctx.serve(&["--image", PROBE_USER]).await?.report().await?;
    ensure!(r["cwd"] == "/tmp", "cwd is {}, want \"/tmp\"", r["cwd"]);
    Ok(())
}

pub(super) async fn user_from_image(ctx: Ctx) -> Result<()> {
    let r = ctx.serve(&["--image", PROBE_USER]).await?.report().await?;
    ensure!(
        r["uid"] == 65534 && r["euid"] == 65534 && r["gid"] == 65534 && r["egid"] == 65534,
        "uid/euid/gid/egid are {}/{}/{}/{}, want 65534 for all",
        r["uid"],
        r["euid"],
        r["gid"],
        r["egid"]
    );
    Ok(())
}

pub(super) async fn no_user_runs_as_root(ctx: Ctx) -> Result<()> {
    let r = ctx.serve(&["--image", PROBE]).await?.report().await?;
    ensure!(
        r["uid"] == 0 && r["gid"] == 0,
        "uid/gid are {}/{}, want 0/0",
        r["uid"],
        r["gid"]
    );
    Ok(())
}

/// Loads `archive`, expecting success and `image` in runlet's output.
async fn load_ok(ctx: &Ctx, archive: &str, image: &str) -> Result<()> {
    let path = ctx.env.archive(archive);
    require_file(&path)?;
    let path = path.to_string_lossy().into_owned();
    let out = ctx.run(&["image", "load", &path], LOAD_TIMEOUT).await?;
    ensure!(
        out.success(),
        "runlet image load {archive}: {}: {}",
        out.describe_code(),
        out.tail(4)
    );
    ensure!(
        out.output.contains(image),
        "runlet image load {archive} does not name {image}: {}",
        out.tail(4)
    );
    Ok(())
}

/// Loads `archive`, expecting a refusal whose message contains one of `needles`, and no
/// image named `image` afterwards.
async fn load_refused(ctx: &Ctx, archive: &str, image: &str, needles: &[&str]) -> Result<()> {
    let path = ctx.env.archive(archive);
    require_file(&path)?;
    let path = path.to_string_lossy().into_owned();
    let out = ctx.run(&["image", "load", &path], LOAD_TIMEOUT).await?;
    ensure!(
        !out.success() && !out.timed_out,
        "runlet image load {archive} succeeded ({}): {}",
        out.describe_code(),
        out.tail(4)
    );
    ensure!(
        needles.iter().any(|n| out.output.contains(n)),
        "the error does not say why (want one of {needles:?}): {}",
        out.tail(4)
    );
    let names = ctx.env.image_names().await?;
    ensure!(
        !names.iter().any(|n| n.contains(image)),
        "{image} was created anyway: {names:?}"
    );
    Ok(())
}

pub(super) async fn oci_archive(ctx: Ctx) -> Result<()> {
    load_ok(&ctx, "probe.oci.tar", "docker.io/library/probe:latest").await?;
    serves_the_probe(&ctx, "docker.io/library/probe:latest").await
}

pub(super) async fn docker_archive(ctx: Ctx) -> Result<()> {
    load_ok(&ctx, "probe.docker.tar", "probe-docker:latest").await?;
    serves_the_probe(&ctx, "probe-docker:latest").await
}

/// A schema-1 signed manifest, written by `skopeo copy --format v2s1` into a registry on
/// loopback, is pulled (converted to a runnable image) and serves. With the CLI driver
/// `runlet image pull` pulls it; with the API driver the deployment does (the daemon pulls
/// an image that is not in the store, as Cloud Run pulls every image).
pub(super) async fn docker_schema_1(ctx: Ctx) -> Result<()> {
    let archive = ctx.env.archive("probe.docker.tar");
    require_file(&archive)?;
    let reg = LocalRegistry::start().await?;
    let repo = format!("{}/probe-schema1:v1", ctx.name());
    reg.copy(
        &format!("docker-archive:{}", archive.display()),
        &repo,
        &["--format", "v2s1"],
    )
    .await?;
    let raw = reg.raw_manifest(&repo).await?;
    ensure!(
        raw.contains("\"schemaVersion\":1") && raw.contains("fsLayers"),
        "the registry does not hold a schema-1 manifest: {}",
        &raw[..raw.len().min(200)]
    );
    let image = format!("{}/{repo}", reg.host());
    if ctx.env.api.is_some() {
        // Not in the store (an earlier run may have left it): the deployment must pull.
        let _ = ctx.run(&["image", "rm", &image], LOAD_TIMEOUT).await;
    } else {
        let out = ctx.run(&["image", "pull", &image], LOAD_TIMEOUT).await?;
        ensure!(
            out.success(),
            "runlet image pull {image}: {}: {}",
            out.describe_code(),
            out.tail(4)
        );
    }
    let served = serves_the_probe(&ctx, &image).await;
    let _ = ctx.run(&["image", "rm", &image], LOAD_TIMEOUT).await;
    served
}

pub(super) async fn index_selects_amd64(ctx: Ctx) -> Result<()> {
    load_ok(&ctx, "probe-multi.oci.tar", "probe-multi:latest").await?;
    // The arm64 manifest's layer has no /probe: serving at all means amd64 was chosen.
    serves_the_probe(&ctx, "probe-multi").await
}

pub(super) async fn index_without_amd64_refused(ctx: Ctx) -> Result<()> {
    load_refused(
        &ctx,
        "arm64-only.oci.tar",
        "arm64-only",
        &["linux/amd64", "amd64"],
    )
    .await
}

pub(super) async fn non_utf8_refused(ctx: Ctx) -> Result<()> {
    load_refused(
        &ctx,
        "non-utf8.oci.tar",
        "non-utf8",
        &["UTF-8", "utf-8", "UTF8"],
    )
    .await
}

/// `runlet serve --image IMAGE` serves, and what answers is the probe.
async fn serves_the_probe(ctx: &Ctx, image: &str) -> Result<()> {
    let r = ctx.serve(&["--image", image]).await?.report().await?;
    ensure!(r["probe"] == "server", "unexpected report {}", r["probe"]);
    Ok(())
}
