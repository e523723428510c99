"""Network-level attacks, each beside a legitimate ROUTER/DEALER (or XSUB/XPUB) pair whose round
trips must go on: an endless multipart message of empty frames, frame headers claiming 2^63
bytes, 2000 garbage connections, 2000 idle connections, 200 000 tiny requests from a client that
never reads, a subscriber that never reads, 100 000 topics, and many peers each within their own
bound that together pass --max-memory.

Each test reads the proxy's resident size from /proc: during the attack it stays within the
memory budget of docs/proxy.md ("Memory budget") plus a margin for the allocator, and after the
attackers leave it comes back to within RETURN_MIB of where it started. Each also checks the
counter that names the attack. The endless-frames test stops sending as soon as the proxy's
resident size passes its budget, so an unbounded proxy fails it in a second or two instead of
growing to gigabytes.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time

import pytest
import zmq

from test_heartbeat import metrics
from zmqpeers import (
    connect_wait,
    ep,
    free_ports,
    log_message,
    probe_until,
    raw_connect,
    recv_exact,
    rss_bytes,
    rst_close,
    until,
    zmtp_greeting,
    zmtp_ready,
)

MIB = 1 << 20
# Accounting per frame of a message being assembled (docs/proxy.md), and the default bound on
# frames per message: an endless message of empty frames is cut at FRAME_OVERHEAD * MAX_FRAMES.
FRAME_OVERHEAD = 64
MAX_FRAMES = 65536
# What the allocator may hold above the accounted bytes while an attack runs (arenas, the
# read buffers of the attacking connections, the vector of frames doubling as it grows).
ALLOCATOR_MARGIN = 24 * MIB
# "Within a few MiB of where it started" once the attackers are gone.
RETURN_MIB = 4
# Whoever lets the attacker past this is unbounded: stop sending and fail.
ENDLESS_ABORT = FRAME_OVERHEAD * MAX_FRAMES + ALLOCATOR_MARGIN + 64 * MIB


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def counter(http: int, name: str, labels: str = "") -> int:
    """The sum of every series of `name` whose labels contain `labels` (e.g. `reason="x"`)."""
    total = 0
    for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\d+)", metrics(http), re.M):
        if labels in (m[1] or ""):
            total += int(m[2])
    return total


def settle_rss(pid: int, target: int, timeout: float = 8.0) -> int:
    """The proxy's resident size once it is at most `target`, or what it is at the deadline."""
    rss = rss_bytes(pid)
    for _ in until(timeout, 10_000):
        rss = rss_bytes(pid)
        if rss <= target:
            break
        time.sleep(0.1)  # poll interval of a condition with a deadline
    return rss


def report(name: str, start: int, peak: int, after: int) -> None:
    """The figures of one attack, for `pytest -s` (docs/operations.md quotes them)."""
    print(f"\n{name}: resident {start / MIB:.1f} MiB before, {peak / MIB:.1f} MiB at most during, {after / MIB:.1f} MiB after")


def _started(start_proxy, front: str, back: str, *extra: str):
    """A proxy of `front`/`back` on fresh ports with /metrics: (proxy, frontend, backend, http
    port), the proxy's .frontend/.backend/.http set too."""
    ports = free_ports(3)
    proxy = start_proxy(
        [
            "--frontend-type", front, "--frontend-bind", ep(ports[0]),
            "--backend-type", back, "--backend-bind", ep(ports[1]),
            "--http-bind", f"127.0.0.1:{ports[2]}", "--log-format", "json",
            *extra,
        ]
    )  # fmt: skip
    proxy.frontend, proxy.backend, proxy.http = ep(ports[0]), ep(ports[1]), ports[2]
    return proxy, ports[0], ports[1], ports[2]


@pytest.fixture
def shared_queue(ctx, start_proxy):
    """A ROUTER/DEALER proxy with /metrics, a DEALER worker and a REQ client that have made
    their first round trip (so the proxy's start-up allocations are behind it)."""
    proxy = _started(start_proxy, "ROUTER", "DEALER")[0]
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, proxy.backend)
    client = ctx.socket(zmq.REQ)
    connect_wait(client, proxy.frontend)

    def round_trip(tag: bytes) -> None:
        client.send(tag)
        assert worker.poll(5000), f"request {tag!r} never reached the worker; proxy running: {proxy.running}"
        frames = worker.recv_multipart()
        assert frames[1:] == [b"", tag], frames
        worker.send_multipart(frames[:-1] + [tag + b"!"])
        assert client.poll(5000), f"no reply to {tag!r}"
        assert client.recv() == tag + b"!"

    for i in range(50):
        round_trip(b"warm-%d" % i)
    proxy.round_trip = round_trip
    return proxy


def _handshake(port: int, socket_type: bytes = b"DEALER") -> socket.socket:
    s = raw_connect(port)
    s.sendall(zmtp_greeting() + zmtp_ready(socket_type))
    assert len(recv_exact(s, 64)) == 64
    head = recv_exact(s, 2)
    assert head[:1] == b"\x04", head
    recv_exact(s, head[1])
    return s


def test_endless_message_of_empty_frames_is_cut_at_the_frame_bound(shared_queue):
    """After a valid greeting and READY, a raw DEALER sends one multipart message that never
    ends: `\\x01\\x00` (an empty frame with MORE) repeated, up to 200 MB. The proxy disconnects
    it once the message passes maxFrames (65536 frames, 4 MiB of accounting) and counts it in
    zmq_proxy_dropped_frames_total{reason="over_budget"}; the legitimate pair's round trips go
    on; the proxy's resident size never passes its start + budget + margin and comes back to
    within a few MiB of its start."""
    proxy = shared_queue
    pid, http = proxy.proc.pid, proxy.http
    before = counter(http, "zmq_proxy_dropped_frames_total", 'reason="over_budget"')
    start = rss_bytes(pid)
    chunk = b"\x01\x00" * (MIB // 2)
    s = _handshake(_port(proxy.frontend))
    s.settimeout(5)
    sent, peak, cut = 0, start, None
    try:
        for i in range(200):
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
                cut = e
                break
            sent += len(chunk)
            peak = max(peak, rss_bytes(pid))
            assert peak - start <= ENDLESS_ABORT, (
                f"the proxy grew by {(peak - start) >> 20} MiB after {sent >> 20} MB of empty frames "
                f"(budget {FRAME_OVERHEAD * MAX_FRAMES >> 20} MiB + margin): unbounded"
            )
            if i % 20 == 0:
                proxy.round_trip(b"during-%d" % i)
    finally:
        rst_close(s)
    assert cut is not None, f"the proxy took all {sent >> 20} MB of one endless message without closing it"
    proxy.round_trip(b"after-endless")
    grown = peak - start
    assert grown <= FRAME_OVERHEAD * MAX_FRAMES + ALLOCATOR_MARGIN, f"peak {grown >> 20} MiB above start"
    assert counter(http, "zmq_proxy_dropped_frames_total", 'reason="over_budget"') > before
    after = settle_rss(pid, start + RETURN_MIB * MIB)
    report("endless-frames", start, peak, after)
    assert after <= start + RETURN_MIB * MIB, (
        f"resident size {after / MIB:.1f} MiB after the attack, {start / MIB:.1f} MiB before it"
    )
    assert proxy.running, proxy.output()


def test_frames_claiming_two_to_the_63_bytes_are_refused(shared_queue):
    """200 raw DEALERs, each after a valid handshake announcing a frame of 2^63 bytes (and a
    few bytes of it): each is disconnected as a protocol error (zmq_proxy_protocol_errors_total),
    nothing is allocated for them, the pair's round trips go on."""
    proxy = shared_queue
    pid, http = proxy.proc.pid, proxy.http
    before = counter(http, "zmq_proxy_protocol_errors_total")
    start = rss_bytes(pid)
    peak = start
    for i in range(200):
        s = _handshake(_port(proxy.frontend))
        try:
            s.sendall(b"\x02" + struct.pack(">Q", 1 << 63) + b"x" * 1000)
        except OSError:
            pass  # refused and reset at once: also fine
        rst_close(s)
        peak = max(peak, rss_bytes(pid))
        if i % 50 == 0:
            proxy.round_trip(b"during-%d" % i)
    proxy.round_trip(b"after-huge")
    assert peak - start <= ALLOCATOR_MARGIN, f"grew by {(peak - start) >> 20} MiB"
    for _ in until(5, 1000):
        if counter(http, "zmq_proxy_protocol_errors_total") - before >= 200:
            break
        time.sleep(0.05)  # poll interval of a condition with a deadline
    assert counter(http, "zmq_proxy_protocol_errors_total") - before >= 200
    after = settle_rss(pid, start + RETURN_MIB * MIB)
    report("huge-frames", start, peak, after)
    assert after <= start + RETURN_MIB * MIB, f"{after / MIB:.1f} MiB after, {start / MIB:.1f} MiB before"


def _many(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def _fd_room(n: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        if hard < n + 200:
            pytest.skip(f"needs {n + 200} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 200, hard))


def test_two_thousand_garbage_connections(shared_queue):
    """2000 connections that each send 64 bytes of HTTP instead of a ZMTP greeting: every one is
    refused (zmq_proxy_handshake_failures_total{reason="bad_greeting"}), the pair's round trips go
    on, and the resident size comes back."""
    _fd_room(2000)
    proxy = shared_queue
    pid, http = proxy.proc.pid, proxy.http
    before = counter(http, "zmq_proxy_handshake_failures_total", 'reason="bad_greeting"')
    start = rss_bytes(pid)
    peak = start
    port = _port(proxy.frontend)
    for batch in range(10):
        socks = _many(port, 200)
        for s in socks:
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: zmq-proxy\r\n\r\n".ljust(64, b"x"))
            except OSError:
                pass
        peak = max(peak, rss_bytes(pid))
        proxy.round_trip(b"garbage-%d" % batch)
        # Reset only once the proxy has read and refused the batch: a reset that wins the race
        # with its first read is a peer gone before greeting, not garbage.
        for _ in until(10, 1000):
            if counter(http, "zmq_proxy_handshake_failures_total", 'reason="bad_greeting"') - before >= 200 * (batch + 1):
                break
            time.sleep(0.05)  # poll interval of a condition with a deadline
        for s in socks:
            rst_close(s)
    for _ in until(10, 1000):
        if counter(http, "zmq_proxy_handshake_failures_total", 'reason="bad_greeting"') - before >= 2000:
            break
        time.sleep(0.05)  # poll interval of a condition with a deadline
    refused = counter(http, "zmq_proxy_handshake_failures_total", 'reason="bad_greeting"') - before
    assert refused >= 2000, f"{refused} of 2000 garbage connections counted as bad_greeting"
    proxy.round_trip(b"after-garbage")
    assert peak - start <= ALLOCATOR_MARGIN, f"grew by {(peak - start) >> 20} MiB"
    after = settle_rss(pid, start + RETURN_MIB * MIB)
    report("garbage-2000", start, peak, after)
    assert after <= start + RETURN_MIB * MIB, f"{after / MIB:.1f} MiB after, {start / MIB:.1f} MiB before"


def test_two_thousand_idle_connections_cost_little_and_give_it_back(shared_queue):
    """2000 connections that send nothing, held for a moment while the pair's round trips go on,
    then reset: while they are open the proxy holds at most a few KiB for each (the read buffer
    of a connection that has sent nothing is not touched), each reset one is counted as closed
    before its greeting (zmq_proxy_closed_before_greeting_total{socket="frontend"}), and the
    resident size comes back to within a few MiB of its start."""
    _fd_room(2000)
    proxy = shared_queue
    pid, http = proxy.proc.pid, proxy.http
    before = counter(http, "zmq_proxy_closed_before_greeting_total", 'socket="frontend"')
    start = rss_bytes(pid)
    peak = start
    socks = _many(_port(proxy.frontend), 2000)
    try:
        for i in range(20):
            proxy.round_trip(b"idle-%d" % i)
        peak = rss_bytes(pid)
        held = peak - start
        assert held <= ALLOCATOR_MARGIN, f"2000 idle connections hold {held >> 20} MiB"
    finally:
        for s in socks:
            rst_close(s)
    for _ in until(10, 1000):
        if counter(http, "zmq_proxy_closed_before_greeting_total", 'socket="frontend"') - before >= 2000:
            break
        time.sleep(0.05)  # poll interval of a condition with a deadline
    proxy.round_trip(b"after-idle")
    after = settle_rss(pid, start + RETURN_MIB * MIB)
    report("idle-2000", start, peak, after)
    assert after <= start + RETURN_MIB * MIB, f"{after / MIB:.1f} MiB after, {start / MIB:.1f} MiB before"
    closed = counter(http, "zmq_proxy_closed_before_greeting_total", 'socket="frontend"') - before
    assert closed >= 2000, f"{closed} of 2000 idle connections counted when they closed"


def test_stalled_subscriber_costs_its_high_water_mark_and_no_more(ctx, start_proxy):
    """XSUB/XPUB: a raw subscriber subscribes to everything and never reads; 40 MB of 4 KiB
    publications go by. What waits for it is bounded by sndhwm (1000 messages, about 4 MiB),
    the rest is dropped and counted (zmq_proxy_dropped_frames_total{reason="peer_full"}), a
    live subscriber gets every message, and once the stalled one is gone the resident size comes
    back."""
    proxy, *ports = _started(start_proxy, "XSUB", "XPUB")
    http = ports[2]
    pid = proxy.proc.pid
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0
    connect_wait(pub, ep(ports[0]))
    live = ctx.socket(zmq.SUB)
    live.subscribe(b"")
    connect_wait(live, ep(ports[1]))
    probe_until(lambda: pub.send(b"probe"), {"live": (live, lambda f: f == [b"probe"])})
    for _ in until(2, 100_000):
        if not live.poll(100):
            break
        live.recv()
    start = rss_bytes(pid)
    before = counter(http, "zmq_proxy_dropped_frames_total", 'reason="peer_full"')
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(3)
    stalled.connect(("127.0.0.1", ports[1]))
    stalled.sendall(zmtp_greeting() + zmtp_ready(b"SUB"))
    assert len(recv_exact(stalled, 64)) == 64
    stalled.sendall(b"\x04\x0a\x09SUBSCRIBE")  # everything, in the ZMTP 3.1 command form
    probe_until(lambda: pub.send(b"probe"), {"live": (live, lambda f: f == [b"probe"])})
    time.sleep(0.2)  # lets the subscription reach the proxy's table before the flood (no signal)
    pad = os.urandom(4096)
    peak = start
    seq = 0
    try:
        for batch in range(50):
            first = seq
            for _ in range(200):
                pub.send(b"%08d" % seq + pad)
                seq += 1
            got = first
            for _ in until(5, 10_000):
                if got == seq or not live.poll(5000):
                    break
                m = live.recv()
                if m == b"probe":
                    continue
                assert m[:8] == b"%08d" % got, f"live subscriber expected {got}, got {m[:8]!r}"
                got += 1
            assert got == seq, f"batch {batch}: live subscriber stuck at {got - first} of 200"
            peak = max(peak, rss_bytes(pid))
        assert peak - start <= 1000 * 4200 + ALLOCATOR_MARGIN, f"grew by {(peak - start) >> 20} MiB"
        for _ in until(5, 1000):
            if counter(http, "zmq_proxy_dropped_frames_total", 'reason="peer_full"') > before:
                break
            time.sleep(0.05)  # poll interval of a condition with a deadline
        assert counter(http, "zmq_proxy_dropped_frames_total", 'reason="peer_full"') > before
    finally:
        rst_close(stalled)
    after = settle_rss(pid, start + RETURN_MIB * MIB)
    report("stalled-subscriber", start, peak, after)
    assert after <= start + RETURN_MIB * MIB, f"{after / MIB:.1f} MiB after, {start / MIB:.1f} MiB before"
    assert proxy.running, proxy.output()


def _echo_worker(ctx, endpoint: str, stop: threading.Event) -> threading.Thread:
    """A DEALER worker in its own thread that answers every request with its own frames until
    `stop` is set (bounded by a deadline too)."""
    w = ctx.socket(zmq.DEALER)
    connect_wait(w, endpoint)

    def run() -> None:
        try:
            for _ in until(120, 10_000_000):
                if stop.is_set():
                    break
                if w.poll(50):
                    w.send_multipart(w.recv_multipart())
        finally:
            w.close(linger=0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_two_hundred_thousand_tiny_requests_from_a_client_that_never_reads(ctx, start_proxy):
    """ROUTER/DEALER with two echo workers: a DEALER client sends 200 000 one-byte requests as
    fast as it can and never reads a reply (the kernel's default receive buffer: one shrunk to a
    few KiB fills with the truesize of five-byte segments before its window closes, and Linux
    6.17+ then drops, as beyond the window, every segment of the proxy's that would acknowledge
    the client's data, so the client's own sends stall in its kernel). Every request is counted
    in zmq_proxy_received_messages_total and forwarded (zmq_proxy_sent_messages_total of the
    backend); what waits for the flooder is bounded by its high-water mark (the replies of
    one-byte requests also fit the kernel's buffers); a REQ client's round trips go on
    meanwhile; the resident size stays within the margin and comes back."""
    proxy, *ports = _started(start_proxy, "ROUTER", "DEALER")
    http = ports[2]
    pid = proxy.proc.pid
    stop = threading.Event()
    workers = [_echo_worker(ctx, ep(ports[1]), stop) for _ in range(2)]
    client = ctx.socket(zmq.REQ)
    connect_wait(client, ep(ports[0]))

    def round_trip(tag: bytes) -> None:
        client.send(tag)
        assert client.poll(10_000), f"no reply to {tag!r}; proxy running: {proxy.running}"
        assert client.recv() == tag

    try:
        for i in range(50):
            round_trip(b"warm-%d" % i)
        start = rss_bytes(pid)
        received = counter(http, "zmq_proxy_received_messages_total", 'socket="frontend"')
        sent = counter(http, "zmq_proxy_sent_messages_total", 'socket="backend"')
        flood = ctx.socket(zmq.DEALER)
        flood.sndhwm = 0
        connect_wait(flood, ep(ports[0]))
        peak = start
        for batch in range(20):
            for _ in range(10_000):
                flood.send_multipart([b"", b"x"])
            round_trip(b"during-%d" % batch)
            peak = max(peak, rss_bytes(pid))
        for _ in until(60, 100_000):
            got = counter(http, "zmq_proxy_received_messages_total", 'socket="frontend"') - received
            if got >= 200_000 + 20:
                break
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.1)  # poll interval of a condition with a deadline
        got = counter(http, "zmq_proxy_received_messages_total", 'socket="frontend"') - received
        assert got >= 200_000 + 20, f"{got} of 200 020 requests counted as received"
        forwarded = counter(http, "zmq_proxy_sent_messages_total", 'socket="backend"') - sent
        assert forwarded >= 200_000 + 20, f"{forwarded} of 200 020 requests forwarded to the workers"
        round_trip(b"after-tiny")
        # Per peer: sndhwm replies queued to the flooder, rcvhwm requests read ahead, each
        # a few hundred bytes of bookkeeping at most.
        assert peak - start <= ALLOCATOR_MARGIN, f"grew by {(peak - start) >> 20} MiB"
        flood.close(linger=0)
        after = settle_rss(pid, start + RETURN_MIB * MIB)
        report("tiny-200k", start, peak, after)
        assert after <= start + RETURN_MIB * MIB, f"{after / MIB:.1f} MiB after, {start / MIB:.1f} MiB before"
        assert proxy.running, proxy.output()
    finally:
        stop.set()
        for t in workers:
            t.join(5)


def test_hundred_thousand_topics_from_one_subscriber(ctx, start_proxy):
    """XSUB/XPUB: a raw subscriber subscribes to 100 000 distinct topics of 16 bytes. Each is
    forwarded to the publisher (counted in zmq_proxy_sent_messages_total{socket="frontend"}),
    a live subscriber keeps getting its messages, the resident size stays within a few times
    the topics' bytes plus the margin, and once the subscriber leaves its topics are released
    and the resident size comes back."""
    proxy, *ports = _started(start_proxy, "XSUB", "XPUB")
    http = ports[2]
    pid = proxy.proc.pid
    pub = ctx.socket(zmq.XPUB)
    pub.sndhwm = 0
    connect_wait(pub, ep(ports[0]))
    live = ctx.socket(zmq.SUB)
    live.subscribe(b"live")
    connect_wait(live, ep(ports[1]))
    probe_until(lambda: pub.send(b"live-probe"), {"live": (live, lambda f: f == [b"live-probe"])})
    for _ in until(2, 100_000):
        if not live.poll(100):
            break
        live.recv()
    for _ in until(2, 100_000):  # the live subscription as the publisher saw it
        if not pub.poll(100):
            break
        pub.recv()
    start = rss_bytes(pid)
    sent = counter(http, "zmq_proxy_sent_messages_total", 'socket="frontend"')
    s = raw_connect(ports[1])
    s.sendall(zmtp_greeting() + zmtp_ready(b"SUB"))
    assert len(recv_exact(s, 64)) == 64
    n, peak, seen = 100_000, start, 0
    try:
        for batch in range(10):
            topics = [b"topic-%010d" % (batch * 10_000 + i) for i in range(10_000)]
            s.sendall(b"".join(b"\x00" + bytes([1 + len(t)]) + b"\x01" + t for t in topics))
            pub.send(b"live-%d" % batch)
            assert live.poll(10_000), f"live subscriber got nothing during batch {batch}"
            assert live.recv() == b"live-%d" % batch
            peak = max(peak, rss_bytes(pid))
            while pub.poll(0):  # the publisher takes the forwarded subscriptions as they come
                pub.recv()
                seen += 1
        for _ in until(60, 1_000_000):
            if seen >= n:
                break
            if pub.poll(200):
                pub.recv()
                seen += 1
        peak = max(peak, rss_bytes(pid))
        assert seen >= n, f"the publisher saw {seen} of {n} subscriptions"
        forwarded = counter(http, "zmq_proxy_sent_messages_total", 'socket="frontend"') - sent
        assert forwarded >= n, f"{forwarded} subscriptions counted as sent to the publisher"
        # The subscriber's own table (a handle per topic) and the upstream set, a few hundred
        # bytes per topic at most.
        assert peak - start <= n * 512 + ALLOCATOR_MARGIN, f"grew by {(peak - start) >> 20} MiB"
    finally:
        rst_close(s)
    pub.send(b"live-after")
    assert live.poll(10_000) and live.recv() == b"live-after"
    after = settle_rss(pid, start + RETURN_MIB * MIB)
    report("topics-100k", start, peak, after)
    assert after <= start + RETURN_MIB * MIB, f"{after / MIB:.1f} MiB after, {start / MIB:.1f} MiB before"
    assert proxy.running, proxy.output()


def _closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """Whether the proxy closed (FIN or RST) this raw connection within `timeout`; whatever it
    sent before is read and ignored."""
    s.settimeout(0.1)
    for _ in until(timeout, 100_000):
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_many_peers_each_within_their_bound_together_past_max_memory(start_proxy, ctx):
    """--max-memory 8 MiB, a ROUTER/DEALER pair doing round trips. One raw DEALER sends a 5 MiB
    frame with MORE (an unfinished message, far below maxMsgSize), then six more send 1 MiB
    each: together 11 MiB, past the budget, though each is within its own bound. The heaviest
    (the 5 MiB one, not the one that crossed the line) is disconnected, its frame counted in
    zmq_proxy_dropped_frames_total{reason="over_budget"} and logged once; the six light ones stay
    connected; the pair's round trips go on; the resident size stays within the budget plus the
    margin and comes back once they leave."""
    budget = 8 * MIB
    proxy, *ports = _started(start_proxy, "ROUTER", "DEALER", "--max-memory", str(budget))
    http = ports[2]
    pid = proxy.proc.pid
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, ep(ports[1]))
    client = ctx.socket(zmq.REQ)
    connect_wait(client, ep(ports[0]))

    def round_trip(tag: bytes) -> None:
        client.send(tag)
        assert worker.poll(5000), f"request {tag!r} never reached the worker; proxy running: {proxy.running}"
        frames = worker.recv_multipart()
        worker.send_multipart(frames)
        assert client.poll(5000), f"no reply to {tag!r}"
        assert client.recv() == tag

    for i in range(50):
        round_trip(b"warm-%d" % i)
    start = rss_bytes(pid)
    before = counter(http, "zmq_proxy_dropped_frames_total", 'reason="over_budget"')

    def unfinished(size: int) -> socket.socket:
        s = _handshake(ports[0])
        s.sendall(b"\x03" + struct.pack(">Q", size) + b"\x00" * size)  # MORE | LONG
        return s

    heavy = unfinished(5 * MIB)
    for _ in until(10, 1000):  # the proxy holds the heavy frame before the light ones come
        if rss_bytes(pid) - start >= 4 * MIB:
            break
        time.sleep(0.02)  # poll interval of a condition with a deadline
    light: list[socket.socket] = []
    peak = start
    try:
        for i in range(6):
            light.append(unfinished(MIB))
            round_trip(b"during-%d" % i)
            peak = max(peak, rss_bytes(pid))
        assert _closed_by_peer(heavy, 5), "the heaviest peer was not disconnected"
        for _ in until(5, 1000):
            if counter(http, "zmq_proxy_dropped_frames_total", 'reason="over_budget"') > before:
                break
            time.sleep(0.05)  # poll interval of a condition with a deadline
        assert counter(http, "zmq_proxy_dropped_frames_total", 'reason="over_budget"') - before == 1
        for i, s in enumerate(light):
            assert not _closed_by_peer(s, 0.2), f"light peer {i} (1 MiB, within the budget) was disconnected"
        round_trip(b"after-budget")
        peak = max(peak, rss_bytes(pid))
        assert peak - start <= budget + ALLOCATOR_MARGIN, f"grew by {(peak - start) >> 20} MiB"
        lines = [e for e in proxy.events() if "over its memory budget" in (log_message(e) or "")]
        assert len(lines) == 1, lines
        assert "--max-memory 8388608" in str(lines[0]), lines[0]
    finally:
        rst_close(heavy)
        for s in light:
            rst_close(s)
    after = settle_rss(pid, start + RETURN_MIB * MIB)
    report("max-memory", start, peak, after)
    assert after <= start + RETURN_MIB * MIB, f"{after / MIB:.1f} MiB after, {start / MIB:.1f} MiB before"
    assert proxy.running, proxy.output()
