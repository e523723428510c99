"""Fixtures for the real-peer tests: a libzmq context per test, and a factory that starts the
zmq-proxy binary on free 127.0.0.1 ports, waits for its "proxy running" log line and always
stops it (printing its output when the test failed)."""

from __future__ import annotations

import pytest
import zmq

from zmqpeers import Proxy, ep, free_ports


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def ctx():
    """A libzmq context whose sockets default to linger 0 and 10 s send/receive timeouts, so a
    test never hangs on a socket and never waits for undelivered messages at the end."""
    c = zmq.Context()
    c.linger = 0
    c.rcvtimeo = 10_000
    c.sndtimeo = 10_000
    yield c
    c.destroy(linger=0)


@pytest.fixture
def start_proxy(request):
    """start_proxy(args, env=None, wait=True) -> Proxy. Stops every proxy it started."""
    started: list[Proxy] = []

    def _start(args: list[str], env: dict | None = None, wait: bool = True, timeout: float = 10.0) -> Proxy:
        p = Proxy(args, env)
        started.append(p)
        if wait:
            p.wait_running(timeout)
        return p

    yield _start
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    for p in started:
        p.stop(5)
        p.close()
        if failed:
            print(p.output())


@pytest.fixture
def proxy_pair(start_proxy):
    """proxy_pair(frontend_type, backend_type, capture=None, extra=()) -> Proxy bound on fresh
    ports, with .frontend/.backend/.capture endpoints set."""

    def _pair(front: str, back: str, capture: str | None = None, extra: tuple = (), env: dict | None = None) -> Proxy:
        ports = free_ports(3)
        args = [
            "--frontend-type", front, "--frontend-bind", ep(ports[0]),
            "--backend-type", back, "--backend-bind", ep(ports[1]),
            "--log-format", "json",
        ]
        if capture:
            args += ["--capture-type", capture, "--capture-bind", ep(ports[2])]
        p = start_proxy(args + list(extra), env=env)
        p.frontend, p.backend = ep(ports[0]), ep(ports[1])
        p.capture = ep(ports[2]) if capture else None
        return p

    return _pair
