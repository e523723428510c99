"""ROUTER/DEALER shared queue (zmq_proxy(3) "Shared Queue") with libzmq REQ/DEALER clients and
REP/DEALER workers: replies go back to their sender, work is spread, multipart survives."""

from __future__ import annotations

import threading
import time
from collections import Counter

import zmq

from zmqpeers import connect_wait, recv_until_quiet, until

N_CLIENTS = 8
N_REQUESTS = 500
N_WORKERS = 3


def _rep_worker(sock: zmq.Socket, name: bytes, stop: threading.Event, handled: Counter, errors: list) -> None:
    try:
        for _ in until(60, 1_000_000):
            if stop.is_set():
                return
            if not sock.poll(50):
                continue
            frames = sock.recv_multipart()
            if len(frames) != 1:
                errors.append(f"worker {name!r} got {len(frames)} frames after the envelope: {frames!r}")
            sock.send(frames[0] + b"|" + name)
            handled[name] += 1
    except Exception as e:  # noqa: BLE001 - reported by the test thread
        errors.append(f"worker {name!r}: {e!r}")


def test_req_clients_get_their_own_replies_and_work_is_spread(ctx, proxy_pair):
    """8 REQ clients x 500 requests through ROUTER/DEALER to 3 REP workers: every reply carries
    the exact client id and request id that was sent, and each worker handled >= 10 %."""
    proxy = proxy_pair("ROUTER", "DEALER")
    stop = threading.Event()
    handled: Counter = Counter()
    errors: list[str] = []
    workers = []
    for w in range(N_WORKERS):
        s = ctx.socket(zmq.REP)
        connect_wait(s, proxy.backend)
        workers.append((s, f"w{w}".encode()))
    clients = []
    for _ in range(N_CLIENTS):
        s = ctx.socket(zmq.REQ)
        connect_wait(s, proxy.frontend)
        clients.append(s)

    replies: dict[int, list[bytes]] = {c: [] for c in range(N_CLIENTS)}

    def client(cid: int, sock: zmq.Socket) -> None:
        try:
            for i in range(N_REQUESTS):
                sock.send(b"c%d:%d" % (cid, i))
                replies[cid].append(sock.recv())  # RCVTIMEO 10 s from the context
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {cid} after {len(replies[cid])} replies: {e!r}")

    wthreads = [threading.Thread(target=_rep_worker, args=(s, n, stop, handled, errors)) for s, n in workers]
    cthreads = [threading.Thread(target=client, args=(c, s)) for c, s in enumerate(clients)]
    for t in wthreads + cthreads:
        t.start()
    for t in cthreads:
        t.join(timeout=60)
    stop.set()
    for t in wthreads:
        t.join(timeout=5)

    assert not errors, errors[:5]
    worker_names = {n for _, n in workers}
    for cid in range(N_CLIENTS):
        got = replies[cid]
        assert len(got) == N_REQUESTS, f"client {cid} got {len(got)} of {N_REQUESTS} replies"
        for i, rep in enumerate(got):
            req, _, wname = rep.rpartition(b"|")
            assert req == b"c%d:%d" % (cid, i), f"client {cid} request {i} got reply {rep!r}"
            assert wname in worker_names, f"reply {rep!r} names no known worker"
    total = N_CLIENTS * N_REQUESTS
    assert sum(handled.values()) == total, handled
    for name in worker_names:
        assert handled[name] >= total // 10, f"work not spread over the workers: {dict(handled)}"
    assert proxy.running, proxy.output()


def _multipart_shapes(cid: int) -> list[list[bytes]]:
    """Messages of several frames, with empty frames first, in the middle and last, and a large one;
    each carries a unique tag so it can be matched exactly."""
    shapes = []
    for i in range(40):
        tag = b"c%d:m%d" % (cid, i)
        k = i % 5
        if k == 0:
            shapes.append([b"", tag, b"payload"])
        elif k == 1:
            shapes.append([tag, b"", b"", b"tail"])
        elif k == 2:
            shapes.append([tag, bytes(range(256)) * 400])
        elif k == 3:
            shapes.append([tag] + [bytes([j]) * j for j in range(8)])
        else:
            shapes.append([tag, b"x", b""])
    return shapes


def test_dealer_clients_multipart_round_trip_intact(ctx, proxy_pair):
    """DEALER clients send multipart messages (empty frames included, one ~100 KiB) to DEALER echo
    workers. A worker sees exactly [routing id] + the client's frames; the client gets back exactly
    the frames it sent, each message once, and nothing of another client's."""
    proxy = proxy_pair("ROUTER", "DEALER")
    stop = threading.Event()
    errors: list[str] = []
    seen_by_workers: list[tuple] = []
    expected = {cid: {tuple(m) for m in _multipart_shapes(cid)} for cid in range(3)}
    all_expected = set().union(*expected.values())

    def echo(sock: zmq.Socket) -> None:
        try:
            for _ in until(60, 100_000):
                if stop.is_set():
                    return
                if not sock.poll(50):
                    continue
                frames = sock.recv_multipart()
                body = tuple(frames[1:])
                if body not in all_expected or not frames[0]:
                    errors.append(f"worker got unexpected frames {[f[:20] for f in frames]!r}")
                seen_by_workers.append(body)
                sock.send_multipart(frames)
        except Exception as e:  # noqa: BLE001
            errors.append(f"echo worker: {e!r}")

    wsocks = []
    for _ in range(2):
        s = ctx.socket(zmq.DEALER)
        connect_wait(s, proxy.backend)
        wsocks.append(s)
    csocks = []
    for _ in range(3):
        s = ctx.socket(zmq.DEALER)
        connect_wait(s, proxy.frontend)
        csocks.append(s)
    threads = [threading.Thread(target=echo, args=(s,)) for s in wsocks]
    for t in threads:
        t.start()
    try:
        for cid, s in enumerate(csocks):
            for m in _multipart_shapes(cid):
                s.send_multipart(m)
        poller = zmq.Poller()
        for s in csocks:
            poller.register(s, zmq.POLLIN)
        got: dict[int, list[tuple]] = {cid: [] for cid in range(3)}
        want = sum(len(v) for v in expected.values())
        for _ in until(20, 10_000):
            if sum(len(v) for v in got.values()) >= want:
                break
            for s, _ in poller.poll(100):
                got[csocks.index(s)].append(tuple(s.recv_multipart()))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    assert not errors, errors[:5]
    for cid in range(3):
        assert len(got[cid]) == len(set(got[cid])), f"client {cid} got a message twice"
        missing = expected[cid] - set(got[cid])
        foreign = set(got[cid]) - expected[cid]
        assert not foreign, f"client {cid} got another client's messages: {[m[:2] for m in foreign]}"
        assert not missing, f"client {cid} is missing {len(missing)} replies, e.g. {[m[:2] for m in list(missing)[:3]]}"
    assert sorted(seen_by_workers) == sorted(all_expected), "workers did not see each request exactly once"
    assert proxy.running, proxy.output()


def test_request_before_any_worker_is_delivered_when_a_worker_connects(ctx, proxy_pair):
    """A request sent while no worker is connected is held, not dropped: it gets no reply while
    there is no worker, and is answered once a REP worker connects."""
    proxy = proxy_pair("ROUTER", "DEALER")
    client = ctx.socket(zmq.REQ)
    connect_wait(client, proxy.frontend)
    client.send(b"early-request")
    assert not client.poll(300), "a reply arrived although no worker was connected"
    worker = ctx.socket(zmq.REP)
    connect_wait(worker, proxy.backend)
    assert worker.poll(5000), "the request sent before any worker connected was never delivered"
    assert worker.recv_multipart() == [b"early-request"]
    worker.send(b"early-reply")
    assert client.poll(5000), "no reply for the early request"
    assert client.recv() == b"early-reply"
    t0 = time.monotonic()
    client.send(b"second")
    assert worker.recv() == b"second"
    worker.send(b"second-reply")
    assert client.recv() == b"second-reply"
    assert time.monotonic() - t0 < 5


def test_routing_id_reaches_the_worker_and_a_duplicate_cannot_steal_replies(ctx, proxy_pair):
    """A DEALER client with ROUTING_ID b"client-A" is seen by the worker under that id (libzmq
    ROUTER semantics). A second client claiming the same id is refused while the first is
    connected (libzmq without ROUTER_HANDOVER): its request never reaches the worker, and every
    reply to b"client-A" goes to the first client."""
    proxy = proxy_pair("ROUTER", "DEALER")
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, proxy.backend)
    first = ctx.socket(zmq.DEALER)
    first.routing_id = b"client-A"
    connect_wait(first, proxy.frontend)
    first.send_multipart([b"", b"hello-1"])
    assert worker.poll(5000), "request never reached the worker"
    assert worker.recv_multipart() == [b"client-A", b"", b"hello-1"]
    worker.send_multipart([b"client-A", b"", b"reply-1"])
    assert first.poll(5000) and first.recv_multipart() == [b"", b"reply-1"]

    impostor = ctx.socket(zmq.DEALER)
    impostor.routing_id = b"client-A"
    impostor.sndtimeo = 0
    # Any of these means the proxy got as far as the impostor's READY (or refused it earlier).
    mon = impostor.get_monitor_socket(
        zmq.EVENT_DISCONNECTED
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    )
    try:
        impostor.connect(proxy.frontend)
        assert mon.poll(5000), "the connection claiming a routing id in use got no answer from the proxy"
    finally:
        impostor.disable_monitor()
        mon.close(0)
    try:
        impostor.send_multipart([b"", b"impostor"])
    except zmq.Again:
        pass  # never connected: libzmq has nowhere to queue it
    for i in range(2, 12):
        first.send_multipart([b"", b"hello-%d" % i])
        assert worker.poll(5000), f"request {i} never reached the worker"
        frames = worker.recv_multipart()
        assert frames == [b"client-A", b"", b"hello-%d" % i], f"worker got {frames!r}"
        worker.send_multipart([b"client-A", b"", b"reply-%d" % i])
        assert first.poll(5000), f"the first client lost reply {i}"
        assert first.recv_multipart() == [b"", b"reply-%d" % i]
    assert not impostor.poll(200), "the duplicate-id client received a reply meant for the first"
    assert recv_until_quiet(worker, quiet=0.3) == [], "the duplicate-id client's request reached the worker"
