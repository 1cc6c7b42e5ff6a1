#!/usr/bin/env bash
# RSS per idle proxied connection: opens N idle client connections through HAProxy (tcp mode)
# and through pss-proxy to a loopback backend that holds them open, and reports each proxy's
# resident memory growth divided by N (VmRSS from /proc/PID/status, after a 1-connection warm-up).
#
# usage: idle-rss.sh [PSS_PROXY_BINARY] [N] [WORKERS]
set -euo pipefail
PSS=${1:-target/release/pss-proxy}
N=${2:-10000}
WORKERS=${3:-1}
BASE=${BASE_PORT:-18500}
# A proxied connection costs the proxy two descriptors. Raise the limit as far as allowed; a
# sandbox may cap the hard limit (this machine: 20000, so N tops out just under 10,000).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
limit=$(ulimit -n)
if [ $((2 * N + 200)) -gt "$limit" ]; then
  echo "note: open-file limit $limit allows about $(( (limit - 200) / 2 )) proxied connections; N=$N lowered to that" >&2
  N=$(( (limit - 200) / 2 ))
fi
W=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

# Backend: accepts and holds every connection, reading whatever arrives.
python3 - "$BASE" <<'PY' & PIDS+=($!)
import asyncio, sys
async def hold(r, w):
    while await r.read(65536): pass
    w.close()
async def main():
    srv = await asyncio.start_server(hold, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await srv.serve_forever()
asyncio.run(main())
PY

cat > $W/haproxy.cfg <<HA
global
    maxconn $((N + 40))
    nbthread $WORKERS
defaults
    mode tcp
    timeout connect 5s
    timeout client 600s
    timeout server 600s
listen idle
    bind 127.0.0.1:$((BASE+1)) backlog 4096
    server s1 127.0.0.1:$BASE
HA
haproxy -f $W/haproxy.cfg >$W/haproxy.log 2>&1 & HAPID=$!; PIDS+=($HAPID)
sleep 0.5; kill -0 $HAPID 2>/dev/null || { echo "haproxy failed:"; cat $W/haproxy.log; exit 1; }
"$PSS" --listen 127.0.0.1:$((BASE+2)) --backend 127.0.0.1:$BASE --workers "$WORKERS" \
  --idle-timeout 600s >$W/pss.log 2>&1 & PSSPID=$!; PIDS+=($PSSPID)
sleep 1.5

measure() { # name pid port
python3 - "$1" "$2" "$3" "$N" <<'PY'
import socket, sys, time
name, pid, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
warm = socket.create_connection(("127.0.0.1", port)); warm.sendall(b"x"); time.sleep(1.0)
before = rss_kib()
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    conns.append(s)
    if i % 1000 == 999:
        time.sleep(0.05)
time.sleep(3.0)
# Prove they are proxied (backend side open): one byte on each must not fail.
for s in conns:
    s.sendall(b"y")
time.sleep(2.0)
after = rss_kib()
print(f"{name:10} conns={n} rss_before_kib={before} rss_after_kib={after} per_conn_bytes={(after-before)*1024/n:.0f}")
for s in conns: s.close()
warm.close()
PY
}
measure haproxy $HAPID $((BASE+1))
sleep 2
measure pss $PSSPID $((BASE+2))
