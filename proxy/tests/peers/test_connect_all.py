"""--backend-connect-all: one connection to every address a name resolves to, following the name.

Real peers on loopback: a DNS server the test controls (dnspeers.ZoneServer, asked through
--dns-server, so the proxy's real resolver path runs: UDP queries, TTLs, NXDOMAIN, SERVFAIL,
silence) and libzmq REP workers bound on 127.0.0.2-5 behind one name, reached through a
ROUTER/DEALER proxy. Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import zmq

from dnspeers import Workers, ZoneServer
from zmqpeers import Proxy, free_ports, log_message, proxy_bin, run_proxy_to_exit, until

NAME = "workers.test"
INTERVAL = 1.0


@pytest.fixture
def zone():
    z = ZoneServer()
    yield z
    z.close()


@pytest.fixture
def workers(ctx):
    w = Workers(ctx, free_ports(1)[0])
    yield w
    w.close()


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
        return r.read().decode()


def connects(port: int) -> list[dict]:
    return json.loads(_get(port, "/connects"))["sockets"]


def endpoint_report(port: int, endpoint: str) -> dict:
    found = [c for c in connects(port) if c["endpoint"] == endpoint]
    assert len(found) == 1, connects(port)
    return found[0]


def states(port: int, endpoint: str) -> dict[str, str]:
    return {a["address"]: a["state"] for a in endpoint_report(port, endpoint)["addresses"]}


def gauge(port: int, endpoint: str, state: str) -> float | None:
    for line in _get(port, "/metrics").splitlines():
        if line.startswith("zmq_proxy_connect_addresses{") and f'endpoint="{endpoint}"' in line and f'state="{state}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def failures_metric(port: int, endpoint: str) -> float | None:
    for line in _get(port, "/metrics").splitlines():
        if line.startswith("zmq_proxy_resolve_failures_total{") and f'endpoint="{endpoint}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_states(port: int, endpoint: str, want: dict[str, str], timeout: float = 10.0) -> float:
    """Polls /connects until the endpoint's addresses are exactly `want`; returns the seconds it took."""
    start = time.monotonic()
    got = None
    for _ in until(timeout):
        got = states(port, endpoint)
        if got == want:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{endpoint}: wanted {want}, /connects shows {got}")


def start(start_proxy, zone: ZoneServer, connect_all: list[str], extra: tuple = ()):
    front, http = free_ports(2)
    args = [
        "--frontend-type", "ROUTER", "--frontend-bind", f"tcp://127.0.0.1:{front}",
        "--backend-type", "DEALER",
        "--dns-server", zone.address, "--resolve-interval", str(INTERVAL),
        "--http-bind", f"127.0.0.1:{http}", "--log-format", "json",
    ]
    for e in connect_all:
        args += ["--backend-connect-all", e]
    p = start_proxy(args + list(extra))
    p.frontend, p.http = f"tcp://127.0.0.1:{front}", http
    return p


def client(ctx, p) -> zmq.Socket:
    c = ctx.socket(zmq.DEALER)
    c.connect(p.frontend)
    return c


def ask(c: zmq.Socket, n: int, tag: str, timeout: float = 10.0) -> list[str]:
    """Sends n requests, returns who answered each (the worker's address), in arrival order."""
    for i in range(n):
        c.send_multipart([b"", f"{tag}{i}".encode()])
    return collect(c, n, timeout)


def collect(c: zmq.Socket, n: int, timeout: float = 10.0) -> list[str]:
    by = []
    deadline = time.monotonic() + timeout
    for _ in until(timeout, n):
        left = deadline - time.monotonic()
        if left <= 0 or not c.poll(int(left * 1000) + 1):
            break
        _, reply = c.recv_multipart()
        by.append(reply.decode().rsplit("@", 1)[1])
    return by


def test_requests_spread_over_every_address_and_a_new_address_is_connected_within_an_interval(ctx, start_proxy, zone, workers):
    three = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    for a in three:
        workers.add(a)
    zone.set(NAME, three)
    endpoint = f"tcp://{NAME}:{workers.port}"
    p = start(start_proxy, zone, [endpoint])
    wait_states(p.http, endpoint, {f"{a}:{workers.port}": "connected" for a in three})
    report = endpoint_report(p.http, endpoint)
    assert (report["socket"], report["all"], report["resolved"], report["connected"]) == ("backend", True, 3, 3)
    assert [a["address"] for a in report["addresses"]] == [f"{a}:{workers.port}" for a in three], "sorted"
    assert gauge(p.http, endpoint, "connected") == 3
    assert gauge(p.http, endpoint, "connecting") == 0 and gauge(p.http, endpoint, "draining") == 0
    assert gauge(p.http, endpoint, "backing_off") == 0
    c = client(ctx, p)
    by = ask(c, 30, "a")
    assert len(by) == 30
    assert {a: by.count(a) for a in three} == {a: 10 for a in three}, by

    # A fourth address behind the name: connected within one interval, and it gets work.
    workers.add("127.0.0.5")
    zone.set(NAME, three + ["127.0.0.5"])
    took = wait_states(p.http, endpoint, {f"{a}:{workers.port}": "connected" for a in three + ["127.0.0.5"]})
    assert took <= INTERVAL + 1.0, f"the new address took {took:.2f}s (interval {INTERVAL}s)"
    by = ask(c, 40, "b")
    assert len(by) == 40 and by.count("127.0.0.5") == 10, by
    added = [e for e in p.events() if log_message(e) == "address added to the name: connecting"]
    assert len(added) == 4, added
    assert endpoint_report(p.http, endpoint)["resolved"] == 4
    # The start line describes a backend that only connects without an empty listening list.
    started = [e["fields"]["backend"] for e in p.events() if "backend" in e.get("fields", {})]
    assert started and started[0].startswith("DEALER") and "listening on" not in started[0], started


def test_a_removed_address_is_drained_its_replies_delivered_then_closed(ctx, start_proxy, zone, workers):
    three = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    for a in three:
        workers.add(a)
    # The leaving worker takes 0.8 s per request: its replies are in flight when it leaves.
    workers.delay["127.0.0.2"] = 0.8
    zone.set(NAME, three)
    endpoint = f"tcp://{NAME}:{workers.port}"
    p = start(start_proxy, zone, [endpoint])
    wait_states(p.http, endpoint, {f"{a}:{workers.port}": "connected" for a in three})
    c = client(ctx, p)
    for i in range(9):
        c.send_multipart([b"", f"r{i}".encode()])
    zone.set(NAME, three[1:])
    seen_draining = False
    for _ in until(10):
        s = states(p.http, endpoint)
        if s.get(f"127.0.0.2:{workers.port}") == "draining":
            seen_draining = True
            assert gauge(p.http, endpoint, "draining") == 1
            break
        time.sleep(0.02)
    assert seen_draining, states(p.http, endpoint)
    by = collect(c, 9)
    # Every request answered: the three the leaving worker held came back over its draining connection.
    assert len(by) == 9 and by.count("127.0.0.2") == 3, by
    wait_states(p.http, endpoint, {f"{a}:{workers.port}": "connected" for a in three[1:]})
    assert endpoint_report(p.http, endpoint)["resolved"] == 2
    # Closed: no new request reaches it, though the worker still listens.
    by = ask(c, 10, "after")
    assert len(by) == 10 and "127.0.0.2" not in by, by
    assert workers.counts()["127.0.0.2"] == 3
    gone = [e for e in p.events() if log_message(e) == "address gone from the name: draining its connection"]
    assert len(gone) == 1, gone


@pytest.mark.parametrize("failure", ["nxdomain", "servfail"])
def test_a_name_that_stops_resolving_keeps_its_connections_until_it_resolves_again(ctx, start_proxy, zone, workers, failure):
    two = ["127.0.0.2", "127.0.0.3"]
    for a in two:
        workers.add(a)
    zone.set(NAME, two)
    endpoint = f"tcp://{NAME}:{workers.port}"
    p = start(start_proxy, zone, [endpoint])
    connected = {f"{a}:{workers.port}": "connected" for a in two}
    wait_states(p.http, endpoint, connected)
    zone.set_mode(NAME, failure)
    for _ in until(10):
        if (failures_metric(p.http, endpoint) or 0) >= 3:
            break
        time.sleep(0.05)
    assert failures_metric(p.http, endpoint) >= 3
    assert states(p.http, endpoint) == connected
    c = client(ctx, p)
    by = ask(c, 10, "x")
    assert sorted(set(by)) == two and len(by) == 10, by
    # Reported once, not per retry; and once when it resolves again, with a new address.
    said = [e for e in p.events() if (log_message(e) or "").startswith(f"{NAME} does not resolve")]
    assert len(said) == 1, said
    workers.add("127.0.0.4")
    zone.set(NAME, two + ["127.0.0.4"])
    wait_states(p.http, endpoint, {f"{a}:{workers.port}": "connected" for a in two + ["127.0.0.4"]})
    assert p.wait_for_event(f"{NAME} resolves again", 5) is not None


def test_a_name_that_never_resolved_is_retried_and_reported_not_fatal(ctx, start_proxy, zone, workers):
    endpoint = f"tcp://{NAME}:{workers.port}"
    p = start(start_proxy, zone, [endpoint])
    for _ in until(10):
        if (failures_metric(p.http, endpoint) or 0) >= 2:
            break
        time.sleep(0.05)
    assert failures_metric(p.http, endpoint) >= 2 and p.running
    report = endpoint_report(p.http, endpoint)
    assert (report["resolved"], report["connected"], report["addresses"]) == (0, 0, [])
    assert all(gauge(p.http, endpoint, s) == 0 for s in ("connected", "connecting", "backing_off", "draining"))
    workers.add("127.0.0.2")
    zone.set(NAME, ["127.0.0.2"])
    wait_states(p.http, endpoint, {f"127.0.0.2:{workers.port}": "connected"})
    assert ask(client(ctx, p), 3, "late") == ["127.0.0.2"] * 3


def test_a_dns_server_that_never_answers_stalls_no_forwarding(ctx, start_proxy, zone, workers):
    two = ["127.0.0.2", "127.0.0.3"]
    for a in two:
        workers.add(a)
    zone.set(NAME, two)
    zone.set("silent.test", [], mode="silent")
    endpoint, silent = f"tcp://{NAME}:{workers.port}", f"tcp://silent.test:{workers.port}"
    t0 = time.monotonic()
    p = start(start_proxy, zone, [silent, endpoint])
    assert time.monotonic() - t0 < 5, "the proxy started without waiting for the silent name"
    wait_states(p.http, endpoint, {f"{a}:{workers.port}": "connected" for a in two}, timeout=5)
    assert zone.query_count("silent.test") >= 1
    # Now the whole server goes silent: lookups hang, forwarding goes on at full speed.
    zone.set_mode(NAME, "silent")
    before = zone.query_count(NAME)
    c = client(ctx, p)
    worst = 0.0
    for _ in until(10):
        if zone.query_count(NAME) >= before + 2:
            break
        t = time.monotonic()
        assert len(ask(c, 1, "q")) == 1
        worst = max(worst, time.monotonic() - t)
    assert zone.query_count(NAME) >= before + 2, "no lookup hung while requests flowed"
    assert worst < 0.5, f"a request took {worst:.2f}s while lookups hung"
    assert states(p.http, endpoint) == {f"{a}:{workers.port}": "connected" for a in two}
    assert endpoint_report(p.http, silent)["addresses"] == []


def test_connect_all_addresses_use_the_sockets_curve_client_settings(ctx, start_proxy, zone):
    server_public, server_secret = zmq.curve_keypair()
    w = Workers(ctx, free_ports(1)[0], curve_secret=server_secret)
    try:
        two = ["127.0.0.2", "127.0.0.3"]
        for a in two:
            w.add(a)
        zone.set(NAME, two)
        endpoint = f"tcp://{NAME}:{w.port}"
        p = start(start_proxy, zone, [endpoint], extra=("--backend-curve-server-public-key", server_public.decode()))
        wait_states(p.http, endpoint, {f"{a}:{w.port}": "connected" for a in two})
        by = ask(client(ctx, p), 10, "c")
        assert sorted(by) == sorted(two * 5), by
        # A wrong server key: every address refuses the handshake, one by one.
        wrong_public, _ = zmq.curve_keypair()
        q = start(start_proxy, zone, [endpoint], extra=("--backend-curve-server-public-key", wrong_public.decode()))
        for _ in until(10):
            s = states(q.http, endpoint)
            if len(s) == 2 and "connected" not in s.values():
                break
            time.sleep(0.05)
        s = states(q.http, endpoint)
        assert len(s) == 2 and "connected" not in s.values(), s
    finally:
        w.close()


def test_plain_connects_are_listed_with_all_false(ctx, start_proxy, zone, workers):
    workers.add("127.0.0.2")
    zone.set(NAME, ["127.0.0.2"])
    plain = f"tcp://127.0.0.2:{workers.port}"
    p = start(start_proxy, zone, [], extra=("--backend-connect", plain))
    for _ in until(10):
        r = endpoint_report(p.http, plain)
        if r["connected"] == 1:
            break
        time.sleep(0.05)
    assert r == {
        "socket": "backend", "endpoint": plain, "all": False, "resolved": 1, "connected": 1,
        "resolve_failures": 0, "addresses": [{"address": f"127.0.0.2:{workers.port}", "state": "connected"}],
    }
    assert gauge(p.http, plain, "connected") is None, "the gauge covers connect-all endpoints only"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--resolve-interval", "0"], "--resolve-interval"),
        (["--resolve-interval", "soon"], "--resolve-interval"),
        (["--dns-server", "localhost"], "--dns-server"),
        (["--backend-connect-all", "tcp://*:5"], "--backend-connect-all"),
        (["--backend-connect-all", "udp://x:5"], "--backend-connect-all"),
    ],
)
def test_bad_connect_all_input_is_refused_naming_the_flag(args, words):
    base = ["--frontend-type", "ROUTER", "--frontend-bind", "tcp://127.0.0.1:0", "--backend-type", "DEALER"]
    if "--backend-connect-all" not in args:
        base += ["--backend-connect-all", "tcp://workers.test:5"]
    rc, _, err = run_proxy_to_exit(base + args)
    assert rc != 0 and words in err, err


def _in_hosts_namespace(hosts: Path) -> list[str]:
    """A command prefix running the command in a mount namespace of its own where `hosts` is
    /etc/hosts: the system resolver path (getaddrinfo for libzmq, /etc/hosts and resolv.conf for
    the proxy) with a name of several addresses, without touching the machine's /etc/hosts."""
    return ["unshare", "-rm", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)]


def test_side_by_side_with_libzmq_connecting_to_the_same_name(ctx, tmp_path):
    """The table in docs/proxy.md: a name with three addresses (AAAA ::1, A 127.0.0.2 and
    127.0.0.3), a worker on each. libzmq (ZMQ_IPV6 on) connects to the first address getaddrinfo
    gives and no other; the proxy's --backend-connect-all reaches all three. When the worker
    libzmq reached goes away, libzmq keeps dialling its address and answers nothing more, while
    the proxy's other two connections answer everything."""
    addresses = ["::1", "127.0.0.2", "127.0.0.3"]
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{a} {NAME}\n" for a in addresses))
    ns = _in_hosts_namespace(hosts)
    if shutil.which("unshare") is None or subprocess.run([*ns, "true"], timeout=10).returncode != 0:
        pytest.skip("no unprivileged mount namespace (unshare -rm): cannot give a name several addresses here")
    w = Workers(ctx, free_ports(1)[0])
    lz = p = plain = None
    try:
        for a in addresses:
            w.add(a)
        endpoint = f"tcp://{NAME}:{w.port}"
        lz = subprocess.Popen(
            [*ns, sys.executable, str(Path(__file__).with_name("name_client.py")), endpoint],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert lz.stdout.readline().strip() == "ready"

        def libzmq_ask(n: int, seconds: float) -> list[str]:
            lz.stdin.write(f"ask {n} {seconds}\n")
            lz.stdin.flush()
            return json.loads(lz.stdout.readline())

        front, http = free_ports(2)
        p = Proxy(
            ["--frontend-type", "ROUTER", "--frontend-bind", f"tcp://127.0.0.1:{front}",
             "--backend-type", "DEALER", "--backend-connect-all", endpoint,
             "--resolve-interval", str(INTERVAL), "--http-bind", f"127.0.0.1:{http}", "--log-format", "json"],
            program=[*ns, proxy_bin()],
        )
        p.wait_running(10)
        p.frontend = f"tcp://127.0.0.1:{front}"
        # The proxy's plain connect to the same name, for the third row.
        front2, http2 = free_ports(2)
        plain = Proxy(
            ["--frontend-type", "ROUTER", "--frontend-bind", f"tcp://127.0.0.1:{front2}",
             "--backend-type", "DEALER", "--backend-connect", endpoint,
             "--http-bind", f"127.0.0.1:{http2}", "--log-format", "json"],
            program=[*ns, proxy_bin()],
        )
        plain.wait_running(10)
        plain.frontend = f"tcp://127.0.0.1:{front2}"
        want = {f"[::1]:{w.port}": "connected", f"127.0.0.2:{w.port}": "connected", f"127.0.0.3:{w.port}": "connected"}
        wait_states(http, endpoint, want)

        by_libzmq = libzmq_ask(30, 5)
        c = client(ctx, p)
        by_proxy = ask(c, 30, "p")
        assert len(by_libzmq) == 30 and len(set(by_libzmq)) == 1, by_libzmq
        assert len(by_proxy) == 30 and sorted(set(by_proxy)) == sorted(addresses), by_proxy
        reached = by_libzmq[0]
        c2 = client(ctx, plain)
        by_plain = ask(c2, 30, "o")
        assert by_plain == [by_plain[0]] * 30, by_plain

        # The address libzmq reached goes away (its worker stops; the name still lists it).
        w.remove(reached)
        after_libzmq = libzmq_ask(5, 3)
        after_proxy = ask(c, 10, "q", timeout=5)
        after_plain = ask(c2, 5, "r", timeout=5)
        assert after_libzmq == [], f"libzmq answered {after_libzmq} after {reached} went away"
        assert len(after_proxy) == 10 and reached not in after_proxy, after_proxy
        assert by_plain[0] == reached, "both take getaddrinfo's first address that answers"
        assert len(after_plain) == 5 and reached not in after_plain, after_plain
        print(f"libzmq reached {sorted(set(by_libzmq))}, then answered {len(after_libzmq)}/5; "
              f"connect-all reached {sorted(set(by_proxy))}, then answered {len(after_proxy)}/10; "
              f"plain connect reached {sorted(set(by_plain))}, then answered {len(after_plain)}/5")
    finally:
        if lz is not None:
            lz.kill()
            lz.wait(5)
        for proc in (p, plain):
            if proc is not None:
                proc.stop(5)
                proc.close()
        w.close()
