"""The remote subscriber of the e2e suite's sidecar check (examples/sidecar/): a pyzmq SUB on the
hub's backend, in the hub's namespace, reading what the publisher pods send to their sidecar over
ipc:///zmq/out and the sidecar carries over CURVE to the hub.

Messages are "<pod> <seq>". Prints `first <pod>` on the first message of each pod (the suite
waits for it), then, at the end of --duration, one JSON line: per pod the first and last sequence
number received, how many, and how many were missing between them:
{"pods": {"<pod>": {"first", "last", "received", "missing"}}}.
"""

import argparse
import json
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--duration", type=float, default=120)
    args = ap.parse_args()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1000000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(args.endpoint)
    pods = {}
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        if not sub.poll(200):
            continue
        text = sub.recv_string()
        pod, _, seq = text.rpartition(" ")
        try:
            n = int(seq)
        except ValueError:
            continue
        p = pods.get(pod)
        if p is None:
            p = pods[pod] = {"first": n, "last": n, "received": 0, "seen": set()}
            print(f"first {pod} {n}", flush=True)
        p["received"] += 1
        p["last"] = max(p["last"], n)
        p["seen"].add(n)
    out = {}
    for pod, p in pods.items():
        span = p["last"] - p["first"] + 1
        out[pod] = {"first": p["first"], "last": p["last"], "received": p["received"],
                    "missing": span - len(p["seen"])}
    print(json.dumps({"pods": out}), flush=True)


if __name__ == "__main__":
    main()
