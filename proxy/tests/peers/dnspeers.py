"""Peers for the connect-all tests: a DNS server the test controls and libzmq REP workers bound on
loopback addresses behind one name.

`ZoneServer` answers A and AAAA queries over UDP on 127.0.0.1 from a table the test changes while
the proxy runs (addresses, TTL), and can answer NXDOMAIN or SERVFAIL, or stay silent, per name.
`Workers` runs one pyzmq REP socket per address on a shared port, each answering `R` with
`R@ADDRESS` (after an optional delay, to hold replies in flight) and counting what it answered.
"""

from __future__ import annotations

import socket
import threading
import time

import zmq
from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord


class ZoneServer:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.names: dict[str, list[str]] = {}
        self.mode: dict[str, str] = {}  # name -> answer | nxdomain | servfail | silent
        self.ttl = 1
        self.queries: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, addresses: list[str], mode: str = "answer") -> None:
        with self.lock:
            self.names[name.lower().rstrip(".")] = list(addresses)
            self.mode[name.lower().rstrip(".")] = mode

    def set_mode(self, name: str, mode: str) -> None:
        with self.lock:
            self.mode[name.lower().rstrip(".")] = mode

    def query_count(self, name: str) -> int:
        with self.lock:
            return self.queries.get(name.lower().rstrip("."), 0)

    def _answer(self, data: bytes) -> bytes | None:
        req = DNSRecord.parse(data)
        name = str(req.q.qname).lower().rstrip(".")
        reply = req.reply()
        with self.lock:
            self.queries[name] = self.queries.get(name, 0) + 1
            mode = self.mode.get(name, "nxdomain")
            addresses = list(self.names.get(name, []))
            ttl = self.ttl
        if mode == "silent":
            return None
        if mode == "nxdomain":
            reply.header.rcode = RCODE.NXDOMAIN
        elif mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        else:
            for a in addresses:
                if ":" in a and req.q.qtype == QTYPE.AAAA:
                    reply.add_answer(RR(req.q.qname, QTYPE.AAAA, rdata=AAAA(a), ttl=ttl))
                elif ":" not in a and req.q.qtype == QTYPE.A:
                    reply.add_answer(RR(req.q.qname, QTYPE.A, rdata=A(a), ttl=ttl))
        return reply.pack()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                out = self._answer(data)
            except Exception:  # a malformed query is no reason to stop serving the others
                continue
            if out is not None:
                self.sock.sendto(out, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Workers:
    """REP workers bound on `address:port` for each address added; `answered[address]` counts
    the requests each answered."""

    def __init__(self, ctx: zmq.Context, port: int, curve_secret: bytes | None = None) -> None:
        self.ctx, self.port, self.curve_secret = ctx, port, curve_secret
        self.answered: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self.lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}

    def add(self, address: str, delay: float = 0.0) -> None:
        rep = self.ctx.socket(zmq.REP)
        rep.linger = 0
        if self.curve_secret is not None:
            rep.curve_server = True
            rep.curve_secretkey = self.curve_secret
        host = f"[{address}]" if ":" in address else address
        rep.ipv6 = ":" in address
        rep.bind(f"tcp://{host}:{self.port}")
        stop = threading.Event()
        with self.lock:
            self.answered.setdefault(address, 0)
            self.delay[address] = delay
        self._stops[address] = stop
        t = threading.Thread(target=self._serve, args=(rep, address, stop), daemon=True)
        self._threads[address] = t
        t.start()

    def _serve(self, rep: zmq.Socket, address: str, stop: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(rep, zmq.POLLIN)
        try:
            while not stop.is_set():
                if not poller.poll(50):
                    continue
                req = rep.recv()
                with self.lock:
                    delay = self.delay[address]
                if delay:
                    # The worker's own processing time: what keeps a reply in flight.
                    time.sleep(delay)
                rep.send(req + b"@" + address.encode())
                with self.lock:
                    self.answered[address] += 1
        finally:
            rep.close(0)

    def remove(self, address: str) -> None:
        self._stops.pop(address).set()
        self._threads.pop(address).join(5)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.answered)

    def close(self) -> None:
        for a in list(self._stops):
            self.remove(a)
