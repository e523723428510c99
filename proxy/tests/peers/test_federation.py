"""Federation (docs/federation.md): XSUB/XPUB replicas on 127.0.0.1 linked with
--federation-bind/--federation-peers, libzmq publishers and subscribers attached to different
replicas. Each replica is a separate zmq-proxy process; the links are real TCP connections.

Slow joiners are handled by probing, as in test_pubsub.py: publishers repeat probes until every
subscriber has seen one from each of them, so the subscriptions have crossed the links and
reached the publishers before the data is sent."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess

import zmq

from zmqpeers import REPO, HOST, connect_wait, ep, free_ports, log_fields, log_message, probe_until, proxy_bin, until


def start_federation(
    start_proxy, n: int, extra: tuple = (), types=("XSUB", "XPUB"), each=lambda i: ()
) -> list:
    """n replicas (XSUB/XPUB unless `types` says otherwise), each dialing all the others;
    returns them once every replica has its n-1 outbound and n-1 inbound links up (from their
    log lines). `each(i)` is more arguments for replica i only."""
    ports = free_ports(3 * n)
    fed = [ep(ports[3 * i + 2]) for i in range(n)]
    replicas = []
    for i in range(n):
        front, back = ep(ports[3 * i]), ep(ports[3 * i + 1])
        peers = ",".join(f for j, f in enumerate(fed) if j != i)
        args = [
            "--frontend-type", types[0], "--frontend-bind", front,
            "--backend-type", types[1], "--backend-bind", back,
            "--federation-bind", fed[i], "--federation-peers", peers,
            "--federation-id", f"r{i}", "--log-format", "json",
            # Exactness is the point here: no subscriber queue drops at the XPUB's high-water
            # mark (a PUSH waits instead of dropping anyway).
            *(["--backend-sndhwm", "0"] if types[1] == "XPUB" else []), *extra,
            *each(i),
        ]
        p = start_proxy(args)
        p.frontend, p.backend, p.federation = front, back, fed[i]
        replicas.append(p)
    for p in replicas:
        wait_links(p, n - 1)
    return replicas


def count_events(proxy, message: str) -> int:
    return sum(1 for ev in proxy.events() if log_message(ev) == message)


def wait_links(proxy, n: int, timeout: float = 10.0) -> None:
    for _ in until(timeout, 10_000):
        if count_events(proxy, "federation link out up") >= n and count_events(proxy, "federation link in up") >= n:
            return
        proxy.wait_for_event("never logged", 0.05)
    raise AssertionError(f"{n} federation links each way never came up\n{proxy.output()}")


def publish_until_heard(ctx, front: str, back: str, payload: bytes) -> None:
    """A publisher on `front` repeats `payload` until a subscriber to everything on `back`
    hears it (the subscription crosses the links first)."""
    pub = ctx.socket(zmq.PUB)
    connect_wait(pub, front)
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"")
    connect_wait(sub, back)
    for _ in until(10, 10_000):
        pub.send(payload)
        if sub.poll(50):
            break
    assert sub.recv() == payload


def _msg(topic: bytes, kind: bytes, pub: bytes, seq: int = 0) -> bytes:
    return b"|".join([topic, kind, pub, b"%d" % seq])


def _parse(m: bytes) -> tuple[bytes, bytes, bytes, int]:
    topic, kind, pub, seq = m.split(b"|")
    return topic, kind, pub, int(seq)


def read_until_ends(sock: zmq.Socket, publishers: int, timeout: float = 20.0) -> list[bytes]:
    """The data messages a subscriber reads until it has every publisher's end marker."""
    got, ends = [], set()
    for _ in until(timeout, 1_000_000):
        if len(ends) == publishers:
            return got
        if not sock.poll(100):
            continue
        _, kind, pub, _ = _parse(m := sock.recv())
        if kind == b"data":
            got.append(m)
        elif kind == b"end":
            ends.add(pub)
    raise AssertionError(f"end markers of {publishers - len(ends)} publishers never arrived; {len(got)} data messages")


def publish_and_collect(ctx, pubs: dict, subs: dict, topics: list[bytes], n: int) -> dict:
    """Probes until every subscriber heard every publisher on the first topic it subscribed,
    then n data messages per publisher and topic, then end markers on every topic; returns each
    subscriber's data messages."""
    probe_topics = topics + [b"Z"]

    def probe():
        for name, p in pubs.items():
            for t in probe_topics:
                p.send(_msg(t, b"probe", name))

    probe_until(
        probe,
        {
            f"{s}<-{pn.decode()}": (sock, lambda f, pn=pn: _parse(f[0])[1:3] == (b"probe", pn))
            for s, (sock, _) in subs.items()
            for pn in pubs
        },
        timeout=15.0,
    )
    for i in range(n):
        for name, p in pubs.items():
            for t in topics:
                p.send(_msg(t, b"data", name, i))
    for name, p in pubs.items():
        for t in probe_topics:
            p.send(_msg(t, b"end", name))
    return {s: read_until_ends(sock, len(pubs)) for s, (sock, _) in subs.items()}


def test_three_replicas_deliver_each_matching_publication_once_in_publisher_order(ctx, start_proxy):
    """3 publishers (one per replica) x 6 subscribers (two per replica, each on another replica
    than the publishers of two of its three streams) with topic filters, empty and overlapping
    ones included: every subscriber gets exactly the publications its filters match, from every
    publisher, each once and in that publisher's order."""
    replicas = start_federation(start_proxy, 3)
    pubs = {}
    for i in range(3):
        s = ctx.socket(zmq.PUB)
        s.sndhwm = 0
        connect_wait(s, replicas[i].frontend)
        pubs[b"P%d" % i] = s
    filters = {
        "S0": [b"A"], "S1": [b"B"], "S2": [b""], "S3": [b"AB"], "S4": [b"C", b"A"], "S5": [b"Z"],
    }
    subs = {}
    for k, (name, prefixes) in enumerate(filters.items()):
        s = ctx.socket(zmq.SUB)
        s.rcvhwm = 0
        for f in prefixes:
            s.subscribe(f)
        connect_wait(s, replicas[(k + 1) % 3].backend)
        subs[name] = (s, prefixes)
    topics = [b"A", b"AB", b"B", b"C", b"D"]
    n = 200
    got = publish_and_collect(ctx, pubs, subs, topics, n)
    for name, (_, prefixes) in subs.items():
        wanted = [t for t in topics if any(t.startswith(f) for f in prefixes)]
        expected = {_msg(t, b"data", p, i) for p in pubs for t in wanted for i in range(n)}
        msgs = got[name]
        assert len(msgs) == len(set(msgs)), f"{name}: duplicates"
        assert set(msgs) == expected, (
            f"{name}: {len(expected - set(msgs))} missing, {len(set(msgs) - expected)} unexpected"
        )
        for p in pubs:
            for t in wanted:
                seqs = [_parse(m)[3] for m in msgs if _parse(m)[2] == p and _parse(m)[0] == t]
                assert seqs == sorted(seqs), f"{name}: {p!r} topic {t!r} out of order"


def test_a_mesh_of_four_delivers_once_because_nothing_crosses_two_links(ctx, start_proxy):
    """4 replicas, all linked to each other, a publisher and an everything-subscriber on each:
    a replica that passed on what another replica relayed to it would hand each subscriber
    copies from two or three paths. Each subscriber gets each of the 4 x n messages exactly
    once."""
    replicas = start_federation(start_proxy, 4)
    pubs, subs = {}, {}
    for i, r in enumerate(replicas):
        p = ctx.socket(zmq.PUB)
        p.sndhwm = 0
        connect_wait(p, r.frontend)
        pubs[b"P%d" % i] = p
        s = ctx.socket(zmq.SUB)
        s.rcvhwm = 0
        s.subscribe(b"")
        connect_wait(s, r.backend)
        subs[f"S{i}"] = (s, [b""])
    n = 300
    got = publish_and_collect(ctx, pubs, subs, [b"T"], n)
    expected = {_msg(b"T", b"data", p, i) for p in pubs for i in range(n)}
    for name, msgs in got.items():
        assert len(msgs) == len(expected), f"{name}: {len(msgs)} messages, {len(expected)} expected"
        assert set(msgs) == expected, name


def _recv_subscription(sock: zmq.Socket, timeout_ms: int = 10_000) -> bytes:
    assert sock.poll(timeout_ms), "no subscription message reached the publisher"
    return sock.recv()


def test_subscriptions_and_their_cancels_cross_the_link_to_the_publishers(ctx, start_proxy):
    """An XPUB publisher on replica 0 sees what replica 0 asks it for: a subscriber on replica 1
    subscribing makes it \\x01U; a second subscriber on replica 0 adds nothing; the first one's
    unsubscribe cancels nothing while the second holds U; the second's disconnect sends
    \\x00U. A resubscription over the link, then a cancel by disconnecting, both arrive too."""
    replicas = start_federation(start_proxy, 2)
    pub = ctx.socket(zmq.XPUB)
    connect_wait(pub, replicas[0].frontend)
    remote = ctx.socket(zmq.SUB)
    connect_wait(remote, replicas[1].backend)
    remote.subscribe(b"U")
    assert _recv_subscription(pub) == b"\x01U"
    local = ctx.socket(zmq.SUB)
    connect_wait(local, replicas[0].backend)
    local.subscribe(b"U")
    # Replica 0 holds the local subscription once the local subscriber hears U from the
    # publisher; only then does the remote unsubscribe go out (it travels another path).
    for _ in until(10, 1000):
        pub.send(b"U-probe")
        if local.poll(50):
            break
    assert local.recv() == b"U-probe"
    remote.unsubscribe(b"U")
    # The local subscriber still holds U: no cancel. A marker topic proves the quiet is not a
    # lag: its subscription is sent after the unsubscribe and arrives alone.
    remote.subscribe(b"M")
    assert _recv_subscription(pub) == b"\x01M"
    local.close(0)
    assert _recv_subscription(pub) == b"\x00U"
    remote.subscribe(b"U")
    assert _recv_subscription(pub) == b"\x01U"
    remote.close(0)
    cancels = {_recv_subscription(pub), _recv_subscription(pub)}
    assert cancels == {b"\x00U", b"\x00M"}
    assert not pub.poll(300), "nothing else"


def _key_file(tmp_path, name: str) -> str:
    _, secret = zmq.curve_keypair()
    path = tmp_path / name
    path.write_bytes(secret + b"\n")
    return str(path)


def test_curve_links_carry_the_federation_and_refuse_a_replica_without_its_key(ctx, start_proxy, tmp_path):
    """Two replicas sharing the federation key file link over CURVE and relay a publication; a
    third process with another key, and a fourth with NULL links, dial them and are refused:
    neither ever has a link in up on the members, and a subscription on the outsider never
    reaches the members' publisher."""
    key = _key_file(tmp_path, "federation.key")
    members = start_federation(start_proxy, 2, extra=("--federation-curve-key-file", key))
    pub = ctx.socket(zmq.XPUB)
    connect_wait(pub, members[0].frontend)
    sub = ctx.socket(zmq.SUB)
    connect_wait(sub, members[1].backend)
    sub.subscribe(b"S")
    assert _recv_subscription(pub) == b"\x01S", "a subscription crossed the CURVE link"
    for _ in until(10, 1000):
        pub.send(b"S|over-curve")
        if sub.poll(50):
            break
    assert sub.recv() == b"S|over-curve"

    peers = ",".join(m.federation for m in members)
    outsiders = []
    for name, extra in (("wrong-key", ["--federation-curve-key-file", _key_file(tmp_path, "other.key")]), ("null", [])):
        ports = free_ports(3)
        outsiders.append(start_proxy([
            "--frontend-type", "XSUB", "--frontend-bind", ep(ports[0]),
            "--backend-type", "XPUB", "--backend-bind", ep(ports[1]),
            "--federation-bind", ep(ports[2]), "--federation-peers", peers,
            "--federation-id", name, "--log-format", "json", *extra,
        ]))
        o = outsiders[-1]
        o.backend = ep(ports[1])
    # Each outsider's dials fail their handshake at both members (logged by the outsider).
    for o in outsiders:
        for _ in until(10, 10_000):
            if count_events(o, "federation link out failed") >= 2:
                break
            o.wait_for_event("never logged", 0.05)
        assert count_events(o, "federation link out failed") >= 2, o.output()
        assert count_events(o, "federation link out up") == 0
        s = ctx.socket(zmq.SUB)
        connect_wait(s, o.backend)
        s.subscribe(b"X")
    for m in members:
        assert count_events(m, "federation link in up") == 1, "only the other member"
    assert not pub.poll(500), "no outsider's subscription reached the members' publisher"


def _free_block(n: int) -> int:
    """A base port whose n ports are all free right now (tried at random, bounded)."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((HOST, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no block of {n} free ports")


def test_the_three_replica_example_forms_one_forwarder(ctx):
    """examples/local/federation-three-replicas.sh, as docs/federation.md runs it (every replica
    given the full peer list, its own address included): a publisher on replica 0 reaches a
    subscriber on replica 2, and the script stops all three on SIGTERM."""
    base = _free_block(23)
    env = dict(os.environ, ZMQ_PROXY_BIN=proxy_bin(), ZMQ_PROXY_EXAMPLE_BASE_PORT=str(base))
    script = REPO / "examples" / "local" / "federation-three-replicas.sh"
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        pub = ctx.socket(zmq.PUB)
        connect_wait(pub, ep(base), timeout=10)
        sub = ctx.socket(zmq.SUB)
        sub.subscribe(b"")
        connect_wait(sub, ep(base + 12), timeout=10)
        for _ in until(15, 10_000):
            pub.send(b"across")
            if sub.poll(50):
                break
        assert sub.recv() == b"across"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
            raise AssertionError("the example did not stop its replicas on SIGTERM")
    text = out.decode("utf-8", "replace")
    assert text.count("proxy stopped") == 3, text
    assert text.count("federation peer is this replica") == 3, text


def test_pipeline_tasks_reach_workers_on_other_replicas_evenly_and_once(ctx, start_proxy):
    """PULL/PUSH on 3 replicas: 2 producers on replica 0, which has no worker; 2 workers on
    replica 1 and 1 on replica 2. Replica 0 hands every task on by the credit the others
    announce, in proportion to their workers: each task reaches exactly one worker, none is
    left on replica 0, and each worker's share is within 15% of a third.

    The producers send in rounds and the workers drain each round, so the workers, not the
    replicas' pumps, set the pace, as in a pipeline whose tasks take time; under saturation a
    replica whose credit is used up is skipped, as a PUSH skips a full peer."""
    replicas = start_federation(start_proxy, 3, types=("PULL", "PUSH"))
    workers = []
    for r in (replicas[1], replicas[1], replicas[2]):
        w = ctx.socket(zmq.PULL)
        connect_wait(w, r.backend)
        workers.append(w)
    producers = []
    for name in (b"A", b"B"):
        p = ctx.socket(zmq.PUSH)
        connect_wait(p, replicas[0].frontend)
        producers.append((name, p))
    poller = zmq.Poller()
    for w in workers:
        poller.register(w, zmq.POLLIN)
    got: list[list[bytes]] = [[] for _ in workers]
    rounds, per_round = 30, 100
    for r in range(rounds):
        for i in range(r * per_round, (r + 1) * per_round):
            for name, p in producers:
                p.send(b"%s|%d" % (name, i))
        want = 2 * per_round * (r + 1)
        for _ in until(15, 1_000_000):
            if sum(map(len, got)) >= want:
                break
            for sock, _ in poller.poll(100):
                for _ in range(1000):
                    try:
                        got[workers.index(sock)].append(sock.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
        assert sum(map(len, got)) == want, f"round {r}: {sum(map(len, got))} of {want} tasks arrived"
    total = 2 * rounds * per_round
    everything = [m for g in got for m in g]
    assert len(set(everything)) == total, "a task arrived twice"
    for name, _ in producers:
        seqs = [int(m.split(b"|")[1]) for g in got for m in g if m.startswith(name + b"|")]
        assert sorted(seqs) == list(range(rounds * per_round))
    shares = [len(g) / total for g in got]
    assert all(abs(s - 1 / 3) <= 0.15 / 3 for s in shares), f"shares {shares}"
    for w in workers:
        assert not w.poll(200), "nothing more"
    replicas[0].signal()
    assert replicas[0].wait_exit(10) == 0
    stopped = replicas[0].stopped_counters()
    assert stopped["undelivered_msgs"] == 0 and stopped["dropped_msgs"] == 0, stopped


def test_a_federated_replica_serves_the_metrics_docs_federation_lists(ctx, start_proxy):
    """/metrics of a federated replica: the links to and from the other replica are up, what
    crossed is counted (in all and by member), and the federation families are the tables of
    docs/federation.md and docs/operations.md, HELP texts included."""
    from test_metrics_words import _docs_rows, _families, _sample, _scrape

    http = free_ports(1)[0]
    replicas = start_federation(
        start_proxy, 2, each=lambda i: ("--http-bind", f"127.0.0.1:{http}") if i == 0 else ()
    )
    publish_until_heard(ctx, replicas[1].frontend, replicas[0].backend, b"m")
    text = _scrape(http)
    assert _sample(text, "zmq_proxy_federation_members") == 1, text
    for direction in ("out", "in"):
        assert _sample(text, "zmq_proxy_federation_link_up", member="r1", direction=direction) == 1, text
    assert _sample(text, "zmq_proxy_federation_relayed_messages_total", direction="in") >= 1, text
    relayed_in = _sample(text, "zmq_proxy_federation_link_relayed_messages_total", member="r1", direction="in")
    assert relayed_in == _sample(text, "zmq_proxy_federation_relayed_messages_total", direction="in"), text
    assert _sample(text, "zmq_proxy_federation_heartbeat_timeouts_total", member="r1") == 0, text
    served = {n: v for n, v in _families(text).items() if n.startswith("zmq_proxy_federation_")}
    documented = {}
    for line in (REPO / "docs" / "federation.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`zmq_proxy_federation_\w+`", cells[0]):
            documented[cells[0].strip("`")] = (cells[1], cells[3].rstrip("."))
    assert documented == served
    assert _docs_rows(federation=True) == served, "docs/operations.md's federation rows"


def test_pause_and_resume_on_any_replica_steer_the_whole_federation(ctx, start_proxy):
    """PAUSE on replica 0's control socket pauses all three replicas (zmq_proxy_paused is 1 on
    each); RESUME on replica 2's resumes all three, and a publication then crosses from
    replica 1 to a subscriber on replica 0. No replica passes on a command it was told."""
    from test_metrics_words import _sample, _scrape

    ports = free_ports(6)
    replicas = start_federation(
        start_proxy, 3, each=lambda i: ("--control-bind", ep(ports[i]), "--http-bind", f"127.0.0.1:{ports[3 + i]}")
    )

    def steer(i: int, command: bytes) -> None:
        req = ctx.socket(zmq.REQ)
        req.connect(ep(ports[i]))
        req.send(command)
        assert req.poll(5000), f"no reply to {command!r}"
        req.recv_multipart()
        req.close(0)

    def paused_everywhere(value: int) -> None:
        for _ in until(10, 10_000):
            states = [_sample(_scrape(ports[3 + i]), "zmq_proxy_paused") for i in range(3)]
            if states == [value] * 3:
                return
            replicas[0].wait_for_event("never logged", 0.02)
        raise AssertionError(f"zmq_proxy_paused {states}, expected {value} on every replica")

    steer(0, b"PAUSE")
    paused_everywhere(1)
    steer(2, b"RESUME")
    paused_everywhere(0)
    pub = ctx.socket(zmq.PUB)
    connect_wait(pub, replicas[1].frontend)
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"")
    connect_wait(sub, replicas[0].backend)
    for _ in until(10, 10_000):
        pub.send(b"after")
        if sub.poll(50):
            break
    assert sub.recv() == b"after"
    # Each replica heard each command it did not take itself exactly once: nobody passed one on.
    followed = [count_events(r, "federation: steered by a replica") for r in replicas]
    assert followed == [1, 2, 1], followed


def test_replicas_running_different_patterns_refuse_to_link(start_proxy):
    """An XSUB/XPUB replica and a PULL/PUSH replica given each other's address: each refuses
    the other's HELLO, saying which pattern each runs, and no link comes up."""
    ports = free_ports(6)
    procs = []
    for i, (front, back) in enumerate((("XSUB", "XPUB"), ("PULL", "PUSH"))):
        procs.append(start_proxy([
            "--frontend-type", front, "--frontend-bind", ep(ports[3 * i]),
            "--backend-type", back, "--backend-bind", ep(ports[3 * i + 1]),
            "--federation-bind", ep(ports[3 * i + 2]),
            "--federation-peers", ep(ports[3 * (1 - i) + 2]),
            "--federation-id", f"m{i}", "--log-format", "json",
        ]))
    for p in procs:
        for _ in until(10, 10_000):
            if count_events(p, "federation link out failed"):
                break
            p.wait_for_event("never logged", 0.05)
        refusals = [log_fields(ev) for ev in p.events() if log_message(ev) == "federation link out failed"]
        assert refusals, p.output()
        assert "runs" in refusals[0].get("error", "") and "XSUB/XPUB" in refusals[0]["error"], refusals[0]
        assert count_events(p, "federation link out up") == 0 and count_events(p, "federation link in up") == 0

