"""Draining through another replica (docs/federation.md, "Stopping and draining"): a PULL/PUSH
replica that stops while tasks wait at it for credit keeps reading the other replicas' credit,
hands its waiting tasks to them, and reads each link to the END they answer its LEAVING with.
Real zmq-proxy processes on loopback, libzmq producer and workers; every wait is a condition
polled against a deadline."""

from __future__ import annotations

import zmq

from test_federation import count_events, start_federation
from zmqpeers import connect_wait, until, wait_proxy_read_everything


def test_a_stopping_replica_hands_its_waiting_tasks_to_the_survivors_exactly_once(ctx, start_proxy):
    """r0 has a producer and no worker; r1 and r2 one worker each, which read nothing at first,
    so r0 holds most tasks for want of credit. Once r0 has read every task, it gets SIGTERM;
    then the workers read. Every task reaches exactly one worker, r0 exits with nothing
    undelivered, and the survivors were told it was leaving."""
    n, size = 400, 64 * 1024
    replicas = start_federation(
        start_proxy, 3, types=("PULL", "PUSH"),
        each=lambda i: ("--frontend-rcvhwm", "0", "--drain-timeout", "60") if i == 0 else ("--backend-sndhwm", "4"),
    )
    r0 = replicas[0]
    workers = []
    for r in replicas[1:]:
        w = ctx.socket(zmq.PULL)
        w.rcvhwm = 4
        connect_wait(w, r.backend)
        workers.append(w)
    producer = ctx.socket(zmq.PUSH)
    producer.sndhwm = 0
    connect_wait(producer, r0.frontend)
    pad = b"x" * size
    for i in range(n):
        producer.send(b"%d|" % i + pad)
    port = int(r0.frontend.rsplit(":", 1)[1])
    assert wait_proxy_read_everything(port, 20), "r0 read every task before it stops"
    r0.signal()
    got: list[bytes] = []
    poller = zmq.Poller()
    for w in workers:
        poller.register(w, zmq.POLLIN)
    for _ in until(60, 1_000_000):
        if len(got) >= n:
            break
        for sock, _ in poller.poll(100):
            for _ in range(100):
                try:
                    got.append(sock.recv(zmq.NOBLOCK).split(b"|", 1)[0])
                except zmq.Again:
                    break
    assert sorted(int(g) for g in got) == list(range(n)), f"{len(got)} of {n} tasks, {len(got) - len(set(got))} twice"
    assert r0.wait_exit(30) == 0
    stopped = r0.stopped_counters()
    assert stopped["undelivered_msgs"] == 0 and stopped["dropped_msgs"] == 0, stopped
    for r in replicas[1:]:
        assert count_events(r, "federation: replica leaving; no more tasks for it") == 1, r.output()
    for w in workers:
        assert not w.poll(200), "nothing more"


def test_replicas_stopping_together_answer_each_other_and_exit_promptly(ctx, start_proxy):
    """Three PULL/PUSH replicas get SIGTERM at once: each is leaving and waits for the others'
    END, which each still answers while it drains, so all exit well within their (long) drain
    timeout, with nothing undelivered."""
    replicas = start_federation(start_proxy, 3, types=("PULL", "PUSH"), extra=("--drain-timeout", "60"))
    for r in replicas:
        r.signal()
    for r in replicas:
        assert r.wait_exit(10) == 0, r.output()
        assert r.stopped_counters()["undelivered_msgs"] == 0
        assert count_events(r, "federation: replica leaving; no more tasks for it") == 2, r.output()
