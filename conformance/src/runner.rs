//! Running the suite: which rows a selection holds, the images every check needs, running
//! checks in parallel (each with its own service name, timeout and runlets), making sure
//! every runlet is stopped and nothing of a check is left in containerd.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::checks::Check;
use crate::contract::Contract;
use crate::harness::{require_file, Ctx, Env};

/// The archives loaded before any check runs (checks refer to them as `probe`,
/// `probe-user` and `busybox`).
pub const SETUP_ARCHIVES: &[&str] = &["probe.oci.tar", "probe-user.oci.tar", "busybox.oci.tar"];

/// How one row of the table came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Only ever with a reason from `contract/clauses.toml`.
    Skip(String),
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail(_) => "FAIL",
            Outcome::Skip(_) => "SKIP",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Outcome::Pass => "",
            Outcome::Fail(d) | Outcome::Skip(d) => d,
        }
    }
}

/// One row of the selection, before running.
#[derive(Clone)]
pub enum Planned {
    Run(Check),
    /// A part of a clause `clauses.toml` skips, with its reason.
    Skip {
        clause: String,
        name: String,
        reason: String,
    },
    /// A clause that cannot apply to a single node.
    NotApplicable {
        clause: String,
        reason: String,
    },
}

impl Planned {
    /// `CLAUSE/name`, or `CLAUSE` for a clause that does not apply.
    pub fn id(&self) -> String {
        match self {
            Planned::Run(c) => c.id(),
            Planned::Skip { clause, name, .. } => format!("{clause}/{name}"),
            Planned::NotApplicable { clause, .. } => clause.clone(),
        }
    }

    pub fn clause(&self) -> &str {
        match self {
            Planned::Run(c) => c.clause,
            Planned::Skip { clause, .. } | Planned::NotApplicable { clause, .. } => clause,
        }
    }
}

/// One row of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    pub clause: String,
    /// The check's (or skipped part's) name; `None` for a clause that does not apply.
    pub check: Option<String>,
    pub verifies: String,
    pub outcome: Outcome,
    /// `None` for rows that did not run.
    pub duration: Option<Duration>,
}

impl Row {
    pub fn id(&self) -> String {
        match &self.check {
            Some(c) => format!("{}/{c}", self.clause),
            None => self.clause.clone(),
        }
    }
}

/// Does `id` match one of the comma-separated prefixes (all match when `only` is `None`)?
pub fn selected(id: &str, only: Option<&str>) -> bool {
    match only {
        None => true,
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .any(|p| id.starts_with(p)),
    }
}

/// Which driver runs the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `runlet serve` / `runlet job execute` (and runlet's own flags).
    Cli,
    /// The Admin API: the clauses' `runlet_only` checks SKIP.
    Api,
}

/// The reason prefix of a runlet-only check's SKIP under the API driver.
pub const RUNLET_ONLY: &str = "runlet-only";

/// The rows of a selection, in the contract's order: each clause's checks (registry order),
/// then its skipped parts; or one row for a clause that does not apply. Under the API
/// driver a clause's runlet-only checks are SKIP rows with their reason.
pub fn plan(contract: &Contract, checks: &[Check], only: Option<&str>, via: Via) -> Vec<Planned> {
    let mut rows = Vec::new();
    for clause in &contract.clauses {
        if let Some(reason) = &clause.not_applicable {
            rows.push(Planned::NotApplicable {
                clause: clause.id.clone(),
                reason: reason.clone(),
            });
            continue;
        }
        rows.extend(checks.iter().filter(|c| c.clause == clause.id).map(|c| {
            match clause.runlet_only.get(c.name) {
                Some(reason) if via == Via::Api => Planned::Skip {
                    clause: clause.id.clone(),
                    name: c.name.to_string(),
                    reason: format!("{RUNLET_ONLY}: {reason}"),
                },
                _ => Planned::Run(*c),
            }
        }));
        rows.extend(clause.skip.iter().map(|(name, reason)| Planned::Skip {
            clause: clause.id.clone(),
            name: name.clone(),
            reason: reason.clone(),
        }));
    }
    rows.retain(|r| selected(&r.id(), only));
    rows
}

/// The reason prefix of a gen2-only check's SKIP under `--execution-environment gen1`.
pub const GEN2_ONLY: &str = "gen2-only";

/// The rows of a run under gen1 (gVisor): the clauses' `gen2_only` checks become SKIP rows
/// with their reason; the rest is `rows` unchanged.
pub fn under_gen1(contract: &Contract, rows: Vec<Planned>) -> Vec<Planned> {
    rows.into_iter()
        .map(|r| match r {
            Planned::Run(c) => match contract.gen2_only(&c.id()) {
                Some(reason) => Planned::Skip {
                    clause: c.clause.to_string(),
                    name: c.name.to_string(),
                    reason: format!("{GEN2_ONLY}: {reason}"),
                },
                None => Planned::Run(c),
            },
            other => other,
        })
        .collect()
}

/// The service / job name of a check: `c<registry index>-<clause>-<name>`, at most 40
/// characters. The index makes it unique and never a prefix of another check's name.
pub fn service_name(index: usize, check: &Check) -> String {
    let slug = format!("{}-{}", check.clause, check.name).to_ascii_lowercase();
    let mut name = format!("c{index:02}-{slug}");
    name.truncate(40);
    name.trim_end_matches('-').to_string()
}

/// Loads the setup archives; returns the images that existed before (to keep at cleanup).
pub async fn prepare(env: &Env) -> Result<BTreeSet<String>> {
    for a in SETUP_ARCHIVES {
        require_file(&env.archive(a))?;
    }
    let before: BTreeSet<String> = env
        .image_names()
        .await
        .with_context(|| {
            format!(
                "listing images with {} (is containerd running at {}?)",
                env.runlet.display(),
                env.containerd
            )
        })?
        .into_iter()
        .collect();
    for a in SETUP_ARCHIVES {
        let path = env.archive(a).to_string_lossy().into_owned();
        let out = env
            .run(
                &["image", "load", "--quiet", &path],
                Duration::from_secs(120),
            )
            .await?;
        if !out.success() {
            bail!("runlet image load {path}: {}", out.tail(5));
        }
    }
    Ok(before)
}

/// Removes the images the run added (those not in `before`).
pub async fn cleanup(env: &Env, before: &BTreeSet<String>) -> Result<()> {
    let added: Vec<String> = env
        .image_names()
        .await?
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let mut args = vec!["image", "rm"];
    args.extend(added.iter().map(String::as_str));
    let out = env.run(&args, Duration::from_secs(60)).await?;
    if !out.success() {
        bail!("runlet image rm {}: {}", added.join(" "), out.tail(3));
    }
    Ok(())
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Checks running at once.
    pub parallel: usize,
    /// Where each check's runlet output is written (`<id>.log`), if anywhere.
    pub logs: Option<PathBuf>,
    /// Prefix of the progress lines on stderr (e.g. "suite", "broken").
    pub label: &'static str,
    /// Tell a broken runlet each check's own mangling (the self-test's second pass).
    pub break_each: bool,
}

/// Runs the selection; returns one row per planned row, in plan order. Slow checks start
/// first. When `cancel` turns true, running checks are abandoned (their runlets are still
/// stopped) and FAIL as interrupted.
pub async fn run(
    env: Arc<Env>,
    planned: &[Planned],
    opts: &Options,
    cancel: watch::Receiver<bool>,
) -> Vec<Row> {
    let registry = crate::checks::all();
    let index_of = |c: &Check| {
        registry
            .iter()
            .position(|r| r.id() == c.id())
            .unwrap_or(registry.len())
    };
    let mut rows: Vec<Option<Row>> = vec![None; planned.len()];
    let mut order: Vec<(usize, Check)> = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        match p {
            Planned::Run(c) => order.push((i, *c)),
            Planned::Skip {
                clause,
                name,
                reason,
            } => {
                rows[i] = Some(Row {
                    clause: clause.clone(),
                    check: Some(name.clone()),
                    verifies: String::new(),
                    outcome: Outcome::Skip(reason.clone()),
                    duration: None,
                })
            }
            Planned::NotApplicable { clause, reason } => {
                rows[i] = Some(Row {
                    clause: clause.clone(),
                    check: None,
                    verifies: String::new(),
                    outcome: Outcome::Skip(format!("not applicable: {reason}")),
                    duration: None,
                })
            }
        }
    }
    order.sort_by_key(|(i, c)| (!c.slow, *i));

    if let Some(dir) = &opts.logs {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("warning: cannot create {}: {e}", dir.display());
        }
    }
    let permits = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let mut set = JoinSet::new();
    for (i, check) in order {
        let ctx = Ctx::new(env.clone(), service_name(index_of(&check), &check))
            .breaking(check.breaks_with.filter(|_| opts.break_each));
        let permits = permits.clone();
        let mut cancel = cancel.clone();
        let logs = opts.logs.clone();
        let label = opts.label;
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let t0 = Instant::now();
            let outcome = if *cancel.borrow() {
                Outcome::Fail("interrupted before it ran".into())
            } else {
                let fut = tokio::time::timeout(check.timeout, (check.run)(ctx.clone()));
                tokio::select! {
                    r = fut => match r {
                        Ok(Ok(())) => Outcome::Pass,
                        Ok(Err(e)) => Outcome::Fail(one_line(&format!("{e:#}"))),
                        Err(_) => Outcome::Fail(format!("timed out after {} s", check.timeout.as_secs())),
                    },
                    _ = cancel.wait_for(|c| *c) => Outcome::Fail("interrupted".into()),
                }
            };
            let outcome = finish(&ctx, outcome).await;
            let duration = t0.elapsed();
            if let Some(dir) = logs {
                let path = dir.join(format!("{}.log", check.id().replace('/', "_")));
                let text = format!(
                    "{} ({})\n{}: {}\n\n{}",
                    check.id(),
                    ctx.name(),
                    outcome.word(),
                    outcome.detail(),
                    ctx.logs().render()
                );
                let _ = std::fs::write(path, text);
            }
            eprintln!(
                "[{label}] {:<4} {} ({:.1} s){}",
                outcome.word(),
                check.id(),
                duration.as_secs_f64(),
                match &outcome {
                    Outcome::Fail(d) => format!(": {d}"),
                    _ => String::new(),
                }
            );
            (
                i,
                Row {
                    clause: check.clause.to_string(),
                    check: Some(check.name.to_string()),
                    verifies: check.verifies.to_string(),
                    outcome,
                    duration: Some(duration),
                },
            )
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, row)) => rows[i] = Some(row),
            Err(e) => eprintln!("a check task failed: {e}"),
        }
    }
    planned
        .iter()
        .zip(rows)
        .map(|(p, r)| {
            r.unwrap_or_else(|| Row {
                clause: p.clause().to_string(),
                check: Some(p.id()),
                verifies: String::new(),
                outcome: Outcome::Fail("the check's task panicked".into()),
                duration: None,
            })
        })
        .collect()
}

/// After a check: deletes what it created through the API, waits for its runlets (stopped
/// with SIGINT when the check dropped them) and looks for what they left in containerd.
async fn finish(ctx: &Ctx, outcome: Outcome) -> Outcome {
    let mut problems = ctx.teardown().await;
    let killed = ctx.reaper().reap().await;
    if killed > 0 {
        problems.push(format!(
            "{killed} runlet(s) still ran 45 s after SIGINT and were killed"
        ));
    }
    let left = if ctx.env.api.is_some() {
        // A deleted service's or job's containers are removed just after the operation.
        let _ = ctx
            .wait_containers(|n| n == 0, Duration::from_secs(10))
            .await;
        ctx.containers().await
    } else {
        ctx.containers().await
    };
    match left {
        Ok(left) if !left.is_empty() => problems.push(format!(
            "runlet left containers behind: {}",
            left.join(", ")
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("cannot list containers: {e:#}")),
    }
    if problems.is_empty() {
        return outcome;
    }
    let p = problems.join("; ");
    match outcome {
        Outcome::Pass => Outcome::Fail(p),
        Outcome::Fail(d) => Outcome::Fail(format!("{d}; {p}")),
        s @ Outcome::Skip(_) => s,
    }
}

/// Newlines and runs of spaces collapsed, for a table cell.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `ID<TAB>PASS|FAIL|SKIP` per row, leaving out the checks `contract` lists as runlet-only:
/// what must be the same whichever driver ran the suite (deploy/test.sh diffs the two).
pub fn outcomes(contract: &Contract, rows: &[Row]) -> String {
    rows.iter()
        .filter(|r| contract.runlet_only(&r.id()).is_none())
        .map(|r| format!("{}\t{}\n", r.id(), r.outcome.word()))
        .collect()
}

/// Are all rows PASS or SKIP?
pub fn all_passed(rows: &[Row]) -> bool {
    rows.iter().all(|r| !matches!(r.outcome, Outcome::Fail(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks;

    #[test]
    fn plan_follows_the_contract_and_selects_by_prefix() {
        let contract = Contract::embedded().unwrap();
        let all = checks::all();
        let full = plan(&contract, &all, None, Via::Cli);
        assert_eq!(
            full.first().map(|p| p.clause().to_string()).as_deref(),
            Some("IMG-1")
        );
        assert_eq!(
            full.last().map(|p| p.clause().to_string()).as_deref(),
            Some("OUT-1")
        );
        let runs = full.iter().filter(|p| matches!(p, Planned::Run(_))).count();
        assert_eq!(runs, all.len());
        // gen1 runs under gVisor now (issue 17): SBX-1 has checks.
        assert!(full
            .iter()
            .any(|p| matches!(p, Planned::Run(c) if c.clause == "SBX-1")));
        // Sidecars run now (issue 16): their checks are no longer skipped.
        assert!(!full
            .iter()
            .any(|p| matches!(p, Planned::Skip { name, .. } if name == "absent-in-sidecars")));

        let life = plan(&contract, &all, Some("LIFE-"), Via::Cli);
        assert!(!life.is_empty());
        assert!(life.iter().all(|p| p.clause().starts_with("LIFE-")));
        assert!(life.iter().any(|p| p.clause() == "LIFE-J2"));
        let two = plan(&contract, &all, Some("LIFE-8/,SBX-1"), Via::Cli);
        assert!(two
            .iter()
            .all(|p| p.clause() == "LIFE-8" || p.clause() == "SBX-1"));
        assert_eq!(two.iter().filter(|p| p.clause() == "SBX-1").count(), 2);
        assert!(plan(&contract, &all, Some("NOPE-"), Via::Cli).is_empty());
    }

    #[test]
    fn gen2_only_checks_skip_under_gen1_only() {
        let contract = Contract::embedded().unwrap();
        let all = checks::all();
        let id = "SBX-1/gen2-has-them";
        assert!(contract.gen2_only(id).is_some());
        let rows = plan(&contract, &all, Some("SBX-1"), Via::Cli);
        assert!(rows.iter().all(|r| matches!(r, Planned::Run(_))));
        let gen1 = under_gen1(&contract, rows);
        let ids: Vec<(String, bool)> = gen1
            .iter()
            .map(|r| {
                let skip =
                    matches!(r, Planned::Skip { reason, .. } if reason.starts_with(GEN2_ONLY));
                (r.id(), skip)
            })
            .collect();
        assert!(ids.contains(&(id.to_string(), true)), "{ids:?}");
        assert!(
            ids.contains(&("SBX-1/gen1-lacks-syscalls".to_string(), false)),
            "{ids:?}"
        );
    }

    #[test]
    fn runlet_only_checks_skip_under_the_api_driver_only() {
        let contract = Contract::embedded().unwrap();
        let all = checks::all();
        let id = "LIFE-6/idle-instance-stopped";
        assert!(contract.runlet_only(id).is_some());
        let cli = plan(&contract, &all, Some(id), Via::Cli);
        assert!(matches!(cli.as_slice(), [Planned::Run(_)]));
        let api = plan(&contract, &all, Some(id), Via::Api);
        assert!(
            matches!(api.as_slice(), [Planned::Skip { reason, .. }] if reason.starts_with(RUNLET_ONLY)),
            "{}",
            api.len()
        );
        // Same rows in the same order either way; only runlet-only ones change.
        let (c, a) = (
            plan(&contract, &all, None, Via::Cli),
            plan(&contract, &all, None, Via::Api),
        );
        assert_eq!(c.len(), a.len());
        for (c, a) in c.iter().zip(&a) {
            assert_eq!(c.id(), a.id());
            if contract.runlet_only(&c.id()).is_none() {
                assert_eq!(
                    matches!(c, Planned::Run(_)),
                    matches!(a, Planned::Run(_)),
                    "{}",
                    c.id()
                );
            }
        }
        let rows = vec![
            Row {
                clause: "LIFE-6".into(),
                check: Some("idle-instance-stopped".into()),
                verifies: String::new(),
                outcome: Outcome::Pass,
                duration: None,
            },
            Row {
                clause: "LIFE-6".into(),
                check: Some("x".into()),
                verifies: String::new(),
                outcome: Outcome::Fail("no".into()),
                duration: None,
            },
        ];
        assert_eq!(outcomes(&contract, &rows), "LIFE-6/x\tFAIL\n");
    }

    #[test]
    fn service_names_are_valid_and_unique() {
        let mut seen = BTreeSet::new();
        for (i, c) in checks::all().iter().enumerate() {
            let n = service_name(i, c);
            assert!(n.len() <= 40, "{n}");
            assert!(n.starts_with('c') && !n.ends_with('-'), "{n}");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{n}"
            );
            assert!(seen.insert(n.clone()), "{n} twice");
        }
        // No name is a prefix of another plus a dash (ids are `<name>-...`).
        for a in &seen {
            for b in &seen {
                assert!(a == b || !b.starts_with(&format!("{a}-")), "{a} / {b}");
            }
        }
    }

    #[test]
    fn one_line_collapses() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
