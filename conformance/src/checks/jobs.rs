//! Jobs (JOB-1..2, ENV-J1, LIFE-J1..2, and the job halves of PORT-3 and SBX-2), through
//! `runlet job execute NAME --image probe --args job ...`. In job mode the probe prints one
//! JSON line with its env, argv and pid, then sleeps / allocates / exits as its
//! `PROBE_*` variables say.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;

use super::{now_millis, secs, PROBE};
use crate::harness::{Ctx, JobRun};

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

async fn job(ctx: &Ctx, extra: &[&str]) -> Result<JobRun> {
    let mut args = vec!["--image", PROBE, "--args", "job"];
    args.extend_from_slice(extra);
    ctx.job(&args, JOB_TIMEOUT).await
}

fn var<'a>(line: &'a Value, k: &str) -> Option<&'a str> {
    line["env"][k].as_str()
}

/// The job must succeed and print `n` probe lines.
fn succeeded(run: &JobRun, n: usize) -> Result<()> {
    ensure!(
        run.exited.success(),
        "the execution did not succeed: {}",
        run.describe()
    );
    ensure!(
        run.lines.len() == n,
        "{} probe line(s) in runlet's output, want {n}: {}",
        run.lines.len(),
        run.describe()
    );
    Ok(())
}

pub(super) async fn absent_in_jobs(ctx: Ctx) -> Result<()> {
    let run = job(&ctx, &[]).await?;
    succeeded(&run, 1)?;
    ensure!(
        run.lines[0]["env"].get("PORT").is_none(),
        "PORT={} in a job",
        run.lines[0]["env"]["PORT"]
    );
    Ok(())
}

pub(super) async fn exit_0_succeeds(ctx: Ctx) -> Result<()> {
    let run = job(&ctx, &["--tasks", "2"]).await?;
    succeeded(&run, 2)
}

pub(super) async fn non_zero_fails(ctx: Ctx) -> Result<()> {
    let run = job(
        &ctx,
        &["--max-retries", "0", "--set-env-vars", "PROBE_JOB_EXIT=3"],
    )
    .await?;
    ran_and_failed(&run, "want a non-zero exit of runlet")?;
    Ok(())
}

pub(super) async fn completes_without_listening(ctx: Ctx) -> Result<()> {
    let run = job(&ctx, &["--set-env-vars", "PROBE_SLEEP_MS=1000"]).await?;
    succeeded(&run, 1)
}

pub(super) async fn task_variables(ctx: Ctx) -> Result<()> {
    let run = job(&ctx, &["--tasks", "3", "--parallelism", "2"]).await?;
    succeeded(&run, 3)?;
    let mut indexes = BTreeSet::new();
    let mut executions = BTreeSet::new();
    for l in &run.lines {
        ensure!(
            var(l, "CLOUD_RUN_JOB") == Some(ctx.name()),
            "CLOUD_RUN_JOB is {}, want {:?}",
            l["env"]["CLOUD_RUN_JOB"],
            ctx.name()
        );
        ensure!(
            var(l, "CLOUD_RUN_TASK_ATTEMPT") == Some("0"),
            "CLOUD_RUN_TASK_ATTEMPT is {}, want \"0\"",
            l["env"]["CLOUD_RUN_TASK_ATTEMPT"]
        );
        ensure!(
            var(l, "CLOUD_RUN_TASK_COUNT") == Some("3"),
            "CLOUD_RUN_TASK_COUNT is {}, want \"3\"",
            l["env"]["CLOUD_RUN_TASK_COUNT"]
        );
        indexes.insert(
            var(l, "CLOUD_RUN_TASK_INDEX")
                .unwrap_or("(unset)")
                .to_string(),
        );
        executions.insert(var(l, "CLOUD_RUN_EXECUTION").unwrap_or("").to_string());
    }
    let want: BTreeSet<String> = ["0", "1", "2"].iter().map(|s| s.to_string()).collect();
    ensure!(
        indexes == want,
        "CLOUD_RUN_TASK_INDEX values {indexes:?}, want {want:?}"
    );
    ensure!(
        executions.len() == 1,
        "tasks of one execution see different CLOUD_RUN_EXECUTION values: {executions:?}"
    );
    let exec = executions.into_iter().next().unwrap_or_default();
    ensure!(
        exec.starts_with(&format!("{}-", ctx.name())) && exec.len() > ctx.name().len() + 1,
        "CLOUD_RUN_EXECUTION is {exec:?}, want the job name plus a suffix (like hello-world-abc)"
    );
    Ok(())
}

pub(super) async fn attempt_counts_retries(ctx: Ctx) -> Result<()> {
    let run = job(
        &ctx,
        &[
            "--max-retries",
            "2",
            "--set-env-vars",
            "PROBE_FAIL_UNTIL_ATTEMPT=2",
        ],
    )
    .await?;
    succeeded(&run, 3)?;
    let attempts: Vec<&str> = run
        .lines
        .iter()
        .map(|l| var(l, "CLOUD_RUN_TASK_ATTEMPT").unwrap_or("(unset)"))
        .collect();
    ensure!(
        attempts == ["0", "1", "2"],
        "CLOUD_RUN_TASK_ATTEMPT over the tries: {attempts:?}, want [\"0\", \"1\", \"2\"]"
    );
    ensure!(
        run.lines
            .iter()
            .all(|l| var(l, "CLOUD_RUN_TASK_INDEX") == Some("0")),
        "a retry changed CLOUD_RUN_TASK_INDEX"
    );
    Ok(())
}

pub(super) async fn runs_until_exit(ctx: Ctx) -> Result<()> {
    let run = job(&ctx, &["--set-env-vars", "PROBE_SLEEP_MS=3000"]).await?;
    succeeded(&run, 1)?;
    ensure!(
        run.exited.elapsed >= Duration::from_millis(3000),
        "the execution ended after {}, before the task's 3 s",
        secs(run.exited.elapsed)
    );
    ensure!(
        run.exited.output.contains("job done"),
        "the task's last line (\"job done\") is missing: {}",
        run.describe()
    );
    Ok(())
}

/// `probe: SIGTERM received at MILLIS` → MILLIS.
pub fn sigterm_at(output: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        let rest = &l[l.find("SIGTERM received at ")? + "SIGTERM received at ".len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

pub(super) async fn task_timeout_sigterm_then_sigkill(ctx: Ctx) -> Result<()> {
    let run = job(
        &ctx,
        &[
            "--task-timeout",
            "2s",
            "--max-retries",
            "0",
            "--set-env-vars",
            "PROBE_SLEEP_MS=120000,PROBE_IGNORE_SIGTERM=1",
        ],
    )
    .await?;
    let ended = now_millis();
    ensure!(
        !run.exited.success() && !run.exited.timed_out,
        "want the execution to fail on its own after the task timeout: {}",
        run.describe()
    );
    let Some(term) = sigterm_at(&run.exited.output) else {
        anyhow::bail!("the task never logged a SIGTERM: {}", run.describe());
    };
    // SIGKILL comes 10 s after SIGTERM, then runlet cleans up and exits.
    let after = Duration::from_millis(ended.saturating_sub(term));
    ensure!(
        after >= Duration::from_millis(9500) && after <= Duration::from_secs(25),
        "runlet ended {} after the task got SIGTERM; want the 10 s grace, then SIGKILL",
        secs(after)
    );
    Ok(())
}

pub(super) async fn over_memory_limit_fails(ctx: Ctx) -> Result<()> {
    let run = job(
        &ctx,
        &[
            "--memory",
            "64Mi",
            "--max-retries",
            "0",
            "--set-env-vars",
            "PROBE_ALLOC_MIB=256",
        ],
    )
    .await?;
    ran_and_failed(&run, "want the execution to fail")?;
    ensure!(
        !run.exited.output.contains("allocated and touched 256 MiB"),
        "the task allocated 256 MiB under a 64 MiB limit"
    );
    Ok(())
}

pub(super) async fn job_pid_1(ctx: Ctx) -> Result<()> {
    let run = job(&ctx, &[]).await?;
    succeeded(&run, 1)?;
    ensure!(
        run.lines[0]["pid"] == 1,
        "the job's pid is {}, want 1",
        run.lines[0]["pid"]
    );
    Ok(())
}

/// The task ran (the probe printed its line) and the execution failed: runlet exited
/// non-zero on its own. `want` says what the check expected, for the message.
fn ran_and_failed(run: &JobRun, want: &str) -> Result<()> {
    ensure!(
        !run.lines.is_empty(),
        "the task never ran: {}",
        run.describe()
    );
    ensure!(
        !run.exited.success() && !run.exited.timed_out && run.exited.code.is_some(),
        "{want}: {}",
        run.describe()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_timestamp() {
        let out = "x\n2026 INFO probe: SIGTERM received at 1795319188349 (ignoring) task=0\n";
        assert_eq!(sigterm_at(out), Some(1795319188349));
        assert_eq!(sigterm_at("nothing"), None);
    }
}
