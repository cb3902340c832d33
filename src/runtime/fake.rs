//! A scripted [`Runtime`] for tests of control-path decisions: it records every call, and
//! tests decide when a container exits. [`FakeNetwork`] and [`FakeRootFs`], taken from a
//! [`FakeRuntime`], record into the same call log, so a test sees a container's whole life
//! in order (attach, mount, create, start, ..., detach, unmount).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};

use super::network::{Attachment, NetConfig, NetError, NetnsDialer, Network};
use super::rootfs::RootFs;
use super::{ContainerInfo, ContainerSpec, ExitStatus, Runtime, RuntimeError};
use crate::image::ImageInfo;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Resolve(String),
    Create(String),
    Start(String),
    Kill {
        id: String,
        signal: u32,
        all: bool,
    },
    Delete(String),
    /// [`FakeNetwork`]: a namespace made or removed for a container id.
    Attach(String),
    Detach(String),
    /// A namespace taken over after a restart.
    Readopt(String),
    /// [`FakeRootFs`]: a root filesystem mounted or unmounted at a path.
    Mount(PathBuf),
    Unmount(PathBuf),
}

/// A container's labels and the sender of its exit status.
type Entry = (HashMap<String, String>, watch::Sender<Option<ExitStatus>>);

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    containers: HashMap<String, Entry>,
    /// Signals that make a container exit at once (e.g. 15 for a workload with a handler).
    exit_on_signal: Vec<u32>,
    fail_create: bool,
    fail_attach: bool,
    /// Waits to fail at once as a broken call does (containerd restarting).
    broken_waits: u32,
    oom_subscribers: Vec<tokio::sync::mpsc::UnboundedSender<String>>,
    /// What a started container does by itself (see [`FakeRuntime::on_start`]).
    on_start: Option<Script>,
    /// Containers the scripted OOM killer killed.
    oom: HashSet<String>,
    /// Every spec `create` received, kept after delete so tests can inspect them.
    specs: HashMap<String, ContainerSpec>,
}

type Script = Arc<dyn Fn(&ContainerSpec) -> Option<Behaviour> + Send + Sync>;

/// What a scripted container does once started: exit with `code` after `after`; with
/// `oom`, as if the kernel's OOM killer had killed it (see `Runtime::oom_killed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    pub after: Duration,
    pub code: u32,
    pub oom: bool,
}

impl Behaviour {
    /// Exit by itself with `code` after `after`.
    pub fn exit(after: Duration, code: u32) -> Behaviour {
        Behaviour {
            after,
            code,
            oom: false,
        }
    }
}

/// A fake runtime. Clone it to keep a handle for scripting while the code under test owns one.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Containers exit (status 128 + signal) when they receive one of these signals.
    pub async fn exit_on(&self, signals: &[u32]) {
        self.state.lock().await.exit_on_signal = signals.to_vec();
    }

    /// Makes the next `n` waits fail at once with a transport error, as when containerd
    /// restarts under a wait.
    pub async fn break_waits(&self, n: u32) {
        self.state.lock().await.broken_waits = n;
    }

    /// Makes every following `create` fail.
    pub async fn fail_creates(&self) {
        self.state.lock().await.fail_create = true;
    }

    /// Makes every following network attach fail.
    pub async fn fail_attaches(&self) {
        self.state.lock().await.fail_attach = true;
    }

    /// A network recording into this runtime's call log.
    pub fn network(&self) -> FakeNetwork {
        FakeNetwork {
            state: self.state.clone(),
        }
    }

    /// Root filesystems recording into this runtime's call log.
    pub fn root_fs(&self) -> FakeRootFs {
        FakeRootFs {
            state: self.state.clone(),
        }
    }

    /// Makes container `id` exit with `code`.
    pub async fn exit(&self, id: &str, code: u32) {
        if let Some((_, tx)) = self.state.lock().await.containers.get(id) {
            tx.send_replace(Some(ExitStatus { code }));
        }
    }

    /// Reports an OOM kill in container `id` (without ending it: like a child process's).
    pub async fn oom(&self, id: &str) {
        for tx in &self.state.lock().await.oom_subscribers {
            let _ = tx.send(id.to_string());
        }
    }

    pub async fn calls(&self) -> Vec<Call> {
        self.state.lock().await.calls.clone()
    }

    /// Scripts what each container does once started, decided from its spec (e.g. its
    /// env); `None` leaves it running until killed or [`exit`](Self::exit) is called.
    pub async fn on_start(
        &self,
        script: impl Fn(&ContainerSpec) -> Option<Behaviour> + Send + Sync + 'static,
    ) {
        self.state.lock().await.on_start = Some(Arc::new(script));
    }

    /// Every container exits by itself with `code`, `after` its start.
    pub async fn exit_after(&self, after: Duration, code: u32) {
        self.on_start(move |_| Some(Behaviour::exit(after, code)))
            .await;
    }

    /// Container `id` created (with `labels`, nothing else) and started, as a test's
    /// starting state.
    pub async fn started(&self, id: &str, labels: HashMap<String, String>) {
        let spec = ContainerSpec {
            id: id.into(),
            image: Default::default(),
            oci_spec: serde_json::Value::Null,
            labels,
            stdout: String::new(),
            stderr: String::new(),
            upper_dir: None,
            oci_runtime: None,
        };
        self.create(&spec).await.expect("the fake creates");
        self.start(id).await.expect("the fake starts");
    }

    /// The spec container `id` was created with (also after it was deleted).
    pub async fn spec(&self, id: &str) -> Option<ContainerSpec> {
        self.state.lock().await.specs.get(id).cloned()
    }
}

impl Runtime for FakeRuntime {
    async fn resolve_image(&self, name: &str) -> Result<ImageInfo, RuntimeError> {
        self.state
            .lock()
            .await
            .calls
            .push(Call::Resolve(name.to_string()));
        if name.contains("missing") {
            return Err(RuntimeError::ImageNotFound {
                name: name.to_string(),
            });
        }
        Ok(ImageInfo {
            name: name.to_string(),
            chain_id: "sha256:fake".into(),
            ..Default::default()
        })
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<u32, RuntimeError> {
        let mut s = self.state.lock().await;
        s.calls.push(Call::Create(spec.id.clone()));
        if s.fail_create {
            return Err(RuntimeError::Other {
                op: "create",
                id: spec.id.clone(),
                detail: "scripted failure".into(),
            });
        }
        let (tx, _) = watch::channel(None);
        s.containers
            .insert(spec.id.clone(), (spec.labels.clone(), tx));
        s.specs.insert(spec.id.clone(), spec.clone());
        Ok(4242)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let behaviour = {
            let mut s = self.state.lock().await;
            s.calls.push(Call::Start(id.to_string()));
            match (&s.on_start, s.specs.get(id)) {
                (Some(script), Some(spec)) => script(spec),
                _ => None,
            }
        };
        if let Some(b) = behaviour {
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(b.after).await;
                if b.oom {
                    me.state.lock().await.oom.insert(id.clone());
                }
                me.exit(&id, b.code).await;
            });
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let mut rx = {
            let mut s = self.state.lock().await;
            if s.broken_waits > 0 {
                s.broken_waits -= 1;
                return Err(RuntimeError::Other {
                    op: "wait",
                    id: id.to_string(),
                    detail: "transport error".into(),
                });
            }
            let (_, tx) = s.containers.get(id).ok_or_else(|| RuntimeError::NotFound {
                op: "wait",
                id: id.to_string(),
            })?;
            tx.subscribe()
        };
        loop {
            if let Some(status) = *rx.borrow_and_update() {
                return Ok(status);
            }
            if rx.changed().await.is_err() {
                return Err(RuntimeError::NotFound {
                    op: "wait",
                    id: id.to_string(),
                });
            }
        }
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().await;
        s.calls.push(Call::Kill {
            id: id.to_string(),
            signal,
            all,
        });
        let exits = signal == 9 || s.exit_on_signal.contains(&signal);
        match s.containers.get(id) {
            Some((_, tx)) => {
                if exits {
                    tx.send_replace(Some(ExitStatus { code: 128 + signal }));
                }
                Ok(())
            }
            None => Err(RuntimeError::NotFound {
                op: "kill",
                id: id.to_string(),
            }),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().await;
        s.calls.push(Call::Delete(id.to_string()));
        s.containers.remove(id);
        Ok(())
    }

    async fn oom_events(
        &self,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<String>, RuntimeError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.state.lock().await.oom_subscribers.push(tx);
        Ok(rx)
    }

    async fn oom_killed(&self, id: &str) -> bool {
        self.state.lock().await.oom.contains(id)
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let s = self.state.lock().await;
        Ok(s.containers
            .iter()
            .map(|(id, (labels, _))| ContainerInfo {
                id: id.clone(),
                labels: labels.clone(),
            })
            .collect())
    }
}

/// A network that makes nothing: attach hands out the path a real namespace would have and a
/// fixed address, and the dialer reaches runlet's own loopback (a test's listener).
#[derive(Clone)]
pub struct FakeNetwork {
    state: Arc<Mutex<State>>,
}

/// The address every fake attachment gets.
pub const FAKE_IP: &str = "10.209.0.2";

impl Network for FakeNetwork {
    async fn attach(&self, id: &str) -> Result<Attachment, NetError> {
        let mut s = self.state.lock().await;
        s.calls.push(Call::Attach(id.to_string()));
        if s.fail_attach {
            return Err(NetError::Plugin {
                plugin: "bridge".into(),
                command: "ADD",
                id: id.to_string(),
                detail: "scripted failure".into(),
            });
        }
        Ok(Attachment {
            id: id.to_string(),
            netns: NetConfig::netns_path(id),
            ip: Some(FAKE_IP.to_string()),
        })
    }

    async fn detach(&self, id: &str) {
        let call = Call::Detach(id.to_string());
        self.state.lock().await.calls.push(call);
    }

    fn dialer(&self, _att: &Attachment, port: u16) -> io::Result<NetnsDialer> {
        NetnsDialer::here(port)
    }

    async fn readopt(&self, id: &str) -> Result<(), NetError> {
        let call = Call::Readopt(id.to_string());
        self.state.lock().await.calls.push(call);
        Ok(())
    }
}

/// Root filesystems that are plain directories (nothing mounted).
#[derive(Clone)]
pub struct FakeRootFs {
    state: Arc<Mutex<State>>,
}

impl RootFs for FakeRootFs {
    async fn mount(&self, dir: &Path, _size: u64) -> io::Result<PathBuf> {
        self.state
            .lock()
            .await
            .calls
            .push(Call::Mount(dir.to_path_buf()));
        std::fs::create_dir_all(dir)?;
        Ok(dir.to_path_buf())
    }

    async fn unmount(&self, dir: &Path) {
        let call = Call::Unmount(dir.to_path_buf());
        self.state.lock().await.calls.push(call);
    }
}
