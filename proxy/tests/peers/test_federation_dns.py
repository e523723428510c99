"""Federation members found by DNS, GET /federation and the PULL/PUSH readiness rule
(docs/federation.md).

Replicas bind their federation port on loopback aliases (127.0.0.2, .3, .4: one address per
replica, as pods have) and list one name, `fed.test`, as their peers; a DNS server the test
controls (dnspeers.ZoneServer, asked through --dns-server) answers for it, and the test adds and
removes addresses while the replicas run. Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import zmq

from dnspeers import ZoneServer
from test_federation import count_events, publish_until_heard, start_federation, wait_links
from zmqpeers import connect_wait, ep, free_ports, until

NAME = "fed.test"


@pytest.fixture
def zone():
    z = ZoneServer()
    yield z
    z.close()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def federation_doc(port: int) -> dict:
    status, body = _get(port, "/federation")
    assert status == 200, body
    return json.loads(body)


def links(port: int) -> dict[str, tuple[bool, bool]]:
    return {m["id"]: (m["out"], m["in"]) for m in federation_doc(port)["members"]}


def wait_links_shown(port: int, want: dict[str, tuple[bool, bool]], timeout: float = 15.0) -> None:
    got = None
    for _ in until(timeout, 100_000):
        got = links(port)
        if got == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"/federation shows {got}, wanted {want}")


def replica(start_proxy, zone: ZoneServer, i: int, fed_port: int, types=("XSUB", "XPUB")):
    """Replica r{i}: data ports on 127.0.0.1, its federation port on 127.0.0.{i+2}, the name as
    its only peer."""
    front, back, http = free_ports(3)
    p = start_proxy([
        "--frontend-type", types[0], "--frontend-bind", ep(front),
        "--backend-type", types[1], "--backend-bind", ep(back),
        "--federation-bind", f"tcp://127.0.0.{i + 2}:{fed_port}",
        "--federation-peers", f"tcp://{NAME}:{fed_port}",
        "--federation-id", f"r{i}", "--dns-server", zone.address, "--resolve-interval", "1",
        "--http-bind", f"127.0.0.1:{http}", "--log-format", "json",
    ])
    p.frontend, p.backend, p.http = ep(front), ep(back), http
    return p


def test_three_replicas_found_by_one_name_link_once_and_relay(ctx, start_proxy, zone):
    """Three replicas behind one name: each links to the two others both ways, dials its own
    address once only however often the name is looked up again, relays a publication, and
    /federation shows exactly the members and links, in the operator's format."""
    fed_port = free_ports(1)[0]
    zone.set(NAME, ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    replicas = [replica(start_proxy, zone, i, fed_port) for i in range(3)]
    for r in replicas:
        wait_links(r, 2, timeout=15)
    # Several more lookups (a TTL of 1 s) keep the same answer: nobody dials itself again.
    seen = zone.query_count(NAME)
    for _ in until(15, 100_000):
        if zone.query_count(NAME) >= seen + 3 * 2 * 3:
            break
        time.sleep(0.05)
    assert zone.query_count(NAME) >= seen + 18, "the name was looked up again"
    for r in replicas:
        assert count_events(r, "federation peer is this replica; not dialing it") == 1, r.output()
        assert count_events(r, "federation link out up") == 2, r.output()
    doc = federation_doc(replicas[0].http)
    assert doc == {
        "id": "r0",
        "pattern": "XSUB/XPUB",
        "members": [{"id": "r1", "out": True, "in": True}, {"id": "r2", "out": True, "in": True}],
    }
    publish_until_heard(ctx, replicas[0].frontend, replicas[2].backend, b"by-name")


def test_an_address_that_joins_the_name_is_dialed_and_one_that_leaves_is_not(ctx, start_proxy, zone):
    """r0 and r1 behind a name that holds only r0: r1 dials r0, r0 dials nobody. r1's address
    joins the name: r0 dials it. It leaves the name: the link stays while its connection lasts;
    r1 stops, and a new replica at the same address is dialed by nobody (it dials r0 itself)
    until the address joins the name again."""
    fed_port = free_ports(1)[0]
    zone.set(NAME, ["127.0.0.2"])
    r0 = replica(start_proxy, zone, 0, fed_port)
    r1 = replica(start_proxy, zone, 1, fed_port)
    wait_links_shown(r0.http, {"r1": (False, True)})
    zone.set(NAME, ["127.0.0.2", "127.0.0.3"])
    wait_links_shown(r0.http, {"r1": (True, True)})
    zone.set(NAME, ["127.0.0.2"])
    assert r0.wait_for_event("federation: address gone from the name; no longer dialing it", 10), r0.output()
    assert links(r0.http) == {"r1": (True, True)}, "a retired address's live link is not cut"
    r1.signal()
    assert r1.wait_exit(10) == 0
    wait_links_shown(r0.http, {"r1": (False, False)})
    front, back = free_ports(2)
    r1b = start_proxy([
        "--frontend-type", "XSUB", "--frontend-bind", ep(front),
        "--backend-type", "XPUB", "--backend-bind", ep(back),
        "--federation-bind", f"tcp://127.0.0.3:{fed_port}",
        "--federation-peers", f"tcp://{NAME}:{fed_port}",
        "--federation-id", "r1b", "--dns-server", zone.address, "--resolve-interval", "1",
        "--log-format", "json",
    ])
    wait_links_shown(r0.http, {"r1": (False, False), "r1b": (False, True)})
    # Two more lookups by r0 with the address still out of the name: still not dialed.
    seen = zone.query_count(NAME)
    for _ in until(10, 100_000):
        if zone.query_count(NAME) >= seen + 8:
            break
        time.sleep(0.05)
    assert links(r0.http)["r1b"] == (False, True)
    zone.set(NAME, ["127.0.0.2", "127.0.0.3"])
    wait_links_shown(r0.http, {"r1": (False, False), "r1b": (True, True)})
    assert count_events(r1b, "federation link out up") == 1


def test_federation_is_404_when_off(start_proxy):
    front, back, http = free_ports(3)
    start_proxy([
        "--frontend-type", "XSUB", "--frontend-bind", ep(front),
        "--backend-type", "XPUB", "--backend-bind", ep(back),
        "--http-bind", f"127.0.0.1:{http}", "--log-format", "json",
    ])
    status, body = _get(http, "/federation")
    assert (status, body) == (404, "federation is off\n")


def wait_ready(port: int, want: tuple[int, str], timeout: float = 10.0) -> None:
    got = None
    for _ in until(timeout, 100_000):
        got = _get(port, "/readyz")
        if got == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"/readyz says {got}, wanted {want}")


def test_a_pipeline_replica_with_producers_and_nowhere_to_put_tasks_is_not_ready(ctx, start_proxy):
    """PULL/PUSH r0 and r1: a producer on r0, no worker on r0. Ready while the links are up;
    not ready once r1 is gone (no workers and no link); ready when a worker attaches to r0;
    not ready when it leaves; ready again when r1 comes back."""
    http = free_ports(1)[0]
    replicas = start_federation(
        start_proxy, 2, types=("PULL", "PUSH"),
        each=lambda i: ("--http-bind", f"127.0.0.1:{http}") if i == 0 else (),
    )
    r0, r1 = replicas
    ready, stranded = (200, "ready\n"), (503, "not ready: no workers and no federation link\n")
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, r0.frontend)
    wait_ready(http, ready)
    r1_args = r1.argv[1:]
    r1.signal()
    assert r1.wait_exit(10) == 0
    wait_ready(http, stranded)
    worker = ctx.socket(zmq.PULL)
    connect_wait(worker, r0.backend)
    wait_ready(http, ready)
    worker.close(0)
    wait_ready(http, stranded)
    start_proxy(r1_args)
    wait_ready(http, ready, timeout=15)
