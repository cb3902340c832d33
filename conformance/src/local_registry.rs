//! A registry on loopback for the checks that pull (IMG-2's schema 1): Debian's
//! `docker-registry` (the CNCF distribution registry, 2.8) with its own config and storage
//! in a temporary directory, filled with `skopeo copy`. Traffic stays on 127.0.0.1. The
//! process and its storage go when the value is dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::harness::free_port;

pub struct LocalRegistry {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl LocalRegistry {
    /// Starts a plain-HTTP registry that accepts schema-1 manifests (distribution refuses
    /// them unless `compatibility: schema1: enabled`).
    pub async fn start() -> Result<LocalRegistry> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "runlet-conformance-registry-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\ncompatibility:\n  schema1:\n    enabled: true\n",
            dir.join("storage").display()
        );
        let path = dir.join("config.yml");
        std::fs::write(&path, config)?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting docker-registry (Debian's docker-registry package; deploy/install-deps.sh installs it)")?;
        let r = LocalRegistry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on 127.0.0.1:{port} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(r)
    }

    /// `HOST:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `skopeo copy [EXTRA] SRC docker://HOST/DEST` (plain HTTP).
    pub async fn copy(&self, src: &str, dest: &str, extra: &[&str]) -> Result<()> {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(src)
            .arg(format!("docker://{}/{dest}", self.host()))
            .stdin(Stdio::null())
            .output()
            .await
            .context("running skopeo (deploy/install-deps.sh installs it)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy {src} {dest}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The manifest `repo:tag` as the registry serves it.
    pub async fn raw_manifest(&self, repo_tag: &str) -> Result<String> {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .stdin(Stdio::null())
            .output()
            .await
            .context("running skopeo")?;
        if !out.status.success() {
            bail!(
                "skopeo inspect {repo_tag}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
