//! Secrets end to end with a real containerd: the local store (`runlet secrets`), a
//! service's and a job's secrets as env vars and as read-only in-memory files, versions and
//! `latest`, a missing secret refused naming it, and no secret value in runlet's own files
//! (its state dir but the store itself and instances' in-memory file systems) or output.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::daemon::{fresh_state, service_path, Daemon, PARENT};
use common::{probe_env, within, Env};
use serde_json::{json, Value};

/// A value no test output holds by chance.
fn value(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("s3cr3t-{tag}-{nanos:x}")
}

/// `runlet secrets ARGS` with `data` on stdin; must succeed.
fn secrets(env: &Env, args: &[&str], data: Option<&str>) -> String {
    let mut cmd = env.runlet();
    cmd.arg("secrets").args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run runlet");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        if let Some(d) = data {
            stdin.write_all(d.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = text_of(&out);
    assert!(out.status.success(), "runlet secrets {args:?}: {text}");
    text
}

/// A command's stdout then stderr.
fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `runlet ARGS` without colour; must succeed. Returns its stdout then stderr.
fn runlet_ok(env: &Env, args: &[&str]) -> String {
    let out = env
        .runlet()
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = text_of(&out);
    assert!(out.status.success(), "runlet {args:?}: {text}");
    text
}

/// Secret `name` with one version for each of `values`, in order.
fn create_secret(env: &Env, name: &str, values: &[&str]) {
    secrets(env, &["create", name, "--data-file", "-"], Some(values[0]));
    for &v in &values[1..] {
        secrets(env, &["versions", "add", name, "--data-file", "-"], Some(v));
    }
}

/// Every regular file of runlet's under `root`: all but the secret store itself
/// (`<state-dir>/secrets`), a private containerd's, and the instances' and tasks' in-memory
/// file systems (`.../rootfs`, tmpfs: what the containers themselves hold).
fn runlet_files(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            let skip = p == root.join("secrets")
                || p == root.join("containerd")
                || (e.file_name() == "rootfs"
                    && dir
                        .parent()
                        .and_then(|d| d.file_name())
                        .is_some_and(|n| n == "instances" || n == "tasks"));
            if !skip {
                runlet_files(root, &p, out);
            }
        } else if meta.is_file() {
            out.push(p);
        }
    }
}

/// Asserts that none of runlet's files under `state_dir` holds any of `values`, and that
/// some were read.
fn assert_no_value_in_files(state_dir: &Path, values: &[&str]) {
    let mut files = Vec::new();
    runlet_files(state_dir, state_dir, &mut files);
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        for v in values {
            assert!(!text.contains(v), "{} holds a secret value", f.display());
        }
    }
}

fn assert_absent(what: &str, text: &str, values: &[&str]) {
    for v in values {
        assert!(!text.contains(v), "{what} holds a secret value:\n{text}");
    }
}

#[test]
fn the_store_keeps_versions_privately() {
    let Some(env) = common::env() else { return };
    let env = env.isolated("secrets-store");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    let v1 = value("store1");
    secrets(&env, &["create", "db", "--data-file", "-"], Some(&v1));
    let out = secrets(
        &env,
        &["versions", "add", "db", "--data-file", "-"],
        Some("two"),
    );
    assert!(out.contains("Created version [2]"), "{out}");
    secrets(&env, &["create", "empty"], None);
    let list = secrets(&env, &["list"], None);
    assert!(list.contains("db") && list.contains("empty"), "{list}");
    let versions = secrets(&env, &["versions", "list", "db"], None);
    assert!(
        versions.contains("2 ") && versions.contains("1 "),
        "{versions}"
    );
    assert_absent("versions list", &versions, &[&v1]);
    // Another project is another namespace.
    let other = secrets(&env, &["list", "--project", "other"], None);
    assert!(!other.contains("db"), "{other}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let store = env.state_dir.join("secrets");
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("local/db/1")), 0o600);
    // Exists already, missing: exit 64 naming it.
    let (code, err) = env.run(&["secrets", "create", "db"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("projects/local/secrets/db already exists"),
        "{err}"
    );
    let (code, err) = env.run(&["secrets", "delete", "nope"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("projects/local/secrets/nope"), "{err}");
    secrets(&env, &["delete", "db"], None);
    let list = secrets(&env, &["list"], None);
    assert!(!list.contains("db"), "{list}");
}

#[test]
fn a_service_gets_env_and_file_secrets_and_runlet_keeps_none() {
    let Some(env) = probe_env() else { return };
    let env = env.isolated("secrets-serve");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    let (v1, v2, tls) = (value("v1"), value("v2"), value("tls"));
    create_secret(&env, "api", &[&v1, &v2]);
    create_secret(&env, "tls", &[&tls]);
    let values = [v1.as_str(), v2.as_str(), tls.as_str()];

    // A missing secret or version is refused before anything starts, naming it.
    for (flag, needle) in [
        (
            "X=nope:1",
            "secret projects/local/secrets/nope was not found",
        ),
        (
            "X=api:9",
            "secret version projects/local/secrets/api/versions/9 was not found",
        ),
        (
            "/s/f=nope:latest",
            "/s/f: secret projects/local/secrets/nope",
        ),
    ] {
        let err = env.serve_fails(&["--image", "probe", "--set-secrets", flag]);
        assert!(err.contains(needle), "{flag}: {err}");
        assert!(err.contains("--set-secrets"), "{flag}: {err}");
    }

    let served = env.serve_probe(
        "sec",
        &[
            "--set-secrets",
            "API_V1=api:1,API_LATEST=api:latest,/secrets/tls/key=projects/local/secrets/tls:latest",
        ],
    );
    let report: Value = served.get("/").json().unwrap();
    assert_eq!(report["env"]["API_V1"], json!(v1));
    assert_eq!(report["env"]["API_LATEST"], json!(v2));
    let file: Value = served
        .get("/readfile?path=/secrets/tls/key")
        .json()
        .unwrap();
    assert_eq!(file["contents"], json!(tls), "{file}");
    // Read-only, on a tmpfs: the mount line of /secrets/tls says both.
    let mounts = report["mounts"].to_string();
    let line = report["mounts"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .find(|l| l.contains(" /secrets/tls "))
        })
        .unwrap_or_else(|| panic!("no mount at /secrets/tls: {mounts}"));
    assert!(line.contains(" ro,") || line.contains(" ro "), "{line}");
    assert!(line.contains("tmpfs"), "{line}");

    assert_no_value_in_files(&env.state_dir, &values);
    let (status, output) = served.interrupt();
    assert!(status.success(), "{output}");
    assert_absent("runlet serve's output", &output, &values);
    assert_no_value_in_files(&env.state_dir, &values);
}

#[test]
fn a_job_gets_its_secrets_and_its_records_hold_references() {
    let Some(env) = probe_env() else { return };
    let env = env.isolated("secrets-job");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    let token = value("job");
    create_secret(&env, "token", &[&token]);

    let (code, err) = env.run(&[
        "job",
        "execute",
        "sj",
        "--image",
        "probe",
        "--args",
        "job",
        "--set-secrets",
        "TOKEN=token:2",
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("secret version projects/local/secrets/token/versions/2 was not found"),
        "{err}"
    );

    let text = runlet_ok(
        &env,
        &[
            "job",
            "execute",
            "sj",
            "--image",
            "probe",
            "--args",
            "job",
            "--set-secrets",
            "TOKEN=token:latest,/run/tok/t=token:1",
        ],
    );
    // The probe prints its environment: the value reached the task (its own output).
    assert!(text.contains(&format!("\"TOKEN\":\"{token}\"")), "{text}");
    // The record holds the reference, not the value.
    let records = env.state_dir.join("jobs/executions");
    let mut found = false;
    for e in std::fs::read_dir(&records).unwrap().flatten() {
        let t = std::fs::read_to_string(e.path()).unwrap_or_default();
        found |= t.contains("secretKeyRef") && t.contains("\"token\"");
    }
    assert!(found, "no record with the secret's reference");
    assert_no_value_in_files(&env.state_dir, &[&token]);
    let (code, described) = env.run(&["job", "executions", "list", "sj", "--format", "yaml"]);
    assert_eq!(code, Some(0), "{described}");
}

#[test]
fn the_daemon_resolves_secrets_when_it_creates_instances() {
    let Some(env) = probe_env() else { return };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "secrets");
    // The daemon's clients use project runlet-test: short names are looked up there.
    let v = value("daemon");
    secrets(
        &env,
        &[
            "create",
            "db",
            "--project",
            "runlet-test",
            "--data-file",
            "-",
        ],
        Some(&v),
    );
    let d = Daemon::start(&env);
    d.cli_ok(
        &env,
        &[
            "deploy",
            "sec",
            "--image",
            "probe",
            "--set-secrets",
            "DB=db:latest,/etc/db/pass=db:1",
        ],
    );
    let report = d.report("sec");
    assert_eq!(report["env"]["DB"], json!(v));
    let r = d.get_via("sec", "/readfile?path=/etc/db/pass");
    assert_eq!(r.json().unwrap()["contents"], json!(v));

    // The API and describe show references.
    let svc = d.ok("GET", &service_path("sec"), None);
    let text = svc.to_string();
    assert!(text.contains("secretKeyRef"), "{text}");
    assert_absent("GET service", &text, &[&v]);
    let (out, _) = d.cli_ok(&env, &["services", "describe", "sec"]);
    assert!(out.contains("db:latest"), "{out}");
    assert_absent("describe", &out, &[&v]);
    let (out, _) = d.cli_ok(&env, &["services", "describe", "sec", "--format", "yaml"]);
    assert_absent("describe --format yaml", &out, &[&v]);

    // A missing one fails the deployment naming it; the old revision still serves.
    let (code, out, err) = d.cli(
        &env,
        &[
            "deploy",
            "sec",
            "--image",
            "probe",
            "--set-secrets",
            "DB=gone:1",
        ],
    );
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("projects/runlet-test/secrets/gone"),
        "{out}{err}"
    );
    assert!(within(Duration::from_secs(5), || d
        .get_via("sec", "/")
        .status
        == 200));

    let (out, _) = d.cli_ok(&env, &["services", "describe", "sec", "--format", "export"]);
    assert!(out.contains("secretKeyRef"), "{out}");
    assert_absent("describe --format export", &out, &[&v]);
    let ops = d.ok("GET", &format!("{PARENT}/operations"), None);
    assert_absent("the operations", &ops.to_string(), &[&v]);

    // A stored job's secrets: its task gets the value, its records and outputs do not.
    // The task succeeds only if it has the value both ways (and prints nothing).
    d.cli_ok(
        &env,
        &[
            "jobs",
            "create",
            "sjd",
            "--image",
            "busybox",
            "--max-retries",
            "0",
            "--command",
            "/bin/sh",
            "--args",
            "^@^-c@test -n \"$DB\" && test \"$DB\" = \"$(cat /etc/db/pass)\"",
            "--set-secrets",
            "DB=db:latest,/etc/db/pass=db:1",
        ],
    );
    let (out, err) = d.cli_ok(&env, &["jobs", "execute", "sjd", "--wait"]);
    assert_absent("jobs execute", &format!("{out}{err}"), &[&v]);
    for args in [
        vec!["jobs", "describe", "sjd"],
        vec!["jobs", "describe", "sjd", "--format", "yaml"],
        vec!["jobs", "executions", "list", "--job", "sjd"],
    ] {
        let (out, err) = d.cli_ok(&env, &args);
        assert_absent(&format!("{args:?}"), &format!("{out}{err}"), &[&v]);
    }
    let ops = d.ok("GET", &format!("{PARENT}/operations"), None);
    assert_absent("the operations", &ops.to_string(), &[&v]);
    let execs = d.ok("GET", &format!("{PARENT}/jobs/sjd/executions"), None);
    assert_absent("the executions", &execs.to_string(), &[&v]);

    // Every file of runlet's (service, revision and job state, operations, execution
    // records), but the store and the containers' own in-memory file systems.
    assert_no_value_in_files(&env.state_dir, &[&v]);
    assert_absent("the daemon's output", &d.output(), &[&v]);
}

/// `runlet job execute -f job.yaml` (issue 16): `valueFrom.secretKeyRef` and a `secret`
/// volume, as Cloud Run's job YAML writes them, reach the task; a missing one is refused
/// naming it.
#[test]
fn a_job_yaml_takes_secret_key_refs_and_secret_volumes() {
    let Some(shared) = probe_env() else { return };
    shared.load("busybox.oci.tar");
    let env = shared.isolated("secrets-job-yaml");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    let (v1, v2) = (value("y1"), value("y2"));
    create_secret(&env, "token", &[&v1, &v2]);
    let yaml = |secret: &str| {
        format!(
            r#"apiVersion: run.googleapis.com/v1
kind: Job
metadata:
  name: sj-yaml
spec:
  template:
    spec:
      template:
        spec:
          maxRetries: 0
          volumes:
          - name: tok
            secret:
              secretName: {secret}
              items:
              - key: "1"
                path: t
          containers:
          - image: busybox
            command: [/bin/sh]
            args: [-c, 'echo "env=$TOKEN"; echo "file=$(cat /run/tok/t)"; grep " /run/tok " /proc/mounts']
            env:
            - name: TOKEN
              valueFrom:
                secretKeyRef:
                  name: token
                  key: latest
            volumeMounts:
            - name: tok
              mountPath: /run/tok
"#
        )
    };
    std::fs::create_dir_all(&env.state_dir).unwrap();
    let file = env.state_dir.join("job.yaml");
    std::fs::write(&file, yaml("token")).unwrap();
    let text = runlet_ok(&env, &["job", "execute", "-f", file.to_str().unwrap()]);
    assert!(text.contains(&format!("env={v2}")), "{text}");
    assert!(text.contains(&format!("file={v1}")), "{text}");
    let mount = text
        .lines()
        .find(|l| l.contains(" /run/tok "))
        .unwrap_or_else(|| panic!("no mount at /run/tok: {text}"));
    assert!(mount.contains(" ro,") && mount.contains("tmpfs"), "{mount}");
    assert_no_value_in_files(&env.state_dir, &[&v1, &v2]);
    let out = env
        .runlet()
        .args(["job", "executions", "list", "sj-yaml", "--format", "yaml"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("secretKeyRef"), "{listed}");
    assert_absent("executions list", &listed, &[&v1, &v2]);

    // A missing secret: exit 64 naming it, nothing run.
    std::fs::write(&file, yaml("gone")).unwrap();
    let (code, err) = env.run(&["job", "execute", "-f", file.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("projects/local/secrets/gone"), "{err}");
}
