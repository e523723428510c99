"""The ipc:// transport with real libzmq peers: the proxy bridging a Unix socket (frontend) to
TCP (backend) for XSUB/XPUB, PULL/PUSH and ROUTER/DEALER, connecting to a libzmq peer that binds
ipc, the Linux abstract namespace, CURVE over ipc, the socket file's life (a stale file replaced
at bind, a live one refused, the file removed at a clean exit) and the refusals of bad
endpoints."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import zmq

from zmqpeers import connect_wait, ep, free_ports, log_fields, log_message, probe_until, run_proxy_to_exit


@pytest.fixture
def sock_dir():
    """A short private directory: a Unix socket path holds at most 107 bytes."""
    d = Path(tempfile.mkdtemp(prefix="zp-ipc-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def is_socket(p: Path) -> bool:
    try:
        return os.path.exists(p) and os.stat(p).st_mode & 0o170000 == 0o140000
    except OSError:
        return False


def bridge(start_proxy, front: str, back: str, front_ep: str, extra: tuple = (), env: dict | None = None):
    port = free_ports(1)[0]
    p = start_proxy(
        [
            "--frontend-type", front, "--frontend-bind", front_ep,
            "--backend-type", back, "--backend-bind", ep(port),
            "--log-format", "json", *extra,
        ],  # fmt: skip
        env=env,
    )
    p.frontend, p.backend = front_ep, ep(port)
    return p


def test_pull_push_bridges_ipc_to_tcp_and_names_the_ipc_peer(ctx, start_proxy, sock_dir):
    path = sock_dir / "front.sock"
    p = bridge(start_proxy, "PULL", "PUSH", f"ipc://{path}", env={"RUST_LOG": "zmq_proxy=debug"})
    assert is_socket(path)
    running = log_fields(p.find_event("proxy running"))
    assert f"listening on ipc://{path}" in running["frontend"], running
    pusher, puller = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    connect_wait(puller, p.backend)
    connect_wait(pusher, p.frontend)
    for i in range(100):
        pusher.send_multipart([b"job", str(i).encode()])
    got = [puller.recv_multipart() for _ in range(100)]
    assert got == [[b"job", str(i).encode()] for i in range(100)]
    # The Unix peer is named by the socket it came through and its credentials (this process).
    connected = [log_fields(e) for e in p.events() if log_message(e) == "peer connected"]
    peers = [str(f.get("peer")) for f in connected]
    assert any(f"ipc://{path} pid {os.getpid()} uid {os.getuid()}" in s for s in peers), peers
    counters = p.stop_promptly()
    # Counted in frames, as libzmq counts: 100 messages of two frames.
    assert counters["frontend_recv_msgs"] == 200 and counters["backend_sent_msgs"] == 200, counters
    assert not os.path.exists(path), "the socket file is removed at a clean exit"


def test_xsub_xpub_bridges_ipc_publishers_to_tcp_subscribers(ctx, start_proxy, sock_dir):
    p = bridge(start_proxy, "XSUB", "XPUB", f"ipc://{sock_dir / 'pub.sock'}")
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.connect(p.frontend)
    sub.connect(p.backend)
    sub.subscribe(b"a.")
    probe_until(lambda: pub.send(b"a.probe"), {"sub": (sub, lambda f: f == [b"a.probe"])})
    pub.send(b"b.not-for-sub")
    pub.send(b"a.last")
    for _ in range(1000):
        if sub.recv() == b"a.last":
            break
    assert not sub.poll(200), "only the subscribed prefix reaches the subscriber"


def test_router_dealer_bridges_ipc_clients_to_tcp_workers(ctx, start_proxy, sock_dir):
    p = bridge(start_proxy, "ROUTER", "DEALER", f"ipc://{sock_dir / 'rr.sock'}")
    worker, client = ctx.socket(zmq.REP), ctx.socket(zmq.REQ)
    connect_wait(worker, p.backend)
    connect_wait(client, p.frontend)
    for i in range(20):
        client.send(b"q%d" % i)
        worker.send(b"r:" + worker.recv())
        assert client.recv() == b"r:q%d" % i


def test_connects_to_an_ipc_peer_that_binds(ctx, start_proxy, sock_dir):
    worker_ep = f"ipc://{sock_dir / 'worker.sock'}"
    worker = ctx.socket(zmq.PULL)
    worker.bind(worker_ep)
    port = free_ports(1)[0]
    p = start_proxy(
        [
            "--frontend-type", "PULL", "--frontend-bind", ep(port),
            "--backend-type", "PUSH", "--backend-connect", worker_ep,
            "--log-format", "json",
        ]  # fmt: skip
    )
    pusher = ctx.socket(zmq.PUSH)
    connect_wait(pusher, ep(port))
    pusher.send(b"over ipc")
    assert worker.recv() == b"over ipc"
    assert p.stop_promptly()["backend_sent_msgs"] == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the abstract namespace is Linux only")
def test_abstract_namespace_binds_without_a_file(ctx, start_proxy, sock_dir):
    name = f"zp-ipc-{os.getpid()}-{free_ports(1)[0]}"
    p = bridge(start_proxy, "PULL", "PUSH", f"ipc://@{name}")
    pusher, puller = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    connect_wait(puller, p.backend)
    connect_wait(pusher, f"ipc://@{name}")
    pusher.send(b"abstract")
    assert puller.recv() == b"abstract"
    assert not os.path.exists(f"@{name}")
    # A second proxy cannot take the name while the first holds it.
    rc, _, err = run_proxy_to_exit(
        ["--frontend-type", "PULL", "--frontend-bind", f"ipc://@{name}",
         "--backend-type", "PUSH", "--backend-bind", ep(free_ports(1)[0])]  # fmt: skip
    )
    assert rc != 0 and f"ipc://@{name}" in err and "address in use" in err, err


def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(ctx, start_proxy, sock_dir):
    path = sock_dir / "stale.sock"
    # What a killed process leaves: a socket file nobody accepts on.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    assert is_socket(path)
    p = bridge(start_proxy, "PULL", "PUSH", f"ipc://{path}")
    pusher, puller = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    connect_wait(puller, p.backend)
    connect_wait(pusher, p.frontend)
    pusher.send(b"after the stale file")
    assert puller.recv() == b"after the stale file"
    # The running proxy's file is live: a second proxy does not steal it.
    rc, _, err = run_proxy_to_exit(
        ["--frontend-type", "PULL", "--frontend-bind", f"ipc://{path}",
         "--backend-type", "PUSH", "--backend-bind", ep(free_ports(1)[0])]  # fmt: skip
    )
    assert rc != 0 and "address in use" in err, err
    pusher.send(b"still served")
    assert puller.recv() == b"still served"
    # Nor is a file that is not a socket removed.
    plain = sock_dir / "plain"
    plain.write_text("data")
    rc, _, err = run_proxy_to_exit(
        ["--frontend-type", "PULL", "--frontend-bind", f"ipc://{plain}",
         "--backend-type", "PUSH", "--backend-bind", ep(free_ports(1)[0])]  # fmt: skip
    )
    assert rc != 0 and "is not a socket" in err and plain.read_text() == "data", err


def test_curve_over_ipc(ctx, start_proxy, sock_dir):
    server_public, server_secret = zmq.curve_keypair()
    client = zmq.curve_keypair()
    key_file, allow = sock_dir / "server.key", sock_dir / "allow"
    key_file.write_bytes(server_secret + b"\n")
    allow.write_text(client[0].decode() + "\n")
    p = bridge(
        start_proxy, "PULL", "PUSH", f"ipc://{sock_dir / 'curve.sock'}",
        extra=("--frontend-curve-server-key-file", str(key_file), "--frontend-curve-authorized-keys", str(allow)),
    )  # fmt: skip
    pusher, puller = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pusher.curve_serverkey = server_public
    pusher.curve_publickey, pusher.curve_secretkey = client
    connect_wait(puller, p.backend)
    connect_wait(pusher, p.frontend)
    pusher.send(b"sealed")
    assert puller.recv() == b"sealed"
    # A client without the server's key gets nothing through.
    stranger = ctx.socket(zmq.PUSH)
    stranger.curve_serverkey = server_public
    stranger.curve_publickey, stranger.curve_secretkey = zmq.curve_keypair()
    stranger.connect(p.frontend)
    stranger.send(b"not allowed", zmq.NOBLOCK) if stranger.poll(200, zmq.POLLOUT) else None
    assert not puller.poll(300)


@pytest.mark.parametrize(
    "flag,endpoint,words",
    [
        ("--frontend-bind", "ipc:///" + "a" * 107, "longer than the 107"),
        ("--backend-connect-all", "ipc:///tmp/w.sock", "use --backend-connect"),
        ("--backend-connect", "ipc://*", "only valid for bind"),
    ],
)
def test_bad_ipc_endpoints_are_refused_naming_the_flag(flag, endpoint, words):
    args = ["--frontend-type", "PULL", "--backend-type", "PUSH", "--backend-bind", ep(free_ports(1)[0])]
    if flag != "--frontend-bind":
        args += ["--frontend-bind", ep(free_ports(1)[0])]
    rc, _, err = run_proxy_to_exit(args + [flag, endpoint])
    assert rc != 0 and flag in err and words in err, err


def test_the_wildcard_binds_a_temporary_path_removed_at_exit(ctx, start_proxy, sock_dir):
    port = free_ports(1)[0]
    p = start_proxy(
        [
            "--frontend-type", "PULL", "--frontend-bind", ep(port),
            "--backend-type", "PUSH", "--backend-bind", "ipc://*",
            "--log-format", "json",
        ],  # fmt: skip
        env={"TMPDIR": str(sock_dir)},
    )
    backend = log_fields(p.find_event("proxy running"))["backend"]
    listening = backend.split("listening on ", 1)[1].rstrip(")").split()[0]
    path = Path(listening.removeprefix("ipc://"))
    assert path.parent.parent == sock_dir and path.name == "socket", backend
    assert is_socket(path) and (path.parent.stat().st_mode & 0o777) == 0o700
    pusher, puller = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    connect_wait(puller, listening)
    connect_wait(pusher, ep(port))
    pusher.send(b"via the temporary path")
    assert puller.recv() == b"via the temporary path"
    p.stop_promptly()
    assert not path.parent.exists(), "the directory and its socket are removed at exit"
