"""Fixtures of the operations tier: the real-peer tier's own (a libzmq context per test, a
factory that starts the zmq-proxy binary and always stops it), loaded from proxy/tests/peers
so both tiers start and stop the proxy the same way, plus a proxy with --control-bind and
--http-bind on free 127.0.0.1 ports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parent.parent / "peers"
sys.path.insert(0, str(PEERS))

_spec = importlib.util.spec_from_file_location("peers_conftest", PEERS / "conftest.py")
assert _spec is not None and _spec.loader is not None
_peers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_peers)

pytest_runtest_makereport = _peers.pytest_runtest_makereport
ctx = _peers.ctx
start_proxy = _peers.start_proxy

from zmqpeers import ep, free_ports  # noqa: E402


@pytest.fixture
def ops_proxy(start_proxy):
    """ops_proxy(front, back, capture=None, extra=()) -> Proxy with .frontend/.backend/
    .capture/.control endpoints and .http ("127.0.0.1:PORT") set."""

    def _ops(front: str, back: str, capture: str | None = None, extra: tuple = (), env: dict | None = None):
        ports = free_ports(5)
        args = [
            "--frontend-type", front, "--frontend-bind", ep(ports[0]),
            "--backend-type", back, "--backend-bind", ep(ports[1]),
            "--control-bind", ep(ports[3]),
            "--http-bind", f"127.0.0.1:{ports[4]}",
            "--log-format", "json",
        ]
        if capture:
            args += ["--capture-type", capture, "--capture-bind", ep(ports[2])]
        p = start_proxy(args + list(extra), env=env)
        p.frontend, p.backend = ep(ports[0]), ep(ports[1])
        p.capture = ep(ports[2]) if capture else None
        p.control = ep(ports[3])
        p.http = f"127.0.0.1:{ports[4]}"
        return p

    return _ops
