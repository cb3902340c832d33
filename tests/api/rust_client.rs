//! runlet's Cloud Run Admin API driven by Google's unmodified Rust client,
//! `google-cloud-run-v2` (HTTP/JSON only: the crate has no gRPC transport).
//!
//! [`services_flow`] creates a service from a loaded image and waits for its operation, GETs
//! the returned `uri` with reqwest (the system resolver: `NAME.localhost` resolves through the
//! lines the daemon writes into /etc/hosts) and sees the probe report `K_SERVICE` and
//! `K_REVISION`, updates an env var and sees the new revision answer, lists the revisions,
//! deletes the service and finds it gone; then checks the errors: a duplicate create is
//! ALREADY_EXISTS, bad service ids are INVALID_ARGUMENT, and an image that is not loaded
//! fails the create's operation with a message naming the image.
//!
//! It returns the revision ids it saw, for the caller's containerd check
//! (`Env::assert_nothing_left`). Wiring, in `tests/api_rust.rs`:
//!
//! ```ignore
//! mod common;
//! #[path = "api/rust_client.rs"]
//! mod rust_client;
//!
//! #[test]
//! fn official_rust_client_creates_updates_lists_and_deletes_a_service() {
//!     let Some(env) = common::probe_env() else { return };
//!     let daemon = /* start `runlet daemon`, its API on 127.0.0.1:PORT */;
//!     let cfg = rust_client::Flow {
//!         endpoint: format!("http://{}", daemon.api_addr),
//!         parent: "projects/runlet/locations/local".into(),
//!         service_id: "rs-rest".into(),
//!         image: "docker.io/library/probe:latest".into(),
//!     };
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     let revisions = rt.block_on(rust_client::services_flow(&cfg)).unwrap_or_else(|e| panic!("{e:#}"));
//!     for r in &revisions {
//!         env.assert_nothing_left(r);
//!     }
//! }
//! ```
//!
//! Dev-dependencies it needs (measured: ~86 more crate builds, ~4.5 min of one core in
//! release, plus ~1.5 min for the test binary; no existing Cargo.lock version moves):
//!
//! ```toml
//! google-cloud-run-v2 = { version = "1.15", default-features = false }
//! google-cloud-auth = { version = "1.19", default-features = false }
//! google-cloud-gax = "1.15"
//! google-cloud-lro = "1.11"
//! rustls = { version = "0.23", default-features = false, features = ["ring"] }
//! reqwest = { version = "0.13", default-features = false, features = ["json"] }
//! ```
//!
//! With the Google crates' default features instead, drop the `rustls` line and the
//! `install_default` call below: that builds aws-lc-sys (about 5 more minutes of C).

use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::paginator::ItemPaginator as _;
use google_cloud_lro::Poller as _;
use google_cloud_run_v2::client::{Revisions, Services};
use google_cloud_run_v2::model::{condition, Container, EnvVar, RevisionTemplate, Service};

/// An image that is not loaded; fully qualified so that the error names it the same way
/// whether or not runlet normalizes references, and `.invalid` never resolves.
pub const MISSING_IMAGE: &str = "runlet.invalid/no-such-image:latest";

/// Where and what [`services_flow`] deploys.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Base URL of the API, e.g. `http://127.0.0.1:8090`.
    pub endpoint: String,
    /// `projects/P/locations/L`.
    pub parent: String,
    /// The service id to create (and, with `-noimg`, the failing one).
    pub service_id: String,
    /// A loaded probe image.
    pub image: String,
}

fn template(image: &str, api_test: &str) -> RevisionTemplate {
    RevisionTemplate::new().set_containers([Container::new()
        .set_image(image)
        .set_env([EnvVar::new().set_name("API_TEST").set_value(api_test)])])
}

fn short(resource_name: &str) -> &str {
    resource_name.rsplit('/').next().unwrap_or(resource_name)
}

fn api_test_env(c: Option<&Container>) -> Option<&str> {
    c?.env
        .iter()
        .find(|e| e.name == "API_TEST")
        .and_then(|e| e.value().map(String::as_str))
}

/// The google.rpc code of a failed call, checking the REST error shape on the way: the
/// client reads the code from the JSON `error.status` name only (a missing or unknown name
/// reads as UNKNOWN), so the HTTP status must agree with it.
fn code_of(what: &str, e: &google_cloud_run_v2::Error) -> Result<Code> {
    let status = e
        .status()
        .ok_or_else(|| anyhow!("{what}: not an API error status: {e:?}"))?;
    let http = e.http_status_code();
    let want_http = match status.code {
        Code::InvalidArgument | Code::FailedPrecondition => Some(400),
        Code::NotFound => Some(404),
        Code::AlreadyExists => Some(409),
        _ => None,
    };
    if let (Some(want), Some(got)) = (want_http, http) {
        ensure!(
            want == got,
            "{what}: {:?} goes with HTTP {want}, got HTTP {got}: {e}",
            status.code
        );
    }
    ensure!(!status.message.is_empty(), "{what}: empty error message");
    Ok(status.code)
}

/// GET `uri` (reqwest, system resolver, no proxy) and return the env the probe reports.
async fn probe_env(http: &reqwest::Client, uri: &str) -> Result<serde_json::Value> {
    let resp = http
        .get(uri)
        .send()
        .await
        .with_context(|| format!("GET {uri}"))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .with_context(|| format!("GET {uri}: body"))?;
    ensure!(status.as_u16() == 200, "GET {uri}: {status}: {body}");
    let report: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("GET {uri}: not JSON: {body}"))?;
    Ok(report["env"].clone())
}

/// Runs the whole flow against `cfg.endpoint`; returns the revision ids it saw.
pub async fn services_flow(cfg: &Flow) -> Result<Vec<String>> {
    // google-cloud-run-v2 and google-cloud-auth are built without default features, which
    // keeps aws-lc-sys (minutes of C) out of the build but leaves their reqwest without a
    // rustls crypto provider: install ring's (it errs only if one is already installed).
    // Plain http:// to runlet never uses it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let anonymous = google_cloud_auth::credentials::anonymous::Builder::new().build();
    // Poll operations every 100 ms to 1 s instead of the default 1 s to 60 s.
    let polling = ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(100))
        .with_maximum_delay(Duration::from_secs(1))
        .build()?;
    let services = Services::builder()
        .with_endpoint(&cfg.endpoint)
        .with_credentials(anonymous.clone())
        .with_polling_backoff_policy(polling)
        .build()
        .await?;
    let revisions = Revisions::builder()
        .with_endpoint(&cfg.endpoint)
        .with_credentials(anonymous)
        .build()
        .await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let parent = cfg.parent.as_str();
    let sid = cfg.service_id.as_str();
    let name = format!("{parent}/services/{sid}");

    // Create, and wait for the operation.
    let created = services
        .create_service()
        .set_parent(parent)
        .set_service_id(sid)
        .set_service(Service::new().set_template(template(&cfg.image, "one")))
        .poller()
        .until_done()
        .await
        .context("create_service")?;
    ensure!(
        created.name == name,
        "created {:?}, want {name:?}",
        created.name
    );
    ensure!(created.generation == 1, "generation {}", created.generation);
    let ready = created.terminal_condition.as_ref().map(|c| &c.state);
    ensure!(
        ready == Some(&condition::State::ConditionSucceeded),
        "terminal_condition of a done create: {:?}",
        created.terminal_condition
    );
    let rev1 = created.latest_ready_revision.clone();
    ensure!(
        rev1.starts_with(&format!("{name}/revisions/{sid}-00001-")),
        "latest_ready_revision {rev1:?}"
    );
    ensure!(created.uri.starts_with("http://"), "uri {:?}", created.uri);

    let got = services.get_service().set_name(&name).send().await?;
    ensure!(
        got.uri == created.uri && got.latest_ready_revision == rev1,
        "get_service disagrees with the operation's result: {got:?}"
    );
    let mut listed = Vec::new();
    let mut items = services.list_services().set_parent(parent).by_item();
    while let Some(s) = items.next().await {
        listed.push(s?.name);
    }
    ensure!(
        listed.contains(&name),
        "list_services lacks {name}: {listed:?}"
    );

    let env = probe_env(&http, &created.uri).await?;
    ensure!(env["K_SERVICE"] == sid, "K_SERVICE {}", env["K_SERVICE"]);
    ensure!(
        env["K_REVISION"] == short(&rev1),
        "K_REVISION {}, want {}",
        env["K_REVISION"],
        short(&rev1)
    );
    ensure!(env["API_TEST"] == "one", "API_TEST {}", env["API_TEST"]);

    // A second create of the same name, and bad names, fail at once.
    let dup = services
        .create_service()
        .set_parent(parent)
        .set_service_id(sid)
        .set_service(Service::new().set_template(template(&cfg.image, "one")))
        .send()
        .await;
    match dup {
        Ok(op) => bail!("create of an existing service returned an operation: {op:?}"),
        Err(e) => {
            let code = code_of("duplicate create", &e)?;
            ensure!(
                code == Code::AlreadyExists,
                "duplicate create: {code:?}: {e}"
            );
        }
    }
    for bad in [
        "Bad_Name",
        "1digit-first",
        "ends-with-dash-",
        &"x".repeat(50),
    ] {
        let r = services
            .create_service()
            .set_parent(parent)
            .set_service_id(bad)
            .set_service(Service::new().set_template(template(&cfg.image, "one")))
            .send()
            .await;
        match r {
            Ok(op) => bail!("create with service_id {bad:?} returned an operation: {op:?}"),
            Err(e) => {
                let code = code_of(&format!("service_id {bad:?}"), &e)?;
                ensure!(
                    code == Code::InvalidArgument,
                    "service_id {bad:?}: {code:?}: {e}"
                );
            }
        }
    }

    // Update (read, modify, write back the whole resource): a new revision answers.
    let mut current = services.get_service().set_name(&name).send().await?;
    let Some(container) = current
        .template
        .as_mut()
        .and_then(|t| t.containers.first_mut())
    else {
        bail!("get_service: no template container: {current:?}");
    };
    container.env = vec![EnvVar::new().set_name("API_TEST").set_value("two")];
    let updated = services
        .update_service()
        .set_service(current)
        .poller()
        .until_done()
        .await
        .context("update_service")?;
    let rev2 = updated.latest_ready_revision.clone();
    ensure!(
        updated.generation == 2,
        "generation after update {}",
        updated.generation
    );
    ensure!(
        rev2.starts_with(&format!("{name}/revisions/{sid}-00002-")),
        "latest_ready_revision after update {rev2:?}"
    );
    ensure!(
        updated.uri == created.uri,
        "uri changed on update: {:?}",
        updated.uri
    );
    let env = probe_env(&http, &updated.uri).await?;
    ensure!(
        env["K_REVISION"] == short(&rev2),
        "after update K_REVISION {}, want {}",
        env["K_REVISION"],
        short(&rev2)
    );
    ensure!(
        env["API_TEST"] == "two",
        "after update API_TEST {}",
        env["API_TEST"]
    );

    let mut revs = Vec::new();
    let mut items = revisions.list_revisions().set_parent(&name).by_item();
    while let Some(r) = items.next().await {
        revs.push(r?);
    }
    let names: Vec<&str> = revs.iter().map(|r| r.name.as_str()).collect();
    ensure!(
        names.first() == Some(&rev2.as_str()) && names.contains(&rev1.as_str()),
        "list_revisions: want {rev2} first (newest first) and {rev1} listed, got {names:?}"
    );
    for (rev, want) in [(&rev1, "one"), (&rev2, "two")] {
        let r = revs
            .iter()
            .find(|r| &r.name == rev)
            .map(|r| r.containers.first());
        ensure!(
            api_test_env(r.flatten()) == Some(want),
            "{rev}: API_TEST is not {want}: {r:?}"
        );
    }
    let got = revisions.get_revision().set_name(&rev2).send().await?;
    ensure!(
        got.name == rev2,
        "get_revision({rev2}) returned {}",
        got.name
    );

    // Delete: gone from the API and from its uri.
    let deleted = services
        .delete_service()
        .set_name(&name)
        .poller()
        .until_done()
        .await
        .context("delete_service")?;
    ensure!(
        deleted.name == name,
        "delete's operation returned {:?}",
        deleted.name
    );
    match services.get_service().set_name(&name).send().await {
        Ok(s) => bail!("get_service after delete succeeded: {s:?}"),
        Err(e) => {
            let code = code_of("get after delete", &e)?;
            ensure!(code == Code::NotFound, "get after delete: {code:?}: {e}");
        }
    }
    if let Ok(resp) = http.get(&created.uri).send().await {
        ensure!(
            resp.status().as_u16() != 200,
            "GET {} after delete: 200",
            created.uri
        );
    }

    // An image that is not loaded: the create is accepted, its operation fails naming it.
    let bad_name = format!("{name}-noimg");
    let failed = services
        .create_service()
        .set_parent(parent)
        .set_service_id(format!("{sid}-noimg"))
        .set_service(Service::new().set_template(
            RevisionTemplate::new().set_containers([Container::new().set_image(MISSING_IMAGE)]),
        ))
        .poller()
        .until_done()
        .await;
    match failed {
        Ok(s) => bail!("create with image {MISSING_IMAGE}: the operation succeeded: {s:?}"),
        Err(e) => {
            let status = e
                .status()
                .ok_or_else(|| anyhow!("create with image {MISSING_IMAGE}: {e:?}"))?;
            ensure!(
                status.message.contains(MISSING_IMAGE),
                "the operation's error does not name {MISSING_IMAGE}: {status:?}"
            );
        }
    }
    // Whether the failed service remains (Cloud Run keeps it, not Ready) is the server's
    // choice; either way it must be deletable or absent.
    if let Err(e) = services
        .delete_service()
        .set_name(&bad_name)
        .poller()
        .until_done()
        .await
    {
        let code = code_of("delete of the failed service", &e)?;
        ensure!(code == Code::NotFound, "delete {bad_name}: {code:?}: {e}");
    }
    Ok(vec![short(&rev1).to_string(), short(&rev2).to_string()])
}
