#!/usr/bin/env python3
"""The libzmq peers of the e2e suite's federation checks, run in a Job (pyzmq, default options).

Every peer connects to the proxy's Service only (one name per socket, as a federation's peers
do); kube-proxy spreads their connections over the replicas, so a publisher and a subscriber,
a producer and a worker, a client and a worker mostly sit on different replicas and only the
federation's links bring them together. Three peers on each side:

  pubsub    3 PUB -> frontend (XSUB), 3 SUB <- backend (XPUB), every SUB subscribed to all:
            each subscriber must get each publication once.
  pipeline  3 PUSH -> frontend (PULL), 3 PULL <- backend (PUSH): each task reaches one worker.
  reqrep    3 DEALER clients -> frontend (ROUTER), 3 REP workers <- backend (DEALER): each
            request is answered once (a window of 20 in flight per client, no retries).

The senders first warm up (pub/sub: until every subscriber heard every publisher, as a
subscription takes a hop to reach a publisher on another replica), then stream numbered
messages for --duration seconds at a steady pace. Prints `streaming` once the numbered stream
flows (the suite's cue to delete a pod or roll the Deployment), then one JSON line: the
pattern, sent, expected deliveries, delivered, lost, duplicated, the longest gap between two
deliveries (outage_s), and how many arrived in the last quarter of the run (after_disruption).
Exits 0 whatever the counts: the suite asserts them. On an image without pyzmq it installs
pyzmq==27.3.0 into /tmp first.

    federation_peers.py --pattern pubsub --frontend tcp://news.NS.svc:5555 \
        --backend tcp://news.NS.svc:5556 --duration 20
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

PEERS = 3
WINDOW = 20


class Run:
    """What every peer thread shares: the deadline, the counts and the delivery log."""

    def __init__(self, a):
        self.a = a
        self.ctx = zmq.Context()
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + a.timeout
        self.stream_end = None  # set when the numbered stream starts
        self.sent = [0] * PEERS
        # receiver index -> list of message ids delivered to it (numbered ones only)
        self.got = [[] for _ in range(PEERS)]
        self.times = []
        self.warm = [set() for _ in range(PEERS)]  # receiver -> senders heard during warm-up
        self.streaming = threading.Event()
        self.senders_done = threading.Event()

    def live(self):
        return time.monotonic() < self.deadline

    def deliver(self, receiver, msg):
        now = time.monotonic()
        with self.lock:
            if msg.startswith(b"w:"):
                self.warm[receiver].add(msg.split(b":")[1])
                return
            self.got[receiver].append(msg)
            self.times.append(now)

    def delivered(self):
        return sum(len(g) for g in self.got)


def receive(r, s, i, complete):
    """Delivers what socket `s` of receiver `i` reads until the senders are done and either
    `complete()` or 5 s pass without a message (bounded by the run's deadline), then closes it."""
    quiet = None
    while r.live():
        if s.poll(100):
            r.deliver(i, s.recv())
            quiet = None
        elif r.senders_done.is_set():
            quiet = quiet or time.monotonic()
            if complete() or time.monotonic() - quiet > 5:
                break
    s.close(0)


def pubsub(r):
    a = r.a

    def sub(i):
        s = r.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(a.backend)
        # Each subscriber gets every publication: only a quiet spell ends it.
        receive(r, s, i, lambda: False)

    def pub(i):
        s = r.ctx.socket(zmq.PUB)
        s.connect(a.frontend)
        # Warm-up: until every subscriber heard this publisher (bounded by the run's deadline).
        while r.live() and not all(str(i).encode() in w for w in r.warm):
            s.send(b"w:%d" % i)
            time.sleep(0.05)
        stream(s, i, lambda m: s.send(m))
        time.sleep(1)
        s.close(0)

    return [sub, pub], PEERS


def pipeline(r):
    a = r.a

    def worker(i):
        s = r.ctx.socket(zmq.PULL)
        s.connect(a.backend)
        receive(r, s, i, lambda: r.delivered() >= sum(r.sent))

    def producer(i):
        s = r.ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.SNDTIMEO, 500)
        s.connect(a.frontend)

        def send(m):
            while r.live():
                try:
                    s.send(m)
                    return
                except zmq.Again:
                    continue

        stream(s, i, send)
        # Open until everything arrived: a closed socket's queue would be lost whatever the
        # proxy does.
        while r.delivered() < sum(r.sent) and r.live():
            time.sleep(0.05)
        s.close(0)

    return [worker, producer], 1


def reqrep(r):
    a = r.a

    def worker(i):
        s = r.ctx.socket(zmq.REP)
        s.connect(a.backend)
        while r.live() and not (r.senders_done.is_set() and r.delivered() >= sum(r.sent)):
            if s.poll(100):
                s.send(s.recv())
        s.close(0)

    def client(i):
        s = r.ctx.socket(zmq.DEALER)
        s.connect(a.frontend)
        in_flight = set()

        def drain(wait_ms):
            while s.poll(wait_ms):
                frames = s.recv_multipart()
                m = frames[-1]
                in_flight.discard(m)
                r.deliver(i, m)
                wait_ms = 0

        def send(m):
            # A window of requests in flight; one that never comes back stays counted as lost.
            while len(in_flight) >= WINDOW and r.live():
                before = len(in_flight)
                drain(100)
                if len(in_flight) == before:
                    in_flight.pop()
            s.send_multipart([b"", m])
            in_flight.add(m)
            drain(0)

        stream(s, i, send)
        end = time.monotonic() + 5
        while in_flight and time.monotonic() < end and r.live():
            drain(100)
        s.close(0)

    return [worker, client], 1


def stream(sock, i, send):
    """Numbered messages `i:seq` from sender `i` until the stream's end, --rate per second."""
    r = RUN
    while r.stream_end is None and r.live():
        time.sleep(0.01)
    pace = 1.0 / r.a.rate
    seq = 0
    next_at = time.monotonic()
    while r.live() and time.monotonic() < r.stream_end:
        send(b"%d:%d" % (i, seq))
        seq += 1
        r.sent[i] = seq
        next_at += pace
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def main():
    global RUN
    ap = argparse.ArgumentParser()
    ap.add_argument("--pattern", choices=["pubsub", "pipeline", "reqrep"], required=True)
    ap.add_argument("--frontend", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of numbered stream")
    ap.add_argument("--rate", type=float, default=200.0, help="messages per second per sender")
    ap.add_argument("--warmup", type=float, default=60.0, help="most seconds of warm-up")
    ap.add_argument("--timeout", type=float, default=0.0, help="hard end (default duration + warmup + 60)")
    a = ap.parse_args()
    if not a.timeout:
        a.timeout = a.duration + a.warmup + 60
    r = Run(a)
    RUN = r
    roles, copies = {"pubsub": pubsub, "pipeline": pipeline, "reqrep": reqrep}[a.pattern](r)
    receiver, sender = roles
    receivers = [threading.Thread(target=receiver, args=(i,)) for i in range(PEERS)]
    senders = [threading.Thread(target=sender, args=(i,)) for i in range(PEERS)]
    for t in receivers + senders:
        t.start()
    # The stream starts once warm (pub/sub) or at once; bounded by --warmup.
    warm_until = time.monotonic() + a.warmup
    while a.pattern == "pubsub" and time.monotonic() < warm_until:
        with r.lock:
            if all(len(w) == PEERS for w in r.warm):
                break
        time.sleep(0.05)
    warmed = a.pattern != "pubsub" or all(len(w) == PEERS for w in r.warm)
    start = time.monotonic()
    r.stream_end = start + a.duration
    print("streaming", flush=True)
    for t in senders:
        t.join(timeout=max(0.0, r.deadline - time.monotonic()) + 1)
    r.senders_done.set()
    for t in receivers:
        t.join(timeout=max(0.0, r.deadline - time.monotonic()) + 1)
    total = sum(r.sent)
    expected = total * copies
    # Per receiver for pub/sub (each must get everything), over all receivers otherwise.
    if copies > 1:
        lost = sum(total - len(set(g)) for g in r.got)
        duplicated = sum(len(g) - len(set(g)) for g in r.got)
    else:
        everything = [m for g in r.got for m in g]
        lost = total - len(set(everything))
        duplicated = len(everything) - len(set(everything))
    ts = sorted(t for t in r.times if t >= start)
    ts = [start] + ts + ([r.stream_end] if lost else [])
    last_quarter = start + 0.75 * a.duration
    report = {
        "pattern": a.pattern,
        "warmed": warmed,
        "sent": total,
        "expected": expected,
        "delivered": r.delivered(),
        "lost": lost,
        "duplicated": duplicated,
        "outage_s": round(max((b - x for x, b in zip(ts, ts[1:])), default=0.0), 3),
        "after_disruption": sum(1 for t in r.times if t > last_quarter),
        "per_receiver": [len(g) for g in r.got],
    }
    print(json.dumps(report), flush=True)
    r.ctx.destroy(linger=0)
    sys.exit(0)


RUN = None

if __name__ == "__main__":
    main()
