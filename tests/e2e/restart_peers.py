#!/usr/bin/env python3
"""The libzmq peers of the e2e suite's restart check, run in a Job (pyzmq, default options).

Two PUSH senders connect to the proxy's frontend Service and two PULL receivers to its backend
Service; the senders stream numbered messages at a steady pace while the suite deletes the
proxy's pod. Prints `streaming` once a tenth has arrived (the suite's cue), then one JSON line:
sent, received, lost, duplicated and the longest gap between two deliveries (outage_s).
Exits 0 whatever the counts: the suite asserts them. On an image without pyzmq it installs
pyzmq==27.3.0 into /tmp first.

    restart_peers.py --frontend tcp://jobs.NS.svc:5555 --backend tcp://jobs.NS.svc:5556
"""

import argparse
import json
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frontend", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--count", type=int, default=15_000, help="messages per sender")
    ap.add_argument("--burst", type=int, default=10, help="messages per 4 ms")
    ap.add_argument("--timeout", type=float, default=150.0)
    a = ap.parse_args()
    ctx = zmq.Context()
    deadline = time.monotonic() + a.timeout
    got: list[list[bytes]] = [[], []]
    times: list[float] = []
    lock = threading.Lock()
    senders_done = threading.Event()
    total = 2 * a.count

    def received() -> int:
        return len(got[0]) + len(got[1])

    def receiver(i: int) -> None:
        s = ctx.socket(zmq.PULL)
        s.connect(a.backend)
        quiet_since = None
        while time.monotonic() < deadline:
            if s.poll(100):
                m = s.recv()
                with lock:
                    got[i].append(m)
                    times.append(time.monotonic())
                quiet_since = None
            elif senders_done.is_set():
                quiet_since = quiet_since or time.monotonic()
                if received() >= total or time.monotonic() - quiet_since > 5:
                    break
        s.close(0)

    def sender(i: int) -> None:
        s = ctx.socket(zmq.PUSH)
        s.connect(a.frontend)
        for seq in range(a.count):
            if time.monotonic() > deadline:
                break
            s.send(b"%d:%d" % (i, seq))
            if seq % a.burst == a.burst - 1:
                time.sleep(0.004)
        # Open until everything arrived: a closed libzmq socket no longer reconnects, so what
        # its queue held would be lost if its connection ended now, whatever the proxy does.
        while received() < total and time.monotonic() < deadline:
            time.sleep(0.05)
        s.close(linger=0)

    receivers = [threading.Thread(target=receiver, args=(i,)) for i in range(2)]
    senders = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
    for t in receivers + senders:
        t.start()
    cued = False
    while any(t.is_alive() for t in senders) and time.monotonic() < deadline:
        if not cued and received() >= total // 10:
            print("streaming", flush=True)
            cued = True
        time.sleep(0.05)
    for t in senders:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    senders_done.set()
    for t in receivers:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 1)
    everything = got[0] + got[1]
    # A stream that never completed ends in a gap that lasts until now: count it, or a peer
    # stuck after the restart would look like a short outage.
    ts = sorted(times) + ([time.monotonic()] if len(set(everything)) < total else [])
    report = {
        "sent": total,
        "received": len(everything),
        "lost": total - len(set(everything)),
        "duplicated": len(everything) - len(set(everything)),
        "outage_s": round(max((b - x for x, b in zip(ts, ts[1:])), default=0.0), 3),
        "cued": cued,
    }
    print(json.dumps(report), flush=True)
    ctx.destroy(linger=0)
    sys.exit(0)


if __name__ == "__main__":
    main()
