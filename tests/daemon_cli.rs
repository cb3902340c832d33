//! The daemon's CLI clients (`runlet deploy`, `services`, `revisions`, `status`) against a
//! real `runlet daemon` on a real containerd (see tests/common): deploy, answer by Host,
//! redeploy, list, describe, delete, and the failures a user meets (a missing image, the
//! daemon down).
// These tests drive separate processes by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http, probe_env, Env, Lines};

/// A `runlet daemon` on an isolated state dir, stopped with SIGTERM when dropped.
struct Daemon {
    child: Child,
    output: Lines,
    ingress: u16,
    api: u16,
}

impl Daemon {
    fn start(env: &Env) -> Daemon {
        let (ingress, api) = (free_port(), free_port());
        let mut child = env
            .runlet()
            .arg("daemon")
            .args(["--listen", &format!("127.0.0.1:{ingress}")])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--metrics-listen", "off", "--no-manage-hosts"])
            .env("RUNLET_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn runlet daemon");
        let output = Lines::new();
        output.read_in_thread(child.stdout.take().expect("piped"));
        output.read_in_thread(child.stderr.take().expect("piped"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !output.text().contains("runlet daemon: services at") {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("runlet daemon exited with {st}:\n{}", output.text());
            }
            assert!(
                Instant::now() < deadline,
                "runlet daemon not ready after 60 s:\n{}",
                output.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            output,
            ingress,
            api,
        }
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after 60 s); returns its output.
    fn stop(&mut self) -> String {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.output.text()
    }

    /// `GET /` of service `service` through the ingress, by Host.
    fn get(&self, service: &str) -> common::Response {
        let host = format!("{service}.localhost:{}", self.ingress);
        http(
            format!("127.0.0.1:{}", self.ingress).parse().unwrap(),
            "GET",
            "/",
            &[("Host", host.as_bytes())],
            b"",
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `runlet ARGS` (the test's containerd and state dir) to its end.
fn runlet(env: &Env, args: &[&str]) -> Output {
    env.runlet()
        .args(args)
        .env_remove("RUNLET_API")
        .env_remove("RUNLET_API_TOKEN")
        .output()
        .expect("run runlet")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `runlet ARGS`, which must succeed; returns its stdout.
fn ok(env: &Env, args: &[&str]) -> String {
    let o = runlet(env, args);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "runlet {args:?}: {}\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    out
}

#[test]
fn deploy_list_describe_delete_through_the_daemon() {
    let Some(shared) = probe_env() else {
        return;
    };
    let env = shared.isolated("daemon-cli");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    let mut daemon = Daemon::start(&env);
    let url = format!("http://cli-hello.localhost:{}", daemon.ingress);

    // Create.
    let out = ok(
        &env,
        &[
            "deploy",
            "cli-hello",
            "--image",
            "probe",
            "--set-env-vars",
            "A=1",
        ],
    );
    assert!(
        out.starts_with("Deploying container to Cloud Run service [cli-hello] in project [local] region [local]\n"),
        "{out}"
    );
    assert!(out.contains("✓ Deploying new service... Done."), "{out}");
    assert!(out.contains(&format!("Service URL: {url}\n")), "{out}");
    let r = daemon.get("cli-hello");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json().unwrap();
    assert_eq!(j["env"]["A"], "1", "{j}");
    let first = j["env"]["K_REVISION"].as_str().unwrap().to_string();
    assert!(
        out.contains(&format!("revision [{first}] has been deployed")),
        "{out}"
    );

    // Update: a new revision answers, on Host routing and on the service's own address.
    let own = format!("127.0.0.1:{}", common::free_port());
    let out = ok(
        &env,
        &[
            "deploy",
            "cli-hello",
            "--image",
            "probe",
            "--set-env-vars",
            "A=2",
            "--listen",
            &own,
        ],
    );
    assert!(out.contains("✓ Deploying... Done."), "{out}");
    let j = daemon.get("cli-hello").json().unwrap();
    assert_eq!(j["env"]["A"], "2", "{j}");
    let r = common::http(own.parse().unwrap(), "GET", "/", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["env"]["K_SERVICE"], "cli-hello");
    let second = j["env"]["K_REVISION"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert!(second.starts_with("cli-hello-00002-"), "{second}");

    // Lists, over the Unix socket and over TCP.
    let list = ok(&env, &["services", "list"]);
    assert!(list.starts_with("   SERVICE"), "{list}");
    let row = list
        .lines()
        .find(|l| l.contains("cli-hello"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.starts_with('✔') && row.contains(&url), "{list}");
    let api = format!("127.0.0.1:{}", daemon.api);
    let over_tcp = ok(&env, &["services", "list", "--api", &api]);
    assert!(over_tcp.contains("cli-hello"), "{over_tcp}");

    let json = ok(
        &env,
        &["services", "describe", "cli-hello", "--format", "json"],
    );
    let svc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(svc["uri"], url.as_str(), "{json}");
    assert!(
        svc["latestReadyRevision"]
            .as_str()
            .unwrap()
            .ends_with(&second),
        "{json}"
    );
    let yaml = ok(
        &env,
        &["services", "describe", "cli-hello", "--format", "yaml"],
    );
    assert!(yaml.contains(&format!("uri: {url}")), "{yaml}");
    let summary = ok(&env, &["services", "describe", "cli-hello"]);
    assert!(
        summary.starts_with("✔ Service cli-hello in region local"),
        "{summary}"
    );
    assert!(summary.contains(&format!("Revision {second}")), "{summary}");

    let revs = ok(&env, &["revisions", "list", "--service", "cli-hello"]);
    let rows: Vec<&str> = revs.lines().filter(|l| l.contains("cli-hello-0")).collect();
    assert_eq!(rows.len(), 2, "{revs}");
    assert!(
        rows.iter()
            .any(|r| r.contains(&second) && r.contains(" yes ")),
        "the serving revision is active:\n{revs}"
    );

    let status = ok(&env, &["status"]);
    assert!(status.contains("Daemon:      running (pid"), "{status}");
    assert!(status.contains("containerd:  reachable"), "{status}");
    assert!(status.contains(&url), "{status}");

    // A missing image: the deployment fails naming it, and the service says why.
    let o = runlet(
        &env,
        &["deploy", "cli-missing", "--image", "not-loaded-anywhere:v9"],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("Deployment failed"), "{out}");
    assert!(
        err.contains("not-loaded-anywhere"),
        "the error names the image:\n{err}"
    );
    // Bad flags never reach the daemon.
    let o = runlet(
        &env,
        &["deploy", "cli-bad", "--image", "probe", "--cpu", "99"],
    );
    assert_eq!(o.status.code(), Some(64), "{:?}", text(&o));
    assert!(text(&o).1.contains("--cpu"), "{:?}", text(&o));
    let o = runlet(
        &env,
        &["deploy", "cli-bad", "--image", "probe", "--listen", "9001"],
    );
    assert_eq!(o.status.code(), Some(64), "{:?}", text(&o));
    assert!(text(&o).1.contains("--listen"), "{:?}", text(&o));

    // Delete: nothing of the service is left.
    let out = ok(&env, &["services", "delete", "cli-hello"]);
    assert_eq!(out, "Deleted service [cli-hello].\n");
    ok(&env, &["services", "delete", "cli-missing"]);
    env.assert_nothing_left("cli-hello");
    env.assert_nothing_left("cli-missing");
    let o = runlet(&env, &["services", "describe", "cli-hello"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("not found"), "{:?}", text(&o));

    // The daemon down: status says so and exits 1, and the other commands say how.
    let log = daemon.stop();
    assert!(daemon.child.try_wait().unwrap().is_some(), "{log}");
    let o = runlet(&env, &["status"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("Daemon:      not running"), "{out}");
    let o = runlet(&env, &["services", "list"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot reach the runlet daemon at unix:")
            && err.contains("is `runlet daemon` running?"),
        "{err}"
    );
}

/// `runlet deploy --container` (issue 16): the groups `runlet serve` takes become the
/// template's containers; the ingress container (busybox) fetches the sidecar's report from
/// localhost at its start, which works only if the sidecar (the probe, listening 1.5 s late)
/// passed its startup probe first, and serves it on `$PORT`.
#[test]
fn deploy_with_sidecars_through_the_daemon() {
    let Some(shared) = probe_env() else {
        return;
    };
    shared.load("busybox.oci.tar");
    let env = shared.isolated("daemon-cli-sidecars");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    let daemon = Daemon::start(&env);
    let ingress = "busybox mkdir -p /www \
        && wget -q -O /www/index.html http://127.0.0.1:8080/ || exit 3; \
        exec httpd -f -p $PORT -h /www";
    let args = format!("^@^-c@{ingress}");
    ok(
        &env,
        &[
            "deploy",
            "cli-sidecars",
            "--container",
            "app",
            "--image",
            "busybox",
            "--port",
            "8081",
            "--command",
            "/bin/sh",
            "--args",
            &args,
            "--depends-on",
            "report",
            "--container",
            "report",
            "--image",
            "probe",
            "--set-env-vars",
            "PROBE_LISTEN_DELAY_MS=1500",
            "--startup-probe",
            "tcpSocket.port=8080,periodSeconds=1,failureThreshold=20",
        ],
    );
    let r = daemon.get("cli-sidecars");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.output.text());
    let j = r.json().unwrap();
    assert!(j["env"].get("PORT").is_none(), "a sidecar has no PORT: {j}");
    assert_eq!(j["env"]["K_SERVICE"], "cli-sidecars", "{j}");
    let ids = env.ctr(&["containers", "ls", "-q"]);
    let ours = ids
        .lines()
        .filter(|l| l.starts_with("cli-sidecars-"))
        .count();
    assert_eq!(ours, 2, "{ids}");
    // Refused before the daemon: no container has a port.
    let o = runlet(
        &env,
        &[
            "deploy",
            "cli-sidecars-bad",
            "--container",
            "a",
            "--image",
            "probe",
            "--container",
            "b",
            "--image",
            "busybox",
        ],
    );
    assert_eq!(o.status.code(), Some(64), "{:?}", text(&o));
    assert!(text(&o).1.contains("--port"), "{:?}", text(&o));
    ok(&env, &["services", "delete", "cli-sidecars"]);
    env.assert_nothing_left("cli-sidecars");
}

/// gcloud's environment flags on `runlet deploy` (issue 16): `--update-env-vars` and
/// `--remove-env-vars` change the current revision's variables, `--env-vars-file` and
/// `--clear-env-vars` replace them, and two of the group together are refused before the
/// daemon is called.
#[test]
fn deploy_env_var_flags_change_the_current_revision() {
    let Some(shared) = probe_env() else {
        return;
    };
    let env = shared.isolated("daemon-cli-env");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    std::fs::create_dir_all(&env.state_dir).unwrap();
    let daemon = Daemon::start(&env);
    let vars = |names: &[&str]| -> Vec<(String, String)> {
        let j = daemon.get("cli-env").json().unwrap();
        names
            .iter()
            .filter_map(|n| j["env"][n].as_str().map(|v| (n.to_string(), v.to_string())))
            .collect()
    };
    let all = ["A", "B", "C", "D", "E", "F"];
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let deploy = |more: &[&str]| {
        let mut args = vec!["deploy", "cli-env", "--image", "probe"];
        args.extend_from_slice(more);
        ok(&env, &args)
    };
    deploy(&["--set-env-vars", "A=1,B=2,C=3"]);
    assert_eq!(vars(&all), pairs(&[("A", "1"), ("B", "2"), ("C", "3")]));
    deploy(&["--remove-env-vars", "A", "--update-env-vars", "B=two,D=4"]);
    assert_eq!(vars(&all), pairs(&[("B", "two"), ("C", "3"), ("D", "4")]));
    let file = env.state_dir.join("env.yaml");
    std::fs::write(&file, "E: \"5\"\nF: 'x,y'\n").unwrap();
    deploy(&["--env-vars-file", file.to_str().unwrap()]);
    assert_eq!(vars(&all), pairs(&[("E", "5"), ("F", "x,y")]));
    deploy(&["--clear-env-vars"]);
    assert_eq!(vars(&all), vec![]);

    // Refused before the daemon is called, naming the flags (exit 64).
    std::fs::write(&file, "E: 5\n").unwrap();
    for (args, needle) in [
        (
            vec!["--set-env-vars", "A=1", "--clear-env-vars"],
            "invalid --set-env-vars: at most one of these can be given: --set-env-vars, --clear-env-vars",
        ),
        (
            vec!["--env-vars-file", file.to_str().unwrap()],
            "environment variable values must be strings",
        ),
        (vec!["--update-env-vars", "PORT=1"], "PORT is reserved"),
    ] {
        let mut all_args = vec!["deploy", "cli-env", "--image", "probe"];
        all_args.extend_from_slice(&args);
        let o = runlet(&env, &all_args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {:?}", text(&o));
        assert!(text(&o).1.contains(needle), "{args:?}: {:?}", text(&o));
    }
    ok(&env, &["services", "delete", "cli-env"]);
    env.assert_nothing_left("cli-env");
}
