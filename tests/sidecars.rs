//! Instances with sidecars (issue 16) against a real containerd: three containers of one
//! instance share its network namespace and an in-memory volume, start in `--depends-on`
//! order, and only the ingress container gets `PORT`.

mod common;

use common::env;

/// The ingress container (busybox): at its start it fetches the `report` sidecar's report
/// from localhost (exit 3 if it cannot: so the instance only becomes ready if the sidecar
/// listened first), waits for the `writer` sidecar's file on the shared volume, then serves
/// both with httpd on `$PORT`.
const INGRESS: &str = "busybox mkdir -p /www \
    && wget -q -O /www/report.json http://127.0.0.1:8080/ || exit 3; \
    i=0; while [ ! -f /data/msg ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
    busybox cp /data/msg /www/msg.txt && exec httpd -f -p $PORT -h /www";

#[test]
fn three_containers_share_localhost_and_a_volume_and_start_in_order() {
    let Some(env) = env() else { return };
    env.load("probe.oci.tar");
    env.load("busybox.oci.tar");
    let served = env.serve(&[
        "--service",
        "walk-sidecars",
        "--add-volume",
        "name=shared,type=in-memory,size-limit=16Mi",
        "--container",
        "app",
        "--image",
        "busybox",
        "--port",
        "8081",
        "--command",
        "/bin/sh",
        "--args",
        &format!("^@^-c@{INGRESS}"),
        "--add-volume-mount",
        "volume=shared,mount-path=/data",
        "--depends-on",
        "report,writer",
        "--container",
        "report",
        "--image",
        "probe",
        // Listens 1.5 s late: its startup probe holds the ingress container back.
        "--set-env-vars",
        "PROBE_LISTEN_DELAY_MS=1500",
        "--startup-probe",
        "tcpSocket.port=8080,periodSeconds=1,failureThreshold=10",
        "--container",
        "writer",
        "--image",
        "busybox",
        "--command",
        "/bin/sh",
        "--args",
        "^@^-c@echo hello-from-writer > /shared/msg; trap 'exit 0' TERM; while :; do sleep 1; done",
        "--add-volume-mount",
        "volume=shared,mount-path=/shared",
    ]);
    // The sidecar's report, fetched by the ingress container over localhost.
    let r = served.get("/report.json");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json().unwrap();
    let e = &j["env"];
    assert!(e.get("PORT").is_none(), "a sidecar has no PORT: {e}");
    assert_eq!(e["K_SERVICE"], "walk-sidecars");
    assert_eq!(e["K_CONFIGURATION"], "walk-sidecars");
    assert!(e["K_REVISION"]
        .as_str()
        .unwrap()
        .starts_with("walk-sidecars-00001-"));
    // Written by one container, read by another: one tmpfs shared.
    let r = served.get("/msg.txt");
    assert_eq!((r.status, r.text().trim()), (200, "hello-from-writer"));
    // Three containers in containerd, each labelled with its name.
    let ids = env.ctr(&["containers", "ls", "-q"]);
    let ours: Vec<&str> = ids
        .lines()
        .filter(|l| l.starts_with("walk-sidecars-"))
        .collect();
    assert_eq!(ours.len(), 3, "{ids}");
    for name in ["app", "report", "writer"] {
        let labelled = ours.iter().any(|id| {
            let info = env.ctr(&["containers", "info", id]);
            info.contains(&format!("\"runlet.io/container\": \"{name}\""))
        });
        assert!(labelled, "no container labelled {name}");
    }
    let (status, out) = served.interrupt();
    assert!(status.success(), "runlet exit: {status}\n{out}");
    // The report sidecar started (and passed its probe) before the ingress container.
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{out}"))
    };
    assert!(at("container=report") < at("container=app"), "{out}");
    // Logs carry the container's name; every container got SIGTERM.
    assert!(
        out.lines()
            .any(|l| l.contains("container=report") && l.contains("SIGTERM received")),
        "{out}"
    );
    env.assert_nothing_left("walk-sidecars");
}

#[test]
fn a_dependency_cycle_is_refused_before_containerd() {
    let Some(env) = env() else { return };
    let err = env.serve_fails(&[
        "--container",
        "app",
        "--image",
        "busybox",
        "--port",
        "8080",
        "--depends-on",
        "log",
        "--container",
        "log",
        "--image",
        "busybox",
        "--depends-on",
        "app",
    ]);
    assert!(err.contains("a dependency cycle among app, log"), "{err}");
    let err = env.serve_fails(&["--image", "busybox", "--container", "app", "--image", "x"]);
    assert!(
        err.contains("--image") && err.contains("may only follow a --container"),
        "{err}"
    );
}

/// A sidecar's liveness probe (issue 16): the `health` sidecar serves `/ok` for 3 s, then
/// 404; its probe fails twice in a row and the instance is replaced, runlet's log naming
/// the container.
#[test]
fn a_sidecar_failing_its_liveness_probe_replaces_the_instance() {
    let Some(env) = env() else { return };
    env.load("probe.oci.tar");
    env.load("busybox.oci.tar");
    let served = env.serve(&[
        "--service",
        "walk-sidecar-live",
        "--min-instances",
        "1",
        "--container",
        "app",
        "--image",
        "probe",
        "--port",
        "8080",
        "--container",
        "health",
        "--image",
        "busybox",
        "--command",
        "/bin/sh",
        "--args",
        "^@^-c@mkdir -p /www; echo ok > /www/ok; (sleep 3; rm /www/ok) & exec busybox httpd -f -p 9000 -h /www",
        "--startup-probe",
        "httpGet.path=/ok,httpGet.port=9000,periodSeconds=1",
        "--liveness-probe",
        "httpGet.path=/ok,httpGet.port=9000,periodSeconds=1,failureThreshold=2",
    ]);
    assert_eq!(served.get("/").status, 200);
    assert!(
        served.wait_for_output(
            "liveness probe failed: container health: 2 failures in a row",
            std::time::Duration::from_secs(30)
        ),
        "{}",
        served.output()
    );
    let (status, out) = served.interrupt();
    assert!(status.success(), "runlet exit: {status}\n{out}");
    env.assert_nothing_left("walk-sidecar-live");
}
