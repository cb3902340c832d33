//! Sidecars in jobs (Cloud Run's multi-container jobs) against a real containerd: a task's
//! containers share its network namespace and in-memory volumes, start in `--depends-on`
//! order (a sidecar's startup probe holds back what depends on it), every container gets
//! the CLOUD_RUN_* variables, and the main container's exit ends the task (its exit code
//! decides the result; sidecars still running are stopped).
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::process::Output;

use common::{env, strip_ansi, Env};

fn job(env: &Env, args: &[&str]) -> Output {
    env.runlet()
        .arg("job")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run runlet")
}

fn text(out: &Output) -> String {
    strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `runlet job execute -f` of `yaml`, written to a file.
fn execute_yaml(env: &Env, yaml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    std::fs::write(&file, yaml).unwrap();
    job(env, &["execute", "-f", file.to_str().unwrap()])
}

/// The `web` sidecar: writes a page and a file on the shared volume, listens one second
/// late (so a main container started before its startup probe passed finds nobody), exits
/// on SIGTERM.
const WEB: &str = "mkdir -p /www; echo hi-from-sidecar > /www/hello.txt; \
    echo side-index=$CLOUD_RUN_TASK_INDEX-$CLOUD_RUN_EXECUTION; echo written-by-web > /shared/msg; \
    trap 'echo web-got-term; exit 0' TERM; sleep 1; httpd -p 8081 -h /www; \
    while :; do sleep 0.2; done";

/// The main container: fetches the sidecar's page once (no retry: it must be up), reads
/// the shared file, and exits 0.
const MAIN: &str = "wget -q -O - http://127.0.0.1:8081/hello.txt || exit 9; \
    cat /data/msg || exit 8; echo main-index=$CLOUD_RUN_TASK_INDEX";

#[test]
fn the_main_container_reaches_its_sidecar_on_localhost_in_dependency_order() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let out = job(
        &env,
        &[
            "execute",
            "js-local",
            "--tasks",
            "2",
            "--max-retries",
            "0",
            "--add-volume",
            "name=shared,type=in-memory,size-limit=16Mi",
            "--container",
            "main",
            "--image",
            "busybox",
            "--command",
            "/bin/sh",
            "--args",
            &format!("^@^-c@{MAIN}"),
            "--depends-on",
            "web",
            "--add-volume-mount",
            "volume=shared,mount-path=/data",
            "--container",
            "web",
            "--image",
            "busybox",
            "--command",
            "/bin/sh",
            "--args",
            &format!("^@^-c@{WEB}"),
            "--startup-probe",
            "tcpSocket.port=8081,periodSeconds=1,failureThreshold=10",
            "--add-volume-mount",
            "volume=shared,mount-path=/shared",
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for index in 0..2 {
        for want in [
            format!("[task {index} attempt 0 main] hi-from-sidecar"),
            format!("[task {index} attempt 0 main] written-by-web"),
            format!("[task {index} attempt 0 main] main-index={index}"),
            format!("[task {index} attempt 0 web] side-index={index}-js-local-"),
            // Still running when the main container ended: stopped, with SIGTERM.
            format!("[task {index} attempt 0 web] web-got-term"),
        ] {
            assert!(t.contains(&want), "want {want:?} in:\n{t}");
        }
    }
    env.assert_nothing_left("js-local");
}

#[test]
fn the_main_containers_exit_code_decides_the_task() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let run = |name: &str, main: &str, side: &str| {
        job(
            &env,
            &[
                "execute",
                name,
                "--max-retries",
                "0",
                "--image",
                "busybox",
                "--command",
                "/bin/sh",
                "--args",
                &format!("^@^-c@{main}"),
                "--container",
                "side",
                "--image",
                "busybox",
                "--command",
                "/bin/sh",
                "--args",
                &format!("^@^-c@{side}"),
            ],
        )
    };
    // A sidecar that keeps running (and ignores SIGTERM: SIGKILL 10 s later) does not
    // keep the task: the main container's failure fails it.
    let t0 = std::time::Instant::now();
    let out = run(
        "js-fail",
        "sleep 1; exit 3",
        "trap '' TERM; while :; do sleep 1; done",
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(40),
        "took {:?}:\n{t}",
        t0.elapsed()
    );
    env.assert_nothing_left("js-fail");
    // A sidecar failing at once does not fail the task: the main container's 0 succeeds it.
    let out = run("js-ok", "sleep 2; echo main-done", "exit 7");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("[task 0 attempt 0 main] main-done"), "{t}");
    assert!(t.contains("sidecar side exited"), "{t}");
    env.assert_nothing_left("js-ok");
}

/// [`MAIN`] waiting for the sidecar to listen (this YAML has no startup probe: its
/// dependency only orders the starts; the next test gives one).
const MAIN_RETRYING: &str = "i=0; until wget -q -O /tmp/page http://127.0.0.1:8081/hello.txt; do \
    i=$((i+1)); [ $i -gt 100 ] && exit 9; sleep 0.1; done; cat /tmp/page; \
    cat /data/msg || exit 8; echo main-index=$CLOUD_RUN_TASK_INDEX";

#[test]
fn a_job_yaml_with_sidecars_runs_as_the_flags_do() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let yaml = format!(
        r#"apiVersion: run.googleapis.com/v1
kind: Job
metadata:
  name: js-yaml
spec:
  template:
    metadata:
      annotations:
        run.googleapis.com/container-dependencies: '{{"main":["web"]}}'
    spec:
      taskCount: 1
      template:
        spec:
          maxRetries: 0
          volumes:
          - name: shared
            emptyDir:
              medium: Memory
              sizeLimit: 16Mi
          containers:
          - name: main
            image: busybox
            command: [/bin/sh]
            args: [-c, {main}]
            volumeMounts:
            - name: shared
              mountPath: /data
          - name: web
            image: busybox
            command: [/bin/sh]
            args: [-c, {web}]
            volumeMounts:
            - name: shared
              mountPath: /shared
"#,
        main = serde_json::to_string(MAIN_RETRYING).unwrap(),
        web = serde_json::to_string(WEB).unwrap(),
    );
    let out = execute_yaml(&env, &yaml);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for want in [
        "[task 0 attempt 0 main] hi-from-sidecar",
        "[task 0 attempt 0 main] written-by-web",
        "[task 0 attempt 0 web] side-index=0-js-yaml-",
        "[task 0 attempt 0 web] web-got-term",
    ] {
        assert!(t.contains(want), "want {want:?} in:\n{t}");
    }
    env.assert_nothing_left("js-yaml");
}

/// A sidecar listening 3 s after its start (no volume: it serves its own page).
const LATE_WEB: &str = "mkdir -p /www; echo hi-after-probe > /www/hello.txt; \
    trap 'exit 0' TERM; sleep 3; httpd -p 8081 -h /www; while :; do sleep 0.2; done";

/// Fetches the sidecar's page once, no retry: it is up only if the start waited for it.
const MAIN_ONCE: &str = "wget -q -O - http://127.0.0.1:8081/hello.txt || exit 9; echo main-done";

#[test]
fn a_job_yaml_sidecars_startup_probe_holds_back_the_main_container() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    // Cloud Run's shape: the dependency in the execution template's annotation, the probe
    // on the sidecar (its only port: a job's containers declare none).
    let yaml = format!(
        r#"apiVersion: run.googleapis.com/v1
kind: Job
metadata:
  name: js-probe
spec:
  template:
    metadata:
      annotations:
        run.googleapis.com/container-dependencies: '{{"main":["web"]}}'
    spec:
      taskCount: 1
      template:
        spec:
          maxRetries: 0
          containers:
          - name: main
            image: busybox
            command: [/bin/sh]
            args: [-c, {main}]
          - name: web
            image: busybox
            command: [/bin/sh]
            args: [-c, {web}]
            startupProbe:
              tcpSocket:
                port: 8081
              periodSeconds: 1
              failureThreshold: 20
"#,
        main = serde_json::to_string(MAIN_ONCE).unwrap(),
        web = serde_json::to_string(LATE_WEB).unwrap(),
    );
    let out = execute_yaml(&env, &yaml);
    let t = text(&out);
    // Exit 9 (and 1 from runlet) if the main container started before the probe passed.
    assert_eq!(out.status.code(), Some(0), "{t}");
    for want in [
        "[task 0 attempt 0 main] hi-after-probe",
        "[task 0 attempt 0 main] main-done",
    ] {
        assert!(t.contains(want), "want {want:?} in:\n{t}");
    }
    env.assert_nothing_left("js-probe");
    // A probe on the main container is refused before anything runs, naming its path.
    let main_probed = yaml.replacen(
        "            args: [-c, ",
        "            startupProbe: {tcpSocket: {port: 8081}}\n            args: [-c, ",
        1,
    );
    let out = execute_yaml(&env, &main_probed);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(
        t.contains("spec.template.spec.template.spec.containers[0].startupProbe"),
        "{t}"
    );
}

#[test]
fn bad_containers_are_refused_naming_them() {
    let Some(env) = env() else { return };
    let base = ["execute", "js-bad", "--image", "busybox"];
    let table: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--container",
                "a",
                "--image",
                "busybox",
                "--depends-on",
                "b",
                "--container",
                "b",
                "--image",
                "busybox",
                "--depends-on",
                "a",
            ],
            "a dependency cycle among a, b",
        ),
        (
            vec![
                "--container",
                "a",
                "--image",
                "busybox",
                "--depends-on",
                "nope",
            ],
            "container a depends on nope, which is not defined",
        ),
        (
            vec!["--container", "a", "--image", "busybox", "--port", "8080"],
            "no container of a job has a port",
        ),
    ];
    for (extra, want) in table {
        let mut args = base.to_vec();
        args.extend(extra);
        let out = job(&env, &args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: want {want:?} in {t}");
    }
    let mut args = base.to_vec();
    let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    for n in &names {
        args.extend(["--container", n.as_str(), "--image", "busybox"]);
    }
    let out = job(&env, &args);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(t.contains("11 containers: a task has 1 to 10"), "{t}");
}
