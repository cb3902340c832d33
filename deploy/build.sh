#!/usr/bin/env bash
# Builds runlet, the conformance suite, the static probe, and the test image archives
# (into target/images).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
# The probe runs alone in its image: link it statically (static-pie on the installed gnu target).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet -p runlet-probe --target x86_64-unknown-linux-gnu
target/release/runlet-conformance build-images --out target/images \
  --probe target/x86_64-unknown-linux-gnu/release/runlet-probe --busybox /bin/busybox >/dev/null
echo "built target/release/runlet and the test images in target/images"
