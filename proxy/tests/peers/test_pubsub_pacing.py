"""XSUB/XPUB fan-out pacing: the proxy waits for a full subscriber that is still draining
instead of dropping its copy, but a subscriber that stops reading holds the others up once, for
a bounded time (500 ms), and is then dropped for, counted, until it catches up.

The publisher (sndhwm 0) and the live subscribers (rcvhwm 0) never drop themselves, so whatever
is lost is lost in the proxy, as in the fan-out benchmark."""

from __future__ import annotations

import threading
import time

import zmq

from test_attacks import _started, counter
from zmqpeers import connect_wait, probe_until, until

PEER_FULL = ("zmq_proxy_dropped_frames_total", 'reason="peer_full"')
PAD = b"p" * 512


def _sub(ctx, endpoint: str, rcvhwm: int = 0, rcvbuf: int = -1) -> zmq.Socket:
    s = ctx.socket(zmq.SUB)
    s.rcvhwm = rcvhwm
    if rcvbuf > 0:
        s.rcvbuf = rcvbuf
    s.subscribe(b"")
    connect_wait(s, endpoint)
    return s


def _joined(pub: zmq.Socket, subs: dict[str, zmq.Socket]) -> None:
    """Every subscriber has seen a probe, then the probes still on their way are read away."""
    probe_until(lambda: pub.send(b"probe"), {n: (s, lambda f: f == [b"probe"]) for n, s in subs.items()})
    for s in subs.values():
        for _ in until(2, 100_000):
            if not s.poll(200):
                break
            s.recv()


def _fan_out(ctx, start_proxy):
    """An XSUB/XPUB proxy with /metrics, a publisher, two live subscribers and one that reads
    only when the test says (rcvhwm 1, 4 KiB receive buffer: it fills at once), all joined:
    (proxy, http port, publisher, live subscribers by name, the other one)."""
    proxy, _, _, http = _started(start_proxy, "XSUB", "XPUB")
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0
    connect_wait(pub, proxy.frontend)
    live = {f"live{i}": _sub(ctx, proxy.backend) for i in range(2)}
    other = _sub(ctx, proxy.backend, rcvhwm=1, rcvbuf=4096)
    _joined(pub, {**live, "other": other})
    return proxy, http, pub, live, other


def _publish(pub: zmq.Socket, start: int, n: int, errors: list[str]) -> threading.Thread:
    """Sends data messages start..start+n-1 from a thread (libzmq sockets are not shared: the
    test thread does not use `pub` until this one is joined)."""

    def run() -> None:
        try:
            for seq in range(start, start + n):
                pub.send(b"%08d" % seq + PAD)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    t = threading.Thread(target=run)
    t.start()
    return t


def _read_in_order(subs: dict[str, zmq.Socket], start: int, end: int, timeout: float) -> dict[str, float]:
    """Reads every subscriber until each has messages start..end-1, asserting that none is
    missing or out of order; returns each one's longest gap between two messages, in seconds."""
    poller = zmq.Poller()
    for s in subs.values():
        poller.register(s, zmq.POLLIN)
    nxt = {n: start for n in subs}
    last = {n: time.monotonic() for n in subs}
    gap = {n: 0.0 for n in subs}
    by_sock = {s: n for n, s in subs.items()}
    for _ in until(timeout, 10_000_000):
        if all(v == end for v in nxt.values()):
            return gap
        for sock, _ in poller.poll(100):
            name = by_sock[sock]
            for _ in range(1000):
                try:
                    m = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if m == b"probe":
                    continue
                now = time.monotonic()
                gap[name] = max(gap[name], now - last[name])
                last[name] = now
                assert m[:8] == b"%08d" % nxt[name], f"{name} expected {nxt[name]}, got {m[:8]!r}: lost in the proxy"
                nxt[name] += 1
    raise AssertionError(f"not every message arrived within {timeout}s: next expected {nxt} of {end}")


def test_stalled_subscriber_holds_the_others_up_once_and_its_drops_are_counted(ctx, start_proxy):
    """Two live subscribers and one that stops reading (rcvhwm 1, 4 KiB receive buffer). 20 000
    publications of 520 bytes: the live ones get every one, in order, and the longest pause
    between two of them is about the bound (500 ms), far below what a wait per publication or
    per batch would cost; what the stalled one did not get is counted as peer_full, exactly."""
    proxy, http, pub, live, stalled = _fan_out(ctx, start_proxy)
    before = counter(http, *PEER_FULL)
    n = 20_000
    errors: list[str] = []
    started = time.monotonic()
    sender = _publish(pub, 0, n, errors)
    try:
        gaps = _read_in_order(live, 0, n, timeout=30)
    finally:
        sender.join(30)
    took = time.monotonic() - started
    assert not errors, errors
    print(f"\nstalled subscriber: {n} publications in {took:.2f} s, longest gap {max(gaps.values()) * 1000:.0f} ms")
    assert max(gaps.values()) < 1.5, f"a live subscriber waited {max(gaps.values()):.2f} s for the stalled one"
    assert took < 20, f"{n} publications took {took:.1f} s: the stalled subscriber held the others up again and again"
    # Every publication the stalled one did not get was dropped and counted: what it gets once
    # it reads again (its sndhwm and what the kernels buffered) and the drops add up to n.
    received = 0
    for _ in until(10, 100_000):
        if not stalled.poll(500):
            break
        received += stalled.recv() != b"probe"
    dropped = 0
    for _ in until(5, 1000):
        dropped = counter(http, *PEER_FULL) - before
        if dropped + received >= n:
            break
        time.sleep(0.05)  # poll interval of a condition with a deadline
    print(f"stalled subscriber: {received} delivered, {dropped} dropped")
    assert received < n // 2, f"the stalled subscriber was buffered {received} of {n} publications"
    assert dropped + received == n, f"{received} delivered + {dropped} counted as dropped != {n} published"
    assert proxy.running, proxy.output()


def test_momentarily_slow_subscriber_catches_up_and_the_others_lose_nothing(ctx, start_proxy):
    """Two live subscribers and one that stops reading (rcvhwm 1, 4 KiB receive buffer) while
    10 000 publications go by, then reads again. The live ones lose nothing throughout; once it
    reads again, the slow one catches up: every publication after it drained comes to it too,
    in order, up to the last."""
    proxy, http, pub, live, slow = _fan_out(ctx, start_proxy)
    before = counter(http, *PEER_FULL)
    errors: list[str] = []
    # Phase 1: the slow one does not read.
    sender = _publish(pub, 0, 10_000, errors)
    try:
        _read_in_order(live, 0, 10_000, timeout=30)
    finally:
        sender.join(30)
    assert not errors, errors
    dropped = counter(http, *PEER_FULL) - before
    assert dropped > 0, "the slow subscriber lost nothing while it did not read: was it stalled at all?"
    # It reads again: everything queued to it comes out (in order, with the gap where its
    # copies were dropped), until it has drained.
    seen: list[int] = []
    for _ in until(10, 100_000):
        if not slow.poll(500):
            break
        m = slow.recv()
        if m != b"probe":
            seen.append(int(m[:8]))
    assert seen == sorted(seen), "the slow subscriber got its messages out of order"
    assert len(seen) < 10_000, "the slow subscriber lost nothing: the proxy buffered everything for it?"
    # Phase 2: it keeps up now, so it gets every publication, as the live ones do.
    sender = _publish(pub, 10_000, 5_000, errors)
    try:
        _read_in_order({**live, "slow": slow}, 10_000, 15_000, timeout=30)
    finally:
        sender.join(30)
    assert not errors, errors
    assert proxy.running, proxy.output()
