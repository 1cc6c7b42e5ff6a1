#!/usr/bin/env bash
# A local 3-member etcd cluster on loopback, for highly available controllers (issue 15:
# `pss-controller --store etcd://...`; scripts/ha-demo.sh uses it).
#
#   scripts/etcd-cluster.sh start  [DIR]   start it (idempotent), wait until every member is
#                                          healthy, print the controllers' `--store etcd://...`
#   scripts/etcd-cluster.sh stop   [DIR]   stop the members (the data stays in DIR)
#   scripts/etcd-cluster.sh status [DIR]   each member's process, health, and who leads
#   scripts/etcd-cluster.sh install        install etcd-server and etcd-client (etcdctl) when
#                                          missing (apt-get; scripts/test.sh uses this)
#
# Members m1..m3: client ports 23791..23793, peer ports 23801..23803, all on 127.0.0.1. DIR
# (default .ha/etcd in the checkout) holds each member's data (mN.data), log (mN.log) and pid
# (mN.pid). `stop` then `rm -rf DIR` for a fresh cluster. The Debian package's own etcd service
# (port 2379, /var/lib/etcd) is not used, and is stopped and disabled when this installs it.
set -euo pipefail
CMD=${1:-}
DIR=${2:-}
[ -z "$DIR" ] || DIR=$(realpath -m -- "$DIR")
cd "$(dirname "$0")/.."
DIR=${DIR:-$(pwd)/.ha/etcd}
MEMBERS=(1 2 3)
client_port() { echo $((23790 + $1)); }
peer_port() { echo $((23800 + $1)); }
ENDPOINTS=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
INITIAL_CLUSTER=m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803

install_etcd() {
    if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
        return 0
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client >&2; }
    # Its own service is not ours: in a container policy-rc.d keeps it from starting; elsewhere
    # the package starts it on 2379, so stop and disable it.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now etcd.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/etcd ]; then
        # Not `/etc/init.d/etcd stop`: it ends every /usr/bin/etcd process, test clusters too.
        if [ -s /run/etcd.pid ] && kill -0 "$(cat /run/etcd.pid)" 2>/dev/null; then
            kill "$(cat /run/etcd.pid)" 2>/dev/null || true
            rm -f /run/etcd.pid
        fi
        update-rc.d etcd disable >/dev/null 2>&1 || true
    fi
    command -v etcd >/dev/null || { echo "etcd-cluster: etcd is still missing after apt-get" >&2; exit 1; }
}

# The pid of member N if its process runs.
member_pid() {
    local pid
    pid=$(cat "$DIR/m$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

healthy() { # endpoint
    ETCDCTL_API=3 etcdctl --endpoints="$1" --dial-timeout=1s --command-timeout=2s \
        endpoint health >/dev/null 2>&1
}

port_in_use() { # port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    install_etcd
    # The default .ha/ is local state, never committed.
    if [ "$DIR" = "$(pwd)/.ha/etcd" ]; then
        mkdir -p .ha && { [ -f .ha/.gitignore ] || echo '*' >.ha/.gitignore; }
    fi
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    # etcd reads ETCD_* variables as flags; one beside its flag stops it. Flags only.
    while read -r v; do unset "$v"; done < <(compgen -e | grep '^ETCD_' || true)
    local n p
    # Every port of a member to start must be free, before any member starts.
    for n in "${MEMBERS[@]}"; do
        member_pid "$n" >/dev/null && continue
        for p in "$(client_port "$n")" "$(peer_port "$n")"; do
            if port_in_use "$p"; then
                echo "etcd-cluster: port $p is taken by another process (not member m$n of $DIR)" >&2
                exit 1
            fi
        done
    done
    for n in "${MEMBERS[@]}"; do
        member_pid "$n" >/dev/null && continue
        local state=new
        [ ! -d "$DIR/m$n.data" ] || state=existing
        echo "== starting etcd member m$n (client 127.0.0.1:$(client_port "$n"), $state)" >&2
        etcd --name "m$n" --data-dir "$DIR/m$n.data" \
            --listen-client-urls "http://127.0.0.1:$(client_port "$n")" \
            --advertise-client-urls "http://127.0.0.1:$(client_port "$n")" \
            --listen-peer-urls "http://127.0.0.1:$(peer_port "$n")" \
            --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$n")" \
            --initial-cluster "$INITIAL_CLUSTER" --initial-cluster-state "$state" \
            --initial-cluster-token pss-ha-local --quota-backend-bytes $((2 << 30)) \
            --max-txn-ops 1024 --max-request-bytes 10485760 \
            --logger zap --log-outputs stderr \
            </dev/null >>"$DIR/m$n.log" 2>&1 &
        echo $! >"$DIR/m$n.pid"
    done
    local ok
    for _ in $(seq 100); do
        ok=0
        for n in "${MEMBERS[@]}"; do
            if ! member_pid "$n" >/dev/null; then
                echo "etcd-cluster: member m$n exited ($0 stop stops the others); the end of $DIR/m$n.log:" >&2
                tail -n 20 "$DIR/m$n.log" >&2
                exit 1
            fi
            healthy "127.0.0.1:$(client_port "$n")" && ok=$((ok + 1))
        done
        [ "$ok" = ${#MEMBERS[@]} ] && break
        sleep 0.2
    done
    if [ "$ok" != ${#MEMBERS[@]} ]; then
        echo "etcd-cluster: not every member healthy after 20 s (logs: $DIR/m*.log; $0 stop)" >&2
        status >&2 || true
        exit 1
    fi
    echo "== etcd cluster healthy: $ENDPOINTS (data and logs in $DIR)" >&2
    echo "--store etcd://$ENDPOINTS"
}

stop() {
    local n pid
    for n in "${MEMBERS[@]}"; do
        if pid=$(member_pid "$n"); then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            echo "stopped etcd member m$n (pid $pid)"
        fi
        rm -f "$DIR/m$n.pid"
    done
}

status() {
    local n pid bad=0
    for n in "${MEMBERS[@]}"; do
        local ep=127.0.0.1:$(client_port "$n")
        if pid=$(member_pid "$n"); then
            if healthy "$ep"; then
                echo "m$n $ep pid $pid healthy"
            else
                echo "m$n $ep pid $pid NOT healthy"; bad=1
            fi
        else
            echo "m$n $ep not running"; bad=1
        fi
    done
    if command -v etcdctl >/dev/null; then
        ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" --dial-timeout=1s --command-timeout=2s \
            endpoint status -w table 2>/dev/null || true
    fi
    return "$bad"
}

case $CMD in
    start) start ;;
    stop) stop ;;
    status) status ;;
    install) install_etcd ;;
    *) echo "usage: $0 start|stop|status [DIR] | install" >&2; exit 2 ;;
esac
