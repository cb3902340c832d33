//! The metadata server (META-1, META-2). The probe has no HTTP client, so the busybox image
//! asks: at start-up it sends each request to `metadata.google.internal:80` with `nc` and
//! keeps the raw response in a file, then serves the files. Its request leaves the instance
//! only through runlet's DNAT.
//!
//! `nc`, not busybox `wget`: under gen1 (gVisor's host networking, Debian's 2022 runsc)
//! busybox `wget` fails every request, to any server and even to the instance's own
//! loopback, with "error getting response: Resource temporarily unavailable" (it reads
//! its socket after a readiness that gVisor reports early), and busybox `timeout`
//! segfaults; `nc` works under both environments.

use anyhow::{ensure, Context, Result};

use super::BUSYBOX;
use crate::harness::Ctx;
/// The token the suite's token command prints (`runlet serve --token-command`, and the
/// daemon the suite starts).
use crate::via_api::daemon::TOKEN;

/// Serves busybox with `fetches` (file name, path under computeMetadata/v1, header?) done
/// first, each raw response in `/FILE`; returns the served instance.
async fn serve_fetched(
    ctx: &Ctx,
    extra: &[&str],
    fetches: &[(&str, &str, bool)],
) -> Result<crate::harness::Served> {
    let mut script = String::new();
    for (file, path, header) in fetches {
        let h = if *header {
            "Metadata-Flavor: Google\\r\\n"
        } else {
            ""
        };
        script.push_str(&format!(
            "printf 'GET /computeMetadata/v1/{path} HTTP/1.0\\r\\nHost: metadata.google.internal\\r\\n{h}\\r\\n' | busybox nc -w 10 metadata.google.internal 80 >/tmp/{file} 2>&1; "
        ));
    }
    script.push_str("exec httpd -f -p 8080 -h /tmp");
    let args = format!("^@@^-c@@{script}");
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
    let with = s.get("/with").await?.text();
    let (status, body) = response(&with);
    ensure!(
        status == Some(200) && !body.trim().is_empty(),
        "with Metadata-Flavor: {with:?}"
    );
    let without = s.get("/without").await?.text();
    ensure!(
        response(&without).0 == Some(403),
        "without Metadata-Flavor: {without:?} (want 403)"
    );
    Ok(())
}

/// A raw HTTP response: its status and body (`None`: no status line, e.g. nc's error).
fn response(raw: &str) -> (Option<u16>, &str) {
    let status = raw
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok());
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body)
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
            // busybox httpd under gVisor (the gen1 column) now and then closes a connection
            // without answering (502 from runlet): the file is asked again.
            let mut raw = String::new();
            for _ in 0..3 {
                let r = s.get(p).await.with_context(|| p)?;
                raw = r.text();
                if r.status != 502 {
                    break;
                }
            }
            match response(&raw) {
                (Some(200), body) => Ok(body.trim().to_string()),
                _ => Err(anyhow::anyhow!("{p}: {raw:?}")),
            }
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

#[cfg(test)]
mod tests {
    use super::response;

    #[test]
    fn raw_responses() {
        let cases = [
            ("HTTP/1.0 200 OK\r\nA: b\r\n\r\nproj", (Some(200), "proj")),
            ("HTTP/1.1 403 Forbidden\r\n\r\nno\n", (Some(403), "no\n")),
            ("nc: can't connect", (None, "")),
            ("", (None, "")),
        ];
        for (raw, want) in cases {
            assert_eq!(response(raw), want, "{raw:?}");
        }
    }
}
