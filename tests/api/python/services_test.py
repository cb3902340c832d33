"""Drives runlet's Cloud Run Admin API with Google's unmodified Python client.

    python services_test.py --grpc 127.0.0.1:8090 --image docker.io/library/probe:latest
    python services_test.py --rest http://127.0.0.1:8090 --image docker.io/library/probe:latest

The flow, with `google-cloud-run` (requirements.txt pins it) over the transport chosen:
create a service from a loaded image and wait for its operation; GET the returned `uri` with
urllib (the system resolver: `NAME.localhost` resolves through the lines the daemon writes
into /etc/hosts) and see the probe image report `K_SERVICE`/`K_REVISION`; update an env var
and see the new revision answer; list the revisions; delete the service and find it gone
(from the API, from its uri and, with `--containerd`, from containerd). Errors: an unknown
image fails the operation with a message naming the image; a duplicate create is
ALREADY_EXISTS; a bad service id is INVALID_ARGUMENT.

Prints one `ok:` line per step; on the first failed check prints `FAIL:` with what was
expected and what came back, and exits 1.
"""

import argparse
import json
import os
import subprocess
import sys
import traceback
import urllib.error
import urllib.request

# Never let google-auth look for a GCE metadata server: this test talks to loopback only.
os.environ.setdefault("NO_GCE_CHECK", "True")

import grpc  # noqa: E402
import requests  # noqa: E402
from google.api_core import exceptions as gexc  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import run_v2  # noqa: E402
from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcTransport  # noqa: E402
from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport  # noqa: E402

# The probe image's name once `runlet image load probe.oci.tar` has run (conformance
# imagebuild::PROBE_IMAGE).
PROBE_IMAGE = "docker.io/library/probe:latest"
# Fully qualified so that the message names it the same way whether or not runlet
# normalizes references; `.invalid` never resolves, were anything to try to pull it.
MISSING_IMAGE = "runlet.invalid/no-such-image:latest"


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def ok(what):
    print(f"ok: {what}", flush=True)


# ---------------------------------------------------------------- clients


def clients(args):
    """(ServicesClient, RevisionsClient) over the transport chosen, with no credentials."""
    if args.grpc:
        channel = grpc.insecure_channel(args.grpc)
        return (
            run_v2.ServicesClient(transport=ServicesGrpcTransport(channel=channel)),
            run_v2.RevisionsClient(transport=RevisionsGrpcTransport(channel=channel)),
        )
    opts = ClientOptions(api_endpoint=args.rest)
    creds = AnonymousCredentials()
    return (
        run_v2.ServicesClient(credentials=creds, client_options=opts, transport="rest"),
        run_v2.RevisionsClient(credentials=creds, client_options=opts, transport="rest"),
    )


def status_of(exc):
    """The google.rpc code name an API error carries, checking the REST error body's shape.

    Over gRPC that is the call's status code. Over REST the Python client picks its
    exception class from the HTTP status alone (409 -> Conflict, 400 -> BadRequest), while
    the Rust client reads only `error.status`: so a REST error must carry an HTTP status, a
    JSON `error.code` equal to it and the code's name in `error.status`, and all three must
    agree.
    """
    resp = getattr(exc, "response", None)
    if isinstance(resp, requests.Response):
        try:
            err = resp.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise Failure(f"HTTP {resp.status_code} error body is not {{\"error\": {{...}}}}: {resp.text!r}")
        check(err.get("code") == resp.status_code,
              f"error.code {err.get('code')!r} differs from the HTTP status {resp.status_code}: {resp.text}")
        status = err.get("status")
        want_http = HTTP_OF.get(status)
        check(want_http == resp.status_code,
              f"error.status {status!r} goes with HTTP {want_http}, got HTTP {resp.status_code}: {resp.text}")
        check(err.get("message"), f"error.message is empty: {resp.text}")
        return status
    if exc.grpc_status_code is not None:
        return exc.grpc_status_code.name
    raise Failure(f"{type(exc).__name__} carries no status: {exc!r}")


# google/rpc/code.proto's HTTP mapping, for the codes this test meets.
HTTP_OF = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "NOT_FOUND": 404, "ALREADY_EXISTS": 409}


def expect_error(code, what, call):
    """Runs `call`, which must fail at once with the google.rpc `code` (e.g. ALREADY_EXISTS)."""
    try:
        got = call()
    except gexc.GoogleAPICallError as e:
        status = status_of(e)
        check(status == code, f"{what}: want {code}, got {status}: {e}")
        return e
    raise Failure(f"{what}: want {code}, the call succeeded: {got!r}")


# ---------------------------------------------------------------- the deployed service


def fetch(uri, timeout):
    """GET `uri` with urllib and the system resolver, no proxy: (status, body text)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(uri, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def probe_env(uri, timeout):
    """The env the probe image reports when asked at `uri`."""
    try:
        status, body = fetch(uri, timeout)
    except (urllib.error.URLError, OSError) as e:
        raise Failure(f"GET {uri}: {e}")
    check(status == 200, f"GET {uri}: want 200 from the probe, got {status}: {body[:500]}")
    try:
        return json.loads(body)["env"]
    except (ValueError, KeyError, TypeError):
        raise Failure(f"GET {uri}: not the probe's report: {body[:500]}")


def short(resource_name):
    return resource_name.rsplit("/", 1)[-1]


def env_of(container):
    return {e.name: e.value for e in container.env}


def nothing_left_in_containerd(socket, needles):
    for args in (["containers", "ls", "-q"], ["tasks", "ls"]):
        cmd = ["ctr", "-a", socket, "-n", "runlet", *args]
        out = subprocess.run(cmd, capture_output=True, text=True)
        check(out.returncode == 0, f"{' '.join(cmd)}: {out.stderr}")
        left = [line for line in out.stdout.splitlines() if any(n in line for n in needles)]
        check(not left, f"{' '.join(cmd)} still lists: {left}")


# ---------------------------------------------------------------- the flow


def run(args):
    services, revisions = clients(args)
    parent = f"projects/{args.project}/locations/{args.location}"
    sid = args.service or f"py-{'grpc' if args.grpc else 'rest'}"
    name = f"{parent}/services/{sid}"
    timeout = args.timeout

    def template(value):
        return run_v2.RevisionTemplate(containers=[run_v2.Container(
            image=args.image, env=[run_v2.EnvVar(name="API_TEST", value=value)])])

    # Create, and wait for the operation.
    op = services.create_service(parent=parent, service=run_v2.Service(template=template("one")), service_id=sid)
    check(op.operation.name.startswith(parent + "/operations/"),
          f"operation name {op.operation.name!r} is not under {parent}/operations/")
    created = op.result(timeout=timeout)
    ok(f"created {created.name} through operation {short(op.operation.name)}")
    check(created.name == name, f"created service is named {created.name!r}, want {name!r}")
    check(created.generation == 1, f"generation {created.generation}, want 1")
    check(created.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED,
          f"terminal_condition of a done create: {created.terminal_condition}")
    rev1 = created.latest_ready_revision
    check(rev1.startswith(f"{name}/revisions/{sid}-00001-"),
          f"latest_ready_revision {rev1!r} is not {name}/revisions/{sid}-00001-...")
    check(created.latest_created_revision == rev1,
          f"latest_created_revision {created.latest_created_revision!r} != latest_ready_revision {rev1!r}")
    check(created.uri.startswith("http://"), f"uri {created.uri!r}")
    check(created.template.containers[0].image == args.image,
          f"template image {created.template.containers[0].image!r}, want {args.image!r}")

    got = services.get_service(name=name)
    check(got.uri == created.uri and got.latest_ready_revision == rev1,
          f"get_service disagrees with the operation's result: {got}")
    listed = [s.name for s in services.list_services(parent=parent)]
    check(name in listed, f"list_services({parent}) lacks {name}: {listed}")
    ok(f"get_service and list_services see it; uri {created.uri}")

    env = probe_env(created.uri, timeout)
    check(env.get("K_SERVICE") == sid, f"K_SERVICE {env.get('K_SERVICE')!r}, want {sid!r}")
    check(env.get("K_REVISION") == short(rev1), f"K_REVISION {env.get('K_REVISION')!r}, want {short(rev1)!r}")
    check(env.get("API_TEST") == "one", f"API_TEST {env.get('API_TEST')!r}, want 'one'")
    ok(f"GET {created.uri}: the probe answers as {short(rev1)}")

    # A second create of the same name, and bad names, fail at once.
    expect_error("ALREADY_EXISTS", "create of an existing service",
                 lambda: services.create_service(parent=parent, service=run_v2.Service(template=template("one")), service_id=sid))
    for bad in ("Bad_Name", "1digit-first", "ends-with-dash-", "x" * 50):
        expect_error("INVALID_ARGUMENT", f"create with service_id {bad!r}",
                     lambda: services.create_service(parent=parent, service=run_v2.Service(template=template("one")), service_id=bad))
    ok("duplicate create: ALREADY_EXISTS; bad service ids: INVALID_ARGUMENT")

    # Update (read, modify, write back the whole resource): a new revision answers.
    current = services.get_service(name=name)
    current.template.containers[0].env = [run_v2.EnvVar(name="API_TEST", value="two")]
    updated = services.update_service(service=current).result(timeout=timeout)
    rev2 = updated.latest_ready_revision
    check(updated.generation == 2, f"generation after update {updated.generation}, want 2")
    check(rev2.startswith(f"{name}/revisions/{sid}-00002-"),
          f"latest_ready_revision after update {rev2!r} is not {name}/revisions/{sid}-00002-...")
    check(updated.uri == created.uri, f"uri changed on update: {created.uri!r} -> {updated.uri!r}")
    env = probe_env(updated.uri, timeout)
    check(env.get("K_REVISION") == short(rev2), f"after update K_REVISION {env.get('K_REVISION')!r}, want {short(rev2)!r}")
    check(env.get("API_TEST") == "two", f"after update API_TEST {env.get('API_TEST')!r}, want 'two'")
    ok(f"updated: {short(rev2)} answers with API_TEST=two")

    revs = list(revisions.list_revisions(parent=name))
    names = [r.name for r in revs]
    check(names[:1] == [rev2] and rev1 in names,
          f"list_revisions({name}): want {rev2} first (newest first) and {rev1} listed, got {names}")
    by_name = {r.name: r for r in revs}
    check(env_of(by_name[rev1].containers[0]).get("API_TEST") == "one",
          f"{rev1} containers: {by_name[rev1].containers}")
    check(env_of(by_name[rev2].containers[0]).get("API_TEST") == "two",
          f"{rev2} containers: {by_name[rev2].containers}")
    check(revisions.get_revision(name=rev2).name == rev2, f"get_revision({rev2})")
    ok(f"list_revisions: {[short(n) for n in names]}")

    # Delete: gone from the API, from its uri and from containerd.
    deleted = services.delete_service(name=name).result(timeout=timeout)
    check(deleted.name == name, f"delete's operation returned {deleted.name!r}, want {name!r}")
    try:
        services.get_service(name=name)
        raise Failure(f"get_service({name}) after delete succeeded")
    except gexc.NotFound as e:
        check(status_of(e) == "NOT_FOUND", f"get after delete: {e}")
    listed = [s.name for s in services.list_services(parent=parent)]
    check(name not in listed, f"list_services after delete still has {name}")
    try:
        status, body = fetch(created.uri, timeout)
        check(status != 200, f"GET {created.uri} after delete: 200 {body[:300]}")
    except (urllib.error.URLError, OSError):
        pass
    if args.containerd:
        nothing_left_in_containerd(args.containerd, [short(rev1), short(rev2)])
    ok("deleted: NOT_FOUND from the API, no answer at the uri"
       + (", nothing left in containerd" if args.containerd else " (containerd not checked: no --containerd)"))

    # An image that is not loaded: the create is accepted, its operation fails naming it.
    bad_sid = f"{sid}-noimg"
    bad_name = f"{parent}/services/{bad_sid}"
    bad_op = services.create_service(parent=parent, service=run_v2.Service(template=run_v2.RevisionTemplate(
        containers=[run_v2.Container(image=MISSING_IMAGE)])), service_id=bad_sid)
    try:
        got = bad_op.result(timeout=timeout)
        raise Failure(f"create with image {MISSING_IMAGE}: the operation succeeded: {got}")
    except gexc.GoogleAPICallError as e:
        check(bad_op.operation.error.code != 0, f"failed operation without error.code: {bad_op.operation}")
        check(MISSING_IMAGE in e.message, f"the operation's error does not name {MISSING_IMAGE}: {e.message!r}")
        ok(f"unknown image: operation failed with code {bad_op.operation.error.code}: {e.message}")
    # Whether the failed service remains (Cloud Run keeps it, not Ready) is the server's
    # choice; either way it must be deletable or absent.
    try:
        services.delete_service(name=bad_name).result(timeout=timeout)
    except gexc.NotFound:
        pass
    ok(f"cleaned up {bad_sid}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    to = ap.add_mutually_exclusive_group(required=True)
    to.add_argument("--grpc", metavar="ADDR", help="host:port of the API over gRPC (insecure)")
    to.add_argument("--rest", metavar="URL", help="base URL of the API over HTTP/JSON, e.g. http://127.0.0.1:8090")
    ap.add_argument("--image", default=PROBE_IMAGE, help=f"a loaded probe image (default {PROBE_IMAGE})")
    ap.add_argument("--project", default="runlet")
    ap.add_argument("--location", default="local")
    ap.add_argument("--service", help="service id to use (default py-grpc / py-rest)")
    ap.add_argument("--containerd", metavar="SOCKET", help="check with ctr that nothing is left after delete")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds for each operation and GET")
    args = ap.parse_args()
    try:
        run(args)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except gexc.GoogleAPICallError as e:
        traceback.print_exc()
        print(f"FAIL: unexpected API error {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # e.g. the client rejecting a response it cannot parse
        traceback.print_exc()
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
