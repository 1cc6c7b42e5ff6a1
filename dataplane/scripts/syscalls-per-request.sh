#!/usr/bin/env bash
# System calls and context switches per request of the proxy process (perf tracepoints
# raw_syscalls:sys_enter and context-switches, counted for the proxy only while wrk runs), for
# HAProxy and pss-proxy, one worker each, keep-alive and Connection: close. Counts do not depend
# on how busy the machine is, so this is the measure to trust when the load average is high;
# what each system call costs is another matter (see cpu-per-request.sh on a quiet machine).
#
# usage: syscalls-per-request.sh [PSS_PROXY_BINARY] [extra pss-proxy args...]
set -euo pipefail
PSS=${1:-target/release/pss-proxy}
shift $(( $# >= 1 ? 1 : 0 ))
BASE=${BASE_PORT:-18800}
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
# TCP segments sent machine-wide (both legs, both directions, loopback) per request.
segs() { awk '/^Tcp:/{n++; if (n==2) print $12}' /proc/net/snmp; }
printf "%-22s%14s%16s%14s%12s\n" "" syscalls/req ctxswitch/req segments/req req/s
for mode in keepalive close; do
  for n in haproxy:$HA:$((BASE+1)) pss:$PS:$((BASE+2)); do
    IFS=: read -r name pid port <<< "$n"
    H=(); [ "$mode" = close ] && H=(-H "Connection: close")
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" -o $W/perf.txt -- sleep 3.5 &
    PERF=$!
    sleep 0.2
    s0=$(segs)
    out=$(wrk -t1 -c50 -d3s "${H[@]}" "http://127.0.0.1:$port/")
    s1=$(segs)
    wait $PERF
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/^Requests\/sec/{print $2}')
    sc=$(awk -F, '/raw_syscalls/{print $1}' $W/perf.txt)
    cs=$(awk -F, '/context-switches/{print $1}' $W/perf.txt)
    python3 -c "print(f'{\"$mode $name\":22}{$sc/$reqs:14.2f}{$cs/$reqs:16.3f}{($s1-$s0)/$reqs:14.2f}{$rps:12.0f}')"
  done
done
