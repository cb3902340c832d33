//! `runlet image pull` (and `--pull` on `serve` / `job execute`) against real registries:
//! Debian's `docker-registry` (the CNCF distribution registry), started per test on a free
//! loopback port with its own config and storage, and filled with `skopeo`.
//! Needs `docker-registry`, `skopeo`, `htpasswd` and `openssl` (deploy/install-deps.sh);
//! their absence is a failure.
// These tests wait on separate processes by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;
mod registry_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{fresh_state, service_with_image, Daemon, Launch};
use common::{env, Env};
use registry_support::{
    basic, htpasswd, oci_layout, random_image, random_layer, ConnectProxy, Registry, Relay, Tls,
    TokenKey, TokenServer,
};

/// Whether a program is on PATH.
fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The test environment (`None` where containerd's is not set up, outside CI); a registry
/// tool that is missing fails the test. The tests run at the same time and share blobs (the
/// probe's): one test's `image rm` collects what no image references any more while another
/// test's pull relies on it, which is what the pulls' leases are for.
fn registry_env() -> Option<Env> {
    let env = env()?;
    for tool in ["docker-registry", "skopeo", "htpasswd", "openssl"] {
        assert!(
            have(tool),
            "{tool} is not installed (deploy/install-deps.sh installs it)"
        );
    }
    Some(env)
}

/// Pushes the probe image (its Docker archive) to `reg` as `repo_tag` with skopeo (`extra`:
/// more skopeo flags); returns its name there.
fn push_probe(env: &Env, reg: &Registry, repo_tag: &str, extra: &[&str]) -> String {
    let archive = format!(
        "docker-archive:{}",
        env.archive("probe.docker.tar").display()
    );
    reg.push(&archive, repo_tag, extra);
    format!("{}/{repo_tag}", reg.host())
}

/// Runs `c`; returns (exit code, stdout, stderr).
fn outcome(c: &mut Command) -> (Option<i32>, String, String) {
    let out = c.output().expect("run runlet");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `runlet ARGS`; returns (exit code, stdout, stderr).
fn runlet(env: &Env, args: &[&str]) -> (Option<i32>, String, String) {
    outcome(env.runlet().args(args))
}

/// Runs `runlet ARGS`, which must succeed; returns (stdout, stderr).
fn runlet_ok(env: &Env, args: &[&str]) -> (String, String) {
    let (code, out, err) = runlet(env, args);
    assert_eq!(code, Some(0), "runlet {args:?}: {out}{err}");
    (out, err)
}

/// Serves `name` from the store (`--pull never`) as `service`: it must answer `/` with 200.
fn assert_serves(env: &Env, name: &str, service: &str) {
    let served = env.serve(&["--image", name, "--service", service, "--pull", "never"]);
    let r = served.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn images(env: &Env) -> String {
    runlet(env, &["image", "ls"]).1
}

#[test]
fn a_pushed_image_pulls_back_serves_and_pulls_by_digest() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    let name = push_probe(&env, &reg, "walk-pull/probe:v1", &[]);
    let (out, err) = runlet_ok(&env, &["image", "pull", &name]);
    let digest = reg.digest("walk-pull/probe:v1");
    assert!(
        out.contains(&format!("Pulled {name}")) && out.contains(&digest),
        "{out}"
    );
    // One line per layer: fetched, or found in the store (another test may hold the
    // probe's layers).
    assert!(
        err.contains(": fetching ") || err.contains(": already present"),
        "one line per layer: {err}"
    );
    assert!(images(&env).contains(&name));
    // Everything is there now: a second pull fetches no layer.
    let (_, err) = runlet_ok(&env, &["image", "pull", &name]);
    assert!(
        err.contains("already present") && !err.contains("fetching"),
        "{err}"
    );
    // Served from the store, without pulling again.
    assert_serves(&env, &name, "walk-pull");
    // By digest.
    let by_digest = format!("{}/walk-pull/probe@{digest}", reg.host());
    runlet_ok(&env, &["image", "pull", &by_digest]);
    assert!(images(&env).contains(&by_digest));
    for n in [&name, &by_digest] {
        runlet_ok(&env, &["image", "rm", n]);
    }
    env.assert_nothing_left("walk-pull");
}

#[test]
fn a_manifest_list_pulls_its_linux_amd64_image() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    let src = format!(
        "oci-archive:{}",
        env.archive("probe-multi.oci.tar").display()
    );
    reg.push(&src, "walk-multi/probe:v1", &["--all"]);
    let name = format!("{}/walk-multi/probe:v1", reg.host());
    let (out, _) = runlet_ok(&env, &["image", "pull", &name]);
    let index = reg.digest("walk-multi/probe:v1");
    assert!(
        out.contains(&index),
        "the image is named by its index: {out}"
    );
    assert_serves(&env, &name, "walk-multi");
    runlet(&env, &["image", "rm", &name]);
}

#[test]
fn an_unknown_tag_is_refused_naming_the_reference_and_nothing_is_created() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    push_probe(&env, &reg, "walk-unknown/probe:v1", &[]);
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
    let name = push_probe(&env, &reg, "walk-serve-pull/probe:v1", &[]);
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
    runlet_ok(
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
    assert!(images(&env).contains(&name));
    runlet(&env, &["image", "rm", &name]);
}

/// distribution accepts schema-1 manifests only with this in its config.
const SCHEMA1: &str = "compatibility:\n  schema1:\n    enabled: true\n";

#[test]
fn a_schema1_manifest_is_converted_and_serves_with_the_image_config() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start(SCHEMA1);
    let name = push_probe(&env, &reg, "walk-schema1/probe:v1", &["--format", "v2s1"]);
    let raw = reg.raw("walk-schema1/probe:v1");
    assert!(
        raw.contains("\"schemaVersion\":1") && raw.contains("signatures"),
        "skopeo wrote a signed schema-1 manifest: {raw}"
    );
    runlet(&env, &["image", "rm", &name]);
    let (out, _) = runlet_ok(&env, &["image", "pull", &name]);
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
    let (out2, err) = runlet_ok(&env, &["image", "pull", &name]);
    assert!(err.contains("already present"), "{err}");
    let digest = |o: &str| {
        o.rsplit("digest ")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(digest(&out), digest(&out2));
    runlet_ok(&env, &["image", "rm", &name]);
    env.assert_nothing_left("walk-schema1");
}

#[test]
fn a_loaded_image_pushes_pulls_back_after_removal_and_serves() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    runlet_ok(
        &env,
        &[
            "image",
            "load",
            env.archive("probe.docker.tar").to_str().unwrap(),
            "--tag",
            "walk-push/probe:local",
        ],
    );
    let target = format!("{}/walk-push/probe:v1", reg.host());
    let push = ["image", "push", "walk-push/probe:local", "--as", &target];
    let (out, err) = runlet_ok(&env, &push);
    assert!(out.contains(&format!("Pushed {target}")), "{out}");
    assert!(err.contains("uploading"), "one line per blob: {err}");
    // The registry holds it, under the digest runlet reported.
    let digest = reg.digest("walk-push/probe:v1");
    assert!(out.contains(&digest), "{out}");
    // A second push finds every blob there and uploads only the manifest.
    let (_, err) = runlet_ok(&env, &push);
    assert!(
        err.contains("already in the registry") && !err.contains("uploading"),
        "{err}"
    );
    // Gone from the store, pulled back from the registry, served.
    for n in ["walk-push/probe:local", target.as_str()] {
        runlet(&env, &["image", "rm", n]);
    }
    assert!(!images(&env).contains("walk-push"), "{}", images(&env));
    let (out, _) = runlet_ok(&env, &["image", "pull", &target]);
    assert!(out.contains(&digest), "{out}");
    assert_serves(&env, &target, "walk-push");
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

/// Flips a byte in the middle of `blob` (same length: the registry serves it as if nothing
/// happened).
fn tamper(blob: &Path) {
    let mut bytes = std::fs::read(blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(blob, bytes).unwrap();
}

#[test]
fn a_tampered_blob_is_refused_as_a_digest_mismatch_and_nothing_is_created() {
    let Some(env) = registry_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Layers of its own, which no other test stores or pulls at the same time.
    let image = random_image(dir.path(), "v1", &[256 << 10]);
    let reg = Registry::start("");
    reg.push(&image, "walk-tamper/random:v1", &[]);
    let name = format!("{}/walk-tamper/random:v1", reg.host());
    let layer = &reg.layers("walk-tamper/random:v1")[0];
    let refused = |what: &str| {
        let (code, out, err) = runlet(&env, &["image", "pull", &name]);
        assert_ne!(code, Some(0), "{what}: {out}{err}");
        assert!(
            err.contains("does not match its digest") && err.contains(&name),
            "{what}: {err}"
        );
        assert!(!images(&env).contains(&name), "{what}: {}", images(&env));
        // The ingest was aborted: no partial write is left behind.
        let active = env.ctr(&["content", "active"]);
        assert!(!active.contains(layer.as_str()), "{what}: {active}");
    };
    // The layer: caught as it is written into the store.
    tamper(&reg.blob(layer));
    refused("a tampered layer");
    // The config too: caught when it is fetched, before anything is stored.
    for blob in reg.blobs() {
        let bytes = std::fs::read(&blob).unwrap();
        if blob != reg.blob(layer) && !bytes.windows(15).any(|w| w == b"\"schemaVersion\"") {
            tamper(&blob);
        }
    }
    refused("a tampered config");
    let content = env.ctr(&["content", "ls", "-q"]);
    assert!(!content.contains(layer.as_str()), "{content}");
}

/// A pull that finds a layer already in the store while the only image holding it is
/// removed (`image rm`, whose garbage collection runs at once): the pull holds the layer in
/// its lease before relying on it, so the removal cannot take it. The order is forced: the
/// pull's other layer is held back at the registry until the removal is done.
#[test]
fn a_layer_found_in_the_store_outlives_the_removal_of_its_image_during_a_pull() {
    use runlet::image::registry::{
        plan, BlobFetch, FetchFuture, PullProgress, RegistryOptions, Remote,
    };
    use runlet::runtime::containerd::Containerd;
    use tokio::sync::Notify;

    /// Holds back the fetch of one blob until released.
    struct Gate<'a> {
        remote: &'a Remote,
        held: String,
        opened: Notify,
        release: Notify,
    }
    impl BlobFetch for Gate<'_> {
        fn fetch<'a>(&'a self, digest: &'a str, size: u64, offset: u64) -> FetchFuture<'a> {
            Box::pin(async move {
                if digest == self.held {
                    self.opened.notify_one();
                    self.release.notified().await;
                }
                self.remote.fetch(digest, size, offset).await
            })
        }
        fn reference(&self) -> &str {
            self.remote.reference()
        }
    }
    /// Says when one layer is stored.
    struct Stored {
        layer: String,
        done: Notify,
    }
    impl PullProgress for Stored {
        fn fetching(&self, _: &str, _: u64, _: u64) {}
        fn stored(&self, digest: &str, _: u64, _: u64) {
            if digest == self.layer {
                self.done.notify_one();
            }
        }
    }

    let Some(env) = registry_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (shared, own) = (random_layer(0, 1 << 20), random_layer(1, 1 << 20));
    let first = oci_layout(
        &dir.path().join("first"),
        "v1",
        std::slice::from_ref(&shared),
    );
    let second = oci_layout(&dir.path().join("second"), "v1", &[shared, own]);
    let reg = Registry::start("");
    reg.push(&first, "walk-race/first:v1", &[]);
    reg.push(&second, "walk-race/second:v1", &[]);
    let first_name = format!("{}/walk-race/first:v1", reg.host());
    let second_name = format!("{}/walk-race/second:v1", reg.host());
    runlet_ok(&env, &["image", "pull", &first_name]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let first_layer = reg.layers("walk-race/first:v1")[0].clone();
    let (pulled, layers) = rt.block_on(async {
        let store = Containerd::connect(&env.containerd).await.unwrap();
        let remote = Remote::connect(
            &RegistryOptions::default(),
            &second_name,
            oci_client::RegistryOperation::Pull,
        )
        .await
        .unwrap();
        let plan = plan::plan(&remote, &second_name).await.unwrap();
        let layers: Vec<String> = plan
            .layers
            .iter()
            .map(|l| l.desc.digest().to_string())
            .collect();
        assert_eq!(layers[0], first_layer, "the images share their base layer");
        let gate = Gate {
            remote: &remote,
            held: layers[1].clone(),
            opened: Notify::new(),
            release: Notify::new(),
        };
        let progress = Stored {
            layer: first_layer.clone(),
            done: Notify::new(),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let removal = async {
            // The shared layer was found present, and the other one is on its way.
            progress.done.notified().await;
            gate.opened.notified().await;
            store.remove_image(&first_name).await.unwrap();
            gate.release.notify_one();
        };
        let (pulled, ()) = tokio::join!(store.pull(&plan, &gate, &progress, &cancel), removal);
        (pulled, layers)
    });
    let pulled = pulled.unwrap_or_else(|e| panic!("the pull failed: {e:#?}"));
    assert_eq!(pulled.name, second_name);
    let content = env.ctr(&["content", "ls", "-q"]);
    assert!(content.contains(&first_layer), "{content}");
    assert!(!images(&env).contains(&first_name), "{}", images(&env));
    runlet_ok(&env, &["image", "rm", &second_name]);
    let content = env.ctr(&["content", "ls", "-q"]);
    for layer in &layers {
        assert!(!content.contains(layer.as_str()), "{content}");
    }
}

#[test]
fn the_daemon_pulls_a_missing_image_when_a_service_or_job_is_created() {
    let Some(env) = registry_env() else { return };
    let reg = Registry::start("");
    let name = push_probe(&env, &reg, "walk-daemon-pull/probe:v1", &[]);
    let missing = format!("{}/walk-daemon-pull/probe:nope", reg.host());
    runlet(&env, &["image", "rm", &name]);
    let env = fresh_state(&env, "pull");
    let d = Daemon::launch(
        &env,
        Launch {
            extra: &["--pull", "missing"],
            ..Default::default()
        },
    )
    .unwrap_or_else(|f| panic!("runlet daemon did not start: {f:?}"));

    // A service: the deployment pulls the image (its log shows each layer), then serves.
    d.deploy("walk-daemon-pull", &service_with_image(&name, &[]));
    assert_eq!(d.report("walk-daemon-pull")["probe"], "server");
    assert!(images(&env).contains(&name), "{}", images(&env));
    let log = d.output();
    assert!(
        log.contains("pulling image") && log.contains("layer stored"),
        "{log}"
    );
    // A tag the registry does not have: the operation fails naming the image, the
    // registry and its answer.
    let done = d.wait(&d.create("walk-daemon-missing", &service_with_image(&missing, &[])));
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&missing) && message.contains(&reg.host()) && message.contains("404"),
        "{done}"
    );

    // A job: created once its image is pulled.
    runlet(&env, &["image", "rm", &name]);
    d.cli_ok(
        &env,
        &["jobs", "create", "walk-daemon-job", "--image", &name],
    );
    assert!(images(&env).contains(&name), "{}", images(&env));
    let (code, out, err) = d.cli(
        &env,
        &[
            "jobs",
            "create",
            "walk-daemon-job-missing",
            "--image",
            &missing,
        ],
    );
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(
        err.contains(&missing) && err.contains("not found") && err.contains(&reg.host()),
        "{err}"
    );
    // ...and not created.
    let (code, out, err) = d.cli(&env, &["jobs", "describe", "walk-daemon-job-missing"]);
    assert_ne!(code, Some(0), "{out}{err}");

    d.wait_ok(&d.delete("walk-daemon-pull"));
    d.wait(&d.delete("walk-daemon-missing"));
    d.cli_ok(&env, &["jobs", "delete", "walk-daemon-job"]);
    drop(d);
    runlet(&env, &["image", "rm", &name]);
    env.assert_nothing_left("walk-daemon");
}

/// `runlet ARGS` with a home of its own (`home`, for `~/.docker/config.json`), no
/// credentials or proxies from this process's environment but `vars`, and debug logs (so
/// that a credential logged anywhere would show): (exit code, stdout, stderr).
fn runlet_as(
    env: &Env,
    home: &Path,
    vars: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut c = env.runlet();
    for v in [
        "DOCKER_CONFIG",
        "REGISTRY_AUTH_FILE",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c.env("HOME", home)
        .env("RUNLET_LOG", "debug")
        .envs(vars.iter().copied());
    outcome(c.args(args))
}

/// [`runlet_as`], which must succeed: (stdout, stderr).
fn runlet_as_ok(env: &Env, home: &Path, vars: &[(&str, &str)], args: &[&str]) -> (String, String) {
    let (code, out, err) = runlet_as(env, home, vars, args);
    assert_eq!(code, Some(0), "runlet {args:?} ({vars:?}): {out}{err}");
    (out, err)
}

/// Fails if `secret` shows anywhere in `outputs`.
fn assert_not_leaked(secret: &str, outputs: &[String]) {
    for o in outputs {
        assert!(!o.contains(secret), "a credential was printed:\n{o}");
    }
}

/// A docker config / containers-auth.json with one `auths` entry.
fn auth_json(host: &str, user: &str, password: &str) -> String {
    serde_json::json!({"auths": {host: {"auth": basic(user, password)}}}).to_string()
}

#[test]
fn a_tls_registry_with_basic_auth_takes_credentials_from_every_place_runlet_looks() {
    let Some(env) = registry_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::new(dir.path());
    let (user, password) = ("walker", "pw-9f2Kq-basic");
    let reg = Registry::start_with(&tls.http_config(), &htpasswd(dir.path(), user, password));
    let creds = format!("{user}:{password}");
    let name = push_probe(&env, &reg, "walk-tls/probe:v1", &["--dest-creds", &creds]);
    let host = reg.host();
    let ca = tls.ca.to_str().unwrap().to_string();
    let mut outputs = Vec::new();
    let home = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.json");
    std::fs::write(&auth_file, auth_json(&host, user, password)).unwrap();
    let auth_path = auth_file.to_str().unwrap();

    // No credentials anywhere: refused, naming the registry and where runlet looked.
    let (code, out, err) = runlet_as(
        &env,
        home.path(),
        &[],
        &["image", "pull", &name, "--registry-ca", &ca],
    );
    assert_ne!(code, Some(0), "{out}{err}");
    let config = home.path().join(".docker/config.json");
    assert!(
        err.contains(&host)
            && err.contains("credentials looked for in")
            && err.contains("REGISTRY_AUTH_FILE")
            && err.contains(config.to_str().unwrap()),
        "{err}"
    );
    outputs.extend([out, err]);

    // --registry-auth-file, then REGISTRY_AUTH_FILE.
    for (vars, flag) in [
        (vec![], vec!["--registry-auth-file", auth_path]),
        (vec![("REGISTRY_AUTH_FILE", auth_path)], vec![]),
    ] {
        let mut args = vec!["image", "pull", &name, "--registry-ca", &ca];
        args.extend(flag);
        let (out, err) = runlet_as_ok(&env, home.path(), &vars, &args);
        assert!(out.contains(&format!("Pulled {name}")), "{out}");
        outputs.extend([out, err]);
    }

    // ~/.docker/config.json `auths`.
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, auth_json(&host, user, password)).unwrap();
    let (out, err) = runlet_as_ok(
        &env,
        home.path(),
        &[],
        &["image", "pull", &name, "--registry-ca", &ca],
    );
    outputs.extend([out, err]);

    // `credHelpers`: docker-credential-runlet-test on PATH, asked with the registry on stdin.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = dir.path().join("helper-asked");
    let helper = bin.join("docker-credential-runlet-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server\necho \"$server\" >> {}\n[ \"$server\" = \"{host}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}\\n' \"$server\"\n",
            asked.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        &config,
        serde_json::json!({"credHelpers": {host.clone(): "runlet-test"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (out, err) = runlet_as_ok(
        &env,
        home.path(),
        &[("PATH", &path)],
        &["image", "pull", &name, "--registry-ca", &ca],
    );
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap_or_default().trim(),
        host,
        "the helper was asked for the registry"
    );
    outputs.extend([out, err]);

    // A wrong password: refused, naming the registry and the file the credentials came from.
    runlet(&env, &["image", "rm", &name]);
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, auth_json(&host, user, "not-the-password")).unwrap();
    let (code, out, err) = runlet_as(
        &env,
        home.path(),
        &[],
        &[
            "image",
            "pull",
            &name,
            "--registry-ca",
            &ca,
            "--registry-auth-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(
        err.contains(&host) && err.contains("refused") && err.contains(wrong.to_str().unwrap()),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(!images(&env).contains(&name), "{}", images(&env));

    assert_not_leaked(password, &outputs);
    assert_not_leaked(&basic(user, password), &outputs);
}

/// A registry that speaks TLS with a certificate runlet does not trust is a TLS error that
/// names it and `--registry-ca`, not a retry over plain HTTP (whose failure would hide the
/// cause), though it is on the loopback, where plain HTTP is allowed.
#[test]
fn an_untrusted_registry_certificate_is_a_tls_error_and_no_plain_http_retry() {
    let Some(env) = registry_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::new(dir.path());
    let reg = Registry::start_with(&tls.http_config(), "");
    let name = push_probe(&env, &reg, "walk-untrusted/probe:v1", &[]);
    let home = tempfile::tempdir().unwrap();
    let untrusted = format!("TLS: certificate not trusted for {}", reg.host());
    let refused = |args: &[&str]| {
        let (code, out, err) = runlet_as(&env, home.path(), &[], args);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains(&untrusted) && err.contains("--registry-ca"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("http://"), "no plain-HTTP retry: {err}");
    };
    refused(&["image", "pull", &name]);
    assert!(!images(&env).contains(&name), "{}", images(&env));
    // With the CA it pulls; a push without it is refused the same way.
    let ca = tls.ca.to_str().unwrap();
    runlet_ok(&env, &["image", "pull", &name, "--registry-ca", ca]);
    let again = format!("{}/walk-untrusted/again:v1", reg.host());
    refused(&["image", "push", &name, "--as", &again]);
    runlet_ok(&env, &["image", "rm", &name]);
}

#[test]
fn the_bearer_token_flow_pulls_and_no_credential_or_token_is_printed() {
    let Some(env) = registry_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = TokenKey::new(dir.path());
    let (user, password) = ("walker", "pw-7Hx2-bearer");
    let token = key.jwt("walk-bearer/probe");
    let server = TokenServer::start(user, password, token.clone());
    let reg = Registry::start_with("", &key.registry_config(&server.realm()));
    let creds = format!("{user}:{password}");
    let name = push_probe(
        &env,
        &reg,
        "walk-bearer/probe:v1",
        &["--dest-creds", &creds],
    );
    let host = reg.host();
    let home = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.json");
    std::fs::write(&auth_file, auth_json(&host, user, password)).unwrap();
    server.requests.lock().unwrap().clear();

    let (out, err) = runlet_as_ok(
        &env,
        home.path(),
        &[],
        &[
            "image",
            "pull",
            &name,
            "--registry-auth-file",
            auth_file.to_str().unwrap(),
        ],
    );
    assert!(out.contains(&format!("Pulled {name}")), "{out}");
    let asked = server.requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|r| r.authorized
            && (r
                .query
                .contains("scope=repository%3Awalk-bearer%2Fprobe%3Apull")
                || r.query.contains("scope=repository:walk-bearer/probe:pull"))),
        "the token server was asked for pull on the repository: {asked:?}"
    );
    let outputs = vec![out, err];

    // Without credentials the token server says no: refused, naming the registry.
    runlet(&env, &["image", "rm", &name]);
    let (code, out, err) = runlet_as(&env, home.path(), &[], &["image", "pull", &name]);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(
        err.contains(&host) && err.contains("credentials looked for in"),
        "{err}"
    );
    assert!(!images(&env).contains(&name), "{}", images(&env));

    assert_not_leaked(password, &outputs);
    assert_not_leaked(&basic(user, password), &outputs);
    // The JWT's signature part (its header and claims are not secret).
    let signature = token.rsplit('.').next().unwrap();
    assert_not_leaked(signature, &outputs);
    assert_not_leaked(signature, &[out, err]);
}

#[test]
fn https_proxy_carries_the_pull_and_no_proxy_bypasses_it() {
    let Some(env) = registry_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::new(dir.path());
    let reg = Registry::start_with(&tls.http_config(), "");
    let name = push_probe(&env, &reg, "walk-proxy/probe:v1", &[]);
    let host = reg.host();
    let ca = tls.ca.to_str().unwrap().to_string();
    let proxy = ConnectProxy::start();
    let url = proxy.url();
    let home = tempfile::tempdir().unwrap();
    let pull = ["image", "pull", &name, "--registry-ca", &ca];

    runlet_as_ok(&env, home.path(), &[("HTTPS_PROXY", &url)], &pull);
    let through = proxy.targets.lock().unwrap().clone();
    assert!(
        !through.is_empty() && through.iter().all(|t| *t == format!("CONNECT {host}")),
        "every connection went through the proxy to the registry: {through:?}"
    );

    proxy.targets.lock().unwrap().clear();
    runlet_as_ok(
        &env,
        home.path(),
        &[("HTTPS_PROXY", &url), ("NO_PROXY", "127.0.0.1")],
        &pull,
    );
    let through = proxy.targets.lock().unwrap().clone();
    assert!(through.is_empty(), "NO_PROXY bypasses it: {through:?}");
    runlet(&env, &["image", "rm", &name]);
}

#[test]
fn a_pull_killed_half_way_resumes_and_fetches_less_the_second_time() {
    let Some(env) = registry_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    const LAYER: usize = 24 << 20;
    let image = random_image(dir.path(), "v1", &[LAYER]);
    let reg = Registry::start("");
    reg.push(&image, "walk-resume/random:v1", &[]);
    let layer = reg.layers("walk-resume/random:v1")[0].clone();
    // Pulled through a relay that sends slowly, so the pull can be killed half-way.
    let relay = Relay::start(reg.port);
    let name = format!("127.0.0.1:{}/walk-resume/random:v1", relay.port);
    let mut child = env
        .runlet()
        .args(["image", "pull", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run runlet");
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay.down.load(std::sync::atomic::Ordering::SeqCst) < (LAYER / 2) as u64 {
        assert!(Instant::now() < deadline, "the pull did not get going");
        assert!(child.try_wait().unwrap().is_none(), "the pull ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = relay.down.load(std::sync::atomic::Ordering::SeqCst);
    assert!(!images(&env).contains(&name), "{}", images(&env));

    relay.slow.store(false, std::sync::atomic::Ordering::SeqCst);
    relay.down.store(0, std::sync::atomic::Ordering::SeqCst);
    let (_, err) = runlet_ok(&env, &["image", "pull", &name]);
    assert!(err.contains("resuming at"), "{err}");
    let second = relay.down.load(std::sync::atomic::Ordering::SeqCst);
    // What the killed pull had handed to containerd is not fetched again (less what was
    // still buffered in runlet when it was killed: a few MiB at most).
    assert!(
        second + (4 << 20) < LAYER as u64,
        "the second pull fetched {second} bytes of a {LAYER}-byte layer ({first} came before the kill)"
    );
    runlet_ok(&env, &["image", "rm", &name]);
    // No ingest of the layer is left (other tests' pulls may have theirs meanwhile).
    let active = env.ctr(&["content", "active"]);
    assert!(!active.contains(&layer), "{active}");
}
