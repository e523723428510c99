#!/usr/bin/env bash
# The one command that runs every test tier on a fresh machine:
#   bash tests/run.sh
# It installs the Python requirements, builds the release proxy, then runs each tier in turn and
# keeps going after a failing tier so one run reports them all. Exits non-zero if any tier
# failed (or if setup failed, in which case no tier runs).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

failed=()
passed=()

tier() {
    local name=$1
    shift
    echo
    echo "=== tier ${name}: $*"
    local rc=0
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        passed+=("$name")
        echo "=== tier ${name}: passed"
    else
        failed+=("$name")
        echo "=== tier ${name}: FAILED (exit ${rc})"
    fi
}

echo "=== setup: python requirements"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt || {
    echo "=== setup FAILED: pip install -r tests/requirements.txt"
    exit 1
}

echo "=== setup: release build of the proxy"
cargo build --release -p zmq-proxy || {
    echo "=== setup FAILED: cargo build --release -p zmq-proxy"
    exit 1
}

# The peer tests run the release binary; find it wherever cargo puts its target dir.
if [ -z "${ZMQ_PROXY_BIN:-}" ]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) ||
        target_dir=target
    export ZMQ_PROXY_BIN="${target_dir:-target}/release/zmq-proxy"
fi

# The envtest tier's real kube-apiserver and etcd: $KUBEBUILDER_ASSETS when set, else the envtest
# convention's default location when it holds both binaries. Nothing here builds or fetches them.
if [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -x /usr/local/kubebuilder/bin/kube-apiserver ] &&
    [ -x /usr/local/kubebuilder/bin/etcd ]; then
    export KUBEBUILDER_ASSETS=/usr/local/kubebuilder/bin
fi

# Unit, integration and mocked-API tests of every crate (the operator's included); the envtest
# target skips here and runs as its own tier below, so its result shows by name.
tier cargo-test env -u KUBEBUILDER_ASSETS cargo test --workspace

# The operator against a real kube-apiserver and etcd: CRD admission (the API server's CEL cost
# estimate included), reconcile, status, events, refusals. Prints its skip reason without them.
tier envtest cargo test -p zmq-proxy-operator --test envtest -- --nocapture

# Real libzmq peers (pyzmq) against the release binary over 127.0.0.1.
tier peers env PYTHONDONTWRITEBYTECODE=1 python3 -m pytest proxy/tests/peers

# Operations with real libzmq peers: control socket, /metrics /healthz /readyz, churn, memory
# bound (its own pytest.ini, so its own run).
tier peers-ops env PYTHONDONTWRITEBYTECODE=1 python3 -m pytest proxy/tests/peers_ops

# The documentation's links, anchors, repository paths and cargo commands (nothing is run).
tier docs env PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q tests/docs

# Every fuzz target briefly on the stable toolchain (fuzz/run.sh installs cargo-fuzz when it is
# missing): replays the seed corpora and fixed crashes, then looks for new ones.
tier fuzz bash fuzz/run.sh "${FUZZ_SECONDS:-10}"

# Helm chart checks: lint, render, schema validation, RBAC, CRD bytes identical to crds/.
tier chart bash .ci/chart-check.sh

# The whole product in a kind cluster; prints one line and passes as skipped where docker (with
# a running engine), kind, kubectl or helm is missing.
tier e2e bash tests/e2e/run.sh

echo
echo "=== tiers passed: ${passed[*]:-none}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "=== tiers FAILED: ${failed[*]}"
    exit 1
fi
echo "=== all tiers passed"
