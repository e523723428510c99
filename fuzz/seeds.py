#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, captured from real libzmq traffic.

    python3 fuzz/seeds.py [--proxy PATH] [--out fuzz/corpus]

pyzmq peers (libzmq) talk through the release proxy on 127.0.0.1 for every pattern (shared queue
ROUTER/DEALER, forwarder XSUB/XPUB, pipeline PULL/PUSH), with NULL and with CURVE, on binds and
on connects, with heartbeats on so PING/PONG are on the wire, and a REQ requester steers the
proxy through its control socket. Each connection goes through a small TCP relay here that
records the bytes of each direction; the recordings become the seeds:

- frames/        what the proxy read on a NULL connection (greeting, READY, messages, commands)
- commands/      every command body seen in either direction of a NULL connection
- curve_server/  what a libzmq CURVE client sent to the proxy's bind
- curve_client/  what a libzmq CURVE server sent to the proxy's connect
- steering/      what the REQ requester sent to the control socket
- manifest/      the repository's examples/*.yaml

A target's first byte picks our socket type (and the limit, the read sizes); the seeds carry the
socket type the proxy had on that connection. The files are named by content, so a rerun that
captures the same bytes changes nothing. Delete a target's directory before a rerun to drop old
seeds (timing decides how reads and PINGs interleave, so captures differ a little).
"""

import argparse
import hashlib
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time

import zmq

ROOT = pathlib.Path(__file__).resolve().parent.parent

# libzmq's test keys (tests/testutil_security.cpp), the ones the CURVE targets use.
SERVER_PUBLIC = b"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
SERVER_SECRET = b"JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
CLIENT_PUBLIC = b"Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
CLIENT_SECRET = b"D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"

# The order of zmq_proxy::socket::SocketType::ALL: a target's first byte indexes it.
SOCKET_TYPES = ["ROUTER", "DEALER", "XSUB", "XPUB", "SUB", "PUB", "PULL", "PUSH", "REQ", "REP", "PAIR"]
# The `frames` target's selector: limit 2 (64 KiB) in bits 4-5; reads of 61 bytes in bits 6-7.
FRAMES_LIMIT_AND_READS = (2 << 4) | (3 << 6)

# (name, proxy frontend type, proxy backend type, frontend peer, backend peer)
PATTERNS = [
    ("queue", "ROUTER", "DEALER", zmq.REQ, zmq.REP),
    ("forwarder", "XSUB", "XPUB", zmq.PUB, zmq.SUB),
    ("pipeline", "PULL", "PUSH", zmq.PUSH, zmq.PULL),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """Listens on a port, connects each accepted connection to `target`, and records each
    direction's bytes (`sent`: from the accepting side to the target; `received`: back)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                a.close()
                continue
            record = {"sent": bytearray(), "received": bytearray()}
            with self.lock:
                self.connections.append(record)
            for src, dst, key in ((a, b, "sent"), (b, a, "received")):
                threading.Thread(target=self._pump, args=(src, dst, record, key), daemon=True).start()

    def _pump(self, src, dst, record, key):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self.lock:
                record[key] += data
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.listener.close()

    def recordings(self):
        with self.lock:
            return [(bytes(r["sent"]), bytes(r["received"])) for r in self.connections]


def wait_port(port, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def secure_client(sock):
    sock.curve_serverkey = SERVER_PUBLIC
    sock.curve_publickey = CLIENT_PUBLIC
    sock.curve_secretkey = CLIENT_SECRET


def secure_server(sock):
    sock.curve_server = True
    sock.curve_secretkey = SERVER_SECRET
    sock.curve_publickey = SERVER_PUBLIC


def peer(ctx, kind, curve, server=False):
    s = ctx.socket(kind)
    s.linger = 0
    s.rcvtimeo = 3000
    s.sndtimeo = 3000
    # PINGs every 100 ms put PING/PONG (and their TTL and context) into the capture.
    s.heartbeat_ivl = 100
    s.heartbeat_ttl = 2000
    s.heartbeat_timeout = 2000
    if curve:
        (secure_server if server else secure_client)(s)
    return s


def traffic(front, back, kind):
    """A few real exchanges of `kind` between the frontend and backend peers."""
    if kind == "queue":
        for i in range(3):
            front.send_multipart([b"request", str(i).encode(), b"x" * (i * 150)])
            msg = back.recv_multipart()
            back.send_multipart(msg[:1] + [b"reply"])
            front.recv_multipart()
    elif kind == "forwarder":
        back.setsockopt(zmq.SUBSCRIBE, b"weather")
        back.setsockopt(zmq.SUBSCRIBE, b"")
        time.sleep(0.3)
        for i in range(3):
            front.send_multipart([b"weather", b"sunny" * (i * 70)])
        try:
            for _ in range(3):
                back.recv_multipart()
        except zmq.Again:
            # A bound SUB can miss the first publications (a slow joiner); the bytes on the
            # wire are what the seeds are for.
            pass
        back.setsockopt(zmq.UNSUBSCRIBE, b"weather")
    else:
        for i in range(3):
            front.send_multipart([b"task", b"t" * (i * 200)])
            back.recv_multipart()
    # Long enough for a few heartbeats both ways.
    time.sleep(0.35)


def run_proxy(proxy, args):
    env = dict(os.environ, RUST_LOG="warn")
    return subprocess.Popen([proxy, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def capture_pattern(proxy, tmp, name, ftype, btype, fpeer, bpeer, curve, backend_connects):
    """One run of a pattern. Returns [(proxy socket type, sent to proxy, sent by proxy, how)]."""
    front_port, back_port = free_port(), free_port()
    args = ["--frontend-type", ftype, "--frontend-bind", f"tcp://127.0.0.1:{front_port}",
            "--backend-type", btype, "--drain-timeout", "0"]
    ctx = zmq.Context()
    back = None
    if backend_connects:
        # The proxy connects out to a peer that binds: the proxy is the CURVE client there.
        back_peer_port = free_port()
        back_relay = Relay(back_peer_port)
        back = peer(ctx, bpeer, curve, server=True)
        back.bind(f"tcp://127.0.0.1:{back_peer_port}")
        args += ["--backend-connect", f"tcp://127.0.0.1:{back_relay.port}"]
    else:
        args += ["--backend-bind", f"tcp://127.0.0.1:{back_port}"]
    if curve:
        key = tmp / "server.key"
        key.write_bytes(SERVER_SECRET + b"\n")
        client_key = tmp / "client.key"
        client_key.write_bytes(CLIENT_SECRET + b"\n")
        args += ["--frontend-curve-server-key-file", str(key), "--curve-allow-any"]
        if backend_connects:
            args += ["--backend-curve-server-public-key", SERVER_PUBLIC.decode(),
                     "--backend-curve-client-key-file", str(client_key)]
        else:
            args += ["--backend-curve-server-key-file", str(key)]
    p = run_proxy(proxy, args)
    relays = []
    try:
        wait_port(front_port)
        front_relay = Relay(front_port)
        relays.append(("front", ftype, front_relay))
        front = peer(ctx, fpeer, curve)
        front.connect(f"tcp://127.0.0.1:{front_relay.port}")
        if backend_connects:
            relays.append(("back-connect", btype, back_relay))
        else:
            wait_port(back_port)
            back_relay = Relay(back_port)
            relays.append(("back", btype, back_relay))
            back = peer(ctx, bpeer, curve)
            back.connect(f"tcp://127.0.0.1:{back_relay.port}")
        time.sleep(0.3)
        traffic(front, back, name)
        front.close()
        back.close()
        time.sleep(0.2)
    finally:
        stop(p)
        ctx.destroy(linger=0)
    out = []
    for how, ours, relay in relays:
        relay.close()
        for sent, received in relay.recordings():
            if how == "back-connect":
                # The proxy opened this one: what it read is what the peer sent back.
                out.append((ours, received, sent, how))
            else:
                out.append((ours, sent, received, how))
    return out


def capture_control(proxy):
    """A REQ requester steering the proxy; returns what it sent to the control socket."""
    front, back, control = free_port(), free_port(), free_port()
    p = run_proxy(proxy, ["--frontend-type", "ROUTER", "--frontend-bind", f"tcp://127.0.0.1:{front}",
                          "--backend-type", "DEALER", "--backend-bind", f"tcp://127.0.0.1:{back}",
                          "--control-bind", f"tcp://127.0.0.1:{control}", "--drain-timeout", "0"])
    ctx = zmq.Context()
    try:
        wait_port(control)
        relay = Relay(control)
        req = peer(ctx, zmq.REQ, False)
        req.connect(f"tcp://127.0.0.1:{relay.port}")
        for cmd in (b"STATISTICS", b"PAUSE", b"RESUME", b"pause", b"TERMINATE"):
            req.send(cmd)
            req.recv_multipart()
        req.close()
        p.wait(10)
        time.sleep(0.1)
    finally:
        stop(p)
        ctx.destroy(linger=0)
    relay.close()
    return [sent for sent, _ in relay.recordings()]


def commands_of(stream):
    """The command bodies of a NULL connection's stream (greeting first)."""
    out = []
    i = 64
    while i + 2 <= len(stream):
        flags = stream[i]
        if flags & 0x02:
            if i + 9 > len(stream):
                break
            n = int.from_bytes(stream[i + 1:i + 9], "big")
            i += 9
        else:
            n = stream[i + 1]
            i += 2
        if i + n > len(stream):
            break
        if flags & 0x04:
            out.append(stream[i:i + n])
        i += n
    return out


class Corpus:
    def __init__(self, root):
        self.root = root
        self.count = {}

    def add(self, target, data, label):
        d = self.root / target
        d.mkdir(parents=True, exist_ok=True)
        name = f"{label}-{hashlib.sha1(data).hexdigest()[:12]}"
        (d / name).write_bytes(data)
        self.count.setdefault(target, set()).add(name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_proxy = os.environ.get("ZMQ_PROXY_BIN", str(ROOT / "target/release/zmq-proxy"))
    ap.add_argument("--proxy", default=default_proxy, help="the zmq-proxy binary (release)")
    ap.add_argument("--out", default=str(ROOT / "fuzz/corpus"), help="corpus root")
    a = ap.parse_args()
    if not os.access(a.proxy, os.X_OK):
        sys.exit(f"no proxy binary at {a.proxy}: cargo build --release -p zmq-proxy")
    corpus = Corpus(pathlib.Path(a.out))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, ftype, btype, fpeer, bpeer in PATTERNS:
            for curve in (False, True):
                for backend_connects in (False, True):
                    print(f"capturing {name} curve={curve} backend_connects={backend_connects}",
                          file=sys.stderr)
                    got = capture_pattern(a.proxy, tmp, name, ftype, btype, fpeer, bpeer, curve,
                                          backend_connects)
                    for ours, to_proxy, from_proxy, how in got:
                        sel = SOCKET_TYPES.index(ours)
                        label = f"{name}-{ours.lower()}-{how}"
                        if not to_proxy:
                            continue
                        if curve:
                            target = "curve_client" if how == "back-connect" else "curve_server"
                            corpus.add(target, bytes([sel]) + to_proxy, label)
                        else:
                            corpus.add("frames", bytes([sel | FRAMES_LIMIT_AND_READS]) + to_proxy, label)
                            for stream in (to_proxy, from_proxy):
                                for body in commands_of(stream):
                                    corpus.add("commands", body, "command")
        for sent in capture_control(a.proxy):
            corpus.add("steering", sent, "control-req")
    for example in sorted((ROOT / "examples").rglob("*.yaml")):
        rel = example.relative_to(ROOT / "examples").with_suffix("")
        corpus.add("manifest", example.read_bytes(), "example-" + "-".join(rel.parts))
    # The CURVE targets' second mode (a real client and server through an editing relay) is
    # not traffic: one seed each with the mode bit set, so it is fuzzed from the first run.
    corpus.add("curve_server", bytes([0x80 | SOCKET_TYPES.index("ROUTER"), 8]), "relay")
    corpus.add("curve_client", bytes([0x80 | SOCKET_TYPES.index("DEALER"), 9]), "relay")
    for target, names in sorted(corpus.count.items()):
        print(f"{target}: {len(names)} seeds")


if __name__ == "__main__":
    main()
