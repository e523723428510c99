"""A replica stopped mid-stream hands over what its own workers were queued and not yet written
(docs/federation.md, "Stopping and draining"): three zmq-proxy replicas on loopback, libzmq
producers, clients and workers; the stopping replica has slow workers of its own, so its
per-worker queues are full when it gets SIGTERM. Whatever it had read reaches a worker exactly
once: what was written to its own workers they finish, the rest goes through a survivor.
Every wait is a condition polled against a deadline; the only pause is the slow workers' work."""

from __future__ import annotations

import threading
import time

import zmq

from test_federation import start_federation
from zmqpeers import connect_wait, log_fields, until

# Each task or request costs a slow worker this much work: the shape of the load, not a wait.
WORK = 0.008


class Reader:
    """Worker sockets read by one thread each, every message recorded; `slow` ones spend WORK
    on each message. `answer` replies as a DEALER worker does (the envelope back, the body
    tagged with the worker's name)."""

    def __init__(self, socks: dict[str, zmq.Socket], slow: set[str], answer: bool = False, work: float = WORK):
        self.work = work
        self.got: dict[str, list[bytes]] = {n: [] for n in socks}
        # Requests that came with two routing frames: placed on one replica by another, then
        # handed over by the first to a third.
        self.twice = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n, s, n in slow, answer), daemon=True) for n, s in socks.items()
        ]
        for t in self.threads:
            t.start()

    def _run(self, name: str, sock: zmq.Socket, slow: bool, answer: bool) -> None:
        try:
            for _ in until(120, 10_000_000):
                if self.stop.is_set() or not sock.poll(20):
                    continue
                for _ in range(1 if slow else 1000):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if slow:
                        time.sleep(self.work)
                    with self.lock:
                        self.got[name].append(frames[-1].split(b"|", 1)[0])
                        self.twice += len(frames) > 2 and frames[0][:2] == frames[1][:2] == b"\x00\xfe"
                    if answer:
                        sock.send_multipart(frames[:-1] + [frames[-1].split(b"|", 1)[0] + b"|" + name.encode()])
                if self.stop.is_set():
                    return
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            self.errors.append(repr(e))

    def count(self) -> dict[str, int]:
        with self.lock:
            return {n: len(g) for n, g in self.got.items()}

    def all(self) -> list[int]:
        with self.lock:
            return sorted(int(i) for g in self.got.values() for i in g)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)


def workers(ctx, replicas, where: dict[str, int], kind: int) -> dict[str, zmq.Socket]:
    socks = {}
    for name, i in where.items():
        s = ctx.socket(kind)
        # Little room in the worker itself, so what the stopping replica queued for it stays
        # in that replica's queue (where it can still be taken back) rather than in libzmq's.
        s.rcvhwm = 2
        s.setsockopt(zmq.RCVBUF, 16 * 1024)
        connect_wait(s, replicas[i].backend)
        socks[name] = s
    return socks


def handed_over(replica) -> int:
    ev = replica.find_event("federation stopped")
    assert ev is not None, replica.output()
    return log_fields(ev)["handed_over"]


def test_a_pipeline_replica_stopped_mid_stream_loses_no_task_it_read(ctx, start_proxy):
    """A producer streams tasks into r0; r0's two workers are slow, r1's and r2's fast. Once
    r0's own workers' queues are full (tasks reach the other replicas), r0 gets SIGTERM while
    the producer still sends. Every task r0 read (its frontend count) reaches exactly one worker,
    although r0's workers could not have read their queues within its drain timeout: r0 took
    them back and placed them on r1 and r2."""
    # The kernel holds a few MiB written to each slow worker (theirs to finish); their queues
    # hold many times that, which they could not finish within the drain timeout.
    size, drain = 32 * 1024, 10
    replicas = start_federation(
        start_proxy, 3, types=("PULL", "PUSH"),
        each=lambda i: ("--drain-timeout", str(drain), "--backend-sndhwm", "1500") if i == 0 else (),
    )
    r0 = replicas[0]
    reader = Reader(workers(ctx, replicas, {"a0": 0, "a1": 0, "b": 1, "c": 2}, zmq.PULL), slow={"a0", "a1"})
    stop = threading.Event()
    sent = [0]

    def produce() -> None:
        producer = ctx.socket(zmq.PUSH)
        producer.sndhwm = 100
        producer.connect(r0.frontend)
        pad = b"x" * size
        for _ in until(120, 10_000_000):
            if stop.is_set():
                break
            # Room at the producer's high-water mark: r0 is reading (it stops when r0 drains).
            if producer.poll(20, zmq.POLLOUT):
                producer.send(b"%d|" % sent[0] + pad)
                sent[0] += 1
        producer.close(linger=0)

    prod = threading.Thread(target=produce, daemon=True)
    prod.start()
    try:
        for _ in until(20, 100_000):
            c = reader.count()
            if c["b"] + c["c"] >= 500:
                break
            time.sleep(0.01)  # the poll interval of a condition with a deadline
        c = reader.count()
        assert c["b"] + c["c"] >= 500, f"r0's own workers' queues never filled: {c}"
        r0.signal()
        assert r0.wait_for_event("draining", 5), r0.output()
        assert r0.wait_exit(drain + 10) == 0, r0.output()
        stop.set()
        prod.join(5)
        stopped = r0.stopped_counters()
        read = stopped["frontend_recv_msgs"]
        assert 0 < read <= sent[0]
        assert stopped["undelivered_msgs"] == 0 and stopped["dropped_msgs"] == 0, stopped
        for _ in until(60, 100_000):
            if sum(reader.count().values()) >= read:
                break
            time.sleep(0.01)  # the poll interval of a condition with a deadline
        got = reader.all()
        assert len(got) == len(set(got)), f"{len(got) - len(set(got))} tasks delivered twice"
        assert got == list(range(read)), f"{read} read by r0, {len(got)} delivered, {read - len(got)} lost"
        assert handed_over(r0) > 0, "r0 took nothing back: its workers' queues were not full"
        assert not reader.errors, reader.errors
    finally:
        stop.set()
        reader.close()


class ReqClients:
    """REQ clients on one replica, driven by one thread: each sends its next request as soon as
    its reply arrives, until `quiet()`; every reply is recorded."""

    def __init__(self, ctx, endpoint: str, n: int, size: int, first: int = 0):
        self.first = first
        self.socks = []
        for _ in range(n):
            s = ctx.socket(zmq.REQ)
            connect_wait(s, endpoint)
            self.socks.append(s)
        self.pad = b"x" * size
        self.sent = 0
        self.replies: list[bytes] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.silent = threading.Event()
        self.started = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _send(self, s: zmq.Socket) -> None:
        with self.lock:
            i = self.first + self.sent
            self.sent += 1
        s.send(b"%d|" % i + self.pad)

    def _run(self) -> None:
        poller = zmq.Poller()
        for s in self.socks:
            poller.register(s, zmq.POLLIN)
            self._send(s)
        self.started.set()
        try:
            for _ in until(120, 10_000_000):
                if self.stop.is_set():
                    return
                for s, _ in poller.poll(20):
                    reply = s.recv()
                    with self.lock:
                        self.replies.append(reply)
                    if not self.silent.is_set():
                        self._send(s)
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            self.errors.append(repr(e))

    def quiet(self) -> range:
        """No new request from now on; returns the ones sent."""
        self.silent.set()
        with self.lock:
            return range(self.first, self.first + self.sent)

    def answered(self) -> list[int]:
        with self.lock:
            return sorted(int(r.split(b"|")[0]) for r in self.replies)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def test_a_shared_queue_replica_stopped_mid_stream_loses_no_request_it_read(ctx, start_proxy):
    """REQ clients on r0 keep its slow DEALER worker's queue full, and so do REQ clients on r1
    (no worker there: their requests go to r0 and r2); r2 has a fast worker. r0 gets SIGTERM with
    requests queued to its own worker and not yet written: it takes them back and places them on
    r2, within a drain timeout its own worker could not have met. The replies retrace the way:
    to r0's clients through r0, to r1's through r2, r0 and r1. The clients stop sending when r0
    is stopped (a REQ request sent after r0 closed that client could not be answered, see
    docs/federation.md); every request sent is answered exactly once, by one worker."""
    size, drain = 128 * 1024, 5
    replicas = start_federation(
        start_proxy, 3, types=("ROUTER", "DEALER"),
        each=lambda i: ("--drain-timeout", str(drain), "--backend-sndhwm", "2000") if i == 0 else (),
    )
    r0 = replicas[0]
    reader = Reader(workers(ctx, replicas, {"a": 0, "c": 2}, zmq.DEALER), slow={"a"}, answer=True, work=0.02)
    own = ReqClients(ctx, r0.frontend, 400, size)
    placed = ReqClients(ctx, replicas[1].frontend, 100, size, first=1_000_000)
    try:
        for _ in until(20, 100_000):
            if own.started.is_set() and placed.started.is_set() and reader.count()["a"] >= 20:
                break
            time.sleep(0.01)  # the poll interval of a condition with a deadline
        assert own.started.is_set() and placed.started.is_set() and reader.count()["a"] >= 20, reader.count()
        sent = list(own.quiet()) + list(placed.quiet())
        r0.signal()
        assert r0.wait_for_event("draining", 5), r0.output()
        for _ in until(drain + 20, 100_000):
            if len(own.answered()) + len(placed.answered()) >= len(sent):
                break
            time.sleep(0.01)  # the poll interval of a condition with a deadline
        assert r0.wait_exit(drain + 10) == 0, r0.output()
        stopped = r0.stopped_counters()
        answered = own.answered() + placed.answered()
        assert stopped["undelivered_msgs"] == 0 and stopped["dropped_msgs"] == 0, stopped
        assert len(answered) == len(set(answered)), f"{len(answered) - len(set(answered))} answered twice"
        assert sorted(answered) == sent, f"{len(sent)} sent, {len(answered)} answered"
        assert reader.all() == sent, "each request reached one worker once"
        assert handed_over(r0) > 0, "r0 took nothing back: its worker's queue was not full"
        assert reader.twice > 0, "none of r1's requests queued at r0 was handed over"
        errors = reader.errors + own.errors + placed.errors
        assert not errors, errors
    finally:
        own.close()
        placed.close()
        reader.close()
