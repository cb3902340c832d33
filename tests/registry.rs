//! `runlet image pull` (and `--pull` on `serve` / `job execute`) against real registries:
//! Debian's `docker-registry` (the CNCF distribution registry), started per test on a free
//! loopback port with its own config and storage, and filled with `skopeo`.
//! Needs `docker-registry` and `skopeo` (deploy/install-deps.sh); under CI their absence is
//! a failure, elsewhere the tests skip.
// These tests wait on separate processes by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{env, free_port, Env};

/// A `docker-registry` on 127.0.0.1, removed (process and storage) when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Whether a program is on PATH.
fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The test environment with the registry tools, or `None` (skip) outside CI.
fn registry_env() -> Option<Env> {
    let env = env()?;
    for tool in ["docker-registry", "skopeo"] {
        if !have(tool) {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set but {tool} is not installed (deploy/install-deps.sh installs it)"
                );
            }
            eprintln!("SKIPPED: {tool} is not installed (deploy/install-deps.sh installs it)");
            return None;
        }
    }
    Some(env)
}

impl Registry {
    /// Starts a plain-HTTP registry; `extra` is appended to its YAML config.
    fn start(extra: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            dir.path().join("storage").display()
        );
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let r = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `skopeo copy SRC docker://HOST/DEST` (plain HTTP).
    fn push(&self, src: &str, dest: &str, extra: &[&str]) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(src)
            .arg(format!("docker://{}/{dest}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {src} {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The digest a tag resolves to, as skopeo reads it.
    fn digest(&self, repo_tag: &str) -> String {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.stdout)))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn archive(env: &Env, name: &str) -> PathBuf {
    env.archive(name)
}

fn docker_archive(p: &Path) -> String {
    format!("docker-archive:{}", p.display())
}

/// Runs `runlet ARGS`; returns (exit code, stdout, stderr).
fn runlet(env: &Env, args: &[&str]) -> (Option<i32>, String, String) {
    let out = env.runlet().args(args).output().expect("run runlet");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn images(env: &Env) -> String {
    runlet(env, &["image", "ls"]).1
}

#[test]
fn a_pushed_image_pulls_back_serves_and_pulls_by_digest() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    reg.push(
        &docker_archive(&archive(&env, "probe.docker.tar")),
        "walk-pull/probe:v1",
        &[],
    );
    let name = format!("{}/walk-pull/probe:v1", reg.host());
    let (code, out, err) = runlet(&env, &["image", "pull", &name]);
    assert_eq!(code, Some(0), "{out}{err}");
    let digest = reg.digest("walk-pull/probe:v1");
    assert!(
        out.contains(&format!("Pulled {name}")) && out.contains(&digest),
        "{out}"
    );
    assert!(err.contains("fetching"), "one line per layer: {err}");
    assert!(images(&env).contains(&name));
    // Everything is there now: a second pull fetches no layer.
    let (code, out, err) = runlet(&env, &["image", "pull", &name]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("already present") && !err.contains("fetching"),
        "{err}"
    );
    // Served from the store, without pulling again.
    let served = env.serve(&[
        "--image",
        &name,
        "--service",
        "walk-pull",
        "--pull",
        "never",
    ]);
    assert_eq!(served.get("/").status, 200);
    drop(served);
    // By digest.
    let by_digest = format!("{}/walk-pull/probe@{digest}", reg.host());
    let (code, out, err) = runlet(&env, &["image", "pull", &by_digest]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(images(&env).contains(&by_digest));
    for n in [&name, &by_digest] {
        let (code, _, err) = runlet(&env, &["image", "rm", n]);
        assert_eq!(code, Some(0), "{err}");
    }
    env.assert_nothing_left("walk-pull");
}

#[test]
fn a_manifest_list_pulls_its_linux_amd64_image() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    let src = format!(
        "oci-archive:{}",
        archive(&env, "probe-multi.oci.tar").display()
    );
    reg.push(&src, "walk-multi/probe:v1", &["--all"]);
    let name = format!("{}/walk-multi/probe:v1", reg.host());
    let (code, out, err) = runlet(&env, &["image", "pull", &name]);
    assert_eq!(code, Some(0), "{out}{err}");
    let index = reg.digest("walk-multi/probe:v1");
    assert!(
        out.contains(&index),
        "the image is named by its index: {out}"
    );
    let served = env.serve(&[
        "--image",
        &name,
        "--service",
        "walk-multi",
        "--pull",
        "never",
    ]);
    assert_eq!(served.get("/").status, 200);
    drop(served);
    runlet(&env, &["image", "rm", &name]);
}

#[test]
fn an_unknown_tag_is_refused_naming_the_reference_and_nothing_is_created() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    reg.push(
        &docker_archive(&archive(&env, "probe.docker.tar")),
        "walk-unknown/probe:v1",
        &[],
    );
    for missing in ["walk-unknown/probe:nope", "walk-unknown/other:v1"] {
        let name = format!("{}/{missing}", reg.host());
        let (code, out, err) = runlet(&env, &["image", "pull", &name]);
        assert_ne!(code, Some(0), "{out}{err}");
        assert!(err.contains(&name) && err.contains("not found"), "{err}");
        assert!(!images(&env).contains(missing), "{}", images(&env));
    }
}

#[test]
fn serve_and_job_execute_pull_a_missing_image() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    reg.push(
        &docker_archive(&archive(&env, "probe.docker.tar")),
        "walk-serve-pull/probe:v1",
        &[],
    );
    let name = format!("{}/walk-serve-pull/probe:v1", reg.host());
    runlet(&env, &["image", "rm", &name]);
    // --pull never: not in the store, refused.
    let err = env.serve_fails(&["--image", &name, "--pull", "never"]);
    assert!(err.contains(&name), "{err}");
    // missing (the default; the test harness sets RUNLET_PULL=never): pulled, then served.
    let served = env.serve(&[
        "--image",
        &name,
        "--service",
        "walk-serve-pull",
        "--pull",
        "missing",
    ]);
    assert_eq!(served.get("/").status, 200);
    drop(served);
    assert!(images(&env).contains(&name));
    runlet(&env, &["image", "rm", &name]);
    // A job too.
    let (code, out, err) = runlet(
        &env,
        &[
            "job",
            "execute",
            "walk-job-pull",
            "--image",
            &name,
            "--args",
            "job",
            "--pull",
            "missing",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(images(&env).contains(&name));
    runlet(&env, &["image", "rm", &name]);
}
