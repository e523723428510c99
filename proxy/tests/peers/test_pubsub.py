"""XSUB/XPUB and SUB/PUB forwarders with libzmq PUB publishers and SUB subscribers.

Slow joiners are handled by probing: a publisher repeats probe messages until each subscriber
has seen one (bounded), so the real messages that follow are sent after the subscriptions
reached the publisher. Probes are then filtered out by their b"probe" kind."""

from __future__ import annotations

import zmq

from zmqpeers import connect_tracked, connect_wait, ep, free_ports, probe_until, until, wait_socket_closed


def _msg(topic: bytes, kind: bytes, pub: bytes, seq: int = 0) -> bytes:
    return b"|".join([topic, kind, pub, b"%d" % seq])


def _parse(m: bytes) -> tuple[bytes, bytes, bytes, int]:
    topic, kind, pub, seq = m.split(b"|")
    return topic, kind, pub, int(seq)


def _read_until(sock: zmq.Socket, done, timeout: float = 10.0, max_msgs: int = 100_000) -> list[bytes]:
    """Single-frame messages from sock until done(message) is true for one of them."""
    got = []
    for _ in until(timeout, max_msgs):
        if not sock.poll(100):
            continue
        m = sock.recv()
        got.append(m)
        if done(m):
            return got
    raise AssertionError(f"end marker never arrived within {timeout}s; got {len(got)} messages, last {got[-3:]!r}")


def test_xsub_xpub_subscribers_get_exactly_their_prefixes(ctx, proxy_pair):
    """Two publishers, two subscribers with different prefixes: each subscriber gets every
    message of its prefix from both publishers in per-publisher order, and nothing else. The
    proxy itself receives no message of the topic nobody subscribed to: subscriptions travel
    upstream and the publishers filter (frontend_recv_msgs <= messages sent on A and B)."""
    proxy = proxy_pair("XSUB", "XPUB")
    pubs = {}
    for name in (b"P1", b"P2"):
        s = ctx.socket(zmq.PUB)
        connect_wait(s, proxy.frontend)
        pubs[name] = s
    subs = {}
    for topic in (b"A", b"B"):
        s = ctx.socket(zmq.SUB)
        s.subscribe(topic)
        connect_wait(s, proxy.backend)
        subs[topic] = s

    sent_ab = 0

    def probe():
        nonlocal sent_ab
        for name, p in pubs.items():
            for topic in (b"A", b"B"):
                p.send(_msg(topic, b"probe", name))
                sent_ab += 1

    probe_until(
        probe,
        {
            f"{t.decode()}<-{n.decode()}": (subs[t], lambda f, t=t, n=n: f[0].startswith(t + b"|probe|" + n))
            for t in subs
            for n in pubs
        },
    )
    n = 300
    for i in range(n):
        for name, p in pubs.items():
            for topic in (b"A", b"B", b"C"):
                p.send(_msg(topic, b"data", name, i))
                sent_ab += topic != b"C"
    for name, p in pubs.items():
        for topic in (b"A", b"B"):
            p.send(_msg(topic, b"end", name))
            sent_ab += 1

    for topic, s in subs.items():
        ends: set[bytes] = set()

        def done(m: bytes, ends=ends) -> bool:
            t, kind, pub, _ = _parse(m)
            if kind == b"end":
                ends.add(pub)
            return ends == set(pubs)

        got = _read_until(s, done)
        wrong = [m for m in got if not m.startswith(topic + b"|")]
        assert not wrong, f"subscriber of {topic!r} got other topics: {wrong[:5]!r}"
        for name in pubs:
            seqs = [_parse(m)[3] for m in got if _parse(m)[1:3] == (b"data", name)]
            assert seqs == list(range(n)), (
                f"subscriber {topic!r} from {name!r}: {len(seqs)} of {n} data messages, order kept: {seqs == sorted(seqs)}"
            )
    rc = proxy.stop()
    assert rc == 0, proxy.output()
    c = proxy.stopped_counters()
    assert 0 < c["frontend_recv_msgs"] <= sent_ab, (
        f"the proxy received {c['frontend_recv_msgs']} messages but only {sent_ab} were published on "
        "subscribed topics: subscriptions were not forwarded upstream (or topic C leaked)"
    )


def test_unsubscribe_of_one_subscriber_keeps_topic_for_the_other(ctx, proxy_pair):
    """S1 and S2 subscribe to T; S1 unsubscribes. Once the proxy applied it (S1 sees a round's
    marker on its other topic Z with no T before it, the proxy writing to S1 in order), S1 gets
    no more T while S2 still gets every T message, before, during and after the switch."""
    proxy = proxy_pair("XSUB", "XPUB")
    pub = ctx.socket(zmq.PUB)
    connect_wait(pub, proxy.frontend)
    s1 = ctx.socket(zmq.SUB)
    s1.subscribe(b"T")
    s1.subscribe(b"Z")
    connect_wait(s1, proxy.backend)
    s2 = ctx.socket(zmq.SUB)
    s2.subscribe(b"T")
    connect_wait(s2, proxy.backend)

    def probe():
        pub.send(_msg(b"T", b"probe", b"P"))
        pub.send(_msg(b"Z", b"probe", b"P"))

    probe_until(
        probe,
        {
            "s1-T": (s1, lambda f: f[0].startswith(b"T|probe")),
            "s1-Z": (s1, lambda f: f[0].startswith(b"Z|probe")),
            "s2-T": (s2, lambda f: f[0].startswith(b"T|probe")),
        },
    )
    s1.unsubscribe(b"T")
    seq = 0
    sent_t: list[int] = []
    got2: list[bytes] = []
    switched = False
    for r in until(10, 200):
        for _ in range(10):
            pub.send(_msg(b"T", b"data", b"P", seq))
            sent_t.append(seq)
            seq += 1
        pub.send(_msg(b"Z", b"round", b"P", r))
        got = _read_until(s1, lambda m, r=r: m == _msg(b"Z", b"round", b"P", r), timeout=5)
        # S2 is read every round so no queue between the proxy and S2 can fill and drop.
        got2 += _read_until(s2, lambda m, last=seq - 1: m == _msg(b"T", b"data", b"P", last), timeout=5)
        if not any(_parse(m)[:2] == (b"T", b"data") for m in got):
            switched = True
            break
    assert switched, "S1 kept receiving T after unsubscribing"
    final = list(range(seq, seq + 200))
    for i in final:
        pub.send(_msg(b"T", b"data", b"P", i))
    sent_t += final
    pub.send(_msg(b"Z", b"round", b"P", 10**6))
    pub.send(_msg(b"T", b"end", b"P"))
    got1 = _read_until(s1, lambda m: m == _msg(b"Z", b"round", b"P", 10**6), timeout=5)
    assert not [m for m in got1 if m.startswith(b"T|")], "S1 got T messages after its unsubscription took effect"
    got2 += _read_until(s2, lambda m: m == _msg(b"T", b"end", b"P"), timeout=10)
    seqs2 = [_parse(m)[3] for m in got2 if _parse(m)[1] == b"data"]
    assert seqs2 == sent_t, (
        f"S2 (still subscribed) got {len(seqs2)} of {len(sent_t)} T messages after S1 unsubscribed; "
        f"missing e.g. {sorted(set(sent_t) - set(seqs2))[:5]}"
    )
    assert proxy.running, proxy.output()


def test_late_publisher_receives_existing_subscriptions(ctx, proxy_pair):
    """A publisher connecting after the subscriber subscribed still gets the subscription from
    the proxy's XSUB, so its messages reach the existing subscriber (all 100, in order)."""
    proxy = proxy_pair("XSUB", "XPUB")
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"L")
    connect_wait(sub, proxy.backend)
    p1 = ctx.socket(zmq.PUB)
    connect_wait(p1, proxy.frontend)
    probe_until(lambda: p1.send(_msg(b"L", b"probe", b"P1")), {"P1": (sub, lambda f: f[0].startswith(b"L|probe|P1"))})

    late = ctx.socket(zmq.PUB)
    connect_wait(late, proxy.frontend)
    probe_until(
        lambda: late.send(_msg(b"L", b"probe", b"P2")),
        {"late publisher": (sub, lambda f: f[0].startswith(b"L|probe|P2"))},
        timeout=5,
    )
    for i in range(100):
        late.send(_msg(b"L", b"data", b"P2", i))
    late.send(_msg(b"L", b"end", b"P2"))
    got = _read_until(sub, lambda m: m == _msg(b"L", b"end", b"P2"))
    seqs = [_parse(m)[3] for m in got if _parse(m)[1:3] == (b"data", b"P2")]
    assert seqs == list(range(100)), f"late publisher: {len(seqs)} of 100 arrived"
    p1.send(_msg(b"L", b"end", b"P1"))
    _read_until(sub, lambda m: m == _msg(b"L", b"end", b"P1"), timeout=5)


def test_sub_pub_forwarder_subscribes_to_everything_upstream(ctx, start_proxy):
    """SUB/PUB forwarder whose SUB connects to an upstream PUB: the PUB backend passes no
    subscriptions upstream, so the proxy must subscribe to everything. A b"" subscriber gets every
    message (odd binary topics, an empty message, multipart) exactly and in order; an X subscriber
    gets only X."""
    up_port, back_port = free_ports(2)
    upstream = ctx.socket(zmq.PUB)
    upstream.bind(ep(up_port))
    proxy = start_proxy(
        [
            "--frontend-type", "SUB", "--frontend-connect", ep(up_port),
            "--backend-type", "PUB", "--backend-bind", ep(back_port),
            "--log-format", "json",
        ]
    )
    s_all = ctx.socket(zmq.SUB)
    s_all.subscribe(b"")
    connect_wait(s_all, ep(back_port))
    s_x = ctx.socket(zmq.SUB)
    s_x.subscribe(b"X")
    connect_wait(s_x, ep(back_port))
    probe_until(
        lambda: upstream.send(b"X|probe"),
        {"all": (s_all, lambda f: f == [b"X|probe"]), "x": (s_x, lambda f: f == [b"X|probe"])},
    )
    sent = []
    for i in range(200):
        for m in ([b"X|%d" % i], [b"Y|%d" % i], [b"\x00\xff|%d" % i], [b"Z|%d" % i, b"", b"part3"]):
            sent.append(m)
        if i % 50 == 0:
            sent.append([b""])
    sent.append([b"X|end"])
    for m in sent:
        upstream.send_multipart(m)

    def read_to_end(s):
        got = []
        for _ in until(10, 100_000):
            if not s.poll(100):
                continue
            m = s.recv_multipart()
            if m == [b"X|probe"]:
                continue
            got.append(m)
            if m == [b"X|end"]:
                return got
        raise AssertionError(f"no end marker; got {len(got)}")

    got_all = read_to_end(s_all)
    assert got_all == sent, f"b'' subscriber got {len(got_all)} of {len(sent)} messages (or changed ones)"
    got_x = read_to_end(s_x)
    assert got_x == [m for m in sent if m[0].startswith(b"X")]
    c = proxy.stop_promptly()
    assert c["frontend_recv_msgs"] >= sum(len(m) for m in sent), c


def test_disconnected_subscriber_releases_its_topics_upstream(ctx, proxy_pair):
    """The only subscriber of T disconnects (no unsubscribe sent). Once the proxy closed its
    connection, a second subscriber's Q subscription is probed through (the publisher has then
    processed everything the proxy sent it before, the T release included). 500 T messages
    published afterwards never reach the proxy: frontend_recv_msgs counts only probes and the
    end marker."""
    proxy = proxy_pair("XSUB", "XPUB")
    pid = proxy.proc.pid
    pub = ctx.socket(zmq.PUB)
    connect_wait(pub, proxy.frontend)
    s1 = ctx.socket(zmq.SUB)
    s1.subscribe(b"T")
    inode = connect_tracked(s1, proxy.backend, pid)
    probes = 0

    def probe(topic):
        nonlocal probes
        pub.send(_msg(topic, b"probe", b"P"))
        probes += 1

    probe_until(lambda: probe(b"T"), {"s1": (s1, lambda f: f[0].startswith(b"T|probe"))})
    s1.close(linger=0)
    assert wait_socket_closed(pid, inode), "the proxy never closed the connection of the gone subscriber"
    s2 = ctx.socket(zmq.SUB)
    s2.subscribe(b"Q")
    connect_wait(s2, proxy.backend)
    probe_until(lambda: probe(b"Q"), {"s2": (s2, lambda f: f[0].startswith(b"Q|probe"))})
    for i in range(500):
        pub.send(_msg(b"T", b"data", b"P", i))
    pub.send(_msg(b"Q", b"end", b"P"))
    got = _read_until(s2, lambda m: m == _msg(b"Q", b"end", b"P"))
    assert not [m for m in got if not m.startswith(b"Q|")], "S2 got topics it did not subscribe to"
    c = proxy.stop_promptly()
    assert c["frontend_recv_msgs"] <= probes + 1, (
        f"the proxy received {c['frontend_recv_msgs']} messages, only {probes} probes + 1 end marker were "
        "published on live topics: the gone subscriber's topic T was never released upstream"
    )
