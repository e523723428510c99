"""Debian's JeroMQ 0.3.6 (`libjeromq-java`), which speaks ZMTP 2.0 only, through the proxy with
pyzmq (libzmq 4.3.5, ZMTP 3.1) on the other side: REQ/REP through ROUTER/DEALER, PUB/SUB through
XSUB/XPUB and PUSH/PULL through PULL/PUSH, JeroMQ on either side. libzmq's own zmq_proxy passes
all of them (`ZMQ_PROXY_BIN=proxy/tests/peers/reference_proxy.py`).

The Java peer (`jeromq/JeroPeer.java`) is compiled once per session into a temporary directory.
Without `javac`/`java` or `/usr/share/java/jeromq.jar` every test here skips, saying which is
missing (`apt-get install -y libjeromq-java default-jdk-headless`; CI installs both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import zmq

from zmqpeers import connect_wait, until

JAR = Path(os.environ.get("JEROMQ_JAR", "/usr/share/java/jeromq.jar"))
SOURCE = Path(__file__).resolve().parent / "jeromq" / "JeroPeer.java"
COUNT = 200
LONG = b"L" * 300


@pytest.fixture(scope="session")
def jeromq_classes(tmp_path_factory) -> Path:
    """The compiled JeroPeer, or a skip naming what is missing."""
    missing = [tool for tool in ("javac", "java") if shutil.which(tool) is None]
    if not JAR.is_file():
        missing.append(str(JAR))
    if missing:
        pytest.skip(f"JeroMQ tests need {', '.join(missing)} (apt-get install -y libjeromq-java default-jdk-headless)")
    out = tmp_path_factory.mktemp("jeromq")
    r = subprocess.run(
        ["javac", "-cp", str(JAR), "-d", str(out), str(SOURCE)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, f"javac failed:\n{r.stdout}{r.stderr}"
    return out


class Java:
    """One running JeroPeer."""

    def __init__(self, classes: Path, mode: str, endpoint: str, count: int = COUNT, topic: str = "weather"):
        self.mode = mode
        self.proc = subprocess.Popen(
            ["java", "-cp", f"{JAR}{os.pathsep}{classes}", "JeroPeer", mode, endpoint, str(count), topic],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def finish(self, timeout: float = 30.0) -> str:
        """Waits for the peer's end and returns its output; fails unless it said ok."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"JeroMQ {self.mode} did not finish within {timeout}s: {out}") from None
        assert self.proc.returncode == 0 and f"ok {self.mode}" in out, f"JeroMQ {self.mode}: {out}"
        return out

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def java(jeromq_classes):
    started: list[Java] = []

    def _start(mode: str, endpoint: str, count: int = COUNT, topic: str = "weather") -> Java:
        j = Java(jeromq_classes, mode, endpoint, count, topic)
        started.append(j)
        return j

    yield _start
    for j in started:
        j.kill()


def test_jeromq_req_through_router_dealer_to_pyzmq_rep(ctx, proxy_pair, java):
    """200 two-frame requests (the second frame over 255 bytes) from a JeroMQ REQ, each answered
    by a pyzmq REP worker and checked by the client."""
    proxy = proxy_pair("ROUTER", "DEALER")
    worker = ctx.socket(zmq.REP)
    connect_wait(worker, proxy.backend)
    client = java("req", proxy.frontend)
    answered = 0
    for _ in until(30, 100_000):
        if answered == COUNT or not client.running:
            break
        if worker.poll(50):
            q = worker.recv_multipart()
            assert len(q) == 2 and q[1] == LONG, f"request as the worker saw it: {q!r:.200}"
            worker.send_multipart([q[0] + b"-ok", LONG])
            answered += 1
    client.finish()
    assert answered == COUNT


def test_pyzmq_req_through_router_dealer_to_jeromq_rep(ctx, proxy_pair, java):
    """A pyzmq REQ client's 200 requests answered by a JeroMQ REP worker behind the DEALER."""
    proxy = proxy_pair("ROUTER", "DEALER")
    worker = java("rep", proxy.backend)
    client = ctx.socket(zmq.REQ)
    connect_wait(client, proxy.frontend)
    for i in range(COUNT):
        client.send_multipart([b"req-%d" % i, LONG])
        assert client.poll(10_000), f"no reply to request {i}; worker: {'running' if worker.running else worker.proc.stdout.read()}"
        assert client.recv_multipart() == [b"req-%d-ok" % i, LONG]
    worker.finish()


def test_jeromq_pub_through_xsub_xpub_to_pyzmq_sub(ctx, proxy_pair, java):
    """A pyzmq SUB's subscription reaches a JeroMQ PUB through the XSUB (in ZMTP 2.0's message
    form): the subscriber gets 200 publications of its topic and none of the other."""
    proxy = proxy_pair("XSUB", "XPUB")
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"weather")
    connect_wait(sub, proxy.backend)
    pub = java("pub", proxy.frontend)
    got = []
    for _ in until(30, 1_000_000):
        if len(got) >= COUNT or not pub.running:
            break
        if sub.poll(50):
            got.append(sub.recv())
    pub.kill()
    assert len(got) >= COUNT, f"{len(got)} of {COUNT} publications arrived; JeroMQ: {pub.proc.stdout.read()}"
    assert all(m.startswith(b"weather|") for m in got), [m for m in got if not m.startswith(b"weather|")][:3]


def test_pyzmq_pub_through_xsub_xpub_to_jeromq_sub(ctx, proxy_pair, java):
    """A JeroMQ SUB's subscription (a ZMTP 2.0 `\\x01topic` message) reaches a pyzmq XPUB
    publisher upstream; it then receives 200 publications of its topic and nothing else."""
    proxy = proxy_pair("XSUB", "XPUB")
    pub = ctx.socket(zmq.XPUB)
    connect_wait(pub, proxy.frontend)
    sub = java("sub", proxy.backend)
    assert pub.poll(15_000), "the JeroMQ subscription never reached the publisher"
    assert pub.recv() == b"\x01weather"
    stop = threading.Event()

    def publish():
        for i in until(30, 10_000_000):
            if stop.is_set():
                return
            pub.send(b"other|%d" % i)
            pub.send(b"weather|%d" % i)
            stop.wait(0.002)

    t = threading.Thread(target=publish, daemon=True)
    t.start()
    try:
        sub.finish()
    finally:
        stop.set()
        t.join(5)


def test_jeromq_push_through_pull_push_to_pyzmq_pull(ctx, proxy_pair, java):
    """200 two-frame messages from a JeroMQ PUSH arrive whole and in order at a pyzmq PULL."""
    proxy = proxy_pair("PULL", "PUSH")
    pull = ctx.socket(zmq.PULL)
    connect_wait(pull, proxy.backend)
    push = java("push", proxy.frontend)
    for i in range(COUNT):
        assert pull.poll(10_000), f"message {i} never arrived; JeroMQ: {'running' if push.running else push.proc.stdout.read()}"
        assert pull.recv_multipart() == [b"m-%d" % i, LONG]
    push.finish()


def test_pyzmq_push_through_pull_push_to_jeromq_pull(ctx, proxy_pair, java):
    """200 two-frame messages from a pyzmq PUSH arrive whole and in order at a JeroMQ PULL."""
    proxy = proxy_pair("PULL", "PUSH")
    pull = java("pull", proxy.backend)
    push = ctx.socket(zmq.PUSH)
    connect_wait(push, proxy.frontend)
    for i in range(COUNT):
        push.send_multipart([b"m-%d" % i, LONG])
    pull.finish()
