//! A `runlet daemon` under test: started as a child process on free ports with a state dir
//! of its own, talked to over REST (the Admin API's HTTP/JSON mapping) and through its
//! ingress, and always stopped with SIGTERM (SIGKILL after 30 s) when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, http, Env, Lines, Response};

/// The parent every test's resources live under.
pub const PARENT: &str = "projects/runlet-test/locations/local";

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    /// The ingress (`--listen`).
    pub listen: SocketAddr,
    /// The Admin API (`--api-listen`); 127.0.0.1 with the daemon's port when it listens on
    /// a wildcard address.
    pub api: SocketAddr,
    pub state_dir: PathBuf,
    pub output: Lines,
    /// `Authorization: Bearer` sent with every API call, when set.
    pub token: Option<String>,
}

/// How to start one.
#[derive(Default)]
pub struct Launch<'a> {
    /// `--api-listen`; a free loopback port when `None`.
    pub api_listen: Option<String>,
    /// `--no-manage-hosts` unless true.
    pub manage_hosts: bool,
    pub extra: &'a [&'a str],
    /// Environment variables set for it (a test hook's).
    pub env: &'a [(&'a str, &'a str)],
}

/// A daemon that ended before it said it was serving: its exit code and output.
#[derive(Debug)]
pub struct Failed {
    pub code: Option<i32>,
    pub output: String,
}

impl Daemon {
    /// `runlet daemon` on `env`'s state dir, hosts not managed; panics if it does not start.
    pub fn start(env: &Env) -> Daemon {
        Daemon::launch(env, Launch::default())
            .unwrap_or_else(|f| panic!("runlet daemon did not start: {f:?}"))
    }

    /// Starts it and waits (60 s at most) until it prints `runlet daemon:`.
    pub fn launch(env: &Env, how: Launch) -> Result<Daemon, Failed> {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let api_listen = how
            .api_listen
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let api_port: u16 = api_listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0);
        let mut cmd = env.runlet();
        cmd.arg("daemon")
            .args(["--listen", &listen.to_string()])
            .args(["--api-listen", &api_listen])
            .args(["--metrics-listen", "off"]);
        if !how.manage_hosts {
            cmd.arg("--no-manage-hosts");
        }
        cmd.args(how.extra)
            .envs(how.env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUNLET_LOG", "info")
            .env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn runlet daemon");
        let output = Lines::new();
        output.read_in_thread(child.stdout.take().expect("piped stdout"));
        output.read_in_thread(child.stderr.take().expect("piped stderr"));
        let mut d = Daemon {
            child,
            listen,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            state_dir: env.state_dir.clone(),
            output,
            token: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if d.output.text().contains("runlet daemon:") {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                // The reading threads may trail the exit by a moment.
                std::thread::sleep(Duration::from_millis(200));
                return Err(Failed {
                    code: status.code(),
                    output: d.output.text(),
                });
            }
            if Instant::now() > deadline {
                let output = d.output.text();
                drop(d);
                return Err(Failed { code: None, output });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `runlet ARGS --api ADDR --project runlet-test` against this daemon: (exit code,
    /// stdout, stderr). With `--container` groups, the API flags go before the first (after
    /// it they would be the group's, which refuses them).
    pub fn cli(&self, env: &Env, args: &[&str]) -> (Option<i32>, String, String) {
        let at = args
            .iter()
            .position(|a| *a == "--container" || a.starts_with("--container="))
            .unwrap_or(args.len());
        let out = env
            .runlet()
            .args(&args[..at])
            .args(["--api", &self.api.to_string(), "--project", "runlet-test"])
            .args(&args[at..])
            .output()
            .expect("run runlet");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`Daemon::cli`] that must succeed (else the test fails showing the daemon's output):
    /// (stdout, stderr).
    pub fn cli_ok(&self, env: &Env, args: &[&str]) -> (String, String) {
        let (code, out, err) = self.cli(env, args);
        assert_eq!(
            code,
            Some(0),
            "runlet {args:?}: {out}{err}\n--- daemon ---\n{}",
            self.output()
        );
        (out, err)
    }

    pub fn output(&self) -> String {
        self.output.text()
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after 30 s).
    pub fn terminate(&mut self) -> ExitStatus {
        if let Ok(Some(st)) = self.child.try_wait() {
            return st;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("wait for runlet daemon");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One REST call: `method` on `/v2/PATH`, with a JSON body if given.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &[u8])> = vec![("Content-Type", b"application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_bytes()));
        }
        http(
            self.api,
            method,
            &format!("/v2/{path}"),
            &headers,
            body.as_bytes(),
        )
    }

    /// A REST call that must answer 200; its JSON.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self.call(method, path, body);
        assert_eq!(r.status, 200, "{method} /v2/{path}: {}", r.text());
        r.json().unwrap()
    }

    /// `POST PARENT/services?serviceId=NAME`; the operation it returns.
    pub fn create(&self, name: &str, service: &Value) -> Value {
        self.ok(
            "POST",
            &format!("{PARENT}/services?serviceId={name}"),
            Some(service),
        )
    }

    /// `PATCH PARENT/services/NAME`; the operation it returns.
    pub fn update(&self, name: &str, service: &Value) -> Value {
        self.ok("PATCH", &service_path(name), Some(service))
    }

    /// `DELETE PARENT/services/NAME`; the operation it returns.
    pub fn delete(&self, name: &str) -> Value {
        self.ok("DELETE", &service_path(name), None)
    }

    pub fn get_service(&self, name: &str) -> Value {
        self.ok("GET", &service_path(name), None)
    }

    /// Waits (`:wait`, 120 s at most in all) until the operation is done; returns it.
    pub fn wait(&self, op: &Value) -> Value {
        let name = op["name"].as_str().expect("an operation has a name");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let op = self.ok(
                "POST",
                &format!("{name}:wait"),
                Some(&json!({"timeout": "30s"})),
            );
            if op["done"] == true {
                return op;
            }
            assert!(
                Instant::now() < deadline,
                "operation {name} not done after 120 s: {op}\n{}",
                self.output()
            );
        }
    }

    /// Waits for the operation and returns its `response` (it must have succeeded).
    pub fn wait_ok(&self, op: &Value) -> Value {
        let done = self.wait(op);
        assert!(
            done.get("error").is_none(),
            "operation failed: {done}\n{}",
            runlet_test_support::tail(&self.output(), 30)
        );
        done["response"].clone()
    }

    /// Creates `name` and waits until it is ready; the service.
    pub fn deploy(&self, name: &str, service: &Value) -> Value {
        let op = self.create(name, service);
        self.wait_ok(&op)
    }

    /// `GET PATH` through the ingress with `Host: NAME.localhost:PORT`.
    pub fn get_via(&self, name: &str, path: &str) -> Response {
        let host = self.host_of(name);
        http(self.listen, "GET", path, &[("Host", host.as_bytes())], b"")
    }

    /// `NAME.localhost:PORT`, the Host that reaches service NAME.
    pub fn host_of(&self, name: &str) -> String {
        format!("{name}.localhost:{}", self.listen.port())
    }

    /// The probe's report from service NAME (GET / must answer 200).
    pub fn report(&self, name: &str) -> Value {
        let r = self.get_via(name, "/");
        assert_eq!(r.status, 200, "GET / of {name}: {}", r.text());
        r.json().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// `PARENT/services/NAME`.
pub fn service_path(name: &str) -> String {
    format!("{PARENT}/services/{name}")
}

/// A service running the probe image with the given environment.
pub fn probe_service(env: &[(&str, &str)]) -> Value {
    service_with_image("probe", env)
}

/// A service running `image` with the given environment.
pub fn service_with_image(image: &str, env: &[(&str, &str)]) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({"template": {"containers": [{"image": image, "env": env}]}})
}

/// The last segment of a resource name.
pub fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// `env` with a state dir of its own for test `name`, emptied first: a daemon resumes what
/// its state dir holds, and each test starts from nothing.
pub fn fresh_state(env: &Env, name: &str) -> Env {
    let env = env.isolated(&format!("daemon-{name}"));
    let _ = std::fs::remove_dir_all(&env.state_dir);
    env
}
