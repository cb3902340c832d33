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
use runlet::pb::longrunning::Operation;
use runlet::pb::run_v2 as v2;
use runlet::spec::flags::ServiceFlags;
use runlet::spec::to_run_v2;

use super::print::progress::{self, deploy_steps, render, rewind};
use super::print::short;
use super::{api, print};

pub async fn run(global: &GlobalArgs, a: &DeployArgs) -> Result<i32> {
    let name = api::service_name(&a.api, &a.service)?;
    let mut svc = to_run_v2::service(&flags(a))?;
    svc.name = name.to_string();
    let client = api::connect(global, &a.api).await?;
    let new_service = match client.get_service(&svc.name).await {
        Ok(_) => false,
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

fn flags(a: &DeployArgs) -> ServiceFlags {
    ServiceFlags {
        image: a.image.clone(),
        port: a.port,
        set_env_vars: a.container.set_env_vars.clone(),
        command: a.container.command.clone(),
        args: a.container.args.clone(),
        memory: a.memory.clone(),
        cpu: a.cpu.clone(),
        concurrency: a.concurrency,
        timeout: a.timeout.clone(),
        min_instances: a.min_instances,
        max_instances: a.max_instances,
        startup_probe: a.startup_probe.clone(),
        liveness_probe: a.liveness_probe.clone(),
        add_volume: a.add_volume.clone(),
        add_volume_mount: a.add_volume_mount.clone(),
        use_http2: a.use_http2,
        cpu_throttling: if a.cpu_throttling {
            Some(true)
        } else if a.no_cpu_throttling {
            Some(false)
        } else {
            None
        },
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
