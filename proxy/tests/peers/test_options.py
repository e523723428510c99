"""The per-socket libzmq options against real libzmq peers: high-water marks that make
the 11th message wait or drop as the socket type says, nodrop, maxMsgSize, and the reconnect
backoff of a connect endpoint. Observed through the proxy's /metrics and the peers themselves.

Peers that must not read are given a 4 KiB receive buffer and a receive HWM of 10, so what the
kernel and libzmq can buffer beside the proxy's own queue is small and bounded."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request

import pytest
import zmq

from zmqpeers import (
    connect_wait,
    ep,
    free_ports,
    probe_until,
    recv_until_quiet,
    tcp_queues,
    until,
    wait_proxy_read_everything,
)


def metrics(port: int) -> dict[str, int]:
    """Every sample of /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r"^(zmq_proxy_\w+(?:\{[^}]*\})?) (-?\d+)", text, re.M):
        out[m[1]] = int(m[2])
    return out


def wait_metric(http: int, key: str, cond, timeout: float = 10.0) -> int:
    for _ in until(timeout, 10_000):
        v = metrics(http).get(key, 0)
        if cond(v):
            return v
        time.sleep(0.02)  # poll interval of a condition with a deadline
    raise AssertionError(f"{key} never satisfied the condition; last {metrics(http).get(key)}")


QUEUED_BACKEND = 'zmq_proxy_queued_frames{socket="backend"}'
DROPPED_FULL = 'zmq_proxy_dropped_frames_total{reason="peer_full"}'


def stalled_reader(ctx: zmq.Context, kind: int, endpoint: str, topic: bytes | None = None) -> zmq.Socket:
    s = ctx.socket(kind)
    s.rcvhwm = 10
    s.rcvbuf = 4096
    if topic is not None:
        s.subscribe(topic)
    connect_wait(s, endpoint)
    return s


def test_push_sndhwm_10_makes_the_11th_message_wait_and_loses_nothing(ctx, proxy_pair):
    """PULL/PUSH with --backend-sndhwm 10 and one consumer that does not read yet: the proxy
    queues exactly 10 messages to it and waits with the rest (the gauge never passes 10); once
    the consumer reads, it gets all 200 in order and nothing was dropped."""
    http = free_ports(1)[0]
    proxy = proxy_pair("PULL", "PUSH", extra=("--backend-sndhwm", "10", "--http-bind", f"127.0.0.1:{http}"))
    consumer = stalled_reader(ctx, zmq.PULL, proxy.backend)
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, proxy.frontend)
    pad = b"w" * (64 * 1024)
    n = 200
    for i in range(n):
        producer.send(b"%08d" % i + pad)
    assert wait_metric(http, QUEUED_BACKEND, lambda v: v == 10) == 10
    samples = []
    for _ in until(0.5, 50):
        samples.append(metrics(http)[QUEUED_BACKEND])
    assert max(samples) == 10, f"more than sndhwm queued to the consumer: {samples}"
    got = [int(m[0][:8]) for m in recv_until_quiet(consumer, quiet=1.0, total=30)]
    assert got == list(range(n)), f"got {len(got)} of {n}, first gaps {sorted(set(range(n)) - set(got))[:5]}"
    assert metrics(http).get(DROPPED_FULL, 0) == 0


@pytest.mark.parametrize("rcvhwm", ["10", None])
def test_rcvhwm_10_stops_reading_a_producer_whose_messages_cannot_go_on(ctx, proxy_pair, rcvhwm):
    """PULL/PUSH with no consumer yet, so nothing can be forwarded; a producer sends 200 tasks of
    1 KiB. With --frontend-rcvhwm 10 the proxy reads no further than its window: bytes stay
    unread in its kernel receive queue (seen in /proc/net/tcp). With the default (1000) it reads
    all 200 KiB. Either way, a consumer that connects gets every task, in order."""
    proxy = proxy_pair("PULL", "PUSH", extra=("--frontend-rcvhwm", rcvhwm) if rcvhwm else ())
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, proxy.frontend)
    n = 200
    for i in range(n):
        producer.send(b"%08d" % i + b"t" * 1016)
    port = int(proxy.frontend.rsplit(":", 1)[1])

    def unread_at_proxy() -> list:
        return [r for r in tcp_queues(port) if r[0] == port and r[4] > 0]

    if rcvhwm:
        # libzmq's I/O thread writes the tasks asynchronously: until it has, the kernel queues are
        # as empty as after the proxy read everything (CI once judged it in that moment). So
        # wait for unread bytes to show at the proxy's end, then see that they stay there.
        for _ in until(3.0, 100_000):
            if unread_at_proxy():
                break
            time.sleep(0.01)  # poll interval of a condition with a deadline
        assert unread_at_proxy(), f"no unread bytes at the proxy's end: {tcp_queues(port)}"
        for _ in until(1.0, 1_000):
            assert unread_at_proxy(), "the proxy read on past its window of 10 messages"
            time.sleep(0.01)  # sampling over a fixed second: the window must hold throughout
    else:
        assert wait_proxy_read_everything(port, 3.0), "with the default rcvhwm the proxy reads the 200 tasks"
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    got = [int(m[0][:8]) for m in recv_until_quiet(consumer, quiet=1.0, total=20)]
    assert got == list(range(n)), f"got {len(got)} of {n}"


@pytest.mark.parametrize("hwm", ["10", None])
def test_xpub_sndhwm_10_drops_beyond_it_for_a_full_subscriber_only(ctx, proxy_pair, hwm):
    """XSUB/XPUB, a healthy and a stalled subscriber, 400 publications of 64 KiB in lock-step with
    the healthy one. With --backend-sndhwm 10 the stalled one gets 10 (its queue) plus what the
    kernel and libzmq's rcvhwm of 10 hold, and every other copy is dropped and counted; with the
    default (1000) it gets all 400. The healthy one gets every message either way."""
    http = free_ports(1)[0]
    extra = ["--http-bind", f"127.0.0.1:{http}"] + (["--backend-sndhwm", hwm] if hwm else [])
    proxy = proxy_pair("XSUB", "XPUB", extra=tuple(extra))
    pub = ctx.socket(zmq.PUB)
    connect_wait(pub, proxy.frontend)
    healthy = ctx.socket(zmq.SUB)
    healthy.subscribe(b"")
    connect_wait(healthy, proxy.backend)
    stalled = stalled_reader(ctx, zmq.SUB, proxy.backend, b"")
    probe_until(
        lambda: pub.send(b"probe"),
        {"healthy": (healthy, lambda f: f == [b"probe"]), "stalled": (stalled, lambda f: f == [b"probe"])},
    )
    # Lock-step, so the healthy subscriber never has more than one message queued: whatever
    # is dropped is the stalled one's.
    pad = b"p" * (64 * 1024)
    n = 400
    for seq in range(n):
        pub.send(b"%08d" % seq + pad)
        for _ in until(5, 100):
            assert healthy.poll(5000), f"the healthy subscriber stopped at {seq}"
            m = healthy.recv()
            if m != b"probe":
                assert m[:8] == b"%08d" % seq
                break
    got = [m[0] for m in recv_until_quiet(stalled, quiet=1.0, total=30) if m[0] != b"probe"]
    dropped = metrics(http).get(DROPPED_FULL, 0)
    if hwm:
        # 10 queued in the proxy, 10 in libzmq's pipe, and at most the kernel's 4 MiB send
        # buffer (tcp_wmem's maximum; the subscriber's receive buffer is 4 KiB): under 120.
        assert 10 <= len(got) <= 120, f"stalled subscriber got {len(got)} of {n} with sndhwm 10"
        assert dropped == n - len(got), f"{dropped} copies counted as dropped, {len(got)} received"
    else:
        assert len(got) == n and dropped == 0, f"default hwm: got {len(got)}, dropped {dropped}"


@pytest.mark.parametrize("nodrop", [True, False])
def test_nodrop_slows_the_publisher_instead_of_dropping_for_a_slow_subscriber(ctx, proxy_pair, nodrop):
    """XSUB/XPUB with --backend-sndhwm 10 --frontend-rcvhwm 10, a fast and a slow subscriber
    (the slow one reads one 16 KiB message per millisecond), and an XPUB publisher with
    XPUB_NODROP (so it waits rather than drops when the proxy stops reading it). With
    --backend-nodrop the slow subscriber gets all 1000 messages, nothing is dropped, and the
    publisher is held back to the slow subscriber's pace; without it, the proxy waits for the
    slow one for a bounded time only (see test_pubsub_pacing.py): the fast one loses nothing,
    and what the slow one does not get is counted."""
    http = free_ports(1)[0]
    extra = ["--backend-sndhwm", "10", "--frontend-rcvhwm", "10", "--http-bind", f"127.0.0.1:{http}"]
    if nodrop:
        extra += ["--backend-nodrop", "true"]
    proxy = proxy_pair("XSUB", "XPUB", extra=tuple(extra))
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.sndhwm = 10
    pub.sndbuf = 4096
    connect_wait(pub, proxy.frontend)
    fast = ctx.socket(zmq.SUB)
    fast.subscribe(b"")
    connect_wait(fast, proxy.backend)
    slow = stalled_reader(ctx, zmq.SUB, proxy.backend, b"")
    # The publisher learns both subscriptions (one b"" upstream) before anything real is sent.
    assert pub.poll(10_000) and pub.recv() == b"\x01"
    probe_until(
        lambda: pub.send(b"probe"),
        {"fast": (fast, lambda f: f == [b"probe"]), "slow": (slow, lambda f: f == [b"probe"])},
    )
    n = 1000
    got = {"fast": [], "slow": []}

    def read(name, sock, pace):
        for _ in until(60, n * 4):
            if not sock.poll(3000):
                return
            m = sock.recv()
            if m == b"probe":
                continue
            got[name].append(int(m[:8]))
            if got[name][-1] == n - 1:
                return
            if pace:
                time.sleep(pace)  # the subscriber's own slowness, not a wait for a condition

    readers = [
        threading.Thread(target=read, args=("fast", fast, 0)),
        threading.Thread(target=read, args=("slow", slow, 0.001)),
    ]
    for t in readers:
        t.start()
    pad = b"n" * (16 * 1024)
    t0 = time.monotonic()
    for i in range(n):
        pub.send(b"%08d" % i + pad)
    published = time.monotonic() - t0
    for t in readers:
        t.join(timeout=90)
    slow_done = time.monotonic() - t0
    dropped = metrics(http).get(DROPPED_FULL, 0)
    if nodrop:
        assert got["fast"] == list(range(n)), f"fast subscriber got {len(got['fast'])}"
        assert got["slow"] == list(range(n)), f"slow subscriber got {len(got['slow'])} of {n}"
        assert dropped == 0
        assert published >= 0.5 * slow_done, (
            f"publisher done in {published:.2f}s, slow subscriber in {slow_done:.2f}s: it was not held back"
        )
    else:
        # Without nodrop a full subscriber that still drains is waited for too, but only for
        # 500 ms in all between two times it has caught up; past that its copies are dropped
        # until it does. The fast one keeps up and loses nothing; the slow one gets what it
        # gets in order, and every copy it did not get is counted.
        assert got["fast"] == list(range(n)), f"fast subscriber got {len(got['fast'])}"
        slow_got = got["slow"]
        assert slow_got == sorted(set(slow_got)), "slow subscriber: out of order or duplicated"
        for _ in until(5, 1000):
            if len(slow_got) + dropped == n:
                break
            time.sleep(0.05)  # poll interval of a condition with a deadline
            dropped = metrics(http).get(DROPPED_FULL, 0)
        assert len(slow_got) + dropped == n, f"slow got {len(slow_got)}, {dropped} counted as dropped, of {n}"


def test_max_msg_size_drops_the_peer_that_sends_a_bigger_frame_and_keeps_serving(ctx, proxy_pair):
    """PULL/PUSH with --frontend-max-msg-size 1000: a frame of exactly 1000 bytes passes, a
    producer that sends 1001 bytes is dropped and counted as a protocol error, and another
    producer is served throughout; the dropped one reconnects (libzmq does) and is served too."""
    http = free_ports(1)[0]
    proxy = proxy_pair("PULL", "PUSH", extra=("--frontend-max-msg-size", "1000", "--http-bind", f"127.0.0.1:{http}"))
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    big, good = ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)
    for s in (big, good):
        connect_wait(s, proxy.frontend)
    big.send(b"b" * 1000)
    assert consumer.poll(10_000) and consumer.recv() == b"b" * 1000, "a frame of exactly maxMsgSize passes"
    big.send(b"x" * 1001)
    wait_metric(http, "zmq_proxy_protocol_errors_total", lambda v: v >= 1)
    for i in range(20):
        good.send(b"good-%d" % i)
    got = [m[0] for m in recv_until_quiet(consumer, quiet=0.5, total=10)]
    assert got == [b"good-%d" % i for i in range(20)], got[:5]
    # The refused producer reconnects on its own and is served again (probing until it is).
    probe_until(lambda: big.send(b"again"), {"consumer": (consumer, lambda f: f == [b"again"])})
    assert b"x" * 1001 not in [m[0] for m in recv_until_quiet(consumer, quiet=0.3, total=5)]
    assert proxy.running, proxy.output()


def test_reconnect_backoff_doubles_to_the_maximum_and_a_returning_server_is_found(ctx, start_proxy):
    """--backend-connect to a port where a raw TCP server accepts and closes at once (a server
    that comes and goes): with --backend-reconnect-interval 50 and -max 400 the gaps between the
    proxy's attempts grow (about 50, 100, 200, 400 ms plus a jitter under one interval) and stay
    bounded by max + interval; once a real libzmq worker binds there, it is reached and served."""
    ports = free_ports(2)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", ports[1]))
    server.listen(16)
    server.settimeout(5)
    proxy = start_proxy([
        "--frontend-type", "PULL", "--frontend-bind", ep(ports[0]),
        "--backend-type", "PUSH", "--backend-connect", ep(ports[1]),
        "--backend-reconnect-interval", "50", "--backend-reconnect-interval-max", "400",
        "--log-format", "json",
    ])
    stamps = []
    for _ in range(9):
        conn, _ = server.accept()
        stamps.append(time.monotonic())
        conn.close()
    server.close()
    gaps = [round((b - a) * 1000) for a, b in zip(stamps, stamps[1:])]
    assert gaps[0] < 150, f"first retry after {gaps[0]} ms (interval 50): {gaps}"
    assert max(gaps[-3:]) >= 350, f"the backoff never reached its maximum of 400 ms: {gaps}"
    assert all(g <= 400 + 50 + 100 for g in gaps), f"a gap beyond max + jitter (+100 ms slack): {gaps}"
    assert gaps[-1] > 2 * gaps[0], f"gaps did not grow: {gaps}"
    worker = ctx.socket(zmq.PULL)
    worker.bind(ep(ports[1]))
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, ep(ports[0]))
    producer.send(b"after the server came back")
    assert worker.poll(10_000), "the returning server was never reached"
    assert worker.recv() == b"after the server came back"
    assert proxy.running, proxy.output()


def test_unlimited_hwm_warns_and_bad_option_values_exit_2_naming_the_flag(start_proxy):
    from zmqpeers import run_proxy_to_exit

    ports = free_ports(2)
    base = ["--frontend-type", "PULL", "--frontend-bind", ep(ports[0]),
            "--backend-type", "PUSH", "--backend-bind", ep(ports[1]), "--log-format", "json"]
    proxy = start_proxy(base + ["--backend-sndhwm", "0"])
    assert proxy.find_event("backend sndhwm is 0 (unlimited): a peer that does not keep up can grow the proxy's memory without bound") is not None, proxy.output()
    proxy.stop()
    for flag, value, words in [
        ("--frontend-rcvhwm", "-1", "--frontend-rcvhwm: expected messages between 0"),
        ("--backend-max-msg-size", "big", "--backend-max-msg-size: expected bytes"),
        ("--backend-nodrop", "true", "--backend-nodrop: only a PUB or XPUB socket has it, not PUSH"),
        ("--backend-tcp-keepalive-count", "0", "--backend-tcp-keepalive-count: expected probes between 1 and 127"),
    ]:
        rc, out, err = run_proxy_to_exit(base + [flag, value])
        assert rc == 2, (flag, rc, err)
        lines = [l for l in err.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("zmq-proxy: error: " + words), (flag, err)
