#!/usr/bin/env bash
# Benchmarks, not tests: every comparison runs side by side in one run, because these
# machines are noisy. Writes docs/benchmarks.md.   Usage: bash deploy/bench.sh
#
# 1. Data path: requests/s and latency for the probe reached directly, through nginx, and
#    through runlet, with the same load generator and connection counts.
# 2. Cold start: a request arriving at zero instances, to its first response byte, through
#    runlet; against a bare `ctr run` of the same image, to the same first byte.
# 3. Scale-out: time for a step load to be served by max instances.
# 4. Jobs: 100 tasks that exit 0 at once, parallelism 1 and 10: `runlet job execute`, the
#    daemon's `RunJob` through the Admin API, and bare `ctr run --rm`.
# 5. User-space instructions per request, runlet against nginx, under callgrind.
# 6. The daemon: RSS per idle service (50 at min-instances 0), deploy → first 200 beside
#    `runlet serve`'s start → first 200, Host-routed data path beside serve's single route.
# 7. Pub/Sub trigger: message published → task container started (median of 20).
# 8. Registry pull of a 240 MiB, 5-layer image from a registry on loopback, cold and warm:
#    runlet against `ctr image pull --plain-http` and `skopeo copy` to an OCI directory.
# soak (only when named: BENCH_SECTIONS=soak, 10 min; BENCH_SOAK_SECONDS changes it): a mixed
#    load at 80% of the measured capacity, runlet's RSS and fds every 10 s. Its result is
#    copied by hand into docs/benchmarks.md's history part.
# All traffic stays on loopback (the instance's own loopback, reached inside its namespace).
# BENCH_SECTIONS="datapath cold" runs only those sections and prints, without writing docs/.
# BENCH_DAEMON_IDLE=timeout lets section 6's services go idle by the daemon's own 15 min idle
# timeout instead of stopping their first instances from outside (15 min longer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
for p in wrk nginx-light; do dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }; done
bash deploy/build.sh

run=/run/runlet-bench
root=/var/lib/runlet-bench
sock=$run/containerd.sock
. deploy/lib.sh
pids=()
daemon_pid=
# term_wait SIGNAL PID: signals a process (if PID is set) and waits for it to end.
term_wait() { [ -n "$2" ] || return 0; kill "-$1" "$2" 2>/dev/null || true; wait "$2" 2>/dev/null || true; }
cleanup() {
  [ -n "${sampler_pid:-}" ] && kill "$sampler_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -f "$run/nginx.pid" ] && kill "$(cat "$run/nginx.pid")" 2>/dev/null || true
  [ -f "$run/fresh.pid" ] && kill -INT "$(cat "$run/fresh.pid")" 2>/dev/null || true
  # The daemon drains and removes its instances on SIGTERM; its records go too, so that
  # the next run starts with no service.
  if [ -n "${daemon_pid:-}" ]; then
    term_wait TERM "$daemon_pid"
    rm -rf "$root/state/daemon"
  fi
  for c in $(ctr -a "$sock" -n runlet containers ls -q 2>/dev/null); do
    ctr -a "$sock" -n runlet tasks kill -a -s SIGKILL "$c" >/dev/null 2>&1 || true
    sleep 0.2
    ctr -a "$sock" -n runlet tasks rm -f "$c" >/dev/null 2>&1 || true
    ctr -a "$sock" -n runlet containers rm "$c" >/dev/null 2>&1 || true
  done
  term_wait TERM "${pdaemon_pid:-}"
  term_wait TERM "${registry_pid:-}"
  [ -n "${emu_pid:-}" ] && kill -TERM -- "-$emu_pid" 2>/dev/null || true
  term_wait TERM "${containerd_pid:-}"
  true
}
trap cleanup EXIT
start_containerd "$run" "$root"

R="target/release/runlet --containerd-address $sock --state-dir $root/state --no-embedded-containerd"
B=target/release/runlet-bench
CTR="ctr -a $sock -n runlet"
$R image load --quiet target/images/probe.oci.tar >/dev/null
$R image load --quiet target/images/busybox.oci.tar >/dev/null
out=$run/results.md
: > "$out"
# Other work on this shared machine (other sessions' builds) competes for its 2 cores: every
# 5 s, note whether a compiler is running; the doc says how often one was.
# (pgrep matches at most 15 characters of a name: one short pattern per compiler.)
busy() { local p; for p in rustc cc1 cc1plus ld ld.lld; do pgrep -x "$p" >/dev/null && return 0; done; return 1; }
( while :; do if busy; then echo 1; else echo 0; fi; sleep 5; done ) >"$run/busy" &
sampler_pid=$!

serve() { # name port args... ; waits until serving
  local name=$1 port=$2; shift 2
  RUNLET_LOG=info $R serve --image probe --service "$name" --listen "127.0.0.1:$port" --metrics-listen off "$@" >"$run/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q "is serving at" "$run/$name.log" && return 0; sleep 0.1; done
  cat "$run/$name.log"; exit 1
}
containers_of() { $CTR containers ls -q | grep -c "^$1-00001-" || true; }
# cpu_ticks PID... prints "USER SYSTEM" clock ticks, summed over the processes' threads.
cpu_ticks() { local u=0 s=0 f a b; for p in "$@"; do for f in /proc/"$p"/task/*/stat; do read -r a b < <(sed 's/.*) //' "$f" | awk '{print $12, $13}'); u=$((u + a)); s=$((s + b)); done; done; echo "$u $s"; }
tck=$(getconf CLK_TCK)
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

sections=${BENCH_SECTIONS:-datapath cold scale jobs instructions daemon pubsub pull}
want() { [[ " $sections " == *" $1 "* ]]; }

# ---- 1. data path ------------------------------------------------------------------------
if want datapath; then
serve dp 18080 --concurrency 1000
id=$($CTR containers ls -q | grep '^dp-00001-' | head -1)
ns=runlet-$id
# nginx twice: a plain reverse proxy, and one adding the forwarding and trace headers runlet
# adds (X-Forwarded-For/-Proto, Forwarded, traceparent, X-Cloud-Trace-Context), i.e. doing
# the same job.
workers=$(nproc)
cat > "$run/nginx.conf" <<NGINX
worker_processes $workers;
pid $run/nginx.pid;
error_log $run/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream probe { server 127.0.0.1:8080; keepalive 256; }
  server {
    listen 127.0.0.1:18081 reuseport;
    location / { proxy_pass http://probe; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:18082 reuseport;
    location / {
      proxy_pass http://probe; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header Forwarded "for=\$remote_addr;proto=\$scheme;host=\"\$http_host\"";
      proxy_set_header traceparent "00-\$request_id-0000000000000001-00";
      proxy_set_header X-Cloud-Trace-Context "\$request_id/1;o=0";
    }
  }
}
NGINX
# nginx runs in the instance's namespace, so that it reaches the instance over that
# namespace's loopback as runlet does, and takes its clients in the host's namespace as
# runlet does: its listening sockets are made here and inherited (nginx adopts the sockets
# its NGINX variable names, the mechanism of its binary upgrade). Both then pay the same
# kernel path, connection tracking included (the CNI's NAT rule switches it on in the host's
# namespace: about 4% of runlet's CPU under this load). As runlet's threads, each worker has
# its own SO_REUSEPORT socket, so the kernel spreads connections evenly over them.
rm -f "$run/nginx.pid"
python3 - "$ns" "$run/nginx.conf" "$workers" >/dev/null 2>&1 <<'PY' &
import os, socket, sys
ns, conf, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
fds = []
for port in [18081] * workers + [18082] * workers:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    s.set_inheritable(True)
    fds.append(s.detach())
os.environ["NGINX"] = "".join(f"{fd};" for fd in fds)
os.execvp("ip", ["ip", "netns", "exec", ns, "nginx", "-c", conf])
PY
# (With inherited sockets nginx stays in the foreground.)
for _ in $(seq 1 50); do [ -s "$run/nginx.pid" ] && break; sleep 0.1; done
sleep 0.5
path='/?bytes=128'
paths="direct nginx nginx-headers runlet"
declare -A url=([direct]="http://127.0.0.1:8080$path" [nginx]="http://127.0.0.1:18081$path" [nginx-headers]="http://127.0.0.1:18082$path" [runlet]="http://127.0.0.1:18080$path")
declare -A pre=([direct]="ip netns exec $ns" [nginx]="" [nginx-headers]="" [runlet]="")
# The processes doing each path's work, for CPU time per request (utime + stime).
probe_pid=$(pgrep -x probe | head -1)
nginx_pids=$(pgrep -P "$(cat "$run/nginx.pid")" | tr '\n' ' ')
declare -A who=([direct]="$probe_pid" [nginx]="$nginx_pids" [nginx-headers]="$nginx_pids" [runlet]="${pids[-1]}")
rounds=${BENCH_ROUNDS:-5}
rm -f "$run"/wrk-*
declare -A rps p50 p99 r50 r99 cpu ucpu scpu
for t in $paths; do
  ${pre[$t]} wrk -t2 -c64 -d3s "${url[$t]}" >/dev/null   # warm-up
done
# Rounds alternate the paths, so a noisy moment on the machine hits them all alike; the
# median round of each path is reported.
for r in $(seq 1 "$rounds"); do
  for t in $paths; do
    read -r u0 s0 < <(cpu_ticks ${who[$t]})
    w=$(${pre[$t]} wrk -t2 -c64 -d8s --latency "${url[$t]}")
    read -r u1 s1 < <(cpu_ticks ${who[$t]})
    n=$(echo "$w" | awk '/requests in/ {print $1}')
    us() { python3 -c "print('%.1f' % (($1) * 1e6 / $tck / $n))"; }
    echo "$(echo "$w" | awk '/Requests\/sec/ {print $2}') $(echo "$w" | awk '$1=="50%" {print $2}') $(echo "$w" | awk '$1=="99%" {print $2}') $(us "$u1 - $u0 + $s1 - $s0") $(us "$u1 - $u0") $(us "$s1 - $s0")" >>"$run/wrk-$t"
  done
done
for t in $paths; do
  read -r rps[$t] p50[$t] p99[$t] cpu[$t] ucpu[$t] scpu[$t] < <(sort -n "$run/wrk-$t" | sed -n "$(( (rounds + 1) / 2 ))p")
  j=$(${pre[$t]} $B rate "${url[$t]}" --rate 1000 --duration 10 --connections 32)
  r50[$t]=$(echo "$j" | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["p50_ms"])')
  r99[$t]=$(echo "$j" | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["p99_ms"])')
done
per_round() { paste -d' ' "$run/wrk-$1" "$run/wrk-$2" | awk '{printf "%s%.2f", (NR>1?", ":""), $1/$(NF/2+1)}'; }
{
  echo "## 1. Data path (one probe instance, \`GET $path\`)"
  echo
  echo "wrk -t2 -c64, $rounds rounds of 8 s alternating the paths, median round shown; CPU is"
  echo "the time the serving processes (the probe for direct, nginx's workers, runlet) spent"
  echo "per request, user + system (in brackets: user, system). nginx (Debian's, $workers workers) runs in"
  echo "the instance's namespace and reaches it over that namespace's loopback, as runlet does;"
  echo "its listening sockets (one SO_REUSEPORT socket per worker, as runlet's threads) are made"
  echo "in the host's namespace and inherited, so its clients come the same kernel way as"
  echo "runlet's. \`nginx-headers\` also sets the forwarding and trace headers runlet sets."
  echo
  echo "| path | req/s | wrk p50 | wrk p99 | CPU µs/request | 1,000 req/s open loop: p50 ms | p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for t in $paths; do echo "| $t | ${rps[$t]} | ${p50[$t]} | ${p99[$t]} | ${cpu[$t]} (${ucpu[$t]}, ${scpu[$t]}) | ${r50[$t]} | ${r99[$t]} |"; done
  echo
  echo "- throughput runlet/direct: $(ratio "${rps[runlet]}" "${rps[direct]}"), runlet/nginx: $(ratio "${rps[runlet]}" "${rps[nginx]}") (rounds: $(per_round runlet nginx)), runlet/nginx-headers: $(ratio "${rps[runlet]}" "${rps[nginx-headers]}") (rounds: $(per_round runlet nginx-headers))"
  echo "- proxy CPU per request, runlet/nginx: $(ratio "${cpu[runlet]}" "${cpu[nginx]}")"
  echo "- p99 added over direct at 1,000 req/s: runlet $(python3 -c "print('%.3f' % (${r99[runlet]} - ${r99[direct]}))") ms, nginx $(python3 -c "print('%.3f' % (${r99[nginx]} - ${r99[direct]}))") ms"
  echo
} >>"$out"
kill "$(cat "$run/nginx.pid")"; rm -f "$run/nginx.pid"
# --cpu-throttling: with one request at a time, every request takes the instance from idle
# to busy and back (two writes to its cgroup's CPU quota).
serve dpt 18083 --concurrency 1000 --cpu-throttling
declare -A turl=([full]="http://127.0.0.1:18080$path" [throttled]="http://127.0.0.1:18083$path")
rm -f "$run"/seq-*
for r in $(seq 1 "$rounds"); do
  for t in full throttled; do
    w=$(wrk -t1 -c1 -d5s --latency "${turl[$t]}")
    echo "$(echo "$w" | awk '/Requests\/sec/ {print $2}') $(echo "$w" | awk '$1=="50%" {print $2}')" >>"$run/seq-$t"
  done
done
declare -A srps sp50
for t in full throttled; do read -r srps[$t] sp50[$t] < <(sort -n "$run/seq-$t" | sed -n "$(( (rounds + 1) / 2 ))p"); done
{
  echo "### \`--cpu-throttling\`: cost per request"
  echo
  echo "One connection, one request at a time (wrk -t1 -c1, $rounds rounds of 5 s, median), so that"
  echo "every request finds the instance idle (throttled to 1% of a CPU) and leaves it idle:"
  echo
  echo "| instance | req/s | p50 |"
  echo "|---|---:|---:|"
  echo "| full CPU all the time (default) | ${srps[full]} | ${sp50[full]} |"
  echo "| \`--cpu-throttling\` | ${srps[throttled]} | ${sp50[throttled]} |"
  echo
  echo "- added per request: $(python3 -c "print('%.1f' % ((1 / ${srps[throttled]} - 1 / ${srps[full]}) * 1e6))") µs (two cgroup writes; none while requests overlap)"
  echo
} >>"$out"
fi

# ---- 2. cold start -----------------------------------------------------------------------
if want cold; then
serve cold 18090 --idle-timeout 1s
runlet_ms=(); ctr_ms=()
for i in $(seq 1 10); do
  for _ in $(seq 1 200); do [ "$(containers_of cold)" = 0 ] && break; sleep 0.1; done
  runlet_ms+=("$($B first-byte 'http://127.0.0.1:18090/?bytes=1')")
  c=ctr-cold-$i
  ctr_ms+=("$($B first-byte 'http://127.0.0.1:18999/?bytes=1' --exec "$CTR run -d --net-host --env PORT=18999 docker.io/library/probe:latest $c >/dev/null")")
  $CTR tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; sleep 0.2
  $CTR tasks rm -f "$c" >/dev/null 2>&1 || true; $CTR containers rm "$c" >/dev/null 2>&1 || true
done
rm_=$(median "${runlet_ms[@]}"); cm=$(median "${ctr_ms[@]}")
# The same under gen1: the instance's containers run under gVisor's runsc.
serve coldg1 18091 --idle-timeout 1s --execution-environment gen1
gen1_ms=()
for i in $(seq 1 10); do
  for _ in $(seq 1 200); do [ "$(containers_of coldg1)" = 0 ] && break; sleep 0.1; done
  gen1_ms+=("$($B first-byte 'http://127.0.0.1:18091/?bytes=1')")
done
g1=$(median "${gen1_ms[@]}")
phases=$(grep "instance ready after" "$run/cold.log" | tail -n +2 | sed -E 's/.*\((network [^)]*)\).*/\1/' | head -10)
g1phases=$(grep "instance ready after" "$run/coldg1.log" | tail -n +2 | sed -E 's/.*\((network [^)]*)\).*/\1/' | head -10)
phase_median() { echo "${2-$phases}" | sed -E "s/.*$1 ([0-9.]+) ms.*/\1/" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
{
  echo "## 2. Cold start (request at zero instances → first response byte; 10 runs, median)"
  echo
  echo "| path | median ms | all runs (ms) |"
  echo "|---|---:|---|"
  echo "| runlet (held request, scale from zero, own netns + CNI) | $rm_ | ${runlet_ms[*]} |"
  echo "| bare \`ctr run -d --net-host\` + first byte (incl. the ctr process) | $cm | ${ctr_ms[*]} |"
  echo "| runlet, \`--execution-environment gen1\` (gVisor's runsc through the runc shim) | $g1 | ${gen1_ms[*]} |"
  echo
  echo "- runlet / bare ctr: $(ratio "$rm_" "$cm"); gen1 / gen2: $(ratio "$g1" "$rm_")"
  echo "- runlet's share, median of the same runs: network $(phase_median network) ms, create $(phase_median create) ms, start $(phase_median start) ms, first successful probe $(phase_median probe) ms"
  echo "- the same under gen1: network $(phase_median network "$g1phases") ms, create $(phase_median create "$g1phases") ms, start $(phase_median start "$g1phases") ms, first successful probe $(phase_median probe "$g1phases") ms"
  echo
} >>"$out"
fi

# ---- 3. scale-out ------------------------------------------------------------------------
if want scale; then
serve scale 18095 --concurrency 1 --max-instances 5
s=$($B step 'http://127.0.0.1:18095/?sleep=2000' --clients 5)
{
  echo "## 3. Scale from 1 to max (5) under a step load of 5 requests taking 2 s each, concurrency 1"
  echo
  echo "- time to first byte of each request (ms): $(echo "$s" | python3 -c 'import json,sys; print(", ".join("%.0f" % r["first_byte_ms"] for r in json.load(sys.stdin)))')"
  echo "- time to serve the whole step beyond the 2 s of work: $(echo "$s" | python3 -c 'import json,sys; print("%.0f ms" % (max(r["first_byte_ms"] for r in json.load(sys.stdin)) - 2000))')"
  echo
} >>"$out"
fi

# ---- 4. jobs -----------------------------------------------------------------------------
jobs_row() { # parallelism
  local t0 t1
  t0=$(date +%s.%N)
  $R job execute bench-p$1 --image busybox --command /bin/true --tasks 100 --parallelism "$1" >"$run/job-$1.log" 2>&1
  t1=$(date +%s.%N)
  python3 -c "print('%.1f' % (($t1 - $t0) * 1000 / 100))"
}
ctr_row() {
  local t0 t1
  t0=$(date +%s.%N)
  seq 1 100 | xargs -P "$1" -I{} $CTR run --rm docker.io/library/busybox:latest "ctr-job-$1-{}" /bin/true
  t1=$(date +%s.%N)
  python3 -c "print('%.1f' % (($t1 - $t0) * 1000 / 100))"
}
# The daemon's RunJob: a stored job of 100 tasks run through the Admin API (`runlet jobs
# execute --async`, the call returning once the execution is created), timed from the call
# to the execution's completionTime as the daemon records it (so the CLI's polling is not
# counted). Prints "CALL_TO_END_MS/100 CREATE_TO_END_MS/100".
api_row() { # parallelism
  local t0 id
  $R jobs create bench-api-p$1 --image busybox --command /bin/true --tasks 100 --parallelism "$1" --api $japi >>"$run/jobs-api.log" 2>&1
  t0=$(date +%s.%N)
  id=$($R jobs execute bench-api-p$1 --async --api $japi | sed -E 's/.*\[(.*)\].*/\1/')
  for _ in $(seq 1 3000); do
    $R jobs executions describe "$id" --format json --api $japi >"$run/exec-$1.json" 2>>"$run/jobs-api.log" || true
    python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("completionTime") else 1)' "$run/exec-$1.json" 2>/dev/null && break
    sleep 0.5
  done
  python3 - "$run/exec-$1.json" "$t0" <<'PY'
import json, sys
from datetime import datetime
e = json.load(open(sys.argv[1]))
assert e.get("succeededCount") == 100, e
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
end = t(e["completionTime"])
print("%.1f %.1f" % ((end - float(sys.argv[2])) * 1000 / 100, (end - t(e["createTime"])) * 1000 / 100))
PY
}
if want jobs; then
jr1=$(jobs_row 1); cr1=$(ctr_row 1); jr10=$(jobs_row 10); cr10=$(ctr_row 10)
# A daemon of its own for this section (section 6 starts a fresh one).
japi=127.0.0.1:18392
rm -rf "$root/state/daemon"
RUNLET_LOG=info,runlet::task=warn $R daemon --listen 127.0.0.1:18382 --api-listen $japi --no-manage-hosts --metrics-listen off >"$run/daemon-jobs.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 300); do grep -q "runlet daemon: services at" "$run/daemon-jobs.log" && break; sleep 0.1; done
grep -q "runlet daemon: services at" "$run/daemon-jobs.log" || { cat "$run/daemon-jobs.log"; exit 1; }
read -r ar1 ac1 < <(api_row 1); read -r ar10 ac10 < <(api_row 10)
term_wait TERM "$daemon_pid"; daemon_pid=
rm -rf "$root/state/daemon"
{
  echo "## 4. Jobs: 100 tasks of \`/bin/true\` (busybox image)"
  echo
  echo "| parallelism | \`runlet job execute\` ms/task | daemon \`RunJob\` (API) ms/task | bare \`ctr run --rm\` ms/task | job execute / ctr | RunJob / ctr |"
  echo "|---:|---:|---:|---:|---:|---:|"
  echo "| 1 | $jr1 | $ar1 | $cr1 | $(ratio "$jr1" "$cr1") | $(ratio "$ar1" "$cr1") |"
  echo "| 10 | $jr10 | $ar10 | $cr10 | $(ratio "$jr10" "$cr10") | $(ratio "$ar10" "$cr10") |"
  echo
  echo "runlet's tasks each get a network namespace (lo, CNI bridge + host-local), an in-memory root"
  echo "filesystem, FIFO log capture and a durable record update; \`ctr run --rm\` does none of that."
  echo "\`runlet job execute\` is timed from the command's start to its exit (its own start and"
  echo "image lookup included). \`RunJob\` is a job stored in a \`runlet daemon\` and run through"
  echo "the Admin API (\`runlet jobs execute --async\`), timed from the call to the execution's"
  echo "\`completionTime\` as the daemon records it (from its \`createTime\`: $ac1 and $ac10 ms/task)."
  echo
} >>"$out"
fi
# ---- 5. instructions per request ---------------------------------------------------------
# Time on these machines is noisy; instruction counts are not. runlet (one ingress thread)
# and nginx (one worker, in the instance's namespace) each run under callgrind and serve
# 2,000 then 12,000 keep-alive requests from ab; the difference over 10,000 is the user-space
# instructions per request, start-up excluded. (System time is not counted.)
if want instructions; then
for p in valgrind apache2-utils; do dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }; done
total_ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}'; }
wait_ok() { for _ in $(seq 1 600); do $1 curl -sf -o /dev/null "$2" && return 0; sleep 0.2; done; return 1; }
runlet_ir() { # requests
  local f=$run/cg-runlet-$1.out vp
  RUNLET_LOG=warn RUNLET_INGRESS_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$f" \
    $R serve --image probe --service ins --listen 127.0.0.1:18097 --metrics-listen off --concurrency 1000 >"$run/ins-$1.log" 2>&1 &
  vp=$!
  wait_ok "" 'http://127.0.0.1:18097/?bytes=128'
  ab -q -k -n "$1" -c 8 'http://127.0.0.1:18097/?bytes=128' >/dev/null
  term_wait INT "$vp"
  total_ir "$f"
}
serve insn 18098
ns=runlet-$($CTR containers ls -q | grep '^insn-00001-' | head -1)
cat > "$run/nginx-cg.conf" <<NGINX
worker_processes 1;
pid $run/nginx-cg.pid;
error_log $run/nginx-cg-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream probe { server 127.0.0.1:8080; keepalive 64; }
  server { listen 127.0.0.1:18099; location / { proxy_pass http://probe; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
nginx_ir() { # requests
  local f=$run/cg-nginx-$1.out vp
  ip netns exec "$ns" valgrind --tool=callgrind --callgrind-out-file="$f" nginx -c "$run/nginx-cg.conf" -g 'daemon off; master_process off;' >"$run/nginx-cg-$1.log" 2>&1 &
  vp=$!
  wait_ok "ip netns exec $ns" 'http://127.0.0.1:18099/?bytes=128'
  ip netns exec "$ns" ab -q -k -n "$1" -c 8 'http://127.0.0.1:18099/?bytes=128' >/dev/null
  term_wait QUIT "$vp"
  total_ir "$f"
}
r1=$(runlet_ir 2000); r2=$(runlet_ir 12000); n1=$(nginx_ir 2000); n2=$(nginx_ir 12000)
per() { python3 -c "print('%.1f' % (($2 - $1) / 10000 / 1000))"; }
{
  echo "## 5. User-space instructions per request (callgrind, \`GET /?bytes=128\`, ab -k -c 8)"
  echo
  echo "Each proxy runs under callgrind and serves 2,000, then (in a second run) 12,000 requests;"
  echo "the difference over 10,000 requests, so start-up is excluded. Instruction counts do not"
  echo "depend on what else the machine is doing. System time is not included."
  echo
  echo "| proxy | thousand instructions per request |"
  echo "|---|---:|"
  echo "| runlet (one ingress thread) | $(per "$r1" "$r2") |"
  echo "| nginx (one worker, \`master_process off\`) | $(per "$n1" "$n2") |"
  echo
} >>"$out"
fi
# ---- 6. the daemon -----------------------------------------------------------------------
# One `runlet daemon` on this script's containerd and state dir (shared with the `runlet
# serve`s above and below, so that their CNI address allocations are one pool), on ports of
# its own, without /etc/hosts lines. Stopped (SIGTERM) by cleanup. Its ingress logs each
# refusal at info: the deploy measurement's poller gets hundreds of 404s, so the ingress
# logs at warn here (runlet serve's ingress logs nothing per request either).
if want daemon; then
dport=18380; api=127.0.0.1:18390
rm -rf "$root/state/daemon"   # a previous run's services would come back
RUNLET_LOG=info,runlet::ingress=warn $R daemon --listen 127.0.0.1:$dport --api-listen $api --no-manage-hosts --metrics-listen off >"$run/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 300); do grep -q "runlet daemon: services at" "$run/daemon.log" && break; sleep 0.1; done
grep -q "runlet daemon: services at" "$run/daemon.log" || { cat "$run/daemon.log"; exit 1; }
daemon_deploy() { $R deploy "$@" --image probe --api $api >>"$run/deploy.log" 2>&1; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$daemon_pid/status"; }
of_daemon() { $CTR containers ls -q | grep -c "^$1" || true; }
# 1. Memory: RSS with no service; 50 services deployed at min-instances 0 (each deploy
# returns when its revision is ready, i.e. its first instance answered); the same services
# with no instance left. The daemon keeps a first instance for its idle timeout (15 min, as
# Cloud Run, not settable through the API); rather than wait, those instances are stopped
# from outside (SIGTERM to their tasks): the daemon removes an instance that exits as it
# removes an idle one. BENCH_DAEMON_IDLE=timeout waits for the idle timeout instead.
sleep 2
rss0=$(rss_kib)
t0=$(date +%s.%N)
seq -w 1 50 | xargs -P 5 -I{} $R deploy idle-{} --image probe --min-instances 0 --api $api >>"$run/deploy.log" 2>&1
t1=$(date +%s.%N)
[ "$(of_daemon idle-)" = 50 ] || { echo "expected 50 instances of idle-*, found $(of_daemon idle-)"; $CTR containers ls -q; exit 1; }
sleep 2
rss1=$(rss_kib)
if [ "${BENCH_DAEMON_IDLE:-}" = timeout ]; then
  idle_how="after the daemon's idle timeout (15 min) stopped them"
  for _ in $(seq 1 1200); do [ "$(of_daemon idle-)" = 0 ] && break; sleep 1; done
else
  idle_how="after their first instances were stopped from outside (SIGTERM to each task; the daemon removed them as exited), not to wait the 15 min idle timeout"
  for c in $($CTR containers ls -q | grep '^idle-'); do $CTR tasks kill -s SIGTERM "$c" >/dev/null 2>&1 || true; done
  for _ in $(seq 1 600); do [ "$(of_daemon idle-)" = 0 ] && break; sleep 0.1; done
fi
[ "$(of_daemon idle-)" = 0 ] || { echo "instances of idle-* still there: $(of_daemon idle-)"; exit 1; }
sleep 3
rss2=$(rss_kib)
mib() { python3 -c "print('%.1f' % ($1 / 1024))"; }
per_svc=$(python3 -c "print('%.0f' % (($rss2 - $rss0) / 50))")

# 2. Deploy → first 200: from the client call (`runlet deploy --async`, which returns once
# the daemon has accepted it) to the first 200 from the new service through the daemon's
# ingress (404 until the service is routed); beside `runlet serve` from its start to its
# first 200.
dep_ms=(); srv_ms=(); rm -f "$run/fresh.log"
for i in $(seq 1 10); do
  dep_ms+=("$($B first-byte "http://127.0.0.1:$dport/?bytes=1" --host "fresh-$i.localhost:$dport" --status 200 \
    --exec "$R deploy fresh-$i --image probe --async --api $api >>$run/deploy.log 2>&1")")
  srv_ms+=("$($B first-byte 'http://127.0.0.1:18386/?bytes=1' --status 200 \
    --exec "RUNLET_LOG=info $R serve --image probe --service fresh --listen 127.0.0.1:18386 --metrics-listen off >>$run/fresh.log 2>&1 & echo \$! >$run/fresh.pid")")
  kill -INT "$(cat "$run/fresh.pid")"
  for _ in $(seq 1 300); do kill -0 "$(cat "$run/fresh.pid")" 2>/dev/null || break; sleep 0.1; done
  rm -f "$run/fresh.pid"
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%s | %s | %s", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), a[1], a[NR]}'; }

# 3. Data path: the same wrk load as section 1 against one probe service through the
# daemon's Host-routed ingress (with the 60 services above in its table) and against a
# `runlet serve` of the same image (one route, no Host lookup), alternating.
daemon_deploy hot --concurrency 1000 --min-instances 1
serve hots 18385 --concurrency 1000
path='/?bytes=128'
rounds=${BENCH_DAEMON_ROUNDS:-9}
declare -A hurl=([daemon]="http://127.0.0.1:$dport$path" [serve]="http://127.0.0.1:18385$path")
declare -A hhdr=([daemon]="Host: hot.localhost:$dport" [serve]="Host: 127.0.0.1:18385")
declare -A hwho=([daemon]="$daemon_pid" [serve]="${pids[-1]}")
rm -f "$run"/hwrk-*
for t in daemon serve; do wrk -t2 -c64 -d3s -H "${hhdr[$t]}" "${hurl[$t]}" >/dev/null; done   # warm-up
for r in $(seq 1 "$rounds"); do
  for t in daemon serve; do
    read -r u0 s0 < <(cpu_ticks ${hwho[$t]})
    w=$(wrk -t2 -c64 -d8s --latency -H "${hhdr[$t]}" "${hurl[$t]}")
    read -r u1 s1 < <(cpu_ticks ${hwho[$t]})
    n=$(echo "$w" | awk '/requests in/ {print $1}')
    bad=$(echo "$w" | awk '/Non-2xx/ {print $NF}')
    [ -z "$bad" ] || { echo "$t: $bad non-2xx responses"; echo "$w"; exit 1; }
    echo "$(echo "$w" | awk '/Requests\/sec/ {print $2}') $(echo "$w" | awk '$1=="50%" {print $2}') $(echo "$w" | awk '$1=="99%" {print $2}') $(python3 -c "print('%.1f' % (($u1 - $u0 + $s1 - $s0) * 1e6 / $tck / $n))")" >>"$run/hwrk-$t"
  done
done
declare -A hrps hp50 hp99 hcpu
for t in daemon serve; do read -r hrps[$t] hp50[$t] hp99[$t] hcpu[$t] < <(sort -n "$run/hwrk-$t" | sed -n "$(( (rounds + 1) / 2 ))p"); done
hrounds=$(paste -d' ' "$run/hwrk-daemon" "$run/hwrk-serve" | awk '{printf "%s%.3f", (NR>1?", ":""), $1/$(NF/2+1)}')
# Each round runs both back to back, so a round's own ratio is the least disturbed by the
# machine's other work; their median is the headline.
hpaired=$(median $(paste -d' ' "$run/hwrk-daemon" "$run/hwrk-serve" | awk '{printf "%.3f\n", $1/$(NF/2+1)}'))
hcpupaired=$(median $(paste -d' ' "$run/hwrk-daemon" "$run/hwrk-serve" | awk '{printf "%.3f\n", $4/$(NF/2+4)}'))
# Where an instance's start went (the daemon's and serve's own log lines), median of the runs.
ready_phases() { sed 's/\x1b\[[0-9;]*m//g' "$1" | grep "$2" | grep "instance ready after" | sed -E 's/.*\((network [^)]*)\).*/\1/' || true; }
dphases=$(ready_phases "$run/daemon.log" 'service{service=fresh-')
sphases=$(ready_phases "$run/fresh.log" 'service{service=fresh ')
phase_of() { echo "$1" | sed -E "s/.*$2 ([0-9.]+) ms.*/\1/" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
phase_line() { echo "network $(phase_of "$1" network) ms, create $(phase_of "$1" create) ms, start $(phase_of "$1" start) ms, first successful probe $(phase_of "$1" probe) ms"; }
{
  echo "## 6. Daemon (\`runlet daemon\`: idle services, deploy → first 200, Host-routed data path)"
  echo
  echo "One \`runlet daemon --no-manage-hosts --metrics-listen off\` on this script's containerd, its"
  echo "clients the \`runlet\` CLI over its TCP API."
  echo
  echo "### Memory of idle services (the daemon's VmRSS)"
  echo
  echo "| state | daemon RSS (MiB) |"
  echo "|---|---:|"
  echo "| no service | $(mib "$rss0") |"
  echo "| 50 services deployed at \`--min-instances 0\`, each with its first instance | $(mib "$rss1") |"
  echo "| the same 50 services idle, no instance | $(mib "$rss2") |"
  echo
  echo "- per idle service: (idle - none) / 50 = **$per_svc KiB** (target ≤ 1 MiB)"
  echo "- idle: $idle_how"
  echo "- the 50 deploys (5 at a time, each returning when its revision was ready) took $(python3 -c "print('%.1f' % ($t1 - $t0))") s"
  echo
  echo "### Deploy → first 200 (10 runs)"
  echo
  echo "| from → to | median ms | min | max | all runs (ms) |"
  echo "|---|---:|---:|---:|---|"
  echo "| \`runlet deploy NEW --async\` (client call) → first 200 from it through the daemon's ingress | $(stats "${dep_ms[@]}") | ${dep_ms[*]} |"
  echo "| \`runlet serve\` start → first 200 | $(stats "${srv_ms[@]}") | ${srv_ms[*]} |"
  if [ -n "${rm_:-}" ]; then
  echo "| \`runlet serve\`, request at zero instances → first byte (section 2) | $(stats "${runlet_ms[@]}") | ${runlet_ms[*]} |"
  fi
  echo
  echo "A deploy's time includes the CLI's start, the API call, the record written (fsync) and the"
  echo "revision's first instance started and answering; the client polls every millisecond."
  echo "The instance's own start, median of the same runs: deploy: $(phase_line "$dphases");"
  echo "serve: $(phase_line "$sphases")."
  echo
  echo "### Data path: Host routing in the daemon against \`runlet serve\`'s single route"
  echo
  echo "One probe instance each (\`--concurrency 1000\`), \`GET $path\`, wrk -t2 -c64 (the daemon's"
  echo "with \`-H 'Host: hot.localhost:$dport'\`, among the 61 services above), $rounds rounds of 8 s"
  echo "alternating, median round shown; CPU is the daemon's or the serve process's, user + system"
  echo "per request."
  echo
  echo "| path | req/s | wrk p50 | wrk p99 | CPU µs/request |"
  echo "|---|---:|---:|---:|---:|"
  echo "| daemon, Host-routed | ${hrps[daemon]} | ${hp50[daemon]} | ${hp99[daemon]} | ${hcpu[daemon]} |"
  echo "| \`runlet serve\`, single route | ${hrps[serve]} | ${hp50[serve]} | ${hp99[serve]} | ${hcpu[serve]} |"
  echo
  echo "- throughput daemon/serve, median of the rounds' own ratios (each round runs both back to"
  echo "  back): **$hpaired** (rounds: $hrounds); of the median rounds above: $(python3 -c "print('%.3f' % (${hrps[daemon]} / ${hrps[serve]}))"); target within 3%"
  echo "- CPU per request daemon/serve, median of the rounds' own ratios: **$hcpupaired**; of the median rounds: $(python3 -c "print('%.3f' % (${hcpu[daemon]} / ${hcpu[serve]}))")"
  echo
} >>"$out"
fi
# ---- 7. Pub/Sub trigger latency ----------------------------------------------------------
# A job bound to a subscription of Google's Pub/Sub emulator (loopback), on a daemon of its
# own (its own state dir: section 6's holds the lock). 20 times: publish one message, then
# read the daemon's own timestamp of the task container's start ("attempt started"); the
# next message follows 3 s after the execution ends, so each arrives with the trigger's
# idle poll backed off to its 2 s cap, as on a queue that is mostly empty.
if want pubsub; then
eport=18395; papi=127.0.0.1:18396; pport=18397
RP="target/release/runlet --containerd-address $sock --state-dir $root/state-pubsub --no-embedded-containerd"
rm -rf "$root/state-pubsub"
setsid gcloud beta emulators pubsub start --host-port=127.0.0.1:$eport --project=bench >"$run/emulator.log" 2>&1 &
emu_pid=$!
E=http://127.0.0.1:$eport/v1/projects/bench
for _ in $(seq 1 900); do curl -sf "$E/topics" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$E/topics" >/dev/null || { cat "$run/emulator.log"; exit 1; }
PUBSUB_EMULATOR_HOST=127.0.0.1:$eport RUNLET_LOG=info NO_COLOR=1 $RP daemon --listen 127.0.0.1:$pport --api-listen $papi --no-manage-hosts --metrics-listen off >"$run/pubsub-daemon.log" 2>&1 &
pdaemon_pid=$!
for _ in $(seq 1 300); do grep -q "runlet daemon: services at" "$run/pubsub-daemon.log" && break; sleep 0.1; done
grep -q "runlet daemon: services at" "$run/pubsub-daemon.log" || { cat "$run/pubsub-daemon.log"; exit 1; }
J='content-type: application/json'
curl -sf -XPUT "$E/topics/bench-work" -H "$J" -d '{}' >/dev/null
curl -sf -XPUT "$E/subscriptions/bench-sub" -H "$J" -d '{"topic":"projects/bench/topics/bench-work"}' >/dev/null
$RP jobs create trig --image busybox --command /bin/true --max-retries 0 --pubsub-subscription projects/bench/subscriptions/bench-sub --api $papi >/dev/null
sleep 3
trig_ms=()
for i in $(seq 1 20); do
  n=$(grep -c "attempt started" "$run/pubsub-daemon.log" || true)
  e=$(grep -c "execution ended" "$run/pubsub-daemon.log" || true)
  t0=$(date +%s.%N)
  curl -sf -XPOST "$E/topics/bench-work:publish" -H "$J" -d '{"messages":[{"data":"eA=="}]}' >/dev/null
  for _ in $(seq 1 3000); do [ "$(grep -c "attempt started" "$run/pubsub-daemon.log" || true)" -gt "$n" ] && break; sleep 0.01; done
  ts=$(grep "attempt started" "$run/pubsub-daemon.log" | sed -n "$((n + 1))p" | awk '{print $1}')
  trig_ms+=("$(python3 -c "import datetime,sys; t=datetime.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')).timestamp(); print('%.0f' % ((t - float(sys.argv[2])) * 1000))" "$ts" "$t0")")
  for _ in $(seq 1 3000); do [ "$(grep -c "execution ended" "$run/pubsub-daemon.log" || true)" -gt "$e" ] && break; sleep 0.01; done
  sleep 3
done
term_wait TERM "$pdaemon_pid"; pdaemon_pid=
kill -TERM -- "-$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; emu_pid=
rm -rf "$root/state-pubsub"
sorted=$(printf '%s\n' "${trig_ms[@]}" | sort -n)
{
  echo "## 7. Pub/Sub trigger: message published → task container started"
  echo
  echo "A job bound with \`--pubsub-subscription\` to Google's Pub/Sub emulator on loopback (busybox"
  echo "\`/bin/true\`); each of 20 messages published 3 s after the previous execution ended, so the"
  echo "trigger's empty-subscription poll had backed off to its 2 s cap. From just before the"
  echo "publish call to the daemon's log line for the task's start (after its container's start)."
  echo
  echo "| median ms | min | max | all runs (ms) |"
  echo "|---:|---:|---:|---|"
  echo "| $(median "${trig_ms[@]}") | $(echo "$sorted" | head -1) | $(echo "$sorted" | tail -1) | ${trig_ms[*]} |"
  echo
  echo "Most of it is the idle poll (uniform over 0-2 s at the cap); the rest is the pull, the"
  echo "execution's record, and the task's sandbox and container start (section 4's per-task cost)."
  echo
} >>"$out"
fi
# ---- 8. registry pull ----------------------------------------------------------------------
# A 5-layer image of 5 x 48 MiB random bytes (gzip, so about 240 MiB on the wire) in Debian's
# docker-registry on loopback (plain HTTP), pulled with a cold store (the image removed and
# its blobs collected in every namespace) by runlet, by containerd's own client (`ctr image
# pull --plain-http`, which also unpacks) and by `skopeo copy` to an OCI directory (no
# unpack); three runs each, interleaved. Warm: `runlet image pull` again with every blob and
# snapshot present.
if want pull; then
preg=$run/pull-registry
rm -rf "$preg"; mkdir -p "$preg"
python3 - "$preg/oci" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
root = sys.argv[1]; blobs = os.path.join(root, "blobs", "sha256"); os.makedirs(blobs)
def put(b):
    h = hashlib.sha256(b).hexdigest(); open(os.path.join(blobs, h), "wb").write(b); return "sha256:" + h, len(b)
layers, diffs = [], []
for i in range(5):
    data = os.urandom(48 << 20); raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        ti = tarfile.TarInfo("layer-%d.bin" % i); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    raw = raw.getvalue(); diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
    layers.append(put(gzip.compress(raw, 1)))
cfg = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diffs}}).encode())
man = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg[0], "size": cfg[1]},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n} for d, n in layers]}).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man[0], "size": man[1],
    "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, open(os.path.join(root, "index.json"), "w"))
open(os.path.join(root, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
rport=18500
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$preg/storage" "$rport" > "$preg/config.yml"
docker-registry serve "$preg/config.yml" >"$preg/registry.log" 2>&1 &
registry_pid=$!   # stopped with TERM in cleanup: a background job of this shell ignores SIGINT
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$rport/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$preg/oci:v1" "docker://127.0.0.1:$rport/bench/big:v1"
img=127.0.0.1:$rport/bench/big:v1
wire=$(du -cb "$preg"/oci/blobs/sha256/* | tail -1 | cut -f1)
CTRP="ctr -a $sock -n bench-pull"
cold() { # every copy of the image gone, its blobs and snapshots collected
  $R image rm "$img" >/dev/null 2>&1 || true
  $CTRP images rm --sync "$img" >/dev/null 2>&1 || true
  rm -rf "$preg/skopeo"
  if $CTR content ls -q | grep -qf <(ls "$preg/oci/blobs/sha256"); then echo "pull bench: blobs left in the store" >&2; exit 1; fi
}
secs() { python3 -c "print('%.2f' % ($2 - $1))"; }
timed() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; t1=$(date +%s.%N); secs "$t0" "$t1"; }
p_runlet=() p_ctr=() p_skopeo=() p_warm=() p_ctr_warm=()
for i in 1 2 3; do
  cold; p_runlet+=("$(timed $R image pull --quiet "$img")")
  for _ in 1 2 3; do p_warm+=("$(timed $R image pull --quiet "$img")"); done
  cold; p_ctr+=("$(timed $CTRP image pull --plain-http "$img")")
  p_ctr_warm+=("$(timed $CTRP image pull --plain-http "$img")")
  cold; p_skopeo+=("$(timed skopeo copy --quiet --src-tls-verify=false "docker://$img" "oci:$preg/skopeo:v1")")
done
cold
pr=$(median "${p_runlet[@]}") pc=$(median "${p_ctr[@]}") ps=$(median "${p_skopeo[@]}")
pw=$(median "${p_warm[@]}") pcw=$(median "${p_ctr_warm[@]}")
{
  echo "## 8. Registry pull: a 5-layer, $((wire >> 20)) MiB image from a registry on loopback"
  echo
  echo "Debian's docker-registry on 127.0.0.1 (plain HTTP), five gzip layers of 48 MiB random bytes."
  echo "Cold: the image removed and its blobs and snapshots collected in every namespace before"
  echo "each run. runlet and ctr fetch, verify, store and unpack (overlayfs); skopeo only fetches"
  echo "and writes an OCI directory. Three runs each, interleaved; wall-clock seconds of the"
  echo "whole command."
  echo
  echo "| client | median s | runs (s) | vs ctr |"
  echo "|---|---:|---|---:|"
  echo "| \`runlet image pull\` | $pr | ${p_runlet[*]} | $(ratio "$pr" "$pc") |"
  echo "| \`ctr image pull --plain-http\` | $pc | ${p_ctr[*]} | 1.00 |"
  echo "| \`skopeo copy\` to an OCI dir | $ps | ${p_skopeo[*]} | $(ratio "$ps" "$pc") |"
  echo
  echo "Warm (every blob and snapshot present; the manifest and config are fetched again):"
  echo "\`runlet image pull\` median $pw s (runs: ${p_warm[*]}); \`ctr image pull\` median $pcw s (runs: ${p_ctr_warm[*]})."
  echo "A command's time includes its process start and its containerd connection."
  echo
} >>"$out"
fi
# ---- soak (only when named) ---------------------------------------------------------------
# One service at Cloud Run's default concurrency (80), instances idle out after 20 s. The
# capacity is what runlet-bench's open loop achieves against it when asked for far more;
# the soak then runs at 80% of it for BENCH_SOAK_SECONDS (600) with streams, 20 WebSockets
# held open and a burst of 100 three-second requests every 60 s (scale up, then in).
if want soak; then
serve soak 18099 --concurrency 80 --max-instances 10 --idle-timeout 20s
soak_pid=${pids[-1]}
U=http://127.0.0.1:18099/
cap=$($B rate "$U" --rate 30000 --duration 10 --connections 64 | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["achieved_rps"]))')
srate=$(( cap * 8 / 10 ))
secs=${BENCH_SOAK_SECONDS:-600}
( while :; do echo "$(containers_of soak)"; sleep 5; done ) >"$run/soak-instances" &
inst_pid=$!
j=$($B soak "$U" --rate "$srate" --duration "$secs" --pid "$soak_pid" --websockets 20 --burst 100 --every 60 2>"$run/soak-samples")
kill "$inst_pid" 2>/dev/null || true
field() { echo "$j" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
{
  echo "## Soak: ${secs} s of mixed load on one service"
  echo
  echo "\`BENCH_SECTIONS=soak bash deploy/bench.sh\` ($(date -u +%Y-%m-%d)): \`runlet serve\` of the probe at concurrency 80,"
  echo "\`--idle-timeout 20s\`; capacity measured first ($cap req/s, runlet-bench's open loop asked for"
  echo "30,000/s), then at 80% of it ($srate req/s) short requests, a streamed response every 200 ms, 20"
  echo "WebSockets held open (a message each 5 s), and every 60 s a burst of 100 requests of 3 s"
  echo "(instances seen: $(sort -n "$run/soak-instances" | head -1) to $(sort -n "$run/soak-instances" | tail -1))."
  echo
  echo "WebSocket sessions that runlet closed at the request timeout (300 s, as Cloud Run does),"
  echo "each then opened again by the client: $(field "d['websockets_closed_at_request_timeout']") (counted as expected)."
  echo
  echo "| kind | sent | non-2xx or failed |"
  echo "|---|---:|---:|"
  for k in short streamed websockets burst; do
    echo "| $k | $(field "d['$k']['sent']") | $(field "d['$k']['non_2xx_or_failed']") |"
  done
  echo
  echo "Short requests: p50 $(field "'%.2f' % d['short_p50_ms']") ms, p99 $(field "'%.2f' % d['short_p99_ms']") ms (from each request's scheduled time)."
  echo "runlet's RSS moved $(field "'%+.1f' % d['rss_drift_pct']")% and its open fds $(field "'%+.1f' % d['fd_drift_pct']")% from the first sample after the first"
  echo "burst cycle to the last. Samples (s, RSS KiB, fds): $(field "' '.join('%d/%d/%d' % tuple(x) for x in d['samples'])")"
  echo
} >>"$out"
fi
if [ -n "${BENCH_SECTIONS:-}" ]; then cat "$out"; echo "(a compiler was running in $(grep -c 1 "$run/busy" || true) of $(wc -l < "$run/busy") samples)"; exit 0; fi

# The hand-kept part of docs/benchmarks.md (the soak's pasted result, the measurements
# behind design choices, and before/after records) survives a re-run: everything from the
# first of those headings on is kept.
history=$(sed -n '/^## \(Soak: \|History: measurements behind the design\)/,$p' docs/benchmarks.md)
{
  echo "# Benchmarks"
  echo
  echo "Measured with \`${BENCH_DAEMON_IDLE:+BENCH_DAEMON_IDLE=$BENCH_DAEMON_IDLE }bash deploy/bench.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), containerd $(ctr -a "$sock" version | awk '/Version/ {print $2; exit}')."
  echo "Each section compares its rows side by side in one run; absolute numbers vary between"
  echo "runs on these shared machines, ratios much less. The load generator (wrk, and"
  echo "\`runlet-bench rate\`, an open-loop fixed-rate client in \`src/bin/runlet-bench/\`) shares"
  echo "the $(nproc) cores with the server under test. The machine is shared with other work: a"
  echo "compiler (another session's build) was running in $(grep -c 1 "$run/busy" || true) of the $(wc -l < "$run/busy") samples taken every 5 s"
  echo "during this run."
  echo
  echo "Targets set in the issues: data path throughput at least nginx's, p99 added over direct"
  echo "at most 1 ms at 1,000 req/s; cold start at most 1.2x a bare \`ctr run\`; job tasks at most"
  echo "1.2x bare \`ctr run --rm\` per task; the daemon: at most 1 MiB per idle service, and its"
  echo "Host-routed data path within 3% of \`runlet serve\`'s."
  echo
  cat "$out"
  if [ -n "$history" ]; then printf '%s\n' "$history"; fi
} > docs/benchmarks.md
cat docs/benchmarks.md
