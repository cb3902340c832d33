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
