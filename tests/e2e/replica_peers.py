#!/usr/bin/env python3
"""The libzmq peers of the e2e suite's replica check, run in a Job (pyzmq, default options).

For each replica of a scaled shared queue, listed by `status.replicaEndpoints`, one REQ client
connects to that replica's own frontend endpoint and one REP worker to its own backend endpoint
(`tcp://<name>-<i>.<name>-pods.<ns>.svc:<port>`: libzmq resolves the name to that pod only). Each
client sends --count numbered requests; its worker answers with the replica's index, so every
reply proves the request went through that replica and no other. Prints one JSON line: ok, and
per replica the requests sent, the replies received and the replies that came from another
worker, and the addresses its endpoint's host name resolves to (the suite compares them with the
pod's IP). Exits 0 whatever the counts: the suite asserts them. On an image without pyzmq it
installs pyzmq==27.3.0 into /tmp first.

    replica_peers.py --frontends tcp://a-0...:5555,tcp://a-1...:5555 --backends ...:5556,...
"""

import argparse
import json
import socket
import subprocess
import sys
import threading
import time

try:
    import zmq
except ImportError:
    # A stock python image: install pyzmq (its wheel carries libzmq) into the writable /tmp.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--target", "/tmp/py", "pyzmq==27.3.0"],
        check=True,
    )
    sys.path.insert(0, "/tmp/py")
    import zmq


def worker(ctx: "zmq.Context", endpoint: str, index: int, stop: threading.Event) -> None:
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.RCVTIMEO, 200)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    while not stop.is_set():
        try:
            request = sock.recv()
        except zmq.Again:
            continue
        sock.send(b"%d:" % index + request)
    sock.close()


def resolved(endpoint: str) -> list[str]:
    """The addresses the host of tcp://HOST:PORT resolves to here, sorted; [] when it does not."""
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})
    except socket.gaierror:
        return []


def client(ctx: "zmq.Context", endpoint: str, index: int, count: int, deadline: float) -> dict:
    sent = received = foreign = 0
    sock = None
    # Lazy Pirate: a request without a reply within a second is retried on a fresh socket, so a
    # worker that connected a moment after the client costs a retry, not the run.
    n = 0
    while n < count and time.monotonic() < deadline:
        if sock is None:
            sock = ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.RCVTIMEO, 1000)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
        body = b"%d" % n
        sock.send(body)
        sent += 1
        try:
            reply = sock.recv()
        except zmq.Again:
            sock.close()
            sock = None
            continue
        tag, _, echoed = reply.partition(b":")
        if echoed != body:
            continue
        if tag != b"%d" % index:
            foreign += 1
        received += 1
        n += 1
    if sock is not None:
        sock.close()
    return {
        "replica": index,
        "endpoint": endpoint,
        "addresses": resolved(endpoint),
        "sent": sent,
        "received": received,
        "foreign": foreign,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frontends", required=True, help="comma-separated, in ordinal order")
    ap.add_argument("--backends", required=True, help="comma-separated, in ordinal order")
    ap.add_argument("--count", type=int, default=100, help="requests per replica")
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    frontends = [e for e in a.frontends.split(",") if e]
    backends = [e for e in a.backends.split(",") if e]
    if not frontends or len(frontends) != len(backends):
        print(json.dumps({"ok": False, "error": "frontends and backends differ in number", "frontends": frontends, "backends": backends}))
        return
    ctx = zmq.Context()
    stop = threading.Event()
    workers = [threading.Thread(target=worker, args=(ctx, b, i, stop), daemon=True) for i, b in enumerate(backends)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + a.timeout
    results: list[dict] = [{} for _ in frontends]

    def run(i: int) -> None:
        results[i] = client(ctx, frontends[i], i, a.count, deadline)

    clients = [threading.Thread(target=run, args=(i,)) for i in range(len(frontends))]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=max(0.0, deadline - time.monotonic()) + 5)
    stop.set()
    for w in workers:
        w.join(timeout=2)
    ok = all(r.get("received") == a.count and r.get("foreign") == 0 for r in results)
    print(json.dumps({"ok": ok, "replicas": len(frontends), "count": a.count, "per_replica": results}))
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
