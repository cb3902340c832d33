#!/usr/bin/env bash
# The second command: run every test (unit, containerd integration, conformance) against a
# containerd this script starts for the purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
# Google's official Python client for the daemon's API tests (tests/api_clients.rs), pinned.
py=target/pyenv
if ! "$py/bin/python" -c 'import google.cloud.run_v2' 2>/dev/null; then
  python3 -m venv "$py"
  "$py/bin/pip" install --quiet -r tests/api/python/requirements.txt
fi
export RUNLET_TEST_PYTHON=$PWD/$py/bin/python

# Overridable so that two test runs on one machine do not share a containerd.
run=${RUNLET_TEST_RUN:-/run/runlet-test}
root=${RUNLET_TEST_ROOT:-/var/lib/runlet-test}
sock=$run/containerd.sock
containerd_pid=
. deploy/lib.sh
cleanup() {
  # Anything a failed test left in this containerd: tasks, containers, and their network
  # namespaces (an instance's namespace is /run/netns/runlet-<container id>).
  if [ -S "$sock" ]; then
    ids=$(ctr -a "$sock" -n runlet containers ls -q 2>/dev/null || true)
    for c in $ids; do ctr -a "$sock" -n runlet tasks kill -a -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    [ -n "$ids" ] && sleep 0.5
    for c in $ids; do
      ctr -a "$sock" -n runlet tasks rm -f "$c" >/dev/null 2>&1 || true
      ctr -a "$sock" -n runlet containers rm "$c" >/dev/null 2>&1 || true
      ns=/run/netns/runlet-$c
      [ -e "$ns" ] && { umount "$ns" 2>/dev/null; rm -f "$ns"; }
    done
  fi
  if [ -n "$containerd_pid" ]; then kill "$containerd_pid" 2>/dev/null; wait "$containerd_pid" 2>/dev/null; fi
  true
}
trap cleanup EXIT
start_containerd "$run" "$root"
echo "test containerd: $sock ($(ctr -a "$sock" version | awk '/Version/ {print $2; exit}'))"

export RUNLET_TEST_CONTAINERD=$sock
export RUNLET_TEST_IMAGES=$PWD/target/images
export RUNLET_TEST_STATE_DIR=$root/state
cargo test --release --workspace 2>&1
# The conformance suite: any FAIL, a check the self-test's broken runlet cannot fail, or a
# docs/conformance.md that no longer matches the results fails the run.
outcomes=target/conformance-outcomes
mkdir -p "$outcomes"
target/release/runlet-conformance --runlet target/release/runlet --containerd-address "$sock" \
  --images target/images --state-dir "$root/state" --self-test --check-doc docs/conformance.md \
  --outcomes "$outcomes/cli.tsv"
# The gen1 column: every service under gVisor (runsc, installed by deploy/install-deps.sh);
# its table is docs/conformance.md's suite-gen1 section, checked the same way.
target/release/runlet-conformance --runlet target/release/runlet --containerd-address "$sock" \
  --images target/images --state-dir "$root/state" --execution-environment gen1 \
  --check-doc docs/conformance.md --outcomes "$outcomes/gen1.tsv"
# The same suite through the Admin API: the suite starts `runlet daemon` (free loopback
# ports, this containerd, a state dir beside $root/state) and stops it when it ends. Every
# check not listed as runlet-only in contract/clauses.toml must give the CLI driver's result.
api_rc=0
target/release/runlet-conformance --via api --runlet target/release/runlet \
  --containerd-address "$sock" --images target/images --state-dir "$root/state" \
  --logs target/conformance-logs/api --outcomes "$outcomes/api.tsv" || api_rc=$?
diff -u "$outcomes/cli.tsv" "$outcomes/api.tsv"
[ "$api_rc" = 0 ]
