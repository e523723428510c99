"""ZMTP heartbeats (ZMQ_HEARTBEAT_IVL / _TTL / _TIMEOUT) against raw TCP peers and libzmq peers:
a peer silent past the proxy's heartbeat timeout is dropped and what it held (subscriptions, a
routing id) is released; libzmq peers with their own heartbeats stay connected through idle
periods, NULL and CURVE; a peer that announced a TTL in its PINGs and then froze is dropped
after that TTL. Every drop is counted in zmq_proxy_heartbeat_timeouts_total."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import zmq

from test_curve import curve_client, curve_proxy  # noqa: F401  (a fixture, used by name)
from zmqpeers import (
    connect_wait,
    ep,
    free_ports,
    raw_connect,
    recv_exact,
    run_proxy_to_exit,
    until,
    zmtp_greeting,
    zmtp_ready,
)

PING_NO_CONTEXT = re.compile(rb"\x04\x07\x04PING(..)", re.S)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def metrics(http: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=2) as r:
        return r.read().decode()


def heartbeat_drops(http: int) -> dict[tuple[str, str], int]:
    found = re.finditer(
        r'^zmq_proxy_heartbeat_timeouts_total\{socket="(\w+)",reason="(\w+)"\} (\d+)', metrics(http), re.M
    )
    return {(m[1], m[2]): int(m[3]) for m in found}


def connected_peers(http: int, socket_name: str) -> int:
    m = re.search(rf'^zmq_proxy_connected_peers\{{socket="{socket_name}"\}} (\d+)', metrics(http), re.M)
    return int(m[1]) if m else -1


def wait_drops(http: int, key: tuple[str, str], count: int = 1, timeout: float = 10.0) -> None:
    for _ in until(timeout, 10_000):
        if heartbeat_drops(http).get(key, 0) >= count:
            return
        time.sleep(0.02)  # poll interval of a condition with a deadline, not a fixed wait
    raise AssertionError(f"{key} never reached {count}; have {heartbeat_drops(http)}")


def start(proxy_pair, front: str, back: str, *flags: str):
    http = free_ports(1)[0]
    proxy = proxy_pair(front, back, extra=("--http-bind", f"127.0.0.1:{http}", *flags))
    return proxy, http


def raw_peer(port: int, socket_type: bytes, identity: bytes | None = None) -> socket.socket:
    """A raw TCP peer through the ZMTP 3.0 NULL handshake: greeting and READY both ways."""
    s = raw_connect(port)
    s.sendall(zmtp_greeting() + zmtp_ready(socket_type, identity))
    greeting = recv_exact(s, 64)
    assert len(greeting) == 64 and greeting[0] == 0xFF, f"not a ZMTP greeting: {greeting!r}"
    head = recv_exact(s, 2)
    assert head[0] == 0x04, f"expected the proxy's READY command, got {head!r}"
    ready = recv_exact(s, head[1])
    assert ready.startswith(b"\x05READY"), ready
    return s


def read_until_closed(s: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """Everything the proxy sends until it closes the connection, and when it did (None: still
    open at the deadline). Reading sends nothing back: the peer stays silent."""
    got = b""
    s.settimeout(0.05)
    for _ in until(timeout, 1_000_000):
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return got, time.monotonic()
        if not chunk:
            return got, time.monotonic()
        got += chunk
    return got, None


def test_silent_subscriber_is_dropped_after_the_timeout_and_its_subscription_released(ctx, proxy_pair):
    """XSUB/XPUB with backend heartbeats (200 ms interval, 2 s TTL, 600 ms timeout): a raw SUB
    subscribes to `t` and then only reads. It receives PINGs announcing 20 deciseconds; no byte
    comes back, so the proxy closes it no sooner than the timeout after the first PING, counts
    it (backend, timeout), and the publisher upstream sees the unsubscribe. A libzmq SUB beside
    it (which answers the PINGs) keeps receiving."""
    proxy, http = start(
        proxy_pair, "XSUB", "XPUB",
        "--backend-heartbeat-interval", "200", "--backend-heartbeat-ttl", "2000",
        "--backend-heartbeat-timeout", "600",
    )  # fmt: skip
    publisher = ctx.socket(zmq.XPUB)
    connect_wait(publisher, proxy.frontend)
    live = ctx.socket(zmq.SUB)
    live.subscribe(b"live")
    connect_wait(live, proxy.backend)
    assert publisher.poll(5000) and publisher.recv() == b"\x01live"
    s = raw_peer(_port(proxy.backend), b"SUB")
    s.sendall(b"\x00\x02\x01t")  # subscribe to "t" (ZMTP 3.0 form), the peer's last word
    quiet_from = time.monotonic()
    assert publisher.poll(5000), "the raw subscriber's subscription never reached the publisher"
    assert publisher.recv() == b"\x01t"
    got, closed_at = read_until_closed(s, timeout=10.0)
    s.close()
    assert closed_at is not None, f"the silent subscriber was never dropped; it got {got!r}"
    pings = PING_NO_CONTEXT.findall(got)
    assert pings and all(ttl == b"\x00\x14" for ttl in pings), f"PINGs with a 20 ds TTL expected: {got!r}"
    silent_for = closed_at - quiet_from
    assert 0.6 <= silent_for < 5.0, f"dropped after {silent_for:.2f}s of silence (timeout 0.6 s after a PING)"
    assert publisher.poll(5000), "no unsubscribe reached the publisher after the silent subscriber was dropped"
    assert publisher.recv() == b"\x00t"
    wait_drops(http, ("backend", "timeout"))
    publisher.send_multipart([b"live", b"still"])
    assert live.poll(5000) and live.recv_multipart() == [b"live", b"still"]
    assert heartbeat_drops(http) == {("backend", "timeout"): 1}, "the answering libzmq SUB was dropped too"


def test_silent_router_client_releases_its_routing_id(ctx, proxy_pair):
    """ROUTER/DEALER with frontend heartbeats: a raw DEALER with routing id `alice` goes quiet and
    is dropped (counted); a second connection claiming `alice`, refused while the first held it,
    is then accepted and its request reaches the worker with that routing id."""
    proxy, http = start(
        proxy_pair, "ROUTER", "DEALER",
        "--frontend-heartbeat-interval", "150", "--frontend-heartbeat-timeout", "450",
    )  # fmt: skip
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, proxy.backend)
    first = raw_peer(_port(proxy.frontend), b"DEALER", identity=b"alice")
    _, closed_at = read_until_closed(first, timeout=10.0)
    first.close()
    assert closed_at is not None, "the silent client was never dropped"
    wait_drops(http, ("frontend", "timeout"))
    second = raw_peer(_port(proxy.frontend), b"DEALER", identity=b"alice")
    try:
        second.sendall(b"\x01\x00" + b"\x00\x03req")  # empty delimiter, then the request
        assert worker.poll(5000), "the request of the reconnected client never reached the worker"
        assert worker.recv_multipart() == [b"alice", b"", b"req"]
    finally:
        second.close()


def _heartbeating(sock: zmq.Socket, ivl: int, ttl: int, timeout: int) -> zmq.Socket:
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
    sock.setsockopt(zmq.HEARTBEAT_TTL, ttl)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout)
    return sock


def _idle_round_trips(client: zmq.Socket, worker: zmq.Socket, rounds: int, idle_ms: int) -> None:
    """REQ/REP round trips separated by idle periods in which only heartbeats cross (nothing
    else may arrive at the worker meanwhile)."""
    for i in range(rounds):
        client.send(b"ping %d" % i)
        assert worker.poll(5000), f"request {i} never reached the worker"
        worker.send(b"pong " + worker.recv())
        assert client.poll(5000) and client.recv() == b"pong ping %d" % i
        assert worker.poll(idle_ms) == 0, "something other than heartbeats reached the idle worker"


def _idle_without_disconnects(client, worker, proxy, rounds: int, peers: str) -> None:
    """Connects the REP worker and REQ client, then runs `_idle_round_trips` (0.7 s idle each)
    while their socket monitors count disconnects: none may happen."""
    connect_wait(worker, proxy.backend)
    connect_wait(client, proxy.frontend)
    monitors = [disconnect_monitor(s) for s in (client, worker)]
    try:
        _idle_round_trips(client, worker, rounds=rounds, idle_ms=700)
        assert [_disconnects(m) for m in monitors] == [0, 0], f"a {peers} peer lost its connection"
    finally:
        for s in (client, worker):
            s.disable_monitor()
        for m in monitors:
            m.close(0)


def disconnect_monitor(sock: zmq.Socket) -> zmq.Socket:
    # A fresh inproc name: the default one (by file descriptor) may still be bound by the
    # monitor connect_wait used.
    return sock.get_monitor_socket(zmq.EVENT_DISCONNECTED, addr=f"inproc://hb-disconnects-{id(sock)}")


def _disconnects(mon: zmq.Socket) -> int:
    n = 0
    for _ in range(10_000):
        if not mon.poll(0):
            return n
        ev = zmq.utils.monitor.recv_monitor_message(mon)
        n += ev["event"] == zmq.EVENT_DISCONNECTED
    return n


def test_libzmq_peers_with_their_own_heartbeats_stay_connected(ctx, proxy_pair):
    """Proxy heartbeats on both sides (100 ms, TTL 500 ms, timeout 300 ms) and libzmq peers with
    their own (REQ client 100 ms / TTL 500 ms / timeout 300 ms, REP worker 150 / 600 / 400): over
    four idle periods of 0.7 s (several heartbeat rounds each way) no side drops a connection, the
    requests keep flowing, and no heartbeat drop is counted."""
    hb = ("--frontend-heartbeat-interval", "100", "--frontend-heartbeat-ttl", "500",
          "--frontend-heartbeat-timeout", "300", "--backend-heartbeat-interval", "100",
          "--backend-heartbeat-ttl", "500", "--backend-heartbeat-timeout", "300")  # fmt: skip
    proxy, http = start(proxy_pair, "ROUTER", "DEALER", *hb)
    worker = _heartbeating(ctx.socket(zmq.REP), 150, 600, 400)
    client = _heartbeating(ctx.socket(zmq.REQ), 100, 500, 300)
    _idle_without_disconnects(client, worker, proxy, rounds=4, peers="libzmq")
    assert heartbeat_drops(http) == {}, f"heartbeat drops counted: {heartbeat_drops(http)}"
    assert connected_peers(http, "frontend") == 1 and connected_peers(http, "backend") == 1


def test_curve_peers_exchange_heartbeats_without_being_dropped(ctx, curve_proxy):
    """The same over CURVE on both sides (PING and PONG travel in MESSAGE boxes): libzmq CURVE
    peers with heartbeats stay connected through idle periods and nothing is counted."""
    hb = ("--frontend-heartbeat-interval", "100", "--frontend-heartbeat-timeout", "300",
          "--frontend-heartbeat-ttl", "500", "--backend-heartbeat-interval", "100",
          "--backend-heartbeat-timeout", "300")  # fmt: skip
    proxy, keys, http = curve_proxy("ROUTER", "DEALER", extra=hb)
    worker = _heartbeating(curve_client(ctx, zmq.REP, keys.public, keys.clients[0]), 100, 500, 300)
    client = _heartbeating(curve_client(ctx, zmq.REQ, keys.public, keys.clients[1]), 100, 500, 300)
    _idle_without_disconnects(client, worker, proxy, rounds=3, peers="CURVE")
    assert heartbeat_drops(http) == {}, f"heartbeat drops counted: {heartbeat_drops(http)}"


FROZEN_WORKER = r"""
import sys, zmq
from zmq.utils.monitor import recv_monitor_message
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.HEARTBEAT_IVL, 100)
s.setsockopt(zmq.HEARTBEAT_TTL, 1000)
s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 60000)
mon = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
s.connect(sys.argv[1])
if mon.poll(5000) and recv_monitor_message(mon)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
    print("connected", flush=True)
while True:
    if s.poll(1000):
        s.recv_multipart()
"""


def test_peer_that_announced_a_ttl_and_froze_is_dropped_after_that_ttl(ctx, proxy_pair):
    """The proxy sends no PINGs here. A libzmq DEALER worker in a child process sends PINGs every
    100 ms announcing a 1 s TTL; the proxy answers them and keeps it. Then the child is stopped
    (SIGSTOP: its I/O thread freezes with it): the proxy drops it once its TTL has passed in
    silence, counted (backend, peer_ttl), and the backend has no peer left."""
    proxy, http = start(proxy_pair, "ROUTER", "DEALER")
    child = subprocess.Popen(
        [sys.executable, "-c", FROZEN_WORKER, proxy.backend], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 10)
        assert ready and child.stdout.readline().strip() == b"connected", "the child worker never connected"
        # The child's handshake can complete before the proxy has read its READY.
        for _ in until(5.0, 10_000):
            if connected_peers(http, "backend") == 1:
                break
            time.sleep(0.01)  # poll interval of a condition with a deadline, not a fixed wait
        # Several of its PINGs (and our PONGs) cross while it is alive: it is not dropped.
        for _ in until(0.6, 1000):
            assert connected_peers(http, "backend") == 1, "the heartbeating worker was dropped while alive"
            time.sleep(0.05)  # sampling interval of a condition that must keep holding
        os.kill(child.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        wait_drops(http, ("backend", "peer_ttl"), timeout=10.0)
        elapsed = time.monotonic() - stopped
        # The watch started at its last PING, up to one interval (0.1 s) before the stop.
        assert elapsed >= 0.85, f"dropped {elapsed:.2f}s after the stop, before its 1 s TTL"
        assert connected_peers(http, "backend") == 0
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait(5)


def test_raw_peer_that_sent_a_ping_with_a_ttl_and_went_silent_is_dropped(ctx, proxy_pair):
    """A raw PUSH peer sends one PING announcing 5 deciseconds with a context: the proxy answers
    with a PONG echoing the context, and closes the connection once 0.5 s passed in silence."""
    proxy, http = start(proxy_pair, "PULL", "PUSH")
    s = raw_peer(_port(proxy.frontend), b"PUSH")
    s.sendall(b"\x04\x0a\x04PING\x00\x05ctx")
    sent = time.monotonic()
    got, closed_at = read_until_closed(s, timeout=10.0)
    s.close()
    assert got.startswith(b"\x04\x08\x04PONGctx"), f"expected a PONG echoing the context: {got!r}"
    assert closed_at is not None, "the peer was never dropped after its TTL"
    assert 0.5 <= closed_at - sent < 5.0, f"dropped after {closed_at - sent:.2f}s (TTL 0.5 s)"
    wait_drops(http, ("frontend", "peer_ttl"))


def _refused(args, needle, env=None):
    rc, _out, err = run_proxy_to_exit(args, env=env)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, f"exit {rc}, stderr {err!r}"
    assert lines[0].startswith("zmq-proxy: error: ") and needle in lines[0], lines[0]


def test_bad_heartbeat_values_exit_2_naming_the_flag_env_or_field(tmp_path):
    """A TTL that is no multiple of 100 ms, a negative interval from the environment, an
    out-of-range timeout in a manifest, and heartbeat flags beside --config: each exits 2 with one
    line naming what was wrong."""
    p = free_ports(2)
    base = ["--frontend-type", "PULL", "--frontend-bind", ep(p[0]), "--backend-type", "PUSH", "--backend-bind", ep(p[1])]
    _refused(base + ["--backend-heartbeat-ttl", "150"], "--backend-heartbeat-ttl: 150 is not a multiple of 100")
    _refused(base, "--frontend-heartbeat-interval: expected milliseconds", env={"ZMQ_PROXY_FRONTEND_HEARTBEAT_INTERVAL": "-5"})
    manifest = tmp_path / "p.yaml"
    manifest.write_text(
        "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nspec:\n"
        f"  frontend: {{type: PULL, port: {p[0]}}}\n"
        f"  backend: {{type: PUSH, port: {p[1]}, heartbeatInterval: 1000, heartbeatTimeout: 4000000}}\n"
    )
    _refused(["--config", str(manifest)], "spec.backend.heartbeatTimeout: expected milliseconds between 0 and 3600000")
    _refused(["--config", str(manifest), "--capture-heartbeat-ttl", "100"], "--capture-heartbeat-ttl")


def test_heartbeats_from_the_environment_reach_the_wire(ctx, proxy_pair):
    """ZMQ_PROXY_FRONTEND_HEARTBEAT_INTERVAL / _TTL set PINGs on the frontend: a raw PUSH peer
    receives them with the TTL in deciseconds."""
    env = {"ZMQ_PROXY_FRONTEND_HEARTBEAT_INTERVAL": "100", "ZMQ_PROXY_FRONTEND_HEARTBEAT_TTL": "25600"}
    proxy = proxy_pair("PULL", "PUSH", env=env)
    s = raw_peer(_port(proxy.frontend), b"PUSH")
    try:
        got = b""
        s.settimeout(0.05)
        for _ in until(5.0, 100_000):
            if PING_NO_CONTEXT.search(got):
                break
            try:
                got += s.recv(4096)
            except socket.timeout:
                continue
        m = PING_NO_CONTEXT.search(got)
        assert m and m[1] == b"\x01\x00", f"no PING with 256 deciseconds: {got!r}"
    finally:
        s.close()
