//! `runlet-conformance`: the conformance suite's command line.
//!
//! * `runlet-conformance --runlet PATH [--containerd-address SOCK] [--images DIR]
//!   [--state-dir DIR] [--only PREFIX[,PREFIX...]] [--format table|json]
//!   [--write-doc PATH | --check-doc PATH] [--self-test] [--parallel N]` runs the checks
//!   against a runlet binary and prints a table (clause, check, PASS/FAIL/SKIP, duration).
//! * `--via api [--endpoint HOST:PORT] [--project P --region R]` runs them through the Admin
//!   API instead: against the `runlet daemon` the suite starts (without `--endpoint`), or
//!   against the endpoint given. `--outcomes PATH` writes what both drivers must agree on.
//!   Exit status: 0 when nothing FAILs (and the doc matches, and the self-test found no
//!   defect), 1 otherwise, 2 when the suite could not run.
//! * `runlet-conformance --list` prints the checks without running them.
//! * `runlet-conformance build-images --out DIR [--probe PATH] [--busybox PATH]` writes the
//!   test image archives (see [`runlet_conformance::imagebuild`]).

// A separate program that drives or serves runlet from outside and measures it by the wall
// clock: clippy.toml's ban on std's Instant and Mutex (for runlet's own, virtual-time code)
// does not apply here.
#![allow(clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use runlet_conformance::checks;
use runlet_conformance::contract::Contract;
use runlet_conformance::harness::Env;
use runlet_conformance::imagebuild::{build_test_images, TestImageSources};
use runlet_conformance::report::{self, SelfTestRow};
use runlet_conformance::runner::{self, Outcome, Planned, Row, Via};
use runlet_conformance::selftest::{self, Verdict};
use runlet_conformance::via_api::daemon::{self, Daemon};
use runlet_conformance::via_api::{ApiTarget, Client, LogSource};

/// runlet's conformance suite: black-box checks named after the contract's clauses.
#[derive(Debug, Parser)]
#[command(
    name = "runlet-conformance",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    suite: SuiteArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the test image archives (OCI and docker-save tars) into a directory.
    BuildImages {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The probe binary to put at /probe.
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-gnu/release/runlet-probe"
        )]
        probe: PathBuf,
        /// A static busybox binary for the busybox image.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Driver {
    /// `runlet serve` and `runlet job execute`.
    Cli,
    /// The Cloud Run Admin API v2.
    Api,
}

#[derive(Debug, Args)]
struct SuiteArgs {
    /// Deploy every service in this execution environment (`runlet serve/deploy
    /// --execution-environment`, the API's `executionEnvironment`) unless the check chooses
    /// one: `gen1` runs the suite under gVisor (the second column of docs/conformance.md).
    #[arg(long, value_name = "gen1|gen2", value_parser = ["gen1", "gen2"])]
    execution_environment: Option<String>,
    /// How the checks deploy services and run jobs: runlet's command line, or the Admin API
    /// (checks listed as runlet-only in contract/clauses.toml SKIP).
    #[arg(long, value_enum, default_value_t = Driver::Cli)]
    via: Driver,
    /// With --via api: the Admin API to use. Without it, the suite starts `runlet daemon`
    /// (on free loopback ports, the suite's containerd) and stops it at the end.
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: Option<String>,
    /// With --endpoint: the file that endpoint's daemon writes its output to, where the
    /// checks read container logs (without it, those checks FAIL).
    #[arg(long, value_name = "PATH", requires = "endpoint")]
    daemon_log: Option<PathBuf>,
    /// With --endpoint: that daemon's metrics listener (`--metrics-listen`), where checks
    /// read the requests in flight when the probe cannot be asked (without it, they FAIL).
    #[arg(long, value_name = "HOST:PORT", requires = "endpoint")]
    daemon_metrics: Option<String>,
    /// With --via api: the project of the resources' parent.
    #[arg(long, value_name = "P", default_value = "runlet-conformance")]
    project: String,
    /// With --via api: the region (location) of the resources' parent.
    #[arg(long, value_name = "R", default_value = "local")]
    region: String,
    /// With --via api: a file holding a token sent as `Authorization: Bearer` (runlet's
    /// --api-token-file).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// With --via api: put before the image names (probe, probe-user, busybox) for an
    /// endpoint that pulls them from a registry; the suite then loads no archive.
    #[arg(long, value_name = "PREFIX")]
    image_prefix: Option<String>,
    /// Write `CHECK<TAB>OUTCOME` per row, runlet-only checks left out: the lines both
    /// drivers must agree on (deploy/test.sh diffs them).
    #[arg(long, value_name = "PATH")]
    outcomes: Option<PathBuf>,
    /// The runlet binary to test.
    #[arg(long, value_name = "PATH")]
    runlet: Option<PathBuf>,
    /// containerd's socket, passed to every runlet (with --no-embedded-containerd).
    #[arg(
        long,
        value_name = "SOCK",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd_address: String,
    /// The test image archives (deploy/build.sh writes them to target/images).
    #[arg(long, value_name = "DIR", default_value = "target/images")]
    images: PathBuf,
    /// runlet's --state-dir (runlet's default when absent).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Run only the rows whose ID (CLAUSE/check) starts with one of these prefixes.
    #[arg(long, value_name = "PREFIX[,PREFIX...]")]
    only: Option<String>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Rewrite the generated sections of this file (docs/conformance.md) with the results.
    #[arg(long, value_name = "PATH", conflicts_with = "check_doc")]
    write_doc: Option<PathBuf>,
    /// Fail unless this file's generated sections match the results.
    #[arg(long, value_name = "PATH")]
    check_doc: Option<PathBuf>,
    /// Also run the checks that must catch a deliberately broken runlet against one, and
    /// report whether they do.
    #[arg(long)]
    self_test: bool,
    /// Checks running at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: usize,
    /// Where each check's runlet output is written.
    #[arg(long, value_name = "DIR", default_value = "target/conformance-logs")]
    logs: PathBuf,
    /// List the checks (and skipped parts) and exit.
    #[arg(long)]
    list: bool,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::BuildImages {
            out,
            probe,
            busybox,
        }) => match build_test_images(&out, &TestImageSources { probe, busybox }) {
            Ok(written) => {
                for archive in written {
                    println!(
                        "{}\t{} bytes\t{}\t({})",
                        archive.path.display(),
                        archive.size,
                        archive.image,
                        archive.description
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("runlet-conformance: {e:#}");
                1
            }
        },
        None => match suite(cli.suite) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("runlet-conformance: {e:#}");
                2
            }
        },
    };
    std::process::exit(code);
}

fn suite(a: SuiteArgs) -> Result<i32> {
    let contract = Contract::embedded()?;
    let registry = checks::all();
    let via = match a.via {
        Driver::Cli => Via::Cli,
        Driver::Api => Via::Api,
    };
    let mut planned = runner::plan(&contract, &registry, a.only.as_deref(), via);
    let gen1 = a.execution_environment.as_deref() == Some("gen1");
    if gen1 {
        planned = runner::under_gen1(&contract, planned);
        if a.self_test {
            bail!("--self-test runs with the default execution environment only");
        }
    }
    if a.list {
        for p in &planned {
            match p {
                Planned::Run(c) => println!("{:<45} {}", c.id(), c.verifies),
                Planned::Skip { reason, .. } => println!("{:<45} SKIP: {reason}", p.id()),
                Planned::NotApplicable { reason, .. } => {
                    println!("{:<45} SKIP: not applicable: {reason}", p.id())
                }
            }
        }
        return Ok(0);
    }
    let Some(runlet) = a.runlet.clone() else {
        bail!("--runlet PATH is required (or --list, or the build-images command)");
    };
    let runlet = runlet
        .canonicalize()
        .with_context(|| format!("--runlet {}", runlet.display()))?;
    if a.only.is_some() && (a.write_doc.is_some() || a.check_doc.is_some()) {
        bail!("--write-doc / --check-doc need the whole suite: drop --only");
    }
    if via == Via::Api && (a.self_test || a.write_doc.is_some() || a.check_doc.is_some()) {
        bail!("--self-test, --write-doc and --check-doc are for the CLI driver (the doc holds its table)");
    }
    if planned.is_empty() {
        bail!("nothing matches --only {}", a.only.as_deref().unwrap_or(""));
    }
    let env = Arc::new(Env {
        runlet: runlet.clone(),
        containerd: a.containerd_address.clone(),
        state_dir: a.state_dir.clone(),
        images: a.images.clone(),
        api: None,
        execution_environment: a.execution_environment.clone(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        if via == Via::Cli {
            return run_suite(a, contract, env, planned).await;
        }
        let (target, mut started) = api_target(&a, &env).await?;
        let env = Arc::new(Env {
            api: Some(Arc::new(target)),
            ..(*env).clone()
        });
        let r = run_suite(a, contract, env, planned).await;
        if let Some(d) = started.as_mut() {
            let how = d.stop().await;
            eprintln!("runlet daemon stopped ({how})");
        }
        r
    })
}

/// The API driver's target: `--endpoint`, or a daemon the suite starts (returned too, to
/// stop at the end).
async fn api_target(a: &SuiteArgs, env: &Env) -> Result<(ApiTarget, Option<Daemon>)> {
    let token = match &a.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("--token-file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let parent = format!("projects/{}/locations/{}", a.project, a.region);
    if let Some(e) = &a.endpoint {
        let endpoint = daemon::resolve(e).await?;
        let metrics = match &a.daemon_metrics {
            Some(m) => Some(daemon::resolve(m).await?),
            None => None,
        };
        return Ok((
            ApiTarget {
                client: Client {
                    endpoint,
                    parent,
                    token,
                },
                logs: a.daemon_log.clone().map(LogSource::File),
                metrics,
                image_prefix: a.image_prefix.clone(),
            },
            None,
        ));
    }
    // The daemon's state dir beside the suite's (a daemon locks its own).
    let state = match &env.state_dir {
        Some(d) => {
            let mut name = d.file_name().unwrap_or_default().to_os_string();
            name.push("-api-daemon");
            d.with_file_name(name)
        }
        None => {
            std::env::temp_dir().join(format!("runlet-conformance-daemon-{}", std::process::id()))
        }
    };
    let d = Daemon::start(&env.runlet, &env.containerd, &state).await?;
    eprintln!(
        "runlet daemon: Admin API at {}, state dir {}",
        d.api,
        d.state_dir.display()
    );
    Ok((
        ApiTarget {
            client: Client {
                endpoint: d.api,
                parent,
                token,
            },
            logs: Some(LogSource::Collected(d.output.clone())),
            metrics: Some(d.metrics),
            image_prefix: a.image_prefix.clone(),
        },
        Some(d),
    ))
}

/// Turns true on Ctrl-C or SIGTERM: running checks are abandoned, their runlets stopped.
fn cancellation() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        eprintln!("interrupted: stopping the runlets the suite started");
        let _ = tx.send(true);
    });
    rx
}

async fn run_suite(
    a: SuiteArgs,
    contract: Contract,
    env: Arc<Env>,
    planned: Vec<Planned>,
) -> Result<i32> {
    let cancel = cancellation();
    let opts = runner::Options {
        parallel: a.parallel,
        logs: Some(a.logs.clone()),
        label: "suite",
        break_each: false,
    };
    // An endpoint pulling the images from a registry needs no archive loaded.
    let load = env.api.as_ref().is_none_or(|t| t.image_prefix.is_none());
    let before = if load {
        Some(runner::prepare(&env).await?)
    } else {
        None
    };
    let rows = runner::run(env.clone(), &planned, &opts, cancel.clone()).await;

    let selftest_rows = if a.self_test && !*cancel.borrow() {
        Some(self_test(&env, &planned, &rows, &opts, cancel.clone()).await?)
    } else {
        None
    };
    if let Some(before) = &before {
        if let Err(e) = runner::cleanup(&env, before).await {
            eprintln!("warning: removing the images the suite loaded: {e:#}");
        }
    }
    if let Some(path) = &a.outcomes {
        std::fs::write(path, runner::outcomes(&contract, &rows))
            .with_context(|| format!("writing {}", path.display()))?;
    }

    match a.format {
        Format::Table => {
            print!("{}", report::table(&rows));
            if let Some(st) = &selftest_rows {
                println!();
                print!("{}", report::selftest_table(st));
            }
        }
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report::json(
                &contract,
                &rows,
                selftest_rows.as_deref()
            ))?
        ),
    }

    let mut ok = runner::all_passed(&rows);
    if let Some(st) = &selftest_rows {
        if st.iter().any(|r| r.verdict == Verdict::Defect) {
            eprintln!("self-test: some checks PASS against a broken runlet (DEFECT above)");
            ok = false;
        }
    }
    // Under gen1 the results are the doc's second table (the gen1 column).
    let section = match a.execution_environment.as_deref() {
        Some("gen1") => "suite-gen1",
        _ => "suite",
    };
    if let Some(path) = &a.write_doc {
        let doc = render_doc(path, section, &contract, &rows, selftest_rows.as_deref())?;
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &a.check_doc {
        let want = render_doc(path, section, &contract, &rows, selftest_rows.as_deref())?;
        let have = std::fs::read_to_string(path).unwrap_or_default();
        if let Some((line, h, w)) = report::first_difference(&have, &want) {
            eprintln!(
                "{} does not match these results (line {line}):\n  committed: {h}\n  now:       {w}\nRegenerate it with --write-doc {} (and --self-test if CI runs it).",
                path.display(),
                path.display()
            );
            ok = false;
        } else {
            eprintln!("{} matches these results", path.display());
        }
    }
    if *cancel.borrow() {
        return Ok(130);
    }
    Ok(if ok { 0 } else { 1 })
}

/// The doc at `path` (or the template) with this run's generated sections (the suite's
/// results in `section`).
fn render_doc(
    path: &Path,
    section: &str,
    contract: &Contract,
    rows: &[Row],
    selftest_rows: Option<&[SelfTestRow]>,
) -> Result<String> {
    let current = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => report::DOC_TEMPLATE.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut doc = report::replace_section(&current, section, &report::doc_suite(contract, rows));
    if let Some(st) = selftest_rows {
        doc = report::replace_section(&doc, "self-test", &report::doc_selftest(st));
    }
    Ok(doc)
}

/// Runs the checks that declare a mangling against the broken runlet and compares.
async fn self_test(
    env: &Arc<Env>,
    planned: &[Planned],
    honest: &[Row],
    opts: &runner::Options,
    cancel: watch::Receiver<bool>,
) -> Result<Vec<SelfTestRow>> {
    let targets: Vec<Planned> = planned
        .iter()
        .filter(|p| matches!(p, Planned::Run(c) if c.breaks_with.is_some()))
        .cloned()
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let script = std::env::temp_dir().join(format!(
        "runlet-conformance-broken-runlet-{}.sh",
        std::process::id()
    ));
    std::fs::write(&script, selftest::wrapper_script(&env.runlet))
        .with_context(|| format!("writing {}", script.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    eprintln!(
        "self-test: {} checks against a broken runlet ({})",
        targets.len(),
        script.display()
    );
    let broken_env = Arc::new(Env {
        runlet: script.clone(),
        ..(**env).clone()
    });
    let broken_opts = runner::Options {
        label: "broken",
        break_each: true,
        logs: opts.logs.as_ref().map(|d| d.join("self-test")),
        ..opts.clone()
    };
    let broken = runner::run(broken_env, &targets, &broken_opts, cancel).await;
    let _ = std::fs::remove_file(&script);
    Ok(targets
        .iter()
        .zip(broken)
        .filter_map(|(p, b)| {
            let Planned::Run(c) = p else { return None };
            let mangle = c.breaks_with?;
            let id = c.id();
            let h = honest
                .iter()
                .find(|r| r.id() == id)
                .map(|r| r.outcome.clone())
                .unwrap_or(Outcome::Fail("did not run".into()));
            let verdict = Verdict::of(h == Outcome::Pass, b.outcome == Outcome::Pass);
            Some(SelfTestRow {
                id,
                mangle,
                honest: h,
                broken: b.outcome,
                verdict,
            })
        })
        .collect())
}
