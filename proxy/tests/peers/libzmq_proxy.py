#!/usr/bin/env python3
"""libzmq's own zmq_proxy(3), for side-by-side measurements (not a test, not shipped).

    libzmq_proxy.py FRONT_TYPE FRONT_BIND BACK_TYPE BACK_BIND

Binds both sockets and runs pyzmq's zmq.proxy, which is libzmq's C zmq_proxy (libzmq 4.3.5 in
pyzmq's wheel). It installs no signal handler, so SIGTERM ends it the way it ends a libzmq proxy
in a container that does nothing special: at once, the kernel closing its connections.
"""

import sys

import zmq


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit("usage: libzmq_proxy.py FRONT_TYPE FRONT_BIND BACK_TYPE BACK_BIND")
    ctx = zmq.Context()
    front = ctx.socket(getattr(zmq, sys.argv[1].upper()))
    back = ctx.socket(getattr(zmq, sys.argv[3].upper()))
    front.bind(sys.argv[2])
    back.bind(sys.argv[4])
    # The start line the test helpers wait for (zmq-proxy's JSON log shape).
    print('{"fields": {"message": "proxy running"}}', file=sys.stderr, flush=True)
    zmq.proxy(front, back)


if __name__ == "__main__":
    main()
