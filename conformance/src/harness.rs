//! Driving the runtime under test from outside, by one of two drivers the checks do not see:
//! the CLI driver runs `runlet serve` and `runlet job execute` as child processes (their
//! output, their shutdown); the API driver ([`crate::via_api`]) creates the same services and
//! jobs through the Admin API and reaches them at the URL it returns. Both see what
//! containerd holds for a check.
//!
//! Every runlet the suite starts gets its own process group and `SIGINT` as its parent-death
//! signal, and is always stopped with `SIGINT` (runlet's Ctrl-C: it stops its instances and
//! cleans up), even when a check fails or times out: a [`Proc`] dropped while its runlet
//! still runs sends `SIGINT` and hands the child to the check's [`Reaper`], which the runner
//! drains before it looks for leftovers. `SIGKILL` is the last resort after 45 s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use runlet_test_support::{free_port, tail};
use runlet_test_support::{metrics, Lines};

use crate::http::{self, Request, Response};
use crate::selftest::{Mangle, BREAK_VAR};
use crate::via_api::{client, resources, ApiTarget};

/// How long a stopped runlet may take before it is killed (the stop sequence allows 10 s
/// per container after SIGTERM, and a request timeout for draining).
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a request sent in the background may take to be seen in flight.
const IN_FLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `runlet serve` may take to print that it is serving.
const SERVE_TIMEOUT: Duration = Duration::from_secs(90);

/// Where and how to run the runlet under test.
#[derive(Debug, Clone)]
pub struct Env {
    /// The runlet binary (or the self-test's broken wrapper).
    pub runlet: PathBuf,
    /// containerd's socket, shared by every runlet the suite starts.
    pub containerd: String,
    /// runlet's `--state-dir` (runlet's default when `None`).
    pub state_dir: Option<PathBuf>,
    /// The test image archives (`runlet-conformance build-images`).
    pub images: PathBuf,
    /// The API driver's target; `None`: the CLI driver.
    pub api: Option<Arc<ApiTarget>>,
    /// `--execution-environment gen1|gen2` given to every service the suite deploys that
    /// does not choose its own (`None`: runlet's default, gen2).
    pub execution_environment: Option<String>,
}

impl Env {
    /// `args` with the suite's execution environment, unless they choose one.
    pub fn with_environment<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = Vec::with_capacity(args.len() + 2);
        if let Some(e) = &self.execution_environment {
            if !args.contains(&"--execution-environment") {
                full.extend_from_slice(&["--execution-environment", e.as_str()]);
            }
        }
        full.extend_from_slice(args);
        full
    }
}

impl Env {
    /// A runlet command with the global flags: the suite's containerd, never a private one.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.runlet);
        c.arg("--containerd-address")
            .arg(&self.containerd)
            .arg("--no-embedded-containerd");
        if let Some(d) = &self.state_dir {
            c.arg("--state-dir").arg(d);
        }
        // The suite's images are loaded from archives; nothing is pulled (traffic stays on
        // this machine), so an image that is not there fails at once.
        c.env("RUNLET_LOG", "info")
            .env("RUNLET_PULL", "never")
            .env_remove(BREAK_VAR)
            .env("NO_COLOR", "1")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
        // parent; it makes the kernel interrupt the runlet if the suite dies first.
        unsafe {
            c.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
            });
        }
        c
    }

    pub fn archive(&self, name: &str) -> PathBuf {
        self.images.join(name)
    }

    /// Runs a short runlet command (`image load`, `image ls`, ...) to completion.
    pub async fn run(&self, args: &[&str], timeout: Duration) -> Result<Exited> {
        let mut c = self.command();
        c.args(args);
        let p = Proc::spawn(c, label(args), &Reaper::default(), &Logs::default())?;
        Ok(p.finish(timeout).await)
    }

    /// The names `runlet image ls` prints.
    pub async fn image_names(&self) -> Result<Vec<String>> {
        let out = self.run(&["image", "ls"], Duration::from_secs(60)).await?;
        if !out.success() {
            bail!("runlet image ls failed: {}", out.tail(10));
        }
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }

    /// `ctr` against the suite's containerd, in runlet's namespace.
    pub async fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.containerd)
            .args(["-n", "runlet"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running ctr (installed with containerd)")?;
        if !out.status.success() {
            bail!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Container ids in containerd that start with `prefix`.
    pub async fn containers_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .ctr(&["containers", "ls", "-q"])
            .await?
            .lines()
            .map(str::trim)
            .filter(|id| id.starts_with(prefix))
            .map(str::to_string)
            .collect())
    }
}

fn label(args: &[&str]) -> String {
    format!("runlet {}", args.join(" "))
}

/// A list shared by the clones of its owner (a poisoned lock reads as empty).
struct Shared<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Shared(Arc::default())
    }
}

impl<T> Shared<T> {
    fn push(&self, item: T) {
        if let Ok(mut v) = self.0.lock() {
            v.push(item);
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Vec<T>>> {
        self.0.lock().ok()
    }
}

/// The runlet outputs of one check (label, output), for its log file.
#[derive(Clone, Default)]
pub struct Logs(Shared<(String, Lines)>);

impl Logs {
    fn add(&self, label: String, out: Lines) {
        self.0.push((label, out));
    }

    /// Everything, each process under a heading.
    pub fn render(&self) -> String {
        let Some(v) = self.0.lock() else {
            return String::new();
        };
        v.iter()
            .map(|(l, o)| format!("===== {l}\n{}\n", o.text()))
            .collect()
    }
}

/// Runlets whose handle was dropped while they still ran: `SIGINT` was sent, and the
/// runner waits for them here.
#[derive(Clone, Default)]
pub struct Reaper(Shared<(Child, i32)>);

impl Reaper {
    fn push(&self, child: Child, pgid: i32) {
        self.0.push((child, pgid));
    }

    /// Waits for every handed-over runlet; `SIGKILL` after [`STOP_TIMEOUT`]. Returns how
    /// many had to be killed.
    pub async fn reap(&self) -> usize {
        let children: Vec<(Child, i32)> = match self.0.lock() {
            Some(mut v) => v.drain(..).collect(),
            None => return 0,
        };
        let mut killed = 0;
        for (mut child, pgid) in children {
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                killed += 1;
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                let _ = child.wait().await;
            }
        }
        killed
    }

    /// Sends `SIGINT` again to everything handed over (used when the suite is interrupted).
    pub fn interrupt_all(&self) {
        if let Some(v) = self.0.lock() {
            for (_, pgid) in v.iter() {
                let _ = killpg(Pid::from_raw(*pgid), Signal::SIGINT);
            }
        }
    }
}

/// How a runlet process ended.
#[derive(Debug, Clone)]
pub struct Exited {
    /// Exit code, `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    /// stdout and stderr interleaved as they arrived, ANSI colours removed.
    pub output: String,
    pub elapsed: Duration,
    /// The suite had to stop it (it did not end on its own in time).
    pub timed_out: bool,
}

impl Exited {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last `n` lines of output, for error messages.
    pub fn tail(&self, n: usize) -> String {
        tail(&self.output, n)
    }

    pub fn describe_code(&self) -> String {
        match self.code {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        }
    }
}

/// A running runlet process with its output collected.
pub struct Proc {
    child: Option<Child>,
    pgid: i32,
    out: Lines,
    stdout: Lines,
    readers: Vec<JoinHandle<()>>,
    reaper: Reaper,
    started: Instant,
}

impl Proc {
    fn spawn(mut cmd: Command, label: String, reaper: &Reaper, logs: &Logs) -> Result<Proc> {
        let mut child = cmd.spawn().with_context(|| format!("starting {label}"))?;
        let pgid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| anyhow!("{label} exited at once"))?;
        let (out, stdout) = (Lines::new(), Lines::new());
        logs.add(label, out.clone());
        let mut readers = Vec::new();
        if let Some(s) = child.stdout.take() {
            readers.push(out.read_in_task(s, Some(stdout.clone())));
        }
        if let Some(s) = child.stderr.take() {
            readers.push(out.read_in_task(s, None));
        }
        Ok(Proc {
            child: Some(child),
            pgid,
            out,
            stdout,
            readers,
            reaper: reaper.clone(),
            started: Instant::now(),
        })
    }

    pub fn output(&self) -> String {
        self.out.text()
    }

    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Sends `SIGINT` to the runlet's process group (runlet's Ctrl-C).
    pub fn interrupt(&self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGINT);
    }

    fn try_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    async fn collect(mut self, code: Option<i32>, timed_out: bool) -> Exited {
        // Let the readers take in the last lines.
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
        }
        Exited {
            code,
            stdout: self.stdout.text(),
            output: self.output(),
            elapsed: self.started.elapsed(),
            timed_out,
        }
    }

    /// Waits for the process to end on its own; past `timeout` it is stopped.
    ///
    /// The child stays in `self` while waiting, so that if this future is dropped (a
    /// check timed out or the suite was interrupted), `Drop` still hands it to the reaper.
    pub async fn finish(mut self, timeout: Duration) -> Exited {
        let waited = match self.child.as_mut() {
            None => return self.collect(None, false).await,
            Some(child) => tokio::time::timeout(timeout, child.wait()).await,
        };
        match waited {
            Ok(status) => {
                self.child = None;
                let code = status.ok().and_then(|s| s.code());
                self.collect(code, false).await
            }
            Err(_) => {
                let mut e = self.stop().await;
                e.timed_out = true;
                e
            }
        }
    }

    /// `SIGINT`, then waits (`SIGKILL` after [`STOP_TIMEOUT`]).
    pub async fn stop(mut self) -> Exited {
        self.interrupt();
        let pgid = self.pgid;
        let status = match self.child.as_mut() {
            None => None,
            Some(child) => match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                    child.wait().await.ok()
                }
            },
        };
        self.child = None;
        self.collect(status.and_then(|s| s.code()), false).await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                self.interrupt();
                self.reaper.push(child, self.pgid);
            }
        }
    }
}

/// What one check gets: the environment, its own name for services and jobs (unique in
/// the run, never a prefix of another check's), and where its runlets and logs go.
#[derive(Clone)]
pub struct Ctx {
    pub env: Arc<Env>,
    name: String,
    reaper: Reaper,
    logs: Logs,
    /// For the self-test's broken runlet: the one mangling to apply.
    breaks: Option<Mangle>,
    /// What the API driver created for this check, deleted by [`Ctx::teardown`].
    created: Shared<Created>,
}

/// A resource the API driver created.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Created {
    Service(String),
    Job(String),
}

impl Ctx {
    pub fn new(env: Arc<Env>, name: String) -> Ctx {
        Ctx {
            env,
            name,
            reaper: Reaper::default(),
            logs: Logs::default(),
            breaks: None,
            created: Shared::default(),
        }
    }

    /// After the check (API driver): deletes the services and jobs it created, waiting for
    /// each deletion (the instances stopped), and keeps the daemon's lines about them in
    /// the check's log. Returns what went wrong. Nothing to do for the CLI driver.
    pub async fn teardown(&self) -> Vec<String> {
        let Some(t) = self.env.api.clone() else {
            return Vec::new();
        };
        let created: Vec<Created> = match self.created.lock() {
            Some(mut v) => v.drain(..).collect(),
            None => Vec::new(),
        };
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for c in created {
            if seen.contains(&c) {
                continue;
            }
            seen.push(c.clone());
            let r = match &c {
                Created::Service(n) => match t.client.delete_service(n).await {
                    Ok(op) => t
                        .client
                        .wait(&op, Duration::from_secs(120))
                        .await
                        .and_then(client::ok_response)
                        .map(|_| ()),
                    Err(e) => Err(e),
                },
                Created::Job(n) => t.client.delete_job(n).await,
            };
            match r {
                Err(e) if !client::not_found(&e) => problems.push(format!("deleting {c:?}: {e:#}")),
                _ => {}
            }
        }
        let out = Lines::new();
        for l in t.log_lines(&format!("{}-", self.name)).lines() {
            out.push(l);
        }
        self.logs
            .add("runlet daemon (its lines about this check)".into(), out);
        problems
    }

    /// Asks the self-test's broken runlet for this one mangling (see [`crate::selftest`]);
    /// the real runlet ignores it.
    pub fn breaking(mut self, m: Option<Mangle>) -> Ctx {
        self.breaks = m;
        self
    }

    /// The service / job name of this check.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the suite runs its services under gen1 (gVisor) by default.
    pub fn gen1(&self) -> bool {
        self.env.execution_environment.as_deref() == Some("gen1")
    }

    /// The host-side directory of container `id`'s cgroup for `controller` (cgroup v1:
    /// `/sys/fs/cgroup/CONTROLLER/PATH`; v2: `/sys/fs/cgroup/PATH`), `PATH` being the
    /// `linux.cgroupsPath` of its OCI spec as containerd holds it. Under gen1 this cgroup
    /// holds the whole gVisor sandbox: it is where the limits are enforced, and nothing
    /// inside the sandbox shows them.
    pub async fn host_cgroup(&self, id: &str, controller: &str) -> Result<PathBuf> {
        let info = self.env.ctr(&["containers", "info", id]).await?;
        let v: Value = serde_json::from_str(&info)
            .with_context(|| format!("ctr containers info {id}: not JSON"))?;
        // `ctr containers info` shows the spec under `Spec` (older ctr: the spec itself).
        let path = v["Spec"]["linux"]["cgroupsPath"]
            .as_str()
            .or_else(|| v["linux"]["cgroupsPath"].as_str())
            .ok_or_else(|| anyhow!("container {id}'s spec has no linux.cgroupsPath"))?
            .trim_start_matches('/')
            .to_string();
        let root = PathBuf::from("/sys/fs/cgroup");
        Ok(if root.join("cgroup.controllers").exists() {
            root.join(path)
        } else {
            root.join(controller).join(path)
        })
    }

    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Starts a runlet with `args` (after the global flags) without waiting for anything.
    pub fn spawn(&self, args: &[&str]) -> Result<Proc> {
        let mut c = self.env.command();
        c.args(args);
        if let Some(m) = self.breaks {
            c.env(BREAK_VAR, m.key());
        }
        Proc::spawn(c, label(args), &self.reaper, &self.logs)
    }

    /// Runs a runlet command to completion (stopped after `timeout`).
    pub async fn run(&self, args: &[&str], timeout: Duration) -> Result<Exited> {
        Ok(self.spawn(args)?.finish(timeout).await)
    }

    /// `runlet serve --service NAME --listen 127.0.0.1:FREE --metrics-listen off ARGS`,
    /// waiting until it says it is serving.
    pub async fn serve(&self, args: &[&str]) -> Result<Served> {
        self.serve_as(&self.name.clone(), args).await
    }

    /// Like [`Ctx::serve`], with runlet's metrics listener on a free port (for checks that
    /// wait for what runlet's data path holds, see [`Served::wait_in_flight`]).
    pub async fn serve_with_metrics(&self, args: &[&str]) -> Result<Served> {
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?)).to_string();
        let mut full = vec!["--metrics-listen", metrics.as_str()];
        full.extend_from_slice(args);
        self.serve_as(&self.name.clone(), &full).await
    }

    /// Like [`Ctx::serve`] with another service name (which must start with [`Ctx::name`]).
    pub async fn serve_as(&self, service: &str, args: &[&str]) -> Result<Served> {
        let env = self.env.clone();
        let args = &env.with_environment(args)[..];
        if let Some(t) = &self.env.api {
            return match self.deploy(t, service, args).await? {
                Ok(s) => Ok(s),
                Err(message) => {
                    bail!("deploying {service} through the Admin API failed: {message}")
                }
            };
        }
        let mut last_err = None;
        // A free port can be taken between the probe and runlet's bind; try again then.
        for _ in 0..3 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
            let listen = addr.to_string();
            let mut p = self.spawn(&serve_args(service, &listen, args))?;
            let deadline = Instant::now() + SERVE_TIMEOUT;
            loop {
                let out = p.output();
                if let Some((svc, rev)) = parse_serving(&out) {
                    return Ok(Served {
                        service: svc,
                        revision: rev,
                        addr,
                        host: None,
                        metrics: metrics_listen(args),
                        backend: Backend::Cli(Box::new(p)),
                    });
                }
                if p.try_exited() {
                    let e = p.finish(Duration::from_secs(5)).await;
                    if e.output.contains("cannot listen on") {
                        last_err = Some(anyhow!("{listen} was taken: {}", e.tail(3)));
                        break;
                    }
                    bail!(
                        "runlet serve {} ended before serving ({}): {}",
                        args.join(" "),
                        e.describe_code(),
                        e.tail(6)
                    );
                }
                if Instant::now() > deadline {
                    let e = p.stop().await;
                    bail!(
                        "runlet serve {} did not say it was serving within {} s: {}",
                        args.join(" "),
                        SERVE_TIMEOUT.as_secs(),
                        e.tail(6)
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no free port for --listen")))
    }

    /// API driver: CreateService with `args` as the resource, waited for. `Ok(Err(message))`
    /// when the operation failed (the service exists, not ready).
    async fn deploy(
        &self,
        t: &Arc<ApiTarget>,
        service: &str,
        args: &[&str],
    ) -> Result<std::result::Result<Served, String>> {
        let body = resources::service(args, &|i| t.image(i))?;
        let op = t.client.create_service(service, &body).await?;
        self.created.push(Created::Service(service.to_string()));
        let done = t.client.wait(&op, SERVE_TIMEOUT).await?;
        let svc = match client::ok_response(done) {
            Ok(svc) => svc,
            Err(e) => return Ok(Err(format!("{e:#}"))),
        };
        let uri = svc["uri"]
            .as_str()
            .ok_or_else(|| anyhow!("the ready service has no uri: {svc}"))?;
        let (addr, host) = client::url_target(uri).await?;
        let revision = svc["latestReadyRevision"].as_str().unwrap_or_default();
        Ok(Ok(Served {
            service: service.to_string(),
            revision: client_short(revision).to_string(),
            addr,
            host: Some(host),
            metrics: t.metrics,
            backend: Backend::Api(ApiServed {
                target: t.clone(),
                stopping: Mutex::new(None),
            }),
        }))
    }

    /// Deploys a service that must fail to start: with the CLI driver, `runlet serve ARGS`
    /// run to its end (stopped after `timeout`); with the API driver, CreateService whose
    /// operation must fail (its error is the output). Returns how it ended.
    pub async fn serve_fails(&self, args: &[&str], timeout: Duration) -> Result<Exited> {
        let env = self.env.clone();
        let args = &env.with_environment(args)[..];
        let Some(t) = &self.env.api else {
            let listen = format!("127.0.0.1:{}", free_port()?);
            return self
                .run(&serve_args(&self.name, &listen, args), timeout)
                .await;
        };
        let t0 = Instant::now();
        let (code, output) =
            match tokio::time::timeout(timeout, self.deploy(t, &self.name, args)).await {
                Err(_) => (None, String::new()),
                Ok(r) => match r? {
                    Ok(s) => (
                        Some(0),
                        format!(
                            "Service [{}] revision [{}] is serving at http://{}",
                            s.service,
                            s.revision,
                            s.host.clone().unwrap_or_default()
                        ),
                    ),
                    Err(message) => (Some(1), message),
                },
            };
        Ok(Exited {
            code,
            stdout: String::new(),
            timed_out: code.is_none(),
            output,
            elapsed: t0.elapsed(),
        })
    }

    /// A job run to completion (stopped after `timeout`), with the probe's job-mode report
    /// lines picked out of its output: `runlet job execute NAME ARGS` (CLI driver), or
    /// CreateJob with `ARGS` as the resource and RunJob, waited for, the execution's outcome
    /// read with GetExecution and its tasks' lines from the daemon's output (API driver).
    pub async fn job(&self, args: &[&str], timeout: Duration) -> Result<JobRun> {
        if let Some(t) = &self.env.api {
            let exited = self.job_via_api(t, args, timeout).await?;
            let lines = probe_job_lines(&exited.output);
            return Ok(JobRun { exited, lines });
        }
        let mut full = vec!["job", "execute", self.name.as_str()];
        full.extend_from_slice(args);
        let exited = self.run(&full, timeout).await?;
        let lines = probe_job_lines(&exited.output);
        Ok(JobRun { exited, lines })
    }

    async fn job_via_api(
        &self,
        t: &Arc<ApiTarget>,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Exited> {
        let body = resources::job(args, &|i| t.image(i))?;
        t.client.create_job(&self.name, &body).await?;
        self.created.push(Created::Job(self.name.clone()));
        let t0 = Instant::now();
        let op = t.client.run_job(&self.name).await?;
        let execution = op["metadata"]["name"]
            .as_str()
            .ok_or_else(|| anyhow!("RunJob's operation names no execution: {op}"))?
            .to_string();
        let waited = t.client.wait(&op, timeout).await;
        let elapsed = t0.elapsed();
        let timed_out = waited.is_err();
        if timed_out {
            // Stopped by the suite, as the CLI driver stops runlet.
            let _ = t
                .client
                .call(
                    "POST",
                    &format!("{execution}:cancel"),
                    Some(&serde_json::json!({})),
                )
                .await;
        }
        let exec = t.client.call("GET", &execution, None).await?;
        let succeeded = exec["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Completed" && c["state"] == "CONDITION_SUCCEEDED");
        // The tasks' last lines trail their exit in the daemon's output.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let id = client_short(&execution);
        let mut output = t.log_lines(id);
        if !succeeded {
            output.push_str(&format!("execution {id}: {}\n", completed_message(&exec)));
        }
        Ok(Exited {
            code: (!timed_out).then_some(if succeeded { 0 } else { 1 }),
            stdout: String::new(),
            output,
            elapsed,
            timed_out,
        })
    }

    /// This check's containers in containerd (ids start with its name).
    pub async fn containers(&self) -> Result<Vec<String>> {
        self.env
            .containers_with_prefix(&format!("{}-", self.name))
            .await
    }

    /// Waits (20 s at most) until this check has no container left in containerd;
    /// returns how long that took. The error says what was awaited (`what`).
    pub async fn wait_no_containers(&self, what: &str) -> Result<Duration> {
        let (_, took) = self
            .wait_containers(|n| n == 0, Duration::from_secs(20))
            .await
            .map_err(|e| anyhow!("{what}: {e}"))?;
        Ok(took)
    }

    /// Polls [`Ctx::containers`] until `want(count)` holds; returns the count and how long
    /// it took, or an error after `timeout`.
    pub async fn wait_containers(
        &self,
        want: impl Fn(usize) -> bool,
        timeout: Duration,
    ) -> Result<(usize, Duration)> {
        let t0 = Instant::now();
        loop {
            let n = self.containers().await?.len();
            if want(n) {
                return Ok((n, t0.elapsed()));
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{n} container(s) of {} in containerd after {} s",
                    self.name,
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The last segment of a resource name.
fn client_short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// An execution's `Completed` condition message (why it failed).
fn completed_message(exec: &Value) -> String {
    exec["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Completed")
        .map(|c| {
            format!(
                "{} {}",
                c["state"].as_str().unwrap_or("?"),
                c["message"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_else(|| "no Completed condition".into())
}

/// `serve --service SERVICE --listen LISTEN ARGS`, with `--metrics-listen off` unless
/// `args` gives a metrics listener.
pub fn serve_args<'a>(service: &'a str, listen: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut full = vec!["serve", "--service", service, "--listen", listen];
    if metrics_listen(args).is_none() {
        full.extend_from_slice(&["--metrics-listen", "off"]);
    }
    full.extend_from_slice(args);
    full
}

/// The metrics listener `--metrics-listen ADDR` in `args` gives, if any.
fn metrics_listen(args: &[&str]) -> Option<SocketAddr> {
    let at = args.iter().position(|a| *a == "--metrics-listen")?;
    args.get(at + 1)?.parse().ok()
}

/// `Service [NAME] revision [REV] is serving at ...` → (NAME, REV).
pub fn parse_serving(out: &str) -> Option<(String, String)> {
    let line = out.lines().find(|l| l.contains("is serving at"))?;
    let mut parts = line
        .split('[')
        .skip(1)
        .map(|p| p.split(']').next().unwrap_or(""));
    let svc = parts.next()?.to_string();
    let rev = parts.next()?.to_string();
    Some((svc, rev))
}

/// The probe's job-mode lines (`{"probe":"job",...}`) wherever they appear in `out`
/// (runlet may prefix them with a timestamp and follow them with fields).
pub fn probe_job_lines(out: &str) -> Vec<Value> {
    let mut found = Vec::new();
    for line in out.lines() {
        if !line.contains("\"probe\":\"job\"") {
            continue;
        }
        // The object's keys may come in any order: try each '{' until one parses as a
        // probe line.
        for (pos, _) in line.match_indices('{') {
            let mut stream = serde_json::Deserializer::from_str(&line[pos..]).into_iter::<Value>();
            if let Some(Ok(v)) = stream.next() {
                if v["probe"] == "job" {
                    found.push(v);
                    break;
                }
            }
        }
    }
    found
}

/// Where a service's requests go: an address and, for a service reached by name (the API
/// driver's URL), the `Host` that routes to it.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Sent as `Host` (and h2c's `:authority`) unless a request gives its own.
    pub host: Option<String>,
}

impl Target {
    pub async fn send(&self, req: &Request) -> Result<Response> {
        match &self.host {
            Some(h)
                if !req
                    .headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("host")) =>
            {
                http::send(self.addr, &req.clone().header("Host", h.clone())).await
            }
            _ => http::send(self.addr, req).await,
        }
    }

    /// GET `path` over cleartext HTTP/2 (prior knowledge); status and body.
    pub async fn h2c_get(&self, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
        let authority = self.host.clone().unwrap_or_else(|| self.addr.to_string());
        http::h2c_get_at(self.addr, &authority, path, timeout).await
    }
}

/// A service that serves: a `runlet serve` that said it is serving (CLI driver), or a
/// service whose CreateService operation succeeded (API driver).
pub struct Served {
    pub service: String,
    pub revision: String,
    /// Where its requests go (`--listen`, or the daemon's ingress).
    pub addr: SocketAddr,
    /// The `Host` that routes to it (API driver); `None`: any.
    host: Option<String>,
    /// Its metrics listener ([`Ctx::serve_with_metrics`], or the daemon's), if any.
    pub metrics: Option<SocketAddr>,
    backend: Backend,
}

enum Backend {
    Cli(Box<Proc>),
    Api(ApiServed),
}

/// A service deployed through the API; stopping it is DeleteService.
struct ApiServed {
    target: Arc<ApiTarget>,
    /// The deletion under way: accepted (routes removed) once the receiver turns true; the
    /// task ends when the operation is done (the instances stopped).
    stopping: Mutex<Option<Stopping>>,
}

type Stopping = (JoinHandle<Result<()>>, tokio::sync::watch::Receiver<bool>);

impl Served {
    /// Where its requests go.
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            host: self.host.clone(),
        }
    }

    /// The `Host` a client names it by: the one that routes to it (API driver), else
    /// `fallback`.
    pub fn host_or(&self, fallback: &str) -> String {
        self.host.clone().unwrap_or_else(|| fallback.to_string())
    }

    pub async fn send(&self, req: &Request) -> Result<Response> {
        self.target().send(req).await
    }

    pub async fn get(&self, path: &str) -> Result<Response> {
        self.send(&Request::get(path)).await
    }

    /// Sends GET `path` (within `secs` seconds) from a task of its own, to have a request
    /// in flight while the check does something else.
    pub fn spawn_get(&self, path: &str, secs: u64) -> JoinHandle<Result<Response>> {
        let (target, req) = (
            self.target(),
            Request::get(path).timeout(Duration::from_secs(secs)),
        );
        tokio::spawn(async move { target.send(&req).await })
    }

    /// GET `path`, the whole exchange within `secs` seconds.
    pub async fn get_within(&self, path: &str, secs: u64) -> Result<Response> {
        self.send(&Request::get(path).timeout(Duration::from_secs(secs)))
            .await
    }

    /// GET `path` over h2c.
    pub async fn h2c_get(&self, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
        self.target().h2c_get(path, timeout).await
    }

    /// The probe's JSON report for `path` (which must answer 200).
    pub async fn report_at(&self, path: &str) -> Result<Value> {
        let r = self.get(path).await?;
        if r.status != 200 {
            bail!(
                "GET {path}: status {}, want 200: {}",
                r.status,
                r.text().trim()
            );
        }
        r.json()
    }

    /// The probe's JSON report (`GET /`).
    pub async fn report(&self) -> Result<Value> {
        self.report_at("/").await
    }

    /// Waits until the probe reports at least `n` requests in flight, counting the asking
    /// `GET /` itself (so `n = 2` means one other request has reached the container);
    /// returns that report and how long it took to answer.
    pub async fn wait_probe_in_flight(&self, n: u64) -> Result<(Value, Duration)> {
        let deadline = Instant::now() + IN_FLIGHT_TIMEOUT;
        loop {
            let t0 = Instant::now();
            let r = self.report().await?;
            let answered = t0.elapsed();
            let seen = r["concurrency"]["in_flight"].as_u64().unwrap_or(0);
            if seen >= n {
                return Ok((r, answered));
            }
            ensure!(
                Instant::now() < deadline,
                "the probe reported {seen} request(s) in flight after {} s, want {n} (with the asking one)",
                IN_FLIGHT_TIMEOUT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until runlet's metrics (`runlet_instance_in_flight`) show at least `n` requests
    /// in flight on this service: evidence for checks that cannot ask the probe (its one
    /// slot is taken). Needs [`Ctx::serve_with_metrics`] (CLI driver) or the daemon's
    /// metrics listener (API driver).
    pub async fn wait_in_flight(&self, n: u64) -> Result<()> {
        let addr = self
            .metrics
            .ok_or_else(|| anyhow!("no metrics listener to read requests in flight from"))?;
        let seen = metrics::wait_in_flight(addr, &self.service, n, IN_FLIGHT_TIMEOUT).await?;
        ensure!(
            seen,
            "runlet_instance_in_flight did not reach {n} for {} within {} s",
            self.service,
            IN_FLIGHT_TIMEOUT.as_secs()
        );
        Ok(())
    }

    /// Its output: runlet's (CLI driver), or the daemon's lines about this service (API
    /// driver); the container's logs are in it.
    pub fn output(&self) -> String {
        match &self.backend {
            Backend::Cli(p) => p.output(),
            Backend::Api(a) => a.target.log_lines(&format!("{}-", self.service)),
        }
    }

    /// Waits until [`Served::output`] contains `needle` (log lines trail what caused them).
    pub async fn wait_output(&self, needle: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !self.output().contains(needle) {
            ensure!(
                Instant::now() < deadline,
                "runlet did not log {needle:?} within {}: {}",
                crate::checks::secs(limit),
                tail(&self.output(), 4)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Begins its shutdown without waiting: `SIGINT` to runlet (CLI driver), DeleteService
    /// (API driver).
    pub fn interrupt(&self) {
        match &self.backend {
            Backend::Cli(p) => p.interrupt(),
            Backend::Api(a) => {
                let Ok(mut slot) = a.stopping.lock() else {
                    return;
                };
                if slot.is_some() {
                    return;
                }
                let (tx, rx) = tokio::sync::watch::channel(false);
                let (t, name) = (a.target.clone(), self.service.clone());
                let task = tokio::spawn(async move {
                    let op = t.client.delete_service(&name).await?;
                    let _ = tx.send(true);
                    t.client
                        .wait(&op, Duration::from_secs(120))
                        .await
                        .and_then(client::ok_response)
                        .map(|_| ())
                });
                *slot = Some((task, rx));
            }
        }
    }

    /// After [`Served::interrupt`]: waits until the shutdown has begun, i.e. new requests
    /// are no longer routed to it (runlet logs that it drains; DeleteService answered).
    pub async fn wait_shutdown_began(&self, limit: Duration) -> Result<()> {
        match &self.backend {
            Backend::Cli(_) => self.wait_output("shutting down: draining", limit).await,
            Backend::Api(a) => {
                let rx = a
                    .stopping
                    .lock()
                    .ok()
                    .and_then(|s| s.as_ref().map(|(_, rx)| rx.clone()));
                let Some(mut rx) = rx else {
                    bail!("the service is not being deleted");
                };
                tokio::time::timeout(limit, rx.wait_for(|a| *a))
                    .await
                    .map_err(|_| {
                        anyhow!(
                            "DeleteService did not answer within {}",
                            crate::checks::secs(limit)
                        )
                    })?
                    .map_err(|_| anyhow!("DeleteService failed"))?;
                Ok(())
            }
        }
    }

    /// Waits for the shutdown to end (after [`Served::interrupt`]): runlet's exit, or the
    /// DeleteService operation done (its instances stopped; exit code 0 when it succeeded).
    pub async fn wait(self, timeout: Duration) -> Exited {
        let service = self.service.clone();
        match self.backend {
            Backend::Cli(p) => p.finish(timeout).await,
            Backend::Api(a) => {
                let t0 = Instant::now();
                let stopping = a.stopping.lock().ok().and_then(|mut s| s.take());
                let (code, note) = match stopping {
                    None => (Some(1), "the service was not being deleted".to_string()),
                    Some((task, _)) => match tokio::time::timeout(timeout, task).await {
                        Err(_) => (None, "DeleteService not done in time".into()),
                        Ok(Ok(Ok(()))) => (Some(0), String::new()),
                        Ok(Ok(Err(e))) => (Some(1), format!("DeleteService: {e:#}")),
                        Ok(Err(e)) => (Some(1), format!("DeleteService task: {e}")),
                    },
                };
                // The containers' last lines trail their exit in the daemon's output.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut output = a.target.log_lines(&format!("{service}-"));
                output.push_str(&note);
                Exited {
                    timed_out: code.is_none(),
                    code,
                    stdout: String::new(),
                    output,
                    elapsed: t0.elapsed(),
                }
            }
        }
    }

    /// Shuts it down and waits: runlet stops its instances (`SIGINT`), or the service is
    /// deleted.
    pub async fn stop(self) -> Exited {
        match self.backend {
            Backend::Cli(p) => p.stop().await,
            Backend::Api(_) => {
                self.interrupt();
                self.wait(Duration::from_secs(120)).await
            }
        }
    }
}

/// A finished `runlet job execute`.
#[derive(Debug)]
pub struct JobRun {
    pub exited: Exited,
    /// The probe's job-mode report lines, in the order they appeared.
    pub lines: Vec<Value>,
}

impl JobRun {
    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} after {:.1} s{}, {} probe line(s): {}",
            self.exited.describe_code(),
            self.exited.elapsed.as_secs_f64(),
            if self.exited.timed_out {
                " (stopped by the suite)"
            } else {
                ""
            },
            self.lines.len(),
            self.exited.tail(4)
        )
    }
}

/// `path` inside the images directory must exist.
pub fn require_file(p: &Path) -> Result<()> {
    if !p.is_file() {
        bail!(
            "{} not found: build the test images first (deploy/build.sh, or runlet-conformance build-images --out DIR)",
            p.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_line() {
        let out = "INFO starting\nService [svc-a] revision [svc-a-00001-x7q] is serving at http://127.0.0.1:1\n";
        assert_eq!(
            parse_serving(out),
            Some(("svc-a".into(), "svc-a-00001-x7q".into()))
        );
        assert_eq!(parse_serving("nothing"), None);
    }

    #[test]
    fn job_lines_inside_log_lines() {
        let out = "2026 INFO {\"probe\":\"job\",\"env\":{\"A\":\"1\"},\"pid\":1} task=0 stream=\"stdout\"\nother\n{\"probe\":\"job\",\"pid\":2}\n{\"probe\":\"job\",broken\n";
        let v = probe_job_lines(out);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0]["env"]["A"], "1");
        assert_eq!(v[1]["pid"], 2);
        // Keys in another order (serde_json sorts them), after a task prefix.
        let sorted =
            "[task 0 attempt 0] {\"argv\":[\"/probe\"],\"env\":{},\"pid\":1,\"probe\":\"job\"}";
        assert_eq!(probe_job_lines(sorted).len(), 1);
    }
}
