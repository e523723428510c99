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


proxy_pair = _peers.proxy_pair


@pytest.fixture
def ops_proxy(proxy_pair):
    """ops_proxy(front, back, capture=None, extra=()) -> the real-peer tier's proxy_pair with a
    control socket and the HTTP listener added; .control and .http ("127.0.0.1:PORT") are set."""

    def _ops(front: str, back: str, capture: str | None = None, extra: tuple = (), env: dict | None = None):
        control, http = free_ports(2)
        ops_args = ("--control-bind", ep(control), "--http-bind", f"127.0.0.1:{http}")
        p = proxy_pair(front, back, capture, extra=ops_args + tuple(extra), env=env)
        p.control = ep(control)
        p.http = f"127.0.0.1:{http}"
        return p

    return _ops
