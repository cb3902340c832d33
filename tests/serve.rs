//! `runlet serve` and `runlet image` against a real containerd (see tests/common).
// These tests time a separate process (runlet) by the wall clock: std's Instant is right here.
#![allow(clippy::disallowed_types)]

mod common;

use std::time::Duration;

use common::{env, http, probe_env, serve_probe};

#[test]
fn serve_answers_with_the_contract_env_from_a_real_container_and_cleans_up() {
    let Some((env, served)) = serve_probe("walk-env", &["--set-env-vars", "USER_VAR=hello"]) else {
        return;
    };
    let r = served.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json().unwrap();
    let e = &j["env"];
    assert_eq!(e["PORT"], "8080");
    assert_eq!(e["K_SERVICE"], "walk-env");
    assert_eq!(e["K_CONFIGURATION"], "walk-env");
    let rev = e["K_REVISION"].as_str().unwrap();
    assert!(rev.starts_with("walk-env-00001-"), "{rev}");
    assert_eq!(e["USER_VAR"], "hello");
    assert_eq!(
        e["PROBE_IMAGE_ENV"], "from-image",
        "the image's Env is kept"
    );
    // Served from inside a containerd container: containerd lists it, labelled.
    let containers = env.ctr(&["containers", "ls"]);
    assert!(containers.contains("walk-env-00001-"), "{containers}");
    let info = env.ctr(&["containers", "info", j["hostname"].as_str().unwrap()]);
    assert!(
        info.contains("runlet.io/service") && info.contains("walk-env"),
        "{info}"
    );
    // Memory and CPU limits as configured (defaults 512 MiB, 1 vCPU).
    assert_eq!(
        j["cgroup"]["memory_limit"]
            .as_str()
            .map(|s| s.trim().to_string()),
        Some((512u64 << 20).to_string())
    );
    // stdout and stderr arrive separately in runlet's log, tagged with the instance.
    let (status, out) = served.interrupt();
    assert!(status.success(), "runlet exit: {status}\n{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("probe: listening") && l.contains("stream=\"stdout\"")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("probe: stderr check") && l.contains("stream=\"stderr\"")),
        "{out}"
    );
    assert!(
        out.contains("SIGTERM received"),
        "the container got SIGTERM on shutdown:\n{out}"
    );
    env.assert_nothing_left("walk-env");
}

#[test]
fn two_services_both_listen_on_8080_in_their_own_namespaces() {
    let Some((env, a)) = serve_probe("walk-two-a", &[]) else {
        return;
    };
    let b = env.serve_probe("walk-two-b", &[]);
    let ja = a.get("/").json().unwrap();
    let jb = b.get("/").json().unwrap();
    assert_eq!(ja["env"]["K_SERVICE"], "walk-two-a");
    assert_eq!(jb["env"]["K_SERVICE"], "walk-two-b");
    assert_eq!(ja["env"]["PORT"], "8080");
    assert_eq!(jb["env"]["PORT"], "8080");
    let (sa, _) = a.interrupt();
    let (sb, _) = b.interrupt();
    assert!(sa.success() && sb.success());
    env.assert_nothing_left("walk-two-");
}

#[test]
fn command_args_and_a_non_default_port_and_user() {
    let Some(env) = env() else { return };
    env.load("probe-user.oci.tar");
    let served = env.serve(&[
        "--image",
        "probe-user",
        "--service",
        "walk-args",
        "--port",
        "8801",
        "--command",
        "/probe",
        "--args",
        // gcloud's list syntax: `^;^` makes `;` the delimiter, so an item can hold a comma.
        "^;^one,two;three",
    ]);
    let j = served.get("/").json().unwrap();
    assert_eq!(j["env"]["PORT"], "8801");
    assert_eq!(j["argv"], serde_json::json!(["/probe", "one,two", "three"]));
    assert_eq!(j["uid"], 65534, "the image's USER is honoured");
    assert_eq!(j["cwd"], "/tmp", "the image's WorkingDir is honoured");
    drop(served);
}

#[test]
fn docker_and_multi_platform_archives_load_and_serve() {
    let Some(env) = env() else { return };
    let out = env.load("probe.docker.tar");
    assert!(
        out.contains("docker.io/library/probe-docker:latest"),
        "{out}"
    );
    let out = env.load("probe-multi.oci.tar");
    assert!(
        out.contains("docker.io/library/probe-multi:latest"),
        "{out}"
    );
    // Idempotent.
    env.load("probe.docker.tar");
    let ls = env.runlet().args(["image", "ls"]).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(
        ls.contains("docker.io/library/probe-docker:latest")
            && ls.contains("docker.io/library/probe-multi:latest"),
        "{ls}"
    );
    let served = env.serve(&["--image", "probe-docker:latest", "--service", "walk-docker"]);
    assert_eq!(served.get("/").status, 200);
    drop(served);
}

#[test]
fn bad_archives_are_refused_and_leave_nothing_behind() {
    let Some(env) = env() else { return };
    for (archive, needle) in [
        ("truncated.oci.tar", "truncated"),
        ("bad-digest.oci.tar", "does not match its digest"),
        ("arm64-only.oci.tar", "linux/amd64"),
        ("non-utf8.oci.tar", "not UTF-8"),
    ] {
        let out = env
            .runlet()
            .args(["image", "load"])
            .arg(env.archive(archive))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{archive} was accepted");
        assert!(
            err.contains(needle),
            "{archive}: error should mention {needle:?}: {err}"
        );
        // Refused before containerd is even contacted: with no containerd at all, the error
        // is still about the archive, so nothing can have been created.
        let offline = std::process::Command::new(common::runlet_bin())
            .args([
                "--containerd-address",
                "/nonexistent.sock",
                "--no-embedded-containerd",
                "image",
                "load",
            ])
            .arg(env.archive(archive))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&offline.stderr);
        assert!(
            err.contains(needle) && !err.contains("cannot reach containerd"),
            "{archive}: {err}"
        );
    }
    let images = env.ctr(&["images", "ls", "-q"]);
    for name in ["bad-digest", "arm64-only", "non-utf8"] {
        assert!(!images.contains(name), "image {name} was created: {images}");
    }
    let (_, err) = env.run(&["image", "load", "/nonexistent/archive.tar"]);
    assert!(err.contains("/nonexistent/archive.tar"), "{err}");
}

#[test]
fn image_rm_removes_the_image() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let (code, err) = env.run(&["image", "rm", "busybox"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!env
        .ctr(&["images", "ls", "-q"])
        .contains("docker.io/library/busybox:latest"));
    let (code, err) = env.run(&["image", "rm", "busybox"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("docker.io/library/busybox:latest"), "{err}");
}

#[test]
fn serving_an_unknown_image_names_it_and_how_to_load_it() {
    let Some(env) = env() else { return };
    let err = env.serve_fails(&["--image", "never-loaded:v9"]);
    assert!(
        err.contains("docker.io/library/never-loaded:v9") && err.contains("runlet image load"),
        "{err}"
    );
}

#[test]
fn a_container_exiting_at_startup_is_reported_with_its_exit_code() {
    let Some(env) = probe_env() else { return };
    let err = env.serve_fails(&[
        "--image",
        "probe",
        "--service",
        "walk-exit5",
        "--set-env-vars",
        "PROBE_EXIT_CODE=5",
    ]);
    assert!(err.contains("exit code 5"), "{err}");
    env.assert_nothing_left("walk-exit5");
}

#[test]
fn bad_flags_are_refused_with_the_field_name() {
    let Some(env) = env() else { return };
    for (args, field) in [
        (vec!["--memory", "lots"], "--memory"),
        (vec!["--cpu", "99"], "--cpu"),
        (vec!["--concurrency", "0"], "--concurrency"),
        (vec!["--timeout", "4000"], "--timeout"),
        (vec!["--service", "Bad_Name"], "--service"),
        (vec!["--set-env-vars", "PORT=1"], "--set-env-vars"),
    ] {
        let out = env
            .runlet()
            .args(["serve", "--image", "probe"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{args:?}: {err}");
    }
}

#[test]
fn proxied_requests_stream_and_forward_headers() {
    let Some((_, served)) = serve_probe("walk-headers", &[]) else {
        return;
    };
    let r = http(
        served.listen,
        "GET",
        "/",
        &[("X-User-Header", b"kept as is")],
        b"",
    );
    let j = r.json().unwrap();
    let headers: Vec<(String, String)> =
        serde_json::from_value(j["request"]["headers"].clone()).unwrap();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("x-user-header").as_deref(), Some("kept as is"));
    assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert!(get("forwarded")
        .unwrap()
        .starts_with("for=127.0.0.1;proto=http"));
    assert!(get("traceparent").is_some());
    assert_eq!(
        get("host").as_deref(),
        Some(served.listen.to_string().as_str())
    );
    // A header value with a byte >= 0x80 is refused with 400 and never forwarded.
    let bad = http(served.listen, "GET", "/", &[("X-Bad", b"caf\xc3\xa9")], b"");
    assert_eq!(bad.status, 400, "{}", bad.text());
    // Bodies stream both ways.
    let up = http(served.listen, "POST", "/upload", &[], &vec![7u8; 5 << 20]);
    assert_eq!(up.json().unwrap()["received"], 5 << 20);
    let down = served.get("/?bytes=3000000");
    assert_eq!(down.body.len(), 3_000_000);
    drop(served);
}

#[test]
fn a_named_image_user_is_resolved_from_the_images_passwd() {
    use runlet_conformance::imagebuild as ib;
    let Some(env) = env() else { return };
    let probe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-gnu/release/runlet-probe");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("named-user.oci.tar");
    let layer = ib::build_layer(&ib::probe_files(&probe)).unwrap();
    let mut cfg = ib::probe_config();
    cfg.user = Some("nobody".into());
    ib::write_oci_archive(
        &archive,
        "named-user:latest",
        &[layer],
        &cfg,
        &ib::Platform::linux_amd64(),
    )
    .unwrap();
    let out = env
        .runlet()
        .args(["image", "load", "--quiet"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = env.serve(&["--image", "named-user", "--service", "walk-named-user"]);
    let j = served.get("/").json().unwrap();
    assert_eq!(
        j["uid"], 65534,
        "nobody is 65534 in the probe image's /etc/passwd"
    );
    assert_eq!(j["gid"], 65534);
}

#[test]
fn a_serve_killed_between_network_and_container_leaves_nothing_after_the_next_serve() {
    let Some(env) = probe_env() else {
        return;
    };
    let env = env.isolated("serve-crash");
    let _ = std::fs::remove_dir_all(&env.state_dir);
    let name = "crashnet";
    // The test hook aborts `runlet serve` once its first instance's namespace and address
    // exist, before anything else of it: what `kill -9` there would leave.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let out = env
        .runlet()
        .args(["serve", "--listen", &listen, "--metrics-listen", "off"])
        .args(["--image", "probe", "--service", name])
        .env(runlet::control::crash_hook::ENV, "network-attach")
        .output()
        .expect("run runlet serve");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("aborting"), "{:?}: {text}", out.status);
    let ids = common::netns_ids(name);
    assert_eq!(ids.len(), 1, "{ids:?}: {text}");
    let id = &ids[0];
    let before = common::host_traces(id, &env.state_dir);
    for what in ["netns", "address", "dir"] {
        assert!(
            before.iter().any(|t| t.starts_with(what)),
            "the crash should leave the {what}: {before:?}"
        );
    }

    // The next `runlet serve` on the state dir releases them before its first instance.
    let served = env.serve_probe(name, &[]);
    let after = common::host_traces(id, &env.state_dir);
    assert!(after.is_empty(), "left: {after:?}\n{}", served.output());
    env.assert_nothing_left(id);
    assert_eq!(served.get("/").status, 200);
    let (status, output) = served.interrupt();
    assert!(status.success(), "{output}");
    env.assert_nothing_left(&format!("{name}-"));
}

/// `--log-format json`: a container's JSON line is passed through as a structured entry
/// (its severity, message and trace kept), and a request's refusal line carries its trace
/// (from `X-Cloud-Trace-Context`) and an `httpRequest`.
#[test]
fn json_logs_pass_a_containers_structured_line_through_and_trace_requests() {
    let Some(env) = common::probe_env() else {
        return;
    };
    let s = env.serve_probe(
        "logjson",
        &[
            "--log-format",
            "json",
            "--timeout",
            "1",
            "--project",
            "proj-1",
        ],
    );
    let app_line = r#"{"severity":"warning","message":"from the app","logging.googleapis.com/trace":"projects/p/traces/abc","n":7}"#;
    let mut encoded = String::new();
    for b in app_line.bytes() {
        encoded.push_str(&format!("%{b:02X}"));
    }
    assert_eq!(s.get(&format!("/?log={encoded}")).status, 200);
    let trace = "105445aa7843bc8bf206b12000100000";
    let r = http(
        s.listen,
        "GET",
        "/?sleep=3000",
        &[(
            "X-Cloud-Trace-Context",
            format!("{trace}/42;o=1").as_bytes(),
        )],
        b"",
    );
    assert_eq!(r.status, 504);
    let entry = |needle: &str| -> serde_json::Value {
        let mut found = None;
        let seen = common::within(Duration::from_secs(5), || {
            found = s
                .output()
                .lines()
                .find(|l| l.contains(needle) && l.starts_with('{'))
                .map(str::to_string);
            found.is_some()
        });
        assert!(seen, "no JSON line with {needle}:\n{}", s.output());
        serde_json::from_str(&found.unwrap()).expect("one JSON object a line")
    };
    let app = entry("from the app");
    assert_eq!(app["severity"], "WARNING", "{app}");
    assert_eq!(app["message"], "from the app");
    assert_eq!(app["logging.googleapis.com/trace"], "projects/p/traces/abc");
    assert_eq!(app["n"], 7);
    assert!(app["time"].is_string(), "{app}");
    assert!(app["logging.googleapis.com/labels"]["instance"]
        .as_str()
        .unwrap()
        .starts_with("logjson-"));
    let refused = entry("refused");
    assert_eq!(
        refused["logging.googleapis.com/trace"],
        format!("projects/proj-1/traces/{trace}"),
        "{refused}"
    );
    assert_eq!(refused["logging.googleapis.com/spanId"], "42");
    assert_eq!(refused["httpRequest"]["status"], 504);
    assert_eq!(refused["httpRequest"]["requestMethod"], "GET");
    assert_eq!(refused["severity"], "INFO");
}
