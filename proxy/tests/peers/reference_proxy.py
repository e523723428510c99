#!/usr/bin/env python3
"""A reference implementation of the zmq-proxy command-line contract on libzmq itself (pyzmq).

It exists only to check the peer tests: a test that fails against this reference is a wrong test,
not a proxy bug. Run the suite against it with
    ZMQ_PROXY_BIN=proxy/tests/peers/reference_proxy.py python3 -m pytest proxy/tests/peers
It is not shipped and is not collected by pytest. Its forwarding loop follows libzmq's
proxy.cpp: one message in flight per direction, read only when the previous one went out.

These fail against it by design, where the contract asks more than libzmq gives:
- test_garbage_on_every_port_while_traffic_flows: libzmq still accepts ZMTP 1.0 peers, so
  random bytes on the worker port (first byte not 0xFF) open a legacy session that becomes a
  worker for a moment and swallows requests. zmq-proxy serves ZMTP 2.0 and 3.x only and must
  refuse them.
- test_drain_timeout_bounds_exit_with_a_stalled_consumer: libzmq counts a message as sent once it
  is queued in its pipe and drops the pipe when the linger expires, so its counters call "sent"
  what never left; the contract counts those as undelivered_msgs.

In test_zmtp2.py, two tests ask more than libzmq by design (it serves a 2.0 peer of any socket
type, and takes a 2.0 frame with the COMMAND bit as a command), and two use flags this reference
lacks (CURVE, heartbeats).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from datetime import datetime, timezone

import zmq

TYPES = ["ROUTER", "DEALER", "XSUB", "XPUB", "SUB", "PUB", "PULL", "PUSH", "REQ", "REP", "PAIR"]
PAIRS = [("ROUTER", "DEALER"), ("XSUB", "XPUB"), ("SUB", "PUB"), ("PULL", "PUSH")]
ALLOWED = [p for a, b in PAIRS for p in ((a, b), (b, a))]
CAPTURE = ["PUB", "DEALER", "PUSH"]
READERS = {"ROUTER", "DEALER", "XSUB", "XPUB", "SUB", "PULL"}
WRITERS = {"ROUTER", "DEALER", "XSUB", "XPUB", "PUB", "PUSH"}
EP_RE = re.compile(r"^tcp://([A-Za-z0-9.\-*]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})$")


def fail(what: str, code: int = 2) -> None:
    print(f"zmq-proxy: error: {what}", file=sys.stderr, flush=True)
    sys.exit(code)


def log(message: str, **fields) -> None:
    line = {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "level": "INFO",
        "fields": {"message": message, **fields},
        "target": "zmq_proxy",
    }
    print(json.dumps(line), file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as the contract wants
        fail(message.replace("\n", " "))


def parse() -> dict:
    p = Parser(prog="zmq-proxy", add_help=True)
    for side in ("frontend", "backend", "capture"):
        p.add_argument(f"--{side}-type")
        p.add_argument(f"--{side}-bind", action="append", default=[])
        p.add_argument(f"--{side}-connect", action="append", default=[])
    p.add_argument("--control-bind")
    p.add_argument("--http-bind")
    p.add_argument("--drain-timeout")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--config")
    a = vars(p.parse_args())
    for key, val in list(a.items()):
        env = os.environ.get("ZMQ_PROXY_" + key.upper())
        if env is not None and (val is None or val == []):
            a[key] = [env] if isinstance(val, list) else env
    cfg: dict = {"drain": 5.0}
    if a["config"]:
        cfg.update(load_manifest(a["config"]))
    for side in ("frontend", "backend", "capture"):
        t = a[f"{side}_type"]
        if t is not None:
            if t.upper() not in TYPES:
                fail(f"--{side}-type: unknown socket type {t!r}; expected one of {', '.join(TYPES)}")
            cfg[f"{side}_type"] = t.upper()
        eps = [("bind", e) for e in a[f"{side}_bind"]] + [("connect", e) for e in a[f"{side}_connect"]]
        for how, e in eps:
            m = EP_RE.match(e)
            if not m or not (1 <= int(m.group(2)) <= 65535):
                fail(f"--{side}-{how}: malformed endpoint {e!r}; expected tcp://HOST:PORT")
        if eps:
            cfg[f"{side}_eps"] = eps
    if a["drain_timeout"] is not None:
        try:
            cfg["drain"] = float(a["drain_timeout"])
        except ValueError:
            fail(f"--drain-timeout: not a number: {a['drain_timeout']!r}")
    for side in ("frontend", "backend"):
        if f"{side}_type" not in cfg:
            fail(f"--{side}-type is required")
        if not cfg.get(f"{side}_eps"):
            fail(f"--{side}-bind or --{side}-connect is required")
    if (cfg["frontend_type"], cfg["backend_type"]) not in ALLOWED:
        field = "spec.backend.type: " if a["config"] and not a["backend_type"] else ""
        fail(
            f"{field}unsupported socket pair {cfg['frontend_type']}/{cfg['backend_type']} (frontend/backend); "
            f"allowed pairs: {', '.join(f'{x}/{y}' for x, y in ALLOWED)}"
        )
    if "capture_type" in cfg:
        if cfg["capture_type"] not in CAPTURE:
            extra = ": PAIR talks to exactly one peer and this proxy has no PAIR socket" if cfg["capture_type"] == "PAIR" else ""
            fail(f"--capture-type: capture type {cfg['capture_type']} is not supported{extra}; use one of {', '.join(CAPTURE)}")
        if not cfg.get("capture_eps"):
            fail("--capture-bind or --capture-connect is required with --capture-type")
    return cfg


def load_manifest(path: str) -> dict:
    try:
        import yaml  # only the reference needs it
    except ImportError:
        fail("--config needs PyYAML in the reference proxy")
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        fail(f"--config {path}: {e.strerror}")
    except yaml.YAMLError as e:
        fail(f"--config {path}: invalid YAML: {str(e).splitlines()[0]}")
    spec = doc.get("spec") if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        fail(f"--config {path}: spec: missing")
    out: dict = {}
    for side in ("frontend", "backend", "capture"):
        s = spec.get(side)
        if s is None:
            if side != "capture":
                fail(f"--config {path}: spec.{side}: missing")
            continue
        t, port = s.get("type"), s.get("port")
        if not isinstance(t, str) or t.upper() not in TYPES:
            fail(f"--config {path}: spec.{side}.type: unknown socket type {t!r}")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            fail(f"--config {path}: spec.{side}.port: port {port!r} is outside 1-65535")
        out[f"{side}_type"] = t.upper()
        out[f"{side}_eps"] = [("bind", f"tcp://0.0.0.0:{port}")]
    if "drainTimeoutSeconds" in spec:
        out["drain"] = float(spec["drainTimeoutSeconds"])
    return out


def main() -> None:
    cfg = parse()
    ctx = zmq.Context()
    socks = {}
    for side in ("frontend", "backend", "capture"):
        if f"{side}_type" not in cfg:
            continue
        s = ctx.socket(getattr(zmq, cfg[f"{side}_type"]))
        s.linger = 0
        if cfg[f"{side}_type"] == "ROUTER":
            s.router_mandatory = 1
        if cfg[f"{side}_type"] == "SUB":
            s.subscribe(b"")
        for how, e in cfg[f"{side}_eps"]:
            try:
                (s.bind if how == "bind" else s.connect)(e)
            except zmq.ZMQError as err:
                fail(f"cannot {how} {e}: {err.strerror.lower()}", code=1)
        socks[side] = s
    counters = {k: 0 for k in (
        "frontend_recv_msgs", "frontend_recv_bytes", "frontend_sent_msgs", "frontend_sent_bytes",
        "backend_recv_msgs", "backend_recv_bytes", "backend_sent_msgs", "backend_sent_bytes",
        "capture_sent_msgs", "capture_sent_bytes", "dropped_msgs", "undelivered_msgs")}
    signals = []
    signal.signal(signal.SIGTERM, lambda *_: signals.append(1) if len(signals) == 0 else os._exit(130))
    signal.signal(signal.SIGINT, lambda *_: signals.append(1) if len(signals) == 0 else os._exit(130))
    log("proxy running", **{k: ",".join(e for _, e in cfg.get(f"{k}_eps", [])) for k in ("frontend", "backend", "capture")})

    pending = {"frontend": None, "backend": None}  # frames read from side, waiting to go out the other
    other = {"frontend": "backend", "backend": "frontend"}
    types = {k: cfg[f"{k}_type"] for k in ("frontend", "backend")}
    drain_deadline = None
    poller = zmq.Poller()
    for _ in range(10**12):
        if signals and drain_deadline is None:
            drain_deadline = time.monotonic() + cfg["drain"]
            log("draining")
        if drain_deadline is not None:
            if all(v is None for v in pending.values()) or time.monotonic() >= drain_deadline:
                break
        poller = zmq.Poller()
        for side in ("frontend", "backend"):
            flags = 0
            if pending[side] is None and drain_deadline is None and types[side] in READERS:
                flags |= zmq.POLLIN
            if pending[other[side]] is not None:
                flags |= zmq.POLLOUT
            if flags:
                poller.register(socks[side], flags)
        try:
            ready = dict(poller.poll(50))
        except zmq.ZMQError:
            continue
        for side in ("frontend", "backend"):
            ev = ready.get(socks[side], 0)
            if ev & zmq.POLLIN and pending[side] is None:
                frames = socks[side].recv_multipart()
                counters[f"{side}_recv_msgs"] += len(frames)
                counters[f"{side}_recv_bytes"] += sum(len(f) for f in frames)
                if "capture" in socks:
                    socks["capture"].send_multipart(frames)
                    counters["capture_sent_msgs"] += len(frames)
                    counters["capture_sent_bytes"] += sum(len(f) for f in frames)
                if types[other[side]] in WRITERS:
                    pending[side] = frames
        for side in ("frontend", "backend"):
            frames = pending[side]
            dest = other[side]
            if frames is None:
                continue
            try:
                socks[dest].send_multipart(frames, zmq.NOBLOCK)
                counters[f"{dest}_sent_msgs"] += len(frames)
                counters[f"{dest}_sent_bytes"] += sum(len(f) for f in frames)
                pending[side] = None
            except zmq.Again:
                pass
            except zmq.ZMQError as e:
                if e.errno == zmq.EHOSTUNREACH:
                    counters["dropped_msgs"] += len(frames)
                    pending[side] = None
                else:
                    raise
    counters["undelivered_msgs"] = sum(len(v) for v in pending.values() if v is not None)
    left = max(0.0, (drain_deadline or time.monotonic()) - time.monotonic())
    for s in socks.values():
        s.close(linger=int(left * 1000))
    ctx.term()
    log("proxy stopped", **counters)
    sys.exit(0)


if __name__ == "__main__":
    main()
