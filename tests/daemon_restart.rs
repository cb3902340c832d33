//! The daemon after `kill -9`, and who may touch whose containers, against real containerd:
//! a restarted daemon adopts its running instances (no cold start) and replaces what it
//! cannot adopt leaving nothing orphaned; a `runlet serve` of the same service name leaves
//! the daemon's instances alone; services call each other by URL from inside; and a daemon
//! that died between an instance's network namespace and its container leaves nothing once
//! restarted.

mod common;

use std::time::Duration;

use common::daemon::{fresh_state, probe_service, service_with_image, Daemon, Launch};
use runlet::control::crash_hook;
use serde_json::json;

/// The ids of the containers of service `name` in containerd.
fn containers_of(env: &common::Env, name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    let mut ids: Vec<String> = env
        .ctr(&["containers", "ls", "-q"])
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(String::from)
        .collect();
    ids.sort();
    ids
}

fn kill9(d: &mut Daemon) {
    d.child.kill().expect("SIGKILL the daemon");
    d.child.wait().expect("reap the daemon");
}

#[test]
fn a_killed_daemon_adopts_its_running_instances_without_a_cold_start() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let env = fresh_state(&env, "adopt");
    let mut d = Daemon::start(&env);
    d.deploy("adopt", &probe_service(&[("A", "1")]));
    assert_eq!(d.report("adopt")["env"]["A"], "1");
    let ids = containers_of(&env, "adopt");
    assert_eq!(ids.len(), 1, "{ids:?}");
    kill9(&mut d);
    // The instance keeps running under its shim while no runlet is there.
    assert!(env.ctr(&["tasks", "ls"]).contains(&ids[0]));

    let d2 = Daemon::start(&env);
    assert!(
        common::within(Duration::from_secs(30), || d2.get_via("adopt", "/").status
            == 200),
        "adopt never answered after the restart:\n{}",
        d2.output()
    );
    assert_eq!(
        containers_of(&env, "adopt"),
        ids,
        "the same container serves"
    );
    let out = d2.output();
    assert!(out.contains("adopted a running instance"), "{out}");
    assert!(
        !out.contains("starting the first instance"),
        "no cold start:\n{out}"
    );
    drop(d2);
    env.assert_nothing_left("adopt-");
}

/// Issue 16: an instance with a sidecar is adopted whole (both containers, the same ids);
/// then the sidecar dying ends the adopted instance, which is replaced.
#[test]
fn a_killed_daemon_adopts_an_instance_with_sidecars() {
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "scadopt");
    let mut d = Daemon::start(&env);
    d.deploy(
        "scadopt",
        &json!({"template": {"containers": [
            {"name": "app", "image": "probe", "ports": [{"containerPort": 8080}]},
            {"name": "side", "image": "busybox", "command": ["/bin/sh"],
             "args": ["-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]}
        ]}}),
    );
    assert_eq!(d.get_via("scadopt", "/").status, 200);
    let ids = containers_of(&env, "scadopt");
    assert_eq!(ids.len(), 2, "{ids:?}");
    kill9(&mut d);

    let d2 = Daemon::start(&env);
    assert!(
        common::within(Duration::from_secs(30), || d2
            .get_via("scadopt", "/")
            .status
            == 200),
        "scadopt never answered after the restart:\n{}",
        d2.output()
    );
    assert_eq!(containers_of(&env, "scadopt"), ids, "the same containers");
    let out = d2.output();
    assert!(out.contains("adopted a running instance"), "{out}");
    assert!(
        !out.contains("starting the first instance"),
        "no cold start:\n{out}"
    );
    // The adopted sidecar's exit is watched: it ends the instance, which is replaced.
    let side = ids.iter().find(|i| i.ends_with("-side")).unwrap();
    env.ctr(&["tasks", "kill", "-s", "SIGKILL", side]);
    assert!(
        common::within(Duration::from_secs(60), || {
            // A request starts the replacement (no instance is kept without one).
            let served = d2.get_via("scadopt", "/").status == 200;
            let now = containers_of(&env, "scadopt");
            served && now.len() == 2 && !now.contains(side)
        }),
        "the instance was not replaced:\n{}",
        d2.output()
    );
    assert!(
        d2.output().contains("container side exited"),
        "{}",
        d2.output()
    );
    drop(d2);
    env.assert_nothing_left("scadopt-");
}

#[test]
fn a_killed_daemon_replaces_an_instance_it_cannot_adopt_and_leaves_nothing_orphaned() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let env = fresh_state(&env, "replace");
    let mut d = Daemon::start(&env);
    d.deploy("replace", &probe_service(&[]));
    let ids = containers_of(&env, "replace");
    assert_eq!(ids.len(), 1, "{ids:?}");
    kill9(&mut d);
    // The instance dies while no runlet watches it.
    env.ctr(&["tasks", "kill", "-s", "SIGKILL", &ids[0]]);
    std::thread::sleep(Duration::from_millis(500));

    let d2 = Daemon::start(&env);
    assert!(
        common::within(Duration::from_secs(60), || d2
            .get_via("replace", "/")
            .status
            == 200),
        "replace never answered after the restart:\n{}",
        d2.output()
    );
    let now = containers_of(&env, "replace");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, ids, "a new instance replaced the dead one");
    env.assert_nothing_left(&ids[0]);
    drop(d2);
    env.assert_nothing_left("replace-");
}

#[test]
fn runlet_serve_of_the_same_name_leaves_the_daemons_instances_alone() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let env = fresh_state(&env, "shared");
    let d = Daemon::start(&env);
    d.deploy("shared", &probe_service(&[]));
    let ids = containers_of(&env, "shared");
    assert_eq!(ids.len(), 1);
    {
        let served = env.serve_probe("shared", &[]);
        let mine = containers_of(&env, "shared");
        assert!(
            mine.contains(&ids[0]),
            "serve removed the daemon's instance: {mine:?}"
        );
        assert_eq!(d.get_via("shared", "/").status, 200);
        drop(served);
    }
    assert_eq!(
        containers_of(&env, "shared"),
        ids,
        "serve's stop kept the daemon's instance"
    );
    assert_eq!(d.get_via("shared", "/").status, 200);
}

#[test]
fn services_call_each_other_by_url_from_inside() {
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "s2s");
    let d = Daemon::start(&env);
    d.deploy("callee", &probe_service(&[("WHO", "callee")]));
    // busybox httpd with a CGI script that fetches the other service by its URL.
    let url = format!("http://callee.localhost:{}/", d.listen.port());
    let script = format!(
        "mkdir -p /w/cgi-bin; printf '#!/bin/sh\\necho Content-Type: application/json\\necho\\nwget -qO- {url}\\n' > /w/cgi-bin/f; chmod +x /w/cgi-bin/f; exec httpd -f -p 8080 -h /w"
    );
    let mut caller = service_with_image("busybox", &[]);
    caller["template"]["containers"][0]["command"] = json!(["sh", "-c", script]);
    d.deploy("caller", &caller);
    let r = d.get_via("caller", "/cgi-bin/f");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json().unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    assert_eq!(report["env"]["K_SERVICE"], "callee", "{report}");
    // A service deployed later is named in the caller's running instance too.
    d.deploy("late", &probe_service(&[]));
    let hosts = std::fs::read_dir(env.state_dir.join("instances"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("caller-"))
        .map(|e| std::fs::read_to_string(e.path().join("etc/hosts")).unwrap())
        .next()
        .expect("the caller's instance files");
    assert!(hosts.contains("10.209.0.1\tlate.localhost"), "{hosts}");
}

/// An adopted instance still reaches the metadata server: the restarted daemon's server
/// (on another port) answers it, with the service's identity. Its namespace's DNAT named the
/// killed daemon's port, so without re-routing (`Network::readopt` on adoption) the
/// instance's requests are refused.
#[test]
fn an_adopted_instance_still_reaches_the_metadata_server() {
    let Some(env) = common::probe_env() else {
        return;
    };
    env.load("busybox.oci.tar");
    let env = fresh_state(&env, "adoptmd");
    let mut d = Daemon::start(&env);
    // busybox asks the metadata server every half second and serves the last answer, then
    // a line with the attempt's number (so that a stale answer cannot pass for a new one).
    let md = "http://metadata.google.internal/computeMetadata/v1/project/project-id";
    let script = format!(
        "mkdir -p /w; i=0; while true; do i=$((i+1)); timeout 3 wget -O /w/md.new --header 'Metadata-Flavor: Google' {md} 2>/w/err || cat /w/err > /w/md.new; printf '\\n%s\\n' $i >> /w/md.new; mv /w/md.new /w/md; sleep 0.5; done & exec httpd -f -p 8080 -h /w"
    );
    let mut svc = service_with_image("busybox", &[]);
    svc["template"]["containers"][0]["command"] = json!(["sh", "-c", script]);
    d.deploy("adoptmd", &svc);
    let project = common::daemon::PARENT.split('/').nth(1).unwrap();
    // (the answer, the attempt's number)
    let read = |d: &Daemon| -> (String, u64) {
        let text = d.get_via("adoptmd", "/md").text();
        let text = text.trim();
        let (answer, n) = text.rsplit_once('\n').unwrap_or((text, "0"));
        (answer.trim().to_string(), n.trim().parse().unwrap_or(0))
    };
    let mut last = (String::new(), 0);
    let answered = common::within(Duration::from_secs(10), || {
        last = read(&d);
        last.0 == project
    });
    assert!(answered, "before the restart: {last:?}");
    kill9(&mut d);

    let d2 = Daemon::start(&env);
    let (_, since) = read(&d2);
    let answered = common::within(Duration::from_secs(30), || {
        last = read(&d2);
        last.0 == project && last.1 > since + 1
    });
    assert!(
        answered,
        "after the restart the instance's metadata request gave {last:?} (attempt {since} when the daemon was back):\n{}",
        d2.output()
    );
    let out = d2.output();
    assert!(out.contains("adopted a running instance"), "{out}");
    assert!(!out.contains("starting the first instance"), "{out}");
    drop(d2);
    env.assert_nothing_left("adoptmd-");
}

#[test]
fn a_deletion_cut_short_by_kill_9_is_finished_by_the_restart() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let env = fresh_state(&env, "kill-mid-delete");
    let mut d = Daemon::start(&env);
    let name = "halfdeleted";
    // The instance ignores SIGTERM: its retirement takes the 10 s grace, and the daemon is
    // killed well within it.
    d.deploy(name, &probe_service(&[("PROBE_IGNORE_SIGTERM", "1")]));
    assert_eq!(containers_of(&env, name).len(), 1);
    let op = d.delete(name);
    kill9(&mut d);
    assert_eq!(
        containers_of(&env, name).len(),
        1,
        "the instance outlives the killed daemon"
    );

    let d2 = Daemon::start(&env);
    let done = d2.wait(&op);
    assert!(done.get("error").is_none(), "{done}\n{}", d2.output());
    assert_eq!(done["response"]["name"], common::daemon::service_path(name));
    let r = d2.call("GET", &common::daemon::service_path(name), None);
    assert_eq!(r.status, 404, "the deleted service came back: {}", r.text());
    assert_ne!(d2.get_via(name, "/").status, 200);
    assert!(
        !d2.output().contains("resuming"),
        "the deleted service was rolled out again:\n{}",
        d2.output()
    );
    assert!(
        containers_of(&env, name).is_empty(),
        "{:?}",
        containers_of(&env, name)
    );
    env.assert_nothing_left(&format!("{name}-"));
    // And it stays deleted across another restart.
    drop(d2);
    let d3 = Daemon::start(&env);
    let r = d3.call("GET", &common::daemon::service_path(name), None);
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn every_operation_pending_at_kill_9_completes_with_the_one_rollout() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let env = fresh_state(&env, "kill-mid-update");
    let mut d = Daemon::start(&env);
    let name = "twoupdates";
    d.deploy(name, &probe_service(&[("GEN", "1")]));
    // Generation 2 takes 3 s to listen; generation 3 queues behind it. Both operations
    // are pending when the daemon is killed.
    let slow = d.update(
        name,
        &probe_service(&[("GEN", "2"), ("PROBE_LISTEN_DELAY_MS", "3000")]),
    );
    let queued = d.update(name, &probe_service(&[("GEN", "3")]));
    for op in [&slow, &queued] {
        let now = d.ok("GET", op["name"].as_str().unwrap(), None);
        assert_ne!(now["done"], true, "{now}");
    }
    // Killed once generation 2's container runs (a kill between its network namespace and
    // its container is a_daemon_killed_between_network_and_container_leaves_nothing...).
    let launching = common::within(Duration::from_secs(10), || {
        env.ctr(&["tasks", "ls"])
            .contains(&format!("{name}-00002-"))
    });
    assert!(launching, "generation 2 never started\n{}", d.output());
    kill9(&mut d);

    let d2 = Daemon::start(&env);
    let a = d2.wait_ok(&slow);
    let b = d2.wait_ok(&queued);
    let rev3 = b["latestReadyRevision"].as_str().unwrap().to_string();
    assert!(rev3.contains(&format!("{name}-00003-")), "{b}");
    assert_eq!(a["latestReadyRevision"], rev3.as_str(), "{a}");
    assert_eq!(d2.report(name)["env"]["GEN"], "3");
    let ids = containers_of(&env, name);
    assert_eq!(ids.len(), 1, "only generation 3 runs: {ids:?}");
    assert!(ids[0].starts_with(short_rev(&rev3)), "{ids:?}");
    d2.wait_ok(&d2.delete(name));
    env.assert_nothing_left(&format!("{name}-"));
}

/// The revision id of a revision's full name.
fn short_rev(name: &str) -> &str {
    common::daemon::short(name)
}

#[test]
fn a_daemon_killed_between_network_and_container_leaves_nothing_after_its_restart() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let env = fresh_state(&env, "crash-before-create");
    let name = "halfmade";
    // The test hook aborts the daemon once the first instance's namespace, address and
    // root fs mount exist, before its container does: what `kill -9` there would leave.
    let mut d = Daemon::launch(
        &env,
        Launch {
            env: &[(crash_hook::ENV, "rootfs-mount")],
            ..Launch::default()
        },
    )
    .unwrap_or_else(|f| panic!("runlet daemon did not start: {f:?}"));
    let op = d.create(name, &probe_service(&[]));
    let died = common::within(Duration::from_secs(60), || {
        matches!(d.child.try_wait(), Ok(Some(_)))
    });
    assert!(died, "the hook never aborted the daemon:\n{}", d.output());
    let ids = common::netns_ids(name);
    assert_eq!(ids.len(), 1, "{ids:?}\n{}", d.output());
    let id = &ids[0];
    let before = common::host_traces(id, &env.state_dir);
    for what in ["netns", "address", "mount", "dir"] {
        assert!(
            before.iter().any(|t| t.starts_with(what)),
            "the crash should leave the {what}: {before:?}"
        );
    }
    assert!(containers_of(&env, name).is_empty(), "no container yet");

    // Released while the restarted daemon resumes, before it says it serves.
    let d2 = Daemon::start(&env);
    let after = common::host_traces(id, &env.state_dir);
    assert!(
        after.is_empty(),
        "left after the restart: {after:?}\n{}",
        d2.output()
    );
    env.assert_nothing_left(id);
    // And the interrupted creation completes with a new instance.
    d2.wait_ok(&op);
    assert_eq!(d2.get_via(name, "/").status, 200);
    d2.wait_ok(&d2.delete(name));
    env.assert_nothing_left(&format!("{name}-"));
}
