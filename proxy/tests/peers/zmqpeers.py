"""Helpers for the real-peer tests: starting the `zmq-proxy` binary and reading its JSON log,
free 127.0.0.1 ports, waiting for ZMTP handshakes and subscriptions, and raw ZMTP bytes.

Every wait here is a condition polled against a deadline; none of them sleeps blindly.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

REPO = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"

COUNTERS = (
    "frontend_recv_msgs",
    "frontend_recv_bytes",
    "frontend_sent_msgs",
    "frontend_sent_bytes",
    "backend_recv_msgs",
    "backend_recv_bytes",
    "backend_sent_msgs",
    "backend_sent_bytes",
    "capture_sent_msgs",
    "capture_sent_bytes",
    "dropped_msgs",
    "undelivered_msgs",
)


def proxy_bin() -> str:
    path = os.environ.get("ZMQ_PROXY_BIN") or str(REPO / "target" / "release" / "zmq-proxy")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"zmq-proxy binary not found or not executable at {path}; build it with "
            "`cargo build --release -p zmq-proxy` or point ZMQ_PROXY_BIN at it",
            pytrace=False,
        )
    return path


def until(seconds: float, max_iter: int = 1_000_000) -> Iterator[int]:
    """Loop guard: yields 0, 1, 2, ... while both the time and the iteration budget last."""
    deadline = time.monotonic() + seconds
    for i in range(max_iter):
        if time.monotonic() >= deadline:
            return
        yield i


def free_ports(n: int) -> list[int]:
    """n distinct ports the kernel calls free right now (all held open at once so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ep(port: int) -> str:
    return f"tcp://{HOST}:{port}"


def log_message(event: dict) -> str | None:
    fields = event.get("fields")
    if isinstance(fields, dict) and isinstance(fields.get("message"), str):
        return fields["message"]
    msg = event.get("message")
    return msg if isinstance(msg, str) else None


def log_fields(event: dict) -> dict:
    fields = event.get("fields")
    return fields if isinstance(fields, dict) else event


class Proxy:
    """One running zmq-proxy process; stdout and stderr are read by threads so it never blocks."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, program: list[str] | None = None):
        # `program` runs another implementation of the same command line (libzmq's proxy, for
        # side-by-side measurements); the zmq-proxy binary by default.
        self.argv = [*(program or [proxy_bin()]), *args]
        full_env = dict(os.environ)
        full_env.setdefault("RUST_LOG", "info")
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self.frontend = self.backend = self.capture = None
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._cond = threading.Condition()
        self._open_streams = 2
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                sink.append(line)
                self._cond.notify_all()
        with self._cond:
            self._open_streams -= 1
            self._cond.notify_all()

    # ---- log events -------------------------------------------------------------------------
    def events(self, lines: list[str] | None = None) -> list[dict]:
        out = []
        with self._cond:
            snapshot = list(self.stderr_lines if lines is None else lines)
        for line in snapshot:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def find_event(self, message: str, lines: list[str] | None = None) -> dict | None:
        for ev in self.events(lines):
            if log_message(ev) == message:
                return ev
        return None

    def wait_for_event(self, message: str, timeout: float) -> dict | None:
        """The first stderr JSON event whose message is `message`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            ev = self.find_event(message)
            if ev is not None:
                return ev
            with self._cond:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._open_streams == 0:
                    break
                self._cond.wait(min(remaining, 0.2))
        return self.find_event(message)

    def wait_running(self, timeout: float = 10.0) -> dict:
        ev = self.wait_for_event("proxy running", timeout)
        if ev is None:
            on_stdout = self.find_event("proxy running", self.stdout_lines) is not None
            where = " (it WAS printed on stdout; the contract wants stderr)" if on_stdout else ""
            pytest.fail(
                f"no 'proxy running' JSON line on stderr within {timeout}s{where}; "
                f"exit code {self.proc.poll()}\n{self.output()}",
                pytrace=False,
            )
        return ev

    def stopped_counters(self, timeout: float = 3.0) -> dict[str, int]:
        ev = self.wait_for_event("proxy stopped", timeout)
        assert ev is not None, f"no 'proxy stopped' line on stderr\n{self.output()}"
        fields = log_fields(ev)
        missing = [c for c in COUNTERS if not isinstance(fields.get(c), int)]
        assert not missing, f"'proxy stopped' lacks integer counters {missing}: {ev}"
        return {c: fields[c] for c in COUNTERS}

    # ---- process ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the process has exited and its output has been read to the end
        (so its last log lines are visible), or None if it is still running after `timeout`."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        with self._cond:
            self._cond.wait_for(lambda: self._open_streams == 0, timeout=5)
        return rc

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait, and SIGKILL if it did not go; returns the exit code of the first stop."""
        if not self.running:
            return self.proc.returncode
        self.signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.proc.kill()
            self.wait_exit(5)
        return rc

    def stop_promptly(self, within: float = 2.0, grace: float = 10.0) -> dict[str, int]:
        """SIGTERM a proxy that has nothing left to deliver: it must exit 0 within `within`
        seconds. Returns the "proxy stopped" counters."""
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        rc = self.wait_exit(within)
        if rc is None:
            rc = self.wait_exit(grace)
            ev = self.find_event("proxy stopped") or {}
            pytest.fail(
                f"SIGTERM with nothing left to deliver: not gone within {within}s; "
                + (f"exited {time.monotonic() - t0:.1f}s after it with code {rc}, " if rc is not None else "still running, ")
                + f"ending={log_fields(ev).get('ending')!r} undelivered_msgs={log_fields(ev).get('undelivered_msgs')!r}\n"
                + self.output(),
                pytrace=False,
            )
        assert rc == 0, f"exit code {rc} after SIGTERM\n{self.output()}"
        return self.stopped_counters()

    def close(self) -> None:
        if self.running:
            self.proc.kill()
            self.wait_exit(5)
        for t in self._readers:
            t.join(timeout=2)
        for s in (self.proc.stdout, self.proc.stderr):
            if s:
                s.close()

    def output(self, tail: int = 60) -> str:
        with self._cond:
            err = self.stderr_lines[-tail:]
            out = self.stdout_lines[-tail:]
        return (
            f"--- zmq-proxy {' '.join(self.argv[1:])}\n--- stderr (last {tail} lines):\n"
            + "\n".join(err)
            + f"\n--- stdout (last {tail} lines):\n"
            + "\n".join(out)
        )


def run_proxy_to_exit(args: list[str], timeout: float = 10.0, env: dict | None = None):
    """Runs the proxy expecting it to exit by itself (bad input); returns (rc, stdout, stderr)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        res = subprocess.run(
            [proxy_bin(), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=full_env,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"zmq-proxy {' '.join(args)} did not exit within {timeout}s; stderr: {e.stderr!r}")
    return res.returncode, res.stdout.decode("utf-8", "replace"), res.stderr.decode("utf-8", "replace")


# ---- libzmq peers ---------------------------------------------------------------------------
_monitor_ids = itertools.count()


def monitor(sock: zmq.Socket, events: int) -> zmq.Socket:
    """A monitor of `sock` on an inproc address of its own. pyzmq's default address is derived
    from the socket, and libzmq releases an inproc endpoint only some time after its monitor is
    closed, so a second monitor of the same socket (connect_wait's, then a test's) could find
    the address still taken (EADDRINUSE)."""
    return sock.get_monitor_socket(events, addr=f"inproc://zmqpeers-monitor-{next(_monitor_ids)}")


def connect_wait(sock: zmq.Socket, endpoint: str, timeout: float = 5.0) -> None:
    """Connects and returns once the ZMTP handshake with the proxy has completed, so messages
    sent next are not racing the connection (and round-robin sees this peer)."""
    mon = monitor(sock, zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        sock.connect(endpoint)
        deadline = time.monotonic() + timeout
        for _ in until(timeout, 10_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not mon.poll(int(remaining * 1000) + 1):
                break
            if recv_monitor_message(mon)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return
        raise AssertionError(f"no ZMTP handshake with the proxy at {endpoint} within {timeout}s")
    finally:
        sock.disable_monitor()
        mon.close(0)


def recv_until_quiet(sock: zmq.Socket, quiet: float = 0.5, total: float = 10.0, max_msgs: int = 10_000_000):
    """Every message arriving until none came for `quiet` seconds (bounded by `total`)."""
    got = []
    for _ in until(total, max_msgs):
        if not sock.poll(int(quiet * 1000)):
            break
        got.append(sock.recv_multipart())
    return got


def probe_until(send_probe: Callable[[], None], receivers: dict, timeout: float = 10.0) -> None:
    """Slow-joiner guard: call send_probe() repeatedly until every receiver has seen a message
    that its predicate accepts. receivers maps a name to (socket, predicate(frames) -> bool).
    Fails naming the receivers still waiting when the deadline passes."""
    waiting = dict(receivers)
    poller = zmq.Poller()
    for sock, _ in waiting.values():
        poller.register(sock, zmq.POLLIN)
    for _ in until(timeout, 100_000):
        if not waiting:
            return
        send_probe()
        for sock, _ in poller.poll(20):
            for _ in range(1000):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                for name, (s, pred) in list(waiting.items()):
                    if s is sock and pred(frames):
                        del waiting[name]
    if waiting:
        raise AssertionError(f"subscriptions never propagated within {timeout}s: still waiting on {sorted(waiting)}")


# ---- raw ZMTP -------------------------------------------------------------------------------
def zmtp_greeting(major: int = 3, minor: int = 0, mechanism: bytes = b"NULL", as_server: int = 0) -> bytes:
    """The 64-byte ZMTP 3.x greeting (RFC 23)."""
    return (
        b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([major, minor])
        + mechanism.ljust(20, b"\x00") + bytes([as_server]) + b"\x00" * 31
    )


def zmtp_ready(socket_type: bytes, identity: bytes | None = None) -> bytes:
    """A NULL-mechanism READY command announcing `socket_type`."""

    def prop(name: bytes, value: bytes) -> bytes:
        return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value

    body = b"\x05READY" + prop(b"Socket-Type", socket_type)
    if identity is not None:
        body += prop(b"Identity", identity)
    return bytes([0x04, len(body)]) + body


def raw_connect(port: int, timeout: float = 3.0) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(s: socket.socket, n: int, timeout: float = 3.0) -> bytes:
    buf = b""
    for _ in until(timeout, 10_000):
        if len(buf) >= n:
            break
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def rst_close(s: socket.socket) -> None:
    """Close with SO_LINGER 0 so the kernel sends RST instead of FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()


def tcp_queues(port: int) -> list[tuple[int, int, int, int, int]]:
    """(local port, remote port, state, tx_queue, rx_queue) of every IPv4/IPv6 TCP socket on
    this host with `port` at either end, from /proc/net/tcp{,6} (Linux)."""
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 5:
                continue
            lport = int(parts[1].rsplit(":", 1)[1], 16)
            rport = int(parts[2].rsplit(":", 1)[1], 16)
            if port not in (lport, rport):
                continue
            tx, rx = (int(x, 16) for x in parts[4].split(":"))
            rows.append((lport, rport, int(parts[3], 16), tx, rx))
    return rows


TCP_LISTEN = 0x0A


def wait_proxy_read_everything(port: int, timeout: float) -> bool:
    """True once no byte sent to the proxy's `port` waits in a kernel queue: the proxy side
    (local `port`) has an empty receive queue and the peer side an empty send queue."""
    for _ in until(timeout, 100_000):
        rows = [r for r in tcp_queues(port) if r[2] != TCP_LISTEN]
        if rows and all(r[4] == 0 for r in rows if r[0] == port) and all(r[3] == 0 for r in rows if r[1] == port):
            return True
        time.sleep(0.01)  # poll interval of a condition with a deadline, not a fixed wait
    return False



def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process holds open (Linux /proc/PID/fd)."""
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _tcp_rows() -> list[tuple[int, int, int, int]]:
    """(local port, remote port, state, inode) of every IPv4/IPv6 TCP socket on this host."""
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            rows.append(
                (int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16), int(parts[3], 16), int(parts[9]))
            )
    return rows


def my_ports_to(port: int) -> set[int]:
    """Local ports of this test process's TCP connections to `port` (libzmq's included)."""
    mine = socket_inodes(os.getpid())
    return {lp for lp, rp, st, ino in _tcp_rows() if rp == port and st != TCP_LISTEN and ino in mine}


def accepted_inode(pid: int, proxy_port: int, peer_port: int, timeout: float = 5.0) -> int | None:
    """The inode of the proxy's accepted socket for the connection from `peer_port`, once the
    proxy process holds it (accept() done); None if that does not happen within `timeout`."""
    for _ in until(timeout, 100_000):
        held = socket_inodes(pid)
        for lp, rp, _st, ino in _tcp_rows():
            if lp == proxy_port and rp == peer_port and ino and ino in held:
                return ino
        time.sleep(0.01)  # poll interval of a condition with a deadline, not a fixed wait
    return None


def wait_socket_closed(pid: int, inode: int, timeout: float = 5.0) -> bool:
    """True once the proxy no longer holds the socket `inode`: it noticed the peer left."""
    for _ in until(timeout, 100_000):
        if inode not in socket_inodes(pid):
            return True
        time.sleep(0.01)  # poll interval of a condition with a deadline, not a fixed wait
    return inode not in socket_inodes(pid)


def connect_tracked(sock: zmq.Socket, endpoint: str, pid: int, timeout: float = 5.0) -> int:
    """connect_wait, returning the inode of the proxy's socket for this connection (so a test
    can later wait for the proxy to close it)."""
    port = int(endpoint.rsplit(":", 1)[1])
    before = my_ports_to(port)
    connect_wait(sock, endpoint, timeout)
    new = my_ports_to(port) - before
    assert len(new) == 1, f"cannot tell this connection apart from others to {endpoint}: {new}"
    inode = accepted_inode(pid, port, new.pop(), timeout)
    assert inode is not None, f"the proxy never accepted the connection to {endpoint}"
    return inode

def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
