#!/usr/bin/env bash
# Control-plane scale (issue 14), no Podman: a release pss-controller, NODES simulated agents
# in one `pss-agent --runtime sim --sim-nodes NODES` process, and workloads totalling PODS pods
# (at most 1,000 replicas each). Prints one line: apply -> all Running (and ready) time, pods/s, the
# controller's peak RSS and CPU seconds (since it started: registration included), and the
# database size (with its WAL); then how long one `pssctl get pods` of all of them takes.
#
# usage: scripts/bench-scale.sh NODES PODS
#   HEARTBEAT (default 5s): the agents' heartbeat interval; the node timeout is 3x that.
#   TIMEOUT (default 600): seconds to wait for every pod to be Running.
#   LOSE (default 0): percent of the nodes to lose once all pods Run: they run in a second
#     agent process (named lost-N), which is killed; prints how long until every pod Runs
#     again on the other nodes, next to the node timeout.
#   HOLD (default 0): seconds to keep the cluster up at the end (for perf or pssctl by hand;
#     PSS_CONTROLLER and PSS_TOKEN are printed).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:?usage: bench-scale.sh NODES PODS}
PODS=${2:?usage: bench-scale.sh NODES PODS}
HEARTBEAT=${HEARTBEAT:-5s}
TIMEOUT=${TIMEOUT:-600}
BIN=${CARGO_TARGET_DIR:-target}/release
cargo build --release -q -p pss-controller -p pss-agent -p pssctl
W=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export PSS_TOKEN=pss-bench-token-$$-$RANDOM$RANDOM PSS_CONTROLLER=127.0.0.1:$(port)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
hb_s=${HEARTBEAT%s}

RUST_LOG=warn "$BIN/pss-controller" --listen "$PSS_CONTROLLER" --db "$W/pss.db" --operator-config none \
    --metrics-interval "$HEARTBEAT" --node-timeout "$((hb_s * 3))s" >"$W/controller.log" 2>&1 &
CONTROLLER=$!
PIDS+=($CONTROLLER)
# TLS (the default): the agents and pssctl use the token as an operator credential with the CA.
for _ in $(seq 100); do [ -f "$W/pki/ca.crt" ] && break; sleep 0.1; done
export PSS_CA=$W/pki/ca.crt PSS_STATE_DIR=$W/agent-state
for _ in $(seq 100); do "$BIN/pssctl" get nodes >/dev/null 2>&1 && break; sleep 0.1; done
LOSE=${LOSE:-0}
LOST_NODES=$((NODES * LOSE / 100))
agents() { # NAME COUNT
    RUST_LOG=warn "$BIN/pss-agent" --runtime sim --sim-nodes "$2" --node-name "$1" \
        --listen 127.0.0.1:0 --cpu 64000 --mem 65536 --metrics-interval "$HEARTBEAT" \
        >>"$W/agents.log" 2>&1 &
    PIDS+=($!)
}
agents sim $((NODES - LOST_NODES))
if [ "$LOST_NODES" -gt 0 ]; then
    agents lost "$LOST_NODES"
    DOOMED=$!
fi
for _ in $(seq 1200); do
    [ "$("$BIN/pssctl" get nodes 2>/dev/null | grep -c ' Ready ')" -ge "$NODES" ] && break
    sleep 0.25
done
ready=$("$BIN/pssctl" get nodes | grep -c ' Ready ' || true)
[ "$ready" -ge "$NODES" ] || { echo "only $ready of $NODES simulated nodes Ready" >&2; tail "$W/agents.log" >&2; exit 1; }

: >"$W/load.yaml"
left=$PODS
i=0
while [ "$left" -gt 0 ]; do
    n=$((left > 1000 ? 1000 : left))
    cat >>"$W/load.yaml" <<YAML
kind: Workload
metadata: {name: scale-$i}
spec:
  replicas: $n
  podSpec:
    containers:
      - name: web
        image: localhost/pss-demo:latest
        resources: {cpu: 10m, memory: 16Mi}
    ports:
      - containerPort: 80
---
YAML
    left=$((left - n))
    i=$((i + 1))
done

# Running and ready pods, from the workloads' READY column (simulated pods are ready once
# Running): one small answer, where listing every pod every poll would load the machine with
# the poll itself (100,000 pods take ~2 s to list; that is timed once, below).
running() { "$BIN/pssctl" get workloads 2>/dev/null | awk 'NR>1 {split($2, r, "/"); n += r[1]} END {print n + 0}'; }
notready() { "$BIN/pssctl" get nodes 2>/dev/null | grep -c ' NotReady ' || true; }

t0=$(now_ms)
"$BIN/pssctl" apply -f "$W/load.yaml" >/dev/null
deadline=$(($(date +%s) + TIMEOUT))
until [ "$(running)" -ge "$PODS" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || {
        echo "timed out: $(running) of $PODS pods Running; by phase:" $("$BIN/pssctl" get pods | awk 'NR>1 {print $3}' | sort | uniq -c) >&2
        tail -5 "$W/controller.log" >&2
        exit 1
    }
    sleep 0.5
done
t1=$(now_ms)

secs=$(awk -v ms=$((t1 - t0)) 'BEGIN {printf "%.1f", ms / 1000}')
rate=$(awk -v p="$PODS" -v ms=$((t1 - t0)) 'BEGIN {printf "%.0f", p * 1000 / ms}')
rss=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$CONTROLLER/status")
cpu=$(awk -v tck="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / tck}' "/proc/$CONTROLLER/stat")
db=$(du -cb "$W"/pss.db* | awk 'END {printf "%.1f", $1 / 1048576}')
echo "nodes=$NODES pods=$PODS apply->all Running ${secs}s (${rate} pods/s), controller peak RSS ${rss} MiB, CPU ${cpu}s, database ${db} MiB (heartbeat $HEARTBEAT)"

g0=$(now_ms)
listed=$("$BIN/pssctl" get pods | tail -n +2 | wc -l)
g1=$(now_ms)
echo "pssctl get pods: $listed pods in $(awk -v ms=$((g1 - g0)) 'BEGIN {printf "%.2f", ms / 1000}')s"

if [ "$LOST_NODES" -gt 0 ]; then
    l0=$(now_ms)
    kill "$DOOMED"
    deadline=$(($(date +%s) + TIMEOUT))
    # First the controller notices (the lost nodes NotReady, their pods Lost), then the
    # replacements Run.
    until [ "$(notready)" -ge "$LOST_NODES" ] && [ "$(running)" -ge "$PODS" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out: $(notready) nodes NotReady, $(running) of $PODS pods Running after the loss" >&2; exit 1; }
        sleep 0.25
    done
    l1=$(now_ms)
    echo "lost $LOST_NODES of $NODES nodes: every pod Running elsewhere $(awk -v ms=$((l1 - l0)) 'BEGIN {printf "%.1f", ms / 1000}')s after the loss (node timeout $((hb_s * 3))s)"
fi

if [ "${HOLD:-0}" -gt 0 ]; then
    echo "holding ${HOLD}s: PSS_CONTROLLER=$PSS_CONTROLLER PSS_TOKEN=$PSS_TOKEN controller pid $CONTROLLER"
    sleep "$HOLD"
fi
