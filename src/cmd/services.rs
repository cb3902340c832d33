//! `runlet services list|describe|delete`: the daemon's services, printed like gcloud's.

use anyhow::{Context, Result};

use runlet::api::client::operation_result;
use runlet::cli::services::{Format, ServicesCommand};
use runlet::cli::GlobalArgs;
use runlet::pb::run_v2 as v2;

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
            });
        }
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
