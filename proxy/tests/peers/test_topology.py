"""Shapes of a proxy beyond the default: every pair the other way round (the proxy is symmetric),
several bind endpoints on one side, and a DEALER capture socket."""

from __future__ import annotations

import pytest
import zmq

from zmqpeers import connect_wait, ep, free_ports, probe_until, recv_until_quiet, until


def _req_rep(ctx, client_ep, worker_ep, n=50):
    worker = ctx.socket(zmq.REP)
    connect_wait(worker, worker_ep)
    client = ctx.socket(zmq.REQ)
    connect_wait(client, client_ep)
    for i in range(n):
        client.send(b"q%d" % i)
        assert worker.recv() == b"q%d" % i
        worker.send(b"a%d" % i)
        assert client.recv() == b"a%d" % i


def _push_pull(ctx, producer_ep, consumer_ep, n=200):
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, consumer_ep)
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, producer_ep)
    sent = [[b"t%d" % i, b""] if i % 2 else [b"t%d" % i] for i in range(n)]
    for m in sent:
        producer.send_multipart(m)
    got = []
    for _ in until(10, n + 1):
        if len(got) == n or not consumer.poll(5000):
            break
        got.append(consumer.recv_multipart())
    assert got == sent


def _pub_sub(ctx, pub_ep, sub_ep, n=100):
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"R")
    connect_wait(sub, sub_ep)
    pub = ctx.socket(zmq.PUB)
    connect_wait(pub, pub_ep)
    probe_until(lambda: pub.send(b"R|probe"), {"sub": (sub, lambda f: f == [b"R|probe"])})
    for i in range(n):
        pub.send(b"N|%d" % i)  # not subscribed: must not arrive
        pub.send(b"R|%d" % i)
    pub.send(b"R|end")
    got = []
    for _ in until(10, 10 * n):
        if not sub.poll(5000):
            break
        m = sub.recv()
        if m == b"R|end":
            break
        if m != b"R|probe":
            got.append(m)
    assert got == [b"R|%d" % i for i in range(n)]


@pytest.mark.parametrize(
    "front,back",
    [("DEALER", "ROUTER"), ("PUSH", "PULL"), ("XPUB", "XSUB"), ("PUB", "SUB")],
)
def test_reversed_orientation_works_like_the_usual_one(ctx, proxy_pair, front, back):
    """Each supported pair given backend-first: peers of the usual frontend connect to the
    backend endpoint and vice versa, and traffic flows exactly as with the usual orientation."""
    proxy = proxy_pair(front, back)
    if back == "ROUTER":
        _req_rep(ctx, client_ep=proxy.backend, worker_ep=proxy.frontend)
    elif back == "PULL":
        _push_pull(ctx, producer_ep=proxy.backend, consumer_ep=proxy.frontend)
    else:
        _pub_sub(ctx, pub_ep=proxy.backend, sub_ep=proxy.frontend)
    assert proxy.running, proxy.output()


def test_several_bind_endpoints_on_one_side(ctx, start_proxy):
    """--frontend-bind given twice: clients on either endpoint are served by the same workers."""
    a, b, back = free_ports(3)
    proxy = start_proxy(
        [
            "--frontend-type", "ROUTER", "--frontend-bind", ep(a), "--frontend-bind", ep(b),
            "--backend-type", "DEALER", "--backend-bind", ep(back),
            "--log-format", "json",
        ]
    )
    worker = ctx.socket(zmq.REP)
    connect_wait(worker, ep(back))
    clients = []
    for e in (ep(a), ep(b)):
        c = ctx.socket(zmq.REQ)
        connect_wait(c, e)
        clients.append(c)
    for i in range(20):
        for k, c in enumerate(clients):
            c.send(b"c%d-%d" % (k, i))
            worker.send(worker.recv() + b"!")
            assert c.recv() == b"c%d-%d!" % (k, i)
    assert proxy.running, proxy.output()


def test_dealer_capture_gets_every_message(ctx, proxy_pair):
    """A DEALER capture socket (the third capture type) hands a DEALER peer exactly the messages
    the pipeline carried, in order."""
    proxy = proxy_pair("PULL", "PUSH", capture="DEALER")
    cap = ctx.socket(zmq.DEALER)
    connect_wait(cap, proxy.capture)
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, proxy.frontend)
    sent = [[b"d%d" % i, b"", b"x" * i] for i in range(300)]
    for m in sent:
        producer.send_multipart(m)
    got = [consumer.recv_multipart() for _ in range(len(sent))]
    assert got == sent
    captured = []
    for _ in until(10, len(sent) + 1):
        if len(captured) == len(sent) or not cap.poll(5000):
            break
        captured.append(cap.recv_multipart())
    captured += recv_until_quiet(cap, quiet=0.3)
    assert captured == sent, f"DEALER capture got {len(captured)} of {len(sent)} messages (or other frames)"
