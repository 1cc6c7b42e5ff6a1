#!/usr/bin/env bash
# The PSS demo on this machine (as root): builds the release binaries, prepares Podman, starts a
# controller, two agents (node-a, node-b) and a proxy for my-service, applies the examples, shows
# the pods, and sends HTTP traffic through the proxy.
#
#   scripts/demo.sh              bring it up (idempotent: stops a previous demo first)
#   scripts/demo.sh --rootless   the same, but the agents run as an ordinary user
#                                ($PSS_ROOTLESS_USER, default pss-rootless, created when
#                                missing) on that user's rootless Podman, which
#                                `scripts/podman-setup.sh --rootless` prepares; the agents get
#                                no --socket: they find $XDG_RUNTIME_DIR/podman/podman.sock
#   scripts/demo.sh down         stop every demo process and remove the demo's Podman pods; the
#                                Podman API service is stopped too when the demo started it
#
# Secure by default (issue 11): the controller makes its CA in .demo/pki/ and writes pssctl's
# configuration to .demo/pssctl.yaml (PSS_CONFIG); agents and the proxy join with join tokens
# (`pssctl token create`) and keep their certificates in .demo/*-state/. State and logs live in
# .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=$ROOT/.demo
# PSS_DEMO_BIN=<dir>: use the binaries already built there instead of building the release ones.
BIN=${PSS_DEMO_BIN:-$ROOT/target/release}
CTRL_ADDR=127.0.0.1:50051
PROXY_ADDR=127.0.0.1:8080
MODE=up ROOTLESS_USER=
for arg in "$@"; do
    case $arg in
        up|down) MODE=$arg ;;
        --rootless) ROOTLESS_USER=${PSS_ROOTLESS_USER:-pss-rootless} ;;
        *) echo "usage: $0 [--rootless] [up|down]" >&2; exit 2 ;;
    esac
done

down() {
    for p in proxy agent-node-a agent-node-b controller; do
        if [ -f "$STATE/$p.pid" ]; then
            kill "$(cat "$STATE/$p.pid")" 2>/dev/null || true
            rm -f "$STATE/$p.pid"
        fi
    done
    sleep 1
    if command -v podman >/dev/null && [ -f /etc/pss/containers.conf ]; then
        for node in node-a node-b; do
            ids=$(CONTAINERS_CONF=/etc/pss/containers.conf podman pod ps -q --filter "label=pss.node=$node" 2>/dev/null || true)
            [ -z "$ids" ] || CONTAINERS_CONF=/etc/pss/containers.conf podman pod rm -f -t 0 $ids >/dev/null 2>&1 || true
        done
    fi
    # Pods of a rootless demo are in its user's store.
    if [ -f "$STATE/rootless-user" ]; then
        local user uid
        user=$(cat "$STATE/rootless-user")
        if uid=$(id -u "$user" 2>/dev/null); then
            for node in node-a node-b; do
                ids=$(cd / && runuser -u "$user" -- env XDG_RUNTIME_DIR=/run/user/$uid podman pod ps -q --filter "label=pss.node=$node" 2>/dev/null || true)
                [ -z "$ids" ] || (cd / && runuser -u "$user" -- env XDG_RUNTIME_DIR=/run/user/$uid podman pod rm -f -t 0 $ids >/dev/null 2>&1) || true
            done
        fi
        rm -f "$STATE/rootless-user"
    fi
    if [ -f "$STATE/podman-service.pid" ]; then
        kill "$(cat "$STATE/podman-service.pid")" 2>/dev/null || true
        rm -f "$STATE/podman-service.pid"
    fi
}

if [ "$MODE" = down ]; then
    down
    echo "demo stopped"
    exit 0
fi

command -v cargo >/dev/null || { echo "demo: cargo (Rust) is required" >&2; exit 1; }
command -v curl >/dev/null || { apt-get update -q && apt-get install -y -q curl; }
down
mkdir -p "$STATE"
if [ -z "${PSS_DEMO_BIN:-}" ]; then
    echo "== building (release)"
    cargo build --release --bins
fi
echo "== preparing Podman${ROOTLESS_USER:+ (rootless, as $ROOTLESS_USER)}"
if [ -n "$ROOTLESS_USER" ]; then
    rootless_uid=$(id -u "$ROOTLESS_USER" 2>/dev/null || echo none)
    sock=/run/user/$rootless_uid/podman/podman.sock
    already=$(curl -sf --max-time 2 --unix-socket "$sock" http://d/_ping 2>/dev/null || true)
    setup=$(bash scripts/podman-setup.sh --rootless "$ROOTLESS_USER")
    rootless_uid=$(echo "$setup" | sed -n 's/^PSS_ROOTLESS_UID=//p')
    rootless_run=$(echo "$setup" | sed -n 's/^XDG_RUNTIME_DIR=//p')
    PSS_PODMAN_SOCK=$(echo "$setup" | sed -n 's/^PSS_PODMAN_SOCK=//p')
    echo "$ROOTLESS_USER" > "$STATE/rootless-user"
    # The user runs its own copy of the agent: the build directory may not be readable by it.
    install -o "$ROOTLESS_USER" -m 0755 "$BIN/pss-agent" "$rootless_run/pss-agent"
else
    sock=${PSS_PODMAN_SOCK:-/run/pss/podman.sock}
    already=$(curl -sf --max-time 2 --unix-socket "$sock" http://d/_ping 2>/dev/null || true)
    eval "$(bash scripts/podman-setup.sh | tail -n 2)"
    export CONTAINERS_CONF PSS_PODMAN_SOCK
fi
# A Podman API service this demo started is stopped by `demo.sh down`; one that was already
# running (another user's, the tests') is left alone.
if [ "$already" != OK ] && [ -f "$(dirname "$PSS_PODMAN_SOCK")/podman-service.pid" ]; then
    cp "$(dirname "$PSS_PODMAN_SOCK")/podman-service.pid" "$STATE/podman-service.pid"
fi
unset PSS_TOKEN PSS_TOKEN_FILE
export PSS_CONFIG=$STATE/pssctl.yaml PSS_CONTROLLER=$CTRL_ADDR
pssctl() { "$BIN/pssctl" "$@"; }

echo "== starting controller on $CTRL_ADDR (TLS, its own CA in $STATE/pki)"
rm -rf "$STATE/pss.db" "$STATE/pss.db-wal" "$STATE/pss.db-shm" "$STATE/pki" "$PSS_CONFIG" \
    "$STATE/agent-state" "$STATE/proxy-state"
"$BIN/pss-controller" --listen "$CTRL_ADDR" --db "$STATE/pss.db" --metrics-interval 2s --node-timeout 6s \
    --operator-config "$PSS_CONFIG" >"$STATE/controller.log" 2>&1 & echo $! > "$STATE/controller.pid"
for i in $(seq 50); do pssctl get nodes >/dev/null 2>&1 && break; sleep 0.2; done
AGENT_JOIN=$(pssctl token create --role agent --ttl 1h)
PROXY_JOIN=$(pssctl token create --role proxy --ttl 1h)
pssctl token list
port=50061
for node in node-a node-b; do
    if [ -n "$ROOTLESS_USER" ]; then
        echo "== starting agent $node as $ROOTLESS_USER (uid $rootless_uid), no --socket"
        # runuser passes SIGTERM on to the agent, so `down` stops it through this pid.
        (cd / && exec runuser -u "$ROOTLESS_USER" -- env -u CONTAINERS_CONF -u PSS_PODMAN_SOCK \
            PSS_JOIN_TOKEN="$AGENT_JOIN" XDG_RUNTIME_DIR="$rootless_run" "$rootless_run/pss-agent" \
            --state-dir "$rootless_run/pss-agent-state" \
            --controller "$CTRL_ADDR" --node-name "$node" --listen "127.0.0.1:$port" \
            --advertise-address 127.0.0.1 --metrics-interval 2s --cpu 2000 --mem 2048) \
            >"$STATE/agent-$node.log" 2>&1 & echo $! > "$STATE/agent-$node.pid"
    else
        echo "== starting agent $node"
        PSS_JOIN_TOKEN="$AGENT_JOIN" "$BIN/pss-agent" --state-dir "$STATE/agent-state" \
            --node-name "$node" --listen "127.0.0.1:$port" --advertise-address 127.0.0.1 \
            --socket "$PSS_PODMAN_SOCK" --metrics-interval 2s --cpu 2000 --mem 2048 \
            >"$STATE/agent-$node.log" 2>&1 & echo $! > "$STATE/agent-$node.pid"
    fi
    port=$((port + 1))
done
for i in $(seq 100); do [ "$(pssctl get nodes | grep -c ' Ready ')" = 2 ] && break; sleep 0.3; done
pssctl get nodes

echo "== applying examples"
for f in examples/my-app.yaml examples/my-service.yaml examples/my-autoscaler.yaml; do pssctl apply -f "$f"; done
echo "== starting pss-proxy for my-service on $PROXY_ADDR"
PSS_JOIN_TOKEN="$PROXY_JOIN" "$BIN/pss-proxy" --controller "$CTRL_ADDR" --service my-service \
    --listen "$PROXY_ADDR" --admin 127.0.0.1:9090 --state-dir "$STATE/proxy-state" --proxy-name demo-proxy \
    >"$STATE/proxy.log" 2>&1 & echo $! > "$STATE/proxy.pid"

echo "== waiting for the pods to be ready and in the service's endpoints"
for i in $(seq 240); do
    [ "$(pssctl get services | awk '$1=="my-service" {print $5}')" = 3 ] && break
    sleep 0.5
done
for i in $(seq 50); do curl -s -m 1 -o /dev/null "http://$PROXY_ADDR/" && break; sleep 0.2; done
pssctl get pods
echo
pssctl get services -o wide
echo
echo "== traffic through the proxy (http://$PROXY_ADDR/)"
for i in $(seq 6); do
    curl -s -m 3 "http://$PROXY_ADDR/" || echo "(request $i failed)"
done
echo
cat <<MSG
The cluster is running. Try:
  export PSS_CONFIG=$STATE/pssctl.yaml      # the CA, an operator certificate, the address
  $BIN/pssctl config view
  $BIN/pssctl get pods -o wide
  $BIN/pssctl scale workload/my-app --replicas 5
  curl http://$PROXY_ADDR/
  curl -s http://127.0.0.1:9090/metrics | head
Logs are in $STATE/. Stop everything with:  scripts/demo.sh down
MSG
if [ -n "$ROOTLESS_USER" ]; then
    cat <<MSG
The agents run as $ROOTLESS_USER (rootless Podman); its pods:
  runuser -u $ROOTLESS_USER -- env XDG_RUNTIME_DIR=$rootless_run podman pod ps
MSG
fi
