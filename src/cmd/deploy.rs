//! `runlet deploy`: the flags become a `Service` (bad input exits 64 before the daemon is
//! called), sent with `UpdateService` and `allow_missing` (create or replace), then the
//! operation is waited on with gcloud's progress tracker; a failed rollout prints why and
//! exits 1 (the previous revision, if any, still serves).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;

use runlet::api::client::{operation_result, Client};
use runlet::cli::deploy::DeployArgs;
use runlet::cli::GlobalArgs;
use runlet::daemon::listener;
use runlet::pb::longrunning::Operation;
use runlet::pb::run_v2 as v2;
use runlet::spec::flags::ServiceFlags;
use runlet::spec::{to_run_v2, SpecError};

use super::print::progress::{self, deploy_steps, render, rewind};
use super::print::short;
use super::{api, print};

pub async fn run(global: &GlobalArgs, a: &DeployArgs) -> Result<i32> {
    let name = api::service_name(&a.api, &a.service)?;
    let mut flags = super::service_flags(
        a.image.as_deref().unwrap_or_default(),
        &a.revision,
        &a.containers,
    )?;
    if let Some(listen) = &a.listen {
        check_listen(listen)?;
    }
    let service = |flags: &ServiceFlags| -> Result<v2::Service, SpecError> {
        let mut svc = to_run_v2::service(flags)?;
        svc.name = name.to_string();
        if let Some(listen) = &a.listen {
            svc.annotations
                .insert(listener::ANNOTATION.to_string(), listen.clone());
        }
        Ok(svc)
    };
    // Checked before the daemon is called (exit 64).
    let mut svc = service(&flags)?;
    let client = api::connect(global, &a.api).await?;
    let new_service = match client.get_service(&svc.name).await {
        Ok(current) => {
            // --update-env-vars and --remove-env-vars change the current revision's.
            to_run_v2::with_current_env(&mut flags, &current);
            svc = service(&flags)?;
            false
        }
        Err(e) if e.is_not_found() => true,
        Err(e) => return Err(e.into()),
    };
    print(&progress::deploy_header(
        &a.service,
        &name.parent.project,
        &name.parent.location,
    ));
    let op = client.deploy(svc).await?;
    if a.no_wait {
        print(&format!(
            "Service [{}] is deploying asynchronously (operation {}).\n",
            a.service, op.name
        ));
        return Ok(0);
    }
    let op = wait(&client, op, new_service).await?;
    match operation_result::<v2::Service>(&op) {
        Ok(svc) => {
            print(&render(&deploy_steps(new_service, Some(Ok(()))), 0));
            print(&progress::deployed(
                &a.service,
                short(&svc.latest_ready_revision),
                &svc.uri,
            ));
            Ok(0)
        }
        Err(e) => {
            let why = e.to_string();
            print(&render(&deploy_steps(new_service, Some(Err(&why))), 0));
            print("Deployment failed\n");
            Err(e.into())
        }
    }
}

/// `--listen` is HOST:PORT (refused before the daemon is called, exit 64).
fn check_listen(text: &str) -> Result<(), SpecError> {
    match text.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(()),
        _ => Err(SpecError {
            field: "--listen",
            detail: format!("{text:?} is not HOST:PORT with a port (e.g. 127.0.0.1:9001)"),
        }),
    }
}

/// Waits for the operation; on a terminal, with the tracker spinning meanwhile (erased
/// before the caller prints the final one).
async fn wait(client: &Client, op: Operation, new_service: bool) -> Result<Operation> {
    if !std::io::stdout().is_terminal() {
        return Ok(client.wait(op).await?);
    }
    let waiting = client.wait(op);
    tokio::pin!(waiting);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut frame = 0;
    let mut drawn = 0;
    let result = loop {
        tokio::select! {
            r = &mut waiting => break r,
            _ = tick.tick() => {
                let block = render(&deploy_steps(new_service, None), frame);
                print(&format!("{}{block}", rewind(drawn)));
                drawn = block.lines().count();
                frame += 1;
            }
        }
    };
    print(&rewind(drawn));
    Ok(result?)
}
