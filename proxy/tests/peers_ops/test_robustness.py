"""Robustness under load the operator's pods will see: 200 peers connecting and disconnecting
over and over while requests flow (no crash, every request answered, resident memory back near
where it started), and a consumer that never reads while a producer keeps sending (resident
memory stays under the bound the proxy's queues set, the producer is pushed back, and nothing
is lost once the consumer reads)."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import zmq

from opsutil import MiB, metric, rss_bytes, scrape, wait_metric
from zmqpeers import connect_wait, until

PEERS = 200
ROUNDS = 12
# Rounds that grow the allocator's pools to what PEERS connections need, before the leak check.
WARM_UP = 3


def _echo_worker(ctx: zmq.Context, endpoint: str, stop: threading.Event, ready: threading.Event) -> None:
    """A REP worker answering every request until `stop` (bounded by the test's timeout)."""
    w = ctx.socket(zmq.REP)
    try:
        connect_wait(w, endpoint)
        ready.set()
        for _ in range(10_000_000):
            if stop.is_set():
                return
            if w.poll(50):
                w.send(w.recv() + b"-ok")
    finally:
        w.close(0)


def _steady_client(ctx: zmq.Context, endpoint: str, stop: threading.Event, result: dict) -> None:
    """A long-lived client whose requests flow through the whole churn; records how many were
    answered correctly and the first failure."""
    c = ctx.socket(zmq.REQ)
    c.routing_id = b"steady"
    c.connect(endpoint)
    try:
        for i in range(10_000_000):
            if stop.is_set():
                return
            c.send(b"steady-%d" % i)
            if not c.poll(10_000):
                result["error"] = f"request {i} unanswered for 10 s"
                return
            reply = c.recv()
            if reply != b"steady-%d-ok" % i:
                result["error"] = f"request {i} answered {reply!r}"
                return
            result["answered"] = i + 1
    finally:
        c.close(0)


def _churn_round(ctx: zmq.Context, p, r: int) -> int:
    """PEERS REQ clients connect, each sends a request while the others are still joining,
    every reply is checked, then all of them disconnect. Returns the proxy's RSS while all
    PEERS were connected."""
    clients = []
    for i in range(PEERS):
        c = ctx.socket(zmq.REQ)
        c.linger = 0
        c.connect(p.frontend)
        c.send(b"r%d-c%d" % (r, i))
        clients.append(c)
    poller = zmq.Poller()
    for c in clients:
        poller.register(c, zmq.POLLIN)
    answered = set()
    for _ in until(30.0, 1_000_000):
        if len(answered) == PEERS:
            break
        for sock, _ in poller.poll(100):
            i = clients.index(sock)
            assert sock.recv() == b"r%d-c%d-ok" % (r, i)
            answered.add(i)
            poller.unregister(sock)
    assert len(answered) == PEERS, f"round {r}: {PEERS - len(answered)} requests never answered"
    connected = rss_bytes(p.proc.pid)
    for c in clients:
        c.close(0)
    return connected


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_connection_churn_200_peers_memory_returns(ops_proxy, ctx):
    p = ops_proxy("ROUTER", "DEALER")
    pid = p.proc.pid
    stop, ready = threading.Event(), threading.Event()
    worker = threading.Thread(target=_echo_worker, args=(ctx, p.backend, stop, ready), daemon=True)
    worker.start()
    try:
        assert ready.wait(10), "the worker never connected"
        steady: dict = {"answered": 0}
        steady_t = threading.Thread(target=_steady_client, args=(ctx, p.frontend, stop, steady), daemon=True)
        steady_t.start()
        wait_metric(p.http, "zmq_proxy_connected_peers", 1, socket="frontend")
        start, fds = rss_bytes(pid), _fds(pid)
        peak, after = 0, []
        for r in range(ROUNDS):
            peak = max(peak, _churn_round(ctx, p, r))
            wait_metric(p.http, "zmq_proxy_connected_peers", 1, timeout=15.0, socket="frontend")
            after.append(rss_bytes(pid))
        assert p.running, f"the proxy died under churn\n{p.output()}"
        stop.set()
        steady_t.join(15)
        assert "error" not in steady, steady
        assert steady["answered"] > 0, "the steady client's traffic did not flow during the churn"
        m = scrape(p.http)
        churned = 3 * PEERS * ROUNDS
        steady_frames = metric(m, "zmq_proxy_received_frames_total", socket="frontend") - churned
        assert steady_frames in (3 * steady["answered"], 3 * steady["answered"] + 3), (steady, steady_frames)
        assert metric(m, "zmq_proxy_dropped_frames_total", reason="unroutable") == 0
        print(
            f"churn: RSS start {start / MiB:.1f} MiB, peak with {PEERS} connected {peak / MiB:.1f} MiB, "
            f"after each round {[round(a / MiB, 1) for a in after]} MiB; fds {fds} -> {_fds(pid)}; "
            f"steady client answered {steady['answered']}; "
            f"growth after the warm-up {(after[-1] - after[WARM_UP - 1]) / (PEERS * (ROUNDS - WARM_UP)):.0f} B/connection"
        )
        # Every connection's socket is closed: none is kept by a task that never ended.
        assert _fds(pid) <= fds, f"the proxy holds {_fds(pid)} descriptors, {fds} before the churn"
        # Nothing per connection is kept: a connection's read and write buffers alone are
        # 64 KiB + up to 256 KiB, so keeping them for every connection after the warm-up would
        # be hundreds of MiB. What remains is glibc's fragmentation (it levels off, and does
        # not show under jemalloc), well under 10 KiB per connection.
        per_conn = (after[-1] - after[WARM_UP - 1]) / (PEERS * (ROUNDS - WARM_UP))
        assert per_conn < 10 * 1024, f"RSS grew {per_conn:.0f} B per connection after the warm-up: {after}"
        # Back near the start: the 2400 connections' buffers (hundreds of MiB of capacity)
        # are not kept; what stays is the allocator's pools, a few MiB.
        assert after[-1] - start <= 24 * MiB, (
            f"RSS {after[-1] / MiB:.1f} MiB after the churn vs {start / MiB:.1f} MiB at start"
        )
    finally:
        stop.set()
        worker.join(5)


def _config_const(name: str) -> int:
    """A usize constant of the proxy (`pub const NAME: usize = 64 * 1024;` in proxy/src or in the
    api crate's defaults), so the bound below follows the proxy's own numbers."""
    root = Path(__file__).resolve().parents[3]
    sources = sorted((root / "proxy" / "src").rglob("*.rs")) + sorted((root / "api" / "src").rglob("*.rs"))
    pattern = re.compile(rf"pub(?:\(crate\))? const {name}: usize = ([0-9_ *]+);")
    m = next((m for m in (pattern.search(f.read_text()) for f in sources) if m), None)
    assert m, f"{name} not found in proxy/src or api/src"
    value = 1
    for factor in m.group(1).replace("_", "").split("*"):
        value *= int(factor)
    return value


def test_memory_is_bounded_under_a_stalled_consumer(ops_proxy, ctx):
    """A PUSH consumer that never reads: the proxy holds at most DEFAULT_PEER_HWM messages for
    it, its pump then waits, the frontend's inbound queue (INBOUND_QUEUE_BATCHES batches, each
    one read of at most about two READ_CHUNK_BYTES buffers) fills, and the proxy stops reading
    the producer, whose own send queue then fills: memory is bounded by those queues, not by
    how long the producer keeps trying."""
    size = 16 * 1024
    hwm = _config_const("DEFAULT_PEER_HWM")
    batches = _config_const("INBOUND_QUEUE_BATCHES")
    chunk = _config_const("READ_CHUNK_BYTES")
    write = _config_const("WRITE_BATCH_BYTES")
    bound = hwm * (size + 256) + (batches + 2) * 2 * chunk + 4 * write + 8 * MiB

    p = ops_proxy("PULL", "PUSH")
    pid = p.proc.pid
    consumer = ctx.socket(zmq.PULL)
    consumer.rcvhwm = 1
    consumer.setsockopt(zmq.RCVBUF, 4096)
    connect_wait(consumer, p.backend)
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, p.frontend)
    start = rss_bytes(pid)
    payload = b"s" * size
    sent, peak = 0, start
    # Keep sending until no send has succeeded for 1.5 s (the proxy stopped reading and the
    # producer's own queue is full), sampling the proxy's RSS all along.
    stalled_for, last_progress, last_sample = 0.0, time.monotonic(), 0.0
    for _ in until(20.0, 10_000_000):
        now = time.monotonic()
        try:
            producer.send(payload, zmq.NOBLOCK)
            sent += 1
            last_progress = now
        except zmq.Again:
            time.sleep(0.001)  # the producer is pushed back; try again shortly, as a sender would
        if now - last_sample >= 0.05:
            last_sample = now
            peak = max(peak, rss_bytes(pid))
        stalled_for = now - last_progress
        if stalled_for >= 1.5:
            break
    peak = max(peak, rss_bytes(pid))
    growth = peak - start
    print(
        f"stalled consumer: producer handed over {sent} x {size} B = {sent * size / MiB:.1f} MiB before "
        f"it was pushed back; proxy RSS {start / MiB:.1f} -> peak {peak / MiB:.1f} MiB "
        f"(growth {growth / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB)"
    )
    assert stalled_for >= 1.5, f"the producer was never pushed back ({sent} sent in 20 s): the proxy kept reading"
    assert growth <= bound, f"RSS grew {growth / MiB:.1f} MiB, over the {bound / MiB:.1f} MiB bound"
    m = scrape(p.http)
    assert metric(m, "zmq_proxy_queued_frames", socket="backend") <= hwm
    assert metric(m, "zmq_proxy_dropped_frames_total", reason="peer_full") == 0
    # Nothing was dropped: once the consumer reads, every message arrives.
    got = 0
    for _ in until(30.0, 10_000_000):
        if got == sent or not consumer.poll(2000):
            break
        consumer.recv()
        got += 1
    assert got == sent, f"the consumer got {got} of {sent} once it read"


def test_peer_connections_carry_keepalive_probes(ctx, ops_proxy):
    """Every connection the proxy accepts has TCP keepalive armed (`ss` shows its timer), so
    a peer whose host vanished without a FIN is closed and its subscriptions released instead
    of living on forever."""
    import shutil
    import subprocess

    if shutil.which("ss") is None:
        import pytest

        pytest.skip("ss (iproute2) is not installed: cannot read the proxy's socket timers")
    p = ops_proxy("XSUB", "XPUB")
    sub = ctx.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        connect_wait(sub, p.backend)
        port = int(p.backend.rsplit(":", 1)[1])
        seen = ""
        for _ in until(5.0):
            seen = subprocess.run(
                ["ss", "-tno", "state", "established", f"( sport = :{port} )"],
                capture_output=True, text=True, timeout=5,
            ).stdout
            if "127.0.0.1" in seen:
                break
            time.sleep(0.05)
        timers = re.findall(r"timer:\((\w+),(\d+)sec", seen)
        assert timers, f"no established connection on the backend port:\n{seen}"
        kind, secs = timers[0]
        assert kind == "keepalive" and 0 < int(secs) <= 30, seen
    finally:
        sub.close(0)
