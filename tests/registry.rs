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

    /// The `data` files of the blobs in the registry's storage.
    fn blobs(&self) -> Vec<PathBuf> {
        let root = self
            ._dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256");
        let mut out = Vec::new();
        for prefix in std::fs::read_dir(&root).unwrap() {
            for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
                out.push(blob.unwrap().path().join("data"));
            }
        }
        out
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

    /// The manifest a tag resolves to, as the registry serves it.
    fn raw(&self, repo_tag: &str) -> String {
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
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// distribution accepts schema-1 manifests only with this in its config.
const SCHEMA1: &str = "compatibility:\n  schema1:\n    enabled: true\n";

#[test]
fn a_schema1_manifest_is_converted_and_serves_with_the_image_config() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start(SCHEMA1);
    reg.push(
        &docker_archive(&archive(&env, "probe.docker.tar")),
        "walk-schema1/probe:v1",
        &["--format", "v2s1"],
    );
    let raw = reg.raw("walk-schema1/probe:v1");
    assert!(
        raw.contains("\"schemaVersion\":1") && raw.contains("signatures"),
        "skopeo wrote a signed schema-1 manifest: {raw}"
    );
    let name = format!("{}/walk-schema1/probe:v1", reg.host());
    runlet(&env, &["image", "rm", &name]);
    let (code, out, err) = runlet(&env, &["image", "pull", &name]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("Pulled {name}")), "{out}");
    let served = env.serve(&[
        "--image",
        &name,
        "--service",
        "walk-schema1",
        "--pull",
        "never",
    ]);
    let r = served.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json().unwrap();
    // Env and Entrypoint came from the top v1Compatibility's config.
    assert_eq!(j["env"]["PROBE_IMAGE_ENV"], "from-image", "{j}");
    assert_eq!(j["argv"][0], "/probe", "{j}");
    drop(served);
    // A second pull finds every blob present and converts to the same image.
    let (code, out2, err) = runlet(&env, &["image", "pull", &name]);
    assert_eq!(code, Some(0), "{out2}{err}");
    assert!(err.contains("already present"), "{err}");
    let digest = |o: &str| {
        o.rsplit("digest ")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(digest(&out), digest(&out2));
    let (code, _, err) = runlet(&env, &["image", "rm", &name]);
    assert_eq!(code, Some(0), "{err}");
    env.assert_nothing_left("walk-schema1");
}

#[test]
fn a_loaded_image_pushes_pulls_back_after_removal_and_serves() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    let (code, out, err) = runlet(
        &env,
        &[
            "image",
            "load",
            archive(&env, "probe.docker.tar").to_str().unwrap(),
            "--tag",
            "walk-push/probe:local",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let target = format!("{}/walk-push/probe:v1", reg.host());
    let (code, out, err) = runlet(
        &env,
        &["image", "push", "walk-push/probe:local", "--as", &target],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("Pushed {target}")), "{out}");
    assert!(err.contains("uploading"), "one line per blob: {err}");
    // The registry holds it, under the digest runlet reported.
    let digest = reg.digest("walk-push/probe:v1");
    assert!(out.contains(&digest), "{out}");
    // A second push finds every blob there and uploads only the manifest.
    let (code, out, err) = runlet(
        &env,
        &["image", "push", "walk-push/probe:local", "--as", &target],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("already in the registry") && !err.contains("uploading"),
        "{err}"
    );
    // Gone from the store, pulled back from the registry, served.
    for n in ["walk-push/probe:local", target.as_str()] {
        runlet(&env, &["image", "rm", n]);
    }
    assert!(!images(&env).contains("walk-push"), "{}", images(&env));
    let (code, out, err) = runlet(&env, &["image", "pull", &target]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&digest), "{out}");
    let served = env.serve(&[
        "--image",
        &target,
        "--service",
        "walk-push",
        "--pull",
        "never",
    ]);
    assert_eq!(served.get("/").status, 200);
    drop(served);
    runlet(&env, &["image", "rm", &target]);
    env.assert_nothing_left("walk-push");
}

#[test]
fn pushing_an_image_not_in_the_store_names_it() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    let target = format!("{}/walk-push-missing/none:v1", reg.host());
    let (code, out, err) = runlet(&env, &["image", "push", &target]);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(err.contains("walk-push-missing/none:v1"), "{err}");
}

#[test]
fn a_tampered_blob_is_refused_as_a_digest_mismatch_and_nothing_is_created() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    reg.push(
        &docker_archive(&archive(&env, "probe.docker.tar")),
        "walk-tamper/probe:v1",
        &[],
    );
    // Flip a byte in the middle of every stored blob but the manifest (same length, so the
    // registry serves them as if nothing happened). The layer may already be in the store
    // (other tests load the probe); the config is fetched and checked on every pull.
    for blob in reg.blobs() {
        let mut bytes = std::fs::read(&blob).unwrap();
        if bytes.windows(15).any(|w| w == b"\"schemaVersion\"") {
            continue;
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&blob, bytes).unwrap();
    }
    let name = format!("{}/walk-tamper/probe:v1", reg.host());
    let (code, out, err) = runlet(&env, &["image", "pull", &name]);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("does not match its digest") && err.contains(&name),
        "{err}"
    );
    assert!(!images(&env).contains(&name), "{}", images(&env));
    // The ingest was aborted: no partial write is left behind.
    let active = env.ctr(&["content", "active"]);
    assert!(!active.contains("runlet-pull-"), "{active}");
}
