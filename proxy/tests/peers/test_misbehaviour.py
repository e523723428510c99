"""Peers that misbehave: vanishing clients, raw TCP peers that reset mid-handshake or mid-frame,
a frame header claiming an absurd size, a subscriber that never reads, a worker that dies.
Each is followed by normal traffic proving the proxy still serves."""

from __future__ import annotations

import socket
import struct
import threading

import zmq

from zmqpeers import (
    accepted_inode,
    connect_tracked,
    connect_wait,
    probe_until,
    raw_connect,
    recv_exact,
    recv_until_quiet,
    rss_bytes,
    rst_close,
    until,
    wait_socket_closed,
    zmtp_greeting,
    zmtp_ready,
)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def round_trip(ctx: zmq.Context, proxy, worker: zmq.Socket, tag: bytes) -> None:
    """A fresh REQ client's request reaches the DEALER worker as exactly [id, b"", tag] (nothing
    else arrives first) and the reply comes back to that client."""
    client = ctx.socket(zmq.REQ)
    try:
        connect_wait(client, proxy.frontend)
        client.send(tag)
        assert worker.poll(5000), f"request {tag!r} never reached the worker; proxy running: {proxy.running}"
        frames = worker.recv_multipart()
        assert frames[1:] == [b"", tag], f"worker expected {tag!r}, got {frames!r}"
        worker.send_multipart([frames[0], b"", tag + b"-reply"])
        assert client.poll(5000), f"no reply to {tag!r}"
        assert client.recv() == tag + b"-reply"
    finally:
        client.close(linger=0)


def _shared_queue_with_worker(ctx, proxy_pair):
    proxy = proxy_pair("ROUTER", "DEALER")
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, proxy.backend)
    round_trip(ctx, proxy, worker, b"warm-up")
    return proxy, worker


def test_reply_to_vanished_req_client_is_dropped_and_counted(ctx, proxy_pair):
    """Three REQ clients each send a request and close (linger 0) before the reply. After the
    proxy closed each client's connection (its fd count drops back), the worker replies: the
    reply goes nowhere, the proxy keeps serving, and "proxy stopped" reports dropped_msgs >= 1
    with every frame read from the backend either sent to the frontend or dropped."""
    proxy, worker = _shared_queue_with_worker(ctx, proxy_pair)
    pid = proxy.proc.pid
    for k in range(3):
        client = ctx.socket(zmq.REQ)
        inode = connect_tracked(client, proxy.frontend, pid)
        client.send(b"vanish%d" % k)
        assert worker.poll(5000), "request of the vanishing client never reached the worker"
        frames = worker.recv_multipart()
        assert frames[1:] == [b"", b"vanish%d" % k], frames
        client.close(linger=0)
        assert wait_socket_closed(pid, inode), "the proxy never closed the connection of a client that went away"
        worker.send_multipart([frames[0], b"", b"late-reply%d" % k])
        round_trip(ctx, proxy, worker, b"after-vanish%d" % k)
    assert proxy.running, proxy.output()
    assert proxy.stop() == 0, proxy.output()
    c = proxy.stopped_counters()
    assert c["dropped_msgs"] >= 1, f"replies to vanished clients were not counted as dropped: {c}"
    assert c["backend_recv_msgs"] == c["frontend_sent_msgs"] + c["dropped_msgs"] + c["undelivered_msgs"], (
        f"backend frames received != frontend frames sent + dropped + undelivered: {c}"
    )


def _handshake_as(port: int, socket_type: bytes) -> socket.socket:
    """A raw TCP peer that completes the ZMTP 3 NULL handshake as `socket_type`, after checking
    the proxy greets with a ZMTP 3.x greeting."""
    s = raw_connect(port)
    s.sendall(zmtp_greeting() + zmtp_ready(socket_type))
    greeting = recv_exact(s, 64)
    assert len(greeting) == 64, f"proxy sent {len(greeting)} greeting bytes: {greeting!r}"
    assert greeting[0] == 0xFF and greeting[9] == 0x7F and greeting[10] >= 3, f"not a ZMTP 3 greeting: {greeting!r}"
    assert greeting[12:16] == b"NULL", f"greeting mechanism {greeting[12:32]!r}"
    return s


def test_raw_peer_reset_mid_frame_after_handshake(ctx, proxy_pair):
    """A raw TCP peer completes the handshake (as DEALER on the ROUTER side, as REP on the DEALER
    side), sends one complete frame flagged MORE and half of the next, then resets (RST). The proxy
    drops that connection (fd closed), forwards no part of the unfinished message, and still serves."""
    proxy, worker = _shared_queue_with_worker(ctx, proxy_pair)
    pid = proxy.proc.pid
    for side, port, stype in (
        ("frontend", _port(proxy.frontend), b"DEALER"),
        ("backend", _port(proxy.backend), b"REP"),
    ):
        for k in range(3):
            s = _handshake_as(port, stype)
            inode = accepted_inode(pid, port, s.getsockname()[1])
            assert inode is not None, "the proxy did not accept the raw peer"
            s.sendall(b"\x01\x05part1" + b"\x00\x64" + b"h" * 50)
            rst_close(s)
            assert wait_socket_closed(pid, inode), f"{side}: the proxy kept the reset connection open"
            round_trip(ctx, proxy, worker, b"after-rst-%s-%d" % (side.encode(), k))
    assert recv_until_quiet(worker, quiet=0.2) == [], "a partial message leaked to the worker"
    assert proxy.running, proxy.output()


def test_raw_peer_partial_greeting_then_reset_on_every_port(ctx, proxy_pair):
    """Raw TCP peers that connect and reset with nothing sent, after part of the signature, after
    the full greeting, or after a greeting with an unknown mechanism: the proxy drops each
    connection and still serves."""
    proxy, worker = _shared_queue_with_worker(ctx, proxy_pair)
    pid = proxy.proc.pid
    g = zmtp_greeting()
    payloads = [b"", b"\xff\x00\x00", g[:11], g[:40], g, zmtp_greeting(mechanism=b"CURVE")]
    for port in (_port(proxy.frontend), _port(proxy.backend)):
        for i, data in enumerate(payloads):
            s = raw_connect(port)
            inode = accepted_inode(pid, port, s.getsockname()[1])
            assert inode is not None, "the proxy did not accept the raw peer"
            if data:
                s.sendall(data)
            rst_close(s)
            assert wait_socket_closed(pid, inode), f"port {port}: connection kept after reset (payload {i})"
        round_trip(ctx, proxy, worker, b"after-partial-%d" % port)
    assert proxy.running, proxy.output()


def test_frame_header_claiming_huge_size_does_not_hurt_the_proxy(ctx, proxy_pair):
    """After a valid handshake a raw peer announces a 2**62-byte frame and sends a few bytes of
    it. The proxy must not try to allocate it: it keeps serving others while that peer is
    connected, stays under 512 MiB resident, and survives the peer's reset."""
    proxy, worker = _shared_queue_with_worker(ctx, proxy_pair)
    pid = proxy.proc.pid
    s = _handshake_as(_port(proxy.frontend), b"DEALER")
    try:
        s.sendall(b"\x02" + struct.pack(">Q", 1 << 62) + b"x" * 1000)
    except OSError:
        pass  # the proxy may refuse and reset the connection at once: also fine
    round_trip(ctx, proxy, worker, b"during-huge")
    assert proxy.running, proxy.output()
    assert rss_bytes(pid) < 512 << 20, f"proxy resident size {rss_bytes(pid) >> 20} MiB after a huge frame header"
    rst_close(s)
    round_trip(ctx, proxy, worker, b"after-huge")
    assert proxy.running, proxy.output()


def test_stalled_subscriber_does_not_stop_another_from_receiving(ctx, proxy_pair):
    """XSUB/XPUB with two b"" subscribers; one has RCVHWM 10 and a 4 KiB receive buffer and never
    reads. 20 000 messages of 4 KiB (80 MB, far beyond what the stalled path can buffer) are
    published in batches of 200; the healthy subscriber gets every message, in order, each batch
    within 5 s."""
    proxy = proxy_pair("XSUB", "XPUB")
    pub = ctx.socket(zmq.PUB)
    connect_wait(pub, proxy.frontend)
    healthy = ctx.socket(zmq.SUB)
    healthy.subscribe(b"")
    connect_wait(healthy, proxy.backend)
    stalled = ctx.socket(zmq.SUB)
    stalled.rcvhwm = 10
    stalled.rcvbuf = 4096
    stalled.subscribe(b"")
    connect_wait(stalled, proxy.backend)
    probe_until(
        lambda: pub.send(b"probe"),
        {"healthy": (healthy, lambda f: f == [b"probe"]), "stalled": (stalled, lambda f: f == [b"probe"])},
    )
    pad = b"s" * 4096
    seq = 0
    for batch in range(100):
        first = seq
        for _ in range(200):
            pub.send(b"%08d" % seq + pad)
            seq += 1
        got = first
        for _ in until(5, 10_000):
            if got == seq or not healthy.poll(5000):
                break
            m = healthy.recv()
            if m == b"probe":
                continue
            assert m[:8] == b"%08d" % got, f"healthy subscriber expected {got}, got {m[:8]!r}"
            got += 1
        assert got == seq, (
            f"batch {batch}: healthy subscriber stuck at {got - first} of 200 while the other subscriber "
            "is stalled (the proxy blocks on a slow subscriber?)"
        )
    assert proxy.running, proxy.output()


def test_dead_pull_worker_loses_only_what_was_queued_to_it(ctx, proxy_pair):
    """PULL/PUSH with workers W1 and W2 and a producer sending as fast as it can. W1 reads 500
    tasks and closes (linger 0) while the producer keeps going. Asserted precisely:
    (1) no task is delivered twice; (2) W2 gets its tasks in increasing order; (3) every task up to
    the last one W1 read was delivered (to W1 or W2): only tasks queued to W1 after its last read
    can be lost; (4) every task sent after the proxy closed W1's connection reaches W2."""
    proxy = proxy_pair("PULL", "PUSH")
    pid = proxy.proc.pid
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, proxy.frontend)
    w1 = ctx.socket(zmq.PULL)
    w1_inode = connect_tracked(w1, proxy.backend, pid)
    w2 = ctx.socket(zmq.PULL)
    connect_wait(w2, proxy.backend)

    next_seq = [0]
    stop_at = [200_000]
    r1: list[int] = []
    r2: list[int] = []
    errors: list[str] = []
    w2_stop = threading.Event()
    w1_closed = threading.Event()

    def produce():
        try:
            for _ in until(40, 200_000):
                if next_seq[0] >= stop_at[0]:
                    return
                producer.send(b"%d" % next_seq[0])
                next_seq[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"producer at {next_seq[0]}: {e!r}")

    def consume_w1():
        try:
            for _ in until(20, 500):
                if not w1.poll(5000):
                    break
                r1.append(int(w1.recv()))
        finally:
            w1.close(linger=0)
            w1_closed.set()

    def consume_w2():
        for _ in until(45, 300_000):
            if w2.poll(100):
                r2.append(int(w2.recv()))
            elif w2_stop.is_set():
                return

    threads = [threading.Thread(target=f) for f in (produce, consume_w1, consume_w2)]
    for t in threads:
        t.start()
    try:
        assert w1_closed.wait(25), "W1 never got its 500 tasks"
        noticed = wait_socket_closed(pid, w1_inode, timeout=5)
        # The producer bumps next_seq after send() returns, so the task numbered next_seq may
        # already be on its way, sent before the proxy closed W1: the first task surely sent
        # after is the one past it.
        switch = next_seq[0] + 1
        stop_at[0] = switch + 5000
        threads[0].join(timeout=30)
        assert not errors, errors
        assert noticed, "the proxy never closed the connection of the dead worker"
        assert next_seq[0] == stop_at[0], f"producer stopped at {next_seq[0]} of {stop_at[0]}"
        last = stop_at[0] - 1
        for _ in until(15, 100_000):
            if (r2 and r2[-1] >= last) or not threads[2].is_alive():
                break
            threads[2].join(timeout=0.05)  # the poll interval of a condition with a deadline
        w2_stop.set()
        threads[2].join(timeout=5)
    finally:
        w2_stop.set()
        stop_at[0] = 0
        for t in threads:
            t.join(timeout=10)
    assert len(r1) == 500
    both = r1 + r2
    assert len(both) == len(set(both)), "a task was delivered twice"
    assert r2 == sorted(r2), "W2 got tasks out of order"
    delivered = set(both)
    early_lost = [s for s in range(max(r1) + 1) if s not in delivered]
    assert not early_lost, f"tasks up to W1's last read were lost: {early_lost[:10]}"
    late_lost = [s for s in range(switch, last + 1) if s not in delivered]
    assert not late_lost, (
        f"{len(late_lost)} tasks sent after the proxy dropped W1 never reached W2, e.g. {late_lost[:10]}"
    )
    assert proxy.running, proxy.output()


def test_silent_connections_do_not_block_traffic(ctx, proxy_pair):
    """Ten raw TCP connections on each of the frontend and backend ports that never finish a
    handshake (half of them send only the 10-byte signature) stay open while 100 requests run:
    every request is answered, then the silent connections go away and the proxy still serves."""
    proxy, worker = _shared_queue_with_worker(ctx, proxy_pair)
    silent = []
    try:
        for port in (_port(proxy.frontend), _port(proxy.backend)):
            for k in range(10):
                s = raw_connect(port)
                if k % 2:
                    s.sendall(zmtp_greeting()[:10])
                silent.append(s)
        for i in range(4):
            round_trip(ctx, proxy, worker, b"beside-silent-%d" % i)
        client = ctx.socket(zmq.REQ)
        connect_wait(client, proxy.frontend)
        for i in range(100):
            client.send(b"s%d" % i)
            assert worker.poll(5000), f"request {i} stuck behind silent connections"
            frames = worker.recv_multipart()
            worker.send_multipart(frames[:-1] + [frames[-1] + b"!"])
            assert client.poll(5000) and client.recv() == b"s%d!" % i
    finally:
        for s in silent:
            rst_close(s)
    round_trip(ctx, proxy, worker, b"after-silent")
    assert proxy.running, proxy.output()


def test_stalled_pull_worker_does_not_hold_up_the_pipeline(ctx, proxy_pair):
    """PULL/PUSH with a worker that never reads (RCVHWM 1, 4 KiB receive buffer) and a healthy
    one. 20 000 tasks of 1 KiB: once the stalled worker's path is full, the proxy gives every
    further task to the healthy worker, which gets the last task in time. When the stalled worker
    finally reads, the two together hold every task exactly once, each in increasing order."""
    proxy = proxy_pair("PULL", "PUSH")
    stalled = ctx.socket(zmq.PULL)
    stalled.rcvhwm = 1
    stalled.rcvbuf = 4096
    connect_wait(stalled, proxy.backend)
    healthy = ctx.socket(zmq.PULL)
    connect_wait(healthy, proxy.backend)
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, proxy.frontend)
    n = 20_000
    got_ok: list[int] = []
    done = threading.Event()

    def read_healthy():
        for _ in until(30, n + 1):
            if not healthy.poll(5000):
                return
            got_ok.append(int(healthy.recv()[:8]))
            if got_ok[-1] == n - 1:
                done.set()
                return

    t = threading.Thread(target=read_healthy)
    t.start()
    pad = b"." * 1016
    try:
        for i in range(n):
            producer.send(b"%08d" % i + pad)  # SNDTIMEO 10 s: a blocked pipeline raises here
        assert done.wait(20), (
            f"the healthy worker got {len(got_ok)} tasks, last {got_ok[-1:]}, not the final one: "
            "the stalled worker holds up the pipeline"
        )
    finally:
        t.join(timeout=30)
    got_stalled = [int(m[0][:8]) for m in recv_until_quiet(stalled, quiet=0.5, total=20)]
    assert got_ok == sorted(got_ok) and got_stalled == sorted(got_stalled), "a worker got tasks out of order"
    both = got_ok + got_stalled
    assert len(both) == len(set(both)), "a task was delivered twice"
    missing = sorted(set(range(n)) - set(both))
    assert not missing, f"{len(missing)} tasks lost, e.g. {missing[:10]}"
    assert proxy.running, proxy.output()
