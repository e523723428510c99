"""--http-bind: /metrics agrees with STATISTICS and with what crossed (capture, drops, peers,
state gauges), /healthz and /readyz follow the proxy's life (503 on /readyz from the moment
the drain starts, while /healthz stays 200 until the exit), and drops are summarised in one
periodic log line rather than one line per message."""

from __future__ import annotations

import signal
import time

import zmq

from opsutil import Control, http_get, metric, scrape, wait_metric
from zmqpeers import connect_wait, log_fields, recv_until_quiet, until


def test_metrics_agree_with_statistics_and_traffic(ops_proxy, ctx):
    p = ops_proxy("ROUTER", "DEALER", capture="PUSH")
    tap = ctx.socket(zmq.PULL)
    connect_wait(tap, p.capture)
    worker = ctx.socket(zmq.REP)
    connect_wait(worker, p.backend)
    clients = []
    for i in range(3):
        c = ctx.socket(zmq.REQ)
        c.routing_id = b"c%d" % i
        connect_wait(c, p.frontend)
        clients.append(c)
    for r in range(20):
        for c in clients:
            c.send_multipart([b"req", b"x" * r])
            assert worker.poll(5000)
            worker.send_multipart(worker.recv_multipart()[::-1])
            assert c.poll(5000) and c.recv_multipart() == [b"x" * r, b"req"]
    captured = recv_until_quiet(tap, quiet=0.5, total=10.0)
    stats = Control(ctx, p.control).statistics()
    m = scrape(p.http)
    pairs = {
        "frontend_recv_msgs": ("zmq_proxy_received_frames_total", "frontend"),
        "frontend_recv_bytes": ("zmq_proxy_received_bytes_total", "frontend"),
        "frontend_sent_msgs": ("zmq_proxy_sent_frames_total", "frontend"),
        "frontend_sent_bytes": ("zmq_proxy_sent_bytes_total", "frontend"),
        "backend_recv_msgs": ("zmq_proxy_received_frames_total", "backend"),
        "backend_recv_bytes": ("zmq_proxy_received_bytes_total", "backend"),
        "backend_sent_msgs": ("zmq_proxy_sent_frames_total", "backend"),
        "backend_sent_bytes": ("zmq_proxy_sent_bytes_total", "backend"),
    }
    for stat, (name, sock) in pairs.items():
        assert metric(m, name, socket=sock) == stats[stat], f"{name}{{socket={sock}}} != STATISTICS {stat}"
    # 60 requests of 4 frames ([id, empty, req, body]) each way.
    assert stats["frontend_recv_msgs"] == stats["backend_recv_msgs"] == 240
    cap_frames = sum(len(f) for f in captured)
    assert cap_frames == 480, f"capture saw {cap_frames} frames"
    assert metric(m, "zmq_proxy_sent_frames_total", socket="capture") == 480
    # STATISTICS counts frames; the metrics count each multipart message once too.
    for sock in ("frontend", "backend"):
        assert metric(m, "zmq_proxy_received_messages_total", socket=sock) == 60
        assert metric(m, "zmq_proxy_sent_messages_total", socket=sock) == 60
    assert metric(m, "zmq_proxy_sent_messages_total", socket="capture") == len(captured) == 120
    assert metric(m, "zmq_proxy_sent_bytes_total", socket="capture") == sum(len(x) for f in captured for x in f)
    assert metric(m, "zmq_proxy_connected_peers", socket="frontend") == 3
    assert metric(m, "zmq_proxy_connected_peers", socket="backend") == 1
    assert metric(m, "zmq_proxy_connected_peers", socket="capture") == 1
    for reason in ("unroutable", "peer_full", "peer_gone", "invalid", "capture"):
        assert metric(m, "zmq_proxy_dropped_frames_total", reason=reason) == 0
    assert metric(m, "zmq_proxy_paused") == 0
    assert metric(m, "zmq_proxy_draining") == 0
    assert metric(m, "zmq_proxy_ready") == 1
    build = [k for k in m if k[0] == "zmq_proxy_build_info"]
    assert len(build) == 1 and m[build[0]] == 1 and build[0][1][0][0] == "version", build
    # A peer that leaves is no longer counted.
    clients.pop().close(0)
    wait_metric(p.http, "zmq_proxy_connected_peers", 2, socket="frontend")


def test_readyz_turns_503_on_sigterm_while_the_drain_is_held_open(ops_proxy, ctx):
    # No PUSH peer ever connects: what the proxy read cannot be delivered, so the drain lasts
    # the whole --drain-timeout and the probes can be watched during it.
    p = ops_proxy("PULL", "PUSH", extra=("--drain-timeout", "4"))
    assert http_get(p.http, "/readyz")[0] == 200
    assert http_get(p.http, "/healthz")[0] == 200
    producer = ctx.socket(zmq.PUSH)
    connect_wait(producer, p.frontend)
    for i in range(10):
        producer.send(b"stuck-%d" % i)
    # The pump has read (and holds) at least one message it cannot deliver.
    wait_metric(p.http, "zmq_proxy_received_messages_total", 1, at_least=True, socket="frontend")
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    status = None
    for _ in until(3.0, 10_000):
        status, _, body = http_get(p.http, "/readyz")
        if status == 503:
            break
        time.sleep(0.01)  # poll interval of a condition with a deadline, not a fixed wait
    assert status == 503, f"/readyz still {status} after SIGTERM"
    assert p.running, "the proxy exited before /readyz could be seen at 503"
    assert "draining" in body
    assert http_get(p.http, "/healthz")[0] == 200, "/healthz must stay 200 during the drain"
    m = scrape(p.http)
    assert metric(m, "zmq_proxy_draining") == 1 and metric(m, "zmq_proxy_ready") == 0
    assert time.monotonic() - t0 < 3.5, "these checks must happen inside the 4 s drain"
    rc = p.wait_exit(10)
    assert rc == 0, f"exit code {rc}\n{p.output()}"
    c = p.stopped_counters()
    assert c["undelivered_msgs"] >= 1, c


def test_readyz_is_200_only_with_every_bind_up(start_proxy, ctx):
    """A control bind that fails stops the start: the proxy exits 1 naming the endpoint and
    never reports ready (the HTTP port never answers)."""
    from zmqpeers import ep, free_ports, run_proxy_to_exit

    ports = free_ports(4)
    blocker = ctx.socket(zmq.REP)
    blocker.bind(ep(ports[2]))
    rc, _, err = run_proxy_to_exit([
        "--frontend-type", "PULL", "--frontend-bind", ep(ports[0]),
        "--backend-type", "PUSH", "--backend-bind", ep(ports[1]),
        "--control-bind", ep(ports[2]), "--http-bind", f"127.0.0.1:{ports[3]}",
    ])
    assert rc == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == f"zmq-proxy: error: cannot bind {ep(ports[2])}: address in use", err


def test_drops_are_summarised_periodically_not_per_message(ops_proxy, ctx):
    # Replies addressed to clients that are not connected are unroutable: dropped and counted.
    p = ops_proxy("ROUTER", "DEALER")
    worker = ctx.socket(zmq.DEALER)
    connect_wait(worker, p.backend)
    n = 250
    for i in range(n):
        worker.send_multipart([b"nobody-%d" % i, b"", b"reply"])
    wait_metric(p.http, "zmq_proxy_dropped_frames_total", 3 * n, reason="unroutable")
    ev = p.wait_for_event("messages dropped", 15.0)
    assert ev is not None, f"no 'messages dropped' summary within 15 s\n{p.output()}"
    assert ev.get("level") == "WARN"
    assert log_fields(ev).get("peer_full") == 0, ev
    # One burst lands in one summary interval, or in two if it straddled a boundary.
    def summaries():
        return [log_fields(e) for e in p.events() if log_fields(e).get("message") == "messages dropped"]

    for _ in until(15.0, 10_000):
        if sum(s.get("unroutable", 0) for s in summaries()) >= 3 * n:
            break
        time.sleep(0.05)  # poll interval of a condition with a deadline, not a fixed wait
    got = summaries()
    assert sum(s.get("unroutable", 0) for s in got) == 3 * n, got
    assert 1 <= len(got) <= 2, f"{len(got)} summary lines for one burst of {n} drops"
