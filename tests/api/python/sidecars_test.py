"""A service with a sidecar, created through runlet's Admin API with Google's Python client.

    python sidecars_test.py --rest http://127.0.0.1:8090 --service py-sidecars

Two containers: the ingress container `app` (busybox, the one with `ports`) depends on the
sidecar `report` (the probe image, which listens on localhost:8080 only 1.5 s after its
start, with a TCP startup probe). At its start, `app` fetches the sidecar's report from
127.0.0.1:8080 and exits if it cannot, then serves it with httpd on $PORT: so the service
answers only if the sidecar is reachable on localhost from the ingress container and
started (passed its startup probe) first. GET returns the containers as stored. A template
with an unknown `dependsOn` is INVALID_ARGUMENT naming `template.containers[1].dependsOn`.

Prints `ok:` lines; `FAIL:` and exit 1 on the first failed check; `PASS` at the end.
"""

import argparse
import os
import sys
import traceback

os.environ.setdefault("NO_GCE_CHECK", "True")

from google.api_core import exceptions as gexc  # noqa: E402
from google.cloud import run_v2  # noqa: E402

from services_test import (  # noqa: E402
    PROBE_IMAGE,
    Failure,
    check,
    clients,
    expect_error,
    nothing_left_in_containerd,
    ok,
    probe_env,
    short,
)

BUSYBOX_IMAGE = "docker.io/library/busybox:latest"

INGRESS = (
    "busybox mkdir -p /www "
    "&& wget -q -O /www/report.json http://127.0.0.1:8080/ || exit 3; "
    "exec httpd -f -p $PORT -h /www"
)


def containers(depends_on="report"):
    return [
        run_v2.Container(
            name="app",
            image=BUSYBOX_IMAGE,
            command=["/bin/sh"],
            args=["-c", INGRESS],
            ports=[run_v2.ContainerPort(container_port=8081)],
            depends_on=[depends_on],
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


def run(args):
    services, _ = clients(args)
    parent = f"projects/{args.project}/locations/{args.location}"
    sid = args.service
    name = f"{parent}/services/{sid}"

    bad = run_v2.Service(template=run_v2.RevisionTemplate(containers=list(reversed(containers("nope")))))
    e = expect_error("INVALID_ARGUMENT", "an unknown dependsOn",
                     lambda: services.create_service(parent=parent, service=bad, service_id=sid))
    check("template.containers[1].dependsOn" in e.message and "nope" in e.message,
          f"the error does not name template.containers[1].dependsOn and nope: {e.message!r}")
    ok(f"unknown dependsOn refused: {e.message}")

    svc = run_v2.Service(template=run_v2.RevisionTemplate(containers=containers()))
    op = services.create_service(parent=parent, service=svc, service_id=sid)
    created = op.result(timeout=args.timeout)
    ok(f"created {created.name} with {len(created.template.containers)} containers")
    check(created.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED,
          f"terminal_condition: {created.terminal_condition}")

    got = services.get_service(name=name)
    cs = got.template.containers
    check([c.name for c in cs] == ["app", "report"], f"GET containers {[c.name for c in cs]}")
    check(list(cs[0].depends_on) == ["report"], f"GET app.dependsOn {list(cs[0].depends_on)}")
    check(cs[0].ports[0].container_port == 8081, f"GET app.ports {cs[0].ports}")
    check(cs[1].startup_probe.tcp_socket.port == 8080, f"GET report.startupProbe {cs[1].startup_probe}")
    check(cs[1].resources.limits.get("memory") == "256Mi", f"GET report.resources {cs[1].resources}")
    ok("GET returns the containers as stored")

    # The report the ingress container fetched from the sidecar over localhost at its start.
    env = probe_env(created.uri.rstrip("/") + "/report.json", args.timeout)
    check("PORT" not in env, f"the sidecar has PORT: {env}")
    check(env.get("K_SERVICE") == sid, f"the sidecar's K_SERVICE {env.get('K_SERVICE')!r}")
    check(env.get("K_REVISION", "").startswith(f"{sid}-00001-"),
          f"the sidecar's K_REVISION {env.get('K_REVISION')!r}")
    ok(f"the ingress container reached the sidecar on localhost after its startup probe passed "
       f"(revision {short(created.latest_ready_revision)})")

    services.delete_service(name=name).result(timeout=args.timeout)
    try:
        services.get_service(name=name)
        raise Failure(f"{name} is still there after delete")
    except gexc.NotFound:
        pass
    if args.containerd:
        nothing_left_in_containerd(args.containerd, [f"{sid}-"])
    ok(f"deleted {sid}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    to = ap.add_mutually_exclusive_group(required=True)
    to.add_argument("--grpc", metavar="ADDR", help="host:port of the API over gRPC (insecure)")
    to.add_argument("--rest", metavar="URL", help="base URL of the API over HTTP/JSON")
    ap.add_argument("--project", default="runlet")
    ap.add_argument("--location", default="local")
    ap.add_argument("--service", default="py-sidecars")
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
