#!/usr/bin/env bash
# Installs what runlet needs from Debian packages, only what is missing.
set -euo pipefail
# runsc: gVisor, for `--execution-environment gen1` (src/runtime/gvisor.rs, tests/gen1.rs).
pkgs=(containerd runc runsc protobuf-compiler libprotobuf-dev containernetworking-plugins iptables busybox-static curl iproute2 ca-certificates docker-registry skopeo apache2-utils openssl)
need=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "runlet needs root to install packages and to run containers; re-run with sudo" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Google's Pub/Sub emulator (Java) for the Pub/Sub trigger tests (tests/pubsub.rs), from
# Google's Cloud SDK apt repository when Debian's sources do not have it.
if ! dpkg -s google-cloud-cli-pubsub-emulator >/dev/null 2>&1; then
  echo "installing: google-cloud-cli-pubsub-emulator"
  if [ "$(id -u)" -ne 0 ]; then
    echo "runlet's tests need the Pub/Sub emulator; re-run with sudo to install it" >&2
    exit 1
  fi
  if ! apt-cache show google-cloud-cli-pubsub-emulator >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl gnupg ca-certificates >/dev/null
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
      | gpg --dearmor --yes -o /usr/share/keyrings/cloud.google.gpg
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
      > /etc/apt/sources.list.d/google-cloud-sdk.list
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq google-cloud-cli google-cloud-cli-pubsub-emulator openjdk-17-jre-headless >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
