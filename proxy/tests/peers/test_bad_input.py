"""Bad input: flags and manifests the proxy must refuse (exit 2, one line on stderr naming the
problem), a port already in use (exit 1 naming the endpoint), and garbage bytes thrown at every
port while real request/reply traffic flows."""

from __future__ import annotations

import random
import socket
import threading

import pytest
import zmq

from zmqpeers import (
    HOST,
    connect_wait,
    ep,
    free_ports,
    raw_connect,
    rst_close,
    run_proxy_to_exit,
    socket_inodes,
    until,
    zmtp_greeting,
)

ALLOWED = ("ROUTER/DEALER", "XSUB/XPUB", "SUB/PUB", "PULL/PUSH")
N_ATTACKS = 240


def _args(front="ROUTER", back="DEALER", front_ep=None, back_ep=None, extra=()):
    p = free_ports(2)
    return [
        "--frontend-type", front, "--frontend-bind", ep(p[0]) if front_ep is None else front_ep,
        "--backend-type", back, "--backend-bind", ep(p[1]) if back_ep is None else back_ep,
        *extra,
    ]


def _refused(args, *needles, env=None) -> str:
    """Runs the proxy, expects exit 2 and exactly one stderr line `zmq-proxy: error: ...`
    containing every needle (case-insensitive); returns that line."""
    rc, out, err = run_proxy_to_exit(args, env=env)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"exit code {rc} for {args}; stderr: {err!r}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err!r}"
    line = lines[0]
    assert line.startswith("zmq-proxy: error:"), line
    for n in needles:
        assert n.lower() in line.lower(), f"{n!r} not named in: {line}"
    return line


@pytest.mark.parametrize("side", ["frontend", "backend"])
def test_unknown_socket_type_is_refused_naming_it(side):
    args = _args(**{"front" if side == "frontend" else "back": "STREAMER"})
    _refused(args, "STREAMER", side)


def test_refused_pair_names_the_pair_and_lists_the_allowed_ones():
    line = _refused(_args("ROUTER", "PUSH"), "ROUTER/PUSH", *ALLOWED)
    assert "allowed" in line.lower(), line


def test_pair_capture_is_refused_mentioning_pair():
    p = free_ports(1)[0]
    _refused(_args(extra=("--capture-type", "PAIR", "--capture-bind", ep(p))), "PAIR", "capture")


@pytest.mark.parametrize(
    "endpoint",
    [
        "127.0.0.1:5555",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:notaport",
        "tcp://127.0.0.1:99999",
        "udp://127.0.0.1:5555",
        "inproc://zmq-proxy-test",
        "ipc://",
        "ipc://@",
        "",
    ],
)
def test_malformed_endpoint_is_refused(endpoint):
    rc, out, err = run_proxy_to_exit(_args(front_ep=endpoint))
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"exit code {rc} for endpoint {endpoint!r}; stderr: {err!r}"
    assert len(lines) == 1 and lines[0].startswith("zmq-proxy: error:"), err
    assert "frontend" in lines[0].lower() or (endpoint and endpoint in lines[0]), f"names neither flag nor endpoint: {lines[0]}"


def test_missing_endpoint_is_refused():
    p = free_ports(1)[0]
    _refused(["--frontend-type", "PULL", "--backend-type", "PUSH", "--backend-bind", ep(p)], "frontend")


def test_config_without_backend_is_refused_naming_the_field(tmp_path):
    port = free_ports(1)[0]
    m = tmp_path / "bad.yaml"
    m.write_text(
        "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata:\n  name: bad\n"
        f"spec:\n  frontend: {{type: ROUTER, port: {port}}}\n"
    )
    line = _refused(["--config", str(m)], "backend")
    # Either the dotted path or serde's "spec: missing field `backend`" names the field.
    assert "spec.backend" in line or ("spec" in line and "`backend`" in line), line


def test_config_with_refused_pair_names_the_field(tmp_path):
    a, b = free_ports(2)
    m = tmp_path / "pair.yaml"
    m.write_text(
        "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata:\n  name: pair\n"
        f"spec:\n  frontend: {{type: ROUTER, port: {a}}}\n  backend: {{type: PUB, port: {b}}}\n"
    )
    _refused(["--config", str(m)], "spec.backend.type", "ROUTER/PUB")


def test_missing_config_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "does-not-exist.yaml"
    _refused(["--config", str(path)], str(path))


def test_port_in_use_fails_naming_the_endpoint():
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        busy.bind((HOST, 0))
        busy.listen(1)
        endpoint = ep(busy.getsockname()[1])
        rc, out, err = run_proxy_to_exit(_args(front_ep=endpoint))
    finally:
        busy.close()
    assert rc == 1, f"exit code {rc} (contract: 1 for a runtime failure such as a bind); stderr: {err!r}"
    errors = [line for line in err.splitlines() if line.startswith("zmq-proxy: error:")]
    assert len(errors) == 1 and endpoint in errors[0], f"no one error line naming {endpoint}: {err!r}"


def _garbage(rng: random.Random, i: int) -> bytes:
    """Bytes that are never a complete, valid ZMTP handshake: random data, truncated or corrupted
    greetings, greetings asking for ZMTP 2, unsupported mechanisms, or a greeting and noise."""
    g = zmtp_greeting()
    kind = i % 8
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 9, 64, 999])))
    if kind == 1:
        return g[: rng.choice([1, 2, 9, 10, 11, 12, 20, 33, 63])]
    if kind == 2:
        return b"\x00" + g[1:]  # bad signature
    if kind == 3:
        return g[:10] + b"\x01\x00"  # old ZMTP revision, then nothing
    if kind == 4:
        return zmtp_greeting(mechanism=b"PLAIN", as_server=1)
    if kind == 5:
        return g + bytes(rng.getrandbits(8) for _ in range(300))
    if kind == 6:
        return rng.randbytes(65536)
    return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_garbage_on_every_port_while_traffic_flows(ctx, proxy_pair):
    """ROUTER/DEALER with a PUSH capture. While 4 REQ clients x 200 requests run against 2 REP
    workers, raw TCP connections throw garbage at the frontend, backend and capture ports and
    close with RST or FIN. Every reply is exactly right, the proxy is still running, it has closed
    every garbage connection afterwards, and it still stops cleanly with exit 0."""
    proxy = proxy_pair("ROUTER", "DEALER", capture="PUSH")
    pid = proxy.proc.pid
    ports = [int(e.rsplit(":", 1)[1]) for e in (proxy.frontend, proxy.backend, proxy.capture)]
    cap = ctx.socket(zmq.PULL)
    connect_wait(cap, proxy.capture)
    stop = threading.Event()
    errors: list[str] = []
    workers = []
    for _ in range(2):
        w = ctx.socket(zmq.REP)
        connect_wait(w, proxy.backend)
        workers.append(w)
    clients = []
    for _ in range(4):
        c = ctx.socket(zmq.REQ)
        connect_wait(c, proxy.frontend)
        clients.append(c)
    baseline = len(socket_inodes(pid))

    def serve(w):
        for _ in until(60, 100_000):
            if stop.is_set():
                return
            if w.poll(50):
                frames = w.recv_multipart()
                if len(frames) != 1 or not frames[0].startswith(b"k"):
                    errors.append(f"a worker received something no client sent: {frames!r:.200}")
                w.send_multipart(frames[:-1] + [frames[-1] + b"-ok"])

    def drain_capture():
        for _ in until(60, 1_000_000):
            if stop.is_set():
                return
            if cap.poll(50):
                cap.recv_multipart()

    done = [0] * len(clients)
    attack_done = threading.Event()

    def client(k, c):
        # At least 200 requests each, and on until the attacker is done, so they overlap fully.
        try:
            for i in range(20_000):
                if i >= 200 and (attack_done.is_set() or errors):
                    return
                c.send(b"k%d-%d" % (k, i))
                r = c.recv()
                if r != b"k%d-%d-ok" % (k, i):
                    errors.append(f"client {k} request {i} got {r!r}")
                    return
                done[k] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {k} after {done[k]}: {e!r}")

    seed = random.randrange(1 << 30)
    attacks = [0]

    def attack():
        rng = random.Random(seed)
        for i in until(20, N_ATTACKS):
            if errors:
                break
            try:
                s = raw_connect(ports[i % 3], timeout=2)
                s.sendall(_garbage(rng, i))
                if i % 2:
                    rst_close(s)
                else:
                    s.close()
                attacks[0] += 1
            except OSError:
                attacks[0] += 1  # the proxy may reset a garbage connection before we are done writing
        attack_done.set()

    bg = [threading.Thread(target=serve, args=(w,)) for w in workers] + [threading.Thread(target=drain_capture)]
    fg = [threading.Thread(target=client, args=(k, c)) for k, c in enumerate(clients)]
    attacker = threading.Thread(target=attack)
    for t in bg + fg + [attacker]:
        t.start()
    for t in fg + [attacker]:
        t.join(timeout=50)
    stop.set()
    for t in bg:
        t.join(timeout=5)
    assert not errors, f"{errors[:3]} (garbage seed {seed})"
    assert all(d >= 200 for d in done), f"requests completed per client: {done} (garbage seed {seed})"
    assert attacks[0] == N_ATTACKS, f"only {attacks[0]} of {N_ATTACKS} garbage connections were made"
    assert proxy.running, proxy.output()
    leaked = 0
    for _ in until(5, 1000):
        leaked = len(socket_inodes(pid)) - baseline
        if leaked <= 0:
            break
        stop.wait(0.02)  # poll interval of a condition with a deadline
    assert leaked <= 0, f"{leaked} garbage connections still open in the proxy 5 s after they closed"
    fresh = ctx.socket(zmq.REQ)
    connect_wait(fresh, proxy.frontend)
    fresh.send(b"after-garbage")
    poller = zmq.Poller()
    for w in workers:
        poller.register(w, zmq.POLLIN)
    ready = [s for s, _ in poller.poll(5000)]
    assert ready, "the request after the garbage never reached a worker"
    ready[0].send(ready[0].recv() + b"-ok")
    assert fresh.recv() == b"after-garbage-ok"
    assert proxy.stop() == 0, proxy.output()


# ---- the manifest reader and the command line say what they do -----------------------------

MANIFEST_HEAD = "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata:\n  name: t\n"


def _manifest(tmp_path, spec: str, head: str = MANIFEST_HEAD) -> str:
    """A PULL/PUSH manifest on free ports with `spec` lines appended under `spec:`; `{a}`,
    `{b}`, `{c}` in `spec` are further free ports."""
    a, b, c, d = free_ports(4)
    m = tmp_path / "m.yaml"
    m.write_text(
        f"{head}spec:\n  frontend: {{type: PULL, port: {a}}}\n  backend: {{type: PUSH, port: {b}}}\n"
        + spec.format(a=c, b=d)
    )
    return str(m)


@pytest.mark.parametrize(
    "spec, path, suggestion",
    [
        ("  drainTimeoutSecond: 3\n", "spec.drainTimeoutSecond", "drainTimeoutSeconds"),
        ("  capture: {{type: PUB, port: {a}, sndhwn: 5}}\n", "spec.capture.sndhwn", "sndhwm"),
        ("  control: {{prot: {a}}}\n", "spec.control.prot", "port"),
        ("  capture: {{type: PUB, port: {a}, curve: {{serverKeyFil: k}}}}\n",
         "spec.capture.curve.serverKeyFil", "serverKeyFile"),
        ("  capture: {{type: PUB, port: {a}, heartbeatIntervall: 100}}\n",
         "spec.capture.heartbeatIntervall", "heartbeatInterval"),
    ],
)
def test_unknown_manifest_field_is_refused_with_its_path_and_a_suggestion(tmp_path, spec, path, suggestion):
    line = _refused(["--config", _manifest(tmp_path, spec)], f"{path}: unknown field")
    assert f"did you mean {suggestion}?" in line, line


def test_unknown_socket_field_is_refused_on_the_frontend_too(tmp_path):
    a, b = free_ports(2)
    m = tmp_path / "m.yaml"
    m.write_text(
        MANIFEST_HEAD
        + f"spec:\n  frontend: {{type: PULL, port: {a}, sndhwn: 5}}\n  backend: {{type: PUSH, port: {b}}}\n"
    )
    line = _refused(["--config", str(m)], "spec.frontend.sndhwn: unknown field")
    assert "did you mean sndhwm?" in line, line


def test_unknown_top_level_field_is_refused_and_a_far_one_lists_the_known(tmp_path):
    line = _refused(["--config", _manifest(tmp_path, "", head=MANIFEST_HEAD + "specs: {}\n")], "specs: unknown field")
    assert "did you mean spec?" in line, line
    line = _refused(["--config", _manifest(tmp_path, "  zzzzzzzz: 1\n")], "spec.zzzzzzzz: unknown field")
    assert "did you mean" not in line and "frontend" in line, line


@pytest.mark.parametrize(
    "spec, field",
    [
        ("  replicas: 3\n", "spec.replicas"),
        ("  podTemplate: {{spec: {{}}}}\n", "spec.podTemplate"),
    ],
)
def test_kubernetes_field_without_a_local_meaning_is_refused_naming_it(tmp_path, spec, field):
    _refused(["--config", _manifest(tmp_path, spec)], field)


def test_unknown_socket_type_in_a_manifest_lists_only_the_types_valid_there(tmp_path):
    a, b = free_ports(2)
    m = tmp_path / "m.yaml"
    m.write_text(MANIFEST_HEAD + f"spec:\n  frontend: {{type: STREAM, port: {a}}}\n  backend: {{type: PUSH, port: {b}}}\n")
    line = _refused(["--config", str(m)], "spec.frontend.type", "STREAM", "ROUTER", "PULL")
    for invalid in ("REQ", "REP", "PAIR"):
        assert invalid not in line, line


@pytest.mark.parametrize("flag, value", [("--control-bind", "tcp://127.0.0.1:{p}"), ("--capture-bind", "tcp://127.0.0.1:{p}")])
def test_a_flag_that_would_override_part_of_the_manifest_is_refused(tmp_path, flag, value):
    p = free_ports(1)[0]
    _refused(["--config", _manifest(tmp_path, ""), flag, value.format(p=p)], flag, "--config")


def test_control_bind_from_the_environment_beside_config_is_refused(tmp_path):
    p = free_ports(1)[0]
    env = {"ZMQ_PROXY_CONTROL_BIND": f"tcp://127.0.0.1:{p}"}
    _refused(["--config", _manifest(tmp_path, "")], "--control-bind", "--config", env=env)


def test_drain_timeout_in_both_the_flag_and_the_manifest_is_refused(tmp_path):
    _refused(["--config", _manifest(tmp_path, "  drainTimeoutSeconds: 2\n"), "--drain-timeout", "3"],
             "--drain-timeout", "spec.drainTimeoutSeconds")


def test_bind_host_without_config_is_refused():
    _refused(_args(extra=("--bind-host", "127.0.0.1")), "--bind-host", "--config")


@pytest.mark.parametrize("flag", ["--drain-timeout", "--lame-duck"])
def test_a_negative_number_gets_the_same_message_however_it_is_written(flag):
    spaced = _refused(_args(extra=(flag, "-1")), flag, "between 0 and")
    joined = _refused(_args(extra=(f"{flag}=-1",)), flag, "between 0 and")
    assert spaced == joined


def test_http_bind_with_a_scheme_says_what_it_expects_once():
    line = _refused(_args(extra=("--http-bind", "tcp://127.0.0.1:9090")), "--http-bind", "HOST:PORT")
    assert line.count("HOST:PORT") == 1, line
    assert "IPv6" not in line, line


@pytest.mark.parametrize("side", ["frontend", "backend"])
def test_unknown_data_socket_type_lists_only_types_a_pair_can_use(side):
    line = _refused(_args(**{"front" if side == "frontend" else "back": "STREAMER"}),
                    "STREAMER", "ROUTER", "DEALER", "XSUB", "XPUB", "PULL", "PUSH")
    for invalid in ("REQ", "REP", "PAIR"):
        assert invalid not in line, line


def test_unknown_capture_type_lists_only_capture_types():
    p = free_ports(1)[0]
    line = _refused(_args(extra=("--capture-type", "STREAMER", "--capture-bind", ep(p))), "STREAMER", "PUB", "DEALER", "PUSH")
    for invalid in ("ROUTER", "XSUB", "REQ", "PAIR"):
        assert invalid not in line, line
