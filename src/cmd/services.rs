//! `runlet services list|describe|replace|delete`: the daemon's services, printed like
//! gcloud's; `describe --format export` and `replace` speak service.yaml
//! (`spec::service_yaml*`), sent to the daemon as the Admin API's `Service`.

use anyhow::{Context, Result};

use runlet::api::client::operation_result;
use runlet::cli::services::{ServiceFormat as Format, ServicesCommand};
use runlet::cli::GlobalArgs;
use runlet::pb::run_v2 as v2;

use runlet::cli::client::ApiArgs;
use runlet::spec::{service_yaml, service_yaml_export, service_yaml_to_v2};

use super::print::{describe, tables};
use super::{api, print};

pub async fn run(global: &GlobalArgs, c: &ServicesCommand) -> Result<i32> {
    match c {
        ServicesCommand::List { api: a } => {
            let parent = api::parent(a)?;
            let client = api::connect(global, a).await?;
            let list = client.list_services(&parent.to_string()).await?;
            if list.is_empty() {
                eprintln!("Listed 0 items.");
            } else {
                print(&tables::services(&list));
            }
        }
        ServicesCommand::Describe {
            service,
            format,
            api: a,
        } => {
            let name = api::service_name(a, service)?;
            let client = api::connect(global, a).await?;
            let svc = client.get_service(&name.to_string()).await?;
            print(&match format {
                None => describe::service(&svc),
                Some(Format::Json) => {
                    serde_json::to_string_pretty(&svc).context("writing the service as JSON")?
                        + "\n"
                }
                Some(Format::Yaml) => {
                    serde_yaml_ng::to_string(&svc).context("writing the service as YAML")?
                }
                Some(Format::Export) => service_yaml::to_text(&service_yaml_export::export(&svc)),
            });
        }
        ServicesCommand::Replace {
            file,
            no_wait,
            api: a,
        } => return replace(global, file, *no_wait, a).await,
        ServicesCommand::Delete {
            service,
            no_wait,
            api: a,
        } => {
            let name = api::service_name(a, service)?;
            let client = api::connect(global, a).await?;
            let op = client.delete_service(&name.to_string()).await?;
            if *no_wait {
                print(&format!("Service [{service}] is being deleted.\n"));
                return Ok(0);
            }
            let op = client.wait(op).await?;
            operation_result::<v2::Service>(&op)?;
            print(&format!("Deleted service [{service}].\n"));
        }
    }
    Ok(0)
}

/// `runlet services replace FILE`: the file mapped and checked here (bad input exits 64
/// before the daemon is called), then sent as `UpdateService` with `allow_missing`.
async fn replace(
    global: &GlobalArgs,
    file: &std::path::Path,
    no_wait: bool,
    a: &ApiArgs,
) -> Result<i32> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the service.yaml from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let m = service_yaml_to_v2::service(&service_yaml::parse(&text)?)?;
    super::serve::warn_no_local_effect(&m.no_local_effect);
    let name = api::service_name(a, &m.name)?;
    let mut svc = m.service;
    svc.name = name.to_string();
    // The daemon checks the same; here its refusals read as YAML paths.
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
    runlet::spec::run_v2::service_spec(&m.name, &format!("{}-check", m.name), &svc, any)
        .map_err(service_yaml_to_v2::from_v2_error)?;
    let client = api::connect(global, a).await?;
    print(&format!(
        "Applying new configuration to service [{}] in project [{}] region [{}]\n",
        m.name, name.parent.project, name.parent.location
    ));
    let op = client.deploy(svc).await?;
    if no_wait {
        print(&format!(
            "Service [{}] is being deployed asynchronously (operation {}).\n",
            m.name, op.name
        ));
        return Ok(0);
    }
    let op = client.wait(op).await?;
    let svc = operation_result::<v2::Service>(&op)?;
    print(&format!(
        "New configuration has been applied to service [{}].\nURL: {}\n",
        m.name, svc.uri
    ));
    Ok(0)
}
