//! `runlet status`: whether the daemon answers (and its pid, from the state dir's lock
//! file), whether containerd answers, and the daemon's services at a glance. Exits 1 when
//! the daemon does not answer.

use std::path::Path;

use anyhow::Result;

use runlet::cli::status::StatusArgs;
use runlet::cli::GlobalArgs;
use runlet::daemon::lock::LOCK_FILE;
use runlet::runtime::containerd::Containerd;
use runlet::runtime::embedded;

use super::print::tables;
use super::{api, print};

pub async fn run(global: &GlobalArgs, a: &StatusArgs) -> Result<i32> {
    let parent = api::parent(&a.api)?;
    let target = api::target(global, &a.api)?;
    let pid = daemon_pid(&global.state_dir);
    let connected = match api::connect(global, &a.api).await {
        Ok(c) => Ok(c),
        Err(e) => Err(format!("{e:#}")),
    };
    let pid_text = pid.map_or(String::new(), |p| format!(" (pid {p})"));
    let mut out = String::new();
    match &connected {
        Ok(_) => out.push_str(&format!(
            "Daemon:      running{pid_text}, API at {target}\n"
        )),
        Err(e) => out.push_str(&format!("Daemon:      not running: {e}\n")),
    }
    out.push_str(&format!("containerd:  {}\n", containerd(global).await));
    let client = match connected {
        Ok(c) => c,
        Err(_) => {
            print(&out);
            return Ok(1);
        }
    };
    match client.list_services(&parent.to_string()).await {
        Ok(list) if list.is_empty() => out.push_str(&format!(
            "Services:    none in project [{}] region [{}]\n",
            parent.project, parent.location
        )),
        Ok(list) => {
            out.push_str(&format!(
                "Services in project [{}] region [{}]:\n",
                parent.project, parent.location
            ));
            out.push_str(&tables::status_services(&list));
        }
        Err(e) => {
            print(&out);
            return Err(e.into());
        }
    }
    print(&out);
    Ok(0)
}

/// The pid the daemon wrote into its lock file, if that process is alive (the file stays
/// after the daemon ends; the pid in it may be stale).
fn daemon_pid(state_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state_dir.join(LOCK_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Which containerd answers: the configured one, or the private one under the state dir.
async fn containerd(global: &GlobalArgs) -> String {
    let address = &global.containerd_address;
    if Containerd::connect(address).await.is_ok() {
        return format!("reachable at {address}");
    }
    let private = embedded::private_address(&global.state_dir);
    if private.exists() {
        let p = private.display().to_string();
        if Containerd::connect(&p).await.is_ok() {
            return format!("reachable at {p} (runlet's private containerd)");
        }
    }
    format!("not reachable at {address}")
}
