"""Helpers of the operations tier: a zmq_proxy_steerable client on a real libzmq REQ socket,
plain-HTTP probes and a Prometheus text parser, and the proxy process's resident memory."""

from __future__ import annotations

import http.client
import re
import struct
import time

import zmq

from zmqpeers import COUNTERS, until

# STATISTICS replies in the order of the first eight "proxy stopped" counters.
STATISTICS_ORDER = COUNTERS[:8]


class Control:
    """A REQ socket on the proxy's control endpoint, as the tools that steer libzmq's
    zmq_proxy_steerable use it."""

    def __init__(self, ctx: zmq.Context, endpoint: str):
        self.sock = ctx.socket(zmq.REQ)
        self.sock.rcvtimeo = 5000
        self.sock.sndtimeo = 5000
        self.sock.connect(endpoint)

    def request(self, *frames: bytes) -> list[bytes]:
        self.sock.send_multipart(list(frames))
        return self.sock.recv_multipart()

    def command(self, name: bytes) -> None:
        reply = self.request(name)
        assert reply == [b""], f"{name!r} must be answered with one empty frame, got {reply!r}"

    def statistics(self) -> dict[str, int]:
        reply = self.request(b"STATISTICS")
        assert len(reply) == 8 and all(len(f) == 8 for f in reply), f"STATISTICS reply {reply!r}"
        return dict(zip(STATISTICS_ORDER, (struct.unpack("<Q", f)[0] for f in reply)))

    def close(self) -> None:
        self.sock.close(0)


def http_get(hostport: str, path: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://hostport/path."""
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read().decode("utf-8", "replace")
    finally:
        conn.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text -> {(name, ((label, value), ...)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def scrape(hostport: str) -> dict[tuple[str, tuple], float]:
    status, ctype, body = http_get(hostport, "/metrics")
    assert status == 200, f"/metrics answered {status}: {body}"
    assert ctype.startswith("text/plain"), f"/metrics content type {ctype!r}"
    return parse_metrics(body)


def metric(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels} in /metrics; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def wait_metric(hostport: str, name: str, want: float, timeout: float = 10.0, at_least: bool = False, **labels: str) -> float:
    """Polls /metrics until the sample equals `want` (or reaches it, with at_least); returns
    the last value seen."""
    got = None
    for _ in until(timeout, 10_000):
        got = metric(scrape(hostport), name, **labels)
        if got == want or (at_least and got >= want):
            return got
        time.sleep(0.02)  # poll interval of a condition with a deadline, not a fixed wait
    raise AssertionError(f"{name}{labels} stayed {got}, expected {want} within {timeout}s")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


MiB = 1024 * 1024
