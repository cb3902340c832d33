//! The `runlet daemon` the API driver starts when it is given no `--endpoint`: on free
//! loopback ports (ingress, Admin API, metrics), against the suite's containerd, with a state
//! dir of its own emptied first, its output kept (the container logs the checks read), and
//! stopped with SIGTERM (SIGKILL after 60 s) when the suite ends, or by the kernel when the
//! suite dies (parent-death signal).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use runlet_test_support::{free_port, tail, Lines};

/// How long the daemon may take to say it serves.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop (it drains and stops every instance).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// The Admin API.
    pub api: SocketAddr,
    /// Its metrics listener.
    pub metrics: SocketAddr,
    /// Its output (stdout and stderr).
    pub output: Lines,
    pub state_dir: PathBuf,
}

fn loopback() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// The access token the daemon the suite starts serves to instances (`--token-command`).
pub const TOKEN: &str = "conf-token";

impl Daemon {
    /// Starts `runlet daemon` and waits until it prints `runlet daemon:`.
    pub async fn start(runlet: &Path, containerd: &str, state_dir: &Path) -> Result<Daemon> {
        // A daemon resumes what its state dir holds: the suite starts from nothing.
        match std::fs::remove_dir_all(state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("emptying {}", state_dir.display())),
        }
        let (listen, api, metrics) = (loopback()?, loopback()?, loopback()?);
        let mut c = Command::new(runlet);
        c.arg("--containerd-address")
            .arg(containerd)
            .arg("--no-embedded-containerd")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("daemon")
            .args(["--listen", &listen.to_string()])
            .args(["--api-listen", &api.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .arg("--no-manage-hosts")
            // What instances get as the service account's token (META-2).
            .args(["--token-command", &format!("echo {TOKEN}")])
            .env("RUNLET_LOG", "info")
            // The suite's images are loaded from archives; an image not in the store is
            // pulled, as Cloud Run pulls (IMG-2's schema 1, from a registry on loopback).
            .args(["--pull", "missing"])
            .env("NO_COLOR", "1")
            .env_remove(crate::selftest::BREAK_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
        // parent; it makes the kernel stop the daemon if the suite dies first.
        unsafe {
            c.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let mut child = c
            .spawn()
            .with_context(|| format!("starting {} daemon", runlet.display()))?;
        let output = Lines::new();
        if let Some(s) = child.stdout.take() {
            output.read_in_task(s, None);
        }
        if let Some(s) = child.stderr.take() {
            output.read_in_task(s, None);
        }
        let mut d = Daemon {
            child,
            api,
            metrics,
            output,
            state_dir: state_dir.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if d.output.text().contains("runlet daemon:") {
                return Ok(d);
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bail!(
                    "runlet daemon ended at start ({st}): {}",
                    tail(&d.output.text(), 8)
                );
            }
            if Instant::now() > deadline {
                d.stop().await;
                bail!(
                    "runlet daemon did not say it was serving within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    tail(&d.output.text(), 8)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits (SIGKILL after [`STOP_TIMEOUT`]); returns how it ended.
    pub async fn stop(&mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(st)) => st.to_string(),
            Ok(Err(e)) => format!("cannot wait: {e}"),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                format!(
                    "killed: still running {} s after SIGTERM",
                    STOP_TIMEOUT.as_secs()
                )
            }
        }
    }
}

/// `HOST:PORT` as an address (the name resolved).
pub async fn resolve(endpoint: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(endpoint)
        .await
        .with_context(|| format!("resolving {endpoint}"))?
        .next()
        .ok_or_else(|| anyhow!("{endpoint}: no address"))
}
