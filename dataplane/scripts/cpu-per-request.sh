#!/usr/bin/env bash
# Proxy CPU time per request (user + system, from /proc/PID/stat) for HAProxy and pss-proxy,
# one worker each, against the same loopback nginx, keep-alive and Connection: close, rounds
# interleaved, medians reported. On a shared, noisy machine requests/s swing with whatever
# else runs; CPU per request is the steadier measure of how much work each proxy does.
# Also machine-wide CPU per request (user + nice + system + irq + softirq from /proc/stat
# deltas): what the proxy costs the client and the backend too (wake-ups, softirq work), which
# per-process CPU hides. Only meaningful on a quiet machine: everything else running counts.
#
# usage: cpu-per-request.sh [PSS_PROXY_BINARY] [ROUNDS] [extra pss-proxy args...]
set -euo pipefail
PSS=${1:-target/release/pss-proxy}
ROUNDS=${2:-3}
shift $(( $# >= 2 ? 2 : $# ))
BASE=${BASE_PORT:-18700}
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f $W/nginx.pid ] && kill "$(cat $W/nginx.pid)" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
cat > $W/nginx.conf <<NG
worker_processes 1; pid $W/nginx.pid; error_log $W/nginx-err.log; daemon on;
events { worker_connections 8000; }
http { access_log off; server { listen 127.0.0.1:$BASE; location / { return 200 "hello\n"; } } }
NG
cat > $W/haproxy.cfg <<HA
global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option splice-auto
listen http
    bind 127.0.0.1:$((BASE+1))
    server s1 127.0.0.1:$BASE
HA
nginx -c $W/nginx.conf
haproxy -f $W/haproxy.cfg >$W/haproxy.log 2>&1 & HA=$!; PIDS+=($HA)
"$PSS" --listen 127.0.0.1:$((BASE+2)) --backend 127.0.0.1:$BASE --workers 1 "$@" >$W/pss.log 2>&1 & PS=$!; PIDS+=($PS)
sleep 1.5
cpu() { awk '{print $14+$15}' /proc/$1/stat; }   # clock ticks (USER_HZ = 100)
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }   # user nice system irq softirq
for round in $(seq "$ROUNDS"); do
  for mode in keepalive close; do
    for n in haproxy:$HA:$((BASE+1)) pss:$PS:$((BASE+2)); do
      IFS=: read -r name pid port <<< "$n"
      H=(); [ "$mode" = close ] && H=(-H "Connection: close")
      c0=$(cpu "$pid"); m0=$(machine)
      out=$(wrk -t1 -c50 -d3s "${H[@]}" "http://127.0.0.1:$port/")
      c1=$(cpu "$pid"); m1=$(machine)
      reqs=$(echo "$out" | awk '/requests in/{print $1}')
      rps=$(echo "$out" | awk '/^Requests\/sec/{print $2}')
      echo "$name $mode $reqs $rps $((c1 - c0)) $((m1 - m0))"
    done
  done
done > $W/results
python3 - "$W/results" <<'PY'
import sys, statistics, collections
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    n, m, reqs, rps, ticks, mticks = line.split()
    d[(m, n)].append((int(ticks) * 10_000 / int(reqs), float(rps), int(mticks) * 10_000 / int(reqs)))
print(f"{'':22}{'cpu_us_per_req':>16}{'machine_us_per_req':>20}{'req_per_s':>12}   (medians)")
for (m, n), v in sorted(d.items()):
    print(f"{m + ' ' + n:22}{statistics.median(x[0] for x in v):>16.2f}{statistics.median(x[2] for x in v):>20.2f}{statistics.median(x[1] for x in v):>12.0f}")
for m in ("keepalive", "close"):
    med = lambda n, i: statistics.median(x[i] for x in d[(m, n)])
    print(f"{m}: pss uses {med('pss', 0) / med('haproxy', 0):.2f}x HAProxy's process CPU per request, "
          f"{med('pss', 2) / med('haproxy', 2):.2f}x its machine-wide CPU per request")
PY
