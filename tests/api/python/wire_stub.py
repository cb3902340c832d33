"""A recording stand-in for `runlet daemon`'s Cloud Run Admin API, for checking clients.

Not used by CI. It exists to see, without runlet, exactly what Google's official clients
send and what they accept back: every request is logged as one JSON line (method, path,
query, headers, body for REST; method and metadata for gRPC) to stderr or `--log FILE`.
Behind the log sits a small in-memory fake (services, revisions, operations), enough for
`services_test.py` and the Rust client test to run their whole flow:

    python wire_stub.py --rest-port 18090 --grpc-port 18091 --log /tmp/wire.jsonl
    python services_test.py --rest http://127.0.0.1:18090 --image docker.io/library/probe:latest
    python services_test.py --grpc 127.0.0.1:18091 --image docker.io/library/probe:latest

The REST port also plays the deployed service: a service's `uri` is
`http://127.0.0.1:REST_PORT/_probe/NAME`, which answers like the probe image (`{"env":
{...}}`). Operations finish on their first poll, so every client really polls.

The answers follow the rules the real server must follow (see FINDINGS.md): camelCase JSON,
numeric enums when the query has `$alt=json;enum-encoding=int`, int64 as strings, only
fields of the published protos, errors as `{"error": {"code": HTTP, "message", "status"}}`.
"""

import argparse
import json
import re
import sys
import threading
import uuid
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import json_format, timestamp_pb2
from google.rpc import status_pb2

ServicePb = run_v2.Service.pb()
RevisionPb = run_v2.Revision.pb()
ConditionPb = run_v2.Condition.pb()

# google.rpc.Code -> (name, HTTP status), as google/rpc/code.proto maps them.
CODES = {
    3: ("INVALID_ARGUMENT", 400),
    5: ("NOT_FOUND", 404),
    6: ("ALREADY_EXISTS", 409),
    9: ("FAILED_PRECONDITION", 400),
    12: ("UNIMPLEMENTED", 501),
}
SERVICE_ID = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
PARENT = re.compile(r"^projects/[^/]+/locations/[^/]+$")


class ApiError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Log:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.out = open(path, "a", buffering=1) if path else sys.stderr

    def write(self, record):
        with self.lock:
            self.out.write(json.dumps(record, sort_keys=True) + "\n")


def now():
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def ready_condition(ok, message=""):
    c = ConditionPb(type_="Ready", message=message)  # proto-plus names the field type_ (JSON: type)
    c.state = ConditionPb.State.CONDITION_SUCCEEDED if ok else ConditionPb.State.CONDITION_FAILED
    c.last_transition_time.CopyFrom(now())
    return c


class Fake:
    """The in-memory model behind both front ends; methods take and return protobufs."""

    def __init__(self, known_images, uri_base):
        self.lock = threading.Lock()
        self.known_images = set(known_images)
        self.uri_base = uri_base
        self.services = {}  # full name -> ServicePb
        self.revisions = {}  # full service name -> [RevisionPb], oldest first
        self.ops = {}  # op name -> [first Operation, final Operation]

    def _operation(self, parent, metadata, response=None, error=None):
        name = f"{parent}/operations/{uuid.uuid4()}"
        first = operations_pb2.Operation(name=name, done=False)
        first.metadata.Pack(metadata)
        final = operations_pb2.Operation(name=name, done=True)
        final.metadata.Pack(metadata)
        if error is not None:
            final.error.CopyFrom(error)
        else:
            final.response.Pack(response)
        self.ops[name] = [first, final]
        return first

    def _new_revision(self, svc):
        revs = self.revisions.setdefault(svc.name, [])
        short = svc.name.rsplit("/", 1)[1]
        rid = f"{short}-{len(revs) + 1:05d}-{uuid.uuid4().hex[:3]}"
        rev = RevisionPb(name=f"{svc.name}/revisions/{rid}", uid=str(uuid.uuid4()))
        rev.service = short
        rev.generation = 1
        rev.create_time.CopyFrom(now())
        rev.containers.extend(svc.template.containers)
        rev.conditions.append(ready_condition(True))
        revs.append(rev)
        svc.latest_created_revision = rev.name
        svc.latest_ready_revision = rev.name
        return rev

    def _check_image(self, svc):
        for c in svc.template.containers:
            if c.image not in self.known_images:
                err = status_pb2.Status(
                    code=9,
                    message=f'image "{c.image}" is not in containerd: load it with `runlet image load`',
                )
                return err
        return None

    def create(self, parent, service_id, svc):
        if not PARENT.match(parent):
            raise ApiError(3, f"parent {parent!r} is not projects/*/locations/*")
        if not SERVICE_ID.match(service_id):
            raise ApiError(3, f"service_id {service_id!r} is invalid: lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen, under 50 characters")
        if not svc.template.containers:
            raise ApiError(3, "service.template.containers: exactly one container is required")
        name = f"{parent}/services/{service_id}"
        with self.lock:
            if name in self.services:
                raise ApiError(6, f"service {name} already exists")
            s = ServicePb()
            s.CopyFrom(svc)
            s.name = name
            s.uid = str(uuid.uuid4())
            s.generation = 1
            s.observed_generation = 1
            s.create_time.CopyFrom(now())
            s.update_time.CopyFrom(now())
            s.etag = f'"{s.generation}"'
            err = self._check_image(s)
            if err:
                s.terminal_condition.CopyFrom(ready_condition(False, err.message))
                self.services[name] = s
                return self._operation(parent, s, error=err)
            self._new_revision(s)
            s.uri = f"{self.uri_base}/_probe/{service_id}"
            s.urls.append(s.uri)
            s.terminal_condition.CopyFrom(ready_condition(True))
            self.services[name] = s
            return self._operation(parent, s, response=s)

    def get(self, name):
        with self.lock:
            if name not in self.services:
                raise ApiError(5, f"service {name} not found")
            return self.services[name]

    def list(self, parent):
        with self.lock:
            return [s for n, s in reversed(self.services.items()) if n.startswith(parent + "/")]

    def update(self, svc, mask, allow_missing):
        with self.lock:
            old = self.services.get(svc.name)
            if old is None:
                raise ApiError(5, f"service {svc.name} not found")
            s = ServicePb()
            s.CopyFrom(old)
            if mask:
                raise ApiError(12, f"update_mask {mask} is not supported by this stub")
            s.template.CopyFrom(svc.template)
            s.generation = old.generation + 1
            s.observed_generation = s.generation
            s.update_time.CopyFrom(now())
            s.etag = f'"{s.generation}"'
            err = self._check_image(s)
            parent = s.name.rsplit("/services/", 1)[0]
            if err:
                return self._operation(parent, s, error=err)
            if s.template != old.template:
                self._new_revision(s)
            self.services[s.name] = s
            return self._operation(parent, s, response=s)

    def delete(self, name):
        with self.lock:
            if name not in self.services:
                raise ApiError(5, f"service {name} not found")
            s = self.services.pop(name)
            self.revisions.pop(name, None)
            s.delete_time.CopyFrom(now())
            parent = name.rsplit("/services/", 1)[0]
            return self._operation(parent, s, response=s)

    def list_revisions(self, parent):
        with self.lock:
            if parent not in self.services:
                raise ApiError(5, f"service {parent} not found")
            return list(reversed(self.revisions.get(parent, [])))

    def get_revision(self, name):
        with self.lock:
            for revs in self.revisions.values():
                for r in revs:
                    if r.name == name:
                        return r
            raise ApiError(5, f"revision {name} not found")

    def get_operation(self, name):
        with self.lock:
            if name not in self.ops:
                raise ApiError(5, f"operation {name} not found")
            states = self.ops[name]
            op = states[0]
            if len(states) > 1:
                states.pop(0)
            return op

    def probe(self, service_id):
        """What the probe answers for the service's latest revision (None: no such service)."""
        with self.lock:
            for name, s in self.services.items():
                if name.endswith("/services/" + service_id) and s.latest_ready_revision:
                    env = {"PORT": "8080", "K_SERVICE": service_id, "K_CONFIGURATION": service_id}
                    env["K_REVISION"] = s.latest_ready_revision.rsplit("/", 1)[1]
                    for e in s.template.containers[0].env:
                        env[e.name] = e.value
                    return {"env": env, "hostname": "stub"}
        return None


# ---------------------------------------------------------------- REST


def make_rest_handler(fake, log):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self):
            u = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            log.write({
                "transport": "rest",
                "method": self.command,
                "path": u.path,
                "query": u.query,
                "headers": dict(self.headers.items()),
                "body": json.loads(body) if body else None,
            })
            q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
            numeric = "enum-encoding=int" in q.get("$alt", "")
            path = unquote(u.path)

            def out(msg):
                return json.loads(json_format.MessageToJson(msg, use_integers_for_enums=numeric))

            try:
                if path.startswith("/_probe/"):
                    report = fake.probe(path[len("/_probe/"):])
                    if report is None:
                        return self._send(404, {"error": "no such service"})
                    return self._send(200, report)
                m = re.fullmatch(r"/v2/(projects/[^/]+/locations/[^/]+)/services", path)
                if m and self.command == "POST":
                    svc = json_format.Parse(body or "{}", ServicePb())
                    return self._send(200, out(fake.create(m[1], q.get("serviceId", ""), svc)))
                if m and self.command == "GET":
                    resp = run_v2.ListServicesResponse.pb()(services=fake.list(m[1]))
                    return self._send(200, out(resp))
                m = re.fullmatch(r"/v2/(projects/[^/]+/locations/[^/]+/services/[^/]+)", path)
                if m and self.command == "GET":
                    return self._send(200, out(fake.get(m[1])))
                if m and self.command == "PATCH":
                    svc = json_format.Parse(body or "{}", ServicePb())
                    svc.name = m[1]
                    allow = q.get("allowMissing") == "true"
                    return self._send(200, out(fake.update(svc, q.get("updateMask", ""), allow)))
                if m and self.command == "DELETE":
                    return self._send(200, out(fake.delete(m[1])))
                m = re.fullmatch(r"/v2/(projects/[^/]+/locations/[^/]+/services/[^/]+)/revisions", path)
                if m and self.command == "GET":
                    resp = run_v2.ListRevisionsResponse.pb()(revisions=fake.list_revisions(m[1]))
                    return self._send(200, out(resp))
                m = re.fullmatch(r"/v2/(projects/[^/]+/locations/[^/]+/services/[^/]+/revisions/[^/]+)", path)
                if m and self.command == "GET":
                    return self._send(200, out(fake.get_revision(m[1])))
                m = re.fullmatch(r"/v2/(projects/[^/]+/locations/[^/]+/operations/[^/]+)", path)
                if m and self.command == "GET":
                    return self._send(200, out(fake.get_operation(m[1])))
                raise ApiError(5, f"no route for {self.command} {path}")
            except ApiError as e:
                status, http = CODES[e.code]
                self._send(http, {"error": {"code": http, "message": e.message, "status": status}})

        do_GET = do_POST = do_PATCH = do_DELETE = _handle

    return Handler


# ---------------------------------------------------------------- gRPC


def grpc_handlers(fake, log):
    def unary(method, req_cls, fn):
        def call(request, context):
            log.write({
                "transport": "grpc",
                "method": method,
                "metadata": {k: v for k, v in context.invocation_metadata()},
                "request": json.loads(json_format.MessageToJson(request)),
            })
            try:
                return fn(request)
            except ApiError as e:
                context.abort(grpc.StatusCode[CODES[e.code][0]], e.message)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=req_cls.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )

    pb = lambda t: t.pb()  # noqa: E731
    services = {
        "CreateService": unary("/google.cloud.run.v2.Services/CreateService", pb(run_v2.CreateServiceRequest), lambda r: fake.create(r.parent, r.service_id, r.service)),
        "GetService": unary("/google.cloud.run.v2.Services/GetService", pb(run_v2.GetServiceRequest), lambda r: fake.get(r.name)),
        "ListServices": unary("/google.cloud.run.v2.Services/ListServices", pb(run_v2.ListServicesRequest), lambda r: pb(run_v2.ListServicesResponse)(services=fake.list(r.parent))),
        "UpdateService": unary("/google.cloud.run.v2.Services/UpdateService", pb(run_v2.UpdateServiceRequest), lambda r: fake.update(r.service, ",".join(r.update_mask.paths), r.allow_missing)),
        "DeleteService": unary("/google.cloud.run.v2.Services/DeleteService", pb(run_v2.DeleteServiceRequest), lambda r: fake.delete(r.name)),
    }
    revisions = {
        "GetRevision": unary("/google.cloud.run.v2.Revisions/GetRevision", pb(run_v2.GetRevisionRequest), lambda r: fake.get_revision(r.name)),
        "ListRevisions": unary("/google.cloud.run.v2.Revisions/ListRevisions", pb(run_v2.ListRevisionsRequest), lambda r: pb(run_v2.ListRevisionsResponse)(revisions=fake.list_revisions(r.parent))),
    }
    operations = {
        "GetOperation": unary("/google.longrunning.Operations/GetOperation", operations_pb2.GetOperationRequest, lambda r: fake.get_operation(r.name)),
    }
    return [
        grpc.method_handlers_generic_handler("google.cloud.run.v2.Services", services),
        grpc.method_handlers_generic_handler("google.cloud.run.v2.Revisions", revisions),
        grpc.method_handlers_generic_handler("google.longrunning.Operations", operations),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rest-port", type=int, default=18090)
    ap.add_argument("--grpc-port", type=int, default=18091)
    ap.add_argument("--log", help="append request records here (default: stderr)")
    ap.add_argument("--known-image", action="append", default=["docker.io/library/probe:latest", "probe"])
    args = ap.parse_args()
    log = Log(args.log)
    fake = Fake(args.known_image, f"http://127.0.0.1:{args.rest_port}")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(grpc_handlers(fake, log))
    server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", args.rest_port), make_rest_handler(fake, log))
    print(f"wire_stub: REST on 127.0.0.1:{args.rest_port}, gRPC on 127.0.0.1:{args.grpc_port}", file=sys.stderr, flush=True)
    try:
        http.serve_forever()
    except KeyboardInterrupt:
        pass
    server.stop(0)


if __name__ == "__main__":
    main()
