#!/usr/bin/env bash
# The physical floor for "apply 5 replicas → all Running": 5 x (`podman pod create` with a
# dynamic host port + `podman run -d` of the demo httpd joined to it), one after the other, by
# hand with the podman CLI, as root, with the containers.conf of scripts/podman-setup.sh.
#
# Usage: scripts/bench-podman-floor.sh [PODS] [ROUNDS]     (defaults: 5 pods, 3 rounds)
# Prints each round's wall time and the median. Removes the pods it made.
set -euo pipefail
PODS=${1:-5}
ROUNDS=${2:-3}
here=$(dirname "$0")
eval "$("$here/podman-setup.sh" | tail -n 2)"
export CONTAINERS_CONF
prefix=pss-floor-$$
cleanup() { podman pod rm -f -t 0 $(podman pod ps -q --filter "label=pss.bench=$prefix") >/dev/null 2>&1 || true; }
trap cleanup EXIT

times=()
for round in $(seq 1 "$ROUNDS"); do
    start=$(date +%s%N)
    for i in $(seq 1 "$PODS"); do
        pod=$prefix-$round-$i
        podman pod create --name "$pod" --label "pss.bench=$prefix" -p 80 >/dev/null
        podman run -d --pod "$pod" --name "$pod-web" localhost/pss-demo:latest \
            /bin/httpd -f -p 80 -h /www >/dev/null
    done
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    times+=("$ms")
    echo "round $round: $PODS x (podman pod create + podman run) = ${ms} ms"
    cleanup
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p")
echo "median: ${median} ms for $PODS pods"
