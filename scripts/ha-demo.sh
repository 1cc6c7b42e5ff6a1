#!/usr/bin/env bash
# Highly available controllers on this machine (issue 15): a 3-member etcd cluster on loopback
# (scripts/etcd-cluster.sh) and three pss-controllers sharing it through
# `--store etcd://127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793`; one of them leads (an etcd
# lease), the others stand by and take over when it dies.
#
#   scripts/ha-demo.sh [up]     build the release binaries, then start etcd and the three
#                               controllers (idempotent: stops a previous run and starts afresh)
#   scripts/ha-demo.sh status   which processes run; etcd's members and leader
#   scripts/ha-demo.sh stop     stop every process it started (also: down)
#
# Controllers c1..c3 listen on 127.0.0.1:50051..50053 (plaintext, --insecure, with a shared
# token in .ha/token: a local demonstration, not a deployment), data dirs .ha/c1..c3, logs
# .ha/cN.log, pids .ha/cN.pid; etcd's data and logs are in .ha/etcd/.
# PSS_DEMO_BIN=<dir>: use the binaries already built there instead of building the release ones.
# PSS_HA_TOKEN: the shared token (at least 16 bytes; default ha-demo-token-0123456789).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=$ROOT/.ha
BIN=${PSS_DEMO_BIN:-$ROOT/target/release}
TOKEN=${PSS_HA_TOKEN:-ha-demo-token-0123456789}
CONTROLLERS=(1 2 3)
ctl_addr() { echo "127.0.0.1:$((50050 + $1))"; }
CTL_ADDRS=127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053
ETCD_DIR=$STATE/etcd
MODE=${1:-up}

port_open() { # port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ctl_pid() { # N: the pid of controller N if it runs
    local pid
    pid=$(cat "$STATE/c$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop() {
    local n pid
    for n in "${CONTROLLERS[@]}"; do
        if pid=$(ctl_pid "$n"); then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            echo "stopped controller c$n (pid $pid)"
        fi
        rm -f "$STATE/c$n.pid"
    done
    if [ -d "$ETCD_DIR" ]; then
        bash scripts/etcd-cluster.sh stop "$ETCD_DIR"
    fi
}

status() {
    local n pid bad=0
    for n in "${CONTROLLERS[@]}"; do
        if pid=$(ctl_pid "$n"); then
            echo "controller c$n $(ctl_addr "$n") pid $pid running"
        else
            echo "controller c$n $(ctl_addr "$n") not running"; bad=1
        fi
    done
    echo "leading controller: $(leader || echo none)"
    bash scripts/etcd-cluster.sh status "$ETCD_DIR" || bad=1
    return "$bad"
}

leader() { # the address in the leader key (under --etcd-prefix, default pss)
    local l
    l=$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 \
        --dial-timeout=1s --command-timeout=2s get --print-value-only /pss/leader 2>/dev/null) || return 1
    [ -n "$l" ] && echo "$l"
}

fail() { # message: print it, the controllers' log tails, and stop everything
    echo "ha-demo: $1" >&2
    local n
    for n in "${CONTROLLERS[@]}"; do
        if [ -f "$STATE/c$n.log" ]; then
            echo "--- the end of $STATE/c$n.log:" >&2
            tail -n 15 "$STATE/c$n.log" >&2
        fi
    done
    stop >&2 || true
    exit 1
}

case $MODE in
    up) ;;
    stop|down) stop; echo "ha demo stopped"; exit 0 ;;
    status) status; exit $? ;;
    *) echo "usage: $0 [up|status|stop]" >&2; exit 2 ;;
esac

command -v cargo >/dev/null || [ -n "${PSS_DEMO_BIN:-}" ] ||
    { echo "ha-demo: cargo (Rust) is required" >&2; exit 1; }
[ "${#TOKEN}" -ge 16 ] || { echo "ha-demo: PSS_HA_TOKEN must be at least 16 bytes" >&2; exit 1; }
stop >/dev/null
rm -rf "$ETCD_DIR" "$STATE"/c[0-9] "$STATE"/c[0-9].log
mkdir -p "$STATE"
chmod 700 "$STATE"
# Local state, never committed.
[ -f "$STATE/.gitignore" ] || echo '*' >"$STATE/.gitignore"
(umask 077 && printf '%s\n' "$TOKEN" >"$STATE/token")

if [ -z "${PSS_DEMO_BIN:-}" ]; then
    echo "== building (release)"
    cargo build --release --bins
fi
for b in pss-controller pssctl; do
    [ -x "$BIN/$b" ] || { echo "ha-demo: $BIN/$b is missing" >&2; exit 1; }
done
if ! "$BIN/pss-controller" --help 2>/dev/null | grep -q -- '--store'; then
    echo "ha-demo: $BIN/pss-controller has no --store flag: it predates issue 15 (rebuild it)" >&2
    exit 1
fi
for n in "${CONTROLLERS[@]}"; do
    a=$(ctl_addr "$n")
    ! port_open "${a##*:}" || { echo "ha-demo: $a is taken by another process" >&2; exit 1; }
done

echo "== starting etcd (3 members)"
STORE=$(bash scripts/etcd-cluster.sh start "$ETCD_DIR" | sed -n 's/^--store //p')
[ -n "$STORE" ] || fail "etcd did not start (see $ETCD_DIR/m*.log)"

unset PSS_TOKEN PSS_DB PSS_LISTEN PSS_DATA_DIR PSS_OPERATOR_CONFIG PSS_ADMIN
for n in "${CONTROLLERS[@]}"; do
    a=$(ctl_addr "$n")
    echo "== starting controller c$n on $a (--store $STORE)"
    mkdir -p "$STATE/c$n"
    "$BIN/pss-controller" --store "$STORE" --listen "$a" --data-dir "$STATE/c$n" \
        --insecure --token-file "$STATE/token" --operator-config none \
        </dev/null >"$STATE/c$n.log" 2>&1 &
    echo $! >"$STATE/c$n.pid"
done
for n in "${CONTROLLERS[@]}"; do
    a=$(ctl_addr "$n")
    for _ in $(seq 150); do
        ctl_pid "$n" >/dev/null || fail "controller c$n exited"
        port_open "${a##*:}" && break
        sleep 0.2
    done
    port_open "${a##*:}" || fail "controller c$n is not listening on $a after 30 s"
done

export PSS_TOKEN_FILE=$STATE/token
pssctl() { "$BIN/pssctl" --controller "$CTL_ADDRS" --insecure "$@"; }
ok=
for _ in $(seq 100); do
    if pssctl get nodes >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.3
done
[ -n "$ok" ] || fail "pssctl --controller $CTL_ADDRS get nodes does not answer after 30 s: $(pssctl get nodes 2>&1 | tail -n 3)"
pssctl get nodes || true
for _ in $(seq 50); do leader >/dev/null && break; sleep 0.2; done
LEADER=$(leader || echo 'none yet')
echo "leading controller: $LEADER"
LEADER_N=1
case $LEADER in 127.0.0.1:5005[1-3]) LEADER_N=${LEADER#127.0.0.1:5005} ;; esac

cat <<EOF

== HA controllers up: c1..c3 on $CTL_ADDRS, sharing
   $STORE
   (logs: $STATE/c1.log .. c3.log; etcd: $ETCD_DIR)

pssctl against all three (it fails over between them):
   export PSS_TOKEN_FILE=$STATE/token      # or: export PSS_TOKEN=$TOKEN
   $BIN/pssctl --controller $CTL_ADDRS --insecure get nodes
   $BIN/pssctl --controller $CTL_ADDRS --insecure apply -f examples/my-app.yaml
Agents join all three the same way:
   PSS_TOKEN_FILE=$STATE/token $BIN/pss-agent --controller $CTL_ADDRS --insecure \\
       --node-name node-a --listen 127.0.0.1:50061 ...
Fail-over: kill the leading controller (status names it; its log says it leads) and watch
another take over within the lease's TTL:
   kill -9 \$(cat $STATE/c$LEADER_N.pid); sleep 10; scripts/ha-demo.sh status
etcd itself: scripts/etcd-cluster.sh status $ETCD_DIR
Stop everything: scripts/ha-demo.sh stop
EOF
