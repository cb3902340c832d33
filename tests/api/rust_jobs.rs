//! runlet's jobs, executions and tasks driven by Google's unmodified Rust client,
//! `google-cloud-run-v2` (HTTP/JSON). [`jobs_flow`] creates a job from the loaded busybox
//! image (4 tasks, parallelism 2, task 1 failing its first attempt), runs it and waits for
//! the operation, reads the execution (4 succeeded, 1 retried) and its tasks, runs it with
//! overrides (args, task count), cancels a long execution and sees it cancelled, and
//! deletes the job. Set up like `rust_client.rs` (same dev-dependencies).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::paginator::ItemPaginator as _;
use google_cloud_lro::Poller as _;
use google_cloud_run_v2::client::{Executions, Jobs, Tasks};
use google_cloud_run_v2::model::{
    condition, execution_reference, run_job_request, Container, ExecutionTemplate, Job,
    TaskTemplate,
};

pub const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// Task 1's first attempt fails; `sleep` as the first argument makes a task wait until
/// SIGTERM.
const SCRIPT: &str = concat!(
    r#"trap "exit 143" TERM; "#,
    r#"if [ "$1" = sleep ]; then sleep 300 & wait; exit 0; fi; "#,
    r#"if [ "$CLOUD_RUN_TASK_INDEX" = 1 ] && [ "$CLOUD_RUN_TASK_ATTEMPT" = 0 ]; then exit 3; fi; "#,
    r#"echo task "$CLOUD_RUN_TASK_INDEX": "$@""#
);

fn job() -> Job {
    Job::new().set_template(
        ExecutionTemplate::new()
            .set_task_count(4)
            .set_parallelism(2)
            .set_template(
                TaskTemplate::new()
                    .set_containers([Container::new()
                        .set_image(BUSYBOX)
                        .set_command(["/bin/sh", "-c", SCRIPT, "sh"])
                        .set_args(["first"])])
                    .set_max_retries(2),
            ),
    )
}

/// Runs the flow against `endpoint` with job `job_id` under `parent`.
pub async fn jobs_flow(endpoint: &str, parent: &str, job_id: &str) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let anonymous = google_cloud_auth::credentials::anonymous::Builder::new().build();
    let polling = || {
        ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(100))
            .with_maximum_delay(Duration::from_secs(1))
            .build()
    };
    let jobs = Jobs::builder()
        .with_endpoint(endpoint)
        .with_credentials(anonymous.clone())
        .with_polling_backoff_policy(polling()?)
        .build()
        .await?;
    let executions = Executions::builder()
        .with_endpoint(endpoint)
        .with_credentials(anonymous.clone())
        .with_polling_backoff_policy(polling()?)
        .build()
        .await?;
    let tasks = Tasks::builder()
        .with_endpoint(endpoint)
        .with_credentials(anonymous)
        .build()
        .await?;
    let name = format!("{parent}/jobs/{job_id}");

    let created = jobs
        .create_job()
        .set_parent(parent)
        .set_job_id(job_id)
        .set_job(job())
        .poller()
        .until_done()
        .await
        .context("create_job")?;
    ensure!(created.name == name, "created {:?}", created.name);

    let first = jobs
        .run_job()
        .set_name(&name)
        .poller()
        .until_done()
        .await
        .context("run_job")?;
    ensure!(
        (
            first.succeeded_count,
            first.retried_count,
            first.failed_count
        ) == (4, 1, 0),
        "counts: {first:?}"
    );
    let mut listed = Vec::new();
    let mut items = tasks.list_tasks().set_parent(&first.name).by_item();
    while let Some(t) = items.next().await {
        listed.push(t?);
    }
    ensure!(
        listed
            .iter()
            .map(|t| (t.index, t.retried))
            .collect::<Vec<_>>()
            == [(0, 0), (1, 1), (2, 0), (3, 0)],
        "tasks: {listed:?}"
    );
    ensure!(
        listed
            .iter()
            .all(|t| t.last_attempt_result.as_ref().map(|r| r.exit_code) == Some(0)),
        "last attempts: {listed:?}"
    );

    let overridden = jobs
        .run_job()
        .set_name(&name)
        .set_overrides(
            run_job_request::Overrides::new()
                .set_container_overrides([
                    run_job_request::overrides::ContainerOverride::new().set_args(["second"])
                ])
                .set_task_count(2),
        )
        .poller()
        .until_done()
        .await
        .context("run_job with overrides")?;
    ensure!(
        (overridden.task_count, overridden.succeeded_count) == (2, 2),
        "overridden: {overridden:?}"
    );
    let args = overridden
        .template
        .as_ref()
        .and_then(|t| t.containers.first())
        .map(|c| c.args.clone());
    ensure!(
        args == Some(vec!["second".to_string()]),
        "overridden args: {args:?}"
    );

    // Cancel a long execution.
    let op = jobs
        .run_job()
        .set_name(&name)
        .set_overrides(
            run_job_request::Overrides::new()
                .set_container_overrides([
                    run_job_request::overrides::ContainerOverride::new().set_args(["sleep"])
                ])
                .set_task_count(1),
        )
        .send()
        .await
        .context("run_job (long)")?;
    let long = match &op.metadata {
        Some(any) => {
            any.to_msg::<google_cloud_run_v2::model::Execution>()
                .context("RunJob's metadata")?
                .name
        }
        None => bail!("RunJob's operation has no metadata: {op:?}"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let e = executions.get_execution().set_name(&long).send().await?;
        if e.running_count == 1 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "never running: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cancelled = executions
        .cancel_execution()
        .set_name(&long)
        .poller()
        .until_done()
        .await
        .context("cancel_execution")?;
    ensure!(
        cancelled.cancelled_count == 1,
        "cancelled counts: {cancelled:?}"
    );
    let completed = cancelled
        .conditions
        .iter()
        .find(|c| c.r#type == "Completed");
    ensure!(
        completed.and_then(|c| c.execution_reason())
            == Some(&condition::ExecutionReason::Cancelled),
        "Completed: {completed:?}"
    );
    let j = jobs.get_job().set_name(&name).send().await?;
    ensure!(
        j.execution_count == 3,
        "execution_count {}",
        j.execution_count
    );
    ensure!(
        j.latest_created_execution
            .as_ref()
            .map(|r| &r.completion_status)
            == Some(&execution_reference::CompletionStatus::ExecutionCancelled),
        "latest: {:?}",
        j.latest_created_execution
    );

    jobs.delete_job()
        .set_name(&name)
        .poller()
        .until_done()
        .await
        .context("delete_job")?;
    if jobs.get_job().set_name(&name).send().await.is_ok() {
        bail!("get_job after delete succeeded");
    }
    Ok(())
}
