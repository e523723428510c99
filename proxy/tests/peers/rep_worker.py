#!/usr/bin/env python3
"""A pyzmq REP worker run as its own process, so a test can freeze it with SIGSTOP.

    rep_worker.py ENDPOINT NAME

Connects a REP socket to ENDPOINT and answers each request `R` with `R` + b"@" + NAME until
killed. It sets no heartbeat options of its own: libzmq answers the proxy's PINGs regardless.
"""

import sys

import zmq


def main() -> None:
    endpoint, name = sys.argv[1], sys.argv[2].encode()
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.linger = 0
    rep.connect(endpoint)
    print("ready", flush=True)
    while True:
        req = rep.recv()
        rep.send(req + b"@" + name)


if __name__ == "__main__":
    main()
