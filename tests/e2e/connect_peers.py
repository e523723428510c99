#!/usr/bin/env python3
"""The libzmq peers of the e2e suite's connecting-socket check (pyzmq, default options).

`worker` mode is a REP worker that binds tcp://*:PORT and answers each request with its own
host name: the pods of a Deployment the proxy's backend connects to by label selector. On SIGTERM
it keeps answering for --grace seconds (long enough for its address to leave the Service's DNS
and the proxy to drain it), then closes.

`client` mode is a Lazy Pirate REQ client on the proxy's frontend Service: one request at a time,
a fresh socket and a resend after --retry-ms without a reply, at most --retries resends each.
Prints `streaming` after its first answers (the suite's cue), then on each new worker a line
`first NAME UNIX_TIME` (the suite compares it with the pod's Ready time). After --duration
seconds it prints one JSON line: sent, answered, unanswered, retries, and answers per worker.
Exits 0 whatever the counts: the suite asserts them. On an image without pyzmq it installs
pyzmq==27.3.0 into /tmp first.

    connect_peers.py worker --port 6000
    connect_peers.py client --frontend tcp://dispatch.NS.svc:5555 --duration 120
"""

import argparse
import json
import signal
import socket
import subprocess
import sys
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


def worker(a: argparse.Namespace) -> None:
    name = socket.gethostname().encode()
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(f"tcp://*:{a.port}")
    stop_at = [float("inf")]

    def on_term(_sig, _frame):
        stop_at[0] = min(stop_at[0], time.monotonic() + a.grace)

    signal.signal(signal.SIGTERM, on_term)
    print("worker up", flush=True)
    # Bounded by the pod's life: SIGTERM sets a deadline, SIGKILL ends it otherwise.
    while time.monotonic() < stop_at[0]:
        if rep.poll(100):
            req = rep.recv()
            rep.send(name + b"|" + req)
    rep.close(linger=1000)
    ctx.term()


def client(a: argparse.Namespace) -> None:
    ctx = zmq.Context()

    def fresh() -> zmq.Socket:
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(a.frontend)
        return s

    req = fresh()
    sent = answered = unanswered = retries = 0
    per_worker: dict[str, int] = {}
    end = time.monotonic() + a.duration
    announced = False
    while time.monotonic() < end:
        body = b"%d" % sent
        sent += 1
        got = None
        for _attempt in range(a.retries + 1):
            req.send(body)
            if req.poll(a.retry_ms):
                got = req.recv()
                break
            retries += 1
            req.close()
            req = fresh()
        if got is None or not got.endswith(b"|" + body):
            unanswered += 1
            continue
        answered += 1
        who = got.split(b"|", 1)[0].decode(errors="replace")
        if who not in per_worker:
            print(f"first {who} {time.time():.3f}", flush=True)
        per_worker[who] = per_worker.get(who, 0) + 1
        if not announced and answered >= 20:
            print("streaming", flush=True)
            announced = True
        time.sleep(a.pause_ms / 1000)
    req.close()
    ctx.term()
    report = {"sent": sent, "answered": answered, "unanswered": unanswered, "retries": retries, "workers": per_worker}
    print(json.dumps(report), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--port", type=int, default=6000)
    w.add_argument("--grace", type=float, default=15.0, help="seconds answering after SIGTERM")
    c = sub.add_parser("client")
    c.add_argument("--frontend", required=True)
    c.add_argument("--duration", type=float, default=120.0)
    c.add_argument("--retry-ms", type=int, default=2500)
    c.add_argument("--retries", type=int, default=3)
    c.add_argument("--pause-ms", type=int, default=20)
    a = ap.parse_args()
    worker(a) if a.mode == "worker" else client(a)


if __name__ == "__main__":
    main()
