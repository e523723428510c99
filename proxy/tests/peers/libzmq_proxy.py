#!/usr/bin/env python3
"""libzmq's own zmq_proxy(3), for side-by-side measurements (not shipped).

    libzmq_proxy.py FRONT_TYPE FRONT_BIND BACK_TYPE BACK_BIND [--heartbeat IVL TTL TIMEOUT] [--monitor]

Binds both sockets and runs pyzmq's zmq.proxy, which is libzmq's C zmq_proxy (libzmq 4.3.5 in
pyzmq's wheel). It installs no signal handler, so SIGTERM ends it the way it ends a libzmq proxy
in a container that does nothing special: at once, the kernel closing its connections.

`--heartbeat` sets ZMQ_HEARTBEAT_IVL, _TTL and _TIMEOUT (milliseconds) on both sockets, as
zmq-proxy's `--<socket>-heartbeat-*` flags do. `--monitor` prints each disconnection of a backend
peer on stderr as a JSON line `{"fields": {"message": "peer disconnected", "monotonic": T}}`,
T being CLOCK_MONOTONIC in seconds (the same clock as the caller's time.monotonic()).
"""

import json
import sys
import threading
import time

import zmq


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 4:
        sys.exit("usage: libzmq_proxy.py FRONT_TYPE FRONT_BIND BACK_TYPE BACK_BIND [--heartbeat IVL TTL TIMEOUT] [--monitor]")
    positional, extra = args[:4], args[4:]
    heartbeat = None
    watch = False
    while extra:
        flag = extra.pop(0)
        if flag == "--heartbeat" and len(extra) >= 3:
            heartbeat = [int(extra.pop(0)) for _ in range(3)]
        elif flag == "--monitor":
            watch = True
        else:
            sys.exit(f"libzmq_proxy.py: unknown argument {flag!r}")
    ctx = zmq.Context()
    front = ctx.socket(getattr(zmq, positional[0].upper()))
    back = ctx.socket(getattr(zmq, positional[2].upper()))
    if heartbeat:
        for s in (front, back):
            s.setsockopt(zmq.HEARTBEAT_IVL, heartbeat[0])
            s.setsockopt(zmq.HEARTBEAT_TTL, heartbeat[1])
            s.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat[2])
    if watch:
        mon = back.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        threading.Thread(target=report_disconnects, args=(mon,), daemon=True).start()
    front.bind(positional[1])
    back.bind(positional[3])
    # The start line the test helpers wait for (zmq-proxy's JSON log shape).
    print('{"fields": {"message": "proxy running"}}', file=sys.stderr, flush=True)
    zmq.proxy(front, back)


def report_disconnects(mon: zmq.Socket) -> None:
    from zmq.utils.monitor import recv_monitor_message

    while True:
        try:
            ev = recv_monitor_message(mon)
        except zmq.ZMQError:
            return
        if ev["event"] == zmq.EVENT_DISCONNECTED:
            line = {"fields": {"message": "peer disconnected", "monotonic": time.monotonic()}}
            print(json.dumps(line), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
