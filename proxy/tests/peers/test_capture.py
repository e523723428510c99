"""The capture socket: a libzmq PULL or SUB on the capture endpoint sees a copy of exactly the
messages the proxy received, on both sides, with every frame."""

from __future__ import annotations

from collections import Counter

import zmq

from zmqpeers import connect_wait, probe_until, recv_until_quiet, until


def test_push_capture_sees_requests_and_replies_with_all_frames(ctx, proxy_pair):
    """ROUTER/DEALER with a PUSH capture. For each exchange the capture gets the request as the
    ROUTER received it ([routing id] + client frames, which is exactly what the worker receives)
    and the reply as the DEALER received it (exactly what the worker sent): both directions,
    every frame, nothing more. capture_sent_msgs counts those frames."""
    proxy = proxy_pair("ROUTER", "DEALER", capture="PUSH")
    cap = ctx.socket(zmq.PULL)
    connect_wait(cap, proxy.capture)
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, proxy.backend)
    req = ctx.socket(zmq.REQ)
    connect_wait(req, proxy.frontend)
    dealer = ctx.socket(zmq.DEALER)
    connect_wait(dealer, proxy.frontend)

    expected: list[tuple] = []
    for i in range(50):
        req.send(b"req%d" % i)
        w_in = worker.recv_multipart()
        assert w_in[1:] == [b"", b"req%d" % i], w_in
        w_out = [w_in[0], b"", b"rep%d" % i]
        worker.send_multipart(w_out)
        assert req.recv() == b"rep%d" % i
        expected += [tuple(w_in), tuple(w_out)]

        d_msg = [b"d%d" % i, b"", b"z" * (i * 100), b"last"]
        dealer.send_multipart(d_msg)
        w_in = worker.recv_multipart()
        assert w_in[1:] == d_msg, w_in
        w_out = [w_in[0], b"r%d" % i, b"", b"", b"tail"]
        worker.send_multipart(w_out)
        assert dealer.recv_multipart() == w_out[1:]
        expected += [tuple(w_in), tuple(w_out)]

    captured = []
    for _ in until(10, len(expected) + 1):
        if len(captured) >= len(expected) or not cap.poll(3000):
            break
        captured.append(tuple(cap.recv_multipart()))
    captured += [tuple(m) for m in recv_until_quiet(cap, quiet=0.3)]
    assert len(captured) == len(expected), f"capture saw {len(captured)} messages, {len(expected)} crossed"
    diff_missing = Counter(expected) - Counter(captured)
    diff_extra = Counter(captured) - Counter(expected)
    assert not diff_missing and not diff_extra, (
        f"capture differs: missing {list(diff_missing)[:3]!r}, unexpected {list(diff_extra)[:3]!r}"
    )
    assert proxy.stop() == 0, proxy.output()
    c = proxy.stopped_counters()
    frames = sum(len(m) for m in expected)
    assert c["capture_sent_msgs"] == frames, c
    assert c["capture_sent_bytes"] == sum(len(f) for m in expected for f in m), c
    assert c["frontend_recv_msgs"] + c["backend_recv_msgs"] == frames, c


def test_pub_capture_sees_every_pipeline_message_in_order(ctx, proxy_pair):
    """PULL/PUSH with a PUB capture and a SUB(b"") on it: once the capture subscription is in
    place (probed), the capture gets every message the consumer gets, same frames, same order."""
    proxy = proxy_pair("PULL", "PUSH", capture="PUB")
    cap = ctx.socket(zmq.SUB)
    cap.subscribe(b"")
    connect_wait(cap, proxy.capture)
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, proxy.frontend)
    probe_until(lambda: producer.send(b"probe"), {"capture": (cap, lambda f: f == [b"probe"])})

    sent = []
    for i in range(1000):
        sent.append([b"m%d" % i] if i % 4 else [b"m%d" % i, b"", b"q" * (i % 300)])
    sent.append([b"end"])

    def read(s, n):
        got = []
        for _ in until(15, 100_000):
            if len(got) == n or not s.poll(3000):
                break
            m = s.recv_multipart()
            if m != [b"probe"]:
                got.append(m)
        return got

    # A PUB capture drops at its high-water mark (1000 per subscriber, as libzmq's PUB does),
    # so the test keeps well under it: it sends in windows of 100 and reads each window from
    # both sides before the next. What it proves is completeness and order, not burst depth.
    window = 100
    got_consumer, got_capture = [], []
    for start in range(0, len(sent), window):
        chunk = sent[start : start + window]
        for m in chunk:
            producer.send_multipart(m)
        got_consumer += read(consumer, len(chunk))
        got_capture += read(cap, len(chunk))

    assert got_consumer == sent, "consumer did not get the messages"
    assert got_capture == sent, f"PUB capture got {len(got_capture)} of {len(sent)} messages (or different frames/order)"
    assert proxy.stop() == 0, proxy.output()
    c = proxy.stopped_counters()
    assert c["capture_sent_msgs"] == c["frontend_recv_msgs"] + c["backend_recv_msgs"], c
