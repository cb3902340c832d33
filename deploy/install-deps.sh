#!/usr/bin/env bash
# Installs what runlet needs from Debian packages, only what is missing.
set -euo pipefail
pkgs=(containerd runc protobuf-compiler libprotobuf-dev containernetworking-plugins iptables busybox-static curl iproute2 ca-certificates)
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
command -v cargo >/dev/null || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
