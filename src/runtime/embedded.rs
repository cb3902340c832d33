//! The private containerd: when nothing answers at the configured address, runlet starts its
//! own containerd (root, state and socket under `--state-dir`), and stops it on exit.
//!
//! A second runlet started while the first runs finds the private socket answering and
//! shares that containerd without owning it. The owner stops it at exit only when no
//! runlet container is left in it (another runlet's instances would lose their daemon).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::containerd::Containerd;
use super::{Runtime, RuntimeError};

/// A containerd runlet started itself.
pub struct Embedded {
    child: std::process::Child,
    pub address: String,
    pub log: PathBuf,
}

/// How runlet reached containerd.
pub struct Connection {
    pub client: Containerd,
    pub embedded: Option<Embedded>,
}

pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The socket of the private containerd under `state_dir`.
pub fn private_address(state_dir: &Path) -> PathBuf {
    state_dir.join("containerd/containerd.sock")
}

/// Connects to `address`; if nothing answers there, uses (or starts) the private containerd.
pub async fn connect_or_start(
    address: &str,
    state_dir: &Path,
    allow_embedded: bool,
) -> Result<Connection, RuntimeError> {
    let first = match Containerd::connect(address).await {
        Ok(client) => {
            return Ok(Connection {
                client,
                embedded: None,
            })
        }
        Err(e) => e,
    };
    if !allow_embedded {
        return Err(first);
    }
    let private = private_address(state_dir);
    let private_s = private.display().to_string();
    if private.exists() {
        if let Ok(client) = Containerd::connect(&private_s).await {
            info!(address = %private_s, "using the private containerd another runlet started");
            return Ok(Connection {
                client,
                embedded: None,
            });
        }
    }
    let missing = |what: &str| {
        RuntimeError::Connect {
        address: address.to_string(),
        detail: format!(
            "{first}; and runlet cannot start a private containerd because {what} is not installed (on Debian: apt-get install containerd runc)"
        ),
    }
    };
    let bin = find_binary("containerd").ok_or_else(|| missing("containerd"))?;
    find_binary("runc").ok_or_else(|| missing("runc"))?;
    let embedded = start(&bin, state_dir).await?;
    let client = Containerd::connect(&embedded.address).await?;
    Ok(Connection {
        client,
        embedded: Some(embedded),
    })
}

async fn start(bin: &Path, state_dir: &Path) -> Result<Embedded, RuntimeError> {
    let dir = state_dir.join("containerd");
    let fail = |detail: String| RuntimeError::Other {
        op: "start private containerd",
        id: dir.display().to_string(),
        detail,
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let address = private_address(state_dir);
    let _ = std::fs::remove_file(&address);
    let config = format!(
        "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = {addr:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n",
        root = dir.join("root").display().to_string(),
        state = dir.join("state").display().to_string(),
        addr = address.display().to_string(),
        ttrpc = format!("{}.ttrpc", address.display()),
    );
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).map_err(|e| fail(e.to_string()))?;
    let log = dir.join("containerd.log");
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| fail(e.to_string()))?;
    let logf2 = logf.try_clone().map_err(|e| fail(e.to_string()))?;
    // Its own process group: a Ctrl-C in runlet's terminal must not stop containerd before
    // runlet has removed its containers.
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--config")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .process_group(0);
    // The containers get the open-file limit they would without runlet's raise.
    crate::fdlimit::restore_in_child(&mut cmd);
    let child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    let mut emb = Embedded {
        child,
        address: address.display().to_string(),
        log: log.clone(),
    };
    info!(address = %emb.address, log = %log.display(), "started a private containerd");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = emb.child.try_wait() {
            return Err(fail(format!(
                "containerd exited ({status}); see {}",
                log.display()
            )));
        }
        if address.exists() && Containerd::connect(&emb.address).await.is_ok() {
            return Ok(emb);
        }
        if tokio::time::Instant::now() > deadline {
            emb.kill();
            return Err(fail(format!(
                "containerd did not answer within 30 s; see {}",
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Embedded {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the private containerd (SIGTERM, then SIGKILL after 10 s), unless runlet
    /// containers of another runlet process still live in it.
    pub async fn stop(mut self, client: &Containerd) {
        if let Ok(left) = client.list().await {
            if !left.is_empty() {
                warn!(containers = left.len(), address = %self.address, "leaving the private containerd running: it still holds runlet containers of another runlet");
                return;
            }
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                info!("private containerd stopped");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }
}
