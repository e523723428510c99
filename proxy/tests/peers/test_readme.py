"""The README's first command, run exactly as written: it starts the proxy on the default example
(a ROUTER/DEALER shared queue on 5555/5556), a libzmq client gets its reply from a libzmq worker
through it, and Ctrl-C (SIGINT to the process group, as a terminal sends it) drains and exits 0.
A change that breaks the command a new user types first fails here."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading

import zmq

from zmqpeers import REPO, until


def _readme_commands() -> list[list[str]]:
    """The commands of the README's first ```sh block, comments stripped."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no ```sh block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_readme_first_command_runs_the_default_example(ctx):
    run = _readme_commands()[0]
    assert run[:2] == ["cargo", "run"] and "examples/shared-queue.yaml" in run, run
    proc = subprocess.Popen(
        run, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "proxy running" in line:
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # tests/run.sh has built the release binary already, so this is cargo's no-op check.
        for _ in until(50):
            if running.wait(0.1) or proc.poll() is not None:
                break
        assert running.is_set(), f"exit {proc.poll()}, no 'proxy running' line:\n" + "".join(lines[-20:])
        client, worker = ctx.socket(zmq.REQ), ctx.socket(zmq.REP)
        client.connect("tcp://127.0.0.1:5555")
        worker.connect("tcp://127.0.0.1:5556")
        client.send(b"hello")
        assert worker.poll(5000), "the request never reached the worker"
        worker.send(worker.recv() + b" back")
        assert client.poll(5000), "the reply never reached the client"
        assert client.recv() == b"hello back"
        client.close(0)
        worker.close(0)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=15) == 0, "".join(lines[-20:])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        reader.join(timeout=5)
    stopped = [line for line in lines if "proxy stopped" in line]
    assert stopped and 'ending="drained"' in stopped[-1], "".join(lines[-20:])
