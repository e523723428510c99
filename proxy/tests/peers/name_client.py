#!/usr/bin/env python3
"""A libzmq DEALER connected to a host name, run as its own process (in the test's mount
namespace, where /etc/hosts gives the name several addresses).

    name_client.py ENDPOINT

Reads commands from stdin, one per line: `ask N SECONDS` sends N requests (an empty delimiter
frame, then the body, as a REQ would) and prints a JSON list of who answered within SECONDS
(the part of each reply after its last `@`); `quit` ends.
"""

import json
import sys
import time

import zmq


def main() -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    # AAAA records count too (libzmq resolves IPv4 only without it).
    s.ipv6 = True
    s.connect(sys.argv[1])
    print("ready", flush=True)
    for n, line in enumerate(sys.stdin):
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        count, seconds = int(parts[1]), float(parts[2])
        for i in range(count):
            s.send_multipart([b"", f"{n}-{i}".encode()])
        by = []
        deadline = time.monotonic() + seconds
        while len(by) < count:
            left = deadline - time.monotonic()
            if left <= 0 or not s.poll(int(left * 1000) + 1):
                break
            _, reply = s.recv_multipart()
            by.append(reply.decode().rsplit("@", 1)[1])
        print(json.dumps(by), flush=True)
    ctx.destroy(linger=0)


if __name__ == "__main__":
    main()
