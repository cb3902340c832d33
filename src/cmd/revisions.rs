//! `runlet revisions list`: the daemon's revisions, printed like gcloud's.

use anyhow::Result;

use runlet::cli::revisions::RevisionsCommand;
use runlet::cli::GlobalArgs;

use super::print::tables;
use super::{api, print};

pub async fn run(global: &GlobalArgs, c: &RevisionsCommand) -> Result<i32> {
    let RevisionsCommand::List { service, api: a } = c;
    let parent = api::parent(a)?;
    let of = match service {
        Some(s) => api::service_name(a, s)?.to_string(),
        None => format!("{parent}/services/-"),
    };
    let client = api::connect(global, a).await?;
    let revisions = client.list_revisions(&of).await?;
    if revisions.is_empty() {
        eprintln!("Listed 0 items.");
        return Ok(0);
    }
    let services = client.list_services(&parent.to_string()).await?;
    print(&tables::revisions(&revisions, &services));
    Ok(0)
}
