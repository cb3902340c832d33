"""Drives runlet's jobs, executions and tasks with Google's unmodified Python client.

    python jobs_test.py --grpc 127.0.0.1:8090 --job py-job-grpc
    python jobs_test.py --rest http://127.0.0.1:8090 --job py-job-rest

The flow, with `google-cloud-run` (requirements.txt pins it) over the transport chosen:
create a job from the loaded busybox image (4 tasks, parallelism 2, task 1 failing its
first attempt), run it and wait for the operation, read the execution (4 succeeded,
1 retried) and its tasks; run it with overrides (args, taskCount) and see them applied;
cancel a long execution and see it cancelled; delete an execution; delete the job while
an execution runs (the execution is cancelled and goes with it); errors: duplicate create
ALREADY_EXISTS, bad job id and bad template INVALID_ARGUMENT.

Prints one `ok:` line per step; on the first failed check prints `FAIL:` and exits 1.
"""

import argparse
import os
import subprocess
import sys
import time
import traceback

os.environ.setdefault("NO_GCE_CHECK", "True")

import grpc  # noqa: E402
from google.api_core import exceptions as gexc  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import run_v2  # noqa: E402
from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport  # noqa: E402
from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport  # noqa: E402
from google.cloud.run_v2.services.tasks.transports import TasksGrpcTransport  # noqa: E402

from services_test import Failure, check, expect_error, ok, short  # noqa: E402

BUSYBOX = "docker.io/library/busybox:latest"
# Task 1's first attempt fails; `sleep` as the first argument makes a task wait (until
# SIGTERM, which it obeys); every task prints its index and arguments.
SCRIPT = (
    'trap "exit 143" TERM; '
    'if [ "$1" = sleep ]; then sleep 300 & wait; exit 0; fi; '
    'if [ "$CLOUD_RUN_TASK_INDEX" = 1 ] && [ "$CLOUD_RUN_TASK_ATTEMPT" = 0 ]; then echo failing once; exit 3; fi; '
    'echo task "$CLOUD_RUN_TASK_INDEX" of "$CLOUD_RUN_TASK_COUNT": "$@"'
)


def clients(args):
    """(JobsClient, ExecutionsClient, TasksClient) over the transport chosen."""
    if args.grpc:
        channel = grpc.insecure_channel(args.grpc)
        return (
            run_v2.JobsClient(transport=JobsGrpcTransport(channel=channel)),
            run_v2.ExecutionsClient(transport=ExecutionsGrpcTransport(channel=channel)),
            run_v2.TasksClient(transport=TasksGrpcTransport(channel=channel)),
        )
    opts = ClientOptions(api_endpoint=args.rest)
    creds = AnonymousCredentials()
    return (
        run_v2.JobsClient(credentials=creds, client_options=opts, transport="rest"),
        run_v2.ExecutionsClient(credentials=creds, client_options=opts, transport="rest"),
        run_v2.TasksClient(credentials=creds, client_options=opts, transport="rest"),
    )


def job_of(tasks=4, parallelism=2, args=("first",)):
    return run_v2.Job(template=run_v2.ExecutionTemplate(
        task_count=tasks,
        parallelism=parallelism,
        template=run_v2.TaskTemplate(
            containers=[run_v2.Container(
                image=BUSYBOX,
                command=["/bin/sh", "-c", SCRIPT, "sh"],
                args=list(args),
                env=[run_v2.EnvVar(name="GREETING", value="hello")],
            )],
            max_retries=2,
            timeout="60s",
        ),
    ))


def completed(execution):
    for c in execution.conditions:
        if c.type_ == "Completed":
            return c
    raise Failure(f"no Completed condition on {execution.name}: {execution.conditions}")


def wait_running(executions, name, timeout):
    """Polls the execution until one task runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        e = executions.get_execution(name=name)
        if e.running_count >= 1:
            return e
        time.sleep(0.2)
    raise Failure(f"{name}: no task running after {timeout} s")


def run(args):
    jobs, executions, tasks = clients(args)
    parent = f"projects/{args.project}/locations/{args.location}"
    jid = args.job
    name = f"{parent}/jobs/{jid}"
    timeout = args.timeout

    # Create, and wait for the operation.
    op = jobs.create_job(parent=parent, job=job_of(), job_id=jid)
    created = op.result(timeout=timeout)
    check(created.name == name, f"created job is named {created.name!r}, want {name!r}")
    check(created.generation == 1, f"generation {created.generation}, want 1")
    check(created.template.task_count == 4 and created.template.parallelism == 2,
          f"template {created.template}")
    check(created.template.template.max_retries == 2, f"max_retries {created.template.template.max_retries}")
    check(created.etag, "no etag")
    check(created.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED,
          f"terminal_condition {created.terminal_condition}")
    got = jobs.get_job(name=name)
    check(got.uid == created.uid, f"get_job uid {got.uid!r} != {created.uid!r}")
    listed = [j.name for j in jobs.list_jobs(parent=parent)]
    check(name in listed, f"list_jobs({parent}) lacks {name}: {listed}")
    ok(f"created {name}; get_job and list_jobs see it")

    expect_error("ALREADY_EXISTS", "create of an existing job",
                 lambda: jobs.create_job(parent=parent, job=job_of(), job_id=jid))
    for bad in ("Bad_Name", "1digit-first", "x" * 50):
        expect_error("INVALID_ARGUMENT", f"create with job_id {bad!r}",
                     lambda: jobs.create_job(parent=parent, job=job_of(), job_id=bad))
    e = expect_error("INVALID_ARGUMENT", "create with taskCount 10001",
                     lambda: jobs.create_job(parent=parent, job=job_of(tasks=10001), job_id=f"{jid}-bad"))
    check("job.template.taskCount" in e.message, f"the error does not name the field: {e.message}")
    ok("duplicate create: ALREADY_EXISTS; bad ids and templates: INVALID_ARGUMENT naming the field")

    # Run, and wait: 4 tasks succeed, one of them after a retry.
    op = jobs.run_job(name=name)
    check(op.metadata.name.startswith(f"{name}/executions/{jid}-"), f"run metadata {op.metadata.name!r}")
    first = op.result(timeout=timeout)
    check(first.succeeded_count == 4, f"succeeded_count {first.succeeded_count}, want 4: {first}")
    check(first.retried_count == 1, f"retried_count {first.retried_count}, want 1")
    check(first.failed_count == 0 and first.running_count == 0 and first.cancelled_count == 0,
          f"counts {first}")
    check(first.task_count == 4 and first.parallelism == 2, f"task_count/parallelism {first}")
    check(first.start_time and first.completion_time, "start/completion time unset")
    check(completed(first).state == run_v2.Condition.State.CONDITION_SUCCEEDED, f"Completed {completed(first)}")
    ok(f"ran {short(first.name)}: 4 succeeded, 1 retried")

    e = executions.get_execution(name=first.name)
    check(e.succeeded_count == 4 and e.retried_count == 1, f"get_execution {e}")
    ts = list(tasks.list_tasks(parent=first.name))
    check([t.index for t in ts] == [0, 1, 2, 3], f"task indexes {[t.index for t in ts]}")
    check([t.retried for t in ts] == [0, 1, 0, 0], f"task retried {[t.retried for t in ts]}")
    for t in ts:
        check(t.last_attempt_result.exit_code == 0, f"{t.name}: last attempt {t.last_attempt_result}")
        check(t.start_time and t.completion_time, f"{t.name}: times unset")
        check(t.execution_environment != 0, f"{t.name}: execution_environment unset")
        check(t.name.startswith(f"{first.name}/tasks/"), f"task name {t.name}")
    t1 = tasks.get_task(name=ts[1].name)
    check(t1.index == 1 and t1.retried == 1, f"get_task {t1}")
    j = jobs.get_job(name=name)
    check(j.execution_count == 1, f"execution_count {j.execution_count}")
    check(j.latest_created_execution.name == first.name, f"latest {j.latest_created_execution}")
    check(j.latest_created_execution.completion_status
          == run_v2.ExecutionReference.CompletionStatus.EXECUTION_SUCCEEDED,
          f"latest completion_status {j.latest_created_execution}")
    ok("tasks: indexes 0-3, task 1 retried once, exit codes 0; job's latest execution succeeded")

    # Overrides: args and task count.
    overrides = run_v2.RunJobRequest.Overrides(
        container_overrides=[run_v2.RunJobRequest.Overrides.ContainerOverride(
            args=["second"], env=[run_v2.EnvVar(name="EXTRA", value="1")])],
        task_count=2,
    )
    second = jobs.run_job(request=run_v2.RunJobRequest(name=name, overrides=overrides)).result(timeout=timeout)
    check(second.task_count == 2 and second.succeeded_count == 2, f"overridden run {second}")
    check(list(second.template.containers[0].args) == ["second"],
          f"overridden args {second.template.containers[0].args}")
    env = {v.name: v.value for v in second.template.containers[0].env}
    check(env == {"GREETING": "hello", "EXTRA": "1"}, f"overridden env {env}")
    check(len(list(tasks.list_tasks(parent=second.name))) == 2, "overridden run's tasks")
    listed = [x.name for x in executions.list_executions(parent=name)]
    check(listed == [second.name, first.name], f"list_executions, newest first: {listed}")
    ok("overrides: args replaced, env merged, 2 tasks")

    # Cancel a long execution.
    sleeper = run_v2.RunJobRequest.Overrides(
        container_overrides=[run_v2.RunJobRequest.Overrides.ContainerOverride(args=["sleep"])],
        task_count=1,
    )
    long_op = jobs.run_job(request=run_v2.RunJobRequest(name=name, overrides=sleeper))
    long_name = long_op.metadata.name
    wait_running(executions, long_name, timeout)
    cancelled = executions.cancel_execution(name=long_name).result(timeout=timeout)
    check(cancelled.cancelled_count == 1 and cancelled.running_count == 0, f"cancelled counts {cancelled}")
    c = completed(cancelled)
    check(c.execution_reason == run_v2.Condition.ExecutionReason.CANCELLED, f"Completed {c}")
    try:
        long_op.result(timeout=timeout)
        raise Failure("the cancelled execution's RunJob operation succeeded")
    except gexc.GoogleAPICallError as e:
        check(long_op.operation.error.code == 1, f"the RunJob operation's error: {long_op.operation.error}")
        ok(f"cancelled {short(long_name)}: its RunJob operation ended with CANCELLED ({e.message})")
    j = jobs.get_job(name=name)
    check(j.latest_created_execution.completion_status
          == run_v2.ExecutionReference.CompletionStatus.EXECUTION_CANCELLED,
          f"latest completion_status {j.latest_created_execution}")
    expect_error("FAILED_PRECONDITION", "cancel of an ended execution",
                 lambda: executions.cancel_execution(name=long_name))

    # Delete an execution.
    executions.delete_execution(name=first.name).result(timeout=timeout)
    expect_error("NOT_FOUND", "get of a deleted execution", lambda: executions.get_execution(name=first.name))
    listed = [x.name for x in executions.list_executions(parent=name)]
    check(first.name not in listed and len(listed) == 2, f"list_executions after delete: {listed}")
    ok(f"deleted {short(first.name)}")

    # Delete the job while an execution runs: it is cancelled and goes with the job.
    running_op = jobs.run_job(request=run_v2.RunJobRequest(name=name, overrides=sleeper))
    running_name = running_op.metadata.name
    wait_running(executions, running_name, timeout)
    deleted = jobs.delete_job(name=name).result(timeout=timeout)
    check(deleted.name == name, f"delete's operation returned {deleted.name!r}")
    expect_error("NOT_FOUND", "get of a deleted job", lambda: jobs.get_job(name=name))
    expect_error("NOT_FOUND", "get of a deleted job's execution",
                 lambda: executions.get_execution(name=running_name))
    try:
        running_op.result(timeout=timeout)
        raise Failure("the RunJob operation of an execution cancelled by its job's deletion succeeded")
    except gexc.GoogleAPICallError:
        pass
    if args.containerd:
        out = subprocess.run(["ctr", "-a", args.containerd, "-n", "runlet", "containers", "ls", "-q"],
                             capture_output=True, text=True)
        left = [x for x in out.stdout.splitlines() if x.startswith(f"{jid}-")]
        check(not left, f"task containers left: {left}")
    ok("deleted the job with an execution running: cancelled, and gone with it")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    to = ap.add_mutually_exclusive_group(required=True)
    to.add_argument("--grpc", metavar="ADDR")
    to.add_argument("--rest", metavar="URL")
    ap.add_argument("--project", default="runlet")
    ap.add_argument("--location", default="local")
    ap.add_argument("--job", default="py-job")
    ap.add_argument("--containerd", metavar="SOCKET")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    try:
        run(args)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        traceback.print_exc()
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
