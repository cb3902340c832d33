//! Google's Pub/Sub emulator for a test: started on a free loopback port in a process group
//! of its own (gcloud starts Java under it), talked to over its REST API, and killed with
//! its whole group when dropped, so nothing is left running. Missing: the test skips, or
//! fails when `CI` is set.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, http, Lines};

/// The emulator's project.
pub const PROJECT: &str = "test";

pub struct Emulator {
    child: Child,
    pub addr: SocketAddr,
    pub output: Lines,
}

impl Emulator {
    /// Starts it (a few seconds: Java), or `None` (skip) when gcloud or the emulator is
    /// missing outside CI.
    pub fn start() -> Option<Emulator> {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let spawned = Command::new("gcloud")
            .args(["beta", "emulators", "pubsub", "start"])
            .arg(format!("--host-port={addr}"))
            .arg(format!("--project={PROJECT}"))
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return missing(&format!("gcloud cannot be run: {e}")),
        };
        let output = Lines::new();
        output.read_in_thread(child.stdout.take().expect("piped stdout"));
        output.read_in_thread(child.stderr.take().expect("piped stderr"));
        let mut emu = Emulator {
            child,
            addr,
            output,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let up = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .is_ok()
                && http(
                    addr,
                    "GET",
                    &format!("/v1/projects/{PROJECT}/topics"),
                    &[],
                    b"",
                )
                .status
                    == 200;
            if up {
                return Some(emu);
            }
            if let Ok(Some(st)) = emu.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                let out = emu.output.text();
                return missing(&format!("the Pub/Sub emulator exited ({st}):\n{out}"));
            }
            if Instant::now() > deadline {
                panic!(
                    "the Pub/Sub emulator did not answer within 90 s:\n{}",
                    emu.output.text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `PUBSUB_EMULATOR_HOST` for it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A REST call that must succeed; its JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = http(
            self.addr,
            method,
            &format!("/v1/{path}"),
            &[("Content-Type", b"application/json")],
            body.as_bytes(),
        );
        assert!(
            (200..300).contains(&r.status),
            "{method} /v1/{path}: {} {}",
            r.status,
            r.text()
        );
        r.json().unwrap_or(Value::Null)
    }

    pub fn topic(&self, name: &str) -> String {
        let full = format!("projects/{PROJECT}/topics/{name}");
        self.call("PUT", &full, Some(&json!({})));
        full
    }

    /// A subscription to topic `topic` (full name), with `extra` fields (a push config, a
    /// dead-letter policy).
    pub fn subscription(&self, name: &str, topic: &str, extra: Value) -> String {
        let full = format!("projects/{PROJECT}/subscriptions/{name}");
        let mut body = json!({"topic": topic, "ackDeadlineSeconds": 10});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.call("PUT", &full, Some(&body));
        full
    }

    /// Publishes `data` to `topic`; the message id.
    pub fn publish(&self, topic: &str, data: &[u8]) -> String {
        let r = self.call(
            "POST",
            &format!("{topic}:publish"),
            Some(&json!({"messages": [{"data": base64(data), "attributes": {"from": "test"}}]})),
        );
        r["messageIds"][0].as_str().unwrap().to_string()
    }

    /// Pulls (at once) up to 100 messages from `sub`, acking nothing.
    pub fn pull(&self, sub: &str) -> Vec<Value> {
        let r = self.call(
            "POST",
            &format!("{sub}:pull"),
            Some(&json!({"maxMessages": 100, "returnImmediately": true})),
        );
        r["receivedMessages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // The group is gone when no process of it is left to signal.
            if nix::sys::signal::killpg(group, None).is_err() {
                let _ = self.child.wait();
                return;
            }
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn missing(why: &str) -> Option<Emulator> {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the Pub/Sub emulator cannot start ({why}): install google-cloud-cli-pubsub-emulator (deploy/install-deps.sh)");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// Standard base64 with padding (what Pub/Sub's REST API carries).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
