//! `runlet daemon` end to end against a real containerd (see tests/common): the Admin API v2
//! over REST and gRPC, Host routing, rollouts under load, restarts, the state dir's lock,
//! the API token, and the /etc/hosts block. Each test starts its own daemon on free ports
//! with a state dir of its own, and stops it with SIGTERM whatever happens.
// These tests time a separate process (runlet) by the wall clock, and share samples between
// client threads: std's Instant and Mutex are right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use common::daemon::{
    fresh_state, probe_service, service_path, service_with_image, short, Daemon, Launch, PARENT,
};
use common::{http, probe_env, within};

/// The probe's environment as it reports it.
fn env_of(report: &Value) -> &Value {
    &report["env"]
}

/// Google's error shape: `{"error": {"code": HTTP, "status": NAME, "message": ...}}`; the
/// message.
fn assert_error(r: &common::Response, http: u16, status: &str) -> String {
    assert_eq!(r.status, http, "{}", r.text());
    let j = r.json().unwrap();
    assert_eq!(j["error"]["code"], http, "{j}");
    assert_eq!(j["error"]["status"], status, "{j}");
    j["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_service_is_created_served_updated_listed_and_deleted() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "crud");
    let d = Daemon::start(&env);
    let name = "d-crud";

    let op = d.create(name, &probe_service(&[("USER_VAR", "one")]));
    assert!(
        op["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{PARENT}/operations/")),
        "{op}"
    );
    assert_eq!(
        op["metadata"]["@type"],
        "type.googleapis.com/google.cloud.run.v2.Service"
    );
    let done = d.wait(&op);
    assert_eq!(done["done"], true);
    let svc = &done["response"];
    assert_eq!(
        svc["@type"], "type.googleapis.com/google.cloud.run.v2.Service",
        "{done}"
    );
    assert_eq!(svc["name"], service_path(name));
    assert_eq!(
        svc["uri"],
        format!("http://{name}.localhost:{}", d.listen.port())
    );
    let rev1 = svc["latestReadyRevision"].as_str().unwrap().to_string();
    assert!(
        rev1.starts_with(&format!("{}/revisions/{name}-00001-", service_path(name))),
        "{rev1}"
    );
    assert_eq!(svc["latestCreatedRevision"], rev1.as_str());

    let report = d.report(name);
    assert_eq!(env_of(&report)["K_SERVICE"], name);
    assert_eq!(env_of(&report)["K_REVISION"], short(&rev1));
    assert_eq!(env_of(&report)["USER_VAR"], "one");

    // An update with another value: a new revision serves it.
    let op = d.update(name, &probe_service(&[("USER_VAR", "two")]));
    assert_ne!(op["name"], done["name"], "a new operation");
    let svc = d.wait_ok(&op);
    let rev2 = svc["latestReadyRevision"].as_str().unwrap().to_string();
    assert!(
        rev2.starts_with(&format!("{}/revisions/{name}-00002-", service_path(name))),
        "{rev2}"
    );
    assert_eq!(svc["latestCreatedRevision"], rev2.as_str());
    let report = d.report(name);
    assert_eq!(env_of(&report)["USER_VAR"], "two");
    assert_eq!(env_of(&report)["K_REVISION"], short(&rev2));

    let list = d.ok("GET", &format!("{}/revisions", service_path(name)), None);
    let names: Vec<&str> = list["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [rev2.as_str(), rev1.as_str()], "newest first");
    let one = d.ok("GET", &rev1, None);
    assert_eq!(one["name"], rev1.as_str());

    let got = d.get_service(name);
    assert_eq!(got["latestReadyRevision"], rev2.as_str());
    assert_eq!(got["latestCreatedRevision"], rev2.as_str());
    assert_eq!(got["terminalCondition"]["state"], "CONDITION_SUCCEEDED");
    let etag = got["etag"].as_str().unwrap_or_default();
    assert!(!etag.is_empty(), "{got}");

    let done = d.wait(&d.delete(name));
    assert!(done.get("error").is_none(), "{done}");
    let r = d.call("GET", &service_path(name), None);
    let msg = assert_error(&r, 404, "NOT_FOUND");
    assert!(msg.contains(name), "{msg}");
    env.assert_nothing_left(name);
}

#[test]
fn host_routing_reaches_each_of_several_services_and_404s_unknown_hosts() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "hosts-routing");
    let d = Daemon::start(&env);
    let names = ["d-route-a", "d-route-b", "d-route-c"];
    let ops: Vec<Value> = names
        .iter()
        .map(|n| d.create(n, &probe_service(&[])))
        .collect();
    for op in &ops {
        d.wait_ok(op);
    }
    for n in names {
        assert_eq!(env_of(&d.report(n))["K_SERVICE"], n);
    }
    let r = d.get_via("d-route-x", "/");
    assert_eq!(r.status, 404, "{}", r.text());
    for n in names {
        assert!(r.text().contains(n), "{}", r.text());
    }

    // One keep-alive connection, the Host changing from request to request.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = rt
        .block_on(async {
            let mut c = KeepAlive::connect(d.listen).await?;
            let mut seen = Vec::new();
            for i in 0..9 {
                let n = names[i % names.len()];
                let (status, body) = c.get(&d.host_of(n), "/").await?;
                anyhow::ensure!(status == 200, "{n}: {status}");
                let j: Value = serde_json::from_slice(&body)?;
                seen.push((n, j["env"]["K_SERVICE"].as_str().unwrap_or("").to_string()));
            }
            Ok::<_, anyhow::Error>(seen)
        })
        .unwrap();
    for (asked, answered) in seen {
        assert_eq!(asked, answered);
    }

    for n in names {
        d.wait_ok(&d.delete(n));
        env.assert_nothing_left(n);
    }
}

#[test]
fn errors_come_back_as_cloud_run_returns_them() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "errors");
    let d = Daemon::start(&env);
    let good = "d-err-good";
    let svc = d.deploy(good, &probe_service(&[]));
    let good_rev = svc["latestReadyRevision"].as_str().unwrap().to_string();
    let create_path = |id: &str| format!("{PARENT}/services?serviceId={id}");

    let r = d.call("POST", &create_path(good), Some(&probe_service(&[])));
    let msg = assert_error(&r, 409, "ALREADY_EXISTS");
    assert!(msg.contains(good), "{msg}");

    let r = d.call("POST", &create_path("Bad_Name"), Some(&probe_service(&[])));
    let msg = assert_error(&r, 400, "INVALID_ARGUMENT");
    assert!(msg.contains("service_id"), "{msg}");

    // A missing image: the create is accepted, its operation fails naming the image, and
    // the service says why.
    let missing = "d-err-missing";
    let op = d.create(missing, &service_with_image("no-such-image-a", &[]));
    let done = d.wait(&op);
    let err = done["error"]["message"].as_str().unwrap_or_default();
    assert!(err.contains("no-such-image-a"), "{done}");
    let svc = d.get_service(missing);
    assert_eq!(
        svc["terminalCondition"]["state"], "CONDITION_FAILED",
        "{svc}"
    );
    assert_eq!(svc["terminalCondition"]["message"], err, "{svc}");
    assert_eq!(svc["latestReadyRevision"], Value::Null, "{svc}");
    assert_eq!(d.get_via(missing, "/").status, 404);

    // An update to a missing image fails and leaves the previous revision serving.
    let op = d.update(good, &service_with_image("no-such-image-b", &[]));
    let done = d.wait(&op);
    let err = done["error"]["message"].as_str().unwrap_or_default();
    assert!(err.contains("no-such-image-b"), "{done}");
    assert_eq!(env_of(&d.report(good))["K_REVISION"], short(&good_rev));
    let svc = d.get_service(good);
    assert_eq!(svc["latestReadyRevision"], good_rev.as_str(), "{svc}");
    assert_eq!(
        svc["terminalCondition"]["state"], "CONDITION_FAILED",
        "{svc}"
    );

    // A stale etag is refused, on update and on delete.
    let mut stale = probe_service(&[("X", "y")]);
    stale["etag"] = json!("\"0123456789abcdef0123\"");
    let r = d.call("PATCH", &service_path(good), Some(&stale));
    assert_error(&r, 409, "ABORTED");
    let r = d.call(
        "DELETE",
        &format!("{}?etag=%220123456789abcdef0123%22", service_path(good)),
        None,
    );
    assert_error(&r, 409, "ABORTED");

    // A field runlet cannot honour, and a field the API does not have.
    let mut wd = probe_service(&[]);
    wd["template"]["containers"][0]["workingDir"] = json!("/srv");
    let r = d.call("PATCH", &service_path(good), Some(&wd));
    let msg = assert_error(&r, 400, "INVALID_ARGUMENT");
    assert!(msg.contains("workingDir"), "{msg}");
    let r = d.call("POST", &create_path("d-err-wd"), Some(&wd));
    assert_error(&r, 400, "INVALID_ARGUMENT");
    let mut unknown = probe_service(&[]);
    unknown["template"]["bogusField"] = json!(1);
    let r = d.call("POST", &create_path("d-err-unknown"), Some(&unknown));
    let msg = assert_error(&r, 400, "INVALID_ARGUMENT");
    assert!(msg.contains("bogusField"), "{msg}");

    let r = d.call("GET", &service_path("d-err-nobody"), None);
    assert_error(&r, 404, "NOT_FOUND");
    // Still serving the first revision after all that.
    assert_eq!(env_of(&d.report(good))["K_REVISION"], short(&good_rev));

    // The current etag is accepted.
    let etag = d.get_service(good)["etag"].as_str().unwrap().to_string();
    let etag_q: String = form_urlencoded::byte_serialize(etag.as_bytes()).collect();
    let op = d.ok(
        "DELETE",
        &format!("{}?etag={etag_q}", service_path(good)),
        None,
    );
    d.wait_ok(&op);
    d.wait_ok(&d.delete(missing));
    env.assert_nothing_left(good);
    env.assert_nothing_left(missing);
}

/// What one request of the load saw.
struct Sample {
    sent: Instant,
    revision: String,
}

#[test]
fn a_rollout_under_steady_load_drops_no_request() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "rollout-load");
    let d = Daemon::start(&env);
    let name = "d-load";
    let rev1 = d.deploy(name, &probe_service(&[("GEN", "1")]))["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_string();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let host = d.host_of(name);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, samples, failures, host) = (
                stop.clone(),
                samples.clone(),
                failures.clone(),
                host.clone(),
            );
            let addr = d.listen;
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut c = match KeepAlive::connect(addr).await {
                        Ok(c) => c,
                        Err(e) => {
                            failures.lock().unwrap().push(format!("{e:#}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        match c.get(&host, "/").await {
                            Ok((200, body)) => {
                                let j: Value = serde_json::from_slice(&body).unwrap_or_default();
                                let revision =
                                    j["env"]["K_REVISION"].as_str().unwrap_or("?").to_string();
                                samples.lock().unwrap().push(Sample { sent, revision });
                            }
                            Ok((status, body)) => failures.lock().unwrap().push(format!(
                                "status {status}: {}",
                                String::from_utf8_lossy(&body)
                            )),
                            Err(e) => {
                                failures.lock().unwrap().push(format!("{e:#}"));
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    let count = || samples.lock().unwrap().len();
    assert!(
        within(Duration::from_secs(10), || count() >= 100),
        "the load never got going: {:?}",
        failures.lock().unwrap()
    );
    let t0 = Instant::now();
    let svc = d.wait_ok(&d.update(name, &probe_service(&[("GEN", "2")])));
    let done_at = Instant::now();
    let rev2 = svc["latestReadyRevision"].as_str().unwrap().to_string();
    assert_ne!(rev1, rev2);
    let before_end = count();
    assert!(
        within(Duration::from_secs(10), || count() >= before_end + 200),
        "the load stalled after the rollout"
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        rt.block_on(c).unwrap();
    }

    let failures = failures.lock().unwrap();
    let samples = samples.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during a rollout of {:.1} s: {:?}",
        failures.len(),
        failures.len() + samples.len(),
        (done_at - t0).as_secs_f64(),
        &failures[..failures.len().min(10)]
    );
    let old = samples
        .iter()
        .filter(|s| s.revision == short(&rev1))
        .count();
    assert!(old > 0, "no request reached the first revision");
    let late: Vec<&str> = samples
        .iter()
        .filter(|s| s.sent > done_at)
        .map(|s| s.revision.as_str())
        .collect();
    assert!(
        late.len() >= 200,
        "{} requests after the rollout",
        late.len()
    );
    assert!(
        late.iter().all(|r| *r == short(&rev2)),
        "requests sent after the rollout ended reached another revision than {}: {:?}",
        short(&rev2),
        late.iter()
            .filter(|r| **r != short(&rev2))
            .collect::<BTreeSet<_>>()
    );
    drop(samples);
    d.wait_ok(&d.delete(name));
    env.assert_nothing_left(name);
}

#[test]
fn a_stopped_daemon_brings_every_service_back() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "restart");
    let mut d = Daemon::start(&env);
    let names = ["d-back-a", "d-back-b"];
    let mut before = Vec::new();
    let mut op_names = Vec::new();
    for n in names {
        let op = d.create(n, &probe_service(&[("WHO", n)]));
        op_names.push(op["name"].as_str().unwrap().to_string());
        let svc = d.wait_ok(&op);
        assert_eq!(env_of(&d.report(n))["WHO"], n);
        before.push(svc);
    }

    let status = d.terminate();
    assert!(status.success(), "daemon exit {status}\n{}", d.output());
    for n in names {
        env.assert_nothing_left(n);
    }
    drop(d);

    let d = Daemon::start(&env);
    for (n, svc) in names.iter().zip(&before) {
        let back = within(Duration::from_secs(60), || d.get_via(n, "/").status == 200);
        assert!(back, "{n} did not come back\n{}", d.output());
        let report = d.report(n);
        let rev = svc["latestReadyRevision"].as_str().unwrap();
        assert_eq!(env_of(&report)["K_REVISION"], short(rev));
        assert_eq!(env_of(&report)["WHO"], *n);
        let now = d.get_service(n);
        assert_eq!(now["uid"], svc["uid"]);
        assert_eq!(now["latestReadyRevision"], rev);
        assert_eq!(now["latestCreatedRevision"], rev);
    }
    let ops = d.ok("GET", &format!("{PARENT}/operations"), None);
    let listed: BTreeSet<&str> = ops["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    for op in &op_names {
        assert!(listed.contains(op.as_str()), "{op} not in {listed:?}");
        let o = d.ok("GET", op, None);
        assert_eq!(o["done"], true, "{o}");
        assert!(o.get("error").is_none(), "{o}");
    }
    for n in names {
        d.wait_ok(&d.delete(n));
        env.assert_nothing_left(n);
    }
}

#[test]
fn a_daemon_stopped_mid_rollout_leaves_nothing_and_its_operation_completes() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "stop-mid-rollout");
    let mut d = Daemon::start(&env);
    let name = "d-midway";
    // The first instance takes 3 s to listen: the rollout is still under way at SIGTERM.
    let op = d.create(name, &probe_service(&[("PROBE_LISTEN_DELAY_MS", "3000")]));
    let started = within(Duration::from_secs(10), || {
        env.ctr(&["tasks", "ls"]).contains(name)
    });
    assert!(started, "no instance of {name} started\n{}", d.output());
    let status = d.terminate();
    assert!(status.success(), "daemon exit {status}\n{}", d.output());
    env.assert_nothing_left(name);
    drop(d);

    // The operation is complete (the rollout ran to its end before the daemon stopped, or
    // the restarted daemon finished it), and the service comes back.
    let d = Daemon::start(&env);
    let svc = d.wait_ok(&op);
    assert_eq!(svc["name"], service_path(name));
    let back = within(Duration::from_secs(60), || {
        d.get_via(name, "/").status == 200
    });
    assert!(back, "{name} did not come back\n{}", d.output());
    assert_eq!(env_of(&d.report(name))["K_SERVICE"], name);
    d.wait_ok(&d.delete(name));
    env.assert_nothing_left(name);
}

#[test]
fn sigterm_cancels_a_first_instance_that_never_listens_and_the_restart_retries_it() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "stop-mid-launch");
    let mut d = Daemon::start(&env);
    let name = "d-neverready";
    // The container never listens: its start-up would take the whole 240 s window.
    let op = d.create(name, &probe_service(&[("PROBE_NEVER_LISTEN", "1")]));
    let started = within(Duration::from_secs(10), || {
        env.ctr(&["tasks", "ls"]).contains(name)
    });
    assert!(started, "no instance of {name} started\n{}", d.output());
    let t0 = Instant::now();
    let status = d.terminate();
    let took = t0.elapsed();
    assert!(status.success(), "daemon exit {status}\n{}", d.output());
    assert!(
        took < Duration::from_secs(12),
        "SIGTERM took {took:?}: the launch was waited for\n{}",
        d.output()
    );
    env.assert_nothing_left(name);
    drop(d);

    // The operation was neither failed nor finished: the restarted daemon launches again.
    let mut d = Daemon::start(&env);
    let now = d.ok("GET", op["name"].as_str().unwrap(), None);
    assert_ne!(now["done"], true, "{now}");
    let svc = d.get_service(name);
    assert_eq!(svc["reconciling"], true, "{svc}");
    let retried = within(Duration::from_secs(10), || {
        env.ctr(&["tasks", "ls"]).contains(name)
    });
    assert!(retried, "the rollout was not resumed\n{}", d.output());
    let t0 = Instant::now();
    let status = d.terminate();
    assert!(status.success(), "daemon exit {status}\n{}", d.output());
    assert!(t0.elapsed() < Duration::from_secs(12), "{}", d.output());
    env.assert_nothing_left(name);
}

#[test]
fn a_service_is_also_served_on_its_own_address() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "own-port");
    let mut d = Daemon::start(&env);
    let name = "d-ownport";
    let own: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let with_listen = |addr: &str| {
        let mut s = probe_service(&[("WHO", name)]);
        s["annotations"] = json!({ "runlet.io/listen": addr });
        s
    };
    let closed = |addr: SocketAddr| {
        within(Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_err()
        })
    };
    d.deploy(name, &with_listen(&own.to_string()));
    // Any Host (here none naming a service) reaches the service on its own address.
    let r = http(own, "GET", "/", &[("Host", b"example.com")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env_of(&r.json().unwrap())["K_SERVICE"], name);
    // Host routing on the shared ingress still works.
    assert_eq!(env_of(&d.report(name))["WHO"], name);

    // Refusals at the door.
    let path = format!("{PARENT}/services?serviceId=d-ownport-b");
    let r = d.call("POST", &path, Some(&with_listen("nowhere")));
    let msg = assert_error(&r, 400, "INVALID_ARGUMENT");
    assert!(
        msg.contains("service.annotations[\"runlet.io/listen\"]"),
        "{msg}"
    );
    let r = d.call("POST", &path, Some(&with_listen(&own.to_string())));
    let msg = assert_error(&r, 400, "FAILED_PRECONDITION");
    assert!(msg.contains(&own.to_string()), "{msg}");
    assert!(msg.contains(&service_path(name)), "{msg}");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().to_string();
    let r = d.call("POST", &path, Some(&with_listen(&busy)));
    let msg = assert_error(&r, 400, "FAILED_PRECONDITION");
    assert!(msg.contains(&busy), "{msg}");
    let r = d.call("POST", &path, Some(&with_listen(&d.listen.to_string())));
    assert_error(&r, 400, "FAILED_PRECONDITION");
    assert_error(
        &d.call("GET", &service_path("d-ownport-b"), None),
        404,
        "NOT_FOUND",
    );

    // Back after a restart.
    assert!(d.terminate().success(), "{}", d.output());
    assert!(closed(own));
    drop(d);
    let d = Daemon::start(&env);
    let back = within(Duration::from_secs(60), || {
        http(own, "GET", "/", &[], b"").status == 200
    });
    assert!(back, "{own} did not come back\n{}", d.output());

    // Moved by an update, gone when the annotation is removed.
    let moved: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    d.wait_ok(&d.update(name, &with_listen(&moved.to_string())));
    assert!(closed(own), "{own} still open after the move");
    let r = http(moved, "GET", "/", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    d.wait_ok(&d.update(name, &probe_service(&[("WHO", name)])));
    assert!(closed(moved), "{moved} still open without the annotation");
    assert_eq!(env_of(&d.report(name))["WHO"], name);

    // Closed by the deletion.
    d.wait_ok(&d.update(name, &with_listen(&own.to_string())));
    assert_eq!(http(own, "GET", "/", &[], b"").status, 200);
    d.wait_ok(&d.delete(name));
    assert!(closed(own), "{own} still open after the deletion");
    env.assert_nothing_left(name);
}

#[test]
fn a_daemon_stopped_mid_deletion_finishes_it_first() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "stop-mid-delete");
    let mut d = Daemon::start(&env);
    let name = "d-halfgone";
    // The instance takes 2 s to exit after SIGTERM: the deletion is under way at SIGTERM.
    d.deploy(
        name,
        &probe_service(&[("PROBE_SIGTERM_EXIT_DELAY_MS", "2000")]),
    );
    let op = d.delete(name);
    let status = d.terminate();
    assert!(status.success(), "daemon exit {status}\n{}", d.output());
    env.assert_nothing_left(name);
    drop(d);

    let d = Daemon::start(&env);
    let done = d.ok("GET", op["name"].as_str().unwrap(), None);
    assert_eq!(done["done"], true, "{done}");
    assert!(done.get("error").is_none(), "{done}");
    assert_error(&d.call("GET", &service_path(name), None), 404, "NOT_FOUND");
    let list = d.ok("GET", &format!("{PARENT}/services"), None);
    assert_eq!(list.get("services"), None, "{list}");
}

#[test]
fn an_update_queued_behind_a_rollout_is_deployed_after_a_restart() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "queued-update");
    let mut d = Daemon::start(&env);
    let name = "d-queued";
    d.deploy(name, &probe_service(&[("GEN", "1")]));
    // Generation 2 takes 3 s to listen; generation 3 waits for it.
    let slow = d.update(
        name,
        &probe_service(&[("GEN", "2"), ("PROBE_LISTEN_DELAY_MS", "3000")]),
    );
    let queued = d.update(name, &probe_service(&[("GEN", "3")]));
    let status = d.terminate();
    assert!(status.success(), "daemon exit {status}\n{}", d.output());
    env.assert_nothing_left(name);
    drop(d);

    let d = Daemon::start(&env);
    d.wait_ok(&slow);
    let svc = d.wait_ok(&queued);
    let rev3 = svc["latestReadyRevision"].as_str().unwrap().to_string();
    assert!(rev3.contains(&format!("{name}-00003-")), "{svc}");
    let serving = within(Duration::from_secs(60), || {
        let r = d.get_via(name, "/");
        r.status == 200 && r.json().unwrap()["env"]["GEN"] == "3"
    });
    assert!(serving, "generation 3 is not served\n{}", d.output());
    let now = d.get_service(name);
    assert_eq!(now["latestReadyRevision"], rev3.as_str(), "{now}");
    assert_eq!(now["reconciling"], Value::Null, "{now}");
    d.wait_ok(&d.delete(name));
    env.assert_nothing_left(name);
}

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses_naming_the_first() {
    let Some(env) = common::env() else { return };
    let env = fresh_state(&env, "lock");
    let first = Daemon::start(&env);
    let second = Daemon::launch(&env, Launch::default())
        .err()
        .expect("a second daemon on the same state dir must not start");
    assert!(matches!(second.code, Some(c) if c != 0), "{second:?}");
    assert!(
        second.output.contains(&format!("pid {}", first.pid())),
        "{second:?}"
    );
    // The first is untouched.
    first.ok("GET", &format!("{PARENT}/services"), None);
}

#[test]
fn non_loopback_api_listen_needs_a_token() {
    let Some(env) = common::env() else { return };
    let env = fresh_state(&env, "token");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let api = format!("0.0.0.0:{}", common::free_port());
    let (code, err) = env.run(&[
        "daemon",
        "--listen",
        &listen,
        "--api-listen",
        &api,
        "--metrics-listen",
        "off",
        "--no-manage-hosts",
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--api-listen"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let token_arg = token_file.to_str().unwrap();
    let mut d = Daemon::launch(
        &env,
        Launch {
            api_listen: Some(api),
            extra: &["--api-token-file", token_arg],
            ..Launch::default()
        },
    )
    .unwrap();
    let list = format!("{PARENT}/services");
    let r = d.call("GET", &list, None);
    let msg = assert_error(&r, 401, "UNAUTHENTICATED");
    assert!(msg.contains("Bearer"), "{msg}");
    d.token = Some("wrong".into());
    assert_error(&d.call("GET", &list, None), 401, "UNAUTHENTICATED");
    d.token = Some("s3cret-token".into());
    d.ok("GET", &list, None);
}

/// Puts /etc/hosts back as it was when dropped.
struct RestoreHosts(Vec<u8>);

impl Drop for RestoreHosts {
    fn drop(&mut self) {
        if std::fs::read("/etc/hosts").ok().as_deref() != Some(&self.0[..]) {
            let _ = std::fs::write("/etc/hosts", &self.0);
        }
    }
}

fn getent(name: &str) -> String {
    let out = std::process::Command::new("getent")
        .args(["hosts", name])
        .output()
        .expect("run getent");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn service_names_resolve_through_etc_hosts() {
    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "etc-hosts");
    let saved = std::fs::read("/etc/hosts").expect("read /etc/hosts");
    let _restore = RestoreHosts(saved.clone());
    let mut d = Daemon::launch(
        &env,
        Launch {
            manage_hosts: true,
            ..Launch::default()
        },
    )
    .unwrap();
    let (a, b) = ("d-hosts-a", "d-hosts-b");
    d.deploy(a, &probe_service(&[]));
    d.deploy(b, &probe_service(&[]));
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(hosts.contains("# BEGIN runlet"), "{hosts}");
    for n in [a, b] {
        let line = format!("127.0.0.1 {n}.localhost");
        assert!(hosts.lines().any(|l| l == line), "{hosts}");
        let resolved = getent(&format!("{n}.localhost"));
        assert!(resolved.starts_with("127.0.0.1"), "getent: {resolved:?}");
    }

    // By the URL the service reports, resolved by the system resolver.
    let uri = d.get_service(a)["uri"].as_str().unwrap().to_string();
    let authority = uri.strip_prefix("http://").unwrap();
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .unwrap()
        .find(|a| a.is_ipv4())
        .unwrap();
    let r = http(addr, "GET", "/", &[("Host", authority.as_bytes())], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["env"]["K_SERVICE"], a);

    d.wait_ok(&d.delete(a));
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(!hosts.contains(&format!("{a}.localhost")), "{hosts}");
    assert!(
        hosts.contains(&format!("127.0.0.1 {b}.localhost")),
        "{hosts}"
    );
    assert_eq!(getent(&format!("{a}.localhost")), "");

    let status = d.terminate();
    assert!(status.success(), "{status}\n{}", d.output());
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    // The daemon's block is gone; `runlet setup gcloud`'s own block (`runlet`,
    // `R-runlet`), which the gcloud tests leave on this machine, is not the daemon's.
    assert!(!hosts.contains("managed by runlet daemon"), "{hosts}");
    assert!(!hosts.contains(&format!("{b}.localhost")), "{hosts}");
    for line in String::from_utf8_lossy(&saved).lines() {
        assert!(hosts.lines().any(|l| l == line), "{line:?} lost: {hosts}");
    }
    env.assert_nothing_left(a);
    env.assert_nothing_left(b);
}

#[test]
fn the_grpc_api_creates_waits_gets_and_deletes_on_the_rest_port() {
    use runlet::pb::longrunning::operation::Result as OpResult;
    use runlet::pb::longrunning::operations_client::OperationsClient;
    use runlet::pb::longrunning::{Operation, WaitOperationRequest};
    use runlet::pb::run_v2::services_client::ServicesClient;
    use runlet::pb::run_v2::{self as v2, env_var};

    let Some(env) = probe_env() else { return };
    let env = fresh_state(&env, "grpc");
    let d = Daemon::start(&env);
    let name = "d-grpc";
    let full = service_path(name);
    let endpoint = format!("http://{}", d.api);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (svc, report) = rt.block_on(async {
        let mut services = ServicesClient::connect(endpoint.clone()).await.unwrap();
        let ops = OperationsClient::connect(endpoint).await.unwrap();
        let wait = |op: Operation| {
            let mut ops = ops.clone();
            async move {
                let mut op = op;
                for _ in 0..4 {
                    if op.done {
                        break;
                    }
                    op = ops
                        .wait_operation(WaitOperationRequest {
                            name: op.name.clone(),
                            timeout: Some(pbjson_types::Duration {
                                seconds: 30,
                                nanos: 0,
                            }),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                }
                assert!(op.done, "{} not done", op.name);
                op
            }
        };
        let op = services
            .create_service(v2::CreateServiceRequest {
                parent: PARENT.into(),
                service_id: name.into(),
                service: Some(v2::Service {
                    template: Some(v2::RevisionTemplate {
                        containers: vec![v2::Container {
                            image: "probe".into(),
                            env: vec![v2::EnvVar {
                                name: "VIA".into(),
                                values: Some(env_var::Values::Value("grpc".into())),
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                validate_only: false,
            })
            .await
            .unwrap()
            .into_inner();
        let op = wait(op).await;
        let created = match op.result {
            Some(OpResult::Response(any)) => any.unpack::<v2::Service>().unwrap(),
            other => panic!("create failed: {other:?}"),
        };
        assert_eq!(created.name, full);
        let got = services
            .get_service(v2::GetServiceRequest { name: full.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.uid, created.uid);
        assert_eq!(got.latest_ready_revision, created.latest_ready_revision);
        // Served through the ingress while the gRPC calls go on.
        let report = tokio::task::spawn_blocking({
            let (listen, host) = (d.listen, d.host_of(name));
            move || http(listen, "GET", "/", &[("Host", host.as_bytes())], b"")
        })
        .await
        .unwrap();

        let op = services
            .delete_service(v2::DeleteServiceRequest {
                name: full.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let op = wait(op).await;
        assert!(
            matches!(op.result, Some(OpResult::Response(_))),
            "{:?}",
            op.result
        );
        let missing = services
            .get_service(v2::GetServiceRequest { name: full.clone() })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
        assert!(missing.message().contains(name), "{missing:?}");
        (got, report)
    });
    assert_eq!(report.status, 200, "{}", report.text());
    let j = report.json().unwrap();
    assert_eq!(j["env"]["VIA"], "grpc");
    assert_eq!(j["env"]["K_REVISION"], short(&svc.latest_ready_revision));
    env.assert_nothing_left(name);
}

/// An HTTP/1.1 client connection that stays open across requests.
struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl KeepAlive {
    async fn connect(addr: SocketAddr) -> Result<KeepAlive> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(conn);
        Ok(KeepAlive { sender })
    }

    /// `GET path` with `Host: host`; the status and the body.
    async fn get(&mut self, host: &str, path: &str) -> Result<(u16, Vec<u8>)> {
        self.sender.ready().await.context("connection not ready")?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .body(Empty::<Bytes>::new())?;
        let resp = tokio::time::timeout(Duration::from_secs(30), async {
            let resp = self.sender.send_request(req).await.context("request")?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.context("body")?.to_bytes();
            Ok::<_, anyhow::Error>((status, body.to_vec()))
        })
        .await
        .context("no response within 30 s")??;
        Ok(resp)
    }
}
