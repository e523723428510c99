"""ROUTER/DEALER federation (docs/federation.md, "ROUTER/DEALER"): three zmq-proxy replicas on
127.0.0.1, libzmq clients on some and workers on others, never a client on the same replica as
the workers that answer it. A request goes to a replica with spare workers, the worker sees one
routing frame more (naming the entry replica), and the reply retraces the way to its client.
Also the links' heartbeats (a frozen replica is dropped within the bound) and what a replica
stopped mid-stream loses, counted."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import zmq

from test_federation import _key_file, count_events, start_federation
from test_metrics_words import _sample, _scrape
from zmqpeers import connect_wait, free_ports, log_fields, log_message, until

HEARTBEAT_BOUND = 1.0 + 3.0  # FEDERATION_HEARTBEAT_INTERVAL + FEDERATION_HEARTBEAT_TIMEOUT


def member_tag(member_id: str) -> int:
    """FNV-1a of a --federation-id, as the replicas compute it."""
    h = 0xCBF29CE484222325
    for b in member_id.encode():
        h ^= b
        h = (h * 0x100000001B3) % (1 << 64)
    return h


def route_frame(member_id: str) -> bytes:
    return b"\x00\xfe" + member_tag(member_id).to_bytes(8, "big")


def reqrep(start_proxy, extra_each=lambda i: (), extra: tuple = ()) -> list:
    return start_federation(start_proxy, 3, types=("ROUTER", "DEALER"), each=extra_each, extra=extra)


class Workers:
    """DEALER workers read by one thread: each request is recorded (and must carry the routing
    frame of an entry replica in `entries`); replies go out at once, or when `release()` is
    called if `hold`."""

    def __init__(self, socks: dict[str, zmq.Socket], entries: set[bytes], hold: bool = False):
        self.socks, self.entries, self.hold = socks, entries, hold
        self.got: dict[str, list[list[bytes]]] = {n: [] for n in socks}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for s in self.socks.values():
            poller.register(s, zmq.POLLIN)
        names = {s: n for n, s in self.socks.items()}
        answered = {n: 0 for n in self.socks}
        try:
            for _ in until(120, 10_000_000):
                if self.stop.is_set():
                    return
                for sock, _ in poller.poll(20):
                    for _ in range(1000):
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if frames[0] not in self.entries:
                            self.errors.append(f"no routing frame of an entry replica first: {frames!r}")
                        with self.lock:
                            self.got[names[sock]].append(frames)
                if self.hold and not self.released.is_set():
                    continue
                for n, s in self.socks.items():
                    with self.lock:
                        todo = self.got[n][answered[n]:]
                    for frames in todo:
                        s.send_multipart(frames[:-1] + [frames[-1] + b"|" + n.encode()])
                    answered[n] += len(todo)
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            self.errors.append(repr(e))

    def count(self) -> dict[str, int]:
        with self.lock:
            return {n: len(g) for n, g in self.got.items()}

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def dealer_workers(ctx, replicas: list, where: dict[str, int], entries: list[str], hold: bool = False) -> Workers:
    socks = {}
    for name, i in where.items():
        s = ctx.socket(zmq.DEALER)
        connect_wait(s, replicas[i].backend)
        socks[name] = s
    return Workers(socks, {route_frame(e) for e in entries}, hold)


def collect(clients: list[zmq.Socket], want: int, timeout: float = 20.0) -> list[list[bytes]]:
    """Replies read by DEALER clients until `want` arrived (or the timeout)."""
    poller = zmq.Poller()
    for c in clients:
        poller.register(c, zmq.POLLIN)
    got: list[list[bytes]] = []
    for _ in until(timeout, 10_000_000):
        if len(got) >= want:
            break
        for sock, _ in poller.poll(50):
            for _ in range(1000):
                try:
                    got.append([b"c%d" % clients.index(sock)] + sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
    return got


def send_requests(clients: list[zmq.Socket], n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        c = i % len(clients)
        clients[c].send_multipart([b"", b"c%d" % c, b"%d" % i])


def check_replies(got: list[list[bytes]], sent: range, clients: int) -> dict[str, int]:
    """Every request of `sent` answered once, to the client that sent it; returns the replies
    per worker."""
    seen, per_worker = [], {}
    for frames in got:
        me, empty, who, body = frames
        assert empty == b"" and who == me, f"a reply reached the wrong client: {frames!r}"
        i, worker = body.split(b"|")
        assert int(i) % clients == int(me[1:]), frames
        seen.append(int(i))
        per_worker[worker.decode()] = per_worker.get(worker.decode(), 0) + 1
    assert sorted(seen) == list(sent), f"{len(seen)} replies for {len(sent)} requests, {len(set(seen))} distinct"
    return per_worker


def test_req_clients_on_two_replicas_are_answered_by_rep_workers_on_a_third(ctx, start_proxy):
    """8 REQ clients (4 on replica 0, 4 on replica 2) x 150 requests, 3 REP workers on replica 1
    only: every request is answered exactly once, to the client that sent it, and every worker
    takes a share."""
    replicas = reqrep(start_proxy)
    stop = threading.Event()
    handled = {f"w{w}": 0 for w in range(3)}
    errors: list[str] = []

    def rep_worker(name: str) -> None:
        s = ctx.socket(zmq.REP)
        try:
            connect_wait(s, replicas[1].backend)
            for _ in until(60, 1_000_000):
                if stop.is_set():
                    return
                if not s.poll(50):
                    continue
                req = s.recv_multipart()
                if len(req) != 1:
                    errors.append(f"{name} got {req!r}")
                s.send(req[0] + b"|" + name.encode())
                handled[name] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {e!r}")
        finally:
            s.close(0)

    workers = [threading.Thread(target=rep_worker, args=(n,), daemon=True) for n in handled]
    for t in workers:
        t.start()
    n_requests = 150
    replies: dict[int, list[bytes]] = {}

    def client(cid: int) -> None:
        s = ctx.socket(zmq.REQ)
        try:
            connect_wait(s, replicas[0 if cid < 4 else 2].frontend)
            got = []
            for i in range(n_requests):
                s.send(b"c%d:%d" % (cid, i))
                got.append(s.recv())  # RCVTIMEO 10 s from the context
            replies[cid] = got
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {cid}: {e!r}")
        finally:
            s.close(0)

    clients = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(8)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    stop.set()
    for t in workers:
        t.join(5)
    assert not errors, errors
    for cid in range(8):
        bodies = [r.split(b"|")[0] for r in replies[cid]]
        assert bodies == [b"c%d:%d" % (cid, i) for i in range(n_requests)], f"client {cid}"
    assert sum(handled.values()) == 8 * n_requests, handled
    assert all(n >= 0.1 * 8 * n_requests for n in handled.values()), handled


def test_dealer_clients_and_dealer_workers_see_the_routing_frame_and_get_every_reply(ctx, start_proxy):
    """DEALER clients on replicas 0 and 2 send 600 requests without waiting; DEALER workers on
    replica 1 see the entry replica's routing frame first, then the client's envelope, and echo
    it: each reply reaches the client that sent its request, exactly once."""
    replicas = reqrep(start_proxy)
    workers = dealer_workers(ctx, replicas, {"w0": 1, "w1": 1}, ["r0", "r2"])
    try:
        clients = []
        for i in range(4):
            c = ctx.socket(zmq.DEALER)
            connect_wait(c, replicas[0 if i < 2 else 2].frontend)
            clients.append(c)
        send_requests(clients, 600)
        got = collect(clients, 600)
        assert not workers.errors, workers.errors
        check_replies(got, range(600), len(clients))
        for frames in [f for g in workers.got.values() for f in g]:
            # Routing frame, the client's generated routing id, the empty delimiter, the body.
            assert len(frames) == 5 and len(frames[1]) == 5 and frames[2] == b"", frames
        entries = {f[0] for g in workers.got.values() for f in g}
        assert entries == {route_frame("r0"), route_frame("r2")}
        assert not any(c.poll(200) for c in clients), "nothing more"
    finally:
        workers.close()


def test_curve_links_stay_up_across_heartbeats_and_carry_requests_and_replies(ctx, start_proxy, tmp_path):
    """CURVE links: after several heartbeat intervals with nothing to relay (PINGs and PONGs
    sealed both ways), every link is still up, none was closed, and requests from replica 0
    are answered by a worker on replica 2."""
    key = _key_file(tmp_path, "federation.key")
    replicas = reqrep(start_proxy, extra=("--federation-curve-key-file", key))
    workers = dealer_workers(ctx, replicas, {"c": 2}, ["r0"])
    try:
        client = ctx.socket(zmq.DEALER)
        connect_wait(client, replicas[0].frontend)
        # Three PING intervals: a PING or PONG the other end could not open would close a link.
        replicas[0].wait_for_event("never logged", 3.5)
        for r in replicas:
            downs = [e for e in r.events() if (log_message(e) or "").startswith("federation link") and "down" in log_message(e)]
            assert not downs, downs
        send_requests([client], 50)
        check_replies(collect([client], 50), range(50), 1)
        assert not workers.errors, workers.errors
    finally:
        workers.close()


def test_a_frozen_replica_is_dropped_within_the_heartbeat_bound_and_its_work_goes_elsewhere(ctx, start_proxy):
    """Workers on replicas 1 and 2, clients on replica 0. Replica 1 is frozen (SIGSTOP): replica
    0 closes both its connections with it within the heartbeat bound, counts them by member,
    and the next requests all go to replica 2's worker and are answered."""
    http = free_ports(1)[0]
    replicas = reqrep(start_proxy, lambda i: ("--http-bind", f"127.0.0.1:{http}") if i == 0 else ())
    workers = dealer_workers(ctx, replicas, {"b": 1, "c": 2}, ["r0"])
    frozen = False
    try:
        clients = []
        for _ in range(2):
            c = ctx.socket(zmq.DEALER)
            connect_wait(c, replicas[0].frontend)
            clients.append(c)
        send_requests(clients, 200)
        per_worker = check_replies(collect(clients, 200), range(200), 2)
        assert per_worker.get("b", 0) > 0 and per_worker.get("c", 0) > 0, per_worker
        replicas[1].proc.send_signal(signal.SIGSTOP)
        frozen = True
        t0 = time.monotonic()
        down = []
        for _ in until(HEARTBEAT_BOUND + 6, 10_000):
            down = [
                log_message(e)
                for e in replicas[0].events()
                if log_message(e) in ("federation link out down", "federation link in down")
                and log_fields(e).get("member") == "r1"
                and log_fields(e).get("reason") == "heartbeat timeout"
            ]
            if len(set(down)) == 2:
                break
            replicas[0].wait_for_event("never logged", 0.05)
        elapsed = time.monotonic() - t0
        assert len(set(down)) == 2, f"links with the frozen replica not closed by heartbeat\n{replicas[0].output()}"
        # The bound, plus the scheduling slack of a loaded test machine.
        assert elapsed <= HEARTBEAT_BOUND + 2.0, f"noticed after {elapsed:.1f}s"
        send_requests(clients, 200, start=200)
        per_worker = check_replies(collect(clients, 200), range(200, 400), 2)
        assert per_worker == {"c": 200}, per_worker
        text = _scrape(http)
        assert _sample(text, "zmq_proxy_federation_heartbeat_timeouts_total", member="r1") == 2, text
        assert _sample(text, "zmq_proxy_federation_heartbeat_timeouts_total", member="r2") == 0, text
        assert _sample(text, "zmq_proxy_federation_link_up", member="r1", direction="in") == 0, text
        assert not workers.errors, workers.errors
    finally:
        if frozen:
            replicas[1].proc.send_signal(signal.SIGCONT)
        workers.close()


def link_counts(http: int, member: str) -> tuple[float, float]:
    text = _scrape(http)
    out = _sample(text, "zmq_proxy_federation_link_relayed_messages_total", member=member, direction="out")
    inn = _sample(text, "zmq_proxy_federation_link_relayed_messages_total", member=member, direction="in")
    return out or 0, inn or 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_worker_replica_stopped_mid_stream_loses_exactly_what_its_counters_say(ctx, start_proxy, sig):
    """Clients on replica 0, a worker on replica 1 and one on replica 2; 300 requests, all taken
    by the workers, unanswered, when replica 1 is stopped. The requests replica 2 took lose
    nothing. SIGTERM: replica 1 drains, keeps its worker until it answered the requests it took
    from replica 0, and those replies arrive too: nothing is lost. SIGKILL: exactly the
    requests replica 1's worker held are lost, and replica 0's per-member counters say so
    (relayed to r1 less relayed back from r1)."""
    http = free_ports(1)[0]
    replicas = reqrep(start_proxy, lambda i: ("--http-bind", f"127.0.0.1:{http}") if i == 0 else ())
    workers = dealer_workers(ctx, replicas, {"b": 1, "c": 2}, ["r0"], hold=True)
    try:
        clients = []
        for _ in range(3):
            c = ctx.socket(zmq.DEALER)
            connect_wait(c, replicas[0].frontend)
            clients.append(c)
        n = 300
        send_requests(clients, n)
        for _ in until(15, 100_000):
            if sum(workers.count().values()) >= n:
                break
            time.sleep(0.02)
        held = workers.count()
        assert sum(held.values()) == n and held["b"] > 0 and held["c"] > 0, held
        replicas[1].signal(sig)
        if sig == signal.SIGTERM:
            assert replicas[1].wait_for_event("draining", 5), replicas[1].output()
        else:
            assert replicas[1].wait_exit(5) is not None
        workers.release()
        expect_lost = 0 if sig == signal.SIGTERM else held["b"]
        got = collect(clients, n - expect_lost, timeout=20)
        assert not any(c.poll(500) for c in clients), "more replies than expected"
        answered = check_replies(got, sorted(int(f[3].split(b"|")[0]) for f in got), 3)
        assert answered.get("c", 0) == held["c"], "what replica 2 took is all answered"
        assert len(got) == n - expect_lost, f"{n - len(got)} lost, {expect_lost} expected"
        out_b, in_b = link_counts(http, "r1")
        out_c, in_c = link_counts(http, "r2")
        assert (out_b, out_c) == (held["b"], held["c"]), "requests relayed per member"
        assert in_c == held["c"]
        assert out_b - in_b == expect_lost, f"replica 0's counters: {out_b} sent to r1, {in_b} back"
        if sig == signal.SIGTERM:
            assert replicas[1].wait_exit(15) == 0, replicas[1].output()
            stopped = replicas[1].find_event("federation stopped")
            assert stopped is not None, replicas[1].output()
            f = log_fields(stopped)
            assert (f["relayed_in"], f["relayed_out"]) == (held["b"], held["b"]), f
            assert replicas[1].stopped_counters()["undelivered_msgs"] == 0
        assert not workers.errors, workers.errors
    finally:
        workers.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_an_entry_replica_stopped_mid_stream_loses_exactly_what_its_counters_say(ctx, start_proxy, sig):
    """Clients on replica 0, workers on replica 1; 200 requests all held by the workers when
    replica 0 is stopped. SIGTERM: replica 0 drains, still reads the replies its clients wait
    for, and every reply arrives. SIGKILL: every reply is dropped at replica 1 as unroutable
    (its entry replica is gone), counted there by frames and, by member, as link_down."""
    http = free_ports(1)[0]
    replicas = reqrep(start_proxy, lambda i: ("--http-bind", f"127.0.0.1:{http}") if i == 1 else ())
    workers = dealer_workers(ctx, replicas, {"b": 1}, ["r0"], hold=True)
    try:
        clients = []
        for _ in range(2):
            c = ctx.socket(zmq.DEALER)
            connect_wait(c, replicas[0].frontend)
            clients.append(c)
        n = 200
        send_requests(clients, n)
        for _ in until(15, 100_000):
            if workers.count()["b"] >= n:
                break
            time.sleep(0.02)
        assert workers.count() == {"b": n}
        replicas[0].signal(sig)
        if sig == signal.SIGTERM:
            assert replicas[0].wait_for_event("draining", 5), replicas[0].output()
            workers.release()
            got = collect(clients, n)
            check_replies(got, range(n), 2)
            assert replicas[0].wait_exit(15) == 0, replicas[0].output()
            stopped = replicas[0].stopped_counters()
            assert stopped["undelivered_msgs"] == 0 and stopped["dropped_msgs"] == 0, stopped
            return
        assert replicas[0].wait_exit(5) is not None
        for _ in until(10, 10_000):
            if any(
                log_message(e) == "federation link out down" and log_fields(e).get("member") == "r0"
                for e in replicas[1].events()
            ):
                break
            replicas[1].wait_for_event("never logged", 0.05)
        workers.release()
        text = ""
        for _ in until(10, 10_000):
            text = _scrape(http)
            if _sample(text, "zmq_proxy_dropped_frames_total", reason="unroutable") == 5 * n:
                break
            time.sleep(0.05)
        # Each reply as the worker sent it: routing frame, client id, delimiter, two body frames.
        assert _sample(text, "zmq_proxy_dropped_frames_total", reason="unroutable") == 5 * n, text
        dropped = _sample(text, "zmq_proxy_federation_link_dropped_messages_total", member="r0", reason="link_down")
        assert dropped == n, text
        assert count_events(replicas[1], "federation link out down") >= 1
    finally:
        workers.close()


def test_a_replica_with_clients_and_nowhere_to_put_requests_is_not_ready(ctx, start_proxy):
    """ROUTER/DEALER r0 and r1, a client on r0 and no worker there: ready while the links are
    up, not ready once r1 is gone, ready again when a worker attaches to r0."""
    from test_federation_dns import wait_ready

    http = free_ports(1)[0]
    r0, r1 = start_federation(
        start_proxy, 2, types=("ROUTER", "DEALER"), each=lambda i: ("--http-bind", f"127.0.0.1:{http}") if i == 0 else ()
    )
    ready, stranded = (200, "ready\n"), (503, "not ready: no workers and no federation link\n")
    client = ctx.socket(zmq.DEALER)
    connect_wait(client, r0.frontend)
    wait_ready(http, ready)
    r1.signal()
    assert r1.wait_exit(10) == 0
    wait_ready(http, stranded)
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, r0.backend)
    wait_ready(http, ready)
