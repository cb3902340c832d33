//! `runlet-probe`: the conformance-test workload.
//!
//! A small static HTTP server (HTTP/1.1 and cleartext HTTP/2 with prior
//! knowledge) meant to run as PID 1 in an otherwise empty image. It reports
//! what it sees from inside the container (env, ids, files, mounts, cgroup
//! limits, request details, concurrency) and can be told to misbehave in
//! controlled ways (sleep, stream, allocate, write, exit, ...).
//!
//! Start-up knobs (environment, read once):
//!
//! | variable | effect |
//! |---|---|
//! | `PORT` | listen port (default 8080) on 0.0.0.0 |
//! | `PROBE_EXIT_CODE=N` | print a line to stderr and exit N at once |
//! | `PROBE_LISTEN_DELAY_MS=N` | sleep N ms before binding |
//! | `PROBE_NEVER_LISTEN=1` | never bind; just wait (SIGTERM still handled) |
//! | `PROBE_IGNORE_SIGTERM=1` | SIGTERM is logged but does not exit |
//! | `PROBE_SIGTERM_EXIT_DELAY_MS=N` | exit 0 this long after SIGTERM (default 0) |
//! | `PROBE_LOG_REQUESTS=1` | print one stdout line per request |
//! | `PROBE_FETCH_AT_START=URL` | GET an `http://` URL before listening, exit 3 if that fails; serve its body at `/fetched` ([`fetch`]) |
//! | `PROBE_MODE=job` or argv\[1\]=`job` | job mode, see [`run_job`] |
//!
//! Request knobs are described in [`handler`] and [`query`].

// A separate program that drives or serves runlet from outside and measures it by the wall
// clock: clippy.toml's ban on std's Instant and Mutex (for runlet's own, virtual-time code)
// does not apply here.
#![allow(clippy::disallowed_types)]

mod body;
mod fetch;
mod handler;
mod query;
mod report;
mod state;
mod syscalls;
mod ws;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::state::{now_millis, StdinStatus, STATE};

/// Server-mode settings from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub port: u16,
    pub listen_delay_ms: u64,
    pub never_listen: bool,
    pub ignore_sigterm: bool,
    pub sigterm_exit_delay_ms: u64,
    pub log_requests: bool,
    pub fetch_at_start: Option<String>,
}

/// Job-mode settings from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    pub fail_until_attempt: Option<u64>,
    pub attempt: u64,
    pub sleep_ms: u64,
    pub alloc_mib: Option<u64>,
    pub exit_code: i32,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn env_num<T: std::str::FromStr>(get: Lookup, key: &str) -> Result<Option<T>, String> {
    match get(key) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{key}={v:?} is not a valid number")),
    }
}

fn env_flag(get: Lookup, key: &str) -> bool {
    matches!(
        get(key).as_deref().map(str::trim),
        Some("1") | Some("true") | Some("yes") | Some("on")
    )
}

impl Config {
    pub fn from_lookup(get: Lookup) -> Result<Config, String> {
        Ok(Config {
            port: env_num(get, "PORT")?.unwrap_or(8080),
            listen_delay_ms: env_num(get, "PROBE_LISTEN_DELAY_MS")?.unwrap_or(0),
            never_listen: env_flag(get, "PROBE_NEVER_LISTEN"),
            ignore_sigterm: env_flag(get, "PROBE_IGNORE_SIGTERM"),
            sigterm_exit_delay_ms: env_num(get, "PROBE_SIGTERM_EXIT_DELAY_MS")?.unwrap_or(0),
            log_requests: env_flag(get, "PROBE_LOG_REQUESTS"),
            fetch_at_start: get("PROBE_FETCH_AT_START").filter(|u| !u.trim().is_empty()),
        })
    }
}

impl JobConfig {
    pub fn from_lookup(get: Lookup) -> Result<JobConfig, String> {
        Ok(JobConfig {
            fail_until_attempt: env_num(get, "PROBE_FAIL_UNTIL_ATTEMPT")?,
            attempt: env_num(get, "CLOUD_RUN_TASK_ATTEMPT")?.unwrap_or(0),
            sleep_ms: env_num(get, "PROBE_SLEEP_MS")?.unwrap_or(0),
            alloc_mib: env_num(get, "PROBE_ALLOC_MIB")?,
            exit_code: env_num(get, "PROBE_JOB_EXIT")?.unwrap_or(0),
        })
    }

    /// Should this attempt fail on purpose?
    pub fn should_fail(&self) -> bool {
        self.fail_until_attempt.is_some_and(|k| self.attempt < k)
    }
}

fn real_env(key: &str) -> Option<String> {
    std::env::var_os(key).map(|v| v.to_string_lossy().into_owned())
}

/// Flushes stdout/stderr and exits the process with `code`.
pub fn exit_now(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fatal(msg: &str) -> ! {
    eprintln!("probe: {msg}");
    exit_now(2)
}

fn main() {
    STATE.started_at.store(now_millis(), Ordering::SeqCst);

    match env_num::<i32>(&real_env, "PROBE_EXIT_CODE") {
        Ok(Some(code)) => {
            eprintln!("probe: PROBE_EXIT_CODE={code}: exiting with code {code}");
            exit_now(code);
        }
        Ok(None) => {}
        Err(e) => fatal(&e),
    }

    let job = std::env::args_os().nth(1).is_some_and(|a| a == "job")
        || real_env("PROBE_MODE").as_deref() == Some("job");
    let cfg = Config::from_lookup(&real_env).unwrap_or_else(|e| fatal(&e));
    eprintln!("probe: stderr check");

    let code = if job {
        let jcfg = JobConfig::from_lookup(&real_env).unwrap_or_else(|e| fatal(&e));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| fatal(&format!("cannot start runtime: {e}")));
        rt.block_on(run_job(cfg, jcfg))
    } else {
        start_stdin_check();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| fatal(&format!("cannot start runtime: {e}")));
        rt.block_on(serve(Arc::new(cfg)))
    };
    exit_now(code)
}

/// Reads one byte of stdin in a thread and records whether it hit EOF.
/// Waits at most 50 ms for the answer; a blocked read stays blocked (and
/// the report says so).
fn start_stdin_check() {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("stdin-check".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            let status = loop {
                // SAFETY: reads at most 1 byte into a valid 1-byte buffer.
                let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
                if n == 0 {
                    break StdinStatus {
                        eof: true,
                        detail: "eof".into(),
                    };
                } else if n > 0 {
                    break StdinStatus {
                        eof: false,
                        detail: "data".into(),
                    };
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    break StdinStatus {
                        eof: false,
                        detail: format!("error: {e}"),
                    };
                }
            };
            let _ = STATE.stdin.set(status);
            let _ = tx.send(());
        });
    if spawned.is_ok() {
        let _ = rx.recv_timeout(Duration::from_millis(50));
    }
}

/// Installs the SIGTERM handler (see the module docs). Must run inside the
/// runtime.
fn install_sigterm(cfg: &Config) {
    let mut sig = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("probe: cannot install SIGTERM handler: {e}");
            return;
        }
    };
    let ignore = cfg.ignore_sigterm;
    let delay = Duration::from_millis(cfg.sigterm_exit_delay_ms);
    tokio::spawn(async move {
        let mut exiting = false;
        while sig.recv().await.is_some() {
            let t = now_millis();
            let _ = STATE
                .sigterm_at
                .compare_exchange(0, t, Ordering::SeqCst, Ordering::SeqCst);
            if ignore {
                say(&format!("probe: SIGTERM received at {t} (ignoring)"));
                continue;
            }
            say(&format!("probe: SIGTERM received at {t}"));
            if !exiting {
                exiting = true;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    say("probe: exiting with code 0 after SIGTERM");
                    exit_now(0);
                });
            }
        }
    });
}

/// Server mode. Only returns on a fatal error (exit code).
async fn serve(cfg: Arc<Config>) -> i32 {
    install_sigterm(&cfg);
    if cfg.listen_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.listen_delay_ms)).await;
    }
    if let Some(url) = &cfg.fetch_at_start {
        match fetch::get(url).await {
            Ok(body) => {
                say(&format!("probe: fetched {url} ({} bytes)", body.len()));
                let _ = fetch::FETCHED.set(body);
            }
            Err(e) => {
                eprintln!("probe: PROBE_FETCH_AT_START: {e}");
                return 3;
            }
        }
    }
    if cfg.never_listen {
        eprintln!("probe: PROBE_NEVER_LISTEN set: not listening");
        std::future::pending::<()>().await;
    }
    let addr = SocketAddr::from(([0, 0, 0, 0], cfg.port));
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("probe: cannot listen on {addr}: {e}");
            return 1;
        }
    };
    STATE.listening_at.store(now_millis(), Ordering::SeqCst);
    let shown = listener.local_addr().unwrap_or(addr);
    say(&format!("probe: listening on {shown}"));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("probe: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let cfg = cfg.clone();
        let log = cfg.log_requests;
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req| handler::handle(req, remote, cfg.clone()));
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await
            {
                if log {
                    eprintln!("probe: connection from {remote}: {e}");
                }
            }
        });
    }
}

/// Job mode: print `{"probe":"job","env":{..},"argv":[..],"proc_status":{..},"syscalls":{..}}`
/// on one line (`syscalls` as `/syscalls` reports it);
/// fail with 1 if `CLOUD_RUN_TASK_ATTEMPT < PROBE_FAIL_UNTIL_ATTEMPT`;
/// sleep `PROBE_SLEEP_MS`; allocate `PROBE_ALLOC_MIB`; exit `PROBE_JOB_EXIT`.
async fn run_job(cfg: Config, job: JobConfig) -> i32 {
    install_sigterm(&cfg);
    let line = json!({
        "probe": "job",
        "env": report::env_map(),
        "argv": report::argv(),
        "pid": std::process::id(),
        "proc_status": report::parse_status(
            &std::fs::read_to_string("/proc/self/status").unwrap_or_default()
        ),
        "syscalls": syscalls::report(),
    });
    say(&line.to_string());
    if job.should_fail() {
        eprintln!(
            "probe: attempt {} < PROBE_FAIL_UNTIL_ATTEMPT={}: exiting with code 1",
            job.attempt,
            job.fail_until_attempt.unwrap_or(0)
        );
        return 1;
    }
    if job.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    }
    if let Some(mib) = job.alloc_mib {
        let len = (mib as usize).saturating_mul(1024 * 1024);
        let mut v: Vec<u8> = Vec::new();
        if let Err(e) = v.try_reserve_exact(len) {
            eprintln!("probe: cannot allocate {mib} MiB: {e}");
            return 1;
        }
        v.resize(len, 0x5a);
        std::hint::black_box(&v);
        eprintln!("probe: allocated and touched {mib} MiB");
    }
    eprintln!("probe: job done, exiting with code {}", job.exit_code);
    job.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn config_defaults() {
        let c = Config::from_lookup(&lookup(&[])).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.listen_delay_ms, 0);
        assert!(!c.never_listen && !c.ignore_sigterm && !c.log_requests);
        assert_eq!(c.sigterm_exit_delay_ms, 0);
    }

    #[test]
    fn config_values_and_errors() {
        let c = Config::from_lookup(&lookup(&[
            ("PORT", "18080"),
            ("PROBE_LISTEN_DELAY_MS", "250"),
            ("PROBE_NEVER_LISTEN", "1"),
            ("PROBE_IGNORE_SIGTERM", "true"),
            ("PROBE_SIGTERM_EXIT_DELAY_MS", "3000"),
        ]))
        .unwrap();
        assert_eq!(c.port, 18080);
        assert_eq!(c.listen_delay_ms, 250);
        assert!(c.never_listen && c.ignore_sigterm);
        assert_eq!(c.sigterm_exit_delay_ms, 3000);
        assert!(Config::from_lookup(&lookup(&[("PORT", "http")])).is_err());
        assert!(
            !Config::from_lookup(&lookup(&[("PROBE_NEVER_LISTEN", "0")]))
                .unwrap()
                .never_listen
        );
    }

    #[test]
    fn job_failure_rule() {
        let j = JobConfig::from_lookup(&lookup(&[
            ("PROBE_FAIL_UNTIL_ATTEMPT", "2"),
            ("CLOUD_RUN_TASK_ATTEMPT", "1"),
        ]))
        .unwrap();
        assert!(j.should_fail());
        let j = JobConfig::from_lookup(&lookup(&[
            ("PROBE_FAIL_UNTIL_ATTEMPT", "2"),
            ("CLOUD_RUN_TASK_ATTEMPT", "2"),
        ]))
        .unwrap();
        assert!(!j.should_fail());
        let j = JobConfig::from_lookup(&lookup(&[("PROBE_JOB_EXIT", "7")])).unwrap();
        assert!(!j.should_fail());
        assert_eq!(j.exit_code, 7);
        assert_eq!(j.attempt, 0);
    }
}
