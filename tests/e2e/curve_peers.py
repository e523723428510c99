"""CURVE peers of the e2e suite's secured forwarder (examples/secure-forwarder.yaml).

Real libzmq peers (pyzmq; on a stock python image pyzmq==27.3.0 is installed into /tmp first),
keys from zcert files written by `zmq-proxy keygen --zcert`:
- alice (on the frontend's allow-list) publishes, bob (on the backend's) subscribes: bob must
  receive alice's messages;
- mallory (on neither list) publishes on the frontend and subscribes on the backend, and a NULL
  subscriber (no CURVE at all) subscribes on the backend: none of their messages may reach bob,
  and neither subscriber may receive anything.

Prints one JSON line: {"good_received", "good_sent", "evil_sent", "evil_delivered",
"unknown_sub_received", "null_sub_received", "ok"}; exits 0 only when ok.
"""

import argparse
import json
import subprocess
import sys
import time

try:
    import zmq
except ImportError:
    # A stock python image: install pyzmq (its wheel carries libzmq) into the writable /tmp.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--target", "/tmp/py", "pyzmq==27.3.0"],
        check=True,
    )
    sys.path.insert(0, "/tmp/py")
    import zmq
import zmq.auth


def curve(sock, server_public, cert):
    public, secret = zmq.auth.load_certificate(cert)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frontend", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--keys", default="/keys")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    server_public, _ = zmq.auth.load_certificate(f"{a.keys}/server")
    ctx = zmq.Context()

    def sock(kind, endpoint, cert=None, subscribe=False):
        s = ctx.socket(kind)
        s.linger = 0
        s.rcvhwm = s.sndhwm = 100000
        if cert:
            curve(s, server_public, cert)
        if subscribe:
            s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(endpoint)
        return s

    bob = sock(zmq.SUB, a.backend, f"{a.keys}/bob_secret", subscribe=True)
    mallory_sub = sock(zmq.SUB, a.backend, f"{a.keys}/mallory_secret", subscribe=True)
    null_sub = sock(zmq.SUB, a.backend, None, subscribe=True)
    alice = sock(zmq.PUB, a.frontend, f"{a.keys}/alice_secret")
    mallory_pub = sock(zmq.PUB, a.frontend, f"{a.keys}/mallory_secret")

    poller = zmq.Poller()
    for s in (bob, mallory_sub, null_sub):
        poller.register(s, zmq.POLLIN)
    good_sent = evil_sent = good = evil = unknown = null = 0
    deadline = time.monotonic() + a.timeout
    # Publish until bob has `count` messages (subscriptions travel through the proxy first, so
    # early messages are dropped by alice's PUB), then a few seconds more for stragglers.
    settle_until = None
    while time.monotonic() < deadline:
        alice.send(b"good %d" % good_sent)
        good_sent += 1
        mallory_pub.send(b"evil %d" % evil_sent)
        evil_sent += 1
        for s, _ in poller.poll(10):
            while True:
                try:
                    m = s.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if s is bob:
                    if m.startswith(b"good "):
                        good += 1
                    else:
                        evil += 1
                elif s is mallory_sub:
                    unknown += 1
                else:
                    null += 1
        if good >= a.count and settle_until is None:
            settle_until = time.monotonic() + 3.0
        if settle_until is not None and time.monotonic() >= settle_until:
            break
    ok = good >= a.count and evil == 0 and unknown == 0 and null == 0
    print(json.dumps({
        "good_received": good, "good_sent": good_sent, "evil_sent": evil_sent,
        "evil_delivered": evil, "unknown_sub_received": unknown, "null_sub_received": null,
        "ok": ok,
    }), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
