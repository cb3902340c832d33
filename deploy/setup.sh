#!/usr/bin/env bash
# The first command: install what is missing, build, load the probe image, and serve it.
# runlet starts a private containerd when none answers at /run/containerd/containerd.sock.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
target/release/runlet image load target/images/probe.oci.tar
echo "serving the probe image; try: curl http://127.0.0.1:8080/   (Ctrl-C stops and cleans up)"
exec target/release/runlet serve --image probe "$@"
