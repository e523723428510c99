#!/usr/bin/env python3
"""Restart under load, with real libzmq peers on default options that connect to the proxy.

Each run starts a proxy, starts the peers of one pattern, sends SIGTERM to the proxy in the
middle of the stream and, once it has exited, starts a new proxy on the same ports: what a
Deployment does behind a Service. It then counts what the peers lost:

- pipeline: 2 PUSH senders -> PULL/PUSH -> 2 PULL receivers; every message is numbered, so
  `lost` is exact (and `duplicated`, which PUSH must never do).
- forwarder: 2 PUB publishers -> XSUB/XPUB -> 3 SUB subscribers; `lost` is per subscriber,
  summed (a PUB drops what it publishes while no subscription has reached it, by design, so
  some loss is inherent while peers reconnect); `resubscribed` says whether every subscriber
  got messages again after the restart.
- shared queue: 8 REQ clients, 3 REP workers (one request in 20 takes 300 ms, the rest 5 ms)
  through ROUTER/DEALER; `lost` counts requests whose reply never came (the client then gives
  up after a timeout and starts over with a new socket, as a Lazy Pirate client would).

`outage` is the longest gap between two deliveries anywhere in the run.

Used by test_restart.py (zmq-proxy only, asserting the goals) and run by hand for the
side-by-side table with libzmq's own zmq_proxy (libzmq_proxy.py):
    python3 proxy/tests/peers/restart_harness.py [--runs 5]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zmqpeers import Proxy, ep, free_ports, until  # noqa: E402

HERE = Path(__file__).resolve().parent
DRAIN_TIMEOUT = 5.0
# Long enough for a drain (at most DRAIN_TIMEOUT) plus the new proxy's start.
REPLY_TIMEOUT_MS = 8_000


@dataclass
class Result:
    pattern: str
    impl: str
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    outage: float = 0.0
    resubscribed: bool = True
    counters: dict = field(default_factory=dict)
    old_counters: dict = field(default_factory=dict)
    drain_seconds: float = 0.0
    notes: list = field(default_factory=list)


class Deliveries:
    """Delivery times from every receiving thread, for the longest gap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []

    def mark(self) -> None:
        t = time.monotonic()
        with self.lock:
            self.times.append(t)

    def longest_gap(self, since: float, complete: bool = True) -> float:
        """`complete` False: the stream never finished, so its last gap lasts until now."""
        with self.lock:
            ts = sorted(t for t in self.times if t >= since)
        if not complete:
            ts.append(time.monotonic())
        return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)


def start_proxy(impl: str, front: tuple[str, int], back: tuple[str, int]) -> Proxy:
    (ft, fp), (bt, bp) = front, back
    if impl == "libzmq":
        p = Proxy([ft, ep(fp), bt, ep(bp)], program=[sys.executable, str(HERE / "libzmq_proxy.py")])
        p.wait_running(10)
        return p
    args = [
        "--frontend-type", ft, "--frontend-bind", ep(fp),
        "--backend-type", bt, "--backend-bind", ep(bp),
        "--drain-timeout", str(DRAIN_TIMEOUT), "--lame-duck", "0", "--log-format", "json",
    ]  # fmt: skip
    p = Proxy(args)
    p.wait_running(10)
    return p


def restart(old: Proxy, impl: str, front, back, res: Result) -> Proxy:
    """SIGTERM, wait for the exit, start the replacement on the same ports; records the old
    proxy's final counters and drain time in `res`."""
    t0 = time.monotonic()
    old.signal(signal.SIGTERM)
    rc = old.wait_exit(DRAIN_TIMEOUT + 5)
    if rc is None:
        old.close()
        raise AssertionError(f"{impl} proxy still running {DRAIN_TIMEOUT + 5}s after SIGTERM\n{old.output()}")
    res.drain_seconds = time.monotonic() - t0
    res.old_counters = stopped_counters(old, impl)
    if impl == "zmq-proxy":
        ending = (old.find_event("proxy stopped") or {}).get("fields", {}).get("ending")
        res.notes.append(f"old proxy: {ending}")
    old.close()
    return start_proxy(impl, front, back)


def stopped_counters(p: Proxy, impl: str) -> dict:
    return p.stopped_counters() if impl == "zmq-proxy" else {}


def wait_for(cond, seconds: float) -> bool:
    for _ in until(seconds, 1_000_000):
        if cond():
            return True
        time.sleep(0.005)  # the poll interval of a condition with a deadline
    return cond()


# ---- pipeline -------------------------------------------------------------------------------
def run_pipeline(impl: str, per_sender: int = 20_000) -> Result:
    ports = free_ports(2)
    front, back = ("PULL", ports[0]), ("PUSH", ports[1])
    proxy = start_proxy(impl, front, back)
    ctx = zmq.Context()
    res = Result("pipeline", impl, sent=2 * per_sender)
    deliveries = Deliveries()
    got: list[list[bytes]] = [[], []]
    stop = threading.Event()
    errors: list[str] = []

    def receiver(i: int) -> None:
        s = ctx.socket(zmq.PULL)
        s.connect(ep(ports[1]))
        for _ in until(60, 10_000_000):
            if s.poll(50):
                got[i].append(s.recv())
                deliveries.mark()
            elif stop.is_set():
                break
        s.close(0)

    def sender(i: int) -> None:
        s = ctx.socket(zmq.PUSH)
        s.sndtimeo = 20_000
        s.connect(ep(ports[0]))
        try:
            for seq in range(per_sender):
                s.send(b"%d:%d" % (i, seq))
                if seq % 50 == 49:
                    time.sleep(0.001)  # bursts of 50, as a steady producer
        except zmq.Again:
            errors.append(f"sender {i} blocked for 20 s")
        # Open until everything arrived: a closed libzmq socket no longer reconnects, so what its
        # queue held would be lost if its connection ended now, whatever the proxy does.
        wait_for(lambda: len(got[0]) + len(got[1]) >= res.sent, 20)
        s.close(linger=0)

    receivers = [threading.Thread(target=receiver, args=(i,)) for i in range(2)]
    senders = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
    for t in receivers + senders:
        t.start()
    try:
        if not wait_for(lambda: len(got[0]) + len(got[1]) >= res.sent // 4, 20):
            res.notes.append("the stream never got going")
        t0 = time.monotonic()
        proxy = restart(proxy, impl, front, back, res)
        for t in senders:
            t.join(timeout=40)
        total = lambda: len(got[0]) + len(got[1])  # noqa: E731
        wait_for(lambda: total() >= res.sent, 10)
        stop.set()
        for t in receivers:
            t.join(timeout=10)
        res.outage = deliveries.longest_gap(t0, len(set(got[0] + got[1])) >= res.sent)
    finally:
        stop.set()
        ctx.destroy(linger=0)
    everything = got[0] + got[1]
    res.received = len(everything)
    res.duplicated = len(everything) - len(set(everything))
    res.lost = res.sent - len(set(everything))
    res.notes.extend(errors)
    proxy.stop(DRAIN_TIMEOUT + 2)
    res.counters = stopped_counters(proxy, impl)
    proxy.close()
    return res


# ---- forwarder ------------------------------------------------------------------------------
def run_forwarder(impl: str, rate_per_ms: int = 5) -> Result:
    """Publishers send for as long as the run lasts (until 1.5 s after the new proxy is up), so
    loss measures the restart and not the end of the stream."""
    ports = free_ports(2)
    front, back = ("XSUB", ports[0]), ("XPUB", ports[1])
    proxy = start_proxy(impl, front, back)
    ctx = zmq.Context()
    res = Result("forwarder", impl)
    deliveries = Deliveries()
    got: list[set[bytes]] = [set(), set(), set()]
    sent = [0, 0]
    ready = [threading.Event() for _ in range(3)]
    go = threading.Event()
    done = threading.Event()
    stop = threading.Event()

    def subscriber(i: int) -> None:
        s = ctx.socket(zmq.SUB)
        s.subscribe(b"")
        s.connect(ep(ports[1]))
        for _ in until(60, 10_000_000):
            if s.poll(50):
                m = s.recv()
                if m.startswith(b"probe"):
                    ready[i].set()
                    continue
                got[i].add(m)
                deliveries.mark()
            elif stop.is_set():
                break
        s.close(0)

    def publisher(i: int) -> None:
        s = ctx.socket(zmq.PUB)
        s.connect(ep(ports[0]))
        # Slow joiners: probe until every subscriber's subscription has reached this publisher.
        for _ in until(10, 100_000):
            if all(r.is_set() for r in ready):
                break
            s.send(b"probe")
            time.sleep(0.01)  # probe pacing, bounded by the loop above
        go.wait(10)
        for seq in range(10_000_000):
            if done.is_set():
                break
            s.send(b"%d:%d" % (i, seq))
            sent[i] = seq + 1
            if seq % rate_per_ms == rate_per_ms - 1:
                time.sleep(0.001)
        s.close(linger=2_000)

    subs = [threading.Thread(target=subscriber, args=(i,)) for i in range(3)]
    pubs = [threading.Thread(target=publisher, args=(i,)) for i in range(2)]
    for t in subs + pubs:
        t.start()
    try:
        if not wait_for(lambda: all(r.is_set() for r in ready), 10):
            res.notes.append("subscriptions never propagated")
        go.set()
        wait_for(lambda: sum(len(g) for g in got) >= 3000, 20)
        t0 = time.monotonic()
        proxy = restart(proxy, impl, front, back, res)
        after = time.monotonic()
        # Messages again after the restart: the subscriptions reached the new proxy's
        # publishers (each subscriber resubscribes, the proxy replays them upstream).
        marks = [len(g) for g in got]
        res.resubscribed = wait_for(lambda: all(len(g) > m + 100 for g, m in zip(got, marks)), 10)
        wait_for(lambda: time.monotonic() - after >= 1.5, 2)
        done.set()
        for t in pubs:
            t.join(timeout=20)
        wait_for(lambda: sum(len(g) for g in got) >= 3 * sum(sent), 3)
        stop.set()
        for t in subs:
            t.join(timeout=10)
        res.outage = deliveries.longest_gap(t0)
    finally:
        done.set()
        stop.set()
        ctx.destroy(linger=0)
    res.sent = 3 * sum(sent)
    res.received = sum(len(g) for g in got)
    res.lost = res.sent - res.received
    proxy.stop(DRAIN_TIMEOUT + 2)
    res.counters = stopped_counters(proxy, impl)
    proxy.close()
    return res


# ---- shared queue ---------------------------------------------------------------------------
def run_shared_queue(impl: str, per_client: int = 120) -> Result:
    ports = free_ports(2)
    front, back = ("ROUTER", ports[0]), ("DEALER", ports[1])
    proxy = start_proxy(impl, front, back)
    ctx = zmq.Context()
    res = Result("shared-queue", impl, sent=8 * per_client)
    deliveries = Deliveries()
    replies = [0] * 8
    lost = [0] * 8
    wrong = [0] * 8
    stop = threading.Event()

    def worker() -> None:
        s = ctx.socket(zmq.REP)
        s.connect(ep(ports[1]))
        for _ in until(90, 10_000_000):
            if s.poll(50):
                req = s.recv()
                seq = int(req.split(b":")[1])
                time.sleep(0.3 if seq % 20 == 7 else 0.005)  # the work a request takes
                s.send(req)
            elif stop.is_set():
                break
        s.close(0)

    def client(i: int) -> None:
        s = ctx.socket(zmq.REQ)
        s.connect(ep(ports[0]))
        for seq in range(per_client):
            req = b"%d:%d" % (i, seq)
            s.send(req)
            if s.poll(REPLY_TIMEOUT_MS):
                if s.recv() == req:
                    replies[i] += 1
                    deliveries.mark()
                else:
                    wrong[i] += 1
            else:
                # The reply is not coming: a REQ socket cannot send again, so start over.
                lost[i] += 1
                s.close(0)
                s = ctx.socket(zmq.REQ)
                s.connect(ep(ports[0]))
        s.close(0)

    workers = [threading.Thread(target=worker) for _ in range(3)]
    clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in workers + clients:
        t.start()
    try:
        wait_for(lambda: sum(replies) >= res.sent // 3, 30)
        t0 = time.monotonic()
        proxy = restart(proxy, impl, front, back, res)
        for t in clients:
            t.join(timeout=120)
        stop.set()
        for t in workers:
            t.join(timeout=10)
        res.outage = deliveries.longest_gap(t0, sum(replies) >= res.sent)
    finally:
        stop.set()
        ctx.destroy(linger=0)
    res.received = sum(replies)
    res.lost = sum(lost)
    if sum(wrong):
        res.notes.append(f"{sum(wrong)} replies did not match their request")
    proxy.stop(DRAIN_TIMEOUT + 2)
    res.counters = stopped_counters(proxy, impl)
    proxy.close()
    return res


PATTERNS = {"pipeline": run_pipeline, "forwarder": run_forwarder, "shared-queue": run_shared_queue}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pattern", choices=sorted(PATTERNS), action="append")
    opts = ap.parse_args()
    rows = []
    for name in opts.pattern or list(PATTERNS):
        for impl in ("libzmq", "zmq-proxy"):
            results = [PATTERNS[name](impl) for _ in range(opts.runs)]
            for r in results:
                print(f"{name:12} {impl:9} lost={r.lost} of {r.sent} outage={r.outage:.2f}s "
                      f"resubscribed={r.resubscribed} {' '.join(r.notes)}", file=sys.stderr, flush=True)
            rows.append((name, impl, results))
    print("\n| pattern | proxy | lost per run | longest outage per run (s) |")
    print("|---|---|---|---|")
    for name, impl, results in rows:
        lost = ", ".join(f"{r.lost}/{r.sent}" for r in results)
        outage = ", ".join(f"{r.outage:.2f}" for r in results)
        print(f"| {name} | {impl} | {lost} | {outage} |")


if __name__ == "__main__":
    main()
