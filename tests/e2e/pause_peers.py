#!/usr/bin/env python3
"""The libzmq peers of the e2e suite's pause check, run in a Job (pyzmq, default options).

A PUSH sender connects to the pipeline's frontend Service and a PULL receiver to its backend
Service; the sender sends numbered messages at a steady pace while the suite sets
`spec.paused: true` and, later, false. Prints `streaming` once deliveries flow (the suite's cue
to pause), `stalled` once nothing has arrived for --stall seconds while the sender kept
offering (the pause reached the proxy), `resumed` when deliveries start again, then one JSON line:
sent, received, lost, duplicated, reordered, disconnects (socket monitor events on either peer:
a pause must keep the connections) and the longest gap between two deliveries. A send the
sender's high-water mark refuses is retried, never counted as sent. Exits 0 whatever the
counts: the suite asserts them. On an image without pyzmq it installs pyzmq==27.3.0 into /tmp.

    pause_peers.py --frontend tcp://jobs.NS.svc:5555 --backend tcp://jobs.NS.svc:5556
"""

import argparse
import json
import subprocess
import sys
import time

try:
    import zmq
except ImportError:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--target", "/tmp/py", "pyzmq==27.3.0"],
        check=True,
    )
    sys.path.insert(0, "/tmp/py")
    import zmq

from zmq.utils.monitor import recv_monitor_message


def disconnects(monitor: zmq.Socket) -> int:
    n = 0
    while monitor.poll(0):
        if recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frontend", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between sends")
    ap.add_argument("--stall", type=float, default=2.0, help="a gap this long counts as paused")
    ap.add_argument("--after", type=int, default=200, help="messages delivered after the resume")
    ap.add_argument("--timeout", type=float, default=300.0)
    a = ap.parse_args()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.sndtimeo = 50
    pull = ctx.socket(zmq.PULL)
    monitors = [push.get_monitor_socket(zmq.EVENT_DISCONNECTED), pull.get_monitor_socket(zmq.EVENT_DISCONNECTED)]
    pull.connect(a.backend)
    push.connect(a.frontend)
    deadline = time.monotonic() + a.timeout
    sent = received = duplicated = reordered = lost_disconnects = 0
    seen: set[int] = set()
    last = -1
    phase = "starting"
    last_delivery = time.monotonic()
    longest_gap = 0.0
    after_resume = 0
    next_send = time.monotonic()
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_send:
            try:
                push.send(b"%d" % sent)
                sent += 1
            except zmq.Again:
                pass  # the high-water mark holds it: offered again next time, not lost
            next_send = now + a.interval
        if pull.poll(max(1, int((next_send - time.monotonic()) * 1000))):
            n = int(pull.recv())
            t = time.monotonic()
            longest_gap = max(longest_gap, t - last_delivery)
            last_delivery = t
            received += 1
            if n in seen:
                duplicated += 1
            seen.add(n)
            if n < last:
                reordered += 1
            last = max(last, n)
            if phase == "starting" and received >= 50:
                phase = "streaming"
                print("streaming", flush=True)
            elif phase == "stalled":
                phase = "resumed"
                print("resumed", flush=True)
            elif phase == "resumed":
                after_resume += 1
                if after_resume >= a.after:
                    break
        elif phase == "streaming" and time.monotonic() - last_delivery >= a.stall:
            phase = "stalled"
            print("stalled", flush=True)
        lost_disconnects += sum(disconnects(m) for m in monitors)
    # What was sent last may still be on its way: drain for a moment, bounded.
    quiet_until = time.monotonic() + 2.0
    while time.monotonic() < quiet_until and pull.poll(200):
        n = int(pull.recv())
        received += 1
        duplicated += n in seen
        seen.add(n)
        quiet_until = time.monotonic() + 2.0
    lost_disconnects += sum(disconnects(m) for m in monitors)
    print(
        json.dumps(
            {
                "phase": phase,
                "sent": sent,
                "received": received,
                "lost": sent - len(seen),
                "duplicated": duplicated,
                "reordered": reordered,
                "disconnects": lost_disconnects,
                "longest_gap_s": round(longest_gap, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
