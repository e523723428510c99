"""ZMTP 2.0 peers (RFC 15), written here from the spec with raw sockets, against the proxy:
version negotiation as RFC 23's "Backwards interoperability" section asks (the proxy answers a
2.0 signature and revision with its major version and its socket type byte, then speaks 2.0
framing: an identity frame, frames with MORE and LONG, no commands), every pattern with pyzmq
(libzmq 4.3.5) on the other side, subscriptions in the 2.0 message form, CURVE refused, no
heartbeats. Refusals are logged once per peer address and reason a minute, naming both.

libzmq's own zmq_proxy passes every test here that does not read zmq-proxy's log or metrics
(`ZMQ_PROXY_BIN=proxy/tests/peers/reference_proxy.py`)."""

from __future__ import annotations

import re
import socket
import threading
import urllib.request

import pytest
import zmq

from zmqpeers import HOST, connect_wait, ep, free_ports, log_fields, log_message, raw_connect, recv_exact, until, zmtp_greeting

MORE, LONG = 0x01, 0x02
# RFC 15's socket type numbers (libzmq's ZMQ_* constants, which libzmq 3.x and 4.x send).
V2_TYPES = {
    "PAIR": 0, "PUB": 1, "SUB": 2, "REQ": 3, "REP": 4, "DEALER": 5,
    "ROUTER": 6, "PULL": 7, "PUSH": 8, "XPUB": 9, "XSUB": 10,
}  # fmt: skip
# A ZMTP 2.0 signature: 0xFF, the length field of a ZMTP 1.0 identity (empty, plus one), 0x7F.
SIGNATURE = b"\xff" + b"\x00" * 7 + b"\x01\x7f"


def v2_frames(frames: list[bytes]) -> bytes:
    """One message in ZMTP 2.0 framing: flags (MORE, LONG), a 1- or 8-byte length, the body."""
    out = b""
    for i, f in enumerate(frames):
        more = MORE if i < len(frames) - 1 else 0
        if len(f) > 255:
            out += bytes([more | LONG]) + len(f).to_bytes(8, "big") + f
        else:
            out += bytes([more, len(f)]) + f
    return out


class V2Peer:
    """A ZMTP 2.0 peer on a raw socket. It sends its whole greeting (signature, revision 1,
    socket type, identity frame) at once, as RFC 15 allows, then reads the proxy's."""

    def __init__(self, port: int, socket_type: str, identity: bytes = b"", timeout: float = 5.0):
        self.sock = raw_connect(port, timeout)
        self.sock.sendall(SIGNATURE + bytes([1, V2_TYPES[socket_type]]) + v2_frames([identity]))
        self.greeting = recv_exact(self.sock, 12, timeout)
        assert len(self.greeting) == 12, f"the proxy's greeting to a 2.0 peer: {self.greeting!r}"
        self.identity = self.read_frame(timeout)

    def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        head = recv_exact(self.sock, 2, timeout)
        assert len(head) == 2, f"connection ended before a frame header: {head!r}"
        flags = head[0]
        assert flags & ~(MORE | LONG) == 0, f"flags {flags:#x}: ZMTP 2.0 has only MORE and LONG"
        if flags & LONG:
            rest = recv_exact(self.sock, 7, timeout)
            size = int.from_bytes(head[1:] + rest, "big")
        else:
            size = head[1]
        body = recv_exact(self.sock, size, timeout)
        assert len(body) == size, f"frame cut short: {len(body)} of {size}"
        return flags, body

    def recv(self, timeout: float = 5.0) -> list[bytes]:
        frames = []
        for _ in range(10_000):
            flags, body = self.read_frame(timeout)
            frames.append(body)
            if not flags & MORE:
                return frames
        raise AssertionError("a message of more than 10 000 frames")

    def send(self, frames: list[bytes]) -> None:
        self.sock.sendall(v2_frames(frames))

    def closed_within(self, timeout: float) -> bool:
        """Whether the proxy closed the connection (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            for _ in range(10_000):
                if not self.sock.recv(4096):
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    "front,back,peer_side,peer_type",
    [
        ("ROUTER", "DEALER", "frontend", "REQ"),
        ("ROUTER", "DEALER", "backend", "REP"),
        ("XSUB", "XPUB", "frontend", "PUB"),
        ("XSUB", "XPUB", "backend", "SUB"),
        ("PULL", "PUSH", "frontend", "PUSH"),
        ("PULL", "PUSH", "backend", "PULL"),
        ("SUB", "PUB", "frontend", "PUB"),
        ("SUB", "PUB", "backend", "SUB"),
    ],
)
def test_the_proxy_answers_a_2_0_greeting_with_its_major_version_and_socket_type(proxy_pair, front, back, peer_side, peer_type):
    """RFC 23: to a peer whose revision is below 3 the proxy sends its major version (3), then
    its socket type as a 2.0 peer expects it (RFC 15's number), then an empty identity frame."""
    proxy = proxy_pair(front, back)
    ours = front if peer_side == "frontend" else back
    peer = V2Peer(port_of(getattr(proxy, peer_side)), peer_type)
    try:
        g = peer.greeting
        assert g[0] == 0xFF and g[9] & 0x01, f"signature {g[:10].hex()}"
        assert g[10] == 3, f"major version {g[10]}"
        assert g[11] == V2_TYPES[ours], f"socket type byte {g[11]} for {ours} (RFC 15: {V2_TYPES[ours]})"
        assert peer.identity == (0, b""), f"identity frame {peer.identity}"
    finally:
        peer.close()


def test_2_0_req_through_router_dealer_to_a_pyzmq_rep(ctx, proxy_pair):
    """A 2.0 REQ's requests (empty delimiter, a short and a long frame) reach a pyzmq REP whole
    and its replies come back in 2.0 framing."""
    proxy = proxy_pair("ROUTER", "DEALER")
    worker = ctx.socket(zmq.REP)
    connect_wait(worker, proxy.backend)
    client = V2Peer(port_of(proxy.frontend), "REQ")
    big = bytes(range(256)) * 3
    for i in range(50):
        client.send([b"", b"q%d" % i, big])
        assert worker.poll(5000), f"request {i} never reached the worker"
        got = worker.recv_multipart()
        assert got == [b"q%d" % i, big], f"{got!r:.200}"
        worker.send_multipart([b"a%d" % i, big])
        assert client.recv() == [b"", b"a%d" % i, big]
    client.close()


def test_pyzmq_req_through_router_dealer_to_a_2_0_rep(ctx, proxy_pair):
    """A 2.0 REP worker behind the DEALER sees the whole envelope (routing frames, delimiter,
    body) and its reply, envelope returned, reaches the pyzmq REQ that asked."""
    proxy = proxy_pair("ROUTER", "DEALER")
    worker = V2Peer(port_of(proxy.backend), "REP")
    client = ctx.socket(zmq.REQ)
    connect_wait(client, proxy.frontend)
    for i in range(50):
        body = b"x" * (i * 7)
        client.send_multipart([b"q%d" % i, body])
        req = worker.recv()
        assert req[-2:] == [b"q%d" % i, body] and b"" in req[:-2], f"{req!r:.200}"
        envelope = req[: req.index(b"") + 1]
        worker.send(envelope + [b"a%d" % i, body])
        assert client.poll(5000), f"no reply to request {i}"
        assert client.recv_multipart() == [b"a%d" % i, body]
    worker.close()


def test_2_0_subscriber_subscribes_in_the_message_form(ctx, proxy_pair):
    """A 2.0 SUB subscribes with a `\\x01topic` message (2.0 has no SUBSCRIBE command): the
    pyzmq XPUB upstream sees it, the subscriber gets that topic only, and `\\x00topic` cancels."""
    proxy = proxy_pair("XSUB", "XPUB")
    pub = ctx.socket(zmq.XPUB)
    connect_wait(pub, proxy.frontend)
    sub = V2Peer(port_of(proxy.backend), "SUB")
    sub.send([b"\x01news"])
    assert pub.poll(5000), "the 2.0 subscription never reached the publisher"
    assert pub.recv() == b"\x01news"
    for i in range(20):
        pub.send(b"other|%d" % i)
        pub.send_multipart([b"news|%d" % i, b"y" * 400])
        assert sub.recv() == [b"news|%d" % i, b"y" * 400]
    sub.send([b"\x00news"])
    assert pub.poll(5000), "the cancel never reached the publisher"
    assert pub.recv() == b"\x00news"
    sub.close()


def test_2_0_publisher_gets_subscriptions_as_messages(ctx, proxy_pair):
    """A 2.0 PUB on the XSUB side is sent a pyzmq SUB's subscription and its cancel as the
    messages `\\x01topic` / `\\x00topic` (never a 3.1 command), and what it publishes arrives."""
    proxy = proxy_pair("XSUB", "XPUB")
    pub = V2Peer(port_of(proxy.frontend), "PUB")
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"weather")
    connect_wait(sub, proxy.backend)
    assert pub.read_frame() == (0, b"\x01weather")
    got = None
    for i in until(10, 10_000):
        pub.send([b"weather|%d" % i])
        if sub.poll(20):
            got = sub.recv()
            break
    assert got is not None and got.startswith(b"weather|"), got
    sub.unsubscribe(b"weather")
    assert pub.read_frame() == (0, b"\x00weather")
    pub.close()


def test_2_0_push_and_pull_both_ways(ctx, proxy_pair):
    """2.0 PUSH -> PULL/PUSH -> pyzmq PULL, and pyzmq PUSH -> the proxy -> 2.0 PULL: every
    message whole (multipart, long frames) and in order."""
    proxy = proxy_pair("PULL", "PUSH")
    pull = ctx.socket(zmq.PULL)
    connect_wait(pull, proxy.backend)
    push = V2Peer(port_of(proxy.frontend), "PUSH")
    for i in range(100):
        push.send([b"m%d" % i, b"z" * (i * 5)])
    for i in range(100):
        assert pull.poll(5000), f"message {i} never arrived"
        assert pull.recv_multipart() == [b"m%d" % i, b"z" * (i * 5)]
    pull.close()
    # The other way round: the 2.0 peer pulls what a pyzmq PUSH sends.
    proxy2 = proxy_pair("PULL", "PUSH")
    sink = V2Peer(port_of(proxy2.backend), "PULL")
    src = ctx.socket(zmq.PUSH)
    connect_wait(src, proxy2.frontend)
    for i in range(100):
        src.send_multipart([b"n%d" % i, b"w" * (i * 5)])
    for i in range(100):
        assert sink.recv() == [b"n%d" % i, b"w" * (i * 5)]
    push.close()
    sink.close()


def test_2_0_router_uses_the_peers_identity(ctx, proxy_pair):
    """A 2.0 DEALER that names itself in its identity frame is routed to by that name: a pyzmq
    ROUTER behind a DEALER/ROUTER proxy sees the request come from it and answers it."""
    proxy = proxy_pair("ROUTER", "DEALER")
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, proxy.backend)
    client = V2Peer(port_of(proxy.frontend), "DEALER", identity=b"legacy-7")
    client.send([b"", b"hello"])
    assert worker.poll(5000)
    got = worker.recv_multipart()
    assert got == [b"legacy-7", b"", b"hello"], got
    worker.send_multipart([b"legacy-7", b"", b"world"])
    assert client.recv() == [b"", b"world"]
    client.close()


def test_incompatible_2_0_socket_type_is_refused(proxy_pair):
    """A 2.0 PUB greeting a ROUTER is closed, as a 3.x one is."""
    proxy = proxy_pair("ROUTER", "DEALER")
    s = raw_connect(port_of(proxy.frontend))
    s.sendall(SIGNATURE + bytes([1, V2_TYPES["PUB"]]) + v2_frames([b""]))
    peer = V2Peer.__new__(V2Peer)
    peer.sock = s
    assert peer.closed_within(5), "a 2.0 PUB was served by a ROUTER"
    s.close()


def _metrics(port: int) -> dict[tuple[str, str, str], int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return {
        (m[1], m[2], m[3]): int(m[4])
        for m in re.finditer(
            r'^zmq_proxy_handshake_failures_total\{socket="(\w+)",mechanism="(\w+)",reason="(\w+)"\} (\d+)', text, re.M
        )
    }


def _refusals(proxy) -> list[dict]:
    return [e for e in proxy.events() if " refused: " in (log_message(e) or "")]


def test_2_0_peer_on_a_curve_socket_is_refused_once_logged_naming_peer_and_reason(ctx, start_proxy, tmp_path):
    """CURVE is ZMTP 3 only: a 2.0 peer greeting a CURVE server socket is closed, counted under
    `zmtp2_on_curve`, and logged at the default level as `peer ADDR:PORT refused: ZMTP 2.0
    greeting on a CURVE socket`. Five such peers in a row from one address give one line; a
    refusal of another reason from the same address gives its own; a CURVE client still works."""
    public, secret = zmq.curve_keypair()
    (tmp_path / "server.key").write_bytes(secret + b"\n")
    ports = free_ports(3)
    proxy = start_proxy([
        "--frontend-type", "PULL", "--frontend-bind", ep(ports[0]),
        "--backend-type", "PUSH", "--backend-bind", ep(ports[1]),
        "--frontend-curve-server-key-file", str(tmp_path / "server.key"), "--curve-allow-any",
        "--http-bind", f"127.0.0.1:{ports[2]}", "--log-format", "json",
    ])  # fmt: skip
    addrs = []
    for _ in range(5):
        s = raw_connect(ports[0])
        addrs.append("%s:%d" % s.getsockname())
        s.sendall(SIGNATURE + bytes([1, V2_TYPES["PUSH"]]) + v2_frames([b""]))
        peer = V2Peer.__new__(V2Peer)
        peer.sock = s
        assert peer.closed_within(5), "a 2.0 peer was served on a CURVE socket"
        s.close()
    key = ("frontend", "CURVE", "zmtp2_on_curve")
    for _ in until(5, 1000):
        if _metrics(ports[2]).get(key, 0) >= 5:
            break
    assert _metrics(ports[2]).get(key) == 5, _metrics(ports[2])
    # Another reason from the same address is logged too, once. Its line comes after every line
    # of the refusals above (one writer, in order), so once it shows, they all have.
    for _ in range(3):
        s = raw_connect(ports[0])
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        peer = V2Peer.__new__(V2Peer)
        peer.sock = s
        assert peer.closed_within(5)
        s.close()

    def with_reason(reason: str) -> list[dict]:
        return [e for e in _refusals(proxy) if log_fields(e).get("reason") == reason]

    for _ in until(10, 10_000):
        if with_reason("bad_greeting"):
            break
        proxy.wait_for_event("no such line", 0.05)
    other = with_reason("bad_greeting")
    assert len(other) == 1 and log_message(other[0]).startswith("peer 127.0.0.1:"), other
    lines = with_reason("zmtp2_on_curve")
    assert len(lines) == 1, f"expected one line for five refusals in a minute: {lines}"
    assert log_message(lines[0]) == f"peer {addrs[0]} refused: ZMTP 2.0 greeting on a CURVE socket", lines[0]
    assert lines[0].get("level") in ("INFO", "WARN"), lines[0]
    fields = log_fields(lines[0])
    assert (fields.get("peer"), fields.get("socket"), fields.get("mechanism")) == (addrs[0], "frontend", "CURVE"), fields
    # A CURVE client is served all along.
    pull = ctx.socket(zmq.PULL)
    connect_wait(pull, ep(ports[1]))
    push = ctx.socket(zmq.PUSH)
    push.curve_serverkey = public
    push.curve_publickey, push.curve_secretkey = zmq.curve_keypair()
    connect_wait(push, ep(ports[0]))
    push.send(b"secured")
    assert pull.poll(5000) and pull.recv() == b"secured"


def test_2_0_peers_get_no_heartbeats_and_are_not_dropped_for_silence(ctx, proxy_pair):
    """ZMTP 2.0 has no PING: on a socket with heartbeats a 2.0 peer is sent none, stays
    connected while silent for many timeouts, and its next message still goes through."""
    proxy = proxy_pair("PULL", "PUSH", extra=(
        "--frontend-heartbeat-interval", "100", "--frontend-heartbeat-timeout", "300",
    ))  # fmt: skip
    pull = ctx.socket(zmq.PULL)
    connect_wait(pull, proxy.backend)
    push = V2Peer(port_of(proxy.frontend), "PUSH")
    push.sock.settimeout(1.5)
    try:
        extra = push.sock.recv(100)
    except (socket.timeout, TimeoutError):
        extra = None
    assert extra is None, f"a 2.0 peer was sent {extra!r} (a PING, or the connection closed)"
    push.send([b"still here"])
    assert pull.poll(5000) and pull.recv() == b"still here"
    push.close()


def test_a_command_frame_from_a_2_0_peer_drops_it(ctx, proxy_pair):
    """Flag bit 2 (COMMAND in ZMTP 3) is reserved in 2.0: a frame with it ends that peer's
    connection, and another 2.0 peer keeps being served."""
    proxy = proxy_pair("PULL", "PUSH")
    pull = ctx.socket(zmq.PULL)
    connect_wait(pull, proxy.backend)
    bad = V2Peer(port_of(proxy.frontend), "PUSH")
    bad.sock.sendall(b"\x04\x05\x04PING")
    assert bad.closed_within(5), "a 2.0 peer sending a command frame was kept"
    good = V2Peer(port_of(proxy.frontend), "PUSH")
    good.send([b"ok"])
    assert pull.poll(5000) and pull.recv() == b"ok"
    good.close()


def test_3_x_peers_greet_as_before(proxy_pair):
    """A 3.0 greeting sent whole still gets the proxy's whole 3.1 greeting back."""
    proxy = proxy_pair("PULL", "PUSH")
    s = raw_connect(port_of(proxy.frontend))
    s.sendall(zmtp_greeting(minor=0))
    g = recv_exact(s, 64)
    s.close()
    assert len(g) == 64 and g[10:12] == b"\x03\x01" and g[12:16] == b"NULL", g
