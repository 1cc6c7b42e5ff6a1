#!/usr/bin/env bash
# Control-plane latencies on real Podman, with the release binaries (as root):
#   1. apply of a 5-replica workload -> all 5 pods Running and ready (two agents);
#   2. `podman kill` of one pod's container -> that pod Running and ready again;
#   3. SIGKILL of one agent (2 s heartbeat, --node-timeout 6s) -> its pods replaced on the other
#      node and ready.
# Each is repeated ROUNDS times (default 3); medians are printed. Compare (1) with
# scripts/bench-podman-floor.sh, the same work done by hand with the podman CLI.
#
# usage: scripts/bench-cluster.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
BIN=target/release
cargo build --release --bins -q
eval "$(bash scripts/podman-setup.sh | tail -n 2)"
export CONTAINERS_CONF PSS_PODMAN_SOCK
W=$(mktemp -d)
export PSS_TOKEN=pss-bench-token-$$-$RANDOM$RANDOM PSS_CONTROLLER=127.0.0.1:50151
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for n in bench-a bench-b; do
        ids=$(podman pod ps -q --filter "label=pss.node=$n")
        [ -z "$ids" ] || podman pod rm -f -t 0 $ids >/dev/null 2>&1 || true
    done
    rm -rf "$W"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
ready_pods() { "$BIN/pssctl" get pods --workload "$1" 2>/dev/null | awk 'NR>1 && $2=="1/1" && $3=="Running"' | wc -l; }
wait_ready() { # workload count
    for _ in $(seq 6000); do [ "$(ready_pods "$1")" -ge "$2" ] && return 0; sleep 0.02; done
    echo "timed out waiting for $2 ready pods of $1" >&2; exit 1
}
start_agent() { # node port
    "$BIN/pss-agent" --node-name "$1" --listen "127.0.0.1:$2" --socket "$PSS_PODMAN_SOCK" \
        --metrics-interval 2s --cpu 4000 --mem 4096 >>"$W/agent-$1.log" 2>&1 &
    echo $!
}
"$BIN/pss-controller" --listen "$PSS_CONTROLLER" --db "$W/pss.db" --node-timeout 6s --drain-period 1s \
    --operator-config none >"$W/controller.log" 2>&1 & PIDS+=($!)
# TLS (the default): agents and pssctl use the token as an operator credential with the CA.
for _ in $(seq 100); do [ -f "$W/pki/ca.crt" ] && break; sleep 0.1; done
export PSS_CA=$W/pki/ca.crt PSS_STATE_DIR=$W/agent-state
sleep 0.5
A=$(start_agent bench-a 50161); PIDS+=($A)
B=$(start_agent bench-b 50162); PIDS+=($B)
for _ in $(seq 100); do [ "$("$BIN/pssctl" get nodes | grep -c ' Ready ')" = 2 ] && break; sleep 0.1; done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
apply_ms=(); heal_ms=(); node_ms=()
for r in $(seq "$ROUNDS"); do
    name=bench$r
    cat >"$W/$name.yaml" <<YAML
kind: Workload
metadata: {name: $name}
spec:
  replicas: 5
  podSpec:
    containers:
      - name: web
        image: localhost/pss-demo:latest
        command: ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]
        resources: {cpu: 50m, memory: 16Mi}
    ports:
      - containerPort: 80
    readinessProbe: {port: 80, interval: 200ms, timeout: 1s}
YAML
    t0=$(now_ms); "$BIN/pssctl" apply -f "$W/$name.yaml" >/dev/null; wait_ready "$name" 5; t1=$(now_ms)
    apply_ms+=($((t1 - t0)))

    pod=$("$BIN/pssctl" get pods --workload "$name" -o json | grep -o '"id": "[0-9a-f]\{64\}"' | head -1 | cut -d'"' -f4)
    t0=$(now_ms); podman kill "$pod" >/dev/null
    for _ in $(seq 6000); do [ "$(ready_pods "$name")" -lt 5 ] && break; sleep 0.01; done
    wait_ready "$name" 5; t1=$(now_ms)
    heal_ms+=($((t1 - t0)))

    t0=$(now_ms); kill -9 "$B"
    for _ in $(seq 6000); do
        [ "$("$BIN/pssctl" get pods --workload "$name" | awk 'NR>1 && $2=="1/1" && $3=="Running" && $5=="bench-a"' | wc -l)" -ge 5 ] && break
        sleep 0.05
    done
    t1=$(now_ms); node_ms+=($((t1 - t0)))
    B=$(start_agent bench-b 50162); PIDS+=($B)
    "$BIN/pssctl" delete "workload/$name" >/dev/null
    for _ in $(seq 600); do [ -z "$(podman pod ps -q --filter "label=pss.workload=$name")" ] && break; sleep 0.1; done
    for _ in $(seq 100); do [ "$("$BIN/pssctl" get nodes | grep -c ' Ready ')" = 2 ] && break; sleep 0.1; done
    echo "round $r: apply->5 ready ${apply_ms[-1]} ms, podman kill->ready ${heal_ms[-1]} ms, agent SIGKILL->replaced ${node_ms[-1]} ms"
done
echo "medians over $ROUNDS rounds:"
echo "  apply 5 replicas -> all Running+ready: $(printf '%s\n' "${apply_ms[@]}" | median) ms"
echo "  podman kill -> pod Running+ready again: $(printf '%s\n' "${heal_ms[@]}" | median) ms"
echo "  agent SIGKILL -> pods replaced and ready: $(printf '%s\n' "${node_ms[@]}" | median) ms"
