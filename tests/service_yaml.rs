//! service.yaml end to end with a real containerd: `runlet serve -f` runs what the file
//! says (port, env, name), refuses revision flags beside it and bad fields by their YAML
//! path; the daemon's `services replace` → `describe --format export` → `replace` round
//! trip makes no new revision and gives the same text back.

mod common;

use common::daemon::{fresh_state, service_path, Daemon};
use common::probe_env;
use serde_json::{json, Value};

fn yaml(name: &str, port: u16, greeting: &str) -> String {
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
  namespace: '123456789'
  labels:
    cloud.googleapis.com/location: us-central1
    team: web
  annotations:
    run.googleapis.com/ingress: all
    run.googleapis.com/ingress-status: all
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/maxScale: '2'
        run.googleapis.com/client-name: gcloud
        run.googleapis.com/cpu-throttling: 'false'
    spec:
      containerConcurrency: 10
      timeoutSeconds: 60
      containers:
      - image: probe
        ports:
        - containerPort: {port}
          name: http1
        env:
        - name: GREETING
          value: {greeting}
        resources:
          limits:
            cpu: '1'
            memory: 256Mi
        startupProbe:
          tcpSocket:
            port: {port}
          periodSeconds: 1
          failureThreshold: 30
  traffic:
  - latestRevision: true
    percent: 100
"#
    )
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn serve_f_runs_what_the_file_says() {
    let Some(env) = probe_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "service.yaml", &yaml("from-yaml", 9091, "hi"));

    // Revision flags beside -f are refused, naming the flag; bad fields by their path.
    let err = env.serve_fails(&["-f", &file, "--image", "probe"]);
    assert!(
        err.contains("--image") && err.contains("cannot be given with -f"),
        "{err}"
    );
    let bad = write(
        &dir,
        "bad.yaml",
        &yaml("from-yaml", 9091, "hi").replace("memory: 256Mi", "memory: 1Ti"),
    );
    let err = env.serve_fails(&["-f", &bad]);
    assert!(
        err.contains("spec.template.spec.containers[0].resources.limits.memory"),
        "{err}"
    );

    let served = env.serve(&["-f", &file]);
    let report: Value = served.get("/").json().unwrap();
    assert_eq!(report["env"]["PORT"], json!("9091"), "{report}");
    assert_eq!(report["env"]["GREETING"], json!("hi"), "{report}");
    assert_eq!(report["env"]["K_SERVICE"], json!("from-yaml"), "{report}");
    let out = served.output();
    assert!(
        out.contains("no effect on runlet: metadata.annotations[run.googleapis.com/ingress]"),
        "{out}"
    );
    let (status, output) = served.interrupt();
    assert!(status.success(), "{output}");
}

#[test]
fn the_daemon_replaces_and_exports_and_the_round_trip_is_a_no_op() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "service-yaml");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&env);
    let file = write(&dir, "service.yaml", &yaml("rt", 8080, "one"));
    let (out, err) = d.cli_ok(&env, &["services", "replace", &file]);
    assert!(
        out.contains("New configuration has been applied to service [rt]"),
        "{out}{err}"
    );
    assert!(err.contains("run.googleapis.com/ingress"), "{err}");
    let report = d.report("rt");
    assert_eq!(report["env"]["GREETING"], json!("one"));
    let svc = d.ok("GET", &service_path("rt"), None);
    let first = svc["latestCreatedRevision"].as_str().unwrap().to_string();
    assert_eq!(svc["template"]["maxInstanceRequestConcurrency"], json!(10));
    assert_eq!(svc["labels"], json!({"team": "web"}));

    let (exported, _) = d.cli_ok(&env, &["services", "describe", "rt", "--format", "export"]);
    for want in [
        "apiVersion: serving.knative.dev/v1\nkind: Service\n",
        "name: rt\n",
        "cloud.googleapis.com/location: local",
        "autoscaling.knative.dev/maxScale: '2'",
        "containerConcurrency: 10",
        "value: one",
    ] {
        assert!(exported.contains(want), "{want:?} not in\n{exported}");
    }
    assert!(!exported.contains("status:"), "{exported}");

    // The export replaced as it is: no new revision, the same export.
    let again = write(&dir, "export.yaml", &exported);
    d.cli_ok(&env, &["services", "replace", &again]);
    let svc = d.ok("GET", &service_path("rt"), None);
    assert_eq!(svc["latestCreatedRevision"], json!(first), "{svc}");
    let (exported2, _) = d.cli_ok(&env, &["services", "describe", "rt", "--format", "export"]);
    assert_eq!(exported2, exported);

    // A changed file is a new revision, serving the change.
    let changed = write(
        &dir,
        "changed.yaml",
        &exported.replace("value: one", "value: two"),
    );
    d.cli_ok(&env, &["services", "replace", &changed]);
    let svc = d.ok("GET", &service_path("rt"), None);
    assert_ne!(svc["latestCreatedRevision"], json!(first), "{svc}");
    assert_eq!(d.report("rt")["env"]["GREETING"], json!("two"));

    // A field runlet cannot honour: exit 64, the YAML path named, nothing sent.
    let bad = write(
        &dir,
        "bad.yaml",
        &exported.replace(
            "run.googleapis.com/cpu-throttling",
            "run.googleapis.com/vpc-access-connector: c\n        run.googleapis.com/cpu-throttling",
        ),
    );
    let (code, out, err) = d.cli(&env, &["services", "replace", &bad]);
    assert_eq!(code, Some(64), "{out}{err}");
    assert!(
        err.contains("spec.template.metadata.annotations[run.googleapis.com/vpc-access-connector]"),
        "{err}"
    );
}

/// Issue 16: a service.yaml with a sidecar, `container-dependencies`, the sidecar's secrets
/// (a `secretKeyRef` variable and a `secret` volume) and its probes. The ingress container
/// (busybox) fetches the sidecar's report and secret file from localhost at its start
/// (exit 3/4 if it cannot: only after the sidecar passed its startup probe) and serves
/// them; the same file through `runlet serve -f` and `runlet services replace`, and the
/// daemon's export of it replaced again makes no new revision.
fn sidecar_yaml(name: &str) -> String {
    const INGRESS: &str = "busybox mkdir -p /www && wget -q -O /www/report.json http://127.0.0.1:8080/ || exit 3; wget -q -O /www/cert.json http://127.0.0.1:8080/readfile?path=/etc/cert/c || exit 4; exec httpd -f -p $PORT -h /www";
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:
        run.googleapis.com/container-dependencies: '{{"app":["report"]}}'
        run.googleapis.com/secrets: 'tok:projects/local/secrets/yaml-tok'
    spec:
      containers:
      - name: app
        image: busybox
        command: [/bin/sh]
        args:
        - -c
        - '{INGRESS}'
        ports:
        - containerPort: 8081
          name: http1
      - name: report
        image: probe
        env:
        - name: PROBE_LISTEN_DELAY_MS
          value: '1500'
        - name: TOKEN
          valueFrom:
            secretKeyRef:
              name: tok
              key: latest
        volumeMounts:
        - name: cert
          mountPath: /etc/cert
        startupProbe:
          tcpSocket:
            port: 8080
          periodSeconds: 1
          failureThreshold: 20
        livenessProbe:
          tcpSocket:
            port: 8080
          periodSeconds: 5
      volumes:
      - name: cert
        secret:
          secretName: tok
          items:
          - key: '1'
            path: c
"#
    )
}

/// `runlet secrets create yaml-tok` (project local) in `env`'s state dir, then a version 2.
fn yaml_secret(env: &common::Env) {
    for (args, data) in [
        (
            &["secrets", "create", "yaml-tok", "--data-file", "-"][..],
            "tok-one",
        ),
        (
            &["secrets", "versions", "add", "yaml-tok", "--data-file", "-"][..],
            "tok-two",
        ),
    ] {
        use std::io::Write;
        let mut child = env
            .runlet()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(data.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{args:?}");
    }
}

fn assert_sidecar_report(report: &Value, cert: &Value) {
    assert!(report["env"].get("PORT").is_none(), "{report}");
    assert_eq!(report["env"]["TOKEN"], json!("tok-two"), "{report}");
    assert_eq!(cert["contents"], json!("tok-one"), "{cert}");
}

#[test]
fn a_yaml_with_sidecars_dependencies_and_their_secrets_runs_in_serve_and_the_daemon() {
    let Some(shared) = probe_env() else { return };
    shared.load("busybox.oci.tar");
    let dir = tempfile::tempdir().unwrap();

    let env = shared.isolated("yaml-sidecars-serve");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    yaml_secret(&env);
    let file = write(&dir, "service.yaml", &sidecar_yaml("yaml-sc"));
    let served = env.serve(&["-f", &file]);
    let report: Value = served.get("/report.json").json().unwrap();
    let cert: Value = served.get("/cert.json").json().unwrap();
    assert_sidecar_report(&report, &cert);
    let (status, output) = served.interrupt();
    assert!(status.success(), "{output}");
    // The sidecar started (and passed its probe) before the ingress container.
    let at = |needle: &str| {
        output
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{output}"))
    };
    assert!(at("container=report") < at("container=app"), "{output}");
    assert!(!output.contains("tok-one") && !output.contains("tok-two"));

    let env = fresh_state(&shared, "yaml-sidecars");
    yaml_secret(&env);
    let d = Daemon::start(&env);
    let file = write(&dir, "daemon.yaml", &sidecar_yaml("yamlsc"));
    d.cli_ok(&env, &["services", "replace", &file]);
    let report: Value = d.get_via("yamlsc", "/report.json").json().unwrap();
    let cert: Value = d.get_via("yamlsc", "/cert.json").json().unwrap();
    assert_sidecar_report(&report, &cert);
    let svc = d.ok("GET", &service_path("yamlsc"), None);
    let first = svc["latestCreatedRevision"].as_str().unwrap().to_string();
    assert_eq!(
        svc["template"]["containers"][0]["dependsOn"],
        json!(["report"]),
        "{svc}"
    );

    let (exported, _) = d.cli_ok(
        &env,
        &["services", "describe", "yamlsc", "--format", "export"],
    );
    for want in [
        "run.googleapis.com/container-dependencies",
        "secretKeyRef",
        "livenessProbe",
        "name: report",
    ] {
        assert!(exported.contains(want), "{want:?} not in\n{exported}");
    }
    let again = write(&dir, "export.yaml", &exported);
    d.cli_ok(&env, &["services", "replace", &again]);
    let svc = d.ok("GET", &service_path("yamlsc"), None);
    assert_eq!(svc["latestCreatedRevision"], json!(first), "{svc}");
    let (exported2, _) = d.cli_ok(
        &env,
        &["services", "describe", "yamlsc", "--format", "export"],
    );
    assert_eq!(exported2, exported);
    let (summary, _) = d.cli_ok(&env, &["services", "describe", "yamlsc"]);
    assert!(summary.contains("Sidecar report:"), "{summary}");
    assert!(summary.contains("TOKEN"), "{summary}");
    assert!(!summary.contains("tok-two"), "{summary}");
}
