#!/usr/bin/env bash
# CPU time per GB of one iperf3 stream through HAProxy (splice-auto) and pss-proxy (splice and
# copy engines), one worker each, rounds interleaved: the proxy's own user+system ticks
# (/proc/PID/stat) and those of the iperf3 server and client, per GB received. Less sensitive
# to other load than Gbit/s (a busy machine slows everyone, but the work per byte stays).
#
# usage: bulk-cpu-per-gb.sh [PSS_PROXY_BINARY] [ROUNDS]
set -euo pipefail
PSS=${1:-target/release/pss-proxy}
ROUNDS=${2:-3}
BASE=${BASE_PORT:-18980}
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
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
listen bulk
    bind 127.0.0.1:$((BASE+3))
    server s1 127.0.0.1:$BASE
HA
iperf3 -s -B 127.0.0.1 -p $BASE >/dev/null 2>&1 & IS=$!; PIDS+=($IS)
"$PSS" --listen 127.0.0.1:$((BASE+1)) --backend 127.0.0.1:$BASE --workers 1 >/dev/null 2>&1 & A=$!; PIDS+=($A)
"$PSS" --listen 127.0.0.1:$((BASE+2)) --backend 127.0.0.1:$BASE --workers 1 --engine copy >/dev/null 2>&1 & B=$!; PIDS+=($B)
haproxy -f $W/haproxy.cfg >/dev/null 2>&1 & H=$!; PIDS+=($H)
sleep 1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
for r in $(seq "$ROUNDS"); do
  for pair in "haproxy $H $((BASE+3))" "pss-splice $A $((BASE+1))" "pss-copy $B $((BASE+2))"; do
    set -- $pair
    p0=$(cpu $2); s0=$(cpu $IS)
    out=$( { /usr/bin/time -f "TIME %U %S" iperf3 -c 127.0.0.1 -p $3 -t 3 -f m; } 2>&1)
    p1=$(cpu $2); s1=$(cpu $IS)
    mbytes=$(echo "$out" | awk '/receiver/{v=$5; if ($6=="GBytes") v*=1024; print v}')
    gbps=$(echo "$out" | awk '/receiver/{print $7/1000}')
    cli=$(echo "$out" | awk '/^TIME/{print ($2+$3)*100}')
    echo "$1 $gbps $mbytes $((p1-p0)) $((s1-s0)) $cli"
  done
done > $W/results
python3 - "$W/results" <<'PY'
import sys, statistics, collections
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    n, gbps, mb, p, s, c = line.split()
    gb = float(mb) / 1024
    d[n].append((float(gbps), int(p) / 100 / gb, int(s) / 100 / gb, float(c) / 100 / gb))
print(f"{'':12}{'Gbit/s':>8}{'proxy s/GB':>12}{'server s/GB':>13}{'client s/GB':>13}   (medians)")
for n, v in d.items():
    print(f"{n:12}" + "".join(f"{statistics.median(x[i] for x in v):>{w}.3f}" for i, w in ((0, 8), (1, 12), (2, 13), (3, 13))))
PY
