#!/usr/bin/env bash
# Benchmarks, not tests: every comparison runs side by side in one run, because these
# machines are noisy. Writes docs/benchmarks.md.   Usage: bash deploy/bench.sh
#
# 1. Data path: requests/s and latency for the probe reached directly, through nginx, and
#    through runlet, with the same load generator and connection counts.
# 2. Cold start: a request arriving at zero instances, to its first response byte, through
#    runlet; against a bare `ctr run` of the same image, to the same first byte.
# 3. Scale-out: time for a step load to be served by max instances.
# 4. Jobs: 100 tasks that exit 0 at once, parallelism 1 and 10, against bare `ctr run --rm`.
# 5. User-space instructions per request, runlet against nginx, under callgrind.
# All traffic stays on loopback (the instance's own loopback, reached inside its namespace).
# BENCH_SECTIONS="datapath cold" runs only those sections and prints, without writing docs/.
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
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -f "$run/nginx.pid" ] && kill "$(cat "$run/nginx.pid")" 2>/dev/null || true
  for c in $(ctr -a "$sock" -n runlet containers ls -q 2>/dev/null); do
    ctr -a "$sock" -n runlet tasks kill -a -s SIGKILL "$c" >/dev/null 2>&1 || true
    sleep 0.2
    ctr -a "$sock" -n runlet tasks rm -f "$c" >/dev/null 2>&1 || true
    ctr -a "$sock" -n runlet containers rm "$c" >/dev/null 2>&1 || true
  done
  [ -n "${containerd_pid:-}" ] && { kill "$containerd_pid"; wait "$containerd_pid" 2>/dev/null || true; }
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

serve() { # name port args... ; waits until serving
  local name=$1 port=$2; shift 2
  RUNLET_LOG=info $R serve --image probe --service "$name" --listen "127.0.0.1:$port" --metrics-listen off "$@" >"$run/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q "is serving at" "$run/$name.log" && return 0; sleep 0.1; done
  cat "$run/$name.log"; exit 1
}
containers_of() { $CTR containers ls -q | grep -c "^$1-00001-" || true; }

sections=${BENCH_SECTIONS:-datapath cold scale jobs instructions}
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
# cpu_ticks PID... prints "USER SYSTEM" clock ticks, summed over the processes' threads.
cpu_ticks() { local u=0 s=0 f a b; for p in "$@"; do for f in /proc/"$p"/task/*/stat; do read -r a b < <(sed 's/.*) //' "$f" | awk '{print $12, $13}'); u=$((u + a)); s=$((s + b)); done; done; echo "$u $s"; }
tck=$(getconf CLK_TCK)
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
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
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
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rm_=$(median "${runlet_ms[@]}"); cm=$(median "${ctr_ms[@]}")
phases=$(grep "instance ready after" "$run/cold.log" | tail -n +2 | sed -E 's/.*\((network [^)]*)\).*/\1/' | head -10)
phase_median() { echo "$phases" | sed -E "s/.*$1 ([0-9.]+) ms.*/\1/" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
{
  echo "## 2. Cold start (request at zero instances → first response byte; 10 runs, median)"
  echo
  echo "| path | median ms | all runs (ms) |"
  echo "|---|---:|---|"
  echo "| runlet (held request, scale from zero, own netns + CNI) | $rm_ | ${runlet_ms[*]} |"
  echo "| bare \`ctr run -d --net-host\` + first byte (incl. the ctr process) | $cm | ${ctr_ms[*]} |"
  echo
  echo "- runlet / bare ctr: $(ratio "$rm_" "$cm")"
  echo "- runlet's share, median of the same runs: network $(phase_median network) ms, create $(phase_median create) ms, start $(phase_median start) ms, first successful probe $(phase_median probe) ms"
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
if want jobs; then
jr1=$(jobs_row 1); cr1=$(ctr_row 1); jr10=$(jobs_row 10); cr10=$(ctr_row 10)
{
  echo "## 4. Jobs: 100 tasks of \`/bin/true\` (busybox image)"
  echo
  echo "| parallelism | runlet ms/task | bare \`ctr run --rm\` ms/task | runlet / ctr |"
  echo "|---:|---:|---:|---:|"
  echo "| 1 | $jr1 | $cr1 | $(ratio "$jr1" "$cr1") |"
  echo "| 10 | $jr10 | $cr10 | $(ratio "$jr10" "$cr10") |"
  echo
  echo "runlet's tasks each get a network namespace (lo, CNI bridge + host-local), an in-memory root"
  echo "filesystem, FIFO log capture and a durable record update; \`ctr run --rm\` does none of that."
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
  kill -INT "$vp"; wait "$vp" || true
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
  kill -QUIT "$vp"; wait "$vp" || true
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
if [ -n "${BENCH_SECTIONS:-}" ]; then cat "$out"; exit 0; fi

# The hand-kept part of docs/benchmarks.md (the measurements behind design choices, and
# before/after records) survives a re-run: everything from its heading on is kept.
history=$(sed -n '/^## History: measurements behind the design/,$p' docs/benchmarks.md)
{
  echo "# Benchmarks"
  echo
  echo "Measured with \`bash deploy/bench.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), containerd $(ctr -a "$sock" version | awk '/Version/ {print $2; exit}')."
  echo "Each section compares its rows side by side in one run; absolute numbers vary between"
  echo "runs on these shared machines, ratios much less. The load generator (wrk, and"
  echo "\`runlet-bench rate\`, an open-loop fixed-rate client in \`src/bin/runlet-bench.rs\`) shares"
  echo "the 2 cores with the server under test."
  echo
  echo "Targets set in the issues: data path throughput at least nginx's, p99 added over direct"
  echo "at most 1 ms at 1,000 req/s; cold start at most 1.2x a bare \`ctr run\`; job tasks at most"
  echo "1.2x bare \`ctr run --rm\` per task."
  echo
  cat "$out"
  if [ -n "$history" ]; then printf '%s\n' "$history"; fi
} > docs/benchmarks.md
cat docs/benchmarks.md
