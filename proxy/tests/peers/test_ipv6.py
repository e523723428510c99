"""IPv6 and dual stack with libzmq peers: a proxy bound on `tcp://*:PORT` or `tcp://[::]:PORT`
serves IPv6 peers (over [::1]) and IPv4 peers (over 127.0.0.1) on the same port in every
pattern; `[::1]` works as a bind, a connect endpoint, `--http-bind` and `--control-bind`.

pyzmq needs `sock.ipv6 = True` (ZMQ_IPV6) to use IPv6 endpoints. Every test skips, saying why,
when this host has no IPv6 loopback."""

from __future__ import annotations

import http.client
import socket
import struct

import pytest
import zmq

from zmqpeers import connect_wait, log_fields, log_message, probe_until, run_proxy_to_exit, until

V4 = "127.0.0.1"
V6 = "::1"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((V6, 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no IPv6 loopback (::1)")


def free_dual_ports(n: int) -> list[int]:
    """n distinct ports free on IPv6 and IPv4 alike (held by dual-stack sockets at once)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def at(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def sock(ctx, kind: int) -> zmq.Socket:
    s = ctx.socket(kind)
    s.ipv6 = True
    return s


def dual_proxy(start_proxy, front: str, back: str, extra: tuple = ()):
    """A proxy whose frontend binds `*` and backend `[::]`: both spellings of dual stack."""
    p1, p2 = free_dual_ports(2)
    p = start_proxy(
        [
            "--frontend-type", front, "--frontend-bind", f"tcp://*:{p1}",
            "--backend-type", back, "--backend-bind", f"tcp://[::]:{p2}",
            "--log-format", "json", *extra,
        ]
    )
    p.ports = (p1, p2)
    return p


def test_wildcard_binds_log_dual_stack(start_proxy):
    """Each wildcard bind says which families it serves, so an operator can tell."""
    p = dual_proxy(start_proxy, "PULL", "PUSH")
    lines = [log_fields(e) for e in p.events() if log_message(e) == "listening on every IPv6 and IPv4 address (dual stack)"]
    endpoints = sorted(f.get("endpoint") for f in lines)
    assert endpoints == sorted([f"tcp://*:{p.ports[0]}", f"tcp://[::]:{p.ports[1]}"]), p.output()


def test_shared_queue_serves_ipv6_and_ipv4_clients_and_workers_on_one_port(ctx, start_proxy):
    """ROUTER/DEALER on `*`/`[::]`: a client over IPv6 and one over IPv4 each get exactly their
    own replies from workers connected over both families."""
    p = dual_proxy(start_proxy, "ROUTER", "DEALER")
    front, back = p.ports
    workers = []
    for host in (V6, V4):
        w = sock(ctx, zmq.REP)
        connect_wait(w, at(host, back))
        workers.append(w)
    clients = {}
    for host in (V6, V4):
        c = sock(ctx, zmq.DEALER)
        connect_wait(c, at(host, front))
        clients[host] = c
    n = 50
    for host, c in clients.items():
        for i in range(n):
            c.send_multipart([b"", f"{host}|{i}".encode()])
    served = {id(w): 0 for w in workers}
    poller = zmq.Poller()
    for w in workers:
        poller.register(w, zmq.POLLIN)
    for _ in until(20, 10_000):
        if sum(served.values()) == 2 * n:
            break
        for w, _ in poller.poll(100):
            w.send(w.recv() + b"|done")
            served[id(w)] += 1
    assert sum(served.values()) == 2 * n, served
    assert all(v > 0 for v in served.values()), f"a worker family got no work: {served}"
    for host, c in clients.items():
        got = []
        for _ in until(10, 10_000):
            if len(got) == n:
                break
            if c.poll(100):
                got.append(c.recv_multipart()[1])
        # Two workers answer concurrently: every reply comes back once, in whatever order.
        assert sorted(got) == sorted(f"{host}|{i}|done".encode() for i in range(n)), f"client over {host}: {got[:3]}"


def test_forwarder_over_ipv6_and_ipv4(ctx, start_proxy):
    """XSUB/XPUB on `*`/`[::]`: a publisher over IPv6; subscribers over IPv6 and IPv4 each
    get their own topic (the subscriptions crossed upstream over both families)."""
    p = dual_proxy(start_proxy, "XSUB", "XPUB")
    front, back = p.ports
    pub = sock(ctx, zmq.PUB)
    connect_wait(pub, at(V6, front))
    subs = {}
    for host, topic in ((V6, b"six"), (V4, b"four")):
        s = sock(ctx, zmq.SUB)
        s.subscribe(topic)
        connect_wait(s, at(host, back))
        subs[topic] = s

    def probe():
        for topic in subs:
            pub.send(topic + b"|probe")

    probe_until(probe, {t.decode(): (s, lambda f, t=t: f[0] == t + b"|probe") for t, s in subs.items()})
    for i in range(100):
        for topic in (b"six", b"four", b"none"):
            pub.send(topic + b"|%d" % i)
    pub.send(b"six|end")
    pub.send(b"four|end")
    for topic, s in subs.items():
        got = []
        for _ in until(10, 100_000):
            if not s.poll(100):
                continue
            m = s.recv()
            if m.endswith(b"|probe"):
                continue
            got.append(m)
            if m.endswith(b"|end"):
                break
        assert got == [topic + b"|%d" % i for i in range(100)] + [topic + b"|end"], f"{topic}: {got[:3]}"


def test_pipeline_over_ipv6_and_ipv4(ctx, start_proxy):
    """PULL/PUSH on `*`/`[::]`: producers over both families, consumers over both; every
    message arrives once."""
    p = dual_proxy(start_proxy, "PULL", "PUSH")
    front, back = p.ports
    consumers = []
    for host in (V6, V4):
        c = sock(ctx, zmq.PULL)
        connect_wait(c, at(host, back))
        consumers.append(c)
    producers = []
    for host in (V6, V4):
        s = sock(ctx, zmq.PUSH)
        connect_wait(s, at(host, front))
        producers.append((host, s))
    n = 500
    for host, s in producers:
        for i in range(n):
            s.send(f"{host}|{i}".encode())
    got = []
    poller = zmq.Poller()
    for c in consumers:
        poller.register(c, zmq.POLLIN)
    per_consumer = {id(c): 0 for c in consumers}
    for _ in until(20, 100_000):
        if len(got) == 2 * n:
            break
        for c, _ in poller.poll(100):
            got.append(c.recv())
            per_consumer[id(c)] += 1
    assert sorted(got) == sorted(f"{h}|{i}".encode() for h in (V6, V4) for i in range(n))
    assert all(v > 0 for v in per_consumer.values()), per_consumer


def test_ipv4_any_bind_refuses_ipv6_peers_and_ipv6_loopback_bind_refuses_ipv4(start_proxy):
    """`0.0.0.0` stays IPv4 only and `[::1]` IPv6 only: only the wildcard spellings are dual."""
    p1, p2 = free_dual_ports(2)
    start_proxy(
        [
            "--frontend-type", "PULL", "--frontend-bind", f"tcp://0.0.0.0:{p1}",
            "--backend-type", "PUSH", "--backend-bind", f"tcp://[::1]:{p2}", "--log-format", "json",
        ]
    )
    for family, host, port, reachable in (
        (socket.AF_INET, V4, p1, True),
        (socket.AF_INET6, V6, p1, False),
        (socket.AF_INET6, V6, p2, True),
        (socket.AF_INET, V4, p2, False),
    ):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            assert (s.connect_ex((host, port)) == 0) == reachable, f"{host}:{port}"


def test_connect_endpoint_to_ipv6_literal(ctx, start_proxy):
    """`--frontend-connect tcp://[::1]:PORT`: the proxy reaches a libzmq PUSH bound on ::1
    only, and `--backend-bind tcp://[::1]:PORT` serves the consumer."""
    up, down = free_dual_ports(2)
    producer = sock(ctx, zmq.PUSH)
    producer.bind(at(V6, up))
    start_proxy(
        [
            "--frontend-type", "PULL", "--frontend-connect", at(V6, up),
            "--backend-type", "PUSH", "--backend-bind", at(V6, down), "--log-format", "json",
        ]
    )
    consumer = sock(ctx, zmq.PULL)
    connect_wait(consumer, at(V6, down))
    for i in range(20):
        producer.send(b"%d" % i)
    got = []
    for _ in until(10, 10_000):
        if len(got) == 20:
            break
        if consumer.poll(100):
            got.append(consumer.recv())
    assert got == [b"%d" % i for i in range(20)]


def _get(host: str, port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_metrics_on_ipv6_loopback_and_dual_stack(start_proxy):
    """`--http-bind [::1]:PORT` serves /metrics over IPv6 (and not IPv4); `--http-bind *:PORT`
    over both."""
    p1, p2, h1, h2 = free_dual_ports(4)
    start_proxy(
        ["--frontend-type", "PULL", "--frontend-bind", at(V4, p1),
         "--backend-type", "PUSH", "--backend-bind", at(V4, p2), "--http-bind", f"[::1]:{h1}", "--log-format", "json"]
    )
    status, body = _get(V6, h1, "/metrics")
    assert status == 200 and "zmq_proxy_" in body, body[:200]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(3)
        assert s.connect_ex((V4, h1)) != 0, "[::1] must not serve IPv4"
    q1, q2 = free_dual_ports(2)
    start_proxy(
        ["--frontend-type", "PULL", "--frontend-bind", at(V4, q1),
         "--backend-type", "PUSH", "--backend-bind", at(V4, q2), "--http-bind", f"*:{h2}", "--log-format", "json"]
    )
    for host in (V6, V4):
        status, body = _get(host, h2, "/readyz")
        assert status == 200, f"{host}: {status} {body}"


def test_control_socket_on_ipv6(ctx, start_proxy):
    """`--control-bind tcp://[::]:PORT`: STATISTICS answered over IPv6 and IPv4."""
    p1, p2, c = free_dual_ports(3)
    start_proxy(
        ["--frontend-type", "PULL", "--frontend-bind", at(V4, p1),
         "--backend-type", "PUSH", "--backend-bind", at(V4, p2), "--control-bind", f"tcp://[::]:{c}", "--log-format", "json"]
    )
    for host in (V6, V4):
        req = sock(ctx, zmq.REQ)
        connect_wait(req, at(host, c))
        req.send(b"STATISTICS")
        frames = req.recv_multipart()
        assert len(frames) == 8 and all(len(f) == 8 for f in frames), frames
        assert all(struct.unpack("<Q", f)[0] == 0 for f in frames), frames
        req.close(0)


@pytest.mark.parametrize(
    "flag,value,words",
    [
        ("--frontend-bind", "tcp://::1:5555", "an IPv6 address needs brackets"),
        ("--frontend-bind", "tcp://[localhost]:5555", "is not an IPv6 address"),
        ("--frontend-connect", "tcp://[::1]:0", "port 0"),
        ("--http-bind", "::1:9090", "an IPv6 address needs brackets"),
    ],
)
def test_malformed_ipv6_endpoints_are_refused_naming_the_flag(flag, value, words):
    args = ["--frontend-type", "PULL", "--backend-type", "PUSH", "--backend-bind", "tcp://127.0.0.1:1"]
    if flag != "--frontend-bind" and flag != "--frontend-connect":
        args += ["--frontend-bind", "tcp://127.0.0.1:2"]
    rc, _out, err = run_proxy_to_exit(args + [flag, value])
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"zmq-proxy: error: {flag}: "), line
    assert words in line and value in line, line
