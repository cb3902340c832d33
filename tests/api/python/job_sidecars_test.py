"""A job with a sidecar, created and run through runlet's Admin API with Google's Python client.

    python job_sidecars_test.py --rest http://127.0.0.1:8090 --job pyjob-sidecars
    python job_sidecars_test.py --grpc 127.0.0.1:8090 --job pyjob-sidecars

Two containers per task: the main container `main` (busybox, the first) depends on the
sidecar `report` (the probe image, which listens on localhost:8080 only 1.5 s after its
start, with a TCP startup probe). At its start, `main` fetches the sidecar's report from
127.0.0.1:8080 once, with no retry, and exits 3 if it cannot, 4 if the report is not from
its own execution's sidecar: so the execution succeeds only if the main container reached
the sidecar on localhost and started after the sidecar's startup probe passed. GET returns
both containers as stored. A template with an unknown `dependsOn`, or with a startup probe
on the main container, is INVALID_ARGUMENT naming the field.

Prints `ok:` lines; `FAIL:` and exit 1 on the first failed check; `PASS` at the end.
"""

import argparse
import os
import sys
import traceback

os.environ.setdefault("NO_GCE_CHECK", "True")

from google.cloud import run_v2  # noqa: E402

from jobs_test import BUSYBOX, clients, completed  # noqa: E402
from services_test import (  # noqa: E402
    PROBE_IMAGE,
    Failure,
    check,
    expect_error,
    nothing_left_in_containerd,
    ok,
    short,
)

# Once, no retry: the sidecar answers only if this container started after its probe passed.
MAIN = (
    "wget -q -O /tmp/report http://127.0.0.1:8080/ || exit 3; "
    'grep -q "\\"$CLOUD_RUN_EXECUTION\\"" /tmp/report || exit 4; '
    "echo reached the sidecar"
)


def containers(depends_on="report", main_probe=None):
    return [
        run_v2.Container(
            name="main",
            image=BUSYBOX,
            command=["/bin/sh", "-c", MAIN],
            depends_on=[depends_on],
            startup_probe=main_probe,
        ),
        run_v2.Container(
            name="report",
            image=PROBE_IMAGE,
            env=[run_v2.EnvVar(name="PROBE_LISTEN_DELAY_MS", value="1500")],
            resources=run_v2.ResourceRequirements(limits={"memory": "256Mi"}),
            startup_probe=run_v2.Probe(
                tcp_socket=run_v2.TCPSocketAction(port=8080),
                period_seconds=1,
                failure_threshold=20,
            ),
        ),
    ]


def job_of(cs):
    return run_v2.Job(template=run_v2.ExecutionTemplate(
        task_count=1,
        template=run_v2.TaskTemplate(containers=cs, max_retries=0, timeout="60s"),
    ))


def run(args):
    jobs, executions, tasks = clients(args)
    parent = f"projects/{args.project}/locations/{args.location}"
    jid = args.job
    name = f"{parent}/jobs/{jid}"
    timeout = args.timeout

    # Bad templates, refused at once naming the field.
    e = expect_error("INVALID_ARGUMENT", "an unknown dependsOn",
                     lambda: jobs.create_job(parent=parent, job=job_of(containers("nope")), job_id=jid))
    check("job.template.template.containers[0].dependsOn" in e.message and "nope" in e.message,
          f"the error does not name job.template.template.containers[0].dependsOn and nope: {e.message!r}")
    ok(f"unknown dependsOn refused: {e.message}")
    main_probe = run_v2.Probe(tcp_socket=run_v2.TCPSocketAction(port=8080))
    e = expect_error("INVALID_ARGUMENT", "a startup probe on the main container",
                     lambda: jobs.create_job(parent=parent, job=job_of(containers(main_probe=main_probe)),
                                             job_id=jid))
    check("job.template.template.containers[0].startupProbe" in e.message,
          f"the error does not name job.template.template.containers[0].startupProbe: {e.message!r}")
    ok(f"a startup probe on the main container refused: {e.message}")

    # Create: GET returns both containers as stored.
    created = jobs.create_job(parent=parent, job=job_of(containers()), job_id=jid).result(timeout=timeout)
    check(created.name == name, f"created job is named {created.name!r}, want {name!r}")
    got = jobs.get_job(name=name)
    cs = got.template.template.containers
    check([c.name for c in cs] == ["main", "report"], f"GET containers {[c.name for c in cs]}")
    check(list(cs[0].depends_on) == ["report"], f"GET main.dependsOn {list(cs[0].depends_on)}")
    check(not cs[0].startup_probe, f"GET main.startupProbe {cs[0].startup_probe}")
    check(cs[1].image == PROBE_IMAGE, f"GET report.image {cs[1].image!r}")
    check(cs[1].startup_probe.tcp_socket.port == 8080, f"GET report.startupProbe {cs[1].startup_probe}")
    check(cs[1].startup_probe.period_seconds == 1 and cs[1].startup_probe.failure_threshold == 20,
          f"GET report.startupProbe {cs[1].startup_probe}")
    check(cs[1].resources.limits.get("memory") == "256Mi", f"GET report.resources {cs[1].resources}")
    check({v.name: v.value for v in cs[1].env} == {"PROBE_LISTEN_DELAY_MS": "1500"},
          f"GET report.env {cs[1].env}")
    ok(f"created {short(name)}; GET returns both containers as stored")

    # Run: the main container's exit code decides; 0 only if it reached the sidecar.
    execution = jobs.run_job(name=name).result(timeout=timeout)
    c = completed(execution)
    check(execution.succeeded_count == 1 and execution.failed_count == 0,
          f"the execution did not succeed (main exits 3 if the sidecar was not up, 4 if it was "
          f"another's): {c.message!r} {execution}")
    check(c.state == run_v2.Condition.State.CONDITION_SUCCEEDED, f"Completed {c}")
    ts = list(tasks.list_tasks(parent=execution.name))
    check(len(ts) == 1 and ts[0].last_attempt_result.exit_code == 0,
          f"task's last attempt {[t.last_attempt_result for t in ts]}")
    check([x.name for x in ts[0].containers] == ["main", "report"],
          f"the task's containers {[x.name for x in ts[0].containers]}")
    ok(f"ran {short(execution.name)}: the main container reached the sidecar on localhost "
       f"after its startup probe passed (exit 0)")

    jobs.delete_job(name=name).result(timeout=timeout)
    expect_error("NOT_FOUND", "get of a deleted job", lambda: jobs.get_job(name=name))
    expect_error("NOT_FOUND", "get of a deleted job's execution",
                 lambda: executions.get_execution(name=execution.name))
    if args.containerd:
        nothing_left_in_containerd(args.containerd, [f"{jid}-"])
    ok(f"deleted {jid}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    to = ap.add_mutually_exclusive_group(required=True)
    to.add_argument("--grpc", metavar="ADDR", help="host:port of the API over gRPC (insecure)")
    to.add_argument("--rest", metavar="URL", help="base URL of the API over HTTP/JSON")
    ap.add_argument("--project", default="runlet")
    ap.add_argument("--location", default="local")
    ap.add_argument("--job", default="pyjob-sidecars")
    ap.add_argument("--containerd", metavar="SOCKET", help="check with ctr that nothing is left after delete")
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
