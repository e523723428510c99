#!/usr/bin/env bash
# Three zmq-proxy replicas on this machine that act as one XSUB/XPUB forwarder (docs/federation.md):
# a publisher on any replica's frontend reaches a subscriber on any replica's backend.
#
#   cargo build --release -p zmq-proxy
#   bash examples/local/federation-three-replicas.sh        # Ctrl-C stops all three
#
# Replica i (0, 1, 2) listens on 127.0.0.1: publishers BASE+i, subscribers BASE+10+i, links
# BASE+20+i, with BASE=5550 unless ZMQ_PROXY_EXAMPLE_BASE_PORT says otherwise. ZMQ_PROXY_BIN picks
# the binary (default: target/release/zmq-proxy). Every replica gets the same full peer list; each
# notices the address that leads back to itself and skips it.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${ZMQ_PROXY_BIN:-target/release/zmq-proxy}"
base="${ZMQ_PROXY_EXAMPLE_BASE_PORT:-5550}"
peers="tcp://127.0.0.1:$((base + 20)),tcp://127.0.0.1:$((base + 21)),tcp://127.0.0.1:$((base + 22))"
pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
}
trap stop EXIT INT TERM
for i in 0 1 2; do
  echo "replica r$i: publishers tcp://127.0.0.1:$((base + i)), subscribers tcp://127.0.0.1:$((base + 10 + i))"
  "$bin" --frontend-type XSUB --frontend-bind "tcp://127.0.0.1:$((base + i))" \
    --backend-type XPUB --backend-bind "tcp://127.0.0.1:$((base + 10 + i))" \
    --federation-bind "tcp://127.0.0.1:$((base + 20 + i))" --federation-peers "$peers" \
    --federation-id "r$i" "$@" &
  pids+=("$!")
done
wait -n
