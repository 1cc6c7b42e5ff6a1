#!/usr/bin/env bash
# The whole PSS test suite, on a fresh Debian machine (as root): prepares Podman (packages,
# containers.conf, the locally built demo image, the API socket) and runs every test of the
# workspace — unit, proptest, SQLite, gRPC on loopback, and the real-Podman cluster tests.
# The rootless test (rootless_podman) prepares its own user with
# `scripts/podman-setup.sh --rootless pss-rootless`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/podman-setup.sh >/dev/null

# admin_endpoints checks /metrics with Prometheus' own text parser (python3-prometheus-client).
if ! /usr/bin/python3 -c 'import prometheus_client' 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-prometheus-client >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-prometheus-client >&2; }
fi

# The issue-15 tests (etcd_harness, controllers on etcd) start their own etcd clusters on free
# loopback ports: Debian's etcd-server (etcd) and etcd-client (etcdctl), installed when missing;
# the package's own service on 2379 is never used and is left stopped.
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
    bash scripts/etcd-cluster.sh install
fi

# The end-to-end tests run the real binaries (pss-controller, pss-agent, pss-proxy) from
# target/debug; cargo builds a package's binaries for its own integration tests only, so build
# every binary first and no test ever runs a stale one.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
