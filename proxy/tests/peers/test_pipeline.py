"""PULL/PUSH pipeline with libzmq PUSH producers and PULL consumers: volume, frame shapes,
per-producer order, and producers that run before any consumer exists."""

from __future__ import annotations

import threading
import time

import zmq

from zmqpeers import connect_wait, recv_until_quiet, until, wait_proxy_read_everything

MIB = 1 << 20
PER_PRODUCER = 50_000
N_PRODUCERS = 2


def _message(pid: int, seq: int) -> list[bytes]:
    """The seq-th message of producer pid. Every 1000th is a single empty frame (only countable),
    every 5000th carries a 1 MiB frame, every 7th is multipart with empty frames."""
    if seq % 1000 == 999:
        return [b""]
    hdr = b"p%d:%d" % (pid, seq)
    if seq % 5000 == 2500:
        return [hdr, bytes([seq % 251]) * MIB]
    if seq % 7 == 3:
        return [hdr, b"", b"m%d" % seq, b""]
    return [hdr]


def test_100k_messages_from_two_producers_none_lost_order_kept(ctx, proxy_pair):
    """2 producers x 50 000 messages (single empty frames, 1 MiB frames, multipart with empty
    frames) reach one consumer: exact count, every message byte-identical, per-producer sequence
    numbers strictly in order, nothing extra afterwards."""
    proxy = proxy_pair("PULL", "PUSH")
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    producers = []
    for _ in range(N_PRODUCERS):
        s = ctx.socket(zmq.PUSH)
        connect_wait(s, proxy.frontend)
        producers.append(s)
    errors: list[str] = []

    def produce(pid: int, sock: zmq.Socket) -> None:
        try:
            for seq in range(PER_PRODUCER):
                sock.send_multipart(_message(pid, seq))  # SNDTIMEO 10 s from the context
        except Exception as e:  # noqa: BLE001
            errors.append(f"producer {pid} at {seq}: {e!r}")

    threads = [threading.Thread(target=produce, args=(i, s)) for i, s in enumerate(producers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    total = N_PRODUCERS * PER_PRODUCER
    seqs: dict[int, list[int]] = {p: [] for p in range(N_PRODUCERS)}
    empties = 0
    bad: list = []
    received = 0
    try:
        for _ in until(50, total + 1):
            if received >= total:
                break
            if not consumer.poll(2000):
                break
            frames = consumer.recv_multipart()
            received += 1
            if frames == [b""]:
                empties += 1
                continue
            pid_s, _, seq_s = frames[0][1:].partition(b":")
            pid, seq = int(pid_s), int(seq_s)
            if frames != _message(pid, seq) and len(bad) < 5:
                bad.append((pid, seq, [len(f) for f in frames]))
            seqs[pid].append(seq)
    finally:
        for t in threads:
            t.join(timeout=30)
    elapsed = time.monotonic() - t0
    assert not errors, errors
    assert not bad, f"messages changed in transit (pid, seq, frame sizes): {bad}"
    assert received == total, f"consumer got {received} of {total} messages in {elapsed:.1f}s"
    assert empties == N_PRODUCERS * (PER_PRODUCER // 1000), f"{empties} single-empty-frame messages"
    for pid in range(N_PRODUCERS):
        want = [s for s in range(PER_PRODUCER) if s % 1000 != 999]
        got = seqs[pid]
        assert got == want, (
            f"producer {pid}: {len(got)} of {len(want)} numbered messages, "
            f"first out of place at index {next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)}"
        )
    assert recv_until_quiet(consumer, quiet=0.3) == [], "messages arrived beyond the ones sent"
    assert proxy.running, proxy.output()


def test_producer_before_any_consumer_loses_nothing(ctx, proxy_pair):
    """A producer sends 500 messages while no consumer exists (they are flushed out of the producer
    and, if the proxy reads eagerly, read by the proxy with no PUSH peer to give them to); a consumer
    that connects afterwards gets all 500, in order, and nothing else."""
    proxy = proxy_pair("PULL", "PUSH")
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, proxy.frontend)
    sent = [[b"early:%d" % i] if i % 3 else [b"early:%d" % i, b"", b"x" * 700] for i in range(500)]
    for m in sent:
        producer.send_multipart(m)
    port = int(proxy.frontend.rsplit(":", 1)[1])
    # Gives an eagerly reading proxy the chance to take every message with no consumer connected;
    # a proxy that reads only when its backend is writable leaves them queued, which is fine too.
    proxy_read_all = wait_proxy_read_everything(port, timeout=2.0)
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    got = []
    for _ in until(10, len(sent) + 1):
        if len(got) >= len(sent) or not consumer.poll(3000):
            break
        got.append(consumer.recv_multipart())
    got += recv_until_quiet(consumer, quiet=0.3)
    assert got == sent, (
        f"consumer got {len(got)} of {len(sent)} messages sent before it existed "
        f"(proxy had read them all before the consumer came: {proxy_read_all})"
    )


def test_messages_of_a_producer_gone_before_any_consumer_are_delivered(ctx, proxy_pair):
    """A producer sends 300 messages and leaves (its context terminated with linger, so every byte
    reached the proxy's connection) before any consumer exists. As with libzmq, messages received
    from a peer that has since disconnected are still forwarded: the consumer gets all 300 in order."""
    proxy = proxy_pair("PULL", "PUSH")
    pctx = zmq.Context()
    try:
        producer = pctx.socket(zmq.PUSH)
        producer.sndtimeo = 5000
        connect_wait(producer, proxy.frontend)
        sent = [[b"gone:%d" % i, b"y" * (i % 50)] for i in range(300)]
        for m in sent:
            producer.send_multipart(m)
        producer.close(linger=5000)
        t0 = time.monotonic()
        pctx.term()  # returns once the messages are written out, or after the 5 s linger
        flushed_in = time.monotonic() - t0
    finally:
        pctx.destroy(linger=0)
    port = int(proxy.frontend.rsplit(":", 1)[1])
    proxy_read_all = wait_proxy_read_everything(port, timeout=2.0)
    consumer = ctx.socket(zmq.PULL)
    connect_wait(consumer, proxy.backend)
    got = []
    for _ in until(10, len(sent) + 1):
        if len(got) >= len(sent) or not consumer.poll(3000):
            break
        got.append(consumer.recv_multipart())
    got += recv_until_quiet(consumer, quiet=0.3)
    assert flushed_in < 5, "the producer could not flush its messages to the proxy"
    assert got == sent, (
        f"consumer got {len(got)} of {len(sent)} messages of a producer that left before it came "
        f"(proxy had read them all: {proxy_read_all})"
    )
    assert proxy.running, proxy.output()
