//! Table tests of the service.yaml mapping: real-shaped exports (as `gcloud run services
//! describe --format export` writes them) → accepted (the `Service` and, where runlet runs
//! it, the spec) or refused with the YAML path; and the round trip export → parse → export.

use std::time::Duration;

use super::probe::Action;
use super::service_yaml::{parse, to_text};
use super::service_yaml_export::export;
use super::service_yaml_to_v2::{service, service_spec, yaml_path, Mapped};
use crate::pb::run_v2::{self as v2, env_var, probe, volume};

/// A minimal export of a one-container service, as gcloud 528 writes it.
const MINIMAL: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  annotations:
    run.googleapis.com/ingress: all
    run.googleapis.com/ingress-status: all
    run.googleapis.com/urls: '["https://hello-123456789.us-central1.run.app"]'
  labels:
    cloud.googleapis.com/location: us-central1
  name: hello
  namespace: '123456789'
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/maxScale: '3'
        run.googleapis.com/client-name: gcloud
        run.googleapis.com/client-version: 528.0.0
        run.googleapis.com/startup-cpu-boost: 'true'
      labels:
        client.knative.dev/nonce: xkq_vbrtwp
        run.googleapis.com/startupProbeType: Default
    spec:
      containerConcurrency: 80
      containers:
      - image: us-docker.pkg.dev/cloudrun/container/hello
        ports:
        - containerPort: 8080
          name: http1
        resources:
          limits:
            cpu: 1000m
            memory: 512Mi
        startupProbe:
          failureThreshold: 1
          periodSeconds: 240
          tcpSocket:
            port: 8080
          timeoutSeconds: 240
      serviceAccountName: 123456789-compute@developer.gserviceaccount.com
      timeoutSeconds: 300
  traffic:
  - latestRevision: true
    percent: 100
"#;

/// Sidecars with dependencies, a shared in-memory volume, secrets and probes.
const SIDECARS: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  annotations:
    run.googleapis.com/ingress: internal-and-cloud-load-balancing
    run.googleapis.com/launch-stage: BETA
    team.example.com/owner: web
  labels:
    cloud.googleapis.com/location: europe-west1
    env: prod
  name: shop
  namespace: my-project
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/minScale: '1'
        autoscaling.knative.dev/maxScale: '10'
        run.googleapis.com/container-dependencies: '{"nginx":["app"],"app":["collector"]}'
        run.googleapis.com/cpu-throttling: 'false'
        run.googleapis.com/execution-environment: gen2
        run.googleapis.com/secrets: 'db-pass:projects/123/secrets/db-password'
      labels:
        release: v7
    spec:
      containerConcurrency: 40
      timeoutSeconds: 60
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 8080
          name: h2c
        resources:
          limits:
            cpu: '1'
            memory: 256Mi
        volumeMounts:
        - mountPath: /var/cache/nginx
          name: cache
        startupProbe:
          httpGet:
            path: /healthz
            port: 8080
          periodSeconds: 2
          failureThreshold: 10
        livenessProbe:
          tcpSocket:
            port: 8080
          periodSeconds: 30
      - name: app
        image: example.com/shop/app:v7
        command: [/app]
        args: [--listen, ':9000']
        env:
        - name: MODE
          value: prod
        - name: DB_PASSWORD
          valueFrom:
            secretKeyRef:
              key: '3'
              name: db-pass
        - name: API_KEY
          valueFrom:
            secretKeyRef:
              key: latest
              name: api-key
        resources:
          limits:
            cpu: 500m
            memory: 512Mi
        volumeMounts:
        - mountPath: /var/cache/nginx
          name: cache
        - mountPath: /etc/tls
          name: tls
        startupProbe:
          grpc:
            port: 9000
            service: health
      - name: collector
        image: otel/opentelemetry-collector:0.100.0
        startupProbe:
          httpGet:
            path: /
            port: 13133
      volumes:
      - name: cache
        emptyDir:
          medium: Memory
          sizeLimit: 64Mi
      - name: tls
        secret:
          secretName: tls-cert
          items:
          - key: latest
            path: cert.pem
  traffic:
  - latestRevision: true
    percent: 100
"#;

fn mapped(text: &str) -> Mapped {
    service(&parse(text).unwrap()).unwrap()
}

fn listen() -> std::net::SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

#[test]
fn a_minimal_export_maps_to_what_runlet_runs() {
    let m = mapped(MINIMAL);
    assert_eq!(m.name, "hello");
    assert_eq!(
        m.no_local_effect,
        ["metadata.annotations[run.googleapis.com/ingress]"]
    );
    let svc = &m.service;
    // The location label and gcloud's nonce are the platform's: not kept.
    assert!(svc.labels.is_empty());
    assert!(svc.annotations.is_empty());
    assert_eq!(svc.ingress, v2::IngressTraffic::All as i32);
    let t = svc.template.as_ref().unwrap();
    assert!(t.labels.is_empty() && t.annotations.is_empty());
    assert_eq!(t.scaling.as_ref().map(|s| s.max_instance_count), Some(3));
    assert_eq!(
        t.service_account,
        "123456789-compute@developer.gserviceaccount.com"
    );
    let r = t.containers[0].resources.as_ref().unwrap();
    // No cpu-throttling annotation: Cloud Run's default, CPU only during requests.
    assert!(r.cpu_idle && r.startup_cpu_boost);

    let s = service_spec(&m, listen()).unwrap();
    assert_eq!(s.name, "hello");
    assert_eq!(s.image, "us-docker.pkg.dev/cloudrun/container/hello:latest");
    assert_eq!((s.port, s.use_http2), (8080, false));
    assert_eq!(
        (s.memory_bytes, s.cpu, s.cpu_throttling),
        (512 << 20, 1.0, true)
    );
    assert_eq!(
        (s.concurrency, s.min_instances, s.max_instances),
        (80, 0, 3)
    );
    assert_eq!(s.timeout, Duration::from_secs(300));
    let p = s.startup_probe.unwrap();
    assert_eq!(p.action, Action::Tcp { port: 8080 });
    assert_eq!(
        (p.period, p.failure_threshold),
        (Duration::from_secs(240), 1)
    );
}

#[test]
fn an_export_with_sidecars_secrets_and_probes_maps_field_by_field() {
    let m = mapped(SIDECARS);
    assert_eq!(m.name, "shop");
    assert_eq!(
        m.no_local_effect,
        [
            "metadata.annotations[run.googleapis.com/ingress]",
            "metadata.annotations[run.googleapis.com/launch-stage]",
        ]
    );
    let svc = &m.service;
    assert_eq!(svc.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(svc.labels.len(), 1);
    assert_eq!(
        svc.annotations
            .get("team.example.com/owner")
            .map(String::as_str),
        Some("web")
    );
    assert_eq!(svc.ingress, v2::IngressTraffic::InternalLoadBalancer as i32);
    let t = svc.template.as_ref().unwrap();
    assert_eq!(t.labels.get("release").map(String::as_str), Some("v7"));
    assert_eq!(
        t.scaling,
        Some(v2::RevisionScaling {
            min_instance_count: 1,
            max_instance_count: 10
        })
    );
    assert_eq!(
        t.execution_environment,
        v2::ExecutionEnvironment::Gen2 as i32
    );
    assert_eq!(t.max_instance_request_concurrency, 40);
    assert_eq!(t.timeout.as_ref().map(|d| d.seconds), Some(60));
    let names: Vec<_> = t.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["nginx", "app", "collector"]);
    let [nginx, app, collector] = &t.containers[..] else {
        panic!("three containers")
    };
    assert_eq!(nginx.depends_on, ["app"]);
    assert_eq!(app.depends_on, ["collector"]);
    assert!(collector.depends_on.is_empty());
    assert_eq!(
        nginx.ports,
        [v2::ContainerPort {
            name: "h2c".into(),
            container_port: 8080
        }]
    );
    assert!(app.ports.is_empty() && collector.ports.is_empty());
    for c in [nginx, app, collector] {
        assert!(!c.resources.as_ref().unwrap().cpu_idle, "{}", c.name);
    }
    assert_eq!(
        app.resources
            .as_ref()
            .unwrap()
            .limits
            .get("cpu")
            .map(String::as_str),
        Some("500m")
    );
    assert_eq!(app.command, ["/app"]);
    assert_eq!(app.args, ["--listen", ":9000"]);
    let secret = |e: &v2::EnvVar| match &e.values {
        Some(env_var::Values::ValueSource(s)) => {
            let r = s.secret_key_ref.as_ref().unwrap();
            Some((r.secret.clone(), r.version.clone()))
        }
        _ => None,
    };
    // The alias resolves through run.googleapis.com/secrets.
    assert_eq!(
        secret(&app.env[1]),
        Some(("projects/123/secrets/db-password".into(), "3".into()))
    );
    assert_eq!(
        secret(&app.env[2]),
        Some(("api-key".into(), "latest".into()))
    );
    assert_eq!(
        app.env[0].values,
        Some(env_var::Values::Value("prod".into()))
    );
    assert_eq!(
        app.startup_probe.as_ref().unwrap().probe_type,
        Some(probe::ProbeType::Grpc(v2::GrpcAction {
            port: 9000,
            service: "health".into()
        }))
    );
    assert_eq!(
        nginx.liveness_probe.as_ref().unwrap().probe_type,
        Some(probe::ProbeType::TcpSocket(v2::TcpSocketAction {
            port: 8080
        }))
    );
    assert_eq!(
        t.volumes[0].volume_type,
        Some(volume::VolumeType::EmptyDir(v2::EmptyDirVolumeSource {
            medium: v2::empty_dir_volume_source::Medium::Memory as i32,
            size_limit: "64Mi".into()
        }))
    );
    assert_eq!(
        t.volumes[1].volume_type,
        Some(volume::VolumeType::Secret(v2::SecretVolumeSource {
            secret: "tls-cert".into(),
            items: vec![v2::VersionToPath {
                path: "cert.pem".into(),
                version: "latest".into(),
                mode: 0
            }],
            default_mode: 0
        }))
    );
}

#[test]
fn export_then_parse_then_export_is_identical() {
    for (case, text) in [("minimal", MINIMAL), ("sidecars", SIDECARS)] {
        let mut m = mapped(text);
        m.service.name = format!("projects/p/locations/r/services/{}", m.name);
        let once = to_text(&export(&m.service));
        let again = mapped(&once);
        assert_eq!(again.name, m.name, "{case}");
        // The same Service (and so the same template: no new revision on replace).
        assert_eq!(again.service.template, m.service.template, "{case}");
        let mut svc = again.service.clone();
        svc.name = m.service.name.clone();
        assert_eq!(to_text(&export(&svc)), once, "{case}\n{once}");
    }
}

#[test]
fn the_export_is_gclouds_shape() {
    let mut m = mapped(SIDECARS);
    m.service.name = "projects/my-project/locations/europe-west1/services/shop".into();
    let text = to_text(&export(&m.service));
    for want in [
        "apiVersion: serving.knative.dev/v1\nkind: Service\n",
        "  name: shop\n  namespace: my-project\n",
        "cloud.googleapis.com/location: europe-west1",
        "run.googleapis.com/ingress: internal-and-cloud-load-balancing",
        "autoscaling.knative.dev/maxScale: '10'",
        "run.googleapis.com/container-dependencies: '{\"app\":[\"collector\"],\"nginx\":[\"app\"]}'",
        "run.googleapis.com/cpu-throttling: 'false'",
        "containerConcurrency: 40",
        "secretKeyRef:",
        "- latestRevision: true\n    percent: 100\n",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    assert!(!text.contains("status"), "{text}");
}

/// `edit` applied to the minimal export's text: refused, the detail naming `path`.
#[test]
fn refusals_name_the_yaml_path() {
    let table: &[(&str, &str, &str)] = &[
        ("kind: Service", "kind: Job", "kind: \"Job\""),
        (
            "apiVersion: serving.knative.dev/v1",
            "apiVersion: run.googleapis.com/v1",
            "apiVersion",
        ),
        (
            "  name: hello\n",
            "  nome: hello\n",
            "metadata: unknown field `nome`",
        ),
        (
            "          name: http1\n",
            "          name: http1\n          hostPort: 80\n",
            "spec.template.spec.containers[0].ports[0]: unknown field `hostPort`",
        ),
        (
            "      serviceAccountName",
            "      nodeSelector: {gpu: l4}\n      serviceAccountName",
            "unknown field `nodeSelector`",
        ),
        (
            "        run.googleapis.com/client-name: gcloud\n",
            "        run.googleapis.com/vpc-access-connector: conn\n",
            "spec.template.metadata.annotations[run.googleapis.com/vpc-access-connector]: VPC",
        ),
        (
            "        run.googleapis.com/client-name: gcloud\n",
            "        run.googleapis.com/cloudsql-instances: p:r:db\n",
            "Cloud SQL Auth Proxy as a sidecar",
        ),
        (
            "    run.googleapis.com/ingress: all\n",
            "    run.googleapis.com/ingress: public\n",
            "metadata.annotations[run.googleapis.com/ingress]: \"public\": allowed all, internal",
        ),
        (
            "autoscaling.knative.dev/maxScale: '3'",
            "autoscaling.knative.dev/maxScale: 'lots'",
            "spec.template.metadata.annotations[autoscaling.knative.dev/maxScale]",
        ),
        (
            "autoscaling.knative.dev/maxScale: '3'",
            "autoscaling.knative.dev/maxScale: '2000'",
            "spec.template.metadata.annotations[autoscaling.knative.dev/maxScale]: 2000 is out of range",
        ),
        (
            "memory: 512Mi",
            "memory: 1Ti",
            "spec.template.spec.containers[0].resources.limits.memory",
        ),
        (
            "containerConcurrency: 80",
            "containerConcurrency: 5000",
            "spec.template.spec.containerConcurrency",
        ),
        (
            "timeoutSeconds: 300",
            "timeoutSeconds: 7200",
            "spec.template.spec.timeoutSeconds",
        ),
        (
            "          name: http1",
            "          name: http2",
            "spec.template.spec.containers[0].ports: name \"http2\" is not allowed: allowed http1, h2c",
        ),
        (
            "  - latestRevision: true\n    percent: 100\n",
            "  - revisionName: hello-00001-abc\n    percent: 50\n",
            "spec.traffic",
        ),
        (
            "        startupProbe:\n",
            "        env:\n        - name: PORT\n          value: '1'\n        startupProbe:\n",
            "spec.template.spec.containers[0].env: PORT is reserved",
        ),
        (
            "      timeoutSeconds: 300\n",
            "      timeoutSeconds: 300\n      volumes:\n      - name: nfs\n        nfs: {server: x, path: /}\n",
            "spec.template.spec.volumes[0]: unknown field `nfs`, expected one of `name`, `emptyDir`, `secret`",
        ),
        ("  name: hello\n", "  name: Hello\n", "metadata.name"),
    ];
    for (i, (from, to, want)) in table.iter().enumerate() {
        assert!(MINIMAL.contains(from), "case {i}: {from:?} not in the file");
        let text = MINIMAL.replacen(from, to, 1);
        let err = parse(&text)
            .and_then(|y| service(&y))
            .and_then(|m| service_spec(&m, listen()).map(|_| ()))
            .unwrap_err();
        assert!(
            err.to_string().contains(want),
            "case {i}: {err}\nwant {want:?}"
        );
    }
}

#[test]
fn sidecar_shapes_runlet_cannot_take_are_refused_with_their_path() {
    let table: &[(&str, &str, &str)] = &[
        (
            "      - name: app\n        image: example.com/shop/app:v7\n",
            "      - name: app\n        image: example.com/shop/app:v7\n        ports:\n        - containerPort: 9000\n",
            "spec.template.spec.containers[1].ports: only the ingress container may declare a port",
        ),
        (
            "\"app\":[\"collector\"]",
            "\"app\":[\"db\"]",
            "container-dependencies]: db is not the name of a container (named: nginx, app, collector)",
        ),
        (
            "'{\"nginx\":[\"app\"],\"app\":[\"collector\"]}'",
            "'nginx->app'",
            "is not a JSON object",
        ),
        (
            "          medium: Memory\n",
            "          medium: Disk\n",
            "spec.template.spec.volumes[0].emptyDir.medium: \"Disk\": allowed Memory",
        ),
        (
            "'db-pass:projects/123/secrets/db-password'",
            "'db-pass=db-password'",
            "is not ALIAS:projects/PROJECT/secrets/SECRET",
        ),
    ];
    for (i, (from, to, want)) in table.iter().enumerate() {
        assert!(
            SIDECARS.contains(from),
            "case {i}: {from:?} not in the file"
        );
        let text = SIDECARS.replacen(from, to, 1);
        let err = parse(&text).and_then(|y| service(&y)).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "case {i}: {err}\nwant {want:?}"
        );
    }
    // Several containers and none with a port: which one is the ingress?
    let none = SIDECARS.replacen(
        "        ports:\n        - containerPort: 8080\n          name: h2c\n",
        "",
        1,
    );
    let err = parse(&none).and_then(|y| service(&y)).unwrap_err();
    assert!(
        err.to_string()
            .contains("the ingress container must declare its port"),
        "{err}"
    );
}

#[test]
fn api_paths_read_as_yaml_paths() {
    for (v2_path, want) in [
        (
            "service.template.containers[0].resources.limits.memory",
            "spec.template.spec.containers[0].resources.limits.memory",
        ),
        (
            "service.template.maxInstanceRequestConcurrency",
            "spec.template.spec.containerConcurrency",
        ),
        (
            "service.template.timeout",
            "spec.template.spec.timeoutSeconds",
        ),
        ("service.template", "spec.template"),
        ("service.labels", "metadata.labels"),
        ("service.traffic", "spec.traffic"),
        (
            "service.template.scaling.minInstanceCount",
            "spec.template.metadata.annotations[autoscaling.knative.dev/minScale]",
        ),
    ] {
        assert_eq!(yaml_path(v2_path), want);
    }
}
