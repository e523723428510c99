"""CurveZMQ through the proxy with libzmq's own CURVE (pyzmq): every pattern with the proxy as
CURVE server, the proxy as CURVE client of a pyzmq server, capture and control secured, CURVE
on one side and NULL on the other, every refusal followed by a client that still works, the
allow-list reloaded live, and garbage handshakes (fixed seeds, bounded)."""

from __future__ import annotations

import os
import random
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from zmqpeers import connect_wait, ep, free_ports, monitor, probe_until, recv_until_quiet, until, zmtp_greeting


class Keys:
    """A server keypair on disk (plain Z85 secret file) and client keypairs, with an allow-list."""

    def __init__(self, tmp: Path, name: str = "server"):
        self.tmp = tmp
        self.public, self.secret = zmq.curve_keypair()
        self.secret_file = tmp / f"{name}.key"
        self.secret_file.write_bytes(self.secret + b"\n")
        self.allow = tmp / f"{name}.allow"

    def allow_only(self, *clients: tuple[bytes, bytes]) -> None:
        text = "# allowed clients\n" + "".join(f"{c[0].decode()}  # client\n" for c in clients)
        tmp = self.allow.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.allow)

    def server_flags(self, socket_name: str) -> list[str]:
        return [
            f"--{socket_name}-curve-server-key-file", str(self.secret_file),
            f"--{socket_name}-curve-authorized-keys", str(self.allow),
        ]  # fmt: skip


def curve_client(ctx: zmq.Context, kind: int, server_public: bytes, pair: tuple[bytes, bytes]) -> zmq.Socket:
    s = ctx.socket(kind)
    s.curve_serverkey = server_public
    s.curve_publickey, s.curve_secretkey = pair
    return s


def metrics(port: int) -> dict[tuple[str, str, str], int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(
        r'^zmq_proxy_handshake_failures_total\{socket="(\w+)",mechanism="(\w+)",reason="(\w+)"\} (\d+)',
        text,
        re.M,
    ):
        out[(m[1], m[2], m[3])] = int(m[4])
    return out


def wait_refused(http: int, key: tuple[str, str, str], before: int = 0, timeout: float = 10.0) -> int:
    for _ in until(timeout, 10_000):
        n = metrics(http).get(key, 0)
        if n > before:
            return n
        time.sleep(0.02)
    raise AssertionError(f"{key} never counted; have {metrics(http)}")


@pytest.fixture
def curve_proxy(start_proxy, tmp_path):
    """curve_proxy(front, back, secure=("frontend", "backend"), extra=[]) -> (proxy, keys, http)."""

    def _start(front: str, back: str, secure=("frontend", "backend"), extra=(), capture=None):
        ports = free_ports(5)
        keys = Keys(tmp_path)
        keys.clients = [zmq.curve_keypair() for _ in range(3)]
        keys.allow_only(*keys.clients[:2])
        args = [
            "--frontend-type", front, "--frontend-bind", ep(ports[0]),
            "--backend-type", back, "--backend-bind", ep(ports[1]),
            "--http-bind", f"127.0.0.1:{ports[2]}", "--log-format", "json",
        ]  # fmt: skip
        if capture:
            args += ["--capture-type", capture, "--capture-bind", ep(ports[3])]
        for name in secure:
            if name == "control":
                args += ["--control-bind", ep(ports[4])]
            args += keys.server_flags(name)
        p = start_proxy(args + list(extra))
        p.frontend, p.backend, p.capture, p.control = ep(ports[0]), ep(ports[1]), ep(ports[3]), ep(ports[4])
        return p, keys, ports[2]

    return _start


def test_pipeline_both_sides_curve_messages_intact_and_in_order(ctx, curve_proxy):
    """PUSH -> PULL/PUSH -> PULL, every peer a libzmq CURVE client: 2000 messages with empty
    frames, a 300 kB frame and multipart, byte-identical and in order."""
    proxy, keys, _ = curve_proxy("PULL", "PUSH")
    consumer = curve_client(ctx, zmq.PULL, keys.public, keys.clients[0])
    connect_wait(consumer, proxy.backend)
    producer = curve_client(ctx, zmq.PUSH, keys.public, keys.clients[1])
    connect_wait(producer, proxy.frontend)
    sent = []
    for i in range(2000):
        msg = [b"%d" % i] if i % 7 else [b"%d" % i, b"", b"z" * (300_000 if i == 700 else i)]
        producer.send_multipart(msg)
        sent.append(msg)
    got = [consumer.recv_multipart() for _ in range(len(sent))]
    assert got == sent


def test_shared_queue_curve_requests_and_replies(ctx, curve_proxy):
    """REQ clients and a REP worker, all CURVE, through ROUTER/DEALER: each reply reaches its
    requester."""
    proxy, keys, _ = curve_proxy("ROUTER", "DEALER")
    worker = curve_client(ctx, zmq.REP, keys.public, keys.clients[0])
    connect_wait(worker, proxy.backend)
    clients = [curve_client(ctx, zmq.REQ, keys.public, keys.clients[1]) for _ in range(3)]
    for c in clients:
        connect_wait(c, proxy.frontend)
    for i in range(30):
        for n, c in enumerate(clients):
            c.send(b"req %d %d" % (n, i))
        for _ in clients:
            worker.send(b"rep " + worker.recv())
        for n, c in enumerate(clients):
            assert c.recv() == b"rep req %d %d" % (n, i)


def test_forwarder_curve_subscriptions_flow_upstream(ctx, curve_proxy):
    """PUB -> XSUB/XPUB -> SUB, all CURVE: the subscription crosses, only its topic arrives."""
    proxy, keys, _ = curve_proxy("XSUB", "XPUB")
    sub = curve_client(ctx, zmq.SUB, keys.public, keys.clients[0])
    sub.setsockopt(zmq.SUBSCRIBE, b"a")
    connect_wait(sub, proxy.backend)
    pub = curve_client(ctx, zmq.PUB, keys.public, keys.clients[1])
    connect_wait(pub, proxy.frontend)
    probe_until(lambda: pub.send(b"a-probe"), {"sub": (sub, lambda f: f == [b"a-probe"])})
    recv_until_quiet(sub, quiet=0.2)
    for i in range(100):
        pub.send_multipart([b"b%d" % i])
        pub.send_multipart([b"a%d" % i, b"x"])
    got = recv_until_quiet(sub, quiet=0.5)
    assert got == [[b"a%d" % i, b"x"] for i in range(100)]


def test_proxy_is_a_curve_client_of_pyzmq_servers_with_a_key_file_and_an_ephemeral_key(ctx, start_proxy, tmp_path):
    """The proxy's backend DEALER connects to a pyzmq CURVE ROUTER that only admits the proxy's
    client key (ZAP); its frontend PULL... here a ROUTER/DEALER chain: a REQ client (NULL) asks,
    the pyzmq CURVE ROUTER answers through the proxy. A second proxy connects with an ephemeral
    key to a pyzmq CURVE PULL server that accepts anyone."""
    server_public, server_secret = zmq.curve_keypair()
    proxy_public, proxy_secret = zmq.curve_keypair()
    client_file = tmp_path / "proxy_client.key"
    client_file.write_bytes(proxy_secret)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    try:
        certs = tmp_path / "certs"
        certs.mkdir()
        (certs / "proxy.key").write_text(f'metadata\ncurve\n    public-key = "{proxy_public.decode()}"\n')
        auth.configure_curve(domain="*", location=str(certs))
        router = ctx.socket(zmq.ROUTER)
        router.curve_server = True
        router.curve_secretkey, router.curve_publickey = server_secret, server_public
        rport = router.bind_to_random_port("tcp://127.0.0.1")
        fport = free_ports(1)[0]
        start_proxy([
            "--frontend-type", "ROUTER", "--frontend-bind", ep(fport),
            "--backend-type", "DEALER", "--backend-connect", ep(rport),
            "--backend-curve-server-public-key", server_public.decode(),
            "--backend-curve-client-key-file", str(client_file), "--log-format", "json",
        ])  # fmt: skip
        req = ctx.socket(zmq.REQ)
        connect_wait(req, ep(fport))
        for i in range(20):
            req.send(b"q%d" % i)
            frames = router.recv_multipart()
            assert frames[-1] == b"q%d" % i
            router.send_multipart(frames[:-1] + [b"a%d" % i])
            assert req.recv() == b"a%d" % i
    finally:
        auth.stop()

    pull = ctx.socket(zmq.PULL)
    pull.curve_server = True
    pull.curve_secretkey, pull.curve_publickey = server_secret, server_public
    pport = pull.bind_to_random_port("tcp://127.0.0.1")
    fport = free_ports(1)[0]
    p = start_proxy([
        "--frontend-type", "PULL", "--frontend-bind", ep(fport),
        "--backend-type", "PUSH", "--backend-connect", ep(pport),
        "--backend-curve-server-public-key-file", str(_public_file(tmp_path, server_public)),
        "--log-format", "json",
    ])  # fmt: skip
    ev = p.wait_for_event("CURVE client uses an ephemeral keypair", 5)
    assert ev is not None and len(ev["fields"]["public_key"]) == 40
    push = ctx.socket(zmq.PUSH)
    connect_wait(push, ep(fport))
    for i in range(50):
        push.send(b"m%d" % i)
    assert [pull.recv() for _ in range(50)] == [b"m%d" % i for i in range(50)]


def _public_file(tmp: Path, public: bytes) -> Path:
    f = tmp / "server.pub"
    f.write_text(f'#   ZeroMQ CURVE Public Certificate\n\nmetadata\ncurve\n    public-key = "{public.decode()}"\n')
    return f


def test_capture_and_control_are_secured(ctx, curve_proxy):
    """A CURVE SUB on the capture socket sees the traffic; a CURVE REQ on the control socket
    gets STATISTICS; a NULL requester on the control socket is refused and counted."""
    proxy, keys, http = curve_proxy("PULL", "PUSH", secure=("frontend", "backend", "capture", "control"), capture="PUB")
    cap = curve_client(ctx, zmq.SUB, keys.public, keys.clients[0])
    cap.setsockopt(zmq.SUBSCRIBE, b"")
    connect_wait(cap, proxy.capture)
    consumer = curve_client(ctx, zmq.PULL, keys.public, keys.clients[0])
    connect_wait(consumer, proxy.backend)
    producer = curve_client(ctx, zmq.PUSH, keys.public, keys.clients[1])
    connect_wait(producer, proxy.frontend)
    for i in range(10):
        producer.send(b"c%d" % i)
    assert [consumer.recv() for _ in range(10)] == [b"c%d" % i for i in range(10)]
    assert [f[0] for f in recv_until_quiet(cap, quiet=0.3)] == [b"c%d" % i for i in range(10)]
    ctl = curve_client(ctx, zmq.REQ, keys.public, keys.clients[1])
    connect_wait(ctl, proxy.control)
    ctl.send(b"STATISTICS")
    stats = ctl.recv_multipart()
    assert len(stats) == 8 and int.from_bytes(stats[0], "little") == 10
    plain = ctx.socket(zmq.REQ)
    plain.connect(proxy.control)
    wait_refused(http, ("control", "CURVE", "mechanism_mismatch"))


def test_curve_frontend_with_null_backend_and_mismatches_refused(ctx, curve_proxy):
    """A public CURVE frontend and a private NULL backend: CURVE producers and NULL consumers
    work; a NULL peer on the frontend and a CURVE peer on the backend are refused as
    mechanism mismatches; nothing of theirs is forwarded."""
    proxy, keys, http = curve_proxy("PULL", "PUSH", secure=("frontend",))
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    plain = ctx.socket(zmq.PUSH)
    plain.connect(proxy.frontend)
    plain.send(b"from a NULL peer")
    wait_refused(http, ("frontend", "CURVE", "mechanism_mismatch"))
    curvy = curve_client(ctx, zmq.PULL, keys.public, keys.clients[0])
    curvy.connect(proxy.backend)
    wait_refused(http, ("backend", "NULL", "mechanism_mismatch"))
    producer = curve_client(ctx, zmq.PUSH, keys.public, keys.clients[0])
    connect_wait(producer, proxy.frontend)
    for i in range(20):
        producer.send(b"ok%d" % i)
    assert [f[0] for f in recv_until_quiet(consumer, quiet=0.3)] == [b"ok%d" % i for i in range(20)]


def test_each_refusal_is_counted_and_a_good_client_still_works(ctx, curve_proxy):
    """Wrong server key, a client key not on the list: refused, counted by reason, nothing
    forwarded; an allowed client connecting after each still gets through."""
    proxy, keys, http = curve_proxy("PULL", "PUSH", secure=("frontend",))
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    wrong_server, _ = zmq.curve_keypair()
    cases = [
        ("wrong_server_key", lambda: curve_client(ctx, zmq.PUSH, wrong_server, keys.clients[0])),
        ("unknown_client_key", lambda: curve_client(ctx, zmq.PUSH, keys.public, keys.clients[2])),
    ]
    for n, (reason, make) in enumerate(cases):
        bad = make()
        bad.connect(proxy.frontend)
        bad.send(b"evil")
        wait_refused(http, ("frontend", "CURVE", reason))
        good = curve_client(ctx, zmq.PUSH, keys.public, keys.clients[1])
        connect_wait(good, proxy.frontend)
        good.send(b"good%d" % n)
        assert consumer.recv() == b"good%d" % n
        bad.close(0)
        good.close(0)
    assert recv_until_quiet(consumer, quiet=0.3) == []


def test_allow_list_reload_adds_and_removes_clients_live(ctx, curve_proxy, tmp_path):
    """The allow-list is a Kubernetes-style mount (names linked through a swapped `..data`
    symlink). Removing a client disconnects it while the kept client's stream goes on over the
    same connection; a client refused before it was added gets through once it is."""
    proxy, keys, http = curve_proxy("PULL", "PUSH", secure=("frontend",), extra=())
    # Re-point the proxy at a directory mount: a second proxy over the same keys.
    mount = tmp_path / "mount"
    mount.mkdir()

    def publish(*clients):
        stamp = mount / f"..{time.monotonic_ns()}"
        stamp.mkdir()
        for i, c in enumerate(clients):
            (stamp / f"client{i}.key").write_text(f'metadata\ncurve\n    public-key = "{c[0].decode()}"\n')
        tmp_link = mount / "..data_tmp"
        tmp_link.symlink_to(stamp.name)
        os.replace(tmp_link, mount / "..data")
        for i in range(3):
            link = mount / f"client{i}.key"
            if not link.is_symlink():
                link.symlink_to(f"..data/client{i}.key")

    a, b, c = keys.clients
    publish(a, b)
    ports = free_ports(3)
    from zmqpeers import Proxy  # noqa: PLC0415

    p2 = Proxy([
        "--frontend-type", "PULL", "--frontend-bind", ep(ports[0]),
        "--backend-type", "PUSH", "--backend-bind", ep(ports[1]),
        "--frontend-curve-server-key-file", str(keys.secret_file),
        "--frontend-curve-authorized-keys", str(mount),
        "--http-bind", f"127.0.0.1:{ports[2]}", "--log-format", "json",
    ])  # fmt: skip
    try:
        p2.wait_running(10)
        consumer = ctx.socket(zmq.PULL)
        connect_wait(consumer, ep(ports[1]))
        kept = curve_client(ctx, zmq.PUSH, keys.public, a)
        connect_wait(kept, ep(ports[0]))
        removed = curve_client(ctx, zmq.PUSH, keys.public, b)
        connect_wait(removed, ep(ports[0]))
        kept_mon = monitor(kept, zmq.EVENT_DISCONNECTED)
        removed_mon = monitor(removed, zmq.EVENT_DISCONNECTED)
        added = curve_client(ctx, zmq.PUSH, keys.public, c)
        added.connect(ep(ports[0]))
        wait_refused(ports[2], ("frontend", "CURVE", "unknown_client_key"))
        kept.send(b"a0")
        removed.send(b"b0")
        assert sorted(f[0] for f in recv_until_quiet(consumer, quiet=0.3)) == [b"a0", b"b0"]

        publish(a, c)
        assert removed_mon.poll(10_000), "the removed client was never disconnected"
        assert recv_monitor_message(removed_mon)["event"] == zmq.EVENT_DISCONNECTED
        # libzmq does not reconnect after a server's ERROR (a protocol error to it), so the
        # refused client comes back as a new connection, as an operator would restart it.
        added.close(0)
        added = curve_client(ctx, zmq.PUSH, keys.public, c)
        connect_wait(added, ep(ports[0]))
        added.send(b"c0")
        for i in range(1, 20):
            kept.send(b"a%d" % i)
        got = [f[0] for f in recv_until_quiet(consumer, quiet=0.5, total=15)]
        assert [g for g in got if g.startswith(b"a")] == [b"a%d" % i for i in range(1, 20)]
        assert b"c0" in got, got
        assert not kept_mon.poll(100), "the kept client was disconnected"
    finally:
        p2.stop(5)
        p2.close()


def test_control_requester_removed_from_the_allow_list_is_disconnected(ctx, curve_proxy):
    """Whoever may connect to the control socket can PAUSE and TERMINATE the proxy: a requester
    whose key leaves the allow-list loses its connection at the next re-read, while a kept
    requester goes on over its own."""
    proxy, keys, http = curve_proxy("PULL", "PUSH", secure=("control",))
    a, b, _ = keys.clients
    kept = curve_client(ctx, zmq.REQ, keys.public, a)
    connect_wait(kept, proxy.control)
    removed = curve_client(ctx, zmq.REQ, keys.public, b)
    connect_wait(removed, proxy.control)
    removed_mon = monitor(removed, zmq.EVENT_DISCONNECTED)
    kept_mon = monitor(kept, zmq.EVENT_DISCONNECTED)
    for s in (kept, removed):
        s.send(b"STATISTICS")
        assert s.poll(5000), "no STATISTICS reply before the change"
        assert len(s.recv_multipart()) == 8
    keys.allow_only(a)
    assert removed_mon.poll(10_000), "the removed requester was never disconnected"
    assert recv_monitor_message(removed_mon)["event"] == zmq.EVENT_DISCONNECTED
    kept.send(b"STATISTICS")
    assert kept.poll(5000), "the kept requester lost the control socket"
    assert len(kept.recv_multipart()) == 8
    assert not kept_mon.poll(100), "the kept requester was disconnected"


def _lcg(seed: int):
    r = random.Random(seed)
    return lambda n: bytes(r.getrandbits(8) for _ in range(n))


def test_garbage_and_truncated_curve_handshakes_never_hurt_the_proxy(ctx, curve_proxy):
    """300 raw connections (fixed seeds) send a CURVE greeting followed by a random, truncated
    or bit-flipped HELLO/INITIATE, or plain garbage; the proxy keeps running and an allowed
    client still gets through afterwards."""
    proxy, keys, http = curve_proxy("PULL", "PUSH", secure=("frontend",))
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    port = int(proxy.frontend.rsplit(":", 1)[1])
    hello_shape = b"\x04\xc8\x05HELLO\x01\x00" + b"\x00" * 72
    for seed in range(300):
        rnd = _lcg(seed)
        kind = seed % 5
        payload = zmtp_greeting(mechanism=b"CURVE")
        if kind == 0:
            payload += rnd(1 + seed % 400)
        elif kind == 1:
            payload += (hello_shape + rnd(120))[: 2 + seed % 200]
        elif kind == 2:
            payload += hello_shape + rnd(120)  # a full-size HELLO whose box never opens
        elif kind == 3:
            payload += b"\x04\xff\x08INITIATE" + rnd(246)
        else:
            payload = rnd(1 + seed % 100)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            try:
                s.sendall(payload)
                s.settimeout(0.05)
                s.recv(4096)
            except OSError:
                pass
    assert proxy.running
    good = curve_client(ctx, zmq.PUSH, keys.public, keys.clients[0])
    connect_wait(good, proxy.frontend)
    good.send(b"still here")
    assert consumer.recv() == b"still here"
    counted = metrics(http)
    assert sum(v for (sock, _, _), v in counted.items() if sock == "frontend") >= 200, counted
