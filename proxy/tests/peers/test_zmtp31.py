"""ZMTP 3.1 through an XSUB/XPUB forwarder: the proxy greets as 3.1, sends subscriptions to a
peer in the form of the revision it greeted with (RFC 37's SUBSCRIBE/CANCEL commands to 3.1,
the `\\x01topic`/`\\x00topic` messages of RFC 23 to 3.0), and accepts either form from anyone,
as libzmq 4.3 does.

pyzmq (libzmq 4.3.5) speaks 3.1; the raw peers here are python sockets that greet with the
revision a test picks and write and read ZMTP frames byte by byte, so the exact bytes the proxy
sends are asserted."""

from __future__ import annotations

import select
import socket

import pytest
import zmq

from zmqpeers import connect_wait, probe_until, raw_connect, recv_exact, until, zmtp_greeting, zmtp_ready

FLAG_MORE, FLAG_LONG, FLAG_COMMAND = 0x01, 0x02, 0x04


def read_frame(s: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """One ZMTP frame (flags, body) from a raw peer's socket."""
    head = recv_exact(s, 2, timeout)
    assert len(head) == 2, f"connection ended before a frame header: {head!r}"
    flags = head[0]
    if flags & FLAG_LONG:
        rest = recv_exact(s, 7, timeout)
        size = int.from_bytes(head[1:] + rest, "big")
    else:
        size = head[1]
    body = recv_exact(s, size, timeout)
    assert len(body) == size, f"frame cut short: {len(body)} of {size} bytes"
    return flags, body


def frame(flags: int, body: bytes) -> bytes:
    assert len(body) < 256
    return bytes([flags, len(body)]) + body


def command(name: bytes, data: bytes) -> bytes:
    return frame(FLAG_COMMAND, bytes([len(name)]) + name + data)


def raw_peer(port: int, minor: int, socket_type: bytes) -> tuple[socket.socket, bytes]:
    """A raw peer greeting as ZMTP 3.`minor` and READY as `socket_type`; returns it with the
    proxy's greeting, after reading the proxy's READY."""
    s = raw_connect(port)
    s.sendall(zmtp_greeting(minor=minor) + zmtp_ready(socket_type))
    greeting = recv_exact(s, 64)
    assert len(greeting) == 64, f"proxy greeting: {greeting!r}"
    flags, body = read_frame(s)
    assert flags == FLAG_COMMAND and body.startswith(b"\x05READY"), (flags, body)
    return s, greeting


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_proxy_greets_as_zmtp_3_1(proxy_pair):
    proxy = proxy_pair("XSUB", "XPUB")
    s, greeting = raw_peer(port_of(proxy.backend), 0, b"SUB")
    s.close()
    assert greeting[10:12] == b"\x03\x01", f"version {greeting[10]}.{greeting[11]}"
    assert greeting[12:16] == b"NULL"


@pytest.mark.parametrize(
    "minor,subscribe,cancel",
    [
        (0, frame(0, b"\x01weather"), frame(0, b"\x00weather")),
        (1, command(b"SUBSCRIBE", b"weather"), command(b"CANCEL", b"weather")),
    ],
    ids=["zmtp-3.0-publisher-gets-one-byte-form", "zmtp-3.1-publisher-gets-commands"],
)
def test_subscriptions_reach_a_raw_publisher_in_its_revisions_form(ctx, proxy_pair, minor, subscribe, cancel):
    """A raw publisher on the XSUB side is sent exactly the bytes of its revision's form when a
    pyzmq subscriber subscribes and unsubscribes; what it publishes reaches the subscriber."""
    proxy = proxy_pair("XSUB", "XPUB")
    pub, _ = raw_peer(port_of(proxy.frontend), minor, b"PUB")
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"weather")
    connect_wait(sub, proxy.backend)
    flags, body = read_frame(pub)
    assert frame(flags, body) == subscribe
    got = None
    for i in until(10, 10_000):
        pub.sendall(frame(0, b"weather|%d" % i))
        if sub.poll(20):
            got = sub.recv()
            break
    assert got is not None and got.startswith(b"weather|"), got
    sub.unsubscribe(b"weather")
    flags, body = read_frame(pub)
    assert frame(flags, body) == cancel
    pub.close()


@pytest.mark.parametrize("minor", [0, 1], ids=["zmtp-3.0-subscriber", "zmtp-3.1-subscriber"])
@pytest.mark.parametrize("form", ["message", "command"])
def test_either_subscription_form_is_accepted_from_either_revision(ctx, proxy_pair, minor, form):
    """A raw subscriber on the XPUB side subscribes and cancels in either form, whatever it
    greeted with: a pyzmq XPUB publisher upstream sees the subscription and the cancel (as
    libzmq hands them to an XPUB: `\\x01topic` / `\\x00topic`), and the raw subscriber gets the
    topic's messages in between."""
    proxy = proxy_pair("XSUB", "XPUB")
    upstream = ctx.socket(zmq.XPUB)
    connect_wait(upstream, proxy.frontend)
    sub, _ = raw_peer(port_of(proxy.backend), minor, b"SUB")
    if form == "message":
        subscribe, cancel = frame(0, b"\x01news"), frame(0, b"\x00news")
    else:
        subscribe, cancel = command(b"SUBSCRIBE", b"news"), command(b"CANCEL", b"news")
    sub.sendall(subscribe)
    assert upstream.poll(5000), "the subscription never reached the publisher"
    assert upstream.recv() == b"\x01news"
    got = None
    for i in until(10, 10_000):
        upstream.send(b"news|%d" % i)
        if select.select([sub], [], [], 0.02)[0]:
            got = read_frame(sub)
            break
    assert got is not None and got[0] == 0 and got[1].startswith(b"news|"), got
    sub.sendall(cancel)
    for _ in until(5, 1000):
        if not upstream.poll(100):
            continue
        m = upstream.recv()
        if m == b"\x00news":
            break
    else:
        pytest.fail("the cancel never reached the publisher")
    sub.close()


def subscriptions_seen(xpub: zmq.Socket, want: set[bytes], timeout: float = 10.0) -> set[bytes]:
    """What a libzmq XPUB publisher is handed until it has seen every message of `want`."""
    seen: set[bytes] = set()
    for _ in until(timeout, 1000):
        if seen >= want:
            break
        if xpub.poll(100):
            seen.add(xpub.recv())
    return seen


@pytest.mark.parametrize("orientation", [("XSUB", "XPUB"), ("XPUB", "XSUB")], ids=["xsub-front", "xpub-front"])
def test_pyzmq_publishers_and_subscribers_speak_3_1_through_the_forwarder(ctx, proxy_pair, orientation):
    """libzmq 4.3.5 on both sides, both orientations of the forwarder: subscriptions (sent by
    libzmq as 3.1 commands, and by the proxy to libzmq as commands) select what arrives, an
    unsubscribe reaches the publisher, and later publishers get the current subscriptions."""
    front, back = orientation
    proxy = proxy_pair(front, back)
    pub_side = proxy.frontend if front == "XSUB" else proxy.backend
    sub_side = proxy.backend if front == "XSUB" else proxy.frontend
    publisher = ctx.socket(zmq.XPUB)
    connect_wait(publisher, pub_side)
    subs = {}
    for topic in (b"A", b"B"):
        s = ctx.socket(zmq.SUB)
        s.subscribe(topic)
        connect_wait(s, sub_side)
        subs[topic] = s
    both = {b"\x01A", b"\x01B"}
    assert subscriptions_seen(publisher, both) == both
    late = ctx.socket(zmq.XPUB)
    connect_wait(late, pub_side)
    assert subscriptions_seen(late, both) == both, "a late publisher gets the current subscriptions"

    def probe():
        for t in (b"A", b"B"):
            publisher.send(t + b"|probe")

    probe_until(probe, {t.decode(): (s, lambda f, t=t: f[0] == t + b"|probe") for t, s in subs.items()})
    for i in range(50):
        for t in (b"A", b"B", b"C"):
            publisher.send(t + b"|%d" % i)
    for t, s in subs.items():
        got = []
        for _ in until(10, 100_000):
            if len(got) == 50:
                break
            if s.poll(100):
                m = s.recv()
                if not m.endswith(b"|probe"):
                    got.append(m)
        assert got == [t + b"|%d" % i for i in range(50)], f"{t}: {got[:3]}"
    subs[b"A"].unsubscribe(b"A")
    for _ in until(5, 1000):
        if publisher.poll(100) and publisher.recv() == b"\x00A":
            break
    else:
        pytest.fail("the unsubscribe never reached the publisher")
