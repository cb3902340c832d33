#!/usr/bin/env python3
"""Checks that runlet's trimmed protos are a subset of Google's published ones.

Usage: check_subset.py GOOGLEAPIS_DIR [RUNLET_PROTO_DIR]

Compiles both trees with protoc into descriptor sets, decodes them as text, and checks that
every message, field, enum value, service and method runlet keeps exists upstream with the
same number, type, label, oneof and options (google.api.http included). Prints what runlet
dropped. Exits 1 on any mismatch. Needs only protoc and python3 (no protobuf package).
"""
import os, re, subprocess, sys, tempfile

FILES = [
    "google/cloud/run/v2/service.proto", "google/cloud/run/v2/revision.proto",
    "google/cloud/run/v2/job.proto", "google/cloud/run/v2/execution.proto",
    "google/cloud/run/v2/task.proto", "google/longrunning/operations.proto",
]
DESCRIPTOR = "google/protobuf/descriptor.proto"


def descriptor_text(root):
    with tempfile.NamedTemporaryFile(suffix=".bin") as out:
        subprocess.run(["protoc", "-I", root, "--include_imports",
                        "--descriptor_set_out=" + out.name] + FILES, check=True,
                       stderr=subprocess.DEVNULL)
        text = subprocess.run(["protoc", "--decode=google.protobuf.FileDescriptorSet",
                               DESCRIPTOR], stdin=open(out.name, "rb"),
                              capture_output=True, check=True).stdout
    return text.decode("utf-8", "replace")


TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([{}:])|([^\s{}:"]+))')


def parse(text):
    """Parses protobuf text format into nested lists of (key, value) pairs."""
    pos, stack = 0, [[]]
    key = None
    while True:
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        s, p, w = m.groups()
        if p == "{":
            child = []
            stack[-1].append((key, child))
            stack.append(child)
            key = None
        elif p == "}":
            stack.pop()
        elif p == ":":
            pass
        elif key is None:
            key = w
        else:
            stack[-1].append((key, s if s is not None else w))
            key = None
    return stack[0]


def get(node, key):
    return [v for k, v in node if k == key]


def one(node, key, default=None):
    v = get(node, key)
    return v[0] if v else default


def name_of(node):
    return one(node, "name").strip('"')


def render(node):
    if isinstance(node, str):
        return node
    return "{" + " ".join(f"{k}:{render(v)}" for k, v in node) + "}"


def index(tree):
    """Maps element paths (e.g. `msg .google.cloud.run.v2.Service.template`) to rendered text."""
    out = {}

    def message(prefix, m):
        name = prefix + "." + name_of(m)
        oneofs = [name_of(o) for o in get(m, "oneof_decl")]
        out["msg " + name] = render([(k, v) for k, v in m if k == "options"])
        for f in get(m, "field"):
            fields = [(k, v) for k, v in f if k != "oneof_index"]
            oi = one(f, "oneof_index")
            if oi is not None:
                fields.append(("oneof", oneofs[int(oi)]))
            out[f"field {name}.{name_of(f)}"] = render(fields)
        for n in get(m, "nested_type"):
            message(name, n)
        for e in get(m, "enum_type"):
            enum(name, e)

    def enum(prefix, e):
        name = prefix + "." + name_of(e)
        out["enum " + name] = ""
        for v in get(e, "value"):
            out[f"value {name}.{name_of(v)}"] = render(v)

    for f in get(tree, "file"):
        pkg = "." + one(f, "package", '""').strip('"')
        for m in get(f, "message_type"):
            message(pkg, m)
        for e in get(f, "enum_type"):
            enum(pkg, e)
        for s in get(f, "service"):
            sname = pkg + "." + name_of(s)
            out["service " + sname] = render([(k, v) for k, v in s if k == "options"])
            for m in get(s, "method"):
                out[f"method {sname}.{name_of(m)}"] = render(m)
    return out


def main():
    upstream = sys.argv[1]
    ours = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..")
    up, mine = index(parse(descriptor_text(upstream))), index(parse(descriptor_text(ours)))
    bad = 0
    for key, text in sorted(mine.items()):
        if key.startswith(("msg .google.protobuf", "field .google.protobuf",
                           "enum .google.protobuf", "value .google.protobuf")):
            continue
        if key not in up:
            print("NOT UPSTREAM:", key)
            bad += 1
        elif up[key] != text:
            print("DIFFERS:", key, "\n  ours:", text, "\n  upstream:", up[key])
            bad += 1
    dropped = sorted(k for k in up if k not in mine and not k.startswith(
        ("msg .google.protobuf", "field .google.protobuf", "enum .google.protobuf",
         "value .google.protobuf", "msg .google.iam", "field .google.iam", "enum .google.iam",
         "value .google.iam", "service .google.iam", "method .google.iam", "msg .google.type",
         "field .google.type", "msg .google.api",
         "field .google.api", "enum .google.api", "value .google.api")))
    for key in dropped:
        print("dropped:", key)
    print(f"{len(mine)} elements checked, {bad} problems, {len(dropped)} dropped")
    sys.exit(1 if bad else 0)


main()
