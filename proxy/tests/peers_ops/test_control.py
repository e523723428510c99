"""The --control-bind socket driven by a real libzmq REQ client, exactly as tools written for
libzmq's zmq_proxy_steerable drive it: PAUSE/RESUME hold and release traffic without losing
any, STATISTICS is exact (frames and payload bytes, multipart counted per part), TERMINATE
drains and exits 0, and an unknown command is refused without changing anything."""

from __future__ import annotations

import zmq

from opsutil import Control, metric, scrape
from zmqpeers import connect_wait, raw_connect, recv_until_quiet, wait_proxy_read_everything, zmtp_greeting


def _pipeline(ops_proxy, ctx, extra=()):
    """A PULL/PUSH proxy with one producer and one consumer whose handshakes completed, and a
    control client; a first message proves the path works before a test steers it."""
    p = ops_proxy("PULL", "PUSH", extra=extra)
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, p.backend)
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, p.frontend)
    producer.send(b"warm-up")
    assert consumer.poll(5000), "the warm-up message never crossed the proxy"
    assert consumer.recv() == b"warm-up"
    return p, producer, consumer, Control(ctx, p.control)


def test_pause_holds_1000_messages_and_resume_delivers_all_in_order(ops_proxy, ctx):
    p, producer, consumer, control = _pipeline(ops_proxy, ctx)
    control.command(b"PAUSE")
    assert metric(scrape(p.http), "zmq_proxy_paused") == 1
    sent = [b"m%04d" % i for i in range(1000)]
    for m in sent:
        producer.send(m)
    assert not consumer.poll(500), "a message crossed a paused proxy"
    control.command(b"RESUME")
    got = recv_until_quiet(consumer, quiet=1.0, total=15.0)
    assert [g[0] for g in got] == sent, f"after RESUME got {len(got)} of 1000 (or out of order)"
    assert metric(scrape(p.http), "zmq_proxy_paused") == 0
    # PAUSE twice and RESUME twice are acknowledged like once.
    control.command(b"PAUSE")
    control.command(b"PAUSE")
    control.command(b"RESUME")
    control.command(b"RESUME")
    producer.send(b"after")
    assert consumer.poll(5000) and consumer.recv() == b"after"


def test_statistics_counts_every_frame_and_payload_byte(ops_proxy, ctx):
    p, producer, consumer, control = _pipeline(ops_proxy, ctx)
    msgs = [[bytes([65 + i % 26]) * ((i * 37) % 300) for _ in range(1 + i % 4)] for i in range(300)]
    for m in msgs:
        producer.send_multipart(m)
    got = recv_until_quiet(consumer, quiet=0.5, total=15.0)
    assert got == msgs
    frames = 1 + sum(len(m) for m in msgs)  # the warm-up message is one frame
    payload = len(b"warm-up") + sum(len(f) for m in msgs for f in m)
    assert control.statistics() == {
        "frontend_recv_msgs": frames,
        "frontend_recv_bytes": payload,
        "frontend_sent_msgs": 0,
        "frontend_sent_bytes": 0,
        "backend_recv_msgs": 0,
        "backend_recv_bytes": 0,
        "backend_sent_msgs": frames,
        "backend_sent_bytes": payload,
    }


def test_statistics_of_a_shared_queue_count_envelopes_as_libzmq_does(ops_proxy, ctx):
    """ROUTER/DEALER: the proxy's ROUTER reads [routing id, empty, body] from a REQ and writes
    the same three frames back, so each request and reply counts 3 frames there."""
    p = ops_proxy("ROUTER", "DEALER")
    worker = ctx.socket(zmq.REP)
    connect_wait(worker, p.backend)
    client = ctx.socket(zmq.REQ)
    client.routing_id = b"client-7"
    connect_wait(client, p.frontend)
    control = Control(ctx, p.control)
    n = 40
    for i in range(n):
        client.send(b"q" * i)
        assert worker.poll(5000), f"request {i} never reached the worker"
        worker.send(worker.recv() + b"!!")
        assert client.poll(5000) and client.recv() == b"q" * i + b"!!"
    req_bytes = sum(len(b"client-7") + len(b"q" * i) for i in range(n))
    rep_bytes = sum(len(b"client-7") + i + 2 for i in range(n))
    assert control.statistics() == {
        "frontend_recv_msgs": 3 * n,
        "frontend_recv_bytes": req_bytes,
        "frontend_sent_msgs": 3 * n,
        "frontend_sent_bytes": rep_bytes,
        "backend_recv_msgs": 3 * n,
        "backend_recv_bytes": rep_bytes,
        "backend_sent_msgs": 3 * n,
        "backend_sent_bytes": req_bytes,
    }


def test_unknown_command_gets_an_error_and_changes_nothing(ops_proxy, ctx):
    p, producer, consumer, control = _pipeline(ops_proxy, ctx)
    before = control.statistics()
    for bad in ([b"pause"], [b"PAUSE "], [b""], [b"FLUSH"], [b"PAUSE", b"now"]):
        reply = control.request(*bad)
        assert len(reply) == 1 and reply[0].startswith(b"ERROR"), f"{bad!r} answered {reply!r}"
    assert control.statistics() == before, "a refused command changed the counters"
    producer.send(b"still-active")
    assert consumer.poll(5000), "a refused 'pause' paused the proxy"
    assert consumer.recv() == b"still-active"
    control.command(b"PAUSE")
    assert control.request(b"RESUME!")[0].startswith(b"ERROR")
    producer.send(b"held")
    assert not consumer.poll(300), "a refused 'RESUME!' resumed the proxy"
    control.command(b"RESUME")
    assert consumer.poll(5000) and consumer.recv() == b"held"


def test_terminate_drains_a_paused_backlog_and_exits_zero(ops_proxy, ctx):
    p, producer, consumer, control = _pipeline(ops_proxy, ctx, extra=("--drain-timeout", "10"))
    control.command(b"PAUSE")
    sent = [b"t%03d" % i for i in range(500)]
    for m in sent:
        producer.send(m)
    assert not consumer.poll(200)
    # The drain delivers what the proxy read; what the kernel still holds is the peer's.
    port = int(p.frontend.rsplit(":", 1)[1])
    assert wait_proxy_read_everything(port, 5.0), "the proxy never read the paused backlog"
    control.command(b"TERMINATE")
    rc = p.wait_exit(10)
    assert rc == 0, f"exit code {rc} after TERMINATE\n{p.output()}"
    assert p.find_event("draining") is not None, "TERMINATE did not go through the drain"
    got = recv_until_quiet(consumer, quiet=0.5, total=10.0)
    assert [g[0] for g in got] == sent, f"the drain delivered {len(got)} of 500"
    c = p.stopped_counters()
    assert c["backend_sent_msgs"] == 501 and c["undelivered_msgs"] == 0, c


def test_control_socket_survives_garbage_silence_and_vanished_requesters(ops_proxy, ctx):
    """The control socket is the zeromq crate's REP: a port scanner, a connection that never
    greets, a bogus ZMTP command and a requester that leaves before its reply must not stop
    it answering the next tool."""
    p = ops_proxy("PULL", "PUSH")
    port = int(p.control.rsplit(":", 1)[1])
    junk = raw_connect(port)
    junk.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
    silent = raw_connect(port)
    bogus = raw_connect(port)
    bogus.sendall(zmtp_greeting() + b"\x04\xff" + b"garbage" * 100)
    gone = ctx.socket(zmq.REQ)
    gone.connect(p.control)
    gone.send(b"PAUSE")
    gone.close(0)
    try:
        control = Control(ctx, p.control)
        stats = control.statistics()
        assert stats["frontend_recv_msgs"] == 0
        control.command(b"RESUME")
        assert p.running
    finally:
        for s in (junk, silent, bogus):
            s.close()
