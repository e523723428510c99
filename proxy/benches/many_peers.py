#!/usr/bin/env python3
"""Many peers on one proxy (docs/benchmarks.md, "Many peers"): libzmq's zmq_proxy and zmq-proxy
side by side in one run, both serving a ROUTER frontend.

    python3 proxy/benches/many_peers.py                    # 10,000 idle peers, 3 repeats
    python3 proxy/benches/many_peers.py --peers 10000,19000 --repeat 1
    python3 proxy/benches/run.py --many-peers              # the same, from the main benchmark

Idle peers: N DEALER peers connect and complete the ZMTP NULL handshake (greeting, READY both
ways), then stay silent. Reported per target: the time from the first connect until every peer
holds the proxy's READY ("accept and greet"), and the proxy's resident size before and once every
peer is greeted (VmRSS after a short settle), as KiB per peer. The peers are plain non-blocking
sockets in several client processes (a pyzmq socket per peer would weigh more than the proxy);
sources rotate over 127.0.0.x, as one source address reaches one port about 28,000 times.

Both proxies and the client processes need RLIMIT_NOFILE above N: zmq-proxy raises its soft
limit to the hard one; libzmq's proxy and the clients are given the hard limit here too.
Only 127.0.0.x is used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import build, free_port, stop_proxy, wait_for_ports  # noqa: E402

# A source address reaches one destination port from this many ephemeral ports at most (the
# default ip_local_port_range has about 28,000).
PEERS_PER_SOURCE = 20_000
# Linux's IP_BIND_ADDRESS_NO_PORT (not in Python's socket module).
IP_BIND_ADDRESS_NO_PORT = 24
# Handshakes one client process keeps in flight.
IN_FLIGHT = 256


def greeting() -> bytes:
    return b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" * 32


def ready(socket_type: bytes) -> bytes:
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return bytes([0x04, len(body)]) + body


def handshaken(buf: bytes) -> bool:
    """Whether `buf` holds the 64-byte greeting and one whole command after it."""
    if len(buf) < 66:
        return False
    flags = buf[64]
    if flags & 0x02:
        return len(buf) >= 73 and len(buf) >= 73 + struct.unpack(">Q", buf[65:73])[0]
    return len(buf) >= 66 + buf[65]


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def client(port: int, first: int, count: int, start, done, leave, timeout: float) -> None:
    """Opens `count` handshaken DEALER connections (peer numbers from `first`), reports on `done`
    once all are greeted (or the count greeted at the deadline), holds them until `leave`."""
    raise_nofile()
    hello = greeting() + ready(b"DEALER")
    sel = selectors.DefaultSelector()
    socks, bufs, greeted = [], {}, 0
    start.wait(timeout)
    deadline = time.monotonic() + timeout
    opened = ended = 0

    def open_one(i: int) -> None:
        s = socket.socket()
        s.setblocking(False)
        # The port is picked at connect, for the whole address pair: ports an earlier run left
        # in TIME_WAIT toward another proxy port stay usable.
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((f"127.0.0.{2 + i // PEERS_PER_SOURCE}", 0))
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
        bufs[s.fileno()] = b""

    while greeted < count and time.monotonic() < deadline:
        # A bounded number of handshakes in flight: the proxy's accept rate is measured, not
        # how the kernel copes with thousands of SYNs at once (listen-queue overflows, whose
        # retransmissions back off for seconds).
        while opened < count and opened - greeted - ended < IN_FLIGHT:
            open_one(first + opened)
            opened += 1
        for key, ev in sel.select(timeout=0.2):
            s = key.fileobj
            if ev & selectors.EVENT_WRITE:
                try:
                    s.send(hello)
                except OSError:
                    sel.unregister(s)
                    ended += 1
                    continue
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(s)
                ended += 1
                continue
            b = bufs[s.fileno()] + chunk
            bufs[s.fileno()] = b
            if handshaken(b):
                sel.unregister(s)
                greeted += 1
    done.send(greeted)
    leave.wait(timeout)
    for s in socks:
        s.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_target(target: str, bench: Path, zmq_proxy: Path) -> tuple[subprocess.Popen, int]:
    fp, bp = free_port(), free_port()
    front, back = f"tcp://127.0.0.1:{fp}", f"tcp://127.0.0.1:{bp}"
    if target == "libzmq":
        cmd = [str(bench), "proxy", "ROUTER", "@" + front, "DEALER", "@" + back]
    else:
        cmd = [str(zmq_proxy), "--frontend-type", "ROUTER", "--frontend-bind", front,
               "--backend-type", "DEALER", "--backend-bind", back]  # fmt: skip
    env = dict(os.environ, RUST_LOG="warn", ZMQBENCH_IO_THREADS="1")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, preexec_fn=raise_nofile
    )
    wait_for_ports([fp, bp], proc)
    return proc, fp


def idle_once(target: str, peers: int, clients: int, bench: Path, zmq_proxy: Path) -> dict:
    proc, port = start_target(target, bench, zmq_proxy)
    ctx = mp.get_context("fork")
    start, leave = ctx.Event(), ctx.Event()
    workers, pipes = [], []
    try:
        time.sleep(0.3)  # the proxy's start-up allocations settle before the baseline
        before = rss_kib(proc.pid)
        share = -(-peers // clients)
        for c in range(clients):
            first, count = c * share, min(share, peers - c * share)
            rx, tx = ctx.Pipe(duplex=False)
            w = ctx.Process(target=client, args=(port, first, count, start, tx, leave, 120.0))
            w.start()
            workers.append(w)
            pipes.append(rx)
        t0 = time.monotonic()
        start.set()
        greeted = sum(p.recv() if p.poll(130) else 0 for p in pipes)
        elapsed = time.monotonic() - t0
        time.sleep(3.0)  # what the proxy allocated per peer is resident; nothing moves now
        after = rss_kib(proc.pid)
        return {
            "greeted": greeted,
            "seconds": elapsed,
            "rss_before_mib": before / 1024,
            "rss_after_mib": after / 1024,
            "kib_per_peer": (after - before) / max(greeted, 1),
        }
    finally:
        leave.set()
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
        stop_proxy(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peers", default="10000", help="comma-separated peer counts (default 10000)")
    ap.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2,000 peers, one repeat")
    ap.add_argument("--zmq-proxy", type=Path, help="use this binary instead of building it")
    ap.add_argument("--other-proxy", type=Path, help="a second zmq-proxy binary, as a third target")
    opts = ap.parse_args(argv)
    raise_nofile()
    bench, zmq_proxy = build(opts.zmq_proxy)
    counts = [2000] if opts.quick else [int(n) for n in opts.peers.split(",")]
    repeat = 1 if opts.quick else max(1, opts.repeat)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    targets = {"libzmq": bench, "zmq-proxy": zmq_proxy}
    if opts.other_proxy:
        targets["other"] = opts.other_proxy
    rows = []
    for n in counts:
        if n + 200 > soft:
            print(f"skipping {n} peers: RLIMIT_NOFILE {soft} here", file=sys.stderr)
            continue
        runs: dict[str, list[dict]] = {t: [] for t in targets}
        for _ in range(repeat):
            for t, binary in targets.items():
                runs[t].append(idle_once(t, n, opts.clients, bench, binary))
        for t in targets:
            r = runs[t]
            med = lambda k: statistics.median(x[k] for x in r)  # noqa: E731
            rows.append(
                [f"idle peers {n}", t, f"{min(x['greeted'] for x in r)}", f"{med('seconds'):.2f}",
                 f"{med('rss_before_mib'):.1f} -> {med('rss_after_mib'):.1f}", f"{med('kib_per_peer'):.1f}"]  # fmt: skip
            )
    head = ["scenario", "target", "greeted", "accept+greet s", "RSS MiB", "KiB per peer"]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print(f"\n{os.cpu_count()} cores, median of {repeat} run(s), {opts.clients} client processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
