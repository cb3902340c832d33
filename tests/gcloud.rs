//! `gcloud run` against runlet (issue 19): the real gcloud (528 on these machines), with a
//! throwaway `CLOUDSDK_CONFIG` set up by `runlet setup gcloud`, against a real `runlet
//! daemon` on a real containerd. gcloud missing is a failure, never a skip.
//!
//! The /etc/hosts block `runlet setup gcloud` writes (`runlet`, `us-central1-runlet`) is
//! left in place: other tests (the jobs half) use the same names, and the block is
//! idempotent.
// These tests drive separate processes by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, Launch};
use common::{free_port, probe_env, Env};

const PROJECT: &str = "runlet-test";
const REGION: &str = "us-central1";

/// gcloud's outcome: exit code, stdout, stderr.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs `gcloud ARGS` with the test's configuration directory, killed after 180 s.
fn gcloud(cfg: &Path, args: &[&str]) -> Out {
    let mut child = Command::new("gcloud")
        .args(args)
        .env("CLOUDSDK_CONFIG", cfg)
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env_remove("CLOUDSDK_ACTIVE_CONFIG_NAME")
        .env_remove("CLOUDSDK_CORE_PROJECT")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gcloud must be installed (https://cloud.google.com/sdk): these tests drive the real gcloud");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (o, e) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Out {
        code: status.and_then(|s| s.code()),
        // gcloud prints names in bold whatever NO_COLOR says.
        stdout: common::strip_ansi(&o.join().unwrap()),
        stderr: common::strip_ansi(&e.join().unwrap()),
    };
    assert!(
        status.is_some(),
        "gcloud {args:?} still running after 180 s: {}",
        out.all()
    );
    out
}

/// `gcloud ARGS`, which must succeed.
fn gcloud_ok(cfg: &Path, d: &Daemon, args: &[&str]) -> Out {
    let out = gcloud(cfg, args);
    assert_eq!(
        out.code,
        Some(0),
        "gcloud {args:?}: {}\n--- daemon ---\n{}",
        out.all(),
        runlet_test_support::tail(&d.output(), 40)
    );
    out
}

/// A daemon and a gcloud configuration pointing at it (`runlet setup gcloud`).
fn start(shared: &Env, name: &str) -> (Env, Daemon, tempfile::TempDir) {
    let env = common::daemon::fresh_state(shared, name);
    let api_port = free_port();
    let d = Daemon::launch(
        &env,
        Launch {
            api_listen: Some(format!("127.0.0.1:{api_port}")),
            ..Default::default()
        },
    )
    .unwrap_or_else(|f| panic!("runlet daemon did not start: {f:?}"));
    let cfg = tempfile::tempdir().unwrap();
    let out = env
        .runlet()
        .args(["setup", "gcloud", "--api-port", &api_port.to_string()])
        .args(["--project", PROJECT, "--region", REGION])
        .env("CLOUDSDK_CONFIG", cfg.path())
        .output()
        .expect("run runlet setup gcloud");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runlet setup gcloud: {text}");
    assert!(
        text.contains("gcloud config configurations activate default"),
        "{text}"
    );
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(hosts.contains("127.0.0.1 us-central1-runlet\n"), "{hosts}");
    (env, d, cfg)
}

#[test]
fn gcloud_run_services_against_the_daemon() {
    let Some(shared) = probe_env() else {
        panic!(
            "the gcloud tests need the test containerd: run them through itest.sh / deploy/test.sh"
        );
    };
    let (env, d, cfg) = start(&shared, "gcloud-services");
    let cfg = cfg.path();
    // The configuration gcloud reads is runlet's.
    let props = gcloud_ok(cfg, &d, &["config", "list", "--format", "json"]);
    let props: serde_json::Value = serde_json::from_str(&props.stdout).unwrap();
    assert_eq!(props["core"]["project"], PROJECT, "{props}");
    assert_eq!(props["run"]["region"], REGION, "{props}");
    assert_eq!(props["auth"]["disable_credentials"], "true", "{props}");

    // Deploy: gcloud prints the URL; the ingress answers as the service.
    let url = format!("http://gc-hello.localhost:{}", d.listen.port());
    let out = gcloud_ok(
        cfg,
        &d,
        &["run", "deploy", "gc-hello", "--image", "probe", "--quiet"],
    );
    assert!(
        out.all().contains(&format!("Service URL: {url}")),
        "{}",
        out.all()
    );
    let first = d.report("gc-hello");
    assert_eq!(first["env"]["K_SERVICE"], "gc-hello", "{first}");
    let first_rev = first["env"]["K_REVISION"].as_str().unwrap().to_string();

    // --update-env-vars: a new revision with the variable.
    gcloud_ok(
        cfg,
        &d,
        &[
            "run",
            "deploy",
            "gc-hello",
            "--image",
            "probe",
            "--update-env-vars",
            "A=b",
            "--quiet",
        ],
    );
    let second = d.report("gc-hello");
    assert_eq!(second["env"]["A"], "b", "{second}");
    let second_rev = second["env"]["K_REVISION"].as_str().unwrap().to_string();
    assert_ne!(first_rev, second_rev);

    // Lists.
    let list = gcloud_ok(
        cfg,
        &d,
        &[
            "run",
            "services",
            "list",
            "--format",
            "value(metadata.name,status.url)",
        ],
    );
    assert!(
        list.stdout
            .lines()
            .any(|l| l.contains("gc-hello") && l.contains(&url)),
        "{}",
        list.all()
    );
    let table = gcloud_ok(cfg, &d, &["run", "services", "list"]);
    assert!(table.stdout.contains("gc-hello"), "{}", table.all());
    let revs = gcloud_ok(
        cfg,
        &d,
        &[
            "run",
            "revisions",
            "list",
            "--service",
            "gc-hello",
            "--format",
            "value(metadata.name)",
        ],
    );
    let mut names: Vec<&str> = revs.stdout.lines().collect();
    names.sort();
    let mut want = vec![first_rev.as_str(), second_rev.as_str()];
    want.sort();
    assert_eq!(names, want, "{}", revs.all());
    let table = gcloud_ok(cfg, &d, &["run", "revisions", "list"]);
    assert!(table.stdout.contains(&second_rev), "{}", table.all());

    // describe --format export, accepted back by services replace (no new revision).
    let export = gcloud_ok(
        cfg,
        &d,
        &[
            "run", "services", "describe", "gc-hello", "--format", "export",
        ],
    );
    assert!(export.stdout.contains("image: probe"), "{}", export.all());
    assert!(export.stdout.contains("name: A"), "{}", export.all());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gc-hello.yaml");
    std::fs::write(&file, &export.stdout).unwrap();
    let out = gcloud_ok(
        cfg,
        &d,
        &["run", "services", "replace", file.to_str().unwrap()],
    );
    assert!(out.all().contains(&url), "{}", out.all());
    assert_eq!(
        d.report("gc-hello")["env"]["K_REVISION"],
        second_rev.as_str()
    );

    // services replace with two containers: the ingress container answers on its port.
    let duo = dir.path().join("duo.yaml");
    std::fs::write(
        &duo,
        "apiVersion: serving.knative.dev/v1\n\
         kind: Service\n\
         metadata:\n  name: gc-duo\n\
         spec:\n  template:\n    spec:\n      containers:\n\
         \x20     - name: app\n        image: probe\n        ports:\n        - containerPort: 8081\n\
         \x20     - name: side\n        image: probe\n",
    )
    .unwrap();
    gcloud_ok(
        cfg,
        &d,
        &["run", "services", "replace", duo.to_str().unwrap()],
    );
    let r = d.report("gc-duo");
    assert_eq!(r["env"]["K_SERVICE"], "gc-duo", "{r}");
    assert_eq!(r["env"]["PORT"], "8081", "{r}");
    let desc = gcloud_ok(
        cfg,
        &d,
        &["run", "services", "describe", "gc-duo", "--format", "json"],
    );
    let desc: serde_json::Value = serde_json::from_str(&desc.stdout).unwrap();
    let containers = desc["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2, "{desc}");
    assert_eq!(desc["status"]["conditions"][0]["type"], "Ready", "{desc}");
    assert_eq!(desc["status"]["conditions"][0]["status"], "True", "{desc}");

    // A missing image: gcloud fails with runlet's reason.
    let out = gcloud(
        cfg,
        &[
            "run",
            "deploy",
            "gc-missing",
            "--image",
            "not-loaded-anywhere:v9",
            "--quiet",
        ],
    );
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr.contains("not-loaded-anywhere"),
        "gcloud prints runlet's reason: {}",
        out.all()
    );

    // Delete: gcloud returns once the instances are gone.
    for s in ["gc-hello", "gc-duo", "gc-missing"] {
        gcloud_ok(cfg, &d, &["run", "services", "delete", s, "--quiet"]);
    }
    env.assert_nothing_left("gc-hello");
    env.assert_nothing_left("gc-duo");
    env.assert_nothing_left("gc-missing");
    let out = gcloud(cfg, &["run", "services", "describe", "gc-hello"]);
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stderr.contains("Cannot find service [gc-hello]"),
        "{}",
        out.all()
    );
}

#[test]
fn gcloud_allow_unauthenticated_sets_a_policy() {
    let Some(shared) = probe_env() else {
        panic!(
            "the gcloud tests need the test containerd: run them through itest.sh / deploy/test.sh"
        );
    };
    let (_env, d, cfg) = start(&shared, "gcloud-iam");
    let cfg = cfg.path();
    gcloud_ok(
        cfg,
        &d,
        &[
            "run",
            "deploy",
            "gc-open",
            "--image",
            "probe",
            "--allow-unauthenticated",
            "--quiet",
        ],
    );
    let get_policy = || {
        gcloud_ok(
            cfg,
            &d,
            &[
                "run",
                "services",
                "get-iam-policy",
                "gc-open",
                "--format",
                "json",
            ],
        )
    };
    let policy = get_policy();
    let p: serde_json::Value = serde_json::from_str(&policy.stdout).unwrap();
    let b = &p["bindings"][0];
    assert_eq!(b["role"], "roles/run.invoker", "{p}");
    assert_eq!(b["members"][0], "allUsers", "{p}");
    // Another binding, read-modify-write with the etag.
    gcloud_ok(
        cfg,
        &d,
        &[
            "run",
            "services",
            "add-iam-policy-binding",
            "gc-open",
            "--member",
            "user:me@example.com",
            "--role",
            "roles/run.developer",
        ],
    );
    let policy = get_policy();
    assert!(
        policy.stdout.contains("user:me@example.com"),
        "{}",
        policy.all()
    );
    assert!(policy.stdout.contains("allUsers"), "{}", policy.all());
    gcloud_ok(
        cfg,
        &d,
        &["run", "services", "delete", "gc-open", "--quiet"],
    );
}
