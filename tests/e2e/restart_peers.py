#!/usr/bin/env python3
"""The libzmq peers of the e2e suite's restart check, run in a Job (pyzmq, default options).

Two PUSH senders connect to the proxy's frontend Service and two PULL receivers to its backend
Service; the senders stream numbered messages at a steady pace while the suite deletes the
proxy's pod. Prints `streaming` once a tenth of --count has arrived (the suite's cue). The
senders go on past --count until every one of the four sockets has lost its connection and
connected again (libzmq's socket monitor says so), then send --after more each, so the stream
always spans the old pod's lame duck and drain and ends through the replacement. Then one
JSON line: sent, received, lost, duplicated, the longest gap between two deliveries
(outage_s), how many of the four sockets reconnected, and how many messages arrived after the
last of them did.
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
from zmq.utils.monitor import recv_monitor_message


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frontend", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--count", type=int, default=15_000, help="messages per sender")
    ap.add_argument("--after", type=int, default=1_000, help="messages per sender after the reconnects")
    ap.add_argument("--burst", type=int, default=10, help="messages per 4 ms")
    ap.add_argument("--timeout", type=float, default=150.0)
    a = ap.parse_args()
    ctx = zmq.Context()
    deadline = time.monotonic() + a.timeout
    got: list[list[bytes]] = [[], []]
    times: list[float] = []
    lock = threading.Lock()
    senders_done = threading.Event()
    stop_monitors = threading.Event()
    sent = [0, 0]
    # Per socket: connections lost, and when it first connected again after one.
    events = [{"disconnected": 0, "reconnected_at": None} for _ in range(4)]
    watchers: list[threading.Thread] = []

    def received() -> int:
        return len(got[0]) + len(got[1])

    def reconnected() -> int:
        return sum(1 for e in events if e["reconnected_at"] is not None)

    def watch(sock, slot: int) -> None:
        # The monitor socket is made here, by the socket's own thread, and then only read by
        # the watcher thread (libzmq sockets move between threads behind a barrier).
        mon = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)

        def run() -> None:
            while not stop_monitors.is_set() and time.monotonic() < deadline:
                if not mon.poll(100):
                    continue
                ev = recv_monitor_message(mon)["event"]
                e = events[slot]
                if ev == zmq.EVENT_DISCONNECTED:
                    e["disconnected"] += 1
                elif ev == zmq.EVENT_CONNECTED and e["disconnected"] and e["reconnected_at"] is None:
                    e["reconnected_at"] = time.monotonic()
            mon.close(0)

        t = threading.Thread(target=run, daemon=True)
        watchers.append(t)
        t.start()

    def receiver(i: int) -> None:
        s = ctx.socket(zmq.PULL)
        watch(s, 2 + i)
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
                if received() >= sum(sent) or time.monotonic() - quiet_since > 5:
                    break
        s.close(0)

    def sender(i: int) -> None:
        s = ctx.socket(zmq.PUSH)
        # A send waits while no proxy is connected; bounded, so the deadline still ends the run.
        s.setsockopt(zmq.SNDTIMEO, 500)
        watch(s, i)
        s.connect(a.frontend)
        seq, extra = 0, a.after
        while time.monotonic() < deadline and extra > 0:
            try:
                s.send(b"%d:%d" % (i, seq))
            except zmq.Again:
                continue
            seq += 1
            sent[i] = seq
            if seq >= a.count and reconnected() == 4:
                extra -= 1
            if seq % a.burst == 0:
                time.sleep(0.004)
        # Open until everything arrived: a closed libzmq socket no longer reconnects, so what
        # its queue held would be lost if its connection ended now, whatever the proxy does.
        while received() < sum(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        s.close(linger=0)

    receivers = [threading.Thread(target=receiver, args=(i,)) for i in range(2)]
    senders = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
    for t in receivers + senders:
        t.start()
    cued = False
    while any(t.is_alive() for t in senders) and time.monotonic() < deadline:
        if not cued and received() >= 2 * a.count // 10:
            print("streaming", flush=True)
            cued = True
        time.sleep(0.05)
    for t in senders:
        # A send gives up after 500 ms, so a sender past the deadline ends within a second.
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 1)
    senders_done.set()
    for t in receivers:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 1)
    stop_monitors.set()
    for t in watchers:
        t.join(timeout=2)
    total = sum(sent)
    everything = got[0] + got[1]
    # A stream that never completed ends in a gap that lasts until now: count it, or a peer
    # stuck after the restart would look like a short outage.
    ts = sorted(times) + ([time.monotonic()] if len(set(everything)) < total else [])
    last_reconnect = max((e["reconnected_at"] or float("inf") for e in events), default=float("inf"))
    report = {
        "sent": total,
        "received": len(everything),
        "lost": total - len(set(everything)),
        "duplicated": len(everything) - len(set(everything)),
        "outage_s": round(max((b - x for x, b in zip(ts, ts[1:])), default=0.0), 3),
        "cued": cued,
        "reconnected": reconnected(),
        "after_reconnect": sum(1 for t in times if t > last_reconnect),
    }
    print(json.dumps(report), flush=True)
    ctx.destroy(linger=0)
    sys.exit(0)


if __name__ == "__main__":
    main()
