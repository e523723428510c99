"""`zmq-proxy --config`: what a `ZmqProxy` manifest's Kubernetes fields mean on a laptop, and
where its sockets bind. `paused: true` starts paused, `metricsPort` opens the HTTP listener,
placement fields are warned about by name, and every socket of the manifest (control and HTTP
included) binds on `--bind-host`, loopback unless told otherwise."""

from __future__ import annotations

import re
import urllib.request

import zmq

from zmqpeers import free_ports, log_fields, log_message

HEAD = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata:\n  name: t\n"


def _write(tmp_path, body: str) -> str:
    m = tmp_path / "m.yaml"
    m.write_text(HEAD + "spec:\n" + body)
    return str(m)


def _listening(ev: dict) -> dict[str, list[str]]:
    """Socket name -> the addresses its "listening on" part of the "proxy running" line shows."""
    fields = log_fields(ev)
    out = {}
    for name in ("frontend", "backend", "capture"):
        m = re.search(r"\(listening on ([^)]*)\)", str(fields.get(name, "")))
        if m:
            out[name] = m.group(1).split()
    for name in ("control", "http"):
        value = str(fields.get(name, "none"))
        if value != "none":
            out[name] = [value]
    return out


def test_paused_manifest_starts_paused_until_resume(ctx, start_proxy, tmp_path):
    a, b, c = free_ports(3)
    m = _write(tmp_path, f"  frontend: {{type: PULL, port: {a}}}\n  backend: {{type: PUSH, port: {b}}}\n"
                         f"  control: {{port: {c}}}\n  paused: true\n")
    start_proxy(["--config", m, "--log-format", "json"])
    push, pull, ctl = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL), ctx.socket(zmq.REQ)
    push.connect(f"tcp://127.0.0.1:{a}")
    pull.connect(f"tcp://127.0.0.1:{b}")
    ctl.connect(f"tcp://127.0.0.1:{c}")
    push.send(b"held")
    assert not pull.poll(1000), "a manifest with paused: true forwarded before RESUME"
    ctl.send(b"RESUME")
    assert ctl.recv() is not None
    assert pull.poll(5000), "RESUME did not release the held message"
    assert pull.recv() == b"held"


def test_metrics_port_opens_the_http_listener(start_proxy, tmp_path):
    a, b, h = free_ports(3)
    m = _write(tmp_path, f"  frontend: {{type: PULL, port: {a}}}\n  backend: {{type: PUSH, port: {b}}}\n"
                         f"  metricsPort: {h}\n")
    start_proxy(["--config", m, "--log-format", "json"])
    with urllib.request.urlopen(f"http://127.0.0.1:{h}/metrics", timeout=3) as r:
        assert r.status == 200
        assert b"zmq_proxy_ready" in r.read()


def test_every_manifest_socket_binds_on_the_bind_host(start_proxy, tmp_path):
    a, b, c, d, h = free_ports(5)
    m = _write(tmp_path, f"  frontend: {{type: XSUB, port: {a}}}\n  backend: {{type: XPUB, port: {b}}}\n"
                         f"  capture: {{type: PUB, port: {c}}}\n  control: {{port: {d}}}\n  metricsPort: {h}\n")
    for args, env in ((["--bind-host", "127.0.0.1"], None), ([], {"ZMQ_PROXY_BIND_HOST": "127.0.0.1"})):
        p = start_proxy(["--config", m, "--log-format", "json", *args], env=env)
        seen = _listening(p.wait_running())
        assert set(seen) == {"frontend", "backend", "capture", "control", "http"}, seen
        for name, addrs in seen.items():
            assert addrs and all("127.0.0.1" in x for x in addrs), f"{name} listens on {addrs}"
        p.stop(5)


def test_config_binds_loopback_by_default_and_everywhere_when_asked(start_proxy, tmp_path):
    a, b, d = free_ports(3)
    m = _write(tmp_path, f"  frontend: {{type: PULL, port: {a}}}\n  backend: {{type: PUSH, port: {b}}}\n"
                         f"  control: {{port: {d}}}\n")
    p = start_proxy(["--config", m, "--log-format", "json"])
    seen = _listening(p.wait_running())
    assert all("127.0.0.1" in x for addrs in seen.values() for x in addrs), seen
    p.stop(5)
    p = start_proxy(["--config", m, "--log-format", "json", "--bind-host", "*"])
    seen = _listening(p.wait_running())
    assert all("127.0.0.1" not in x for addrs in seen.values() for x in addrs), seen


def test_placement_fields_are_named_in_a_warning(start_proxy, tmp_path):
    a, b = free_ports(2)
    m = _write(tmp_path, f"  frontend: {{type: PULL, port: {a}}}\n  backend: {{type: PUSH, port: {b}}}\n"
                         "  replicas: 1\n  image: example/zmq-proxy:1\n  nodeSelector: {disk: ssd}\n")
    p = start_proxy(["--config", m, "--log-format", "json"])
    warnings = [log_message(e) or "" for e in p.events() if e.get("level") == "WARN"]
    named = [w for w in warnings if "spec.image" in w and "spec.nodeSelector" in w]
    assert named, f"no warning naming spec.image and spec.nodeSelector: {warnings}"
    assert "spec.replicas" not in named[0], "replicas: 1 means one proxy, as here"
