"""File descriptors: the proxy raises its soft RLIMIT_NOFILE to the hard limit and logs how many
peers that leaves room for; past that room a new connection is closed on accept, counted and
logged once, while the peers already connected keep being served and the proxy stays up."""

from __future__ import annotations

import socket
import urllib.request

import zmq

from zmqpeers import Proxy, connect_wait, ep, free_ports, log_message, proxy_bin, raw_connect, until
from zmqpeers import zmtp_greeting, zmtp_ready

# Descriptors the proxy keeps for itself below the limit (FD_HEADROOM in engine/tunables.rs).
HEADROOM = 160


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        return r.read().decode()


def _refused(text: str, socket_name: str) -> float:
    for line in text.splitlines():
        if line.startswith("zmq_proxy_connections_refused_total{") and f'socket="{socket_name}"' in line:
            assert 'reason="fd_limit"' in line, line
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _greeted(s: socket.socket) -> bool:
    """Sends a PUSH greeting and READY; True once the proxy's greeting came back, False when the
    proxy closed the connection instead."""
    try:
        s.sendall(zmtp_greeting() + zmtp_ready(b"PUSH"))
        got = b""
        for _ in range(64):
            chunk = s.recv(64 - len(got))
            if not chunk:
                return False
            got += chunk
            if len(got) == 64:
                return got[0] == 0xFF
        return False
    except (ConnectionResetError, BrokenPipeError):
        return False


def _events_starting(p: Proxy, prefix: str) -> list[dict]:
    return [ev for ev in p.events() if (log_message(ev) or "").startswith(prefix)]


def test_past_the_descriptor_room_connections_are_refused_and_counted_while_peers_are_served(ctx):
    limit = 200
    room = limit - HEADROOM
    front, back, http = free_ports(3)
    args = [
        "--frontend-type", "PULL", "--frontend-bind", ep(front),
        "--backend-type", "PUSH", "--backend-bind", ep(back),
        "--http-bind", f"127.0.0.1:{http}", "--log-format", "json",
    ]
    # Soft and hard limit alike, so raising to the hard limit leaves it where it is.
    p = Proxy(args, program=["prlimit", f"--nofile={limit}:{limit}", proxy_bin()])
    raw: list[socket.socket] = []
    try:
        p.wait_running(10)
        said = _events_starting(p, "RLIMIT_NOFILE")
        assert said and log_message(said[0]) == f"RLIMIT_NOFILE {limit} (the hard limit): room for {room} peers", p.output()

        # The peers already served: a sender and a receiver, two seats.
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        connect_wait(pull, ep(back))
        connect_wait(push, ep(front))
        push.send(b"before")
        assert pull.recv() == b"before"

        extra = 12
        greeted = refused = 0
        for _ in range(room - 2 + extra):
            s = raw_connect(front)
            raw.append(s)
            if _greeted(s):
                greeted += 1
            else:
                refused += 1
        assert (greeted, refused) == (room - 2, extra), p.output()

        for _ in until(5):
            if _refused(_scrape(http), "frontend") == extra:
                break
        assert _refused(_scrape(http), "frontend") == extra, _scrape(http)
        lines = _events_starting(p, "file-descriptor limit reached")
        assert len(lines) == 1, f"one log line per quiet period, got {len(lines)}\n{p.output()}"
        assert lines[0].get("level") == "WARN", lines[0]

        # Still serving the peers it has, and alive.
        for i in range(100):
            push.send(b"m%d" % i)
        assert [pull.recv() for _ in range(100)] == [b"m%d" % i for i in range(100)]
        assert p.running

        # A connection that leaves gives its seat back.
        for s in raw[: room - 2]:
            s.close()
        raw = raw[room - 2 :]
        for _ in until(5):
            s = raw_connect(front)
            ok = _greeted(s)
            s.close()
            if ok:
                break
        assert ok, p.output()
        push.close()
        pull.close()
    finally:
        for s in raw:
            s.close()
        p.stop(5)
        p.close()
