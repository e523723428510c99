"""A subscription storm through an XSUB/XPUB proxy: 1000 libzmq subscribers connect and
subscribe at once, then unsubscribe (half explicitly) and disconnect at once, while steady
subscribers receive a paced stream. Delivery to the steady subscribers must not stall: the
longest gap between two of their messages stays below STALL_BOUND, and every one of them
still receives after the storm."""

from __future__ import annotations

import resource
import threading
import time

import zmq

from zmqpeers import connect_wait, until

STORM = 1000
STEADY = 4
# The steady stream is one message a millisecond; a gap this long means the proxy stopped
# delivering while it took in the storm (the bound leaves room for a loaded 2-core runner).
STALL_BOUND = 1.0


def _fd_room(n: int) -> None:
    """Raises this process's soft descriptor limit to n if the hard one allows it (1000 SUB
    sockets hold a TCP connection and a mailbox each)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        assert hard >= n, f"the storm needs {n} open files, the hard limit is {hard}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


class Stream:
    """A publisher thread sending b"steady|N" every millisecond (and b"storm" every 20th), and a
    receiver thread recording when each steady subscriber got each message; both bounded."""

    def __init__(self, pub: zmq.Socket, subs: list[zmq.Socket]):
        self.pub, self.subs = pub, subs
        self.arrivals: list[list[float]] = [[] for _ in subs]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._publish), threading.Thread(target=self._receive)]

    def _publish(self) -> None:
        for i in until(120, 200_000):
            if self.stop.is_set():
                return
            self.pub.send(b"steady|%d" % i)
            if i % 20 == 0:
                self.pub.send(b"storm")
            time.sleep(0.001)  # the stream's pace, not a wait for a condition

    def _receive(self) -> None:
        poller = zmq.Poller()
        for s in self.subs:
            poller.register(s, zmq.POLLIN)
        index = {s: i for i, s in enumerate(self.subs)}
        for _ in until(120, 10_000_000):
            if self.stop.is_set():
                return
            for s, _ in poller.poll(50):
                for _ in range(1000):
                    try:
                        s.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.arrivals[index[s]].append(time.monotonic())

    def received_since(self, t: float) -> int:
        """Messages the least served steady subscriber got since t."""
        return min(sum(1 for a in list(arr) if a >= t) for arr in self.arrivals)

    def wait_received_since(self, t: float, n: int, timeout: float) -> bool:
        for _ in until(timeout, 100_000):
            if self.received_since(t) >= n:
                return True
            self.stop.wait(0.02)  # poll interval of a condition with a deadline
        return False

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time any steady subscriber went without a message within [start, end]."""
        worst = 0.0
        for arr in self.arrivals:
            times = [start] + [a for a in list(arr) if start <= a <= end] + [end]
            worst = max(worst, max(b - a for a, b in zip(times, times[1:])))
        return worst


def test_subscription_storm_does_not_stall_steady_subscribers(ctx, proxy_pair):
    _fd_room(4 * STORM)
    proxy = proxy_pair("XSUB", "XPUB")
    pub = ctx.socket(zmq.PUB)
    connect_wait(pub, proxy.frontend)
    steady = []
    for _ in range(STEADY):
        s = ctx.socket(zmq.SUB)
        s.subscribe(b"steady")
        connect_wait(s, proxy.backend)
        steady.append(s)
    stream = Stream(pub, steady)
    # The storm's sockets live in a context of their own, so their handshakes do not queue
    # behind the steady subscribers' I/O in libzmq.
    storm_ctx = zmq.Context()
    storm_ctx.max_sockets = STORM + 100
    storm: list[zmq.Socket] = []
    try:
        for t in stream.threads:
            t.start()
        assert stream.wait_received_since(0.0, 100, 10), "the steady stream never reached every subscriber"

        start = time.monotonic()
        for i in range(STORM):
            s = storm_ctx.socket(zmq.SUB)
            s.linger = 0
            s.subscribe(b"storm")
            s.subscribe(b"x%04d" % i)
            s.connect(proxy.backend)
            storm.append(s)
        # Every storm subscriber is connected and subscribed once it has seen a b"storm".
        waiting = set(storm)
        poller = zmq.Poller()
        for s in storm:
            poller.register(s, zmq.POLLIN)
        for _ in until(60, 100_000):
            if not waiting:
                break
            for s, _ in poller.poll(100):
                if s in waiting:
                    waiting.discard(s)
                    poller.unregister(s)
        assert not waiting, f"{len(waiting)} of {STORM} storm subscribers never got a message"
        subscribed = time.monotonic()

        # Unsubscribe half explicitly, then disconnect all of them at once.
        for i, s in enumerate(storm[: STORM // 2]):
            s.unsubscribe(b"storm")
            s.unsubscribe(b"x%04d" % i)
        for s in storm:
            s.close(linger=0)
        storm.clear()
        ended = time.monotonic()

        assert stream.wait_received_since(ended, 500, 20), (
            f"delivery to the steady subscribers did not resume after the storm: "
            f"{stream.received_since(ended)} messages since"
        )
        finish = time.monotonic()
    finally:
        stream.stop.set()
        for t in stream.threads:
            if t.is_alive():
                t.join(10)
        for s in storm:
            s.close(linger=0)
        storm_ctx.destroy(linger=0)

    gap_in = stream.longest_gap(start, subscribed)
    gap_out = stream.longest_gap(subscribed, finish)
    print(
        f"storm of {STORM}: subscribed in {subscribed - start:.2f}s, left in {ended - subscribed:.2f}s; "
        f"longest steady gap {gap_in * 1000:.0f} ms while subscribing, {gap_out * 1000:.0f} ms while leaving"
    )
    assert gap_in < STALL_BOUND, f"steady delivery stalled {gap_in:.2f}s while {STORM} subscribers subscribed"
    assert gap_out < STALL_BOUND, f"steady delivery stalled {gap_out:.2f}s while {STORM} subscribers left"
    assert proxy.stop() == 0, proxy.output()
