# Shared by deploy/test.sh and deploy/bench.sh: start a containerd of the script's own.
# start_containerd RUN_DIR ROOT_DIR: writes the config, starts containerd, waits for it;
# sets $sock and $containerd_pid.
start_containerd() {
  local run=$1 root=$2
  sock=$run/containerd.sock
  mkdir -p "$run" "$root"
  cat > "$run/config.toml" <<TOML
version = 2
root = "$root/containerd/root"
state = "$run/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
TOML
  containerd_pid=
  if ! ctr -a "$sock" version >/dev/null 2>&1; then
    containerd --config "$run/config.toml" >"$run/containerd.log" 2>&1 &
    containerd_pid=$!
    for _ in $(seq 1 100); do ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  ctr -a "$sock" version >/dev/null 2>&1 || { echo "containerd did not start; see $run/containerd.log" >&2; cat "$run/containerd.log" >&2; return 1; }
}
